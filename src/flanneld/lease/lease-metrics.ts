/**
 * The weft_flanneld_lease_* metrics. A no-op without a registry; several managers may share a
 * registry (tests run many in one process), so an existing metric of the same name is reused.
 */
import { Counter, Gauge, metricName, type Registry } from '../../metrics/index.js';

export type RenewalResult = 'ok' | 'error' | 'lost';

export class LeaseMetrics {
  readonly #acquisitions: Counter | undefined;
  readonly #renewals: Counter<'result'> | undefined;
  readonly #losses: Counter | undefined;
  readonly #expiry: Gauge | undefined;

  constructor(registry?: Registry) {
    if (!registry) return;
    this.#acquisitions = reuse(
      registry,
      'weft_flanneld_lease_acquisitions_total',
      (name) =>
        new Counter({
          name,
          help: 'Subnet leases acquired (reused, created or re-taken)',
          registers: [registry],
        }),
    );
    this.#renewals = reuse(
      registry,
      'weft_flanneld_lease_renewals_total',
      (name) =>
        new Counter<'result'>({
          name,
          help: 'Renewals of the subnet lease TTL by result (ok, error, lost)',
          labelNames: ['result'],
          registers: [registry],
        }),
    );
    this.#losses = reuse(
      registry,
      'weft_flanneld_lease_losses_total',
      (name) =>
        new Counter({
          name,
          help: 'Times the subnet lease was found gone or held by another node',
          registers: [registry],
        }),
    );
    this.#expiry = reuse(
      registry,
      'weft_flanneld_lease_expiry_timestamp_seconds',
      (name) =>
        new Gauge({
          name,
          help: 'When the subnet lease expires unless renewed (Unix seconds; +Inf for a reservation)',
          registers: [registry],
        }),
    );
  }

  acquired(): void {
    this.#acquisitions?.inc();
  }

  renewal(result: RenewalResult): void {
    this.#renewals?.inc({ result });
  }

  lost(): void {
    this.#losses?.inc();
  }

  /** `expiresAt` in ms since the epoch; undefined for a reservation, which never expires. */
  expiry(expiresAt: number | undefined): void {
    this.#expiry?.set(expiresAt === undefined ? Number.POSITIVE_INFINITY : expiresAt / 1000);
  }

  /** No lease held: no sample rather than a misleading one. */
  clearExpiry(): void {
    this.#expiry?.reset();
  }
}

function reuse<M>(registry: Registry, name: string, make: (name: string) => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make(metricName(name));
}

/**
 * The weft_flanneld_reconcile_* and dataplane metrics. A no-op without a registry; an existing
 * metric of the same name is reused, so several dataplanes (tests) can share one registry.
 */
import { Counter, Gauge, Histogram, metricName, type Registry } from '../../metrics/index.js';

/** What started a reconcile. */
export type ReconcileTrigger = 'update' | 'event' | 'periodic' | 'retry' | 'manual';

/** Where an error happened: reading the kernel, (re)creating devices, applying a change, the event stream, a backend's sync. */
export type DataplaneErrorStage = 'read' | 'prepare' | 'plan' | 'apply' | 'events' | 'sync';

/** Every {@link DataplaneErrorStage}, so each series is exposed (at 0) before its first error. */
export const DATAPLANE_ERROR_STAGES: readonly DataplaneErrorStage[] = [
  'read',
  'prepare',
  'plan',
  'apply',
  'events',
  'sync',
];

/** What a repair restored. */
export type RepairKind = 'device' | 'address' | 'neighbour' | 'fdb' | 'route';

/** Every {@link RepairKind}, so each series is exposed (at 0) before the first repair. */
export const REPAIR_KINDS: readonly RepairKind[] = ['device', 'address', 'neighbour', 'fdb', 'route'];

export class DataplaneMetrics {
  readonly #runs: Counter<'trigger' | 'result'> | undefined;
  readonly #duration: Histogram | undefined;
  readonly #repairs: Counter<'kind'> | undefined;
  readonly #errors: Counter<'stage'> | undefined;
  readonly #skipped: Gauge | undefined;
  readonly #overflows: Counter | undefined;

  constructor(registry?: Registry) {
    if (!registry) return;
    this.#runs = reuse(
      registry,
      'weft_flanneld_reconcile_runs_total',
      (name) =>
        new Counter<'trigger' | 'result'>({
          name,
          help: 'Dataplane reconciles by trigger (update, event, periodic, retry, manual) and result (ok, error)',
          labelNames: ['trigger', 'result'],
          registers: [registry],
        }),
    );
    this.#duration = reuse(
      registry,
      'weft_flanneld_reconcile_duration_seconds',
      (name) =>
        new Histogram({
          name,
          help: 'Duration of a dataplane reconcile (dump, diff, apply)',
          buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
          registers: [registry],
        }),
    );
    this.#repairs = reuse(
      registry,
      'weft_flanneld_repairs_total',
      (name) =>
        new Counter<'kind'>({
          name,
          help: 'Entries weft had programmed and found missing or changed, restored (by kind)',
          labelNames: ['kind'],
          registers: [registry],
        }),
    );
    this.#errors = reuse(
      registry,
      'weft_flanneld_dataplane_errors_total',
      (name) =>
        new Counter<'stage'>({
          name,
          help: 'Dataplane failures by stage (read, prepare, plan, apply, events, sync); each is retried',
          labelNames: ['stage'],
          registers: [registry],
        }),
    );
    this.#skipped = reuse(
      registry,
      'weft_flanneld_dataplane_skipped_leases',
      (name) =>
        new Gauge({
          name,
          help: 'Leases (or families of them) not programmed because they are invalid or unreachable',
          registers: [registry],
        }),
    );
    this.#overflows = reuse(
      registry,
      'weft_flanneld_netlink_overflows_total',
      (name) =>
        new Counter({
          name,
          help: 'Netlink notifications lost to a receive-buffer overflow (ENOBUFS); each triggers a full resync',
          registers: [registry],
        }),
    );
    this.#overflows.inc(0);
    // A counter without samples cannot be alerted on (`increase()` of nothing is nothing): expose
    // every known series from the start.
    for (const kind of REPAIR_KINDS) this.#repairs.inc({ kind }, 0);
    for (const stage of DATAPLANE_ERROR_STAGES) this.#errors.inc({ stage }, 0);
  }

  run(trigger: ReconcileTrigger, ok: boolean, seconds: number): void {
    this.#runs?.inc({ trigger, result: ok ? 'ok' : 'error' });
    this.#duration?.observe(seconds);
  }

  repaired(kind: RepairKind, n = 1): void {
    if (n > 0) this.#repairs?.inc({ kind }, n);
  }

  error(stage: DataplaneErrorStage, n = 1): void {
    if (n > 0) this.#errors?.inc({ stage }, n);
  }

  netlinkOverflow(): void {
    this.#overflows?.inc();
  }

  skipped(n: number): void {
    this.#skipped?.set(n);
  }
}

function reuse<M>(registry: Registry, name: string, make: (name: string) => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make(metricName(name));
}

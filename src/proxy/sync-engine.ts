/**
 * The change tracker between the registry and the proxiers. Each sync rebuilds the service ports
 * of every family from the tracked objects, diffs them against what the proxier last applied and
 * asks for a partial sync of exactly the changed ids, or a full sync when one is due: the first
 * sync, the periodic one (every sync period), after a failure, and when the proxier reports that
 * something else removed its rules. A {@link SyncRunner} bounds how often this happens.
 *
 * After a successful sync, stale UDP conntrack entries are cleared; the metrics follow
 * kube-proxy's under `weft_proxy_*`, and {@link SyncEngine.healthz} answers kube-proxy's /healthz
 * question: has every queued change been applied within the health timeout?
 */
import type { Registry } from 'prom-client';
import type { Backoff } from '../backoff/index.js';
import { messageOf } from '../errors/index.js';
import type { CommandRunner } from '../exec/index.js';
import type { CheckResult } from '../health/index.js';
import type { Logger } from '../log/index.js';
import { Counter, Gauge, Histogram, metricName } from '../metrics/index.js';
import { clearStaleConntrack, conntrackCleanupArgs } from './conntrack.js';
import {
  buildServicePorts,
  changedServicePorts,
  type EndpointSliceSpec,
  type Family,
  type ServicePort,
  type ServicePortMap,
  type ServiceSpec,
} from './model/index.js';
import type { ObjectChange } from '../k8s/index.js';
import type { Proxier } from './proxier.js';
import { SyncRunner, systemClock, type RunReason, type RunnerClock } from './sync-runner.js';

/** Where the engine reads the current objects from (the object tracker). */
export interface ObjectSource {
  /**
   * False until the source has read everything once: syncing before would program services
   * without their endpoints (rejecting traffic that has somewhere to go). Absent: always ready.
   */
  readonly isSynced?: boolean;
  services(): Iterable<ServiceSpec>;
  slices(): Iterable<EndpointSliceSpec>;
}

/** Options of {@link SyncEngine}. */
export interface SyncEngineOptions {
  /** One proxier per family served. */
  proxiers: readonly Proxier[];
  source: ObjectSource;
  /** This node's name: decides which endpoints are local. */
  nodeName: string;
  /** Runs `conntrack` for the UDP cleanup; without it no cleanup is done. */
  conntrackRunner?: CommandRunner;
  log: Logger;
  /** Receives the `weft_proxy_sync_*` metrics. */
  metrics: Registry;
  /** Least time between syncs (`--min-sync-period`), ms. Default 1 000. */
  minSyncPeriodMs?: number;
  /** Time between periodic full syncs (`--sync-period`), ms. Default 30 000. */
  syncPeriodMs?: number;
  /** How often the proxiers' rules are checked for outside removal, ms. Default min(5 000, sync period). */
  integrityCheckIntervalMs?: number;
  /** /healthz fails when a change has waited longer than this, ms. Default twice the sync period. */
  healthTimeoutMs?: number;
  /** Retry delays after a failed sync. */
  backoff?: Backoff;
  clock?: RunnerClock;
  /** Called after each successful sync with every family's applied service ports. */
  onSynced?: (servicePorts: readonly ServicePort[]) => void;
}

interface FamilyState {
  proxier: Proxier;
  /** What the proxier last applied successfully; undefined before its first sync. */
  applied: ServicePortMap | undefined;
  needFull: boolean;
  lastFullAt: number;
}

const DURATION_BUCKETS = [
  0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384,
];
const LATENCY_BUCKETS = [
  0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 20, 25, 30, 45, 60, 120, 180, 240, 300,
];

/** The engine's metrics (created once per registry). */
interface EngineMetrics {
  duration: Histogram;
  fullDuration: Histogram;
  partialDuration: Histogram;
  lastTimestamp: Gauge;
  lastQueuedTimestamp: Gauge;
  pending: Gauge;
  failures: Counter;
  latency: Histogram;
  endpointChanges: Counter;
  serviceChanges: Counter;
  rulesRestored: Counter;
  conntrackFailures: Counter;
  servicePorts: Gauge<'family'>;
}

function reuse<M>(registry: Registry, name: string, make: (name: string, registers: Registry[]) => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make(metricName(name), [registry]);
}

function engineMetrics(r: Registry): EngineMetrics {
  const hist = (name: string, help: string, buckets = DURATION_BUCKETS) =>
    reuse(r, name, (n, registers) => new Histogram({ name: n, help, buckets, registers }));
  const gauge = (name: string, help: string) =>
    reuse(r, name, (n, registers) => new Gauge({ name: n, help, registers }));
  const counter = (name: string, help: string) =>
    reuse(r, name, (n, registers) => new Counter({ name: n, help, registers }));
  return {
    duration: hist(
      'weft_proxy_sync_proxy_rules_duration_seconds',
      'Time a sync of the proxy rules took, full or partial.',
    ),
    fullDuration: hist(
      'weft_proxy_sync_full_proxy_rules_duration_seconds',
      'Time a full sync of the proxy rules took.',
    ),
    partialDuration: hist(
      'weft_proxy_sync_partial_proxy_rules_duration_seconds',
      'Time a partial sync (changed services only) of the proxy rules took.',
    ),
    lastTimestamp: gauge(
      'weft_proxy_sync_proxy_rules_last_timestamp_seconds',
      'When the proxy rules were last synced successfully, in seconds since the epoch.',
    ),
    lastQueuedTimestamp: gauge(
      'weft_proxy_sync_proxy_rules_last_queued_timestamp_seconds',
      'When a change was last queued for a sync, in seconds since the epoch.',
    ),
    pending: gauge(
      'weft_proxy_sync_proxy_rules_pending_changes',
      'Registry changes seen but not yet applied by a successful sync.',
    ),
    failures: counter('weft_proxy_sync_proxy_rules_failures_total', 'Syncs of the proxy rules that failed.'),
    latency: hist(
      'weft_proxy_network_programming_duration_seconds',
      'Time from a change seen in the registry to the sync that applied it.',
      LATENCY_BUCKETS,
    ),
    endpointChanges: counter(
      'weft_proxy_sync_proxy_rules_endpoint_changes_total',
      'EndpointSlice changes seen in the registry.',
    ),
    serviceChanges: counter(
      'weft_proxy_sync_proxy_rules_service_changes_total',
      'Service changes seen in the registry.',
    ),
    rulesRestored: counter(
      'weft_proxy_sync_proxy_rules_restored_total',
      'Times the rules were found removed by something else and restored by a full sync.',
    ),
    conntrackFailures: counter(
      'weft_proxy_conntrack_cleanup_failures_total',
      'conntrack deletions of stale UDP entries that failed.',
    ),
    servicePorts: reuse(
      r,
      'weft_proxy_service_ports',
      (n, registers) =>
        new Gauge<'family'>({
          name: n,
          help: 'Service ports programmed by the last successful sync, by IP family.',
          labelNames: ['family'],
          registers,
        }),
    ),
  };
}

/** Keeps the proxiers in step with the registry. */
export class SyncEngine {
  readonly #o: SyncEngineOptions;
  readonly #states: FamilyState[];
  readonly #runner: SyncRunner;
  readonly #clock: RunnerClock;
  readonly #m: EngineMetrics;
  readonly #syncPeriodMs: number;
  readonly #healthTimeoutMs: number;
  readonly #integrityMs: number;
  /** When each change waiting for a sync was seen. Oldest first. */
  #pending: number[] = [];
  /** The changes the sync in progress covers. */
  #inFlight: number[] = [];
  #integrityTimer: unknown;
  #checking = false;
  #stopped = false;
  #synced = false;
  #lastSyncAt: number | undefined;
  #onFirstSync!: () => void;
  /** Resolves after the first successful sync of every family. */
  readonly firstSync: Promise<void>;

  constructor(opts: SyncEngineOptions) {
    if (opts.proxiers.length === 0) throw new RangeError('sync engine: need at least one proxier');
    this.#o = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#syncPeriodMs = opts.syncPeriodMs ?? 30_000;
    this.#healthTimeoutMs = opts.healthTimeoutMs ?? 2 * this.#syncPeriodMs;
    this.#integrityMs = opts.integrityCheckIntervalMs ?? Math.min(5_000, this.#syncPeriodMs);
    this.#m = engineMetrics(opts.metrics);
    this.#states = opts.proxiers.map((proxier) => ({
      proxier,
      applied: undefined,
      needFull: true,
      lastFullAt: -Infinity,
    }));
    this.firstSync = new Promise((resolve) => (this.#onFirstSync = resolve));
    this.#runner = new SyncRunner({
      fn: (reason) => this.#sync(reason),
      minIntervalMs: opts.minSyncPeriodMs ?? 1_000,
      maxIntervalMs: this.#syncPeriodMs,
      clock: this.#clock,
      ...(opts.backoff && { backoff: opts.backoff }),
    });
  }

  /** True once every family has been synced successfully. */
  get synced(): boolean {
    return this.#synced;
  }

  /** When the last successful sync ended (the engine's clock, ms), undefined before the first. */
  get lastSyncAt(): number | undefined {
    return this.#lastSyncAt;
  }

  /** Every family's service ports as last applied. */
  appliedServicePorts(): ServicePort[] {
    return this.#states.flatMap((s) => (s.applied ? [...s.applied.values()] : []));
  }

  /** Starts the runner and the integrity checks; syncs happen when changes are queued. */
  start(): void {
    this.#runner.start();
    this.#scheduleIntegrityCheck();
  }

  /** Stops syncing; waits for a sync in progress. The proxiers are not closed. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#integrityTimer !== undefined) this.#clock.clearTimeout(this.#integrityTimer);
    await this.#runner.stop();
  }

  /** Queues a change seen in the registry (the tracker's onChange). */
  queueChange(change: ObjectChange): void {
    if (change.kind === 'Service') this.#m.serviceChanges.inc(change.count);
    else this.#m.endpointChanges.inc(change.count);
    // seenAt is the tracker's wall-clock time; how long a change waits is measured monotonically.
    this.#pending.push(this.#clock.now());
    this.#m.pending.set(this.#pending.length + this.#inFlight.length);
    this.#m.lastQueuedTimestamp.set(change.seenAt / 1000);
    this.#runner.run();
  }

  /** Asks for a full sync of every family soon (e.g. after an outside change of the rules). */
  requestFullSync(): void {
    for (const s of this.#states) s.needFull = true;
    this.#runner.run();
  }

  /** /healthz: fails when a queued change has waited longer than the health timeout. */
  healthz(): CheckResult {
    const oldest = this.#inFlight[0] ?? this.#pending[0];
    if (oldest === undefined) return { ok: true };
    const waited = this.#clock.now() - oldest;
    if (waited <= this.#healthTimeoutMs) return { ok: true };
    return {
      ok: false,
      reason: `a registry change queued ${(waited / 1000).toFixed(1)} s ago has not been applied (timeout ${(this.#healthTimeoutMs / 1000).toFixed(1)} s)`,
    };
  }

  /** Checks every proxier's rules now; a family whose rules were removed gets a full sync. */
  async checkIntegrity(): Promise<boolean> {
    let intact = true;
    for (const s of this.#states) {
      // Nothing to check before a first sync, and a family already due a full sync gets one anyway.
      if (!s.applied || s.needFull) continue;
      let ok: boolean;
      try {
        ok = await s.proxier.rulesIntact();
      } catch (err) {
        this.#o.log.warn({ family: s.proxier.family, err: messageOf(err) }, 'rule integrity check failed');
        ok = false;
      }
      if (!ok) {
        intact = false;
        this.#o.log.warn(
          { mode: s.proxier.mode, family: s.proxier.family },
          'proxy rules were removed by something else; restoring them with a full sync',
        );
        this.#m.rulesRestored.inc();
        s.needFull = true;
      }
    }
    if (!intact) this.#runner.run();
    return intact;
  }

  #scheduleIntegrityCheck(): void {
    if (this.#stopped) return;
    this.#integrityTimer = this.#clock.setTimeout(() => {
      void (async () => {
        if (!this.#checking && !this.#runner.busy) {
          this.#checking = true;
          try {
            await this.checkIntegrity();
          } finally {
            this.#checking = false;
          }
        }
        this.#scheduleIntegrityCheck();
      })();
    }, this.#integrityMs);
  }

  async #sync(reason: RunReason): Promise<void> {
    if (this.#o.source.isSynced === false) return;
    const start = this.#clock.now();
    this.#inFlight = this.#pending;
    this.#pending = [];
    const services = [...this.#o.source.services()];
    const slices = [...this.#o.source.slices()];
    let anyFull = false;
    let ran = 0;
    let firstError: unknown;
    for (const s of this.#states) {
      const family: Family = s.proxier.family;
      const ports = buildServicePorts(services, slices, { family, nodeName: this.#o.nodeName });
      const periodic = start - s.lastFullAt >= this.#syncPeriodMs;
      const full = s.needFull || !s.applied || periodic;
      const changed = full || !s.applied ? undefined : changedServicePorts(s.applied, ports);
      if (changed && changed.size === 0) continue;
      anyFull ||= full;
      ran++;
      try {
        await s.proxier.sync({ servicePorts: ports, changed });
      } catch (err) {
        s.needFull = true;
        firstError ??= err;
        this.#m.failures.inc();
        this.#o.log.error(
          { mode: s.proxier.mode, family, full, reason, err: messageOf(err) },
          'sync of the proxy rules failed; retrying with a full sync',
        );
        continue;
      }
      const before = s.applied ?? new Map<string, ServicePort>();
      s.applied = ports;
      s.needFull = false;
      if (full) s.lastFullAt = start;
      this.#m.servicePorts.set({ family: String(family) }, ports.size);
      this.#o.log.debug(
        { mode: s.proxier.mode, family, full, changed: changed?.size, servicePorts: ports.size, reason },
        'synced proxy rules',
      );
      if (this.#o.conntrackRunner) {
        const args = conntrackCleanupArgs(before, ports, changed);
        if (args.length) {
          const failed = await clearStaleConntrack(this.#o.conntrackRunner, args, this.#o.log);
          if (failed) this.#m.conntrackFailures.inc(failed);
        }
      }
    }
    const end = this.#clock.now();
    if (ran > 0) {
      const seconds = (end - start) / 1000;
      this.#m.duration.observe(seconds);
      (anyFull ? this.#m.fullDuration : this.#m.partialDuration).observe(seconds);
    }
    if (firstError !== undefined) {
      // The changes are not all in the kernel: they stay queued (and count for /healthz).
      this.#pending = [...this.#inFlight, ...this.#pending];
      this.#inFlight = [];
      this.#m.pending.set(this.#pending.length);
      throw firstError;
    }
    for (const seenAt of this.#inFlight) this.#m.latency.observe(Math.max(0, end - seenAt) / 1000);
    this.#inFlight = [];
    this.#m.pending.set(this.#pending.length);
    const wallEnd = this.#clock.wallNow?.() ?? end;
    this.#m.lastTimestamp.set(wallEnd / 1000);
    this.#lastSyncAt = wallEnd;
    if (!this.#synced) {
      this.#synced = true;
      this.#onFirstSync();
    }
    this.#o.onSynced?.(this.appliedServicePorts());
  }
}

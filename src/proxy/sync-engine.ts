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
  changedServicePorts,
  DEFAULT_ENDPOINT_BUDGET,
  planServicePorts,
  unrenderableField,
  type EndpointBudget,
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
  /** How many endpoints one Service may expand to per sync; default {@link DEFAULT_ENDPOINT_BUDGET}. */
  endpointBudget?: EndpointBudget;
  /**
   * Most `check` runs spent finding the objects that make one sync fail. The candidates still
   * unresolved when they run out are all left out until the next periodic full sync. Default 64.
   */
  maxIsolationChecks?: number;
}

/** Why a service port (or a whole Service) is left out of the rules. */
export type RejectionReason = 'kernel' | 'unrenderable' | 'budget';

/** A service port, or a Service, the engine does not program. */
export interface Rejection {
  family: Family;
  /** The service port id (`<namespace>/<name>[:<port>]`), or `<namespace>/<name>` for `budget`. */
  key: string;
  reason: RejectionReason;
  /** The field at fault, when known. */
  field: string;
  message: string;
}

/** A rejection and the object it was made for: it stands until that object changes. */
interface Rejected extends Rejection {
  fingerprint: string;
}

interface FamilyState {
  proxier: Proxier;
  /** Service ports (or Services, for `budget`) left out, by key. */
  rejected: Map<string, Rejected>;
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
  rejected: Gauge<'family' | 'reason'>;
  rejections: Counter<'family' | 'reason'>;
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
    rejected: reuse(
      r,
      'weft_proxy_sync_rejected_service_ports',
      (n, registers) =>
        new Gauge<'family' | 'reason'>({
          name: n,
          help:
            'Service ports left out of the rules, by IP family and reason: kernel (the kernel refused ' +
            'their rules), unrenderable (a value not of its form), budget (Services over the endpoint budget).',
          labelNames: ['family', 'reason'],
          registers,
        }),
    ),
    rejections: reuse(
      r,
      'weft_proxy_sync_rejections_total',
      (n, registers) =>
        new Counter<'family' | 'reason'>({
          name: n,
          help: 'Times a service port or Service was newly left out of the rules (each is logged with its key).',
          labelNames: ['family', 'reason'],
          registers,
        }),
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
      rejected: new Map(),
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

  /** What every family leaves out of its rules now, by family and key. */
  rejections(): Rejection[] {
    return this.#states.flatMap((s) =>
      [...s.rejected.values()].map(({ family, key, reason, field, message }) => ({
        family,
        key,
        reason,
        field,
        message,
      })),
    );
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
      const periodic = start - s.lastFullAt >= this.#syncPeriodMs;
      const full = s.needFull || !s.applied || periodic;
      const { ports, rejected } = this.#admit(s, services, slices, periodic);
      const changed = full || !s.applied ? undefined : changedServicePorts(s.applied, ports);
      if (changed && changed.size === 0) {
        this.#record(s, rejected);
        continue;
      }
      anyFull ||= full;
      ran++;
      let applied: Map<string, ServicePort> | undefined = ports;
      try {
        await s.proxier.sync({ servicePorts: ports, changed });
      } catch (err) {
        applied = await this.#isolate(s, ports, changed, err, rejected);
        if (!applied) {
          // What was left out before the kernel was asked is named even when the sync fails.
          this.#record(s, rejected);
          s.needFull = true;
          firstError ??= err;
          this.#m.failures.inc();
          this.#o.log.error(
            { mode: s.proxier.mode, family, full, reason, err: messageOf(err) },
            'sync of the proxy rules failed; retrying with a full sync',
          );
          continue;
        }
      }
      this.#record(s, rejected);
      const before = s.applied ?? new Map<string, ServicePort>();
      // After an isolation the rules were rewritten in full, whatever was asked.
      const wasFull = full || applied !== ports;
      s.applied = applied;
      s.needFull = false;
      if (full) s.lastFullAt = start;
      this.#m.servicePorts.set({ family: String(family) }, applied.size);
      this.#o.log.debug(
        {
          mode: s.proxier.mode,
          family,
          full: wasFull,
          changed: changed?.size,
          servicePorts: applied.size,
          reason,
        },
        'synced proxy rules',
      );
      if (this.#o.conntrackRunner) {
        const args = conntrackCleanupArgs(before, applied, wasFull ? undefined : changed);
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
  /**
   * The service ports of one family the proxier is asked for: within the endpoint budget, of a
   * renderable form, and not refused by the kernel before in the same version (those are tried
   * again when they change, and on the periodic full sync). `rejected` gets every one left out.
   */
  #admit(
    s: FamilyState,
    services: ServiceSpec[],
    slices: EndpointSliceSpec[],
    periodic: boolean,
  ): { ports: Map<string, ServicePort>; rejected: Map<string, Rejected> } {
    const family = s.proxier.family;
    const plan = planServicePorts(services, slices, {
      family,
      nodeName: this.#o.nodeName,
      budget: this.#o.endpointBudget ?? DEFAULT_ENDPOINT_BUDGET,
    });
    const rejected = new Map<string, Rejected>();
    for (const o of plan.overBudget) {
      rejected.set(o.service, {
        family,
        key: o.service,
        reason: 'budget',
        field: o.field,
        message: o.message,
        fingerprint: o.message,
      });
    }
    const ports = plan.servicePorts;
    for (const [id, sp] of ports) {
      const bad = unrenderableField(sp);
      if (bad) {
        rejected.set(id, { family, key: id, reason: 'unrenderable', ...bad, fingerprint: bad.field });
        ports.delete(id);
        continue;
      }
      const before = s.rejected.get(id);
      if (!periodic && before?.reason === 'kernel' && before.fingerprint === JSON.stringify(sp)) {
        rejected.set(id, before);
        ports.delete(id);
      }
    }
    return { ports, rejected };
  }

  /** Makes `rejected` the family's rejections: logs and counts the new ones once, notes the cleared ones. */
  #record(s: FamilyState, rejected: Map<string, Rejected>): void {
    const family = s.proxier.family;
    for (const [key, r] of rejected) {
      const prev = s.rejected.get(key);
      if (prev && prev.reason === r.reason && prev.fingerprint === r.fingerprint) continue;
      this.#m.rejections.inc({ family: String(family), reason: r.reason });
      const what = r.reason === 'budget' ? 'Service' : 'service port';
      this.#o.log.error(
        { mode: s.proxier.mode, family, key, field: r.field, reason: r.reason, err: r.message },
        `${what} ${key} left out of the proxy rules (${r.reason}${r.field ? `, field ${r.field}` : ''}); every other service is programmed`,
      );
    }
    for (const [key, r] of s.rejected) {
      if (!rejected.has(key))
        this.#o.log.info({ family, key, reason: r.reason }, `${key} is no longer left out`);
    }
    s.rejected = rejected;
    for (const reason of ['kernel', 'unrenderable', 'budget'] as const) {
      let n = 0;
      for (const r of rejected.values()) if (r.reason === reason) n++;
      this.#m.rejected.set({ family: String(family), reason }, n);
    }
  }

  /**
   * After a failed sync: finds the service ports the proxier's checker refuses (by bisection,
   * the changed ports first), leaves them out and rewrites everything else in full. Returns what
   * was applied, or undefined when the failure is not any object's (the checker accepts them all,
   * the proxier cannot check, or the rest fails too). The normal path never pays for this.
   */
  async #isolate(
    s: FamilyState,
    ports: Map<string, ServicePort>,
    changed: ReadonlySet<string> | undefined,
    err: unknown,
    rejected: Map<string, Rejected>,
  ): Promise<Map<string, ServicePort> | undefined> {
    const proxier = s.proxier;
    if (!proxier.check) return undefined;
    let budget = this.#o.maxIsolationChecks ?? 64;
    const errors = new Map<string, string>();
    let lastError = '';
    const ok = async (ids: string[]): Promise<boolean> => {
      budget--;
      try {
        await proxier.check!(new Map(ids.map((id) => [id, ports.get(id)!])));
        return true;
      } catch (e) {
        lastError = messageOf(e);
        return false;
      }
    };
    // The ids of `group` that fail next to `base` (whose ports pass together).
    const find = async (base: string[], group: string[]): Promise<string[]> => {
      if (group.length === 0) return [];
      if (budget <= 0) return group;
      if (await ok([...base, ...group])) return [];
      if (group.length === 1) {
        errors.set(group[0]!, lastError);
        return group;
      }
      const mid = Math.ceil(group.length / 2);
      const left = group.slice(0, mid);
      const badLeft = new Set(await find(base, left));
      const goodLeft = left.filter((id) => !badLeft.has(id));
      return [...badLeft, ...(await find([...base, ...goodLeft], group.slice(mid)))];
    };
    const all = [...ports.keys()].sort();
    if (await ok(all)) return undefined;
    let bad: string[] = [];
    if (changed) {
      // The culprit of a failed partial sync is most likely among what it changed.
      const suspects = all.filter((id) => changed.has(id));
      const base = all.filter((id) => !changed.has(id));
      if (suspects.length > 0 && (await ok(base))) bad = await find(base, suspects);
    }
    if (bad.length === 0) bad = await find([], all);
    if (bad.length === 0) return undefined;
    const rest = new Map(ports);
    for (const id of bad) rest.delete(id);
    try {
      await proxier.sync({ servicePorts: rest, changed: undefined });
    } catch (again) {
      this.#o.log.error(
        { mode: proxier.mode, family: proxier.family, err: messageOf(again) },
        'sync without the refused service ports failed too',
      );
      return undefined;
    }
    const fallback = budget <= 0 ? 'not isolated: too many failing objects' : messageOf(err);
    for (const id of bad) {
      const sp = ports.get(id)!;
      rejected.set(id, {
        family: proxier.family,
        key: id,
        reason: 'kernel',
        field: '',
        message: errors.get(id) ?? fallback,
        fingerprint: JSON.stringify(sp),
      });
    }
    return rest;
  }
}

/**
 * The dataplane of weft-flanneld: a backend's devices and entries kept in the kernel. It
 * reconciles when told the leases changed (`update`), when a netlink notification shows an owned
 * object changed (a route deleted by hand: debounced, so a burst costs one run), and periodically
 * (a lost notification is caught at the next check). Runs never overlap; requests that arrive
 * during a run are folded into the next one. Nothing here throws at the caller for a kernel
 * failure: it is logged, counted and retried with backoff.
 */
import { Backoff, type BackoffOptions } from '../../backoff/index.js';
import { ErrorCodes, WeftError, isWeftError, messageOf } from '../../errors/index.js';
import type { NetConfig } from '../../ipam/index.js';
import { componentLogger, type Logger } from '../../log/index.js';
import type { Registry } from '../../metrics/index.js';
import {
  errnoOf,
  type IpFamily,
  type Netlink,
  type NetlinkEvent,
  type NetlinkEventGroup,
  type NetlinkEvents,
} from '../../netlink/index.js';
import {
  createBackend,
  type Backend,
  type ExternalInterface,
  type LeaseSkip,
  type PreparedBackend,
} from '../backends/index.js';
import { DataplaneMetrics, type ReconcileTrigger } from './dataplane-metrics.js';
import { describeOp } from './diff-state.js';
import { EventRelevance } from './event-relevance.js';
import { ReconcileStageError, Reconciler, type DataplaneInput, type ReconcileOutcome } from './reconciler.js';

/** Options of {@link Dataplane}. */
export interface DataplaneOptions {
  /** The network config; its `Backend.Type` selects the backend. */
  config: NetConfig;
  /** The interface that carries the overlay. */
  extIface: ExternalInterface;
  /** A netlink client in the node's namespace; the dataplane opens its own event stream on it. */
  netlink: Netlink;
  /** Use this backend instead of the one registered for the config's type (tests, embedding). */
  backend?: Backend;
  /** Default: the `dataplane` component logger. */
  logger?: Logger;
  /** Where the weft_flanneld_reconcile_* metrics go. Default: none. */
  registry?: Registry;
  /** Interval of the periodic full check in milliseconds; 0 turns it off. Default 10 000. */
  resyncIntervalMs?: number;
  /** Quiet time after a relevant netlink notification before reconciling, in ms. Default 100. */
  debounceMs?: number;
  /** Reconcile on netlink notifications. Default true. */
  watchEvents?: boolean;
  /** Backoff of retries after a failed reconcile, prepare or event stream. Default: src/backoff's defaults. */
  backoff?: BackoffOptions;
  /**
   * Called when the backend had to be prepared again (a device was recreated), with its new
   * result. Its lease attributes stay the same by contract; a daemon may still compare them.
   */
  onPrepared?: (prepared: PreparedBackend) => void;
}

/** What one reconcile did, as `update` and `reconcile` report it. */
export interface ReconcileResult {
  /** True when everything desired is in place (no failure at any stage). */
  readonly ok: boolean;
  readonly trigger: ReconcileTrigger;
  readonly added: number;
  readonly removed: number;
  readonly updated: number;
  readonly repaired: number;
  /** Leases not programmed, with reasons: unreadable entries and the planner's skips. */
  readonly skipped: readonly LeaseSkip[];
  /** Keys of the remote leases programmed. */
  readonly programmed: readonly string[];
  /** What failed (stage errors, refused entries), as messages. */
  readonly errors: readonly string[];
  readonly durationMs: number;
}

/** A snapshot of the dataplane's state, for /readyz and debugging. */
export interface DataplaneStatus {
  readonly ready: boolean;
  readonly prepared?: PreparedBackend;
  readonly lastResult?: ReconcileResult;
  readonly skipped: readonly LeaseSkip[];
}

/** Errnos worth waiting out at start: the interface or a device is coming and going. */
const TRANSIENT_ERRNOS = new Set(['EBUSY', 'EAGAIN', 'EINTR', 'ENOBUFS', 'ENODEV', 'ENOENT']);

function transient(err: unknown): boolean {
  if (isWeftError(err, ErrorCodes.TIMEOUT)) return true;
  const errno = errnoOf(err);
  return errno !== undefined && TRANSIENT_ERRNOS.has(errno);
}

export class Dataplane {
  /** The backend in use. */
  readonly backend: Backend;
  /** Resolves after the first reconcile that read the kernel, made the devices and applied the plan. */
  readonly ready: Promise<void>;

  readonly #o: DataplaneOptions;
  readonly #log: Logger;
  readonly #metrics: DataplaneMetrics;
  readonly #reconciler: Reconciler;
  readonly #relevance = new EventRelevance();
  readonly #retryBackoff: Backoff;
  readonly #abort = new AbortController();
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;
  #isReady = false;
  #closed = false;
  #input: DataplaneInput | undefined;
  #pending: ReconcileTrigger | undefined;
  #waiters: ((r: ReconcileResult) => void)[] = [];
  #running: Promise<void> | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #interval: NodeJS.Timeout | undefined;
  #events: NetlinkEvents | undefined;
  #watching: Promise<void> | undefined;
  #lastResult: ReconcileResult | undefined;
  #logged = new Map<string, string>();

  /** Throws WEFT_INVALID_CONFIG when no backend is registered for the config's type (and none is given). */
  constructor(opts: DataplaneOptions) {
    this.#o = opts;
    this.#log = opts.logger ?? componentLogger('dataplane');
    this.#metrics = new DataplaneMetrics(opts.registry);
    this.#retryBackoff = new Backoff(opts.backoff);
    this.backend =
      opts.backend ??
      createBackend({
        config: opts.config,
        extIface: opts.extIface,
        netlink: opts.netlink,
        logger: this.#log,
        ...(opts.registry && { metrics: opts.registry }),
      });
    this.#reconciler = new Reconciler({
      netlink: opts.netlink,
      backend: this.backend,
      config: opts.config,
      extIface: opts.extIface,
      logger: this.#log,
      ...(opts.onPrepared && { onPrepared: opts.onPrepared }),
    });
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Nobody has to await `ready`; a rejection on close must not become an unhandled one.
    this.ready.catch(() => {});
  }

  get isReady(): boolean {
    return this.#isReady;
  }

  /**
   * Create (or adopt) the backend's devices, then start watching the kernel. Returns what the
   * node publishes in its lease (BackendType, BackendData with the VTEP MAC) and the MTU for
   * subnet.env, so call it before writing the lease. Transient kernel errors are retried with
   * backoff until `signal` aborts; a configuration error (IPv6 enabled, no IPv6 on the interface)
   * rejects at once.
   */
  async start(signal?: AbortSignal): Promise<PreparedBackend> {
    this.#checkOpen('start');
    const backoff = new Backoff(this.#o.backoff);
    let prepared: PreparedBackend;
    for (;;) {
      try {
        prepared = await this.#reconciler.prepare();
        break;
      } catch (err) {
        this.#metrics.error('prepare');
        if (!transient(err) || this.#closed || signal?.aborted) throw err;
        this.#log.warn({ err }, 'preparing the backend failed; retrying');
        await backoff.wait(anySignal(signal, this.#abort.signal));
        this.#checkOpen('start');
      }
    }
    if (this.#o.watchEvents !== false && !this.#watching) this.#watching = this.#watch();
    const every = this.#o.resyncIntervalMs ?? 10_000;
    if (every > 0 && !this.#interval) {
      this.#interval = setInterval(() => this.#kick('periodic'), every);
      this.#interval.unref();
    }
    return prepared;
  }

  /**
   * Program this set of leases. Resolves when a reconcile that saw it has finished; never
   * rejects (a failure is in the result, logged, counted and retried with backoff).
   */
  update(input: DataplaneInput): Promise<ReconcileResult> {
    this.#input = input;
    return this.#request('update');
  }

  /** Reconcile now with the last leases given to `update` (resolves with ok=false before any). */
  reconcile(): Promise<ReconcileResult> {
    return this.#request('manual');
  }

  status(): DataplaneStatus {
    return {
      ready: this.#isReady,
      ...(this.#reconciler.prepared && { prepared: this.#reconciler.prepared }),
      ...(this.#lastResult && { lastResult: this.#lastResult }),
      skipped: this.#lastResult?.skipped ?? [],
    };
  }

  /**
   * Stop reconciling and watching. The kernel state stays as it is, so traffic keeps flowing
   * while the daemon restarts. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    for (const t of [this.#debounce, this.#retry]) clearTimeout(t);
    clearInterval(this.#interval);
    this.#events?.close();
    await this.#running;
    await this.#watching;
    this.#flushWaiters();
    this.#rejectReady(new WeftError(ErrorCodes.CLOSED, 'dataplane closed before it was ready'));
    try {
      await this.backend.close?.();
    } catch (err) {
      this.#log.warn({ err }, 'closing the backend failed');
    }
  }

  #checkOpen(op: string): void {
    if (this.#closed) throw new WeftError(ErrorCodes.CLOSED, `dataplane ${op}: closed`);
  }

  #request(trigger: ReconcileTrigger): Promise<ReconcileResult> {
    if (this.#closed || !this.#input) {
      return Promise.resolve(this.#emptyResult(trigger, this.#closed ? 'closed' : 'no leases given yet'));
    }
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      this.#kick(trigger);
    });
  }

  /** Ask for a run; one in progress is followed by one more, however many ask meanwhile. */
  #kick(trigger: ReconcileTrigger): void {
    if (this.#closed || !this.#input) return;
    // The first reason wins: `update` is more telling than a periodic tick folded into it.
    this.#pending ??= trigger;
    this.#running ??= this.#loop();
  }

  #schedule(trigger: ReconcileTrigger, delayMs: number): void {
    if (this.#closed || !this.#input) return;
    if (delayMs <= 0) return this.#kick(trigger);
    // A fixed window from the first notification: a steady stream cannot postpone the run forever.
    this.#debounce ??= setTimeout(() => {
      this.#debounce = undefined;
      this.#kick(trigger);
    }, delayMs);
  }

  async #loop(): Promise<void> {
    try {
      while (this.#pending && !this.#closed) {
        const trigger = this.#pending;
        this.#pending = undefined;
        const waiters = this.#waiters;
        this.#waiters = [];
        let result: ReconcileResult;
        try {
          result = await this.#runOnce(trigger);
        } catch (err) {
          // #runOnce handles kernel failures itself; this is a bug, and it must not take the daemon down.
          this.#log.error({ err, trigger }, 'dataplane reconcile crashed');
          result = this.#emptyResult(trigger, `internal error: ${messageOf(err)}`);
        }
        for (const w of waiters) w(result);
      }
    } finally {
      this.#running = undefined;
      if (this.#closed) this.#flushWaiters();
    }
  }

  #flushWaiters(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w(this.#emptyResult('manual', 'closed'));
  }

  async #runOnce(trigger: ReconcileTrigger): Promise<ReconcileResult> {
    const input = this.#input;
    if (!input) return this.#emptyResult(trigger, 'no leases given yet');
    const started = performance.now();
    const unreadable: LeaseSkip[] = (input.unreadable ?? []).map((u) => ({
      key: u.path,
      reason: `unreadable lease: ${u.error.message}`,
    }));
    let outcome: ReconcileOutcome | undefined;
    let errors: string[] = [];
    let essentialOk = false;
    try {
      outcome = await this.#reconciler.run(input, (snapshot, desired) =>
        this.#relevance.update(
          snapshot.links,
          desired,
          this.#o.extIface.name,
          (this.#reconciler.prepared?.devices ?? []).map((d) => d.name),
        ),
      );
      errors = outcome.failures.map((f) => `${describeOp(f.op)}: ${f.error.message}`);
      if (outcome.syncError) errors.push(`backend sync: ${outcome.syncError.message}`);
      this.#metrics.error('apply', outcome.failures.length);
      if (outcome.syncError) this.#metrics.error('sync');
      for (const [kind, n] of Object.entries(outcome.repairs)) {
        this.#metrics.repaired(kind as keyof typeof outcome.repairs, n);
      }
      // A remote's entry the kernel refuses is retried, but it must not keep the node unready.
      essentialOk = !outcome.failures.some((f) => f.op.kind === 'address');
    } catch (err) {
      const stage = err instanceof ReconcileStageError ? err.stage : 'read';
      this.#metrics.error(stage);
      errors = [`${stage}: ${messageOf(err)}`];
      this.#log.error({ err, stage, trigger }, `dataplane reconcile failed at ${stage}`);
    }
    const durationMs = performance.now() - started;
    const result: ReconcileResult = {
      ok: errors.length === 0,
      trigger,
      added: outcome?.added ?? 0,
      removed: outcome?.removed ?? 0,
      updated: outcome?.updated ?? 0,
      repaired: outcome?.repaired ?? 0,
      skipped: [...unreadable, ...(outcome?.desired.skipped ?? this.#lastResult?.skipped ?? [])],
      programmed: outcome?.desired.programmed ?? this.#lastResult?.programmed ?? [],
      errors,
      durationMs,
    };
    this.#lastResult = result;
    this.#metrics.run(trigger, result.ok, durationMs / 1000);
    this.#metrics.skipped(result.skipped.length);
    this.#logSkips(result.skipped);
    if (result.added + result.removed + result.updated + result.repaired > 0) {
      this.#log.info(
        {
          trigger,
          added: result.added,
          removed: result.removed,
          updated: result.updated,
          repaired: result.repaired,
          ms: Math.round(durationMs),
        },
        'dataplane reconciled',
      );
    }
    if (result.ok) {
      this.#retryBackoff.reset();
      clearTimeout(this.#retry);
      this.#retry = undefined;
    } else if (!this.#retry && !this.#closed) {
      const delay = this.#retryBackoff.next();
      this.#log.warn({ delayMs: delay, errors: errors.length }, 'dataplane not converged; retrying');
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.#kick('retry');
      }, delay);
    }
    if (outcome && essentialOk && !this.#isReady) {
      this.#isReady = true;
      this.#resolveReady();
    }
    return result;
  }

  /** Log each skipped lease once when it starts being skipped (or its reason changes), not every run. */
  #logSkips(skips: readonly LeaseSkip[]): void {
    const now = new Map<string, string>();
    for (const s of skips) {
      const id = s.family ? `${s.key} IPv${s.family}` : s.key;
      now.set(id, s.reason);
      if (this.#logged.get(id) !== s.reason) {
        this.#log.warn(
          { lease: s.key, family: s.family, reason: s.reason },
          `lease ${id} not programmed: ${s.reason}`,
        );
      }
    }
    for (const id of this.#logged.keys()) {
      if (!now.has(id)) this.#log.info({ lease: id }, `lease ${id} no longer skipped`);
    }
    this.#logged = now;
  }

  #emptyResult(trigger: ReconcileTrigger, why: string): ReconcileResult {
    return {
      ok: false,
      trigger,
      added: 0,
      removed: 0,
      updated: 0,
      repaired: 0,
      skipped: this.#lastResult?.skipped ?? [],
      programmed: this.#lastResult?.programmed ?? [],
      errors: [why],
      durationMs: 0,
    };
  }

  /** Follow netlink notifications; reopen the stream with backoff when it fails. */
  async #watch(): Promise<void> {
    const backoff = new Backoff(this.#o.backoff);
    const debounceMs = this.#o.debounceMs ?? 100;
    while (!this.#closed) {
      let failed = false;
      try {
        const events = this.#o.netlink.events({
          ref: false,
          groups: eventGroups(this.backend.type),
          families: eventFamilies(this.#o.config),
        });
        this.#events = events;
        if (this.#closed) events.close();
        // The groups are joined a moment after the stream opens (its relay process starts): what
        // changed before then was never notified, so look once the subscription stands.
        events.ready.then(
          () => this.#kick('event'),
          () => {},
        );
        for await (const ev of events) {
          backoff.reset();
          if (ev.kind === 'resync') {
            // Notifications were lost (a receive-buffer overflow, a relay restart): the kernel may
            // have changed in any way, so re-read all of it now, without the debounce.
            if (ev.reason === 'overflow') this.#metrics.netlinkOverflow();
            this.#log.warn({ reason: ev.reason }, 'netlink notifications lost; full resync of the dataplane');
            this.#kick('event');
          } else if (this.#relevant(ev)) this.#schedule('event', debounceMs);
        }
      } catch (err) {
        failed = true;
        this.#metrics.error('events');
        this.#log.warn({ err }, 'netlink event stream failed; reopening');
      } finally {
        this.#events?.close();
        this.#events = undefined;
      }
      if (this.#closed) break;
      if (!failed) this.#log.warn('netlink event stream ended; reopening');
      await backoff.wait(this.#abort.signal);
      // Notifications were lost while the stream was down.
      this.#schedule('event', 0);
    }
  }

  #relevant(ev: NetlinkEvent): boolean {
    try {
      return this.#relevance.relevant(ev);
    } catch (err) {
      this.#log.debug({ err }, 'could not classify a netlink notification; reconciling');
      return true;
    }
  }
}

/** Backends whose plan never has neighbour or FDB entries: they need no (noisy) neighbour group. */
const NO_NEIGHBOURS = new Set(['host-gw', 'udp', 'alloc']);

/** The notification groups a backend's dataplane reacts to; fewer groups, fewer overflows. */
export function eventGroups(backendType: string): NetlinkEventGroup[] {
  const groups: NetlinkEventGroup[] = ['link', 'address', 'route'];
  if (!NO_NEIGHBOURS.has(backendType)) groups.push('neighbour');
  return groups;
}

/** The address families the config enables (address and route notifications of others are noise). */
export function eventFamilies(config: NetConfig): IpFamily[] {
  const families: IpFamily[] = [];
  if (config.ipv4) families.push('inet');
  if (config.ipv6) families.push('inet6');
  return families.length > 0 ? families : ['inet', 'inet6'];
}

/** A signal that aborts when either does. */
function anySignal(a: AbortSignal | undefined, b: AbortSignal): AbortSignal {
  return a ? AbortSignal.any([a, b]) : b;
}

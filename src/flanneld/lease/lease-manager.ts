/**
 * The lease lifecycle of weft-flanneld over a registry Store: acquire (decided by
 * {@link chooseLease}, written atomically), renew at expiry minus a margin, re-take the same
 * subnet after a loss, keep the lease on shutdown. Every state change runs on one serial queue,
 * so a keep-alive loss and a watched delete arriving together cause one recovery, not two, and
 * the node never holds two subnets.
 */
import { Backoff, type BackoffOptions } from '../../backoff/index.js';
import { monotonicMs } from '../../clock/index.js';
import { ErrorCodes, WeftError, invalid, isWeftError, messageOf } from '../../errors/index.js';
import {
  DEFAULT_PREFIX,
  decodeLeaseAttrs,
  encodeLeaseAttrs,
  subnetsDir,
  type LeaseAttrs,
  type NetConfig,
  type SubnetKey,
} from '../../ipam/index.js';
import { componentLogger, type Logger } from '../../log/index.js';
import type { Registry } from '../../metrics/index.js';
import type { KeepAlive, KeyValue, Store, WatchEvent } from '../../registry/index.js';
import { chooseLease, isOwnLease, type LeaseChoice } from './choose-lease.js';
import { LeaseMetrics } from './lease-metrics.js';

/** flannel's lease TTL: 24 h. */
export const DEFAULT_LEASE_TTL_SECONDS = 86_400;
/** flannel's `--subnet-lease-renew-margin` default: 60 minutes. */
export const DEFAULT_RENEW_MARGIN_SECONDS = 3_600;
/** Attempts one acquisition may lose to concurrent writers before giving up. */
export const DEFAULT_MAX_ATTEMPTS = 10;

/** The lease this node holds. */
export interface Lease {
  /** The key part, e.g. `10.244.3.0-24`. */
  readonly key: string;
  /** Registry path, `<prefix>/subnets/<key>`. */
  readonly path: string;
  readonly subnets: SubnetKey;
  /** What the node publishes in it. */
  readonly attrs: LeaseAttrs;
  /** The stored value (flannel's JSON). */
  readonly value: string;
  /** An operator's reservation: a key without TTL, never given one and never renewed. */
  readonly reservation: boolean;
  /** Revision of the last write to the key that this manager knows of. */
  readonly modRevision: number;
  /** When the key expires unless renewed, in ms since the epoch; undefined for a reservation. */
  readonly expiresAt: number | undefined;
}

/** How a lease was obtained. */
export type LeaseSource = 'public-ip' | 'previous' | 'allocated' | 'retaken';

/** What a {@link LeaseManager} reports through {@link LeaseManagerOptions.onEvent}. */
export type LeaseEvent =
  | { type: 'acquired'; lease: Lease; source: Exclude<LeaseSource, 'retaken'> }
  | { type: 'renewed'; lease: Lease }
  /** A renewal failed (registry unreachable); it is retried, the lease is not known to be lost. */
  | { type: 'renewal-failed'; lease: Lease; error: Error }
  /** The key is gone or another node's; a re-take (`retaken`) or a new subnet (`changed`) follows. */
  | { type: 'lost'; lease: Lease; reason: string }
  | { type: 'retaken'; lease: Lease }
  | { type: 'changed'; lease: Lease; previous: Lease }
  /** A background recovery step failed; it is retried with backoff. */
  | { type: 'error'; error: Error };

/** Options of {@link LeaseManager}. */
export interface LeaseManagerOptions {
  /** The registry. The manager does not close it. */
  store: Store;
  /** The network config the lease must fit. */
  config: NetConfig;
  /**
   * What this node publishes (PublicIP, backend type and data, e.g. the VtepMAC). The PublicIP
   * (and PublicIPv6 with IPv6) is the node's identity: a lease carrying it is this node's.
   */
  attrs: LeaseAttrs;
  /** Registry prefix; default flannel's `/coreos.com/network`. */
  prefix?: string;
  /** The lease named by the previous subnet.env, reused when free and still fitting. */
  previous?: SubnetKey;
  /** TTL of the lease key, in seconds. Default 86 400 (flannel's). */
  ttlSeconds?: number;
  /**
   * Renew this long before expiry, in seconds (flanneld's `--subnet-lease-renew-margin` × 60).
   * Default 3 600. Must be below {@link LeaseManagerOptions.ttlSeconds}.
   */
  renewMarginSeconds?: number;
  /**
   * Writes one acquisition may lose to other nodes (a create race, a changed key) before it
   * fails with WEFT_CONFLICT. Default 10. An unreachable registry is not counted: that is
   * retried with backoff until the acquisition's signal aborts or the manager closes.
   */
  maxAttempts?: number;
  /** Delays between retries while the registry is unreachable. */
  backoff?: BackoffOptions;
  /** `Math.random`-like source for the pick among free subnets. */
  random?: () => number;
  /** Clock for expiry times, in ms since the epoch. Default `Date.now`. */
  now?: () => number;
  /** Logger; the manager logs through its child `component: 'lease'`. Default the root logger. */
  logger?: Logger;
  /** Prometheus registry for the weft_flanneld_lease_* metrics; none by default. */
  metrics?: Registry;
  /**
   * The node's subnet changed after a loss (the old one is another node's now): re-program the
   * dataplane and subnet.env. The old lease is no longer held when this is called.
   */
  onChange?: (lease: Lease, previous: Lease) => void;
  /** Every lifecycle event, for logs, readiness and tests. */
  onEvent?: (event: LeaseEvent) => void;
}

/** Options of {@link LeaseManager.acquire}. */
export interface AcquireOptions {
  /** Stops waiting for an unreachable registry. */
  signal?: AbortSignal;
}

/** The manager's own record of the held lease; its identity marks one tenure of the lease. */
interface Held {
  key: string;
  path: string;
  subnets: SubnetKey;
  value: string;
  reservation: boolean;
  modRevision: number;
  expiresAt: number | undefined;
}

const SOURCE_TEXT: Record<LeaseSource, string> = {
  'public-ip': "reused this node's lease, found by its PublicIP",
  previous: 'reused the subnet of the previous subnet.env',
  allocated: 'allocated a free subnet',
  retaken: 're-took the same subnet',
};

const isTransient = (err: unknown): boolean =>
  isWeftError(err, ErrorCodes.REGISTRY_UNAVAILABLE) || isWeftError(err, ErrorCodes.TIMEOUT);

export class LeaseManager {
  readonly #store: Store;
  readonly #config: NetConfig;
  readonly #attrs: LeaseAttrs;
  readonly #value: string;
  readonly #prefix: string;
  readonly #dir: string;
  readonly #previous: SubnetKey | undefined;
  readonly #ttl: number;
  readonly #margin: number;
  readonly #maxAttempts: number;
  readonly #backoff: BackoffOptions;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #log: Logger;
  readonly #metrics: LeaseMetrics;
  readonly #onChange: ((lease: Lease, previous: Lease) => void) | undefined;
  readonly #onEvent: ((event: LeaseEvent) => void) | undefined;
  readonly #closing = new AbortController();
  readonly #tasks = new Set<Promise<unknown>>();
  readonly #reportedSkips = new Set<string>();
  #held: Held | undefined;
  #keepAlive: KeepAlive | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(opts: LeaseManagerOptions) {
    this.#ttl = opts.ttlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    this.#margin = opts.renewMarginSeconds ?? DEFAULT_RENEW_MARGIN_SECONDS;
    this.#maxAttempts = opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    if (!Number.isFinite(this.#ttl) || this.#ttl <= 0)
      throw invalid('lease manager', 'ttlSeconds', `must be a positive number, got ${this.#ttl}`);
    if (!Number.isFinite(this.#margin) || this.#margin <= 0 || this.#margin >= this.#ttl) {
      throw invalid(
        'lease manager',
        'renewMarginSeconds',
        `must be positive and below the TTL (${this.#ttl} s), got ${this.#margin}`,
      );
    }
    if (!Number.isSafeInteger(this.#maxAttempts) || this.#maxAttempts < 1)
      throw invalid('lease manager', 'maxAttempts', `must be a positive integer, got ${this.#maxAttempts}`);
    this.#store = opts.store;
    this.#config = opts.config;
    // Round-tripped so addresses compare in canonical form with what other nodes wrote.
    this.#value = encodeLeaseAttrs(opts.attrs);
    this.#attrs = decodeLeaseAttrs(this.#value, 'this node');
    this.#prefix = opts.prefix ?? DEFAULT_PREFIX;
    this.#dir = subnetsDir(this.#prefix);
    this.#previous = opts.previous;
    this.#backoff = opts.backoff ?? {};
    this.#random = opts.random ?? Math.random;
    this.#now = opts.now ?? Date.now;
    this.#log = opts.logger ? opts.logger.child({ component: 'lease' }) : componentLogger('lease');
    this.#metrics = new LeaseMetrics(opts.metrics);
    this.#onChange = opts.onChange;
    this.#onEvent = opts.onEvent;
  }

  /** The lease held now; undefined before {@link acquire}, after release, or between a loss and its recovery. */
  get current(): Lease | undefined {
    return this.#held && this.#snapshot(this.#held);
  }

  /**
   * Acquires this node's lease (or returns the one held): its own lease by PublicIP, else the
   * previous subnet.env subnet if free, else a free subnet; a create lost to another node is
   * retried with another subnet. Throws WEFT_OUT_OF_SUBNETS, WEFT_CONFLICT (too many lost
   * races), WEFT_CLOSED, or the signal's reason.
   */
  acquire(opts: AcquireOptions = {}): Promise<Lease> {
    return this.#serial(async () => {
      if (this.#closed) throw this.#closedError();
      if (this.#held) return this.#snapshot(this.#held);
      const signal = opts.signal
        ? AbortSignal.any([opts.signal, this.#closing.signal])
        : this.#closing.signal;
      const { held, source } = await this.#acquireLoop(this.#previous, new Set(), signal);
      this.#hold(held, source);
      return this.#snapshot(held);
    });
  }

  /**
   * Feeds one event of a watch on `<prefix>/subnets/` (the daemon's own watch, for the
   * dataplane). A delete or foreign write of the node's key starts a recovery; a `resync`
   * checks the key. Events older than the manager's last write to its key are ignored. Never
   * rejects; need not be awaited (it resolves once the event is handled).
   */
  handleWatchEvent(event: WatchEvent): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#track(
      this.#serial(async () => {
        const held = this.#held;
        if (!held || this.#closed) return;
        if (event.type === 'resync') return this.#reconcile(held, 'the watch resynchronised');
        if (event.key !== held.path || event.revision <= held.modRevision) return;
        if (event.type === 'put' && event.value === held.value && event.ttlBound === !held.reservation) {
          held.modRevision = event.revision;
          return;
        }
        await this.#reconcile(
          held,
          event.type === 'delete' ? 'its key was deleted' : 'its key was rewritten',
        );
      }),
    );
  }

  /**
   * Renews now instead of at expiry minus the margin; for a reservation, checks that the key is
   * still there (re-taking it if not). Resolves false when no lease is held or it was lost.
   */
  async renewNow(): Promise<boolean> {
    const held = this.#held;
    if (!held || this.#closed) return false;
    if (held.reservation) {
      await this.#track(this.#serial(() => this.#reconcile(held, 'checked at renewal')));
      return this.#held !== undefined;
    }
    const ka = this.#keepAlive;
    if (!ka) return false;
    try {
      return await ka.renew();
    } catch {
      return false;
    }
  }

  /**
   * Deletes the lease key (only while it is still this node's) and closes the manager. A
   * reservation is an operator's and is left in place. Shutdown without release keeps the
   * lease, so that a restart reuses it. Resolves true when a key was deleted.
   */
  async release(): Promise<boolean> {
    try {
      return await this.#serial(async () => {
        const held = this.#held;
        if (!held) return false;
        await this.#stopKeepAlive();
        this.#held = undefined;
        this.#metrics.clearExpiry();
        if (held.reservation) {
          this.#log.info({ subnet: held.key }, `kept reservation ${subnetText(held)}: it is an operator's`);
          return false;
        }
        let deleted = await this.#store.delete(held.path, { modRevision: held.modRevision });
        if (!deleted) {
          const kv = await this.#store.get(held.path);
          if (kv && this.#isOwn(kv))
            deleted = await this.#store.delete(held.path, { modRevision: kv.modRevision });
        }
        this.#log.info(
          { subnet: held.key },
          deleted
            ? `released subnet ${subnetText(held)}`
            : `subnet ${subnetText(held)} was no longer this node's; nothing to release`,
        );
        return deleted;
      });
    } finally {
      await this.close();
    }
  }

  /** Stops renewing and recovering. The lease key stays in the registry (its TTL runs on). */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#closing.abort();
      await this.#stopKeepAlive();
      const held = this.#held;
      if (held)
        this.#log.info({ subnet: held.key }, `stopped; kept lease ${subnetText(held)} for the next start`);
    }
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    await this.#chain;
  }

  // --- acquisition -------------------------------------------------------------------------

  async #acquireLoop(
    previous: SubnetKey | undefined,
    exclude: Set<string>,
    signal: AbortSignal,
  ): Promise<{ held: Held; source: LeaseSource }> {
    const backoff = new Backoff(this.#backoff);
    let lost = 0;
    let previousReported = false;
    const lose = (what: string): void => {
      if (++lost < this.#maxAttempts) return;
      throw new WeftError(
        ErrorCodes.CONFLICT,
        `could not acquire a subnet lease: ${lost} attempts lost to other writers (last: ${what})`,
        { attempts: lost },
      );
    };
    for (;;) {
      if (this.#closed) throw this.#closedError();
      signal.throwIfAborted();
      try {
        const listing = await this.#store.list(this.#dir);
        const choice = chooseLease({
          config: this.#config,
          entries: listing.items,
          prefix: this.#prefix,
          attrs: this.#attrs,
          exclude,
          random: this.#random,
          ...(previous && { previous }),
        });
        this.#reportChoice(choice, !previousReported);
        previousReported ||= choice.previousRejected !== undefined;

        let removed = false;
        for (const stale of choice.stale) {
          if (await this.#store.delete(stale.path, { modRevision: stale.modRevision })) {
            this.#log.info(
              { subnet: stale.key },
              `deleted stale lease ${stale.key} of this node (not fitting the config, or a duplicate)`,
            );
            removed = true;
          } else {
            lose(`delete of stale lease ${stale.key}`);
          }
        }
        // Space freed by a stale lease of this node may be exactly what a new lease needs.
        if (removed && choice.kind !== 'reuse') continue;

        if (choice.kind === 'error') throw choice.error;
        if (choice.kind === 'reuse') {
          const l = choice.lease;
          const base = { key: l.key, path: l.path, subnets: l.subnets, value: this.#value };
          if (!choice.needsUpdate) {
            return {
              held: { ...base, reservation: true, modRevision: l.modRevision, expiresAt: undefined },
              source: 'public-ip',
            };
          }
          const started = this.#now();
          // A reservation is written without a TTL: flannel attaches one here and so breaks it.
          const res = await this.#store.update(
            l.path,
            this.#value,
            { modRevision: l.modRevision },
            { ttlSeconds: l.ttlBound ? this.#ttl : null },
          );
          if (!res.updated) {
            this.#log.debug({ subnet: l.key }, 'own lease changed while being reused; deciding again');
            lose(`update of ${l.key}`);
            continue;
          }
          return {
            held: {
              ...base,
              reservation: !l.ttlBound,
              modRevision: res.revision,
              expiresAt: l.ttlBound ? started + this.#ttl * 1000 : undefined,
            },
            source: 'public-ip',
          };
        }

        const started = this.#now();
        const res = await this.#store.create(choice.path, this.#value, { ttlSeconds: this.#ttl });
        if (res.created) {
          return {
            held: {
              key: choice.key,
              path: choice.path,
              subnets: choice.subnets,
              value: this.#value,
              reservation: false,
              modRevision: res.revision,
              expiresAt: started + this.#ttl * 1000,
            },
            source: choice.source,
          };
        }
        // An earlier attempt whose answer was lost may have created it: the next round finds it
        // by PublicIP. Anything else is another node's win.
        if (this.#isOwn(res.current)) continue;
        exclude.add(choice.key);
        this.#log.info(
          { subnet: choice.key },
          `lost the race for subnet ${choice.key} to another node; trying another subnet`,
        );
        lose(`create of ${choice.key}`);
      } catch (err) {
        if (!isTransient(err) || this.#closed || signal.aborted) throw err;
        this.#log.warn({ err: messageOf(err) }, 'registry unavailable while acquiring a lease; retrying');
        await backoff.wait(signal);
      }
    }
  }

  #reportChoice(choice: LeaseChoice, reportPrevious: boolean): void {
    for (const s of choice.skipped) {
      const id = `${s.path}\0${s.error.message}`;
      if (this.#reportedSkips.has(id)) continue;
      this.#reportedSkips.add(id);
      this.#log.warn(
        { key: s.path, err: s.error.message, taken: s.subnets.map(String) },
        `ignoring unreadable lease entry ${s.path}; its subnets stay taken`,
      );
    }
    for (const r of choice.ignoredReservations) {
      this.#log.warn(
        { subnet: r.key },
        `reservation ${r.key} names this node but does not fit the config (or another is used); left alone`,
      );
    }
    if (reportPrevious && choice.previousRejected) {
      const { subnet, reason } = choice.previousRejected;
      this.#log.info({ subnet }, `not reusing subnet ${subnet} of the previous subnet.env: ${reason}`);
    }
  }

  #hold(held: Held, source: LeaseSource): void {
    this.#held = held;
    this.#metrics.acquired();
    this.#metrics.expiry(held.expiresAt);
    this.#startKeepAlive(held);
    const lease = this.#snapshot(held);
    if (source === 'retaken') {
      this.#log.warn({ subnet: held.key }, `re-took subnet ${subnetText(held)} after loss`);
      this.#emit({ type: 'retaken', lease });
    } else {
      this.#log.info(
        { subnet: held.key, source, reservation: held.reservation, expiresAt: held.expiresAt },
        `acquired subnet ${subnetText(held)} (${SOURCE_TEXT[source]}${held.reservation ? '; a reservation, no TTL' : ''})`,
      );
      this.#emit({ type: 'acquired', lease, source });
    }
  }

  // --- renewal -----------------------------------------------------------------------------

  /**
   * Renewal through the store's keep-alive rather than re-puts: the store judges loss on the
   * server side (etcd answers TTL 0 for a dead lease), checks the value still is ours, and a
   * renewal is not a write, so it wakes no watcher on any node.
   */
  #startKeepAlive(held: Held): void {
    if (held.reservation || this.#closed) return;
    const ka = this.#store.keepAlive(held.path, {
      ttlSeconds: this.#ttl,
      // Each renewal restores the full TTL, so renewing every TTL − margin renews at expiry − margin.
      intervalMs: Math.max(1, (this.#ttl - this.#margin) * 1000),
      expectValue: held.value,
    });
    this.#keepAlive = ka;
    void this.#track(this.#followKeepAlive(ka, held));
  }

  async #followKeepAlive(ka: KeepAlive, held: Held): Promise<void> {
    /** When renewals began to fail; the first success after that is logged at info, ending the warnings. */
    let failingSince: number | undefined;
    for await (const ev of ka.events()) {
      if (this.#keepAlive !== ka || this.#held !== held) return;
      if (ev.type === 'renewed') {
        held.expiresAt = this.#now() + ev.ttlSeconds * 1000;
        this.#metrics.renewal('ok');
        this.#metrics.expiry(held.expiresAt);
        const fields = { subnet: held.key, expiresAt: held.expiresAt };
        if (failingSince !== undefined) {
          this.#log.info(
            { ...fields, failedForMs: Math.round(monotonicMs() - failingSince) },
            'renewed lease after failed attempts',
          );
          failingSince = undefined;
        } else {
          this.#log.debug(fields, 'renewed lease');
        }
        this.#emit({ type: 'renewed', lease: this.#snapshot(held) });
      } else if (ev.type === 'error') {
        failingSince ??= monotonicMs();
        this.#metrics.renewal('error');
        this.#log.warn({ subnet: held.key, err: ev.error.message }, 'could not renew lease; retrying');
        this.#emit({ type: 'renewal-failed', lease: this.#snapshot(held), error: ev.error });
      } else {
        this.#metrics.renewal('lost');
        this.#keepAlive = undefined;
        void this.#track(this.#serial(() => this.#reconcile(held, `renewal failed: ${ev.reason}`)));
        return;
      }
    }
  }

  async #stopKeepAlive(): Promise<void> {
    const ka = this.#keepAlive;
    this.#keepAlive = undefined;
    await ka?.close();
  }

  // --- recovery ----------------------------------------------------------------------------

  /**
   * Aligns the held lease with the registry after a sign of loss: a key still this node's is
   * kept; a missing key is created again (the same subnet keeps the pods' addresses); a key
   * another node holds is given up for a new subnet. Retries while the registry is unreachable.
   */
  async #reconcile(held: Held, why: string): Promise<void> {
    const backoff = new Backoff(this.#backoff);
    let reported = false;
    while (!this.#closed && this.#held === held) {
      try {
        let kv = await this.#store.get(held.path);
        if (kv && this.#isOwn(kv)) return await this.#adopt(held, kv, why);
        if (!reported) {
          reported = true;
          this.#metrics.lost();
          const reason = `${why}; ${kv ? 'another node holds it now' : 'the key is gone'}`;
          this.#log.warn({ subnet: held.key, reason }, `lost subnet ${subnetText(held)}: ${reason}`);
          this.#emit({ type: 'lost', lease: this.#snapshot(held), reason });
        }
        if (!kv) {
          const started = this.#now();
          const res = await this.#store.create(held.path, this.#value, { ttlSeconds: this.#ttl });
          if (res.created) {
            await this.#stopKeepAlive();
            if (held.reservation) {
              // The operator removed the pin; the subnet is still free, so keep it as a lease.
              this.#log.warn(
                { subnet: held.key },
                `reservation ${held.key} was deleted; holding it with a TTL`,
              );
            }
            this.#hold(
              {
                ...held,
                value: this.#value,
                reservation: false,
                modRevision: res.revision,
                expiresAt: started + this.#ttl * 1000,
              },
              'retaken',
            );
            return;
          }
          kv = res.current;
          if (this.#isOwn(kv)) return await this.#adopt(held, kv, why);
        }
        return await this.#replace(held, kv);
      } catch (err) {
        if (this.#closed) return;
        if (!isTransient(err) && !isWeftError(err, ErrorCodes.CONFLICT)) throw err;
        this.#log.warn({ subnet: held.key, err: messageOf(err) }, 'could not check the lease; retrying');
        this.#emit({ type: 'error', error: asError(err) });
        await backoff.wait(this.#closing.signal);
      }
    }
  }

  /** The key is still this node's: keep it, rewriting only what drifted, never adding a TTL to a reservation. */
  async #adopt(held: Held, kv: KeyValue, why: string): Promise<void> {
    const reservation = !kv.ttlBound;
    const renewing = this.#keepAlive !== undefined;
    let modRevision = kv.modRevision;
    let expiresAt = reservation ? undefined : held.expiresAt;
    if (kv.value !== this.#value || (!reservation && !renewing)) {
      const started = this.#now();
      const res = await this.#store.update(
        held.path,
        this.#value,
        { modRevision: kv.modRevision },
        { ttlSeconds: reservation ? null : this.#ttl },
      );
      if (!res.updated)
        throw new WeftError(ErrorCodes.CONFLICT, `lease ${held.key} changed while being checked`, {
          key: held.path,
        });
      modRevision = res.revision;
      if (!reservation) expiresAt = started + this.#ttl * 1000;
    }
    if (reservation !== held.reservation) {
      this.#log.warn(
        { subnet: held.key },
        reservation
          ? `lease ${held.key} was turned into a reservation; no longer renewing it`
          : `reservation ${held.key} is TTL-bound now; renewing it`,
      );
    }
    held.value = this.#value;
    held.reservation = reservation;
    held.modRevision = modRevision;
    held.expiresAt = expiresAt;
    this.#metrics.expiry(expiresAt);
    if (reservation) await this.#stopKeepAlive();
    else if (!this.#keepAlive) this.#startKeepAlive(held);
    this.#log.debug({ subnet: held.key, why }, 'lease still held by this node');
  }

  /** Another node holds the subnet now: forget it, then acquire a new one (retried until it works or the manager closes). */
  async #replace(old: Held, holder: KeyValue): Promise<void> {
    await this.#stopKeepAlive();
    this.#held = undefined;
    this.#metrics.clearExpiry();
    const holderIp = publicIpOf(holder);
    this.#log.warn(
      { subnet: old.key, holder: holderIp },
      `subnet ${subnetText(old)} is held by another node (${holderIp}) now; acquiring a new subnet`,
    );
    const backoff = new Backoff(this.#backoff);
    while (!this.#closed) {
      try {
        const { held, source } = await this.#acquireLoop(undefined, new Set([old.key]), this.#closing.signal);
        this.#hold(held, source);
        this.#log.warn(
          { subnet: held.key, previous: old.key },
          `acquired subnet ${subnetText(held)} in place of lost subnet ${subnetText(old)}`,
        );
        const lease = this.#snapshot(held);
        const previous = this.#snapshot(old);
        this.#emit({ type: 'changed', lease, previous });
        try {
          this.#onChange?.(lease, previous);
        } catch (err) {
          this.#log.error({ err: messageOf(err) }, 'lease onChange callback failed');
        }
        return;
      } catch (err) {
        if (this.#closed) return;
        this.#log.error({ err: messageOf(err) }, 'could not acquire a new subnet; retrying');
        this.#emit({ type: 'error', error: asError(err) });
        await backoff.wait(this.#closing.signal);
      }
    }
  }

  // --- plumbing ----------------------------------------------------------------------------

  #isOwn(kv: KeyValue): boolean {
    try {
      return isOwnLease(this.#config, decodeLeaseAttrs(kv.value, kv.key), this.#attrs);
    } catch {
      return false;
    }
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Keeps background work visible to close(), and its failures in the log. */
  #track(p: Promise<unknown>): Promise<void> {
    const tracked = p.then(
      () => undefined,
      (err: unknown) => {
        if (!this.#closed) this.#log.error({ err: messageOf(err) }, 'lease recovery failed');
      },
    );
    this.#tasks.add(tracked);
    void tracked.finally(() => this.#tasks.delete(tracked));
    return tracked;
  }

  #emit(event: LeaseEvent): void {
    try {
      this.#onEvent?.(event);
    } catch (err) {
      this.#log.error({ err: messageOf(err) }, 'lease onEvent callback failed');
    }
  }

  #snapshot(h: Held): Lease {
    return Object.freeze({
      key: h.key,
      path: h.path,
      subnets: h.subnets,
      attrs: this.#attrs,
      value: h.value,
      reservation: h.reservation,
      modRevision: h.modRevision,
      expiresAt: h.expiresAt,
    });
  }

  #closedError(): WeftError {
    return new WeftError(ErrorCodes.CLOSED, 'lease manager is closed');
  }
}

function subnetText(h: { subnets: SubnetKey }): string {
  return [h.subnets.ipv4, h.subnets.ipv6]
    .filter((c) => c !== undefined)
    .map(String)
    .join(' + ');
}

function publicIpOf(kv: KeyValue): string {
  try {
    const attrs = decodeLeaseAttrs(kv.value, kv.key);
    return attrs.publicIPv6 && attrs.publicIP === '0.0.0.0' ? attrs.publicIPv6 : attrs.publicIP;
  } catch {
    return 'unknown';
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(messageOf(err));
}

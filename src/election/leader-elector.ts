/**
 * Leader election through the registry, with client-go's leaderelection semantics (lease
 * duration, renew deadline, retry period) on a TTL-bound election key:
 *
 * - a candidate creates the key (create-if-absent with a TTL: an etcd lease; on Redis the
 *   store's create script, SET NX PX's equivalent), then stamps it with its fencing token, the
 *   store revision of that create (strictly growing across elections on both backends);
 * - the leader renews the key's TTL every retry period; its last successful renewal is
 *   counted from when the renewal was sent, so the store's deadline is never earlier than the
 *   leader's own. Once that is older than the renew deadline (shorter than the lease) the leader
 *   steps down: it stops writing before its key can expire and another can win;
 * - every write of the leader carries {@link LeaderElector.guard}, the key and the exact value
 *   of its term: the store applies it only while the key still holds it, so a leader that paused
 *   or was cut off cannot write after another won, whatever its clock says;
 * - a standby tries to create the key every retry period (with jitter) and wins once it is
 *   gone: deleted by a resigning leader, or expired after the leader's death.
 */
import { Backoff, sleep } from '../backoff/index.js';
import { monotonicMs } from '../clock/index.js';
import { ErrorCodes, invalid, isWeftError, messageOf } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import type { KeepAlive, KeyValue, Store, WriteGuard } from '../registry/index.js';
import { decodeRecord, encodeRecord, validIdentity } from './record.js';

/** Options of {@link LeaderElector}. Defaults are kube-controller-manager's. */
export interface LeaderElectorOptions {
  /** The registry holding the election key. */
  store: Store;
  /** The election key, e.g. `/weft/leases/weft-controller`. */
  key: string;
  /** This candidate's identity, unique among the candidates (e.g. `<hostname>_<pid>`). */
  identity: string;
  /** TTL of the election key, in seconds: how long a dead leader blocks the others. Default 15. */
  leaseSeconds?: number;
  /**
   * How long the leader keeps leading without a successful renewal, in seconds. Must be below
   * the lease, so that it stops before its key can expire. Default 10.
   */
  renewDeadlineSeconds?: number;
  /** How often the leader renews and a standby tries to acquire, in ms. Default 2000. */
  retryPeriodMs?: number;
  /** Parent logger; the elector logs through a child. */
  log: Logger;
  /** Called with true when this candidate starts leading, false when it stops. */
  onChange?: (leader: boolean) => void;
}

/** Who holds an election key, as {@link LeaderElector.holder} reports it. */
export interface ElectionHolder {
  identity: string;
  /** The fencing token of the holder's term. */
  token: number;
  /** When the holder won, ISO 8601. */
  acquiredAt: string;
}

/** One term of leadership. */
interface Term {
  /** The key's value for this term: the guard of every write. */
  value: string;
  token: number;
  keepAlive: KeepAlive;
  /** Monotonic time the last successful renewal was sent. */
  renewedAt: number;
  timer: NodeJS.Timeout | undefined;
}

/** Unstamped values of the latest attempts that are remembered (an attempt's create may have applied unseen). */
const MAX_PENDING = 4;

export class LeaderElector {
  readonly #store: Store;
  readonly #key: string;
  readonly #identity: string;
  readonly #leaseSeconds: number;
  readonly #renewDeadlineMs: number;
  readonly #retryMs: number;
  readonly #log: Logger;
  readonly #onChange: ((leader: boolean) => void) | undefined;
  readonly #stop = new AbortController();
  /** Unstamped values of the latest attempts; a key holding one is this elector's own. */
  readonly #pending: string[] = [];
  /** The value of the last term; a key still holding it is this elector's own. */
  #lastTerm: string | undefined;
  #term: Term | undefined;
  #running: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  /** The last holder seen by a standby, to log changes of leader once. */
  #seen: string | undefined;

  constructor(opts: LeaderElectorOptions) {
    const what = 'LeaderElector';
    if (typeof opts.key !== 'string' || !opts.key.startsWith('/'))
      throw invalid(what, 'key', 'must be a registry key starting with "/"');
    if (!validIdentity(opts.identity))
      throw invalid(
        what,
        'identity',
        'must be a non-empty string without control characters, at most 512 long',
      );
    const lease = opts.leaseSeconds ?? 15;
    const renew = opts.renewDeadlineSeconds ?? 10;
    const retry = opts.retryPeriodMs ?? 2_000;
    if (!(Number.isFinite(lease) && lease > 0)) throw invalid(what, 'leaseSeconds', 'must be positive');
    if (!(Number.isFinite(renew) && renew > 0 && renew < lease))
      throw invalid(what, 'renewDeadlineSeconds', 'must be positive and below leaseSeconds');
    if (!(Number.isFinite(retry) && retry > 0 && retry < renew * 1000))
      throw invalid(what, 'retryPeriodMs', 'must be positive and below the renew deadline');
    this.#store = opts.store;
    this.#key = opts.key;
    this.#identity = opts.identity;
    this.#leaseSeconds = lease;
    this.#renewDeadlineMs = renew * 1000;
    this.#retryMs = retry;
    this.#log = opts.log.child({ component: 'election', key: opts.key, identity: opts.identity });
    this.#onChange = opts.onChange;
  }

  /** Starts campaigning (and leading, once elected) in the background. */
  start(): void {
    if (this.#running || this.#stop.signal.aborted) return;
    this.#running = this.#loop();
  }

  /**
   * Stops campaigning; a leader stops leading (onChange(false)) and then resigns: deletes its
   * key, guarded by its value, so a standby takes over at its next try rather than after the TTL.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  /** True while this candidate leads and its last renewal is within the renew deadline. */
  isLeader(): boolean {
    return this.guard() !== undefined;
  }

  /**
   * The guard for every write of the leader, or undefined when not leading, or when the last
   * successful renewal is older than the renew deadline (a cut-off leader stops writing before
   * its lease can expire).
   */
  guard(): WriteGuard | undefined {
    const term = this.#term;
    if (!term) return undefined;
    if (!this.#fresh(term)) {
      // Past the deadline before its timer fired: step down now, so that onChange(false) has
      // been delivered whenever isLeader() says false.
      this.#stepDown(term, `no successful renewal within the renew deadline (${this.#renewDeadlineMs} ms)`);
      return undefined;
    }
    return { key: this.#key, value: term.value };
  }

  /** The current holder of an election key, or undefined when nobody leads. */
  static async holder(store: Store, key: string): Promise<ElectionHolder | undefined> {
    const kv = await store.get(key);
    const r = kv ? decodeRecord(kv.value) : undefined;
    // Token 0: a candidate between its create and its stamp, not yet leading.
    if (!r || r.token === 0) return undefined;
    return { identity: r.holder, token: r.token, acquiredAt: r.acquiredAt };
  }

  #fresh(term: Term): boolean {
    return monotonicMs() - term.renewedAt < this.#renewDeadlineMs;
  }

  async #loop(): Promise<void> {
    const signal = this.#stop.signal;
    // Standbys retry at the retry period ±20%, so candidates that started together spread out.
    const pace = new Backoff({
      initialMs: this.#retryMs,
      maxMs: this.#retryMs * 1.2,
      multiplier: 1,
      jitter: 0.2,
    });
    // An outage is warned about once, when it starts; its further failures are debug.
    let failing = false;
    while (!signal.aborted) {
      try {
        const term = this.#term;
        if (term) await this.#renew(term);
        else await this.#tryAcquire();
        if (failing) this.#log.info('leader election: registry reachable again');
        failing = false;
      } catch (err) {
        // The store is unreachable: keep trying; a leader's deadline is kept by its timer.
        const fields = { err: messageOf(err) };
        if (!failing) this.#log.warn(fields, 'leader election: registry request failed; retrying');
        else this.#log.debug(fields, 'leader election: registry request failed; retrying');
        failing = true;
      }
      await sleep(this.#term ? this.#retryMs : pace.next(), signal);
    }
  }

  async #tryAcquire(): Promise<void> {
    const acquiredAt = new Date().toISOString();
    const pending = encodeRecord({ holder: this.#identity, token: 0, acquiredAt });
    this.#pending.push(pending);
    if (this.#pending.length > MAX_PENDING) this.#pending.shift();
    // Sent before the store starts the key's TTL, so the store's deadline is never earlier.
    const sentAt = monotonicMs();
    const c = await this.#store.create(this.#key, pending, { ttlSeconds: this.#leaseSeconds });
    if (!c.created) {
      await this.#sawHolder(c.current);
      return;
    }
    const token = c.revision;
    const value = encodeRecord({ holder: this.#identity, token, acquiredAt });
    this.#lastTerm = value;
    const u = await this.#store.update(this.#key, value, { modRevision: c.revision });
    // Lost between create and stamp (expired, deleted): try again at the next period.
    if (!u.updated) return;
    if (this.#stop.signal.aborted) {
      await this.#resign(value);
      return;
    }
    // A stamp answered after the renew deadline: leading now would already be overdue. The key
    // is left to the next attempt, which frees it (see #sawHolder).
    if (monotonicMs() - sentAt >= this.#renewDeadlineMs) {
      this.#log.warn('election won too slowly to lead; trying again');
      return;
    }
    const term: Term = {
      value,
      token,
      keepAlive: this.#store.keepAlive(this.#key, {
        ttlSeconds: this.#leaseSeconds,
        // Renewals are driven by #renew every retry period; the store's own loop is a backstop.
        intervalMs: this.#renewDeadlineMs,
        expectValue: value,
      }),
      renewedAt: sentAt,
      timer: undefined,
    };
    this.#term = term;
    this.#seen = this.#identity;
    this.#armDeadline(term);
    void this.#drain(term);
    this.#log.info({ token, acquiredAt }, 'became leader');
    this.#notify(true);
  }

  /** A standby found the key held: logs a new holder; frees a key this elector left behind. */
  async #sawHolder(current: KeyValue): Promise<void> {
    if (current.value === this.#lastTerm || this.#pending.includes(current.value)) {
      // Ours from a term that ended at the renew deadline or an attempt cut short by an error:
      // nobody leads under it, so it is freed now rather than after its TTL.
      this.#log.info('deleting an election key this candidate left behind');
      await this.#store.delete(this.#key, { modRevision: current.modRevision });
      return;
    }
    const r = decodeRecord(current.value);
    const holder = r ? r.holder : '(invalid election record)';
    if (holder === this.#seen) return;
    this.#seen = holder;
    if (!r) this.#log.warn({ ttlBound: current.ttlBound }, 'the election key holds no valid record');
    else
      this.#log.info(
        { holder: r.holder, token: r.token, acquiredAt: r.acquiredAt },
        'leader is another candidate',
      );
  }

  async #renew(term: Term): Promise<void> {
    const sentAt = monotonicMs();
    let ok: boolean;
    try {
      ok = await term.keepAlive.renew();
    } catch (err) {
      // Not known to be lost: the renew deadline decides.
      if (this.#term === term) this.#log.debug({ err: messageOf(err) }, 'renewal of the election key failed');
      return;
    }
    if (this.#term !== term) return;
    if (!ok) {
      this.#stepDown(term, 'the election key is gone or holds another value');
      return;
    }
    term.renewedAt = Math.max(term.renewedAt, sentAt);
    this.#armDeadline(term);
  }

  /** Steps down at the renew deadline even while a renewal hangs on an unreachable store. */
  #armDeadline(term: Term): void {
    clearTimeout(term.timer);
    const ms = Math.max(0, term.renewedAt + this.#renewDeadlineMs - monotonicMs());
    term.timer = setTimeout(() => {
      if (this.#term !== term) return;
      if (this.#fresh(term)) this.#armDeadline(term);
      else
        this.#stepDown(term, `no successful renewal within the renew deadline (${this.#renewDeadlineMs} ms)`);
    }, ms);
    term.timer.unref();
  }

  /** Follows the store's keep-alive: a loss it finds on its own ends the term at once. */
  async #drain(term: Term): Promise<void> {
    try {
      for await (const ev of term.keepAlive.events()) {
        if (ev.type === 'lost') this.#stepDown(term, ev.reason);
      }
    } catch (err) {
      this.#log.debug({ err: messageOf(err) }, 'election keep-alive ended');
    }
  }

  #stepDown(term: Term, reason: string): void {
    if (this.#term !== term) return;
    this.#term = undefined;
    clearTimeout(term.timer);
    void term.keepAlive.close();
    this.#log.warn({ reason, token: term.token }, 'stopped leading');
    this.#notify(false);
  }

  async #shutdown(): Promise<void> {
    this.#stop.abort();
    const term = this.#term;
    if (term) {
      this.#term = undefined;
      clearTimeout(term.timer);
      await term.keepAlive.close();
      this.#log.info({ token: term.token }, 'resigning');
      this.#notify(false);
      await this.#resign(term.value);
    }
    await this.#running;
  }

  /** Deletes the election key while it holds `value`; another holder's key is left alone. */
  async #resign(value: string): Promise<void> {
    try {
      await this.#store.delete(this.#key, undefined, { guard: { key: this.#key, value } });
    } catch (err) {
      if (isWeftError(err, ErrorCodes.FENCED)) return;
      this.#log.warn({ err: messageOf(err) }, 'could not delete the election key; it expires with its TTL');
    }
  }

  #notify(leader: boolean): void {
    try {
      this.#onChange?.(leader);
    } catch (err) {
      this.#log.error({ err: messageOf(err), leader }, 'leader election onChange callback threw');
    }
  }
}

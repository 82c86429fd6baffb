/**
 * Node lifecycle, as kube-controller-manager's node lifecycle controller does it for endpoints
 * (and only that: weft never deletes or evicts a pod). A node's heartbeat is its weft-flanneld
 * status record (`<status-prefix>/<node>/weft-flanneld`, TTL-bound and refreshed while flanneld
 * runs). A node whose record has been absent for the grace period is not ready, and its pods'
 * endpoints with it; a node never seen counts as absent since the controller started. A record
 * that reappears makes the node ready at once.
 *
 * {@link NodePresence} is the pure state (no clock of its own, no timers); {@link NodeLifecycle}
 * follows the records in the registry and runs the one timer that ends grace periods.
 */
import { Backoff } from '../backoff/index.js';
import { monotonicClock, type MonotonicClock } from '../clock/index.js';
import { messageOf } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { parseDaemonStatus } from '../node-status/index.js';
import type { KeyValue, Store } from '../registry/index.js';

/** The daemon whose record is a node's heartbeat. */
export const HEARTBEAT_DAEMON = 'weft-flanneld';

/** Default cap of the nodes followed; records of nodes past it are ignored (and logged). */
export const DEFAULT_MAX_NODES = 10_000;

/** The node a heartbeat key belongs to; undefined for a key of another daemon or shape. */
export function heartbeatNode(statusPrefix: string, key: string): string | undefined {
  const prefix = statusPrefix.endsWith('/') ? statusPrefix : `${statusPrefix}/`;
  if (!key.startsWith(prefix)) return undefined;
  const parts = key.slice(prefix.length).split('/');
  if (parts.length !== 2 || parts[1] !== HEARTBEAT_DAEMON || !parts[0]) return undefined;
  return parts[0];
}

/**
 * Which nodes have a heartbeat and since when the others lack one: the pure state of the node
 * lifecycle. Times are readings of one monotonic clock, passed in.
 */
export class NodePresence {
  readonly #startedAt: number;
  readonly #graceMs: number;
  readonly #maxNodes: number;
  readonly #present = new Set<string>();
  /** Nodes whose record went away and whose grace has not run out yet. */
  readonly #absentSince = new Map<string, number>();
  #synced = false;
  #startGraceOver = false;

  constructor(opts: { startedAt: number; graceMs: number; maxNodes?: number }) {
    this.#startedAt = opts.startedAt;
    this.#graceMs = opts.graceMs;
    this.#maxNodes = opts.maxNodes ?? DEFAULT_MAX_NODES;
  }

  /** True once the records have been listed: before, no node is judged (all are ready). */
  get synced(): boolean {
    return this.#synced;
  }

  /** Number of nodes with a heartbeat. */
  get presentCount(): number {
    return this.#present.size;
  }

  /** True when the node has a heartbeat now. */
  isPresent(node: string): boolean {
    return this.#present.has(node);
  }

  /** True when the node was neither present nor absent within its grace: never seen, or long gone. */
  isUnknown(node: string): boolean {
    return !this.#present.has(node) && !this.#absentSince.has(node);
  }

  /** Whether the node's endpoints are ready at `now`. */
  ready(node: string, now: number): boolean {
    if (!this.#synced || this.#present.has(node)) return true;
    const since = this.#absentSince.get(node) ?? this.#startedAt;
    return now - since < this.#graceMs;
  }

  /**
   * A heartbeat record is there. Returns true when the node's readiness changed (it was past its
   * grace), false when it was ready anyway or is past the cap (then `capped` is true).
   */
  seen(node: string, now: number): { changed: boolean; capped: boolean } {
    if (this.#present.has(node)) return { changed: false, capped: false };
    if (!this.#absentSince.has(node) && this.#present.size + this.#absentSince.size >= this.#maxNodes) {
      return { changed: false, capped: true };
    }
    const wasReady = this.ready(node, now);
    this.#absentSince.delete(node);
    this.#present.add(node);
    return { changed: !wasReady, capped: false };
  }

  /** The node's record is gone at `now`: its grace starts. */
  gone(node: string, now: number): void {
    if (!this.#present.delete(node)) return;
    this.#absentSince.set(node, now);
  }

  /**
   * The first listing: `nodes` are those with a record. Returns the nodes whose readiness changed
   * (a relist after a watch gap: present before, absent now, or back after their grace).
   */
  replaceAll(nodes: Iterable<string>, now: number): string[] {
    const next = new Set(nodes);
    const changed: string[] = [];
    for (const node of [...this.#present]) if (!next.has(node)) this.gone(node, now);
    for (const node of next) if (this.seen(node, now).changed) changed.push(node);
    this.#synced = true;
    return changed;
  }

  /** When the next grace runs out (a reading of the clock), or undefined when none is running. */
  nextDeadline(): number | undefined {
    if (!this.#synced) return undefined;
    let next = this.#startGraceOver ? Infinity : this.#startedAt + this.#graceMs;
    for (const since of this.#absentSince.values()) next = Math.min(next, since + this.#graceMs);
    return Number.isFinite(next) ? next : undefined;
  }

  /**
   * Ends the graces that ran out by `now`: the nodes that became not ready (forgotten from then
   * on: a node absent past its grace and one never seen are alike), and whether the grace of the
   * nodes never seen ended now.
   */
  expire(now: number): { nodes: string[]; unseen: boolean } {
    if (!this.#synced) return { nodes: [], unseen: false };
    const nodes: string[] = [];
    for (const [node, since] of this.#absentSince) {
      if (now - since >= this.#graceMs) {
        this.#absentSince.delete(node);
        nodes.push(node);
      }
    }
    let unseen = false;
    if (!this.#startGraceOver && now - this.#startedAt >= this.#graceMs) {
      this.#startGraceOver = true;
      unseen = true;
    }
    return { nodes, unseen };
  }
}

/** Options of {@link NodeLifecycle}. */
export interface NodeLifecycleOptions {
  store: Store;
  /** Where the status records are, `/weft/status`. */
  statusPrefix: string;
  /** `--node-monitor-grace-period`, ms. */
  gracePeriodMs: number;
  log: Logger;
  /**
   * A node's readiness changed: its services need new slices. `undefined`: the grace of every
   * node never seen ran out at once (see {@link NodePresence.isUnknown}).
   */
  onChange: (node: string | undefined) => void;
  /** Default the process's monotonic clock. */
  clock?: MonotonicClock;
  /** Retry delays after registry errors. */
  backoff?: () => Backoff;
  /** Default {@link DEFAULT_MAX_NODES}. */
  maxNodes?: number;
}

/** Follows the nodes' heartbeats and tells when a node's readiness changes. */
export class NodeLifecycle {
  readonly #o: NodeLifecycleOptions;
  readonly #clock: MonotonicClock;
  readonly #presence: NodePresence;
  readonly #abort = new AbortController();
  /** Keys whose record could not be read, with the message logged (logged once each). */
  readonly #invalid = new Map<string, string>();
  #loop: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #timerAt: number | undefined;
  #cappedLogged = false;

  constructor(opts: NodeLifecycleOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? monotonicClock;
    this.#presence = new NodePresence({
      startedAt: this.#clock.now(),
      graceMs: opts.gracePeriodMs,
      ...(opts.maxNodes !== undefined && { maxNodes: opts.maxNodes }),
    });
  }

  /** True once the records have been listed. */
  get synced(): boolean {
    return this.#presence.synced;
  }

  /** True while the follow loop runs. */
  get running(): boolean {
    return this.#loop !== undefined && !this.#abort.signal.aborted;
  }

  /** Whether the node's endpoints are ready now. */
  nodeReady(node: string): boolean {
    return this.#presence.ready(node, this.#clock.now());
  }

  /** True for a node neither present nor within its grace. */
  isUnknown(node: string): boolean {
    return this.#presence.isUnknown(node);
  }

  /** Number of nodes with a heartbeat now. */
  get presentCount(): number {
    return this.#presence.presentCount;
  }

  start(): void {
    this.#loop ??= this.#follow();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    if (this.#timer) clearTimeout(this.#timer);
    await this.#loop;
  }

  async #follow(): Promise<void> {
    const signal = this.#abort.signal;
    const prefix = this.#o.statusPrefix.endsWith('/') ? this.#o.statusPrefix : `${this.#o.statusPrefix}/`;
    const backoff = this.#o.backoff?.() ?? new Backoff({ initialMs: 500, maxMs: 10_000 });
    const log = this.#o.log;
    let fromRevision: number | undefined;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (fromRevision === undefined) {
          const listing = await this.#o.store.list(prefix);
          if (signal.aborted) break;
          this.#replaceAll(listing.items);
          fromRevision = listing.revision + 1;
        }
        for await (const ev of this.#o.store.watch(prefix, { fromRevision, signal })) {
          backoff.reset();
          if (failures > 0) {
            log.info({ prefix }, 'status watch resumed');
            failures = 0;
          }
          if (ev.type === 'resync') {
            log.warn({ prefix, reason: ev.reason }, 'status watch lost history; re-listing');
            fromRevision = undefined;
            break;
          }
          fromRevision = ev.revision + 1;
          const node = heartbeatNode(prefix, ev.key);
          if (node === undefined) continue;
          if (ev.type === 'put' && this.#valid(ev.key, ev.value)) this.#seen(node);
          else this.#gone(node, ev.key);
        }
        if (fromRevision !== undefined && !signal.aborted) await backoff.wait(signal);
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        if (failures === 1 || failures % 10 === 0) {
          log.warn({ prefix, err: messageOf(err), failures }, 'registry unavailable; retrying');
        }
        await backoff.wait(signal);
      }
    }
  }

  /** A record that cannot be read is no heartbeat (logged once per key and message). */
  #valid(key: string, value: string): boolean {
    try {
      parseDaemonStatus(key, value);
      this.#invalid.delete(key);
      return true;
    } catch (err) {
      const message = messageOf(err);
      if (this.#invalid.get(key) !== message) {
        this.#o.log.warn({ key, err: message }, 'unreadable weft-flanneld status record; not a heartbeat');
        // Bounded like the nodes themselves: a flood of bad keys cannot grow it without limit.
        if (this.#invalid.size < (this.#o.maxNodes ?? DEFAULT_MAX_NODES)) this.#invalid.set(key, message);
      }
      return false;
    }
  }

  #replaceAll(items: KeyValue[]): void {
    const prefix = this.#o.statusPrefix;
    const nodes: string[] = [];
    for (const kv of items) {
      const node = heartbeatNode(prefix, kv.key);
      if (node !== undefined && this.#valid(kv.key, kv.value)) nodes.push(node);
    }
    const now = this.#clock.now();
    const changed = this.#presence.replaceAll(nodes, now);
    this.#o.log.info({ nodes: this.#presence.presentCount }, 'node heartbeats listed');
    for (const node of changed) this.#o.onChange(node);
    this.#expire();
  }

  #seen(node: string): void {
    const r = this.#presence.seen(node, this.#clock.now());
    if (r.capped) {
      if (!this.#cappedLogged) {
        this.#o.log.warn(
          { node, maxNodes: this.#o.maxNodes ?? DEFAULT_MAX_NODES },
          'too many nodes with heartbeats; ignoring the heartbeats of further nodes',
        );
        this.#cappedLogged = true;
      }
      return;
    }
    if (r.changed) {
      this.#o.log.info({ node }, 'node heartbeat is back; its endpoints are ready again');
      this.#o.onChange(node);
    }
    this.#schedule();
  }

  #gone(node: string, key: string): void {
    if (!this.#presence.isPresent(node)) return;
    this.#presence.gone(node, this.#clock.now());
    this.#o.log.info(
      { node, key, graceMs: this.#o.gracePeriodMs },
      'node heartbeat gone; its endpoints turn not ready unless it returns within the grace period',
    );
    this.#schedule();
  }

  /** Ends the graces that ran out and arms the timer for the next. */
  #expire(): void {
    const { nodes, unseen } = this.#presence.expire(this.#clock.now());
    for (const node of nodes) {
      this.#o.log.warn(
        { node, graceMs: this.#o.gracePeriodMs },
        'node heartbeat absent past the grace period; its endpoints are not ready',
      );
      this.#o.onChange(node);
    }
    if (unseen) this.#o.onChange(undefined);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#abort.signal.aborted) return;
    const at = this.#presence.nextDeadline();
    if (at === this.#timerAt) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === undefined) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#timerAt = undefined;
        this.#expire();
      },
      Math.max(0, at - this.#clock.now()),
    );
    this.#timer.unref();
  }
}

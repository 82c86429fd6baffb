/**
 * The UDP flows of one listener: one per client address:port, each bound to the endpoint chosen
 * for its first datagram and to its own upstream socket, dropped after an idle period. Kept
 * apart from the sockets (the value type is generic) so that expiry can be tested with a clock.
 *
 * Source ports are free to forge, so the table is bounded: by its own cap and by a budget shared
 * with the proxier's other UDP listeners (each flow is a socket: a file descriptor). A new client
 * past either bound takes the place of this listener's flow idle the longest; the table is kept
 * in least-recently-active order so that this and expiry cost no scan.
 */
import { monotonicMs } from '../../clock/index.js';

/** Live flows of every table sharing it, against their common cap. */
export interface FlowBudget {
  /** The most flows, all tables together. */
  readonly max: number;
  used: number;
}

/** One client's flow. */
export interface Flow<S> {
  /** `address:port` of the client. */
  client: string;
  /** targetKey() of the endpoint the flow goes to. */
  target: string;
  /** The upstream side (a socket in the proxier). */
  upstream: S;
  lastActive: number;
}

/** Options of {@link UdpFlowTable}. */
export interface UdpFlowTableOptions<S> {
  /** A flow with no datagram in either direction for this long is closed. */
  idleTimeoutMs: number;
  /** Called once for each flow leaving the table (expiry, eviction, endpoint removal, clear). */
  onClose: (flow: Flow<S>) => void;
  /** The most flows of this table. Default unbounded. */
  maxFlows?: number;
  /** A cap shared with other tables. Default none. */
  budget?: FlowBudget;
  /** Called once per flow closed to make room for a new client. */
  onEvicted?: (flow: Flow<S>) => void;
  /** Monotonic milliseconds clock; injected by tests. Default {@link monotonicMs}. */
  now?: () => number;
}

/** Flows keyed by client address:port. */
export class UdpFlowTable<S> {
  /** Least recently active first: activity moves a flow to the end. */
  readonly #flows = new Map<string, Flow<S>>();
  readonly #opts: UdpFlowTableOptions<S>;
  readonly #now: () => number;

  constructor(opts: UdpFlowTableOptions<S>) {
    this.#opts = opts;
    this.#now = opts.now ?? monotonicMs;
  }

  /**
   * Whether a new client can get a flow: true when there is room, or when room was made by
   * closing this table's flow idle the longest. False when the shared budget is full and this
   * table has nothing to give up (the datagram is then dropped by the caller).
   */
  makeRoom(): boolean {
    const max = this.#opts.maxFlows ?? Number.POSITIVE_INFINITY;
    const budget = this.#opts.budget;
    while (this.#flows.size >= max || (budget && budget.used >= budget.max)) {
      const oldest = this.#flows.values().next().value as Flow<S> | undefined;
      if (!oldest) return false;
      this.#remove(oldest);
      this.#opts.onEvicted?.(oldest);
    }
    return true;
  }

  get size(): number {
    return this.#flows.size;
  }

  /** The live flow of a client, marked active; undefined when none (or it just expired). */
  get(client: string): Flow<S> | undefined {
    const f = this.#flows.get(client);
    if (!f) return undefined;
    if (this.#now() - f.lastActive > this.#opts.idleTimeoutMs) {
      this.#remove(f);
      return undefined;
    }
    this.touch(f);
    return f;
  }

  /**
   * Adds a flow (replacing and closing any earlier one of the client). Call {@link makeRoom}
   * first: this does not enforce the caps.
   */
  add(client: string, target: string, upstream: S): Flow<S> {
    const old = this.#flows.get(client);
    if (old) this.#remove(old);
    const f: Flow<S> = { client, target, upstream, lastActive: this.#now() };
    this.#flows.set(client, f);
    if (this.#opts.budget) this.#opts.budget.used++;
    return f;
  }

  /** Marks a flow active (a datagram went through it). */
  touch(flow: Flow<S>): void {
    flow.lastActive = this.#now();
    if (this.#flows.get(flow.client) !== flow) return;
    this.#flows.delete(flow.client);
    this.#flows.set(flow.client, flow);
  }

  /** Removes one flow if it is still in the table. */
  delete(flow: Flow<S>): void {
    if (this.#flows.get(flow.client) === flow) this.#remove(flow);
  }

  /** Closes the flows idle for longer than the timeout; returns how many. */
  expire(): number {
    const now = this.#now();
    let n = 0;
    // Least recently active first: the first live flow ends the scan.
    for (const f of this.#flows.values()) {
      if (now - f.lastActive <= this.#opts.idleTimeoutMs) break;
      this.#remove(f);
      n++;
    }
    return n;
  }

  /** Closes the flows to the given endpoints (gone from the service); returns how many. */
  closeTargets(targets: Iterable<string>): number {
    const gone = new Set(targets);
    let n = 0;
    for (const f of [...this.#flows.values()]) {
      if (gone.has(f.target)) {
        this.#remove(f);
        n++;
      }
    }
    return n;
  }

  /** Closes every flow. */
  clear(): void {
    for (const f of [...this.#flows.values()]) this.#remove(f);
  }

  #remove(f: Flow<S>): void {
    this.#flows.delete(f.client);
    if (this.#opts.budget) this.#opts.budget.used--;
    this.#opts.onClose(f);
  }
}

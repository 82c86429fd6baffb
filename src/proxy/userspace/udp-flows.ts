/**
 * The UDP flows of one listener: one per client address:port, each bound to the endpoint chosen
 * for its first datagram and to its own upstream socket, dropped after an idle period. Kept
 * apart from the sockets (the value type is generic) so that expiry can be tested with a clock.
 */

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
  /** Called once for each flow leaving the table (expiry, endpoint removal, clear). */
  onClose: (flow: Flow<S>) => void;
  /** Milliseconds clock; injected by tests. Default `Date.now`. */
  now?: () => number;
}

/** Flows keyed by client address:port. */
export class UdpFlowTable<S> {
  readonly #flows = new Map<string, Flow<S>>();
  readonly #opts: UdpFlowTableOptions<S>;
  readonly #now: () => number;

  constructor(opts: UdpFlowTableOptions<S>) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
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
    f.lastActive = this.#now();
    return f;
  }

  /** Adds a flow (replacing and closing any earlier one of the client). */
  add(client: string, target: string, upstream: S): Flow<S> {
    const old = this.#flows.get(client);
    if (old) this.#remove(old);
    const f: Flow<S> = { client, target, upstream, lastActive: this.#now() };
    this.#flows.set(client, f);
    return f;
  }

  /** Marks a flow active (a reply went through it). */
  touch(flow: Flow<S>): void {
    flow.lastActive = this.#now();
  }

  /** Removes one flow if it is still in the table. */
  delete(flow: Flow<S>): void {
    if (this.#flows.get(flow.client) === flow) this.#remove(flow);
  }

  /** Closes the flows idle for longer than the timeout; returns how many. */
  expire(): number {
    const now = this.#now();
    let n = 0;
    for (const f of [...this.#flows.values()]) {
      if (now - f.lastActive > this.#opts.idleTimeoutMs) {
        this.#remove(f);
        n++;
      }
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
    this.#opts.onClose(f);
  }
}

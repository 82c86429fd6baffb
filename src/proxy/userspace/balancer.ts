/**
 * Endpoint choice for one userspace listener, as kube-proxy's old userspace round-robin
 * balancer did it: round-robin over a shuffled endpoint list (reshuffled whenever the set
 * changes, so that every proxy in a cluster does not hit the same endpoint first), ClientIP
 * affinity with a TTL, and connect failover to the next endpoint with growing timeouts.
 */

import { monotonicMs } from '../../clock/index.js';

/** Where a listener sends traffic. */
export interface Target {
  ip: string;
  port: number;
}

/** `ip:port` (IPv6 in brackets), the identity of a target. */
export function targetKey(t: Target): string {
  return t.ip.includes(':') ? `[${t.ip}]:${t.port}` : `${t.ip}:${t.port}`;
}

/** Options of {@link Balancer}. */
export interface BalancerOptions {
  /** ClientIP affinity timeout in seconds; 0 turns affinity off. */
  affinityTimeoutSeconds?: number;
  /**
   * Most ClientIP affinity entries kept; past it the least recently used one is dropped (and
   * counted through `onAffinityEvicted`). Default 16384.
   */
  maxAffinityEntries?: number;
  /** Called once per affinity entry dropped to make room. */
  onAffinityEvicted?: () => void;
  /** Monotonic milliseconds clock; injected by tests. Default {@link monotonicMs}. */
  now?: () => number;
  /** A number in [0, 1); injected by tests to make the shuffle deterministic. Default `Math.random`. */
  random?: () => number;
}

interface Affinity {
  key: string;
  lastUsed: number;
}

/** Round-robin with ClientIP affinity over one listener's endpoints. */
export class Balancer {
  #targets: Target[] = [];
  #keys = new Set<string>();
  #next = 0;
  #affinityMs: number;
  /** In least recently used order: a use moves an entry to the end. */
  readonly #affinity = new Map<string, Affinity>();
  readonly #maxAffinity: number;
  readonly #onEvicted: () => void;
  readonly #now: () => number;
  readonly #random: () => number;

  constructor(opts: BalancerOptions = {}) {
    this.#affinityMs = (opts.affinityTimeoutSeconds ?? 0) * 1000;
    this.#maxAffinity = Math.max(1, opts.maxAffinityEntries ?? 16_384);
    this.#onEvicted = opts.onAffinityEvicted ?? (() => {});
    this.#now = opts.now ?? monotonicMs;
    this.#random = opts.random ?? Math.random;
  }

  /** The endpoints in their round-robin order. */
  get targets(): readonly Target[] {
    return this.#targets;
  }

  /** Number of clients with a live affinity entry. */
  get affinityCount(): number {
    return this.#affinity.size;
  }

  /** Changes the affinity timeout (a service edit); 0 drops every affinity entry. */
  setAffinityTimeout(seconds: number): void {
    this.#affinityMs = seconds * 1000;
    if (this.#affinityMs === 0) this.#affinity.clear();
  }

  /**
   * Replaces the endpoint set. An unchanged set (in any order) keeps the current order, position
   * and affinities; a changed one is reshuffled, and affinities to removed endpoints are dropped.
   * Returns the keys of the removed endpoints.
   */
  setTargets(targets: readonly Target[]): string[] {
    const keys = new Set(targets.map(targetKey));
    if (keys.size === this.#keys.size && [...keys].every((k) => this.#keys.has(k))) return [];
    const removed = [...this.#keys].filter((k) => !keys.has(k));
    const unique = new Map(targets.map((t) => [targetKey(t), { ip: t.ip, port: t.port }]));
    this.#targets = this.#shuffle([...unique.values()]);
    this.#keys = keys;
    this.#next = 0;
    for (const [client, a] of this.#affinity) if (!keys.has(a.key)) this.#affinity.delete(client);
    return removed;
  }

  /**
   * The endpoint for a new connection or flow from `clientIp`. With affinity, a client that used
   * an endpoint within the timeout gets it again, unless `resetAffinity` (a retry after a failed
   * connect) asks for the next one; the choice becomes the client's affinity. Undefined when
   * there is no endpoint.
   */
  next(clientIp: string, resetAffinity = false): Target | undefined {
    if (this.#targets.length === 0) return undefined;
    const now = this.#now();
    if (this.#affinityMs > 0 && !resetAffinity) {
      const a = this.#affinity.get(clientIp);
      if (a && now - a.lastUsed <= this.#affinityMs) {
        const t = this.#targets.find((x) => targetKey(x) === a.key);
        if (t) {
          a.lastUsed = now;
          this.#affinity.delete(clientIp);
          this.#affinity.set(clientIp, a);
          return t;
        }
      }
    }
    const t = this.#targets[this.#next % this.#targets.length] as Target;
    this.#next = (this.#next + 1) % this.#targets.length;
    if (this.#affinityMs > 0) {
      this.#affinity.delete(clientIp);
      // Forged source addresses must not grow the table: the entry unused the longest goes.
      while (this.#affinity.size >= this.#maxAffinity) {
        const oldest = this.#affinity.keys().next().value as string;
        this.#affinity.delete(oldest);
        this.#onEvicted();
      }
      this.#affinity.set(clientIp, { key: targetKey(t), lastUsed: now });
    }
    return t;
  }

  /** Drops affinity entries older than the timeout; called periodically. Returns how many. */
  sweep(): number {
    const now = this.#now();
    let n = 0;
    // Least recently used first: the first entry still fresh ends the scan.
    for (const [client, a] of this.#affinity) {
      if (now - a.lastUsed <= this.#affinityMs) break;
      this.#affinity.delete(client);
      n++;
    }
    return n;
  }

  #shuffle(list: Target[]): Target[] {
    for (let i = list.length - 1; i > 0; i--) {
      const j = Math.floor(this.#random() * (i + 1));
      const a = list[i] as Target;
      list[i] = list[j] as Target;
      list[j] = a;
    }
    return list;
  }
}

/** kube-proxy's userspace dial timeouts: one attempt each, to the next endpoint every time. */
export const DIAL_TIMEOUTS_MS: readonly number[] = [250, 500, 1000, 2000];

/** The outcome of {@link dialWithFailover}. */
export interface DialResult<C> {
  conn: C;
  target: Target;
  /** Failed attempts before this one. */
  failures: number;
}

/**
 * Connects to an endpoint chosen by `balancer` for `clientIp`, moving to the next endpoint with
 * the next (longer) timeout after each failure. Rejects with the last error when every attempt
 * failed, or at once when there is no endpoint.
 */
export async function dialWithFailover<C>(
  balancer: Balancer,
  clientIp: string,
  connect: (target: Target, timeoutMs: number) => Promise<C>,
  timeouts: readonly number[] = DIAL_TIMEOUTS_MS,
): Promise<DialResult<C>> {
  let last: unknown = new Error('no endpoints');
  for (let i = 0; i < timeouts.length; i++) {
    const target = balancer.next(clientIp, i > 0);
    if (!target) break;
    try {
      return { conn: await connect(target, timeouts[i] as number), target, failures: i };
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

/**
 * A UDP listener whose datagrams never enter JavaScript: the addon's UDP relay binds the service
 * socket, keeps the per-client flows, and answers from the address each client sent to
 * (IP_PKTINFO), so one wildcard socket serves every redirected address. JavaScript keeps the
 * balancer's shuffled order and affinity setting and hands both to the addon on every change.
 */
import type { NativeUdpListenerStats, NativeUdpRelay } from '../../native/index.js';
import type { Balancer } from './balancer.js';
import {
  newBalancer,
  type Listener,
  type ListenerDeps,
  type UdpRelayHost,
  type UserspaceStats,
} from './listener-contract.js';
import type { UserspaceLimits } from './limits.js';
import type { ListenerPlan } from './rules.js';

/** The addon's UDP relay shared by a proxier's listeners, with id allocation and counters. */
export class NativeUdpRelayHost implements UdpRelayHost {
  readonly relay: NativeUdpRelay;
  #next = 1;
  readonly #last = new Map<number, NativeUdpListenerStats>();

  readonly #stats: UserspaceStats;

  constructor(
    create: (onStats: (s: NativeUdpListenerStats[]) => void) => NativeUdpRelay,
    stats: UserspaceStats,
    limits?: UserspaceLimits,
  ) {
    this.#stats = stats;
    this.relay = create((batch) => {
      // The addon reports totals per listener; the proxier's counters take the increments.
      for (const s of batch) {
        const before = this.#last.get(s.id);
        stats.udpFlowsCreated += s.flowsCreated - (before?.flowsCreated ?? 0);
        stats.udpDropped += s.dropped - (before?.dropped ?? 0);
        stats.udpFlowsEvicted += (s.flowsEvicted ?? 0) - (before?.flowsEvicted ?? 0);
        stats.affinityEvicted += (s.affinityEvicted ?? 0) - (before?.affinityEvicted ?? 0);
        this.#last.set(s.id, s);
      }
      this.#countActive();
    });
    if (limits)
      this.relay.setLimits(limits.maxUdpFlows, limits.maxUdpFlowsPerPort, limits.maxAffinityEntries);
  }

  #countActive(): void {
    let n = 0;
    for (const s of this.#last.values()) n += s.flowsActive;
    this.#stats.udpFlowsActive = n;
  }

  nextId(): number {
    return this.#next++;
  }

  forget(id: number): void {
    this.#last.delete(id);
    this.#countActive();
  }

  close(): void {
    this.relay.close();
  }
}

export class NativeUdpListener implements Listener {
  readonly key: string;
  readonly protocol = 'UDP' as const;
  readonly balancer: Balancer;
  port = 0;
  readonly #host: UdpRelayHost;
  readonly #deps: ListenerDeps;
  readonly #id: number;
  #plan: ListenerPlan;
  #bound = false;

  constructor(plan: ListenerPlan, deps: ListenerDeps, host: UdpRelayHost) {
    this.key = plan.key;
    this.#deps = deps;
    this.#host = host;
    this.#id = host.nextId();
    this.#plan = plan;
    // Only its order and affinity setting are used: the addon keeps the affinity entries.
    this.balancer = newBalancer(plan, deps);
  }

  listen(host: string, port: number): Promise<void> {
    this.port = this.#host.relay.addListener(this.#id, host, port, this.#deps.udpIdleTimeoutMs);
    this.#bound = true;
    this.update(this.#plan);
    return Promise.resolve();
  }

  /** Replies leave from the address each datagram arrived on: no per-address sockets needed. */
  bindAddresses(): Promise<void> {
    return Promise.resolve();
  }

  update(plan: ListenerPlan): void {
    this.#plan = plan;
    this.balancer.setAffinityTimeout(plan.servicePort.affinityTimeoutSeconds);
    this.balancer.setTargets(plan.endpoints);
    if (!this.#bound) return;
    this.#host.relay.setEndpoints(
      this.#id,
      this.balancer.targets.map((t): [string, number] => [t.ip, t.port]),
      plan.servicePort.affinityTimeoutSeconds,
    );
  }

  /** The addon expires flows and affinities on its own thread. */
  sweep(): void {}

  close(): Promise<void> {
    if (this.#bound) this.#host.relay.removeListener(this.#id);
    this.#bound = false;
    this.#host.forget(this.#id);
    return Promise.resolve();
  }
}

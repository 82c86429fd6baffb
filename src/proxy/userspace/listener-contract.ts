/**
 * What the userspace listeners share and promise: the proxier's counters, the dependencies every
 * listener gets, and the listener contract that the Node and native UDP listeners both meet.
 */
import type { Logger } from '../../log/index.js';
import type { NativeUdpRelay } from '../../native/index.js';
import type { Family } from '../model/index.js';
import { Balancer } from './balancer.js';
import type { UserspaceLimits } from './limits.js';
import type { Relay } from './relay.js';
import type { ListenerPlan, ListenerProtocol } from './rules.js';
import type { FlowBudget } from './udp-flows.js';

/** The addon's UDP relay as the listeners use it: one per proxier, listener ids allocated here. */
export interface UdpRelayHost {
  readonly relay: NativeUdpRelay;
  nextId(): number;
  /** Drops the counters kept for a removed listener. */
  forget(id: number): void;
  close(): void;
}

/** Counters of the whole proxier, shared by its listeners. */
export interface UserspaceStats {
  /** TCP connections accepted by the listeners. */
  tcpAccepted: number;
  /** TCP connections being relayed now. */
  tcpActive: number;
  /** Connections refused (reset) because no endpoint could be reached. */
  tcpDialFailures: number;
  /** Connections refused (reset at once) because a connection cap was reached. */
  tcpRefused: number;
  /** Connect attempts that failed and moved to the next endpoint. */
  tcpDialRetries: number;
  /** UDP flows created. */
  udpFlowsCreated: number;
  /** UDP flows live now. */
  udpFlowsActive: number;
  /** UDP flows closed early to make room for a new client (a flow cap was reached). */
  udpFlowsEvicted: number;
  /** ClientIP affinity entries dropped early to make room (the affinity cap was reached). */
  affinityEvicted: number;
  /** Datagrams dropped: the port had no endpoint, no flow could be opened, or a send failed. */
  udpDropped: number;
  /** Bytes (TCP payload and UDP datagrams) from clients to endpoints. */
  bytesFromClients: number;
  /** Bytes from endpoints back to clients. */
  bytesToClients: number;
}

/** A fresh set of counters. */
export function emptyStats(): UserspaceStats {
  return {
    tcpAccepted: 0,
    tcpActive: 0,
    tcpDialFailures: 0,
    tcpRefused: 0,
    tcpDialRetries: 0,
    udpFlowsCreated: 0,
    udpFlowsActive: 0,
    udpFlowsEvicted: 0,
    affinityEvicted: 0,
    udpDropped: 0,
    bytesFromClients: 0,
    bytesToClients: 0,
  };
}

/** What every listener shares. */
export interface ListenerDeps {
  family: Family;
  relay: Relay;
  log: Logger;
  stats: UserspaceStats;
  tcpIdleTimeoutMs: number;
  udpIdleTimeoutMs: number;
  dialTimeoutsMs: readonly number[];
  /** The caps, already fitted to the fd limit. */
  limits: UserspaceLimits;
  /** TCP connections being dialled or relayed, all listeners together. */
  tcpBudget: { used: number };
  /** UDP flows of the Node listeners, all together. */
  udpBudget: FlowBudget;
  now?: () => number;
  random?: () => number;
  /** The addon's UDP relay; UDP listeners use it instead of Node sockets when set. */
  udpRelay?: UdpRelayHost;
}

/** One service port's (or one traffic kind's) listener. */
export interface Listener {
  readonly key: string;
  readonly protocol: ListenerProtocol;
  readonly balancer: Balancer;
  /** The bound port; 0 before listen(). */
  readonly port: number;
  listen(host: string, port: number): Promise<void>;
  /** Applies a new plan of the same key: endpoints and affinity. */
  update(plan: ListenerPlan): void;
  /** Periodic housekeeping: idle UDP flows, stale affinities. */
  sweep(): void;
  /** Stops accepting; relayed TCP connections go on until they end (or the relay closes). */
  close(): Promise<void>;
}

/** A listener's balancer, with the affinity cap and its eviction counter. */
export function newBalancer(plan: ListenerPlan, deps: ListenerDeps): Balancer {
  return new Balancer({
    affinityTimeoutSeconds: plan.servicePort.affinityTimeoutSeconds,
    maxAffinityEntries: deps.limits.maxAffinityEntries,
    onAffinityEvicted: () => deps.stats.affinityEvicted++,
    ...(deps.now ? { now: deps.now } : {}),
    ...(deps.random ? { random: deps.random } : {}),
  });
}

/**
 * weft-proxy's `userspace` mode: listeners per service port, nftables redirects to them, and a
 * relay (native splice when built, Node streams otherwise) between clients and endpoints.
 * Registered by the daemon in src/proxy/modes.ts, not here.
 */
export {
  createUserspaceProxier,
  localAddresses,
  type UserspaceOptions,
  type UserspaceProxier,
} from './proxier.js';
export { loadRelay, type LoadRelayOptions } from './load-relay.js';
export {
  DEFAULT_TCP_IDLE_TIMEOUT_MS,
  DEFAULT_USERSPACE_LIMITS,
  fdReserve,
  fitToFdLimit,
  softFdLimit,
  type UserspaceLimits,
} from './limits.js';
export { createNativeRelay } from './native-relay.js';
export { createNodeRelay, type PipeOptions, type Relay, type RelayEnd, type RelayStats } from './relay.js';
export {
  Balancer,
  DIAL_TIMEOUTS_MS,
  dialWithFailover,
  targetKey,
  type BalancerOptions,
  type DialResult,
  type Target,
} from './balancer.js';
export { UdpFlowTable, type Flow, type FlowBudget, type UdpFlowTableOptions } from './udp-flows.js';
export {
  EXTERNAL_SUFFIX,
  USERSPACE_TABLE,
  planAll,
  planListeners,
  renderCleanup,
  renderUserspaceRules,
  type ListenerPlan,
  type ListenerProtocol,
  type RenderContext,
  type TrafficKind,
} from './rules.js';
export type { UserspaceStats } from './listeners.js';

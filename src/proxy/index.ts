/**
 * weft-proxy: Services and EndpointSlices from the registry into nftables, iptables or
 * userspace load balancing. The public face: the daemon, its flags, the sync machinery and the
 * proxier contract. The modes themselves are in ./nftables, ./iptables and ./userspace and are
 * registered by {@link registerProxyModes}.
 */
export {
  WeftProxy,
  cleanupAllModes,
  proxierContext,
  type CleanupReport,
  type WeftProxyOptions,
} from './daemon.js';
export {
  PROXY_ENV_PREFIX,
  PROXY_FLAGS,
  clusterCidrsOfSubnetEnv,
  parseBindAddress,
  parseDuration,
  parseProxyFlags,
  proxyHelp,
  resolveProxyConfig,
  type BindAddress,
  type ProxyConfig,
  type ProxyFlags,
  type ResolveOptions,
} from './flags.js';
export { registerProxyModes, type ProxyModeOptions } from './modes.js';
export { SyncEngine, type ObjectSource, type SyncEngineOptions } from './sync-engine.js';
export {
  SyncRunner,
  systemClock,
  type RunReason,
  type RunnerClock,
  type SyncRunnerOptions,
} from './sync-runner.js';
export { clearStaleConntrack, conntrackCleanupArgs, isNothingDeleted } from './conntrack.js';
export {
  HealthCheckNodePorts,
  healthCheckTargets,
  type HealthCheckNodePortsOptions,
  type HealthCheckTarget,
} from './health-check-node-ports.js';
export * from './proxier.js';
export * from './model/index.js';

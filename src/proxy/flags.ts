/**
 * weft-proxy's flags: kube-proxy's names and meanings where kube-proxy has the flag
 * (`--proxy-mode`, `--cluster-cidr`, `--masquerade-all`, `--nodeport-addresses`,
 * `--min-sync-period`, `--sync-period`, `--healthz-bind-address`, `--metrics-bind-address`,
 * `--hostname-override`, `--udp-timeout`, `--cleanup`), the registry flags shared with
 * weft-flanneld, and `WEFT_PROXY_*` environment variables.
 *
 * weft's choices, where kube-proxy differs:
 * - `--cluster-cidr` defaults to the flannel network of this node (FLANNEL_NETWORK and
 *   FLANNEL_IPV6_NETWORK in `--subnet-file`) when that file exists, so that a node running
 *   weft-flanneld needs no extra configuration; without either, no cluster CIDR is used.
 * - Every listener binds to 127.0.0.1 by default, including the healthCheckNodePort servers
 *   (`--healthcheck-bind-address`; kube-proxy binds those on all addresses). An operator whose
 *   load balancers probe nodes sets it to the node's address or 0.0.0.0.
 * - A bind address with port 0 (or an empty value) disables that listener.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { DAEMON_TAIL_FLAGS, LOG_LEVELS } from '../cli/common-flags.js';
import { ErrorCodes, WeftError, messageOf } from '../errors/index.js';
import {
  boolFlag,
  choiceFlag,
  defineFlags,
  formatHelp,
  listFlag,
  parseFlags,
  intFlag,
  stringFlag,
  type FlagValues,
  rejectPositionals,
} from '../cli/flag-parser.js';
import { serviceCidrFlag, serviceCidrs } from '../cli/service-cidr-flag.js';
import type { ServicePolicy } from '../k8s/index.js';
import {
  ETCD_AUTH_FLAGS,
  ETCD_CONNECTION_FLAGS,
  checkRegistryFlags,
  nonEmpty,
  registryFlag,
} from '../cli/registry-flags.js';
import { Cidr, isIPv4, isIPv6 } from '../ipam/index.js';
import {
  bindAddressProblem as bindAddress,
  durationProblem as duration,
  parseBindAddress,
  parseDuration,
  type BindAddress,
} from '../cli/listen-flags.js';
import { DEFAULT_PROXY_PREFIX, type Family } from './model/index.js';
import { PROXY_MODES } from './proxier.js';
import { DEFAULT_USERSPACE_LIMITS, type UserspaceLimits } from './userspace/limits.js';

/** Environment variable prefix: `--proxy-mode` reads `WEFT_PROXY_PROXY_MODE`. */
export const PROXY_ENV_PREFIX = 'WEFT_PROXY';

/** Log levels of pino, lowest first. */
export const PROXY_LOG_LEVELS = LOG_LEVELS;

/** Default port of /healthz and /livez, as kube-proxy's. */
export const DEFAULT_HEALTHZ_PORT = 10256;
/** Default port of /metrics, as kube-proxy's. */
export const DEFAULT_METRICS_PORT = 10249;

/** The flag table; the single source for parsing, validation and `--help`. */
export const PROXY_FLAGS = defineFlags({
  proxyMode: choiceFlag({
    name: 'proxy-mode',
    metavar: '<mode>',
    description:
      'How services are implemented: nftables (a private table "weft" per family), iptables ' +
      "(kube-proxy's chains with WEFT- prefixes) or userspace (a listener per service port).",
    choices: PROXY_MODES,
    default: 'nftables',
  }),
  hostnameOverride: stringFlag({
    name: 'hostname-override',
    metavar: '<name>',
    description:
      "This node's name, as EndpointSlices' nodeName give it; decides which endpoints are local. " +
      'Default: the host name.',
    validate: nonEmpty,
  }),
  clusterCidr: listFlag({
    name: 'cluster-cidr',
    metavar: '<cidr,...>',
    description:
      'The pod network, at most one CIDR per family; traffic to services from outside it is masqueraded. ' +
      'The families listed are the families served. Default: FLANNEL_NETWORK (and FLANNEL_IPV6_NETWORK) ' +
      'from --subnet-file when it exists, else none (IPv4 only, no source-based masquerade).',
    commaSeparated: true,
    validate: cidr,
  }),
  subnetFile: stringFlag({
    name: 'subnet-file',
    metavar: '<file>',
    description: "weft-flanneld's subnet.env, read for the --cluster-cidr default.",
    default: '/run/flannel/subnet.env',
    validate: nonEmpty,
  }),
  masqueradeAll: boolFlag({
    name: 'masquerade-all',
    description: 'Masquerade all traffic sent to services (SNAT to the node address).',
  }),
  nodeportAddresses: listFlag({
    name: 'nodeport-addresses',
    metavar: '<cidr,...>',
    description: 'Accept NodePorts only on node addresses in these CIDRs. Default: every local address.',
    commaSeparated: true,
    validate: cidr,
  }),
  serviceCidr: serviceCidrFlag(
    "The range ClusterIPs come from (kube-apiserver's --service-cluster-ip-range). A Service with a " +
      'ClusterIP outside it, or of a family it does not cover, is refused: logged, counted in ' +
      'weft_proxy_invalid_objects and not served.',
  ),
  allowedExternalCidrs: listFlag({
    name: 'allowed-external-cidrs',
    metavar: '<cidr,...>',
    description:
      'Where Services may claim externalIPs. Default: nowhere, a Service with externalIPs is refused whole ' +
      "(as with the API server's DenyServiceExternalIPs admission plugin): any registry writer could " +
      'otherwise capture traffic to any address. Loopback, link-local, multicast and unspecified ' +
      'addresses are refused whatever this says.',
    commaSeparated: true,
    validate: cidr,
  }),
  allowedLoadbalancerCidrs: listFlag({
    name: 'allowed-loadbalancer-cidrs',
    metavar: '<cidr,...>',
    description:
      'Where LoadBalancer ingress addresses (status.loadBalancer.ingress[].ip) may lie; a Service with one ' +
      'outside is refused whole. Default: anywhere except loopback, link-local, multicast and unspecified ' +
      'addresses.',
    commaSeparated: true,
    validate: cidr,
  }),
  minSyncPeriod: stringFlag({
    name: 'min-sync-period',
    metavar: '<duration>',
    description:
      'Least time between two syncs of the rules (e.g. 500ms, 1s, 1m); changes arriving faster are ' +
      'batched into one sync.',
    default: '1s',
    validate: duration,
  }),
  syncPeriod: stringFlag({
    name: 'sync-period',
    metavar: '<duration>',
    description:
      'Time between periodic full syncs of the rules. /healthz fails when a change waits twice this long.',
    default: '30s',
    validate: (v) => duration(v) ?? (parseDuration(v) <= 0 ? 'must be more than 0' : undefined),
  }),
  healthzBindAddress: stringFlag({
    name: 'healthz-bind-address',
    metavar: '<ip:port>',
    description: `Address of /healthz and /livez (an IP alone uses port ${DEFAULT_HEALTHZ_PORT}); port 0 or "" disables.`,
    default: `127.0.0.1:${DEFAULT_HEALTHZ_PORT}`,
    validate: bindAddress,
  }),
  metricsBindAddress: stringFlag({
    name: 'metrics-bind-address',
    metavar: '<ip:port>',
    description: `Address of /metrics (an IP alone uses port ${DEFAULT_METRICS_PORT}); port 0 or "" disables.`,
    default: `127.0.0.1:${DEFAULT_METRICS_PORT}`,
    validate: bindAddress,
  }),
  healthcheckBindAddress: stringFlag({
    name: 'healthcheck-bind-address',
    metavar: '<ip>',
    description:
      'Address the healthCheckNodePort servers of externalTrafficPolicy=Local services bind. Loopback by ' +
      'default (kube-proxy: all addresses); set the node address or 0.0.0.0 for external load balancers.',
    default: '127.0.0.1',
    validate: (v) => (isIPv4(v) || isIPv6(v) ? undefined : 'must be an IP address'),
  }),
  udpTimeout: stringFlag({
    name: 'udp-timeout',
    metavar: '<duration>',
    description:
      'userspace mode: an idle UDP flow (no datagram either way) is closed after this long, and its next ' +
      "datagram may go to another endpoint. kube-proxy's default was 250ms; weft keeps request/reply " +
      'exchanges slower than that on one endpoint.',
    default: '1s',
    validate: (v) => duration(v) ?? (parseDuration(v) <= 0 ? 'must be more than 0' : undefined),
  }),
  userspaceTcpIdleTimeout: stringFlag({
    name: 'userspace-tcp-idle-timeout',
    metavar: '<duration>',
    description:
      'userspace mode: a relayed TCP connection with no byte either way for this long is closed. 0 turns ' +
      'the timeout off.',
    default: '1h',
    validate: duration,
  }),
  userspaceMaxTcpConnections: intFlag({
    name: 'userspace-max-tcp-connections',
    metavar: '<n>',
    description:
      'userspace mode: TCP connections relayed at once, all service ports together; more are reset and ' +
      'counted. Lowered at start to fit the file descriptor limit (RLIMIT_NOFILE).',
    default: DEFAULT_USERSPACE_LIMITS.maxTcpConnections,
    min: 1,
  }),
  userspaceMaxTcpConnectionsPerPort: intFlag({
    name: 'userspace-max-tcp-connections-per-port',
    metavar: '<n>',
    description: 'userspace mode: TCP connections relayed at once through one service port.',
    default: DEFAULT_USERSPACE_LIMITS.maxTcpConnectionsPerPort,
    min: 1,
  }),
  userspaceMaxUdpFlows: intFlag({
    name: 'userspace-max-udp-flows',
    metavar: '<n>',
    description:
      'userspace mode: UDP flows (one socket per client address and port), all service ports together. ' +
      "A new client past the cap takes the place of its port's flow idle the longest (counted). Lowered " +
      'at start to fit the file descriptor limit.',
    default: DEFAULT_USERSPACE_LIMITS.maxUdpFlows,
    min: 1,
  }),
  userspaceMaxUdpFlowsPerPort: intFlag({
    name: 'userspace-max-udp-flows-per-port',
    metavar: '<n>',
    description: 'userspace mode: UDP flows of one service port.',
    default: DEFAULT_USERSPACE_LIMITS.maxUdpFlowsPerPort,
    min: 1,
  }),
  userspaceMaxAffinityEntries: intFlag({
    name: 'userspace-max-affinity-entries',
    metavar: '<n>',
    description:
      'userspace mode: ClientIP affinity entries per service port; past it the least recently used one ' +
      'is dropped (counted).',
    default: DEFAULT_USERSPACE_LIMITS.maxAffinityEntries,
    min: 1,
  }),
  ...ETCD_CONNECTION_FLAGS,
  ...ETCD_AUTH_FLAGS,
  registry: registryFlag('services and endpoint slices'),
  registryPrefix: stringFlag({
    name: 'registry-prefix',
    metavar: '<path>',
    description:
      'Key prefix of the objects: <prefix>/services/<ns>/<name> and <prefix>/endpointslices/<ns>/<name>.',
    default: DEFAULT_PROXY_PREFIX,
    validate: (v) =>
      !v.startsWith('/')
        ? 'must start with "/"'
        : v.length > 1 && v.endsWith('/')
          ? 'must not end with "/"'
          : undefined,
  }),
  cleanup: boolFlag({
    name: 'cleanup',
    description: "Remove every mode's rules, tables and chains from this node, then exit.",
  }),
  ...DAEMON_TAIL_FLAGS,
});

export { parseBindAddress, parseDuration, type BindAddress };

/** weft-proxy's flags as parsed (durations and addresses still as text). */
export type ProxyFlags = FlagValues<typeof PROXY_FLAGS>;

/** The daemon's configuration, resolved from the flags. */
export interface ProxyConfig {
  flags: ProxyFlags;
  nodeName: string;
  /** Cluster CIDR per family served; the families are the keys (IPv4 only by default). */
  clusterCidrs: Map<Family, string | undefined>;
  /** Where the cluster CIDRs came from. */
  clusterCidrSource: 'flag' | 'subnet-file' | 'none';
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  udpTimeoutMs: number;
  /** userspace mode: the caps from the `--userspace-max-*` flags (before the fd budget). */
  userspaceLimits: UserspaceLimits;
  /** userspace mode: idle timeout of a relayed TCP connection, ms; 0 = none. */
  userspaceTcpIdleTimeoutMs: number;
  /** The addresses Services may claim (`--service-cidr` and the allowed CIDRs). */
  servicePolicy: ServicePolicy;
  /** Undefined: disabled. */
  healthz: BindAddress | undefined;
  /** Undefined: disabled. */
  metrics: BindAddress | undefined;
}

/**
 * Parses weft-proxy's command line (without node and script) and environment. Throws WeftError
 * INVALID_ARGUMENT naming the flag at fault. With `--help` or `--version`, errors in other flags
 * are ignored so that those two always work.
 */
export function parseProxyFlags(argv: readonly string[], env: NodeJS.ProcessEnv): ProxyFlags {
  const { values, positionals } = parseFlags(PROXY_FLAGS, argv, env, { envPrefix: PROXY_ENV_PREFIX });
  if (values.help || values.version) return values;
  rejectPositionals('weft-proxy', positionals);
  checkRegistryFlags(values);
  const families = values.clusterCidr.map((c) => Cidr.parseLenient(c).family);
  if (new Set(families).size !== families.length) {
    throw flagError('cluster-cidr', 'at most one CIDR per IP family', values.clusterCidr.join(','));
  }
  if (parseDuration(values.minSyncPeriod) > parseDuration(values.syncPeriod)) {
    throw flagError(
      'min-sync-period',
      `must not exceed --sync-period (${values.syncPeriod})`,
      values.minSyncPeriod,
    );
  }
  return values;
}

/** Options of {@link resolveProxyConfig}. */
export interface ResolveOptions {
  /** Host name for the node name default. Default os.hostname(). */
  hostname?: () => string;
  /** Reads the subnet file; default fs. Returns undefined when the file does not exist. */
  readFile?: (path: string) => string | undefined;
}

/**
 * Turns parsed flags into the daemon's configuration: durations, listener addresses, the node
 * name and the cluster CIDRs (from the flag, else the subnet file). Throws INVALID_ARGUMENT
 * naming the flag (or the subnet file's key) at fault.
 */
export function resolveProxyConfig(flags: ProxyFlags, opts: ResolveOptions = {}): ProxyConfig {
  const readFile = opts.readFile ?? ((p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : undefined));
  let cidrs: string[] = flags.clusterCidr.map((c) => Cidr.parseLenient(c).toString());
  let source: ProxyConfig['clusterCidrSource'] = cidrs.length ? 'flag' : 'none';
  if (!cidrs.length) {
    let text: string | undefined;
    try {
      text = readFile(flags.subnetFile);
    } catch (err) {
      throw flagError('subnet-file', `cannot read it: ${messageOf(err)}`, flags.subnetFile);
    }
    if (text !== undefined) {
      cidrs = clusterCidrsOfSubnetEnv(flags.subnetFile, text);
      if (cidrs.length) source = 'subnet-file';
    }
  }
  const clusterCidrs = new Map<Family, string | undefined>();
  for (const c of cidrs) clusterCidrs.set(Cidr.parseLenient(c).family as Family, c);
  if (clusterCidrs.size === 0) clusterCidrs.set(4, undefined);
  const ordered = new Map([...clusterCidrs].sort(([a], [b]) => a - b));
  return {
    flags,
    nodeName: flags.hostnameOverride?.trim() || (opts.hostname ?? hostname)(),
    clusterCidrs: ordered,
    clusterCidrSource: source,
    minSyncPeriodMs: parseDuration(flags.minSyncPeriod),
    syncPeriodMs: parseDuration(flags.syncPeriod),
    udpTimeoutMs: parseDuration(flags.udpTimeout),
    userspaceLimits: {
      maxTcpConnections: flags.userspaceMaxTcpConnections,
      maxTcpConnectionsPerPort: flags.userspaceMaxTcpConnectionsPerPort,
      maxUdpFlows: flags.userspaceMaxUdpFlows,
      maxUdpFlowsPerPort: flags.userspaceMaxUdpFlowsPerPort,
      maxAffinityEntries: flags.userspaceMaxAffinityEntries,
    },
    userspaceTcpIdleTimeoutMs: parseDuration(flags.userspaceTcpIdleTimeout),
    servicePolicy: servicePolicyOf(flags),
    healthz: parseBindAddress(flags.healthzBindAddress, DEFAULT_HEALTHZ_PORT),
    metrics: parseBindAddress(flags.metricsBindAddress, DEFAULT_METRICS_PORT),
  };
}

/** The Service address policy the flags describe. */
export function servicePolicyOf(flags: ProxyFlags): ServicePolicy {
  return {
    serviceCidrs: serviceCidrs(flags.serviceCidr),
    allowedExternalCidrs: flags.allowedExternalCidrs,
    allowedLoadBalancerCidrs: flags.allowedLoadbalancerCidrs,
  };
}

/** FLANNEL_NETWORK and FLANNEL_IPV6_NETWORK of a subnet.env; throws naming the file and key. */
export function clusterCidrsOfSubnetEnv(path: string, text: string): string[] {
  const out: string[] = [];
  for (const key of ['FLANNEL_NETWORK', 'FLANNEL_IPV6_NETWORK']) {
    const m = new RegExp(`^\\s*(?:export\\s+)?${key}\\s*=\\s*["']?([^"'\\s]*)["']?\\s*$`, 'm').exec(text);
    const value = m?.[1];
    if (!value) continue;
    try {
      out.push(Cidr.parseLenient(value).toString());
    } catch (err) {
      throw new WeftError(ErrorCodes.INVALID_ARGUMENT, `${path}: field ${key}: ${messageOf(err)}`, {
        object: path,
        field: key,
      });
    }
  }
  return out;
}

/** The `--help` text. */
export function proxyHelp(): string {
  return formatHelp(PROXY_FLAGS, {
    usage: 'Usage: weft-proxy [flags]',
    intro:
      'Programs load balancing for the Services and EndpointSlices kept in the registry, as kube-proxy ' +
      'does for an API server. Every flag can also be set through the environment variable shown; the ' +
      'command line wins. Bool flags are turned off with =false, e.g. --masquerade-all=false. Durations ' +
      'take a unit: 500ms, 1s, 2m, 1h.',
    envPrefix: PROXY_ENV_PREFIX,
  });
}

function flagError(name: string, reason: string, raw: string): WeftError {
  return new WeftError(ErrorCodes.INVALID_ARGUMENT, `flag --${name}: ${reason}, got ${JSON.stringify(raw)}`, {
    object: 'flag',
    field: `--${name}`,
  });
}

function cidr(v: string): string | undefined {
  try {
    Cidr.parseLenient(v);
    return undefined;
  } catch {
    return 'must be a CIDR, e.g. 10.244.0.0/16';
  }
}

/**
 * weft-controller's flags: kube-controller-manager's names and meanings where it has the flag
 * (`--max-endpoints-per-slice`, `--node-monitor-grace-period`, `--leader-elect*`,
 * `--concurrent-service-endpoint-syncs`, `--healthz-bind-address`), the registry flags every weft
 * daemon takes, and `WEFT_CONTROLLER_*` environment variables.
 *
 * weft's choices, where kube-controller-manager differs:
 * - Durations also take a bare number of seconds (`40` = `40s`), as the flags' defaults are
 *   usually written in seconds in kube's documentation.
 * - Every listener binds to 127.0.0.1 by default; port 0 or an empty value disables it.
 * - The election lock is a registry key, `<registry-prefix>/leases/<resource-name>`, not a Lease
 *   object.
 */
import { hostname } from 'node:os';
import { DAEMON_TAIL_FLAGS } from '../cli/common-flags.js';
import {
  boolFlag,
  defineFlags,
  formatHelp,
  intFlag,
  parseFlags,
  stringFlag,
  type FlagValues,
  rejectPositionals,
} from '../cli/flag-parser.js';
import {
  bindAddressProblem,
  parseBindAddress,
  parseDuration,
  type BindAddress,
} from '../cli/listen-flags.js';
import {
  ETCD_AUTH_FLAGS,
  ETCD_CONNECTION_FLAGS,
  checkRegistryFlags,
  registryFlag,
} from '../cli/registry-flags.js';
import { ErrorCodes, WeftError } from '../errors/index.js';
import { DEFAULT_PROXY_PREFIX, dns1123LabelProblem } from '../k8s/index.js';
import { DEFAULT_MAX_ENDPOINTS_PER_SLICE, MAX_MAX_ENDPOINTS_PER_SLICE } from './endpoint-slices.js';

/** Environment variable prefix: `--leader-elect` reads `WEFT_CONTROLLER_LEADER_ELECT`. */
export const CONTROLLER_ENV_PREFIX = 'WEFT_CONTROLLER';

/** Default port of /healthz, /livez and /readyz (kube-controller-manager's secure port). */
export const DEFAULT_CONTROLLER_HEALTHZ_PORT = 10257;
/** Default port of /metrics; next to /healthz, clear of weft-proxy's 10249 and 10256. */
export const DEFAULT_CONTROLLER_METRICS_PORT = 10258;

/** A duration in seconds or with a unit; milliseconds, NaN when malformed. */
export function parseSecondsOrDuration(text: string): number {
  const v = text.trim();
  return /^\d+(\.\d+)?$/.test(v) ? Number(v) * 1000 : parseDuration(v);
}

function positiveDuration(v: string): string | undefined {
  const ms = parseSecondsOrDuration(v);
  if (!Number.isFinite(ms)) return 'must be a duration, e.g. 40s, 500ms, 1m, or a number of seconds';
  return ms <= 0 ? 'must be more than 0' : undefined;
}

function registryPath(v: string): string | undefined {
  if (!v.startsWith('/')) return 'must start with "/"';
  return v.length > 1 && v.endsWith('/') ? 'must not end with "/"' : undefined;
}

/** The flag table; the single source for parsing, validation and `--help`. */
export const CONTROLLER_FLAGS = defineFlags({
  maxEndpointsPerSlice: intFlag({
    name: 'max-endpoints-per-slice',
    metavar: '<n>',
    description: 'Most endpoints in one EndpointSlice written by the controller.',
    default: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
    min: 1,
    max: MAX_MAX_ENDPOINTS_PER_SLICE,
  }),
  concurrentServiceEndpointSyncs: intFlag({
    name: 'concurrent-service-endpoint-syncs',
    metavar: '<n>',
    description:
      'Services whose slices are computed and written at once (never the same Service twice at once).',
    default: 5,
    min: 1,
    max: 100,
  }),
  nodeMonitorGracePeriod: stringFlag({
    name: 'node-monitor-grace-period',
    metavar: '<duration>',
    description:
      "How long a node's weft-flanneld status record may be absent (counted from the controller's start " +
      "for a node never seen) before its pods' endpoints are marked not ready. Pods are never deleted.",
    default: '40s',
    validate: positiveDuration,
  }),
  leaderElect: boolFlag({
    name: 'leader-elect',
    description:
      'Elect a leader through the registry before writing, so that several controllers can run with ' +
      'one active. =false: this controller writes at once, and must be the only one.',
    default: true,
  }),
  leaderElectLeaseDuration: stringFlag({
    name: 'leader-elect-lease-duration',
    metavar: '<duration>',
    description:
      "How long the leader's election key lives without renewal: a standby takes over within it once " +
      'the leader dies.',
    default: '15s',
    validate: positiveDuration,
  }),
  leaderElectRenewDeadline: stringFlag({
    name: 'leader-elect-renew-deadline',
    metavar: '<duration>',
    description:
      'The leader stops writing when its last successful renewal is older than this, before its lease ' +
      'can expire (must be less than the lease duration).',
    default: '10s',
    validate: positiveDuration,
  }),
  leaderElectRetryPeriod: stringFlag({
    name: 'leader-elect-retry-period',
    metavar: '<duration>',
    description: 'Time between attempts to acquire or renew the leadership (less than the renew deadline).',
    default: '2s',
    validate: positiveDuration,
  }),
  leaderElectResourceName: stringFlag({
    name: 'leader-elect-resource-name',
    metavar: '<name>',
    description: 'Name of the election key: <registry-prefix>/leases/<name>.',
    default: 'weft-controller',
    validate: dns1123LabelProblem,
  }),
  identity: stringFlag({
    name: 'identity',
    metavar: '<id>',
    description:
      'This controller in the election key and in `weftctl status`. Default: <hostname>_<pid>, unique ' +
      'per process.',
    validate: (v) =>
      // eslint-disable-next-line no-control-regex
      v.trim() === '' || v.length > 253 || /[\u0000-\u001f\u007f]/.test(v)
        ? 'must be 1..253 characters without control characters'
        : undefined,
  }),
  nodeName: stringFlag({
    name: 'node-name',
    metavar: '<name>',
    description: "The node this controller runs on, in its status record's key. Default: the hostname.",
    validate: (v) =>
      v.trim() === '' || v.includes('/') ? 'must be a non-empty name without "/"' : undefined,
  }),
  healthzBindAddress: stringFlag({
    name: 'healthz-bind-address',
    metavar: '<ip:port>',
    description: `Address of /healthz, /livez and /readyz (an IP alone uses port ${DEFAULT_CONTROLLER_HEALTHZ_PORT}); port 0 or "" disables.`,
    default: `127.0.0.1:${DEFAULT_CONTROLLER_HEALTHZ_PORT}`,
    validate: bindAddressProblem,
  }),
  metricsBindAddress: stringFlag({
    name: 'metrics-bind-address',
    metavar: '<ip:port>',
    description: `Address of /metrics (an IP alone uses port ${DEFAULT_CONTROLLER_METRICS_PORT}); port 0 or "" disables.`,
    default: `127.0.0.1:${DEFAULT_CONTROLLER_METRICS_PORT}`,
    validate: bindAddressProblem,
  }),
  ...ETCD_CONNECTION_FLAGS,
  ...ETCD_AUTH_FLAGS,
  registry: registryFlag('services, pods and endpoint slices'),
  registryPrefix: stringFlag({
    name: 'registry-prefix',
    metavar: '<path>',
    description:
      'Key prefix of the objects: <prefix>/services, /pods, /podattachments, /nodes, /endpointslices, and ' +
      'the election key under <prefix>/leases.',
    default: DEFAULT_PROXY_PREFIX,
    validate: registryPath,
  }),
  statusPrefix: stringFlag({
    name: 'status-prefix',
    metavar: '<path>',
    description:
      "Registry prefix of the daemons' status records: the nodes' weft-flanneld records are read there " +
      "(node lifecycle) and this controller's own is written there.",
    default: '/weft/status',
    validate: registryPath,
  }),
  ...DAEMON_TAIL_FLAGS,
});

/** weft-controller's flags as parsed. */
export type ControllerFlags = FlagValues<typeof CONTROLLER_FLAGS>;

/** The daemon's configuration, resolved from the flags. */
export interface ControllerConfig {
  flags: ControllerFlags;
  /** The node in this controller's status key. */
  nodeName: string;
  /** Who this controller is in the election. */
  identity: string;
  /** The election key, `<registry-prefix>/leases/<name>`. */
  electionKey: string;
  nodeMonitorGracePeriodMs: number;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  /** Undefined: disabled. */
  healthz: BindAddress | undefined;
  /** Undefined: disabled. */
  metrics: BindAddress | undefined;
}

function flagError(name: string, reason: string, raw: string): WeftError {
  return new WeftError(ErrorCodes.INVALID_ARGUMENT, `flag --${name}: ${reason}, got ${JSON.stringify(raw)}`, {
    object: 'flag',
    field: `--${name}`,
  });
}

/**
 * Parses weft-controller's command line (without node and script) and environment. Throws
 * WeftError INVALID_ARGUMENT naming the flag at fault. With `--help` or `--version`, errors in
 * other flags are ignored so that those two always work.
 */
export function parseControllerFlags(argv: readonly string[], env: NodeJS.ProcessEnv): ControllerFlags {
  const { values, positionals } = parseFlags(CONTROLLER_FLAGS, argv, env, {
    envPrefix: CONTROLLER_ENV_PREFIX,
  });
  if (values.help || values.version) return values;
  rejectPositionals('weft-controller', positionals);
  checkRegistryFlags(values);
  // kube-controller-manager's own checks: a leader must stop writing before its lease can
  // expire, and must be able to renew more than once within the deadline.
  const lease = parseSecondsOrDuration(values.leaderElectLeaseDuration);
  const renew = parseSecondsOrDuration(values.leaderElectRenewDeadline);
  const retry = parseSecondsOrDuration(values.leaderElectRetryPeriod);
  if (lease < 1000) {
    throw flagError(
      'leader-elect-lease-duration',
      'must be at least 1s (the election key has a TTL in whole seconds)',
      values.leaderElectLeaseDuration,
    );
  }
  if (renew >= lease) {
    throw flagError(
      'leader-elect-renew-deadline',
      `must be less than --leader-elect-lease-duration (${values.leaderElectLeaseDuration})`,
      values.leaderElectRenewDeadline,
    );
  }
  if (retry >= renew) {
    throw flagError(
      'leader-elect-retry-period',
      `must be less than --leader-elect-renew-deadline (${values.leaderElectRenewDeadline})`,
      values.leaderElectRetryPeriod,
    );
  }
  return values;
}

/** Options of {@link resolveControllerConfig}. */
export interface ResolveControllerOptions {
  /** Default os.hostname(). */
  hostname?: () => string;
  /** Default process.pid. */
  pid?: number;
}

/** Turns parsed flags into the daemon's configuration. */
export function resolveControllerConfig(
  flags: ControllerFlags,
  opts: ResolveControllerOptions = {},
): ControllerConfig {
  const host = (opts.hostname ?? hostname)();
  const prefix = flags.registryPrefix === '/' ? '' : flags.registryPrefix;
  return {
    flags,
    nodeName: flags.nodeName?.trim() || host,
    identity: flags.identity?.trim() || `${host}_${opts.pid ?? process.pid}`,
    electionKey: `${prefix}/leases/${flags.leaderElectResourceName}`,
    nodeMonitorGracePeriodMs: parseSecondsOrDuration(flags.nodeMonitorGracePeriod),
    leaseDurationMs: parseSecondsOrDuration(flags.leaderElectLeaseDuration),
    renewDeadlineMs: parseSecondsOrDuration(flags.leaderElectRenewDeadline),
    retryPeriodMs: parseSecondsOrDuration(flags.leaderElectRetryPeriod),
    healthz: parseBindAddress(flags.healthzBindAddress, DEFAULT_CONTROLLER_HEALTHZ_PORT),
    metrics: parseBindAddress(flags.metricsBindAddress, DEFAULT_CONTROLLER_METRICS_PORT),
  };
}

/** The `--help` text. */
export function controllerHelp(): string {
  return formatHelp(CONTROLLER_FLAGS, {
    usage: 'Usage: weft-controller [flags]',
    intro:
      'Keeps the EndpointSlices of every Service with a selector in step with the pods it selects, as ' +
      "kube-controller-manager's endpointslice controller does, and marks the endpoints of nodes whose " +
      'weft-flanneld is gone not ready. Several may run: one is elected leader through the registry and ' +
      'only it writes. Every flag can also be set through the environment variable shown; the command ' +
      'line wins. Durations take a unit (500ms, 1s, 2m) or are seconds.',
    envPrefix: CONTROLLER_ENV_PREFIX,
  });
}

/**
 * weft-flanneld's flags: flannel's flags with flannel's names, defaults and `FLANNELD_*`
 * environment variables (so an existing flanneld command line or DaemonSet env keeps working),
 * plus weft's own (`--registry`, `--firewall`, `--cleanup`, `--log-level`).
 *
 * Three defaults are weft's choices:
 * - `--healthz-ip` is 127.0.0.1 (flannel: 0.0.0.0): the listener also serves /metrics, which
 *   should not be open to the network unless an operator says so.
 * - `--healthz-port` is 0, disabled, as in flannel: an operator who swaps flanneld for
 *   weft-flanneld gets no new open port, and one who wants probes or metrics picks a port known
 *   to be free on their nodes.
 * - `--firewall` is iptables: flannel's chains, where operators and their tools look for them,
 *   and the choice whose FORWARD accepts get past that chain's DROP policy (which Docker sets).
 *   In nftables an accept in weft's table cannot stop a drop in another table, so nftables is
 *   opt-in, for nodes whose operators know nothing else drops forwarded traffic.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { DAEMON_TAIL_FLAGS, LOG_LEVELS } from '../cli/common-flags.js';
import {
  boolFlag,
  choiceFlag,
  defineFlags,
  formatHelp,
  intFlag,
  listFlag,
  parseFlags,
  stringFlag,
  type FlagValues,
  rejectPositionals,
} from '../cli/flag-parser.js';
import {
  ETCD_AUTH_FLAGS,
  ETCD_CONNECTION_FLAGS,
  checkRegistryFlags,
  nonEmpty,
  registryFlag,
} from '../cli/registry-flags.js';

/** Environment variable prefix, as in flannel: `--ip-masq` reads `FLANNELD_IP_MASQ`. */
export const FLANNELD_ENV_PREFIX = 'FLANNELD';

export { LOG_LEVELS };

/** Firewall programs weft-flanneld can keep its masquerade and forward rules in. */
export const FIREWALLS = ['iptables', 'nftables'] as const;

/** The flag table; the single source for parsing, validation and `--help`. */
export const FLANNELD_FLAGS = defineFlags({
  ...ETCD_CONNECTION_FLAGS,
  etcdPrefix: stringFlag({
    name: 'etcd-prefix',
    metavar: '<path>',
    description: 'etcd key prefix holding config and subnets.',
    default: '/coreos.com/network',
    validate: (v) =>
      !v.startsWith('/')
        ? 'must start with "/"'
        : v.length > 1 && v.endsWith('/')
          ? 'must not end with "/"'
          : undefined,
  }),
  ...ETCD_AUTH_FLAGS,
  iface: listFlag({
    name: 'iface',
    metavar: '<name|ip>',
    description:
      'Interface (name or IP address) for inter-host traffic. Repeat to give candidates, tried in order; ' +
      'the first that exists is used.',
    validate: nonEmpty,
  }),
  ifaceRegex: listFlag({
    name: 'iface-regex',
    metavar: '<regex>',
    description:
      'Regex matched against interface names and then addresses, when --iface matched nothing. Repeatable. ' +
      'The environment variable is split on commas, so a regex containing a comma must be given as a flag.',
    validate: regex,
  }),
  ifaceCanReach: stringFlag({
    name: 'iface-can-reach',
    metavar: '<ip>',
    description: 'Use the interface the kernel would route to this address through (as `ip route get <ip>`).',
    validate: (v) => (isIPv4(v) || isIPv6(v) ? undefined : 'must be an IP address'),
  }),
  publicIp: stringFlag({
    name: 'public-ip',
    metavar: '<ipv4>',
    description: "IPv4 address other nodes reach this node at; default: the chosen interface's address.",
    validate: (v) => (isIPv4(v) ? undefined : 'must be an IPv4 address'),
  }),
  publicIpv6: stringFlag({
    name: 'public-ipv6',
    metavar: '<ipv6>',
    description: "IPv6 address other nodes reach this node at; default: the chosen interface's address.",
    validate: (v) => (isIPv6(v) && !v.includes('%') ? undefined : 'must be an IPv6 address'),
  }),
  subnetFile: stringFlag({
    name: 'subnet-file',
    metavar: '<file>',
    description: "File the node's network, subnet, MTU and ip-masq setting are written to, for CNI.",
    default: '/run/flannel/subnet.env',
    validate: nonEmpty,
  }),
  subnetLeaseRenewMargin: intFlag({
    name: 'subnet-lease-renew-margin',
    metavar: '<minutes>',
    description: 'Renew the subnet lease this many minutes before it expires.',
    default: 60,
    min: 1,
    max: 1439,
  }),
  ipMasq: boolFlag({
    name: 'ip-masq',
    description: 'Masquerade traffic from the cluster network to destinations outside it.',
  }),
  healthzIp: stringFlag({
    name: 'healthz-ip',
    metavar: '<ip>',
    description:
      'Address of the /healthz, /readyz and /metrics listener. Loopback by default (flannel: 0.0.0.0) ' +
      'because metrics should not be exposed unless asked for.',
    default: '127.0.0.1',
    validate: (v) => (isIPv4(v) || isIPv6(v) ? undefined : 'must be an IP address'),
  }),
  healthzPort: intFlag({
    name: 'healthz-port',
    metavar: '<port>',
    description:
      'Port of the /healthz, /readyz and /metrics listener; 0 disables it (the default, as in flannel, ' +
      'so replacing flanneld opens no new port).',
    default: 0,
    min: 0,
    max: 65535,
  }),
  nodeName: stringFlag({
    name: 'node-name',
    metavar: '<name>',
    description:
      "This node's name in weft's status records (`weftctl status`); the same name weft-proxy's --hostname-override gives. Default: the hostname.",
    validate: (v) =>
      v.trim() === '' || v.includes('/') ? 'must be a non-empty name without "/"' : undefined,
  }),
  statusPrefix: stringFlag({
    name: 'status-prefix',
    metavar: '<path>',
    description:
      'Registry prefix of the daemons\' status records (`weftctl status` reads them); "" disables the record.',
    default: '/weft/status',
    validate: (v) => (v !== '' && !v.startsWith('/') ? 'must start with "/" (or be empty)' : undefined),
  }),
  iptablesResync: intFlag({
    name: 'iptables-resync',
    metavar: '<seconds>',
    description: 'Seconds between checks that repair the masquerade and forward rules.',
    default: 5,
    min: 1,
  }),
  iptablesForwardRules: boolFlag({
    name: 'iptables-forward-rules',
    description: 'Accept forwarded traffic from and to the cluster network (iptables chain FLANNEL-FWD).',
    default: true,
  }),
  registry: registryFlag('leases'),
  firewall: choiceFlag({
    name: 'firewall',
    metavar: '<name>',
    description:
      "Program that holds the masquerade and forward rules. iptables: flannel's chains; their accepts in " +
      "FORWARD get past that chain's DROP policy (which Docker sets). nftables: a private table " +
      '"weft-flannel", replaced atomically; its accepts cannot override a drop in another table.',
    choices: FIREWALLS,
    default: 'iptables',
  }),
  cleanup: boolFlag({
    name: 'cleanup',
    description: 'Remove the rules and devices weft-flanneld installed on this node, then exit.',
  }),
  ...DAEMON_TAIL_FLAGS,
});

/** weft-flanneld's parsed configuration. */
export interface FlanneldFlags {
  /** etcd client URLs (`--etcd-endpoints`). */
  etcdEndpoints: string[];
  /** Key prefix of the network config and leases (`--etcd-prefix`). */
  etcdPrefix: string;
  /** TLS client key (`--etcd-keyfile`); set together with `etcdCertfile`. */
  etcdKeyfile: string | undefined;
  /** TLS client certificate (`--etcd-certfile`). */
  etcdCertfile: string | undefined;
  /** CA bundle for the etcd servers (`--etcd-cafile`). */
  etcdCafile: string | undefined;
  /** etcd username (`--etcd-username`). */
  etcdUsername: string | undefined;
  /** etcd password (`--etcd-password`); never logged. */
  etcdPassword: string | undefined;
  /** Interface names or addresses to try in order (`--iface`). */
  iface: string[];
  /** Interface regexes to try in order (`--iface-regex`). */
  ifaceRegex: string[];
  /** Pick the interface routing to this address (`--iface-can-reach`). */
  ifaceCanReach: string | undefined;
  /** This node's IPv4 address for other nodes (`--public-ip`). */
  publicIp: string | undefined;
  /** This node's IPv6 address for other nodes (`--public-ipv6`). */
  publicIpv6: string | undefined;
  /** Path of subnet.env (`--subnet-file`). */
  subnetFile: string;
  /** Minutes before lease expiry to renew, 1..1439 (`--subnet-lease-renew-margin`). */
  subnetLeaseRenewMargin: number;
  /** Install masquerade rules (`--ip-masq`). */
  ipMasq: boolean;
  /** Address of the health and metrics listener (`--healthz-ip`). */
  healthzIp: string;
  /** Port of the health and metrics listener; 0 = disabled (`--healthz-port`). */
  healthzPort: number;
  /** This node's name in status records (`--node-name`); undefined: the hostname. */
  nodeName: string | undefined;
  /** Prefix of the status records; "" disables (`--status-prefix`). */
  statusPrefix: string;
  /** Seconds between rule checks (`--iptables-resync`). */
  iptablesResync: number;
  /** Install the FLANNEL-FWD accept rules (`--iptables-forward-rules`). */
  iptablesForwardRules: boolean;
  /** `etcd`, or a `redis://` URL (`--registry`). */
  registry: string;
  /** Where the rules live (`--firewall`). */
  firewall: (typeof FIREWALLS)[number];
  /** Remove installed state and exit (`--cleanup`). */
  cleanup: boolean;
  /** Log level (`--log-level`). */
  logLevel: (typeof LOG_LEVELS)[number];
  /** Print help and exit (`--help`, `-h`). */
  help: boolean;
  /** Print the version and exit (`--version`). */
  version: boolean;
}

// Fails to compile when the table and the interface above drift apart.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _tableMatchesInterface: Same<FlagValues<typeof FLANNELD_FLAGS>, FlanneldFlags> = true;

/**
 * Parses weft-flanneld's command line (without node and script) and environment. Throws
 * WeftError INVALID_ARGUMENT naming the flag at fault. With `--help` or `--version` set, errors
 * in other flags are ignored so that those two always work.
 */
export function parseFlanneldFlags(argv: string[], env: NodeJS.ProcessEnv): FlanneldFlags {
  const { values, positionals } = parseFlags(FLANNELD_FLAGS, argv, env, { envPrefix: FLANNELD_ENV_PREFIX });
  if (values.help || values.version) return values;
  rejectPositionals('weft-flanneld', positionals);
  checkRegistryFlags(values);
  return values;
}

/** The `--help` text. */
export function flanneldHelp(): string {
  return formatHelp(FLANNELD_FLAGS, {
    usage: 'Usage: weft-flanneld [flags]',
    intro:
      'Leases a subnet of the cluster network for this node, programs the overlay and writes subnet.env. ' +
      'Every flag can also be set through the environment variable shown; the command line wins. ' +
      'Bool flags are turned off with =false, e.g. --iptables-forward-rules=false.',
    envPrefix: FLANNELD_ENV_PREFIX,
  });
}

function regex(v: string): string | undefined {
  try {
    new RegExp(v);
    return undefined;
  } catch (err) {
    return `must be a valid regular expression (${(err as Error).message})`;
  }
}

/**
 * weftctl's global flags: the registry flags the daemons use (same names, same validation) plus
 * the registry prefixes of both daemons and the output format. The environment is read as
 * `WEFTCTL_<FLAG>`, and for the registry flags also as the daemons' own variables
 * (`FLANNELD_ETCD_ENDPOINTS`, `WEFT_PROXY_ETCD_ENDPOINTS`), so an operator can source a node's
 * /etc/default/weft-flanneld and point weftctl at the same etcd.
 */
import { VERSION_FLAG, helpFlag } from '../cli/common-flags.js';
import { choiceFlag, defineFlags, envVarName, stringFlag } from '../cli/flag-parser.js';
import { ETCD_AUTH_FLAGS, ETCD_CONNECTION_FLAGS, nonEmpty, registryFlag } from '../cli/registry-flags.js';
import { OUTPUT_FORMATS } from './output.js';

/** weftctl's own environment prefix: `--output` reads `WEFTCTL_OUTPUT`. */
export const WEFTCTL_ENV_PREFIX = 'WEFTCTL';

/** The daemons' prefixes, read (in this order) for registry flags weftctl's own variables leave unset. */
export const DAEMON_ENV_PREFIXES = ['FLANNELD', 'WEFT_PROXY'] as const;

/** flannel's etcd prefix, flanneld's default. */
export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

/** Flags every command accepts. */
export const GLOBAL_FLAGS = defineFlags({
  registry: registryFlag('leases, services and endpoint slices'),
  ...ETCD_CONNECTION_FLAGS,
  ...ETCD_AUTH_FLAGS,
  etcdPrefix: stringFlag({
    name: 'etcd-prefix',
    metavar: '<path>',
    description: "weft-flanneld's (flannel's) prefix: the network config and the leases are under it.",
    default: DEFAULT_ETCD_PREFIX,
    validate: absolutePath,
  }),
  registryPrefix: stringFlag({
    name: 'registry-prefix',
    metavar: '<path>',
    description:
      "weft-proxy's prefix: services, endpoint slices, allocations and daemon status are under it.",
    default: '/weft',
    validate: absolutePath,
  }),
  output: choiceFlag({
    name: 'output',
    aliases: ['o'],
    metavar: '<format>',
    description:
      'Output format: a table for people (wide: with more columns, e.g. get pods), or JSON/YAML with every field.',
    choices: OUTPUT_FORMATS,
    default: 'table',
  }),
  help: helpFlag('Show help (for a command: `weftctl COMMAND --help`) and exit.'),
  version: VERSION_FLAG,
});

/** The registry flags weftctl shares with the daemons, by table key. */
const SHARED_KEYS = ['registry', ...Object.keys(ETCD_CONNECTION_FLAGS), ...Object.keys(ETCD_AUTH_FLAGS)];

/**
 * The environment weftctl parses: its own variables, plus the daemons' variables of the shared
 * registry flags copied under weftctl's names when weftctl's own are unset; flanneld's
 * `FLANNELD_ETCD_PREFIX` and weft-proxy's `WEFT_PROXY_REGISTRY_PREFIX` likewise.
 */
export function effectiveEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env };
  const copy = (flagName: string, prefixes: readonly string[]) => {
    const own = envVarName(WEFTCTL_ENV_PREFIX, flagName);
    if (out[own] !== undefined) return;
    for (const p of prefixes) {
      const v = env[envVarName(p, flagName)];
      if (v !== undefined) {
        out[own] = v;
        return;
      }
    }
  };
  for (const key of SHARED_KEYS) {
    const spec = GLOBAL_FLAGS[key as keyof typeof GLOBAL_FLAGS];
    copy(spec.name, DAEMON_ENV_PREFIXES);
  }
  copy('etcd-prefix', ['FLANNELD']);
  copy('registry-prefix', ['WEFT_PROXY']);
  return out;
}

function absolutePath(v: string): string | undefined {
  return nonEmpty(v) ?? (v.startsWith('/') ? undefined : 'must start with /');
}

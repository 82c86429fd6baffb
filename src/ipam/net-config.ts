/**
 * The flannel network config (`<prefix>/config`): parsed with flannel's key matching, defaults
 * and checks, so an existing flannel config means the same thing to weft. One documented
 * difference: without a `Backend`, weft uses vxlan where flannel falls back to udp.
 */
import { z } from 'zod';
import { ErrorCodes, invalid, messageOf, type WeftError } from '../errors/index.js';
import { Cidr } from './cidr.js';
import { decodeJson, goStruct, isJsonObject, matchGoFields } from './go-json.js';
import { parseIp, type IpFamily } from './ip.js';

/** The subnets one address family hands out: every node lease is a `/subnetLen` in min..max. */
export interface SubnetPool {
  /** The whole overlay network (`Network` / `IPv6Network`). */
  readonly network: Cidr;
  /** Prefix length of each node's subnet. */
  readonly subnetLen: number;
  /** Lowest subnet that may be leased. */
  readonly subnetMin: Cidr;
  /** Highest subnet that may be leased. */
  readonly subnetMax: Cidr;
}

/** vxlan backend options, defaults applied. */
export interface VxlanBackend {
  readonly type: 'vxlan';
  /** VXLAN network identifier; also names the device `flannel.<VNI>`. */
  readonly vni: number;
  /** UDP destination port; 0 lets the kernel choose its default (8472). */
  readonly port: number;
  readonly gbp: boolean;
  readonly learning: boolean;
  /** Route directly over the underlay to nodes on the same network. */
  readonly directRouting: boolean;
  /** Device MTU; undefined means derive it from the external interface's MTU. */
  readonly mtu?: number;
}

/** udp backend options, defaults applied. */
export interface UdpBackend {
  readonly type: 'udp';
  readonly port: number;
}

/** host-gw takes no options. */
export interface HostGwBackend {
  readonly type: 'host-gw';
}

/** alloc only holds subnet leases and sets up no dataplane. */
export interface AllocBackend {
  readonly type: 'alloc';
}

/** The backend section of the config. */
export type BackendConfig = VxlanBackend | UdpBackend | HostGwBackend | AllocBackend;

/** A validated network config with every default filled in. */
export interface NetConfig {
  /** Present when EnableIPv4 is true (the default). */
  readonly ipv4?: SubnetPool;
  /** Present when EnableIPv6 is true. */
  readonly ipv6?: SubnetPool;
  readonly backend: BackendConfig;
}

const vni = z.number().int().min(0).max(0xffffff);
const port = z.number().int().min(0).max(0xffff);
const flag = z.boolean().default(false);

const backendVariants = [
  z
    .object({
      Type: z.literal('vxlan'),
      VNI: vni.default(1),
      Port: port.default(0),
      GBP: flag,
      Learning: flag,
      DirectRouting: flag,
      MTU: z.number().int().min(68).max(0xffff).optional(),
    })
    .transform((b): VxlanBackend => ({
      type: b.Type,
      vni: b.VNI,
      port: b.Port,
      gbp: b.GBP,
      learning: b.Learning,
      directRouting: b.DirectRouting,
      ...(b.MTU === undefined ? {} : { mtu: b.MTU }),
    })),
  z
    .object({ Type: z.literal('udp'), Port: port.default(8285) })
    .transform((b): UdpBackend => ({ type: b.Type, port: b.Port })),
  z.object({ Type: z.literal('host-gw') }).transform((b): HostGwBackend => ({ type: b.Type })),
  z.object({ Type: z.literal('alloc') }).transform((b): AllocBackend => ({ type: b.Type })),
] as const;

const backendTypes = backendVariants.map((v) => v.in.shape.Type.value);
const backendKeys = [...new Set(backendVariants.flatMap((v) => Object.keys(v.in.shape)))];

const backendSchema = z.preprocess(
  // An absent Backend means vxlan (flannel would fall back to udp), and so does one that only
  // sets options, such as {"VNI": 4}: the options are vxlan's.
  (value) => {
    const fields = matchGoFields(value ?? {}, backendKeys);
    return isJsonObject(fields) ? { Type: 'vxlan', ...fields } : fields;
  },
  z.discriminatedUnion('Type', backendVariants, {
    error: (issue) =>
      issue.code === 'invalid_union'
        ? `unknown backend type ${JSON.stringify((issue.input as { Type?: unknown }).Type)} (known: ${backendTypes.join(', ')})`
        : undefined,
  }),
);

// Go cannot tell an explicit 0 from an absent number, so flannel reads SubnetLen 0 as unset.
const subnetLen = z
  .number()
  .int()
  .optional()
  .transform((n) => n || undefined);

/**
 * The config JSON's shape, after case-insensitive key matching: types and the simple defaults.
 * Defaults that depend on other fields, and the checks between fields, are {@link parseNetConfig}'s.
 */
export const netConfigJsonSchema = goStruct({
  EnableIPv4: z.boolean().default(true),
  Network: z.string().optional(),
  SubnetLen: subnetLen,
  SubnetMin: z.string().optional(),
  SubnetMax: z.string().optional(),
  EnableIPv6: z.boolean().default(false),
  IPv6Network: z.string().optional(),
  IPv6SubnetLen: subnetLen,
  IPv6SubnetMin: z.string().optional(),
  IPv6SubnetMax: z.string().optional(),
  Backend: backendSchema,
});

/** The config JSON after {@link netConfigJsonSchema}. */
export type NetConfigJson = z.output<typeof netConfigJsonSchema>;

/** What differs between the IPv4 and IPv6 halves of the config. */
interface FamilyRules {
  readonly family: IpFamily;
  readonly enable: 'EnableIPv4' | 'EnableIPv6';
  readonly network: 'Network' | 'IPv6Network';
  readonly subnetLen: 'SubnetLen' | 'IPv6SubnetLen';
  readonly subnetMin: 'SubnetMin' | 'IPv6SubnetMin';
  readonly subnetMax: 'SubnetMax' | 'IPv6SubnetMax';
  /** SubnetLen when the network is large enough for it. */
  readonly defaultSubnetLen: number;
  /**
   * Longest SubnetLen: each node needs room for at least the bridge and a tunnel address. The
   * network must hold at least four subnets (the first is skipped), so its prefix is ≤ this − 2.
   */
  readonly maxSubnetLen: number;
}

const IPV4: FamilyRules = {
  family: 4,
  enable: 'EnableIPv4',
  network: 'Network',
  subnetLen: 'SubnetLen',
  subnetMin: 'SubnetMin',
  subnetMax: 'SubnetMax',
  defaultSubnetLen: 24,
  maxSubnetLen: 30,
};

const IPV6: FamilyRules = {
  family: 6,
  enable: 'EnableIPv6',
  network: 'IPv6Network',
  subnetLen: 'IPv6SubnetLen',
  subnetMin: 'IPv6SubnetMin',
  subnetMax: 'IPv6SubnetMax',
  defaultSubnetLen: 64,
  maxSubnetLen: 126,
};

/**
 * Parses and validates a flannel network config (JSON text or an already parsed value) and fills
 * in every default. Throws WEFT_INVALID_CONFIG whose `details.field` names the field at fault
 * (dotted for nested ones, e.g. `Backend.VNI`; '' when the whole document is wrong).
 */
export function parseNetConfig(input: unknown): NetConfig {
  const decoded = decodeJson(input, netConfigJsonSchema);
  if (!decoded.ok) throw configError(decoded.field, decoded.message);
  const json = decoded.value;
  if (!json.EnableIPv4 && !json.EnableIPv6) {
    throw configError('EnableIPv4', 'at least one of EnableIPv4 and EnableIPv6 must be true');
  }
  return {
    ...(json.EnableIPv4 ? { ipv4: parsePool(json, IPV4) } : {}),
    ...(json.EnableIPv6 ? { ipv6: parsePool(json, IPV6) } : {}),
    backend: json.Backend,
  };
}

function parsePool(json: NetConfigJson, rules: FamilyRules): SubnetPool {
  const text = json[rules.network];
  if (text === undefined) throw configError(rules.network, `required when ${rules.enable} is true`);
  const network = atField(rules.network, () => Cidr.parse(text));
  if (network.family !== rules.family)
    throw configError(rules.network, `must be an IPv${rules.family} network`);
  const maxPrefix = rules.maxSubnetLen - 2;
  if (network.prefixLength > maxPrefix) {
    throw configError(rules.network, `is too small: the prefix must be /${maxPrefix} or shorter`);
  }

  const len = resolveSubnetLen(json[rules.subnetLen], network, rules);
  const count = network.subnetCount(len);
  // The first subnet is skipped by default: its network address equals the overlay's own.
  const subnetMin = subnetBoundary(json, rules.subnetMin, network, len, rules) ?? network.subnetAt(len, 1n);
  const subnetMax =
    subnetBoundary(json, rules.subnetMax, network, len, rules) ?? network.subnetAt(len, count - 1n);
  if (subnetMin.start > subnetMax.start) {
    const field = json[rules.subnetMin] === undefined ? rules.subnetMax : rules.subnetMin;
    throw configError(
      field,
      `${rules.subnetMin} ${subnetMin.network} is above ${rules.subnetMax} ${subnetMax.network}`,
    );
  }
  return { network, subnetLen: len, subnetMin, subnetMax };
}

function resolveSubnetLen(explicit: number | undefined, network: Cidr, rules: FamilyRules): number {
  const min = network.prefixLength + 2;
  if (explicit === undefined) return Math.max(rules.defaultSubnetLen, min);
  if (explicit > rules.maxSubnetLen) throw configError(rules.subnetLen, `must be ≤ ${rules.maxSubnetLen}`);
  if (explicit < min) throw configError(rules.subnetLen, `must be ≥ ${min} (${rules.network} prefix + 2)`);
  return explicit;
}

/** SubnetMin or SubnetMax as the subnet it starts, or undefined when not set. */
function subnetBoundary(
  json: NetConfigJson,
  field: FamilyRules['subnetMin' | 'subnetMax'],
  network: Cidr,
  len: number,
  rules: FamilyRules,
): Cidr | undefined {
  const text = json[field];
  if (text === undefined) return undefined;
  const ip = atField(field, () => parseIp(text));
  if (ip.family !== rules.family) throw configError(field, `must be an IPv${rules.family} address`);
  if (!network.contains(text)) throw configError(field, `${text} is outside ${rules.network} ${network}`);
  const subnet = network.subnetAt(len, network.subnetIndexOf(len, ip.value));
  if (subnet.start !== ip.value) {
    throw configError(
      field,
      `${text} is not aligned to ${rules.subnetLen} /${len} (nearest below: ${subnet.network})`,
    );
  }
  return subnet;
}

function configError(field: string, message: string): WeftError {
  return invalid('net-conf', field, message, ErrorCodes.INVALID_CONFIG);
}

/** Runs `parse`, reporting its failure against `field`. */
function atField<T>(field: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw configError(field, messageOf(err));
  }
}

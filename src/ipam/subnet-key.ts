/**
 * Registry keys of node leases, in flannel's form: `10.244.3.0-24`, or dual-stack
 * `10.244.3.0-24&fd00:10:244:3::-64`, under `<prefix>/subnets/`.
 */
import { ErrorCodes, WeftError, invalid, messageOf } from '../errors/index.js';
import { Cidr, parsePrefixLength } from './cidr.js';

/** flannel's default registry prefix. */
export const DEFAULT_PREFIX = '/coreos.com/network';

/** The subnets a lease key names: at least one of the two. */
export interface SubnetKey {
  readonly ipv4?: Cidr;
  readonly ipv6?: Cidr;
}

/** The key naming `subnets`; throws WEFT_INVALID_ARGUMENT when a family is wrong or both are absent. */
export function formatSubnetKey(subnets: SubnetKey): string {
  const { ipv4, ipv6 } = subnets;
  if (ipv4 === undefined && ipv6 === undefined)
    throw invalid('subnet key', '', 'needs an IPv4 or an IPv6 subnet');
  if (ipv4 && ipv4.family !== 4) throw invalid('subnet key', 'ipv4', `${ipv4} is not an IPv4 subnet`);
  if (ipv6 && ipv6.family !== 6) throw invalid('subnet key', 'ipv6', `${ipv6} is not an IPv6 subnet`);
  return [ipv4, ipv6]
    .filter((c) => c !== undefined)
    .map((c) => `${c.network}-${c.prefixLength}`)
    .join('&');
}

/**
 * Parses a lease key. Only the exact form flannel writes is accepted (canonical addresses, no
 * host bits, no spaces): a key is the identity of a lease, so two spellings of one subnet must not
 * both be valid. Throws WEFT_INVALID_KEY naming the key.
 */
export function parseSubnetKey(key: string): SubnetKey {
  const parts = key.split('&');
  if (parts.length > 2) throw keyError(key, 'has more than two parts');
  const cidrs = parts.map((part) => parsePart(key, part));
  const ipv4 = cidrs.find((c) => c.family === 4);
  const ipv6 = cidrs.find((c) => c.family === 6);
  if (cidrs.length === 2 && (cidrs[0] !== ipv4 || cidrs[1] !== ipv6)) {
    throw keyError(key, 'a dual-stack key must be <IPv4 part>&<IPv6 part>');
  }
  return { ...(ipv4 && { ipv4 }), ...(ipv6 && { ipv6 }) };
}

function parsePart(key: string, part: string): Cidr {
  if (part === '') throw keyError(key, 'has an empty part');
  const dash = part.lastIndexOf('-');
  const ip = part.slice(0, dash);
  const prefixLength = parsePrefixLength(part.slice(dash + 1));
  if (dash < 0 || prefixLength === undefined) {
    throw keyError(key, `part ${JSON.stringify(part)} is not <address>-<prefix length>`);
  }
  let cidr: Cidr;
  try {
    cidr = Cidr.from(ip, prefixLength);
  } catch (err) {
    throw keyError(key, messageOf(err));
  }
  if (cidr.network !== ip) throw keyError(key, `address ${ip} is not in canonical form (${cidr.network})`);
  return cidr;
}

function keyError(key: string, reason: string): WeftError {
  return new WeftError(ErrorCodes.INVALID_KEY, `subnet key ${JSON.stringify(key)}: ${reason}`, { key });
}

/** The registry directory of the leases, `<prefix>/subnets/`; the prefix may end in `/`. */
export function subnetsDir(prefix: string = DEFAULT_PREFIX): string {
  return `${prefix.replace(/\/+$/, '')}/subnets/`;
}

/** The registry path of a lease, `<prefix>/subnets/<key>`. */
export function subnetPath(key: string | SubnetKey, prefix: string = DEFAULT_PREFIX): string {
  return subnetsDir(prefix) + (typeof key === 'string' ? key : formatSubnetKey(key));
}

/** The key part of a lease path; throws WEFT_INVALID_KEY when `path` is not directly under {@link subnetsDir}. */
export function subnetKeyOfPath(path: string, prefix: string = DEFAULT_PREFIX): string {
  const dir = subnetsDir(prefix);
  const key = path.slice(dir.length);
  if (!path.startsWith(dir) || key === '' || key.includes('/')) {
    throw new WeftError(ErrorCodes.INVALID_KEY, `${JSON.stringify(path)} is not a lease path under ${dir}`, {
      key: path,
    });
  }
  return key;
}

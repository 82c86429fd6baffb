/**
 * Addresses no Service may claim, whatever the configuration: the API server refuses
 * unspecified, loopback and link-local externalIPs and endpoint addresses, because a rule for
 * them captures the node's own traffic (its local daemons, its metadata service) rather than a
 * service's. weft refuses the whole multicast range and the limited broadcast address too: no
 * service is reached through them.
 */
import { Cidr, isIPv4, parseIp } from '../ipam/index.js';

const SPECIAL: readonly [Cidr, string][] = [
  ['0.0.0.0/32', 'is the unspecified address'],
  ['127.0.0.0/8', 'is in the loopback range 127.0.0.0/8'],
  ['169.254.0.0/16', 'is in the link-local range 169.254.0.0/16'],
  ['224.0.0.0/4', 'is in the multicast range 224.0.0.0/4'],
  ['255.255.255.255/32', 'is the broadcast address'],
  ['::/128', 'is the unspecified address'],
  ['::1/128', 'is the loopback address'],
  ['fe80::/10', 'is in the link-local range fe80::/10'],
  ['ff00::/8', 'is in the multicast range ff00::/8'],
].map(([c, why]) => [Cidr.parse(c as string), why as string]);

const V4_MAPPED = Cidr.parse('::ffff:0:0/96');

/**
 * Why `ip` (a valid address) is one no Service may claim, or undefined. An IPv4-mapped IPv6
 * address is judged by the IPv4 address it carries, as Go's parser (and so the API server) does.
 */
export function specialAddressProblem(ip: string): string | undefined {
  let addr = ip;
  if (!isIPv4(ip) && V4_MAPPED.contains(ip)) {
    const v = parseIp(ip).value & 0xffff_ffffn;
    addr = [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
  }
  for (const [cidr, why] of SPECIAL) if (cidr.contains(addr)) return why;
  return undefined;
}

/**
 * Choosing the external interface: the one whose address is published as the node's PublicIP
 * and that carries the overlay. flannel's rules, in its order: `--iface` (names or addresses,
 * first match wins), then `--iface-regex`, then `--iface-can-reach` (the interface the kernel
 * would use to reach that address), then the interface of the default route.
 */
import { Cidr, isIPv4, isIPv6 } from '../ipam/index.js';
import { invalid } from '../errors/index.js';
import type { Address, Link, Netlink, Route } from '../netlink/index.js';

/** What the kernel has that the choice depends on. */
export interface InterfaceState {
  links: Link[];
  addresses: Address[];
  routes: Route[];
}

/** The flags that steer the choice. */
export interface IfaceSelector {
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach?: string | undefined;
  publicIp?: string | undefined;
  publicIpv6?: string | undefined;
}

/** The chosen interface and the addresses weft publishes. */
export interface ExternalIface {
  name: string;
  index: number;
  mtu: number;
  /** The interface's own IPv4 address (vxlan `local`). */
  ip: string;
  /** The address published as PublicIP: `--public-ip`, else `ip`. */
  publicIp: string;
  ipv6?: string;
  publicIpv6?: string;
}

const OBJECT = 'flanneld';

/** Pure choice of the external interface; errors name the flag that could not be satisfied. */
export function chooseExternalIface(state: InterfaceState, sel: IfaceSelector): ExternalIface {
  const byIndex = new Map(state.links.map((l) => [l.index, l]));
  const addrsOf = (index: number, family: 'inet' | 'inet6') =>
    state.addresses.filter((a) => a.ifindex === index && a.family === family && !isLinkLocal(a));

  const pick = (link: Link, ip?: string): ExternalIface => {
    const v4 = ip ?? addrsOf(link.index, 'inet')[0]?.address;
    if (!v4) throw invalid(OBJECT, 'iface', `interface ${link.name} has no IPv4 address`);
    const v6 = addrsOf(link.index, 'inet6')[0]?.address;
    const out: ExternalIface = {
      name: link.name,
      index: link.index,
      mtu: link.mtu,
      ip: v4,
      publicIp: sel.publicIp ?? v4,
    };
    if (v6) out.ipv6 = v6;
    const pub6 = sel.publicIpv6 ?? v6;
    if (pub6) out.publicIpv6 = pub6;
    return out;
  };

  if (sel.iface.length > 0) {
    for (const want of sel.iface) {
      if (isIPv4(want) || isIPv6(want)) {
        const a = state.addresses.find((x) => x.address === want);
        const link = a && byIndex.get(a.ifindex);
        if (link) return pick(link, isIPv4(want) ? want : undefined);
      } else {
        const link = state.links.find((l) => l.name === want);
        if (link) return pick(link);
      }
    }
    throw invalid(
      OBJECT,
      '--iface',
      `none of ${sel.iface.join(', ')} is an interface or address on this node`,
    );
  }
  if (sel.ifaceRegex.length > 0) {
    for (const src of sel.ifaceRegex) {
      const re = new RegExp(src);
      for (const link of state.links) {
        if (link.name === 'lo') continue;
        if (re.test(link.name)) return pick(link);
        const a = addrsOf(link.index, 'inet').find((x) => re.test(x.address));
        if (a) return pick(link, a.address);
      }
    }
    throw invalid(OBJECT, '--iface-regex', `no interface or address matches ${sel.ifaceRegex.join(', ')}`);
  }
  if (sel.ifaceCanReach) {
    const route = lookupRoute(state.routes, sel.ifaceCanReach);
    const link = route && byIndex.get(route.ifindex);
    if (!link) throw invalid(OBJECT, '--iface-can-reach', `no route to ${sel.ifaceCanReach}`);
    return pick(link);
  }
  const def = state.routes.find((r) => r.family === 'inet' && r.dst === '0.0.0.0/0' && r.type === 'unicast');
  const link = def && byIndex.get(def.ifindex);
  if (!link) {
    throw invalid(OBJECT, '--iface', 'no default route; name the external interface with --iface');
  }
  return pick(link);
}

/** Longest-prefix match over unicast routes of the main table. */
export function lookupRoute(routes: Route[], ip: string): Route | undefined {
  let best: Route | undefined;
  let bestLen = -1;
  for (const r of routes) {
    if (r.type !== 'unicast') continue;
    let net: Cidr;
    try {
      net = Cidr.parseLenient(r.dst);
    } catch {
      continue;
    }
    if (net.contains(ip) && net.prefixLength > bestLen) {
      best = r;
      bestLen = net.prefixLength;
    }
  }
  return best;
}

function isLinkLocal(a: Address): boolean {
  return a.family === 'inet6' ? a.address.startsWith('fe80:') : a.address.startsWith('169.254.');
}

/** Reads the kernel state and chooses. */
export async function findExternalIface(nl: Netlink, sel: IfaceSelector): Promise<ExternalIface> {
  const [links, addresses, routes] = [
    await nl.links.list(),
    await nl.addresses.list(),
    await nl.routes.list(),
  ];
  return chooseExternalIface({ links, addresses, routes }, sel);
}

/**
 * Library messages -> weft value objects, shared by dumps and events so both report the same
 * shapes. Also the name <-> number tables of route enums, in iproute2's words.
 */
import { getU16be, ifla, rt } from 'netlink';
import { AF_BRIDGE, decodeCidr, decodeIp, decodeMac, familyName } from './encoding.js';
import type {
  Address,
  Link,
  Neighbour,
  NeighbourFamily,
  NeighbourFlag,
  NeighbourState,
  Route,
  RouteProtocol,
  RouteScope,
  RouteType,
  VxlanInfo,
} from './types.js';

/** RTNH_F_ONLINK: the library's RouteFlags has no name for it, so it shows up in `__unknown`. */
export const RTNH_F_ONLINK = 4;

function table<T extends string>(entries: [T, number][]): { num: Map<T, number>; name: Map<number, T> } {
  return { num: new Map(entries), name: new Map(entries.map(([k, v]) => [v, k])) };
}

export const PROTOCOLS = table<Exclude<RouteProtocol, number>>([
  ['unspec', 0],
  ['redirect', 1],
  ['kernel', 2],
  ['boot', 3],
  ['static', 4],
  ['ra', 9],
  ['dhcp', 16],
  ['bgp', 186],
  ['ospf', 188],
]);

export const SCOPES = table<Exclude<RouteScope, number>>([
  ['universe', 0],
  ['site', 200],
  ['link', 253],
  ['host', 254],
  ['nowhere', 255],
]);

export const ROUTE_TYPES = table<Exclude<RouteType, number>>([
  ['unicast', 1],
  ['local', 2],
  ['broadcast', 3],
  ['anycast', 4],
  ['multicast', 5],
  ['blackhole', 6],
  ['unreachable', 7],
  ['prohibit', 8],
  ['throw', 9],
]);

/** Number of a named-or-numeric enum value. */
export function enumNumber<T extends string>(t: { num: Map<T, number> }, v: T | number): number {
  return typeof v === 'number' ? v : (t.num.get(v) ?? 0);
}

function enumName<T extends string>(t: { name: Map<number, T> }, n: number): T | number {
  return t.name.get(n) ?? n;
}

/** The library hands back either its enum key or the number; normalise to the number. */
function libEnum(mapping: Record<string, string | number>, v: string | number | undefined): number {
  if (v === undefined) return 0;
  if (typeof v === 'number') return v;
  const n = mapping[v];
  return typeof n === 'number' ? n : 0;
}

export function decodeLink(msg: rt.LinkMessage): Link {
  const { data, attrs } = msg;
  const link: Link = {
    index: data.index ?? 0,
    name: attrs.ifname ?? '',
    mtu: attrs.mtu ?? 0,
    up: data.flags?.up === true,
  };
  if (attrs.address && attrs.address.length > 0) link.mac = decodeMac(attrs.address);
  if (attrs.master) link.master = attrs.master;
  if (attrs.linkinfo) {
    const info = ifla.parseInfo(attrs.linkinfo);
    if (info.kind) link.kind = info.kind;
    if (info.kind === 'vxlan' && info.data) link.vxlan = decodeVxlan(ifla.parseVxlan(info.data));
  }
  return link;
}

function decodeVxlan(v: ifla.Vxlan): VxlanInfo {
  const info: VxlanInfo = {
    id: v.id ?? 0,
    port: v.port ? getU16be(v.port) : 0,
    learning: v.learning === 1,
    gbp: v.gbp === true,
  };
  const local = v.local ?? v.local6;
  if (local) info.local = decodeIp(local);
  if (v.link) info.dev = v.link;
  return info;
}

export function decodeAddress(msg: rt.AddressMessage): Address | undefined {
  const family = familyName(msg.data.family);
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
  const bytes = msg.attrs.local ?? msg.attrs.address;
  if (!family || !bytes) return undefined;
  return {
    ifindex: msg.data.index ?? 0,
    family,
    address: decodeIp(bytes),
    prefixLen: msg.data.prefixlen ?? 0,
  };
}

const STATE_NAMES: [keyof rt.NeighborState, NeighbourState][] = [
  ['permanent', 'permanent'],
  ['noarp', 'noarp'],
  ['reachable', 'reachable'],
  ['stale', 'stale'],
  ['delay', 'delay'],
  ['probe', 'probe'],
  ['failed', 'failed'],
  ['incomplete', 'incomplete'],
];

const FLAG_NAMES: [keyof rt.NeighborFlags, NeighbourFlag][] = [
  ['use', 'use'],
  ['self', 'self'],
  ['master', 'master'],
  ['proxy', 'proxy'],
  ['extLearned', 'extern_learn'],
  ['offloaded', 'offload'],
  ['sticky', 'sticky'],
  ['router', 'router'],
];

/** NUD_* bit of a state name, for requests. */
export const NUD: Record<NeighbourState, number> = {
  none: 0,
  incomplete: 0x01,
  reachable: 0x02,
  stale: 0x04,
  delay: 0x08,
  probe: 0x10,
  failed: 0x20,
  noarp: 0x40,
  permanent: 0x80,
};

export function decodeNeighbour(msg: rt.NeighborMessage): Neighbour | undefined {
  const { data, attrs } = msg;
  let family: NeighbourFamily | undefined = familyName(data.family);
  if (data.family === AF_BRIDGE) family = 'bridge';
  if (!family) return undefined;
  const state = STATE_NAMES.find(([k]) => data.state?.[k])?.[1] ?? 'none';
  const flags = FLAG_NAMES.filter(([k]) => data.flags?.[k]).map(([, name]) => name);
  const n: Neighbour = { ifindex: data.ifindex ?? 0, family, state, flags: flags.sort() };
  if (attrs.dst) n.dst = decodeIp(attrs.dst);
  if (attrs.lladdr) n.lladdr = decodeMac(attrs.lladdr);
  if (attrs.master) n.master = attrs.master;
  if (attrs.vlan !== undefined) n.vlan = attrs.vlan;
  return n;
}

export function decodeRoute(msg: rt.RouteMessage): Route | undefined {
  const { data, attrs } = msg;
  const family = familyName(data.family);
  if (!family) return undefined;
  const route: Route = {
    family,
    dst: decodeCidr(family, attrs.dst, data.dstLen ?? 0),
    ifindex: attrs.oif ?? 0,
    onlink: ((data.flags?.__unknown ?? 0) & RTNH_F_ONLINK) !== 0,
    // RTA_TABLE carries ids above 255, which rtm_table (a u8) cannot.
    table: attrs.table ?? data.table ?? 0,
    type: enumName(ROUTE_TYPES, libEnum(rt.RouteType, data.type)),
    protocol: enumName(PROTOCOLS, libEnum(rt.RouteProtocol, data.protocol)),
    scope: enumName(SCOPES, libEnum(rt.RouteScope, data.scope)),
  };
  if (attrs.gateway) route.gateway = decodeIp(attrs.gateway);
  if (attrs.priority !== undefined) route.metric = attrs.priority;
  return route;
}

/** True when a route is a kernel cache clone rather than a configured route. */
export function isClonedRoute(msg: rt.RouteMessage): boolean {
  return msg.data.flags?.cloned === true;
}

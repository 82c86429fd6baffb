/**
 * One read of the kernel state a reconcile needs (links, addresses, routes, neighbours, FDB), and
 * the pure views of it: what weft owns ({@link actualStateOf}) and what the underlay looks like to
 * a planner ({@link underlayOf}).
 */
import { Cidr } from '../../ipam/index.js';
import {
  MAIN_TABLE,
  type Address,
  type Link,
  type Neighbour,
  type Netlink,
  type Route,
} from '../../netlink/index.js';
import type {
  AddressEntry,
  FdbEntry,
  NeighbourEntry,
  Ownership,
  RouteEntry,
  Underlay,
} from '../backends/index.js';
import type { ActualState } from './diff-state.js';

/** The kernel tables a reconcile reads; routes of the main table only. */
export interface KernelSnapshot {
  readonly links: readonly Link[];
  readonly addresses: readonly Address[];
  readonly routes: readonly Route[];
  /** ARP and NDP entries. */
  readonly neighbours: readonly Neighbour[];
  readonly fdb: readonly Neighbour[];
}

/**
 * Dump everything once. The request socket runs dumps one at a time anyway, and five whole dumps
 * cost less than per-device ones, which the wrapper would filter from whole dumps too.
 */
export async function readKernelSnapshot(netlink: Netlink): Promise<KernelSnapshot> {
  const links = await netlink.links.list();
  const addresses = await netlink.addresses.list();
  const routes = await netlink.routes.list({ table: MAIN_TABLE });
  const neighbours = await netlink.neighbours.list();
  const fdb = await netlink.fdb.list();
  return { links, addresses, routes, neighbours, fdb };
}

const IPV6_LINK_LOCAL = Cidr.parse('fe80::/10');

/** True for an IPv6 link-local address, which the kernel puts on every device it brings up. */
export function isLinkLocal(address: string): boolean {
  return IPV6_LINK_LOCAL.contains(address);
}

/** Parses CIDRs, dropping any that do not parse (a planner bug must not stop the reconcile). */
export function parseNetworks(networks: readonly string[]): Cidr[] {
  const out: Cidr[] = [];
  for (const n of networks) {
    try {
      out.push(Cidr.parseLenient(n));
    } catch {
      /* not a network: owns nothing */
    }
  }
  return out;
}

/** True when `dst` (CIDR) lies inside one of `networks`. */
export function insideNetworks(dst: string, networks: readonly Cidr[]): boolean {
  let c: Cidr;
  try {
    c = Cidr.parseLenient(dst);
  } catch {
    return false;
  }
  return networks.some((n) => n.contains(c));
}

export function addressEntryOf(a: Address, dev: string): AddressEntry {
  return { dev, address: a.address, prefixLen: a.prefixLen };
}

export function neighbourEntryOf(n: Neighbour, dev: string): NeighbourEntry | undefined {
  if (n.dst === undefined) return undefined;
  return { dev, dst: n.dst, ...(n.lladdr !== undefined && { lladdr: n.lladdr }), state: n.state };
}

export function fdbEntryOf(n: Neighbour, dev: string): FdbEntry | undefined {
  if (n.lladdr === undefined) return undefined;
  return { dev, lladdr: n.lladdr, ...(n.dst !== undefined && { dst: n.dst }), state: n.state };
}

export function routeEntryOf(r: Route, dev: string): RouteEntry {
  return {
    dst: r.dst,
    ...(r.gateway !== undefined && { gateway: r.gateway }),
    dev,
    onlink: r.onlink,
    ...(r.metric !== undefined && { metric: r.metric }),
  };
}

/**
 * A route weft may own: a configured unicast route (not one the kernel derives from an address,
 * such as the bridge's own subnet route or an IPv6 /128 prefix route).
 */
export function isManagedRoute(r: Route): boolean {
  return r.table === MAIN_TABLE && r.type === 'unicast' && r.protocol !== 'kernel' && r.ifindex !== 0;
}

/**
 * The part of the snapshot weft owns according to `owned`: addresses (but IPv6 link-local),
 * neighbours (but the kernel's NOARP multicast ones) and FDB entries on the owned devices, and
 * main-table routes into the cluster networks out of the route devices. Nothing else on the node
 * is ever seen by the diff, so nothing else can be deleted.
 */
export function actualStateOf(snapshot: KernelSnapshot, owned: Ownership): ActualState {
  const names = new Map(snapshot.links.map((l) => [l.index, l.name]));
  const devices = new Set(owned.devices);
  const routeDevices = new Set(owned.routeDevices);
  const networks = parseNetworks(owned.networks);
  const ownedDev = (index: number, set: Set<string>): string | undefined => {
    const name = names.get(index);
    return name !== undefined && set.has(name) ? name : undefined;
  };

  const addresses: AddressEntry[] = [];
  for (const a of snapshot.addresses) {
    const dev = ownedDev(a.ifindex, devices);
    if (dev !== undefined && !isLinkLocal(a.address)) addresses.push(addressEntryOf(a, dev));
  }
  const neighbours: NeighbourEntry[] = [];
  for (const n of snapshot.neighbours) {
    const dev = ownedDev(n.ifindex, devices);
    if (dev === undefined || n.family === 'bridge' || n.state === 'noarp') continue;
    const e = neighbourEntryOf(n, dev);
    if (e) neighbours.push(e);
  }
  const fdb: FdbEntry[] = [];
  for (const n of snapshot.fdb) {
    const dev = ownedDev(n.ifindex, devices);
    if (dev === undefined || n.family !== 'bridge') continue;
    const e = fdbEntryOf(n, dev);
    if (e) fdb.push(e);
  }
  const routes: RouteEntry[] = [];
  for (const r of snapshot.routes) {
    const dev = ownedDev(r.ifindex, routeDevices);
    if (dev === undefined || !isManagedRoute(r) || !insideNetworks(r.dst, networks)) continue;
    routes.push(routeEntryOf(r, dev));
  }
  return { addresses, neighbours, fdb, routes };
}

/**
 * The underlay as the planner sees it: the networks directly connected on the external interface,
 * from its addresses and its link-scope routes without a gateway (what `ip route get` would call
 * directly reachable). Routes into the cluster networks and default routes do not count: the
 * first are weft's own, and a device default route is not one L2 network.
 */
export function underlayOf(
  snapshot: KernelSnapshot,
  ext: Link,
  clusterNetworks: readonly string[],
): Underlay {
  const networks = parseNetworks(clusterNetworks);
  const connected = new Set<string>();
  for (const a of snapshot.addresses) {
    if (a.ifindex !== ext.index || isLinkLocal(a.address)) continue;
    try {
      connected.add(Cidr.parseLenient(`${a.address}/${a.prefixLen}`).toString());
    } catch {
      /* an address the kernel reports cannot be malformed; ignore if it is */
    }
  }
  for (const r of snapshot.routes) {
    if (r.ifindex !== ext.index || r.gateway !== undefined || r.type !== 'unicast') continue;
    if (r.scope !== 'link' || r.dst.endsWith('/0') || insideNetworks(r.dst, networks)) continue;
    connected.add(r.dst);
  }
  return { dev: ext.name, connected: [...connected].sort() };
}

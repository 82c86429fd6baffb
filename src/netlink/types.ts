/**
 * Plain value objects for kernel network state, and the specs that create it. They carry no
 * methods and no Buffers, so a pure planner can build the desired state, compare it with a dump
 * field by field, and log either as JSON.
 */

/** An IP address family as iproute2 names it. */
export type IpFamily = 'inet' | 'inet6';

/** A link by kernel index or by name. Names are resolved at call time, never cached. */
export type LinkRef = number | string;

/** VXLAN attributes of a link. */
export interface VxlanInfo {
  /** VNI. */
  id: number;
  /** Source address of encapsulated packets (IPv4 or IPv6), absent when unset. */
  local?: string;
  /** Index of the underlay device (`dev` in iproute2), absent when unset. */
  dev?: number;
  /** UDP destination port. */
  port: number;
  learning: boolean;
  gbp: boolean;
}

/** A network device. */
export interface Link {
  index: number;
  name: string;
  /** Driver kind from IFLA_LINKINFO (`vxlan`, `veth`, `bridge`...); absent for loopback and hardware. */
  kind?: string;
  mtu: number;
  /** Administratively up (IFF_UP), whatever the carrier. */
  up: boolean;
  /** Hardware address, lower-case colon-separated; absent for devices without one. */
  mac?: string;
  /** Index of the master device (bridge, bond), absent when there is none. */
  master?: number;
  vxlan?: VxlanInfo;
}

/** An interface address. */
export interface Address {
  ifindex: number;
  family: IpFamily;
  /** The local address, without prefix length. */
  address: string;
  prefixLen: number;
}

/** Neighbour family: ARP (`inet`), NDP (`inet6`) or bridge FDB (`bridge`, AF_BRIDGE). */
export type NeighbourFamily = IpFamily | 'bridge';

/**
 * NUD state. The kernel stores a bitmask but keeps exactly one state bit set; `none` is 0 (FDB
 * entries learned without NUD tracking report it).
 */
export type NeighbourState =
  'none' | 'incomplete' | 'reachable' | 'stale' | 'delay' | 'probe' | 'failed' | 'noarp' | 'permanent';

/** Neighbour flags (NTF_*), named as iproute2 prints them. */
export type NeighbourFlag =
  'use' | 'self' | 'master' | 'proxy' | 'extern_learn' | 'offload' | 'sticky' | 'router';

/** A neighbour entry: an ARP/NDP entry, or a bridge/VXLAN forwarding-database entry. */
export interface Neighbour {
  ifindex: number;
  family: NeighbourFamily;
  /**
   * For `inet`/`inet6`: the neighbour's IP. For `bridge` on a VXLAN device: the remote VTEP the
   * MAC is reached through. Absent when the entry has none.
   */
  dst?: string;
  /** Link-layer address; absent for incomplete entries. */
  lladdr?: string;
  state: NeighbourState;
  /** Sorted. */
  flags: NeighbourFlag[];
  /** Bridge FDB: index of the bridge the port belongs to (NDA_MASTER). */
  master?: number;
  /** Bridge FDB: VLAN id. */
  vlan?: number;
}

/** Route protocol (who installed the route), by iproute2 name, or the raw number when unnamed. */
export type RouteProtocol =
  'unspec' | 'redirect' | 'kernel' | 'boot' | 'static' | 'ra' | 'dhcp' | 'bgp' | 'ospf' | number;

/** Route scope, by iproute2 name, or the raw number. */
export type RouteScope = 'universe' | 'site' | 'link' | 'host' | 'nowhere' | number;

/** Route type (RTN_*), by iproute2 name, or the raw number. */
export type RouteType =
  | 'unicast'
  | 'local'
  | 'broadcast'
  | 'anycast'
  | 'multicast'
  | 'blackhole'
  | 'unreachable'
  | 'prohibit'
  | 'throw'
  | number;

/** A route. */
export interface Route {
  family: IpFamily;
  /** Destination in CIDR form, e.g. `10.244.2.0/24`; the default route is `0.0.0.0/0` or `::/0`. */
  dst: string;
  gateway?: string;
  /** Output device index; 0 when the route has none (blackhole, multipath). */
  ifindex: number;
  /** The gateway is taken as directly reachable on `ifindex` (RTNH_F_ONLINK). */
  onlink: boolean;
  table: number;
  type: RouteType;
  protocol?: RouteProtocol;
  scope?: RouteScope;
  /** Route priority (`metric` in iproute2). */
  metric?: number;
}

/** The routing table the kernel and iproute2 use when none is named. */
export const MAIN_TABLE = 254;

/** Options for {@link Links.createVxlan} and {@link Links.ensureVxlan}. */
export interface VxlanOptions {
  /** Device name, e.g. `flannel.1` (at most 15 bytes). */
  name: string;
  /** VNI, 0..16777215. */
  id: number;
  /** Source IP of encapsulated packets (the node's public IP). */
  local?: string;
  /** Underlay device; binds the tunnel to it, as `ip link add ... dev eth0` does. */
  dev?: LinkRef;
  /** UDP destination port. Default: the kernel's (8472, as flannel expects). */
  port?: number;
  /** Learn remote MACs from received packets. Default false: flannel programs the FDB itself. */
  learning?: boolean;
  /** VXLAN Group Based Policy extension. Default false. */
  gbp?: boolean;
  /** MTU. Default: the kernel's (underlay MTU − 50 when `dev` is set). */
  mtu?: number;
  /** Hardware address. Default: random, chosen by the kernel. */
  mac?: string;
}

/** Options for {@link Links.createVeth}. */
export interface VethOptions {
  /** Name of the first end. */
  name: string;
  /** Name of the peer end. */
  peer: string;
  /** MTU of both ends. */
  mtu?: number;
}

/** Options for {@link Links.createBridge}. */
export interface BridgeOptions {
  name: string;
  mtu?: number;
}

/** An address to add or delete. */
export interface AddressSpec {
  dev: LinkRef;
  /** IPv4 or IPv6 address without prefix length. */
  address: string;
  prefixLen: number;
}

/** An ARP/NDP entry to add, replace or delete. */
export interface NeighbourSpec {
  dev: LinkRef;
  /** The neighbour's IP; its family selects ARP or NDP. */
  dst: string;
  /** Required to add or replace; ignored on delete. */
  lladdr?: string;
  /** Default `permanent`: never aged out or re-resolved, as flannel's entries must be. */
  state?: NeighbourState;
}

/** A bridge/VXLAN forwarding-database entry to add, replace or delete (NTF_SELF, on the device). */
export interface FdbSpec {
  dev: LinkRef;
  lladdr: string;
  /** Remote VTEP IP that frames for `lladdr` are sent to. */
  dst?: string;
  /** Default `permanent`. */
  state?: NeighbourState;
}

/** A route to add, replace or delete. */
export interface RouteSpec {
  /** Destination in CIDR form. */
  dst: string;
  gateway?: string;
  /** Output device. Required unless the gateway alone identifies the path. */
  dev?: LinkRef;
  /** Do not require the gateway to be on a connected subnet (flannel's VXLAN routes need this). */
  onlink?: boolean;
  /** Default {@link MAIN_TABLE}. */
  table?: number;
  metric?: number;
  /** Default `boot`, as iproute2 uses. Ignored on delete. */
  protocol?: RouteProtocol;
  /** Default `universe` with a gateway, `link` without. Ignored on delete. */
  scope?: RouteScope;
  /** Default `unicast`. */
  type?: RouteType;
}

/** Options of delete operations. */
export interface DeleteOptions {
  /**
   * Succeed when the object is already gone (ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL), so a
   * reconciler can converge without checking first.
   */
  ignoreMissing?: boolean;
}

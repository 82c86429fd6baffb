/**
 * The kernel state a backend wants, as plain values naming devices by name. A backend's planner
 * returns one; the shared reconciler (src/flanneld/dataplane) compares it with a dump and applies
 * the difference. Keeping it data means planners stay pure and every backend gets drift repair,
 * stale-entry removal and replay after a device loss for free.
 */

/** An interface address: `<address>/<prefixLen> dev <dev>`. */
export interface AddressEntry {
  readonly dev: string;
  readonly address: string;
  readonly prefixLen: number;
}

/** An ARP/NDP entry. Desired entries are always `nud permanent`; `state` is set on dumped ones. */
export interface NeighbourEntry {
  readonly dev: string;
  readonly dst: string;
  /** Always set on desired entries; absent on incomplete dumped ones. */
  readonly lladdr?: string;
  readonly state?: string;
}

/** A VXLAN forwarding-database entry (`bridge fdb ... self`), `permanent` when desired. */
export interface FdbEntry {
  readonly dev: string;
  readonly lladdr: string;
  /** The remote VTEP; always set on desired entries. */
  readonly dst?: string;
  readonly state?: string;
}

/** A main-table unicast route. */
export interface RouteEntry {
  readonly dst: string;
  readonly gateway?: string;
  readonly dev: string;
  readonly onlink: boolean;
  /** Only on dumped routes (IPv6 routes get 1024 from the kernel); never planned. */
  readonly metric?: number;
}

/**
 * What the reconciler may delete: the objects weft owns. Anything outside is never touched, so
 * a node's other routes and neighbours survive every reconcile.
 */
export interface Ownership {
  /**
   * Devices that belong to the backend entirely: every address on them (except IPv6 link-local),
   * every permanent neighbour and every permanent FDB entry is weft's.
   */
  readonly devices: readonly string[];
  /** Main-table routes out of these devices whose destination lies in one of {@link networks} are weft's. */
  readonly routeDevices: readonly string[];
  /** The cluster networks (`Network`, `IPv6Network`) in CIDR form. */
  readonly networks: readonly string[];
}

/** A lease, or one family of it, that the planner did not program, and why. */
export interface LeaseSkip {
  /** The lease key (or registry path for an unreadable entry). */
  readonly key: string;
  /** Set when only this family of a dual-stack lease was skipped. */
  readonly family?: 4 | 6;
  /** A sentence naming what is wrong, e.g. the PublicIP that is not directly reachable. */
  readonly reason: string;
}

/** Everything a backend wants in the kernel for one set of leases. */
export interface DesiredState {
  readonly addresses: readonly AddressEntry[];
  /** In the order they are to be created (per remote: neighbour, FDB, route). */
  readonly neighbours: readonly NeighbourEntry[];
  readonly fdb: readonly FdbEntry[];
  readonly routes: readonly RouteEntry[];
  readonly owned: Ownership;
  /** Leases (or families of them) not programmed, in key order. */
  readonly skipped: readonly LeaseSkip[];
  /** Keys of the remote leases with at least one entry programmed, sorted. */
  readonly programmed: readonly string[];
}

/** A desired state with nothing in it and nothing owned. */
export function emptyDesiredState(skipped: readonly LeaseSkip[] = []): DesiredState {
  return {
    addresses: [],
    neighbours: [],
    fdb: [],
    routes: [],
    owned: { devices: [], routeDevices: [], networks: [] },
    skipped,
    programmed: [],
  };
}

/** Skips in key order, then family; stable, so one lease's reasons keep their order. */
export function sortSkips(skips: readonly LeaseSkip[]): LeaseSkip[] {
  return [...skips].sort((a, b) =>
    a.key < b.key ? -1 : a.key > b.key ? 1 : (a.family ?? 0) - (b.family ?? 0),
  );
}

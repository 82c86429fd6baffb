/**
 * The backend contract. A backend does two things: `prepare` creates (or adopts) its devices and
 * says what the node publishes in its lease, and `plan` maps the leases to a {@link DesiredState}
 * without any I/O. The dataplane's shared reconciler does the rest (dump, diff, apply, repair), so
 * a new backend (the native `udp` one) is a factory registered by name and nothing else.
 */
import type { LeaseAttrs, NetConfig, SubnetKey } from '../../ipam/index.js';
import type { Logger } from '../../log/index.js';
import type { Registry } from '../../metrics/index.js';
import type { Netlink } from '../../netlink/index.js';
import type { DesiredState } from './desired-state.js';

/**
 * A node lease as the planner needs it. The lease manager's `Lease` and `ParsedLease` fit as they
 * are; only these three fields are read.
 */
export interface NodeLease {
  /** The lease key, e.g. `10.244.3.0-24`; identifies the lease in every message. */
  readonly key: string;
  readonly subnets: SubnetKey;
  readonly attrs: LeaseAttrs;
}

/** The interface that carries the overlay (flannel's `--iface`). */
export interface ExternalInterface {
  readonly name: string;
  readonly index: number;
  /** Its IPv4 address: the tunnel source (vxlan `local`). Required when IPv4 is enabled. */
  readonly ip?: string;
  /** Its IPv6 address: the IPv6 tunnel source. Required when IPv6 is enabled. */
  readonly ipv6?: string;
  readonly mtu: number;
}

/** What a planner may know of the underlay; the reconciler reads it from the kernel before each plan. */
export interface Underlay {
  /** The external interface's name. */
  readonly dev: string;
  /**
   * Networks directly connected on it (its address prefixes and its link-scope routes), CIDR
   * form. A remote PublicIP inside one is reachable without a router: host-gw and DirectRouting
   * need that.
   */
  readonly connected: readonly string[];
}

/** Input of {@link Backend.plan}. */
export interface PlanInput {
  readonly config: NetConfig;
  readonly underlay: Underlay;
  /** This node's lease; never programmed as a remote. */
  readonly own: NodeLease;
  /** Every lease of the cluster, own included or not, in any order, possibly with bad ones. */
  readonly leases: readonly NodeLease[];
}

/** A device a backend created and keeps; the reconciler recreates it through `prepare` when it drifts. */
export interface PreparedDevice {
  readonly name: string;
  /** Link kind (`vxlan`, `tun`). */
  readonly kind: string;
  readonly mtu: number;
  /** Hardware address the device must keep (it is published in the lease). */
  readonly mac?: string;
}

/** What {@link Backend.prepare} reports: the lease attributes to publish and the MTU for subnet.env. */
export interface PreparedBackend {
  /** `BackendType` of the lease; absent for backends that write none (udp, alloc). */
  readonly backendType?: string;
  /** `BackendData` of the lease, e.g. vxlan's `{"VNI":1,"VtepMAC":"…"}`. */
  readonly backendData?: unknown;
  readonly backendV6Data?: unknown;
  /** MTU for pods (FLANNEL_MTU). */
  readonly mtu: number;
  readonly devices: readonly PreparedDevice[];
}

/** What a backend factory is given. */
export interface BackendContext {
  /** The network config; `config.backend` holds this backend's options. */
  readonly config: NetConfig;
  /** The interface that carries the overlay. */
  readonly extIface: ExternalInterface;
  /** For `prepare` only: planning is pure. */
  readonly netlink: Netlink;
  readonly logger: Logger;
  /** Where a backend registers its own metrics (the udp forwarder's counters); none in tests. */
  readonly metrics?: Registry;
}

/** One dataplane implementation, selected by `Backend.Type` of the network config. */
export interface Backend {
  /** The config type it implements, e.g. `vxlan`. */
  readonly type: string;
  /**
   * Create or adopt the backend's devices and report the lease attributes. Idempotent: called
   * once before the lease is written, and again whenever a device vanished or drifted. Must
   * report the same attributes every time (a vxlan device keeps its MAC).
   */
  prepare(): Promise<PreparedBackend>;
  /**
   * The desired kernel state for a set of leases. Pure and deterministic (same input, same
   * output, whatever the lease order) and total: a bad lease is skipped with a reason, never
   * thrown.
   */
  plan(input: PlanInput): DesiredState;
  /**
   * State outside the kernel tables the reconciler manages (a userspace forwarder's subnet
   * table), brought up to date after each reconcile.
   */
  sync?(input: PlanInput, desired: DesiredState): Promise<void>;
  /** Release what the backend holds (not the kernel state: traffic keeps flowing across restarts). */
  close?(): Promise<void>;
}

/** Builds a backend; registered by type with `registerBackend`. */
export type BackendFactory = (ctx: BackendContext) => Backend;

/** The attributes a node publishes: its public addresses plus the backend's part. */
export function leaseAttrsOf(prepared: PreparedBackend, publicIP: string, publicIPv6?: string): LeaseAttrs {
  return {
    publicIP,
    ...(publicIPv6 !== undefined && { publicIPv6 }),
    ...(prepared.backendType !== undefined && { backendType: prepared.backendType }),
    ...(prepared.backendData !== undefined && { backendData: prepared.backendData }),
    ...(prepared.backendV6Data !== undefined && { backendV6Data: prepared.backendV6Data }),
  };
}

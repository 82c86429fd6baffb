/**
 * The checks every backend applies to the leases of other nodes before programming them, so a
 * bad lease costs its own entries and nothing else: the own lease is left out, and a lease with
 * the wrong backend, a subnet outside the network, of another length than the config's SubnetLen
 * (a `-17` lease would be routed and hide every real lease inside it) or overlapping another, or
 * a missing or foreign-family PublicIP is skipped with a reason. Pure and independent of the lease order:
 * leases are taken in key order, so of two overlapping leases the lower key always wins.
 */
import { Cidr, canonicalIp, ipFamily, type NetConfig } from '../../ipam/index.js';
import { messageOf } from '../../errors/index.js';
import type { NodeLease, PlanInput } from './backend.js';
import type { LeaseSkip } from './desired-state.js';

/** One family of a remote lease that passed the common checks. */
export interface RemoteLease {
  readonly key: string;
  readonly family: 4 | 6;
  readonly subnet: Cidr;
  /** PublicIP (IPv4) or PublicIPv6, canonical. */
  readonly publicIP: string;
  /** BackendData (IPv4) or BackendV6Data, as published. */
  readonly backendData: unknown;
}

/** Result of {@link selectRemoteLeases}. */
export interface LeaseSelection {
  /** This node's subnet per family, when its lease is usable. */
  readonly own: { readonly 4?: Cidr; readonly 6?: Cidr };
  /** Usable remotes, by key then family. */
  readonly remotes: readonly RemoteLease[];
  readonly skipped: readonly LeaseSkip[];
}

/** Options of {@link selectRemoteLeases}. */
export interface SelectOptions {
  /** The BackendType remote leases must carry; undefined when the backend writes none (udp). */
  readonly backendType: string | undefined;
  /** Backend name for messages. */
  readonly backendName: string;
}

/** A family of the cluster: its number and network. */
export interface ClusterFamily {
  readonly family: 4 | 6;
  readonly network: Cidr;
  /** The prefix length of every node's subnet (SubnetLen / IPv6SubnetLen). */
  readonly subnetLen: number;
}

/** The families a config enables, IPv4 first. */
export function clusterFamilies(config: NetConfig): ClusterFamily[] {
  const out: ClusterFamily[] = [];
  if (config.ipv4) out.push({ family: 4, network: config.ipv4.network, subnetLen: config.ipv4.subnetLen });
  if (config.ipv6) out.push({ family: 6, network: config.ipv6.network, subnetLen: config.ipv6.subnetLen });
  return out;
}

/** Thrown inside the per-lease checks; its message becomes the skip reason. */
class SkipReason extends Error {}

/** Splits the leases into this node's subnets, usable remotes and skipped ones. Never throws. */
export function selectRemoteLeases(input: PlanInput, opts: SelectOptions): LeaseSelection {
  const families = clusterFamilies(input.config);
  const skipped: LeaseSkip[] = [];
  const ownKey = keyOf(input.own);
  const own: { 4?: Cidr; 6?: Cidr } = {};
  const ownPublic: { 4?: string; 6?: string } = {};
  for (const { family, network } of families) {
    try {
      own[family] = subnetOf(input.own, family, network);
      ownPublic[family] = publicIpOf(input.own, family);
    } catch (err) {
      skipped.push({ key: ownKey ?? '(own lease)', family, reason: `this node's lease: ${messageOf(err)}` });
    }
  }

  const remotes: RemoteLease[] = [];
  const taken = new Map<4 | 6, SubnetIndex>(families.map((f) => [f.family, new SubnetIndex()]));
  let previousKey: string | undefined;
  for (const lease of sortedLeases(input.leases)) {
    const key = keyOf(lease);
    if (key === undefined) {
      skipped.push({ key: '(no key)', reason: 'the lease has no key' });
      continue;
    }
    if (key === ownKey) continue;
    if (key === previousKey) {
      skipped.push({ key, reason: 'another lease has the same key' });
      continue;
    }
    previousKey = key;
    try {
      if (typeof lease.attrs !== 'object' || lease.attrs === null) throw new SkipReason('has no attributes');
      const type = lease.attrs.backendType;
      if (type !== opts.backendType) {
        throw new SkipReason(
          `BackendType ${type === undefined ? '(none)' : JSON.stringify(type)} is not this cluster's backend ${opts.backendName}`,
        );
      }
    } catch (err) {
      skipped.push({ key, reason: messageOf(err) });
      continue;
    }
    for (const { family, network, subnetLen } of families) {
      try {
        const subnet = subnetOf(lease, family, network);
        // flannel leases only SubnetLen-sized subnets; any other length is not a node's lease.
        if (subnet.prefixLength !== subnetLen) {
          const field = family === 4 ? 'SubnetLen' : 'IPv6SubnetLen';
          throw new SkipReason(`subnet ${subnet} is not a /${subnetLen} (the config's ${field})`);
        }
        const publicIP = publicIpOf(lease, family);
        const mine = own[family];
        if (mine && subnet.overlaps(mine)) {
          throw new SkipReason(`subnet ${subnet} overlaps this node's subnet ${mine}`);
        }
        if (publicIP === ownPublic[family]) {
          throw new SkipReason(`PublicIP ${publicIP} is this node's (a stale lease of this node?)`);
        }
        const index = taken.get(family);
        const clash = index?.overlapping(subnet);
        if (clash !== undefined) throw new SkipReason(`subnet ${subnet} overlaps lease ${clash}`);
        index?.add(subnet, key);
        const attrs = lease.attrs;
        remotes.push({
          key,
          family,
          subnet,
          publicIP,
          backendData: family === 4 ? attrs.backendData : attrs.backendV6Data,
        });
      } catch (err) {
        skipped.push({ key, ...(families.length > 1 && { family }), reason: messageOf(err) });
      }
    }
  }
  return { own, remotes, skipped };
}

function keyOf(lease: NodeLease | undefined): string | undefined {
  try {
    const key: unknown = lease?.key;
    return typeof key === 'string' && key !== '' ? key : undefined;
  } catch {
    return undefined;
  }
}

/** Leases in key order; ties (duplicate keys) by content, so the input order never matters. */
function sortedLeases(leases: readonly NodeLease[]): NodeLease[] {
  const list = Array.isArray(leases) ? [...(leases as NodeLease[])] : [];
  const sortKey = new Map(list.map((l) => [l, [keyOf(l) ?? '', safeJson(l)] as const]));
  return list.sort((a, b) => {
    const [ka, ja] = sortKey.get(a) ?? ['', ''];
    const [kb, jb] = sortKey.get(b) ?? ['', ''];
    return ka < kb ? -1 : ka > kb ? 1 : ja < jb ? -1 : ja > jb ? 1 : 0;
  });
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    return '';
  }
}

function subnetOf(lease: NodeLease, family: 4 | 6, network: Cidr): Cidr {
  const raw: unknown = family === 4 ? lease.subnets?.ipv4 : lease.subnets?.ipv6;
  if (raw === undefined || raw === null) throw new SkipReason(`has no IPv${family} subnet`);
  let subnet: Cidr;
  try {
    subnet = Cidr.parse(String(raw));
  } catch (err) {
    throw new SkipReason(`subnet: ${messageOf(err)}`);
  }
  if (subnet.family !== family) throw new SkipReason(`subnet ${subnet} is not an IPv${family} network`);
  if (!network.contains(subnet)) {
    throw new SkipReason(`subnet ${subnet} is outside the cluster network ${network}`);
  }
  return subnet;
}

function publicIpOf(lease: NodeLease, family: 4 | 6): string {
  const field = family === 4 ? 'PublicIP' : 'PublicIPv6';
  const raw: unknown = family === 4 ? lease.attrs?.publicIP : lease.attrs?.publicIPv6;
  if (typeof raw !== 'string' || ipFamily(raw) !== family) {
    throw new SkipReason(
      `${field} ${raw === undefined ? 'is missing' : `${JSON.stringify(raw)} is not an IPv${family} address`}`,
    );
  }
  const ip = canonicalIp(raw);
  if (ip === '0.0.0.0' || ip === '::') throw new SkipReason(`${field} is unset (${ip})`);
  return ip;
}

/**
 * Subnets already taken, by prefix length, for overlap checks that stay near-linear with
 * thousands of leases: two networks overlap exactly when the shorter contains the longer.
 */
class SubnetIndex {
  readonly #byLength = new Map<number, Map<bigint, string>>();

  add(subnet: Cidr, key: string): void {
    let m = this.#byLength.get(subnet.prefixLength);
    if (!m) this.#byLength.set(subnet.prefixLength, (m = new Map()));
    m.set(subnet.start, key);
  }

  /** The key of a taken subnet overlapping `subnet`, if any. */
  overlapping(subnet: Cidr): string | undefined {
    for (const [len, m] of this.#byLength) {
      if (len <= subnet.prefixLength) {
        const hostBits = BigInt(subnet.bits - len);
        const hit = m.get((subnet.start >> hostBits) << hostBits);
        if (hit !== undefined) return hit;
      } else {
        for (const [start, key] of m) if (start >= subnet.start && start <= subnet.end) return key;
      }
    }
    return undefined;
  }
}

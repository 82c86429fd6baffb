/**
 * Choosing a node's subnet, as flannel does: among the first free subnets from SubnetMin up, pick
 * one at random, so nodes starting together rarely race for the same key.
 */
import { ErrorCodes, WeftError } from '../errors/index.js';
import type { Cidr } from './cidr.js';
import type { NetConfig, SubnetPool } from './net-config.js';
import type { SubnetKey } from './subnet-key.js';

/** How many free subnets flannel gathers before picking one at random. */
export const CANDIDATE_LIMIT = 100;

/**
 * A free subnet of `pool`: one of the first {@link CANDIDATE_LIMIT} subnets from subnetMin to
 * subnetMax that overlap nothing in `taken` (leases of the other family, or of other lengths, are
 * fine), chosen with `random` (a `Math.random`-like function). Costs O(t log t) for t taken
 * subnets, however large the pool. Throws WEFT_OUT_OF_SUBNETS when none is free.
 */
export function allocateSubnet(
  pool: SubnetPool,
  taken: Iterable<Cidr>,
  random: () => number = Math.random,
): Cidr {
  const { network, subnetLen } = pool;
  const last = network.subnetIndexOf(subnetLen, pool.subnetMax.start);
  const free: bigint[] = [];
  let next = network.subnetIndexOf(subnetLen, pool.subnetMin.start);
  const takeUntil = (end: bigint) => {
    for (; next < end && next <= last && free.length < CANDIDATE_LIMIT; next++) free.push(next);
  };
  for (const [lo, hi] of blockedIndexRanges(network, subnetLen, taken)) {
    takeUntil(lo);
    if (free.length === CANDIDATE_LIMIT || next > last) break;
    if (next <= hi) next = hi + 1n;
  }
  takeUntil(last + 1n);

  if (free.length === 0) {
    throw new WeftError(ErrorCodes.OUT_OF_SUBNETS, 'out of subnets', {
      network: network.toString(),
      subnetMin: pool.subnetMin.toString(),
      subnetMax: pool.subnetMax.toString(),
    });
  }
  const pick = free[Math.min(free.length - 1, Math.floor(random() * free.length))] as bigint;
  return network.subnetAt(subnetLen, pick);
}

/** Inclusive ranges of subnet indexes that `taken` overlaps, sorted by start. */
function blockedIndexRanges(network: Cidr, subnetLen: number, taken: Iterable<Cidr>): [bigint, bigint][] {
  const ranges: [bigint, bigint][] = [];
  for (const cidr of taken) {
    // Two networks overlap only when one contains the other.
    if (cidr.contains(network)) return [[0n, network.subnetCount(subnetLen) - 1n]];
    if (network.contains(cidr)) {
      ranges.push([network.subnetIndexOf(subnetLen, cidr.start), network.subnetIndexOf(subnetLen, cidr.end)]);
    }
  }
  return ranges.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * True when `subnet` is still a valid lease of `pool`: same family, inside the network, of
 * length subnetLen, and between subnetMin and subnetMax. A lease that no longer fits (the config
 * changed) must not be reused.
 */
export function subnetFitsPool(pool: SubnetPool, subnet: Cidr): boolean {
  return (
    subnet.prefixLength === pool.subnetLen &&
    pool.network.contains(subnet) &&
    subnet.start >= pool.subnetMin.start &&
    subnet.start <= pool.subnetMax.start
  );
}

/**
 * True when a lease's subnets match the config: a fitting subnet for each enabled family and
 * none for a disabled one (its key would differ from the one weft writes).
 */
export function leaseFitsConfig(config: NetConfig, key: SubnetKey): boolean {
  const fits = (pool: SubnetPool | undefined, subnet: Cidr | undefined) =>
    pool === undefined ? subnet === undefined : subnet !== undefined && subnetFitsPool(pool, subnet);
  return fits(config.ipv4, key.ipv4) && fits(config.ipv6, key.ipv6);
}

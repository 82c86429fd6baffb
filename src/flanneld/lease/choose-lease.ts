/**
 * The lease decision of weft-flanneld, as a pure function of one listing of
 * `<prefix>/subnets/`: which lease this node takes, in flannel's order (its own lease by
 * PublicIP, then the subnet of the previous subnet.env, then a fresh one). No I/O: the
 * {@link LeaseManager} lists, calls this, and writes what it decided.
 */
import { ErrorCodes, WeftError, isWeftError, messageOf } from '../../errors/index.js';
import {
  Cidr,
  DEFAULT_PREFIX,
  allocateSubnet,
  decodeLeaseAttrs,
  encodeLeaseAttrs,
  formatSubnetKey,
  leaseFitsConfig,
  parseSubnetKey,
  subnetFitsPool,
  subnetKeyOfPath,
  subnetPath,
  type LeaseAttrs,
  type NetConfig,
  type SubnetKey,
  type SubnetPool,
} from '../../ipam/index.js';
import type { KeyValue } from '../../registry/index.js';

/** A lease key read from the registry, with its value decoded. */
export interface ParsedLease {
  /** Registry path, `<prefix>/subnets/<key>`. */
  readonly path: string;
  /** The key part, e.g. `10.244.3.0-24`. */
  readonly key: string;
  readonly subnets: SubnetKey;
  readonly attrs: LeaseAttrs;
  /** The value as stored. */
  readonly value: string;
  /** False for a reservation: a key an operator pinned to a node, without a TTL. */
  readonly ttlBound: boolean;
  readonly modRevision: number;
}

/** An entry of the listing that is not a usable lease. */
export interface SkippedLease {
  readonly path: string;
  readonly error: WeftError;
  /**
   * The subnets the key still appears to name (best effort, host bits cleared); they count as
   * taken, since a flannel node may well be using them.
   */
  readonly subnets: readonly Cidr[];
}

/** What the registry holds under `<prefix>/subnets/`, split into leases and the rest. */
export interface LeaseListing {
  readonly leases: readonly ParsedLease[];
  readonly skipped: readonly SkippedLease[];
}

/**
 * Splits a listing of `<prefix>/subnets/` into decoded leases and skipped entries (malformed
 * key, nested path, undecodable value). A key that parses but holds garbage is skipped as a
 * lease yet its subnets stay taken.
 */
export function readLeaseListing(
  entries: readonly KeyValue[],
  prefix: string = DEFAULT_PREFIX,
): LeaseListing {
  const leases: ParsedLease[] = [];
  const skipped: SkippedLease[] = [];
  for (const kv of entries) {
    let key: string;
    let subnets: SubnetKey;
    try {
      key = subnetKeyOfPath(kv.key, prefix);
      subnets = parseSubnetKey(key);
    } catch (err) {
      skipped.push({ path: kv.key, error: asWeftError(err), subnets: lenientSubnets(kv.key, prefix) });
      continue;
    }
    try {
      const attrs = decodeLeaseAttrs(kv.value, key);
      leases.push({
        path: kv.key,
        key,
        subnets,
        attrs,
        value: kv.value,
        ttlBound: kv.ttlBound,
        modRevision: kv.modRevision,
      });
    } catch (err) {
      skipped.push({ path: kv.key, error: asWeftError(err), subnets: subnetList(subnets) });
    }
  }
  return { leases, skipped };
}

/**
 * True when a lease was published by the node that publishes `self`: the same PublicIP for
 * each enabled family (flannel's identity of a node). An IPv6-only node writes PublicIP
 * `0.0.0.0`, so only enabled families are compared.
 */
export function isOwnLease(config: NetConfig, lease: LeaseAttrs, self: LeaseAttrs): boolean {
  if (config.ipv4 && lease.publicIP !== self.publicIP) return false;
  if (config.ipv6 && (lease.publicIPv6 === undefined || lease.publicIPv6 !== self.publicIPv6)) return false;
  return true;
}

/** Input of {@link chooseLease}. */
export interface ChooseLeaseInput {
  readonly config: NetConfig;
  /** One listing of `<prefix>/subnets/`, as the store returns it. */
  readonly entries: readonly KeyValue[];
  /** Registry prefix; default flannel's `/coreos.com/network`. */
  readonly prefix?: string;
  /**
   * What this node publishes; its PublicIP (and PublicIPv6 when IPv6 is enabled) identifies the
   * node's own lease. Addresses in canonical form, as {@link encodeLeaseAttrs} writes them.
   */
  readonly attrs: LeaseAttrs;
  /** The lease of the previous subnet.env, reused when free and still fitting. */
  readonly previous?: SubnetKey;
  /** Keys to treat as taken although absent from the listing (creates lost to another node). */
  readonly exclude?: ReadonlySet<string>;
  /** `Math.random`-like source for the pick among free subnets. */
  readonly random?: () => number;
}

/** Why the previous subnet.env lease was not reused. */
export interface PreviousRejection {
  readonly subnet: string;
  readonly reason: string;
}

interface ChoiceCommon {
  /** Entries that are not usable leases; for the caller to log. */
  readonly skipped: readonly SkippedLease[];
  /**
   * This node's TTL-bound leases that it will not use (not fitting the config any more, or
   * duplicates): delete them at their modRevision so the node never holds two.
   */
  readonly stale: readonly ParsedLease[];
  /**
   * This node's reservations that it will not use: they are an operator's, so they are left
   * alone; for the caller to warn about.
   */
  readonly ignoredReservations: readonly ParsedLease[];
  /** Set when a previous subnet was given and could not be reused. */
  readonly previousRejected?: PreviousRejection;
}

/** The decision of {@link chooseLease}. */
export type LeaseChoice =
  | (ChoiceCommon & {
      readonly kind: 'reuse';
      readonly lease: ParsedLease;
      /**
       * Write the lease (compare-and-swap at its modRevision): always for a TTL-bound lease, whose
       * TTL is refreshed; for a reservation only when its value differs, and then without a TTL.
       */
      readonly needsUpdate: boolean;
    })
  | (ChoiceCommon & {
      readonly kind: 'create';
      readonly key: string;
      readonly path: string;
      readonly subnets: SubnetKey;
      /** `previous` when at least one family's subnet came from subnet.env. */
      readonly source: 'previous' | 'allocated';
    })
  | (ChoiceCommon & { readonly kind: 'error'; readonly error: WeftError });

/**
 * Chooses this node's lease from one listing: (1) its own lease by PublicIP when it fits the
 * config (a reservation first, then the previous subnet.env one, then the first by key);
 * (2) the previous subnet.env subnet of each family when it fits and nothing overlaps it;
 * (3) a free subnet per family among the first 100 from SubnetMin. Every subnet named by a key,
 * readable or not, and every excluded key counts as taken. Out of subnets is returned as
 * `kind: 'error'` so the skipped entries can still be logged.
 */
export function chooseLease(input: ChooseLeaseInput): LeaseChoice {
  const { config, attrs } = input;
  const prefix = input.prefix ?? DEFAULT_PREFIX;
  const { leases, skipped } = readLeaseListing(input.entries, prefix);

  const own = leases.filter((l) => isOwnLease(config, l.attrs, attrs));
  const fitting = own.filter((l) => leaseFitsConfig(config, l.subnets));
  const previousKey = input.previous ? safeFormat(input.previous) : undefined;
  const reuse = fitting.find((l) => !l.ttlBound) ?? fitting.find((l) => l.key === previousKey) ?? fitting[0];
  const unused = own.filter((l) => l !== reuse);
  const common = {
    skipped,
    stale: unused.filter((l) => l.ttlBound),
    ignoredReservations: unused.filter((l) => !l.ttlBound),
  };

  if (reuse) {
    const needsUpdate = reuse.ttlBound || reuse.value !== encodeLeaseAttrs(attrs);
    return { kind: 'reuse', lease: reuse, needsUpdate, ...common };
  }

  const taken: Cidr[] = [];
  for (const l of leases) taken.push(...subnetList(l.subnets));
  for (const s of skipped) taken.push(...s.subnets);
  for (const key of input.exclude ?? []) taken.push(...lenientKeySubnets(key));

  let previousRejected: PreviousRejection | undefined;
  let fromPrevious = false;
  const pick = (pool: SubnetPool | undefined, previous: Cidr | undefined): Cidr | undefined => {
    if (!pool) return undefined;
    if (previous) {
      const holder = taken.find((t) => t.overlaps(previous));
      if (!subnetFitsPool(pool, previous)) {
        previousRejected ??= { subnet: previous.toString(), reason: 'it does not fit the network config' };
      } else if (holder) {
        previousRejected ??= { subnet: previous.toString(), reason: `${holder.toString()} is taken` };
      } else {
        fromPrevious = true;
        return previous;
      }
    }
    return allocateSubnet(pool, taken, input.random);
  };

  try {
    const ipv4 = pick(config.ipv4, input.previous?.ipv4);
    const ipv6 = pick(config.ipv6, input.previous?.ipv6);
    const subnets: SubnetKey = { ...(ipv4 && { ipv4 }), ...(ipv6 && { ipv6 }) };
    const key = formatSubnetKey(subnets);
    return {
      kind: 'create',
      key,
      path: subnetPath(key, prefix),
      subnets,
      source: fromPrevious ? 'previous' : 'allocated',
      ...common,
      ...(previousRejected && { previousRejected }),
    };
  } catch (err) {
    return {
      kind: 'error',
      error: asWeftError(err),
      ...common,
      ...(previousRejected && { previousRejected }),
    };
  }
}

function subnetList(key: SubnetKey): Cidr[] {
  return [key.ipv4, key.ipv6].filter((c): c is Cidr => c !== undefined);
}

function safeFormat(key: SubnetKey): string | undefined {
  try {
    return formatSubnetKey(key);
  } catch {
    return undefined;
  }
}

/** The subnets a malformed lease path seems to name, so that nothing overlapping it is handed out. */
function lenientSubnets(path: string, prefix: string): Cidr[] {
  let key: string;
  try {
    key = subnetKeyOfPath(path, prefix);
  } catch {
    return [];
  }
  return lenientKeySubnets(key);
}

/** Reads `<addr>-<len>` parts the way flannel's regexp-based parser would, host bits cleared. */
function lenientKeySubnets(key: string): Cidr[] {
  const out: Cidr[] = [];
  for (const part of key.split('&')) {
    const dash = part.lastIndexOf('-');
    if (dash <= 0) continue;
    try {
      out.push(Cidr.parseLenient(`${part.slice(0, dash).trim()}/${part.slice(dash + 1).trim()}`));
    } catch {
      // Names no subnet at all: nothing to keep free.
    }
  }
  return out;
}

function asWeftError(err: unknown): WeftError {
  if (isWeftError(err)) return err;
  return new WeftError(ErrorCodes.INVALID_VALUE, messageOf(err), {}, { cause: err });
}

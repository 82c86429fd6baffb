/**
 * ClusterIP and nodePort allocation for Services, as kube-apiserver does it but with the registry
 * as the only source of truth: every allocated value is one key,
 * `<prefix>/allocations/clusterips/<ip>` or `<prefix>/allocations/nodeports/<port>`, whose value
 * names the owner (`<namespace>/<name>`). A value is taken with the store's create-if-absent, so
 * two concurrent allocators (two `weftctl apply` runs on different machines) can never both get
 * it: one create wins, the other moves on to the next candidate.
 *
 * A crashed apply leaves a key whose owner never got (or no longer has) the value. Such a key is
 * reclaimed, but only when the range offers nothing free, only when the owner is known not to
 * hold the value (the caller's `ownerHolds`), and only when that is still true after a grace
 * period in which the key did not change: an allocation made by an apply still in flight
 * (allocated, service not yet written) is thereby left alone, as kube's repair loop leaves an
 * address alone until it has seen it leaked several times.
 */
import { sleep } from '../backoff/index.js';
import { ErrorCodes, WeftError, invalid } from '../errors/index.js';
import type { KeyValue, Store } from '../registry/index.js';
import { Cidr } from './cidr.js';
import { bigIntToIp, canonicalIp, ipFamily, ipToBigInt } from './ip.js';

/** kube-apiserver's default `--service-cluster-ip-range`. */
export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';

/** kube-apiserver's default `--service-node-port-range`. */
export const DEFAULT_NODE_PORT_RANGE = '30000-32767';

/** How long a seemingly leaked allocation must stay unchanged before it is reclaimed. */
export const DEFAULT_RECLAIM_GRACE_MS = 2_000;

/** What is allocated: an address of the service CIDR, or a port of the node-port range. */
export type AllocationKind = 'clusterips' | 'nodeports';

/** The store operations the allocator needs (any weft {@link Store} has them). */
export type AllocationStore = Pick<Store, 'get' | 'list' | 'create' | 'delete'>;

/** An inclusive range of ports. */
export interface PortRange {
  min: number;
  max: number;
}

/**
 * Parses a node-port range as kube-apiserver writes it: `30000-32767`, `30000+2767` (base and
 * size minus one) or a single port. Throws WEFT_INVALID_ARGUMENT naming `field`.
 */
export function parsePortRange(text: string, field = '--service-node-port-range'): PortRange {
  const m = /^\s*(\d{1,5})\s*(?:([-+])\s*(\d{1,5}))?\s*$/.exec(text);
  if (!m) throw invalid('node-port range', field, `${JSON.stringify(text)} is not a range like 30000-32767`);
  const min = Number(m[1]);
  const max = m[2] === undefined ? min : m[2] === '-' ? Number(m[3]) : min + Number(m[3]);
  if (min < 1 || max > 65_535 || max < min) {
    throw invalid(
      'node-port range',
      field,
      `${JSON.stringify(text)} must be within 1-65535, low before high`,
    );
  }
  return { min, max };
}

/** `min-max`, as kube prints a range. */
export function formatPortRange(r: PortRange): string {
  return `${r.min}-${r.max}`;
}

/** The prefix under which allocations of `kind` are stored. */
export function allocationsPrefix(registryPrefix: string, kind: AllocationKind): string {
  return `${registryPrefix.replace(/\/$/, '')}/allocations/${kind}/`;
}

/** The key that records the allocation of `value`. */
export function allocationKey(registryPrefix: string, kind: AllocationKind, value: string | number): string {
  return `${allocationsPrefix(registryPrefix, kind)}${String(value)}`;
}

/**
 * Says whether `owner` (`<namespace>/<name>`) currently holds `value` (as its stored object
 * shows it). False lets a leaked allocation be reclaimed.
 */
export type OwnerHolds = (kind: AllocationKind, value: string, owner: string) => Promise<boolean>;

/** Options of {@link ServiceAllocator}. */
export interface ServiceAllocatorOptions {
  store: AllocationStore;
  /** weft-proxy's registry prefix (`/weft`); allocations live under `<prefix>/allocations/`. */
  registryPrefix: string;
  /** Service CIDRs, at most one per family (kube's `--service-cluster-ip-range`). Default 10.96.0.0/12. */
  serviceCidrs?: readonly (Cidr | string)[];
  /** The node-port range. Default 30000-32767. */
  nodePortRange?: PortRange | string;
  /** Lets leaked allocations be reclaimed; without it none ever is. */
  ownerHolds?: OwnerHolds;
  /** How long a leak must be seen unchanged before it is reclaimed. Default 2 s. */
  reclaimGraceMs?: number;
  /** Where the scan for a free value starts, as a fraction in [0, 1). Default Math.random. */
  random?: () => number;
}

/** The outcome of taking one value. */
export interface Allocation {
  kind: AllocationKind;
  /** The address (canonical) or the port, as text. */
  value: string;
  /** True when this call created the key (and a rollback must delete it); false when the owner had it. */
  created: boolean;
}

/** One contiguous range to allocate from. */
interface Range {
  kind: AllocationKind;
  /** First and last usable value, as integers. */
  first: bigint;
  last: bigint;
  /** Integer → key suffix. */
  format: (v: bigint) => string;
  /** Key suffix → integer, undefined for a stray key. */
  parse: (s: string) => bigint | undefined;
  /** For messages: `service CIDR 10.96.0.0/12`. */
  describe: string;
}

/** Allocates and frees ClusterIPs and nodePorts in the registry. */
export class ServiceAllocator {
  readonly store: AllocationStore;
  readonly registryPrefix: string;
  readonly serviceCidrs: readonly Cidr[];
  readonly nodePortRange: PortRange;
  readonly #opts: ServiceAllocatorOptions;

  constructor(opts: ServiceAllocatorOptions) {
    this.#opts = opts;
    this.store = opts.store;
    this.registryPrefix = opts.registryPrefix;
    this.serviceCidrs = (opts.serviceCidrs ?? [DEFAULT_SERVICE_CIDR]).map((c) =>
      typeof c === 'string' ? Cidr.parse(c) : c,
    );
    const families = this.serviceCidrs.map((c) => c.family);
    if (!families.length || new Set(families).size !== families.length) {
      throw invalid(
        'service CIDR',
        '--service-cidr',
        'give one CIDR, or two of different families (IPv4 and IPv6)',
      );
    }
    for (const c of this.serviceCidrs) {
      // kube refuses tiny ranges for the same reason: without network and broadcast nothing is left.
      if (c.size < (c.family === 4 ? 4n : 2n)) {
        throw invalid('service CIDR', '--service-cidr', `${c.toString()} is too small to allocate from`);
      }
    }
    const r = opts.nodePortRange ?? DEFAULT_NODE_PORT_RANGE;
    this.nodePortRange = typeof r === 'string' ? parsePortRange(r) : r;
  }

  /** The service CIDR of `family`, or undefined. */
  cidrOf(family: 4 | 6): Cidr | undefined {
    return this.serviceCidrs.find((c) => c.family === family);
  }

  /**
   * Takes a ClusterIP for `owner`: `requested` when given (it must lie in a service CIDR and be
   * free, or already be the owner's), else a free address of the CIDR of `family` (default the
   * first CIDR's). Throws RANGE_EXHAUSTED, ALREADY_EXISTS or INVALID_ARGUMENT.
   */
  async allocateClusterIp(
    owner: string,
    opts: { requested?: string; family?: 4 | 6; field?: string } = {},
  ): Promise<Allocation> {
    const field = opts.field ?? 'spec.clusterIP';
    if (opts.requested !== undefined) {
      const fam = ipFamily(opts.requested);
      if (fam === undefined)
        throw invalid(owner, field, `${JSON.stringify(opts.requested)} is not an IP address`);
      const cidr = this.cidrOf(fam);
      const range = cidr && this.#ipRange(cidr);
      const value = ipToBigInt(opts.requested);
      if (!cidr || !range || value < range.first || value > range.last) {
        throw invalid(
          owner,
          field,
          `${canonicalIp(opts.requested)} is not in the service CIDR${cidr ? ` ${cidr.toString()}` : 's ' + this.serviceCidrs.join(', ')} (network and broadcast addresses excluded)`,
        );
      }
      return this.#take(range, value, owner, field);
    }
    const cidr = opts.family === undefined ? this.serviceCidrs[0] : this.cidrOf(opts.family);
    if (!cidr) throw invalid(owner, field, `no IPv${opts.family ?? 4} service CIDR is configured`);
    return this.#any(this.#ipRange(cidr), owner, new Set());
  }

  /**
   * Takes a nodePort for `owner`: `requested` when non-zero (it must be in the range and free, or
   * already the owner's), else a free port other than those in `exclude` (the owner's other
   * ports in the same object).
   */
  async allocateNodePort(
    owner: string,
    opts: { requested?: number; exclude?: Iterable<number>; field?: string } = {},
  ): Promise<Allocation> {
    const field = opts.field ?? 'spec.ports[].nodePort';
    const range = this.#portRange();
    if (opts.requested) {
      const p = opts.requested;
      if (p < this.nodePortRange.min || p > this.nodePortRange.max) {
        throw invalid(
          owner,
          field,
          `${p} is not in the node-port range ${formatPortRange(this.nodePortRange)}`,
        );
      }
      return this.#take(range, BigInt(p), owner, field);
    }
    const exclude = new Set([...(opts.exclude ?? [])].map((p) => BigInt(p)));
    return this.#any(range, owner, exclude);
  }

  /**
   * Frees `value` if `owner` holds it (a value someone else took over is left alone). Resolves
   * true when a key was deleted.
   */
  async release(kind: AllocationKind, value: string | number, owner: string): Promise<boolean> {
    const key = allocationKey(
      this.registryPrefix,
      kind,
      kind === 'clusterips' ? canonicalIp(String(value)) : value,
    );
    const kv = await this.store.get(key);
    if (!kv || kv.value !== owner) return false;
    return this.store.delete(key, { modRevision: kv.modRevision });
  }

  /** Frees what {@link allocateClusterIp}/{@link allocateNodePort} created (a failed write's rollback). */
  async rollback(allocations: readonly Allocation[], owner: string): Promise<void> {
    for (const a of allocations) if (a.created) await this.release(a.kind, a.value, owner);
  }

  /** Every allocation of `owner`, of both kinds. */
  async ownedBy(owner: string): Promise<{ kind: AllocationKind; value: string }[]> {
    const out: { kind: AllocationKind; value: string }[] = [];
    for (const kind of ['clusterips', 'nodeports'] as const) {
      const prefix = allocationsPrefix(this.registryPrefix, kind);
      for (const kv of (await this.store.list(prefix)).items) {
        if (kv.value === owner) out.push({ kind, value: kv.key.slice(prefix.length) });
      }
    }
    return out;
  }

  /** Frees every allocation of `owner` (its service was deleted); resolves with what was freed. */
  async releaseAll(owner: string): Promise<{ kind: AllocationKind; value: string }[]> {
    const freed: { kind: AllocationKind; value: string }[] = [];
    for (const a of await this.ownedBy(owner)) if (await this.release(a.kind, a.value, owner)) freed.push(a);
    return freed;
  }

  #ipRange(cidr: Cidr): Range {
    // As kube: never the network address, and for IPv4 never the broadcast address either.
    const first = cidr.start + 1n;
    const last = cidr.family === 4 ? cidr.end - 1n : cidr.end;
    return {
      kind: 'clusterips',
      first,
      last,
      format: (v) => bigIntToIp(v, cidr.family),
      parse: (s) => (ipFamily(s) === cidr.family ? ipToBigInt(s) : undefined),
      describe: `service CIDR ${cidr.toString()}`,
    };
  }

  #portRange(): Range {
    return {
      kind: 'nodeports',
      first: BigInt(this.nodePortRange.min),
      last: BigInt(this.nodePortRange.max),
      format: (v) => v.toString(),
      parse: (s) => (/^\d{1,5}$/.test(s) ? BigInt(s) : undefined),
      describe: `node-port range ${formatPortRange(this.nodePortRange)}`,
    };
  }

  /** Takes one given value, reclaiming it when its holder is a leak. */
  async #take(range: Range, value: bigint, owner: string, field: string): Promise<Allocation> {
    const text = range.format(value);
    const key = allocationKey(this.registryPrefix, range.kind, text);
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await this.store.create(key, owner);
      if (r.created) return { kind: range.kind, value: text, created: true };
      if (r.current.value === owner) return { kind: range.kind, value: text, created: false };
      if (!(await this.#reclaim(range.kind, text, r.current))) {
        throw new WeftError(
          ErrorCodes.ALREADY_EXISTS,
          `${owner}: field ${field}: ${text} is already allocated to ${r.current.value}`,
          { object: owner, field, value: text, holder: r.current.value },
        );
      }
    }
    throw new WeftError(
      ErrorCodes.CONFLICT,
      `${owner}: field ${field}: ${text} keeps changing hands; retry`,
      {
        object: owner,
        field,
      },
    );
  }

  /**
   * Takes any free value of `range`: first the owner's own leftovers (a crashed earlier apply of
   * the same object), then a free value scanning from a random point, then a reclaimed leak.
   */
  async #any(range: Range, owner: string, exclude: ReadonlySet<bigint>): Promise<Allocation> {
    const prefix = allocationsPrefix(this.registryPrefix, range.kind);
    const listed = await this.store.list(prefix);
    const taken = new Map<bigint, KeyValue>();
    for (const kv of listed.items) {
      const v = range.parse(kv.key.slice(prefix.length));
      if (v === undefined || v < range.first || v > range.last) continue;
      taken.set(v, kv);
      if (kv.value === owner && !exclude.has(v))
        return { kind: range.kind, value: range.format(v), created: false };
    }
    const size = range.last - range.first + 1n;
    const start = randomBelow(size, this.#opts.random ?? Math.random);
    for (let i = 0n; i < size; i++) {
      const v = range.first + ((start + i) % size);
      if (taken.has(v) || exclude.has(v)) continue;
      const text = range.format(v);
      const r = await this.store.create(allocationKey(this.registryPrefix, range.kind, text), owner);
      if (r.created) return { kind: range.kind, value: text, created: true };
      // Lost a race for this one: another allocator took it since the list.
      taken.set(v, r.current);
    }
    for (const [v, kv] of shuffled([...taken], this.#opts.random ?? Math.random)) {
      if (exclude.has(v) || kv.value === owner) continue;
      const text = range.format(v);
      if (!(await this.#reclaim(range.kind, text, kv))) continue;
      const r = await this.store.create(allocationKey(this.registryPrefix, range.kind, text), owner);
      if (r.created) return { kind: range.kind, value: text, created: true };
    }
    throw new WeftError(
      ErrorCodes.RANGE_EXHAUSTED,
      `${range.describe} is exhausted: all ${size} ${range.kind === 'clusterips' ? 'addresses' : 'ports'} are allocated (allocating for ${owner})`,
      { object: owner, kind: range.kind, range: range.describe },
    );
  }

  /**
   * Deletes a leaked allocation: its owner does not hold the value, and still does not after the
   * grace period with the key unchanged. Resolves true when it was deleted.
   */
  async #reclaim(kind: AllocationKind, value: string, kv: KeyValue): Promise<boolean> {
    const holds = this.#opts.ownerHolds;
    if (!holds || (await holds(kind, value, kv.value))) return false;
    await sleep(this.#opts.reclaimGraceMs ?? DEFAULT_RECLAIM_GRACE_MS);
    const again = await this.store.get(kv.key);
    if (!again) return true;
    if (again.modRevision !== kv.modRevision || (await holds(kind, value, kv.value))) return false;
    return this.store.delete(kv.key, { modRevision: kv.modRevision });
  }
}

/** A uniformly chosen integer in [0, n), good enough for spreading scan starts. */
function randomBelow(n: bigint, random: () => number): bigint {
  if (n <= 1n) return 0n;
  const r = Math.min(Math.max(random(), 0), 1 - Number.EPSILON);
  if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return BigInt(Math.floor(r * Number(n)));
  // Beyond 2^53 (big IPv6 ranges) combine two draws; exact uniformity does not matter here.
  const hi = BigInt(Math.floor(r * 2 ** 52));
  const lo = BigInt(Math.floor(random() * 2 ** 52));
  return ((hi << 52n) | lo) % n;
}

function shuffled<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

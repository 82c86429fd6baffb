/**
 * The `weft` table as a model: the fixed skeleton (hook chains, dispatch maps), the fragments of
 * the service ports written so far, and the element ownership that lets two fragments share an
 * element. From it come the nft transactions: a full sync rewrites the table (in place, or by
 * recreating it) in one transaction; a partial sync diffs the fragments of the changed service
 * ports element by element.
 */
import type { ServicePort, ServicePortMap } from '../model/index.js';
import { buildFragment, type BucketAllocator, type Fragment, type FragmentContext } from './fragment.js';
import { NFT_PROTOS, TABLE_NAME, nftFamily } from './names.js';
import { MASQUERADE_MARK } from '../proxier.js';

/** What the ruleset needs to know about the node. */
export interface RulesetOptions extends FragmentContext {
  /** NodePort CIDRs of this family; empty accepts NodePorts on every local address. */
  nodePortCidrs: string[];
}

/** The chains, sets and maps the table holds, as listed by nft. */
export interface ExistingObjects {
  chains: ReadonlySet<string>;
  sets: ReadonlySet<string>;
  maps: ReadonlySet<string>;
}

/** A conflict: a key claimed by two service ports; the first keeps it. */
export interface ElementConflict {
  map: string;
  key: string;
  owner: string;
  loser: string;
}

/** The base chains, hooked into netfilter. */
export const HOOK_CHAINS = [
  'nat-prerouting',
  'nat-output',
  'nat-postrouting',
  'filter-prerouting-pre-dnat',
  'filter-output-pre-dnat',
  'filter-input',
  'filter-forward',
  'filter-output',
] as const;

const SHARED_CHAINS = [
  'services',
  'mark-for-masquerade',
  'masquerading',
  'firewall-check',
  'service-endpoints-check',
  'nodeport-endpoints-check',
  'reject-chain',
];

/** The maps and sets of the skeleton, in creation order, with their declarations. */
function containers(o: RulesetOptions): [string, string][] {
  const addr = o.family === 4 ? 'ipv4_addr' : 'ipv6_addr';
  const ip = o.family === 4 ? 'ip' : 'ip6';
  const out: [string, string][] = [
    ['service-ips', `type ${addr} . inet_proto . inet_service : verdict;`],
    ['service-nodeports', 'type inet_proto . inet_service : verdict;'],
    ['no-endpoint-services', `type ${addr} . inet_proto . inet_service : verdict;`],
    ['no-endpoint-nodeports', 'type inet_proto . inet_service : verdict;'],
    ['firewall-ips', `type ${addr} . inet_proto . inet_service;`],
    ['firewall-allow', `type ${addr} . inet_proto . inet_service . ${addr}; flags interval;`],
    ['hairpin', `type ${addr} . ${addr};`],
    // numgen's value has no named datatype; typeof gives the maps their 32-bit integer buckets.
    // One map per protocol: see pickMap().
    ...['cluster-ip', 'external-ip', 'external-ip-cluster', 'nodeport', 'nodeport-cluster'].flatMap((kind) =>
      NFT_PROTOS.map((proto): [string, string] => [
        `${kind}-endpoints-${proto}`,
        `typeof ${kind.startsWith('nodeport') ? '' : `${ip} daddr . `}meta l4proto . th dport . numgen random mod 1 : ${ip} daddr . ${proto} dport;`,
      ]),
    ),
    ['endpoint-chains', 'typeof numgen random mod 1 : verdict;'],
  ];
  if (o.nodePortCidrs.length > 0) out.push(['nodeport-cidrs', `type ${addr}; flags interval;`]);
  return out;
}

/** The fixed part of the table: base chains, shared chains, maps and their rules. */
export function skeleton(o: RulesetOptions, flush = false): string[] {
  const fam = nftFamily(o.family);
  const ip = o.family === 4 ? 'ip' : 'ip6';
  const loopback = o.family === 4 ? '127.0.0.0/8' : '::1';
  const t = `${fam} ${TABLE_NAME}`;
  const mark = `0x${MASQUERADE_MARK.toString(16)}`;
  const nodeLocal = `fib daddr type local ${ip} daddr != ${loopback}${
    o.nodePortCidrs.length > 0 ? ` ${ip} daddr @nodeport-cidrs` : ''
  }`;
  const lines: string[] = [];
  // Hook chains; kube-proxy's priorities: the firewall before DNAT, reject/drop in filter.
  const hooks: [(typeof HOOK_CHAINS)[number], string][] = [
    ['nat-prerouting', 'type nat hook prerouting priority dstnat; policy accept;'],
    ['nat-output', 'type nat hook output priority -100; policy accept;'],
    ['nat-postrouting', 'type nat hook postrouting priority srcnat; policy accept;'],
    ['filter-prerouting-pre-dnat', 'type filter hook prerouting priority -110; policy accept;'],
    ['filter-output-pre-dnat', 'type filter hook output priority -110; policy accept;'],
    ['filter-input', 'type filter hook input priority filter; policy accept;'],
    ['filter-forward', 'type filter hook forward priority filter; policy accept;'],
    ['filter-output', 'type filter hook output priority filter; policy accept;'],
  ];
  for (const [name, decl] of hooks) lines.push(`add chain ${t} ${name} { ${decl} }`);
  for (const name of SHARED_CHAINS) lines.push(`add chain ${t} ${name}`);
  for (const [name, decl] of containers(o)) {
    const kind = / : /.test(decl) ? 'map' : 'set';
    lines.push(`add ${kind} ${t} ${name} { ${decl} }`);
    if (flush) lines.push(`flush ${kind} ${t} ${name}`);
  }
  if (o.nodePortCidrs.length > 0) {
    lines.push(`add element ${t} nodeport-cidrs { ${o.nodePortCidrs.join(', ')} }`);
  }
  const rule = (chain: string, text: string) => lines.push(`add rule ${t} ${chain} ${text}`);
  rule('filter-prerouting-pre-dnat', 'ct state new jump firewall-check');
  rule('filter-output-pre-dnat', 'ct state new jump firewall-check');
  rule('filter-input', 'ct state new jump nodeport-endpoints-check');
  rule('filter-input', 'ct state new jump service-endpoints-check');
  rule('filter-forward', 'ct state new jump service-endpoints-check');
  rule('filter-output', 'ct state new jump service-endpoints-check');
  rule('filter-output', 'ct state new jump nodeport-endpoints-check');
  rule(
    'firewall-check',
    `${ip} daddr . meta l4proto . th dport @firewall-ips ${ip} daddr . meta l4proto . th dport . ${ip} saddr != @firewall-allow drop`,
  );
  rule('service-endpoints-check', `${ip} daddr . meta l4proto . th dport vmap @no-endpoint-services`);
  rule('nodeport-endpoints-check', `${nodeLocal} meta l4proto . th dport vmap @no-endpoint-nodeports`);
  rule('reject-chain', 'reject');
  rule('nat-prerouting', 'jump services');
  rule('nat-output', 'jump services');
  // Hairpin: a pod that reached itself through its service must see the reply come from the
  // node, or it would answer itself directly.
  rule('nat-postrouting', `ct status dnat ${ip} saddr . ${ip} daddr @hairpin jump mark-for-masquerade`);
  rule('nat-postrouting', 'jump masquerading');
  rule('services', `${ip} daddr . meta l4proto . th dport vmap @service-ips`);
  rule('services', `${nodeLocal} meta l4proto . th dport vmap @service-nodeports`);
  rule('mark-for-masquerade', `meta mark set meta mark or ${mark}`);
  rule('masquerading', `meta mark & ${mark} == 0 return`);
  rule('masquerading', `meta mark set meta mark xor ${mark}`);
  rule('masquerading', 'masquerade fully-random');
  return lines;
}

/** Key ranges of the endpoint maps, reused first-fit by size so partial syncs keep keys stable. */
class Allocator implements BucketAllocator {
  #next = 0;
  readonly #free = new Map<number, number[]>();

  allocate(size: number): number {
    const list = this.#free.get(size);
    const reused = list?.pop();
    if (reused !== undefined) return reused;
    const base = this.#next;
    this.#next += size;
    return base;
  }

  release(base: number, size: number): void {
    const list = this.#free.get(size) ?? [];
    list.push(base);
    this.#free.set(size, list);
  }
}

interface Owned {
  fragment: Fragment;
  ranges: [number, number][];
}

/**
 * One element's owners in claim order; the first owner's value is the one in the kernel. The
 * first is inline: nearly every element has one owner, and a full sync makes tens of thousands.
 */
interface Claim {
  id: string;
  value: string;
  more?: { id: string; value: string }[];
}

function dropOwner(claim: Claim, id: string): Claim | undefined {
  const rest = (claim.more ?? []).filter((o) => o.id !== id);
  if (claim.id === id) {
    const [next, ...others] = rest;
    if (!next) return undefined;
    return others.length > 0 ? { ...next, more: others } : { ...next };
  }
  return rest.length > 0
    ? { id: claim.id, value: claim.value, more: rest }
    : { id: claim.id, value: claim.value };
}

/**
 * The model of what weft last wrote into its table, and the renderer of the transactions that
 * move the kernel from it to a new set of service ports. A method that renders also updates the
 * model, as if the transaction succeeded: on failure throw the ruleset away and start again with
 * a full sync.
 */
export class NftRuleset {
  readonly options: RulesetOptions;
  readonly #alloc = new Allocator();
  readonly #owned = new Map<string, Owned>();
  readonly #claims = new Map<string, Claim>();
  /** Shared pick chains: name → number of service ports using them. */
  readonly #picks = new Map<string, { rules: string[]; users: number }>();
  /** Conflicts found by the last render. */
  conflicts: ElementConflict[] = [];

  constructor(options: RulesetOptions) {
    this.options = options;
  }

  get #prefix(): string {
    return `${nftFamily(this.options.family)} ${TABLE_NAME}`;
  }

  /** The number of service ports in the model. */
  get size(): number {
    return this.#owned.size;
  }

  /**
   * The transaction that rewrites the whole table with every service port of `ports` (in id
   * order, so the text is stable). Must be called on a fresh ruleset.
   *
   * Without `existing` the table is deleted and recreated. With `existing` (what the table holds
   * now) it is rewritten in place: every rule and every map element is replaced and whatever is
   * not wanted any more is deleted, but the affinity sets that are still wanted are kept, with the
   * clients they remember (kube-proxy keeps them across full syncs too).
   */
  renderFull(ports: ServicePortMap, existing?: ExistingObjects): string {
    if (this.#owned.size > 0) throw new Error('renderFull needs a fresh ruleset');
    const t = this.#prefix;
    const comment = `add table ${t} { comment "service rules of weft-proxy; rewritten on every sync"; }`;
    const ids = [...ports.keys()].sort();
    if (!existing) {
      // `add` first so that `delete` succeeds when the table is absent; all in one transaction.
      const head = [`add table ${t}`, `delete table ${t}`, comment, ...skeleton(this.options)];
      return [...head, ...this.#diff(ids, ports), ''].join('\n');
    }
    const head = [comment, `flush table ${t}`, ...skeleton(this.options, true)];
    const body = this.#diff(ids, ports);
    const wanted = {
      chains: new Set<string>([...HOOK_CHAINS, ...SHARED_CHAINS, ...this.#picks.keys()]),
      sets: new Set<string>(containers(this.options).map(([name]) => name)),
    };
    for (const { fragment } of this.#owned.values()) {
      for (const name of fragment.chains.keys()) wanted.chains.add(name);
      for (const name of fragment.affinitySets.keys()) wanted.sets.add(name);
    }
    // `flush table` emptied every chain, and the skeleton every map: nothing refers to these.
    const stale = [
      ...[...existing.chains].filter((n) => !wanted.chains.has(n)).map((n) => `delete chain ${t} ${n}`),
      ...[...existing.sets].filter((n) => !wanted.sets.has(n)).map((n) => `delete set ${t} ${n}`),
      ...[...existing.maps].filter((n) => !wanted.sets.has(n)).map((n) => `delete map ${t} ${n}`),
    ];
    return [...head, ...stale, ...body, ''].join('\n');
  }

  /**
   * The transaction that moves the table from the model to `ports` for the service ports in
   * `changed` (ids absent from `ports` are removed). Empty string when nothing changes.
   */
  renderPartial(ports: ServicePortMap, changed: Iterable<string>): string {
    const ids = [...new Set(changed)].sort();
    const lines = this.#diff(ids, ports);
    return lines.length > 0 ? `${lines.join('\n')}\n` : '';
  }

  #claimKey(map: string, key: string): string {
    return `${map}\u0000${key}`;
  }

  #diff(ids: string[], ports: ServicePortMap): string[] {
    const t = this.#prefix;
    this.conflicts = [];
    // Keys whose element may change, with the value in the kernel before. A fresh ruleset has
    // nothing in the kernel: every claim is new, and tracking them would only cost time.
    const fresh = this.#claims.size === 0;
    const touched = new Map<string, string | undefined>();
    const touch = (ck: string) => {
      if (!fresh && !touched.has(ck)) touched.set(ck, this.#claims.get(ck)?.value);
    };
    const oldChains = new Map<string, string[]>();
    const newChains = new Map<string, string[]>();
    const oldSets = new Map<string, number>();
    const newSets = new Map<string, number>();
    const pickBefore = new Map<string, boolean>();

    // Release every changed port first, so keys and ranges can move between them.
    for (const id of ids) {
      const prev = this.#owned.get(id);
      if (!prev) continue;
      for (const [base, size] of prev.ranges) this.#alloc.release(base, size);
      for (const [name, rules] of prev.fragment.chains) oldChains.set(name, rules);
      for (const [name, timeout] of prev.fragment.affinitySets) oldSets.set(name, timeout);
      for (const name of prev.fragment.picks.keys()) {
        if (!pickBefore.has(name)) pickBefore.set(name, this.#picks.has(name));
        const p = this.#picks.get(name);
        if (p && --p.users === 0) this.#picks.delete(name);
      }
      for (const el of prev.fragment.elements) {
        const ck = this.#claimKey(el.map, el.key);
        touch(ck);
        const claim = this.#claims.get(ck);
        if (!claim) continue;
        const rest = dropOwner(claim, id);
        if (rest) this.#claims.set(ck, rest);
        else this.#claims.delete(ck);
      }
      this.#owned.delete(id);
    }
    for (const id of ids) {
      const sp: ServicePort | undefined = ports.get(id);
      if (!sp) continue;
      const { fragment, ranges } = buildFragment(sp, this.options, this.#alloc);
      this.#owned.set(id, { fragment, ranges });
      for (const [name, rules] of fragment.chains) newChains.set(name, rules);
      for (const [name, timeout] of fragment.affinitySets) newSets.set(name, timeout);
      for (const [name, rules] of fragment.picks) {
        if (!pickBefore.has(name)) pickBefore.set(name, this.#picks.has(name));
        const p = this.#picks.get(name) ?? { rules, users: 0 };
        p.users++;
        this.#picks.set(name, p);
      }
      for (const el of fragment.elements) {
        const ck = this.#claimKey(el.map, el.key);
        touch(ck);
        const claim = this.#claims.get(ck);
        if (!claim) {
          this.#claims.set(ck, { id, value: el.value });
          continue;
        }
        // A fragment may list an element twice (an endpoint in both the cluster and local lists).
        if (claim.id === id || claim.more?.some((o) => o.id === id)) continue;
        if (claim.value !== el.value) {
          this.conflicts.push({ map: el.map, key: el.key, owner: claim.id, loser: id });
        }
        (claim.more ??= []).push({ id, value: el.value });
      }
    }

    const dels = new Map<string, string[]>();
    const adds = new Map<string, string[]>();
    const push = (m: Map<string, string[]>, map: string, text: string) => {
      const list = m.get(map) ?? [];
      list.push(text);
      m.set(map, list);
    };
    for (const ck of fresh ? this.#claims.keys() : touched.keys()) {
      const before = fresh ? undefined : touched.get(ck);
      const after = this.#claims.get(ck)?.value;
      if (before === after) continue;
      const sep = ck.indexOf('\u0000');
      const map = ck.slice(0, sep);
      const key = ck.slice(sep + 1);
      if (before !== undefined) push(dels, map, key);
      if (after !== undefined) push(adds, map, after === '' ? key : `${key} : ${after}`);
    }

    const out: string[] = [];
    const elementLines = (verb: string, m: Map<string, string[]>) => {
      for (const [map, items] of m) {
        // Chunks keep single commands short enough for nft's parser and for readable errors.
        for (let i = 0; i < items.length; i += 1000) {
          out.push(`${verb} element ${t} ${map} {\n\t${items.slice(i, i + 1000).join(',\n\t')}\n}`);
        }
      }
    };
    // Order matters inside one transaction: references go before what they reference.
    elementLines('delete', dels);
    const same = (a: string[] | undefined, b: string[] | undefined) =>
      a !== undefined && b !== undefined && a.length === b.length && a.every((r, i) => r === b[i]);
    const goneSets = [...oldSets.keys()].filter((n) => newSets.get(n) !== oldSets.get(n));
    // A set is only deleted once no rule refers to it: rewrite the chains that do.
    const refersGone = (rules: string[] | undefined) =>
      goneSets.length > 0 && (rules ?? []).some((r) => goneSets.some((s) => r.includes(`@${s} `)));
    const rewrite = (n: string) => !same(oldChains.get(n), newChains.get(n)) || refersGone(oldChains.get(n));
    const changedChains = [...newChains.keys()].filter((n) => oldChains.has(n) && rewrite(n));
    const goneChains = [...oldChains.keys()].filter((n) => !newChains.has(n));
    for (const n of [...goneChains, ...changedChains]) out.push(`flush chain ${t} ${n}`);
    for (const n of goneChains) out.push(`delete chain ${t} ${n}`);
    for (const n of goneSets) out.push(`delete set ${t} ${n}`);
    const goneAndNewPicks = [...pickBefore].filter(([n, before]) => before !== this.#picks.has(n));
    for (const [n, before] of goneAndNewPicks)
      if (before) out.push(`flush chain ${t} ${n}`, `delete chain ${t} ${n}`);
    for (const [n, timeout] of newSets) {
      if (oldSets.get(n) !== timeout) {
        out.push(
          `add set ${t} ${n} { type ${this.options.family === 4 ? 'ipv4_addr' : 'ipv6_addr'}; flags dynamic,timeout; timeout ${timeout}s; }`,
        );
      }
    }
    for (const [n, before] of goneAndNewPicks) {
      if (before) continue;
      out.push(`add chain ${t} ${n}`);
      for (const r of this.#picks.get(n)?.rules ?? []) out.push(`add rule ${t} ${n} ${r}`);
    }
    const write = [...newChains.keys()].filter(rewrite);
    for (const n of write) if (!oldChains.has(n)) out.push(`add chain ${t} ${n}`);
    for (const n of write) for (const r of newChains.get(n) ?? []) out.push(`add rule ${t} ${n} ${r}`);
    elementLines('add', adds);
    return out;
  }
}

/**
 * What one service port contributes to the `weft` table: its chains, affinity sets and map
 * elements. Pure; the ruleset keeps these per service port so a partial sync can diff them.
 *
 * Endpoint choice never builds an anonymous map, and never a map lookup per service either: the
 * kernel checks every element added to a map against every rule that looks it up, so a lookup
 * per service makes loading quadratic, and every chain makes each later `nft` call slower (nft
 * reads all chains before it writes). Instead the destination of the packet is the key: a port
 * with N endpoints adds elements `<addr> . <proto> . <port> . <bucket> → <endpoint> . <port>`
 * (bucket 0..N-1) to a shared map of its protocol and dispatches to `pick-<kind>-<proto>-<N>`, a
 * chain shared by every such port, whose rule is `meta l4proto <proto> dnat to ip daddr . meta
 * l4proto . th dport . numgen random mod N map @<map>`. A plain ClusterIP service is then a few
 * map elements and no chain of its own.
 *
 * Per-port chains remain where a port needs its own logic: ClientIP affinity (a chain per
 * endpoint refreshes its affinity set; the port picks among them with `numgen random mod N
 * offset <base> vmap @endpoint-chains`, owning the key range `[base, base+N)`) and the external
 * entry of Local-policy ports (pods and the node take every endpoint, outside traffic only local
 * ones).
 */
import { Cidr } from '../../ipam/index.js';
import { selectEndpoints, type Endpoint, type ServicePort } from '../model/index.js';
import { endpointNames, nftProto, servicePortNames, type NftProto } from './names.js';

/** One map or set element: the container's name, the key, and the value ('' for sets). */
export interface Element {
  map: string;
  key: string;
  value: string;
}

/** The objects one service port owns. */
export interface Fragment {
  /** Regular chains, in creation order, with their rules (without the `add rule` prefix). */
  chains: Map<string, string[]>;
  /** Dynamic affinity sets: name → timeout in seconds. */
  affinitySets: Map<string, number>;
  /** Shared endpoint-choice chains this port jumps to: name → their rules. */
  picks: Map<string, string[]>;
  elements: Element[];
}

/** What the fragment builder needs to know about the node. */
export interface FragmentContext {
  family: 4 | 6;
  /** The cluster network of the family, or undefined. */
  clusterCidr: string | undefined;
  masqueradeAll: boolean;
}

/** Hands out key ranges of `endpoint-chains`. */
export interface BucketAllocator {
  /** A base such that `[base, base+size)` is free. */
  allocate(size: number): number;
}

/** The masquerade rule of ClusterIP traffic, or undefined when none applies. */
function masqueradeRule(sp: ServicePort, ctx: FragmentContext): string | undefined {
  const ip = ctx.family === 4 ? 'ip' : 'ip6';
  if (ctx.masqueradeAll) return `${ip} daddr ${sp.clusterIP} jump mark-for-masquerade`;
  if (ctx.clusterCidr !== undefined) {
    return `${ip} daddr ${sp.clusterIP} ${ip} saddr != ${ctx.clusterCidr} jump mark-for-masquerade`;
  }
  return undefined;
}

function endpointAddr(family: 4 | 6, ep: Endpoint): string {
  return family === 4 ? `${ep.ip}:${ep.port}` : `[${ep.ip}]:${ep.port}`;
}

/**
 * The ways of choosing an endpoint by destination. Each has a map (which key, which endpoint
 * list) and shared chains `pick-<kind>-<N>`: what they do before the DNAT differs by kind.
 * - `cluster-ip`: ClusterIP traffic, internal endpoints; masquerades sources outside the cluster.
 * - `external-ip` / `nodeport`: Cluster-policy external traffic; always masquerades.
 * - `*-local`: Local-policy external traffic from outside; keeps the source address.
 * - `*-cluster`: pods and the node reaching a Local-policy service (kube-proxy's short-circuit).
 */
export const PICK_KINDS = [
  'cluster-ip',
  'external-ip',
  'external-ip-local',
  'external-ip-cluster',
  'nodeport',
  'nodeport-local',
  'nodeport-cluster',
] as const;
export type PickKind = (typeof PICK_KINDS)[number];

/**
 * The map of endpoint choice a kind of pick looks up for a protocol. There is one per protocol
 * because nft 1.0.6 cannot add a rule against a map, read back from the kernel, whose data is
 * typed `th dport`; typed `tcp dport` (or udp, sctp) it works, and implies that protocol.
 */
export function pickMap(kind: PickKind, proto: NftProto): string {
  return `${kind.replace(/-local$/, '')}-endpoints-${proto}`;
}

/** The rules of the shared chain choosing among `n` endpoints for `kind` and `proto`. */
export function pickRules(ctx: FragmentContext, kind: PickKind, proto: NftProto, n: number): string[] {
  const ip = ctx.family === 4 ? 'ip' : 'ip6';
  const key = kind.startsWith('nodeport')
    ? 'meta l4proto . th dport'
    : `${ip} daddr . meta l4proto . th dport`;
  const rules: string[] = [];
  if (kind === 'cluster-ip') {
    if (ctx.masqueradeAll) rules.push('jump mark-for-masquerade');
    else if (ctx.clusterCidr !== undefined)
      rules.push(`${ip} saddr != ${ctx.clusterCidr} jump mark-for-masquerade`);
  } else if (kind === 'external-ip' || kind === 'nodeport') {
    rules.push('jump mark-for-masquerade');
  }
  rules.push(`meta l4proto ${proto} dnat to ${key} . numgen random mod ${n} map @${pickMap(kind, proto)}`);
  return rules;
}

/**
 * Builds the fragment of one service port. `alloc` gives key ranges of `endpoint-chains` (ClientIP
 * affinity only); the ranges used are returned so they can be released when the port changes.
 */
export function buildFragment(
  sp: ServicePort,
  ctx: FragmentContext,
  alloc: BucketAllocator,
): { fragment: Fragment; ranges: [number, number][] } {
  const ip = ctx.family === 4 ? 'ip' : 'ip6';
  const proto = nftProto(sp);
  // Most ports need no chain of their own, and names cost a hash.
  let namesOnce: ReturnType<typeof servicePortNames> | undefined;
  const names = () => (namesOnce ??= servicePortNames(sp));
  const sel = selectEndpoints(sp);
  const hasEndpoints = sel.cluster.length > 0 || sel.local.length > 0;
  const chains = new Map<string, string[]>();
  const affinitySets = new Map<string, number>();
  const picks = new Map<string, string[]>();
  const elements: Element[] = [];
  const ranges: [number, number][] = [];
  const affinity = sp.affinityTimeoutSeconds > 0;
  const internalChain = () => (sp.internalPolicyLocal ? names().local : names().cluster);

  const hairpin = (eps: Endpoint[]) => {
    for (const ep of eps) elements.push({ map: 'hairpin', key: `${ep.ip} . ${ep.ip}`, value: '' });
  };

  const endpointChain = (ep: Endpoint): string => {
    const n = endpointNames(sp, ep);
    if (!chains.has(n.chain)) {
      affinitySets.set(n.affinity, sp.affinityTimeoutSeconds);
      chains.set(n.chain, [
        `update @${n.affinity} { ${ip} saddr }`,
        `meta l4proto ${proto} dnat to ${endpointAddr(ctx.family, ep)}`,
      ]);
    }
    return n.chain;
  };

  /** With affinity: the chain (service- or local-) that checks affinity, then picks at random. */
  const affinityChain = (local: boolean): string => {
    const name = local ? names().local : names().cluster;
    if (chains.has(name)) return name;
    const eps = local ? sel.local : sel.cluster;
    hairpin(eps);
    const masq = name === internalChain() ? masqueradeRule(sp, ctx) : undefined;
    const rules = masq ? [masq] : [];
    const epChains = eps.map(endpointChain);
    eps.forEach((ep, i) =>
      rules.push(`${ip} saddr @${endpointNames(sp, ep).affinity} goto ${epChains[i] ?? ''}`),
    );
    if (epChains.length === 1) {
      rules.push(`goto ${epChains[0] ?? ''}`);
    } else {
      const base = alloc.allocate(epChains.length);
      ranges.push([base, epChains.length]);
      epChains.forEach((c, i) =>
        elements.push({ map: 'endpoint-chains', key: String(base + i), value: `goto ${c}` }),
      );
      rules.push(`numgen random mod ${epChains.length} offset ${base} vmap @endpoint-chains`);
    }
    chains.set(name, rules);
    return name;
  };

  /**
   * The verdict that sends traffic to one of `eps` (the local list when `local`): the elements of
   * `kind`'s map under `keys`, and a goto to the shared pick chain. Undefined when `eps` is empty
   * (the packet then meets the filter's verdict).
   */
  const target = (eps: Endpoint[], local: boolean, kind: PickKind, keys: string[]): string | undefined => {
    if (eps.length === 0) return undefined;
    if (affinity) return `goto ${affinityChain(local)}`;
    hairpin(eps);
    const map = pickMap(kind, proto);
    for (const key of keys) {
      eps.forEach((ep, i) => elements.push({ map, key: `${key} . ${i}`, value: `${ep.ip} . ${ep.port}` }));
    }
    const pick = `pick-${kind}-${proto}-${eps.length}`;
    picks.set(pick, pickRules(ctx, kind, proto, eps.length));
    return `goto ${pick}`;
  };

  // The verdict for traffic that found no endpoint: kube-proxy rejects when the service has none
  // at all, and drops when it has some but the traffic policy excludes them all.
  const noEndpointVerdict = hasEndpoints ? 'drop' : 'goto reject-chain';

  // Internal (ClusterIP) traffic.
  const clusterKey = `${sp.clusterIP} . ${proto} . ${sp.port}`;
  const internal = target(sel.internal, sp.internalPolicyLocal, 'cluster-ip', [clusterKey]);
  if (internal) elements.push({ map: 'service-ips', key: clusterKey, value: internal });
  else elements.push({ map: 'no-endpoint-services', key: clusterKey, value: noEndpointVerdict });

  // External traffic: externalIPs and LoadBalancer IPs, then NodePorts.
  const externalKeys = [...sp.externalIPs, ...sp.loadBalancerIPs].map((a) => `${a} . ${proto} . ${sp.port}`);
  const entries: {
    chain: string;
    keys: string[];
    kind: 'external-ip' | 'nodeport';
    dispatch: string;
    noEndpoints: string;
  }[] = [];
  if (externalKeys.length > 0) {
    entries.push({
      chain: names().external,
      keys: externalKeys,
      kind: 'external-ip',
      dispatch: 'service-ips',
      noEndpoints: 'no-endpoint-services',
    });
  }
  if (sp.nodePort > 0) {
    entries.push({
      chain: names().nodePort,
      keys: [`${proto} . ${sp.nodePort}`],
      kind: 'nodeport',
      dispatch: 'service-nodeports',
      noEndpoints: 'no-endpoint-nodeports',
    });
  }
  for (const entry of entries) {
    let verdict: string | undefined;
    if (hasEndpoints && !sp.externalPolicyLocal) {
      // Cluster policy: masquerade, then any endpoint; the pick chain does both.
      verdict = target(sel.cluster, false, entry.kind, entry.keys);
      if (verdict && affinity) {
        chains.set(entry.chain, ['jump mark-for-masquerade', verdict]);
        verdict = `goto ${entry.chain}`;
      }
    } else if (hasEndpoints) {
      // Local policy: pods and the node itself reach every endpoint (kube-proxy's
      // short-circuit); only traffic from outside keeps its source address and is limited to
      // local endpoints.
      const rules: string[] = [];
      const inside = target(sel.cluster, false, `${entry.kind}-cluster`, entry.keys);
      if (inside) {
        if (ctx.clusterCidr !== undefined) rules.push(`${ip} saddr ${ctx.clusterCidr} ${inside}`);
        rules.push('fib saddr type local jump mark-for-masquerade');
        rules.push(`fib saddr type local ${inside}`);
      }
      const outside = target(sel.local, true, `${entry.kind}-local`, entry.keys);
      if (outside) rules.push(outside);
      chains.set(entry.chain, rules);
      verdict = `goto ${entry.chain}`;
    }
    if (verdict) for (const key of entry.keys) elements.push({ map: entry.dispatch, key, value: verdict });
    if (sel.external.length === 0) {
      for (const key of entry.keys) elements.push({ map: entry.noEndpoints, key, value: noEndpointVerdict });
    }
  }

  if (sp.loadBalancerSourceRanges.length > 0) {
    for (const lb of sp.loadBalancerIPs) {
      const key = `${lb} . ${proto} . ${sp.port}`;
      elements.push({ map: 'firewall-ips', key, value: '' });
      for (const range of sp.loadBalancerSourceRanges) {
        // nft refuses interval elements with host bits; kube-proxy uses the network.
        const cidr = Cidr.parseLenient(range).toString();
        elements.push({ map: 'firewall-allow', key: `${key} . ${cidr}`, value: '' });
      }
    }
  }
  return { fragment: { chains, affinitySets, picks, elements }, ranges };
}

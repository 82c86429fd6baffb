/**
 * The benchmark's peer: the nftables ruleset kube-proxy ≥ 1.31 writes for the same service
 * ports, reduced to ClusterIP traffic (all the workload has). Its defining shape, which the
 * reference notes say costs time per service already loaded, is kept exactly: a `service-ips`
 * verdict map for dispatch, one chain per service port ending in an anonymous
 * `numgen random mod N vmap { 0 : goto <ep0>, … }`, and one chain per endpoint doing the DNAT.
 * Chain names follow kube-proxy's (`service-<hash8>-<ns>/<name>/<proto>/<port>`,
 * `endpoint-<hash8>-…__<ip>/<port>`) so the rule text and its length match.
 *
 * Transactions are what kube-proxy would send: the full ruleset in one `nft -f -`, and for a
 * changed service a rewrite of its chains (add + flush + rules), new endpoint chains and the
 * deletion of stale ones.
 */
import { hashName } from '../src/proxy/hash-name.js';
import type { Endpoint, ServicePort, ServicePortMap } from '../src/proxy/model/index.js';
import { selectEndpoints } from '../src/proxy/model/index.js';

/** Options of the peer generator. */
export interface KubeLayoutOptions {
  /** Table name; kube-proxy's is `kube-proxy`. */
  table?: string;
  /** `--cluster-cidr`: traffic from outside it is masqueraded. */
  clusterCidr?: string;
}

/** kube-proxy's hashAndTruncate for nftables names: base32(sha256(name)), 8 characters. */
function hash8(name: string): string {
  return hashName(name, 8);
}

function portBase(sp: ServicePort): string {
  return `${sp.namespace}/${sp.name}/${sp.protocol.toLowerCase()}/${sp.portName}`;
}

/** kube-proxy's service chain name. */
export function serviceChainName(sp: ServicePort): string {
  const base = portBase(sp);
  return `service-${hash8(base)}-${base}`;
}

/** kube-proxy's endpoint chain name. */
export function endpointChainName(sp: ServicePort, ep: Endpoint): string {
  const base = `${portBase(sp)}__${ep.ip}/${ep.port}`;
  return `endpoint-${hash8(base)}-${base}`;
}

function tableName(opts: KubeLayoutOptions): string {
  return opts.table ?? 'kube-proxy';
}

/** The table, base chains and maps (what kube-proxy writes before any service). */
function baseRules(opts: KubeLayoutOptions): string[] {
  const t = `ip ${tableName(opts)}`;
  return [
    `add table ${t} { comment "rules for kube-proxy" ; }`,
    `add chain ${t} nat-prerouting { type nat hook prerouting priority dstnat ; }`,
    `add chain ${t} nat-output { type nat hook output priority -100 ; }`,
    `add chain ${t} nat-postrouting { type nat hook postrouting priority srcnat ; }`,
    `add chain ${t} filter-forward { type filter hook forward priority -110 ; }`,
    `add chain ${t} filter-output { type filter hook output priority -110 ; }`,
    `add chain ${t} mark-for-masquerade`,
    `add chain ${t} masquerading`,
    `add chain ${t} services`,
    `add chain ${t} service-endpoints-check`,
    `add chain ${t} reject-chain { comment "helper for @no-endpoint-services" ; }`,
    `add map ${t} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`,
    `add map ${t} no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }`,
    `add rule ${t} nat-prerouting jump services`,
    `add rule ${t} nat-output jump services`,
    `add rule ${t} nat-postrouting jump masquerading`,
    `add rule ${t} filter-forward ct state new jump service-endpoints-check`,
    `add rule ${t} filter-output ct state new jump service-endpoints-check`,
    `add rule ${t} mark-for-masquerade mark set mark or 0x4000`,
    `add rule ${t} masquerading mark and 0x4000 == 0 return`,
    `add rule ${t} masquerading mark set mark xor 0x4000`,
    `add rule ${t} masquerading masquerade fully-random`,
    `add rule ${t} services ip daddr . meta l4proto . th dport vmap @service-ips`,
    `add rule ${t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services`,
    `add rule ${t} reject-chain reject`,
  ];
}

function dispatchKey(sp: ServicePort): string {
  return `${sp.clusterIP} . ${sp.protocol.toLowerCase()} . ${sp.port}`;
}

/** Writes (add + flush + rules) the chains of one service port; returns its endpoint chains. */
function serviceChains(sp: ServicePort, opts: KubeLayoutOptions, out: string[]): Set<string> {
  const t = `ip ${tableName(opts)}`;
  const eps = selectEndpoints(sp).internal;
  const endpointChains = new Set<string>();
  if (eps.length === 0) return endpointChains;
  const svc = serviceChainName(sp);
  const proto = sp.protocol.toLowerCase();
  // Endpoint chains first: the service's vmap may only name chains that exist.
  for (const ep of eps) {
    const chain = endpointChainName(sp, ep);
    endpointChains.add(chain);
    out.push(
      `add chain ${t} ${chain}`,
      `flush chain ${t} ${chain}`,
      `add rule ${t} ${chain} ip saddr ${ep.ip} jump mark-for-masquerade`,
      `add rule ${t} ${chain} meta l4proto ${proto} dnat to ${ep.ip}:${ep.port}`,
    );
  }
  out.push(`add chain ${t} ${svc}`, `flush chain ${t} ${svc}`);
  if (opts.clusterCidr) {
    out.push(
      `add rule ${t} ${svc} ip daddr ${sp.clusterIP} ${proto} dport ${sp.port} ip saddr != ${opts.clusterCidr} jump mark-for-masquerade`,
    );
  }
  const vmap = eps.map((ep, i) => `${i} : goto ${endpointChainName(sp, ep)}`).join(' , ');
  out.push(`add rule ${t} ${svc} numgen random mod ${eps.length} vmap { ${vmap} }`);
  return endpointChains;
}

function mapElement(sp: ServicePort, opts: KubeLayoutOptions, verb: 'add' | 'delete'): string {
  const t = `ip ${tableName(opts)}`;
  const hasEndpoints = selectEndpoints(sp).internal.length > 0;
  const map = hasEndpoints ? 'service-ips' : 'no-endpoint-services';
  const verdict = hasEndpoints ? `goto ${serviceChainName(sp)}` : 'goto reject-chain';
  return verb === 'add'
    ? `add element ${t} ${map} { ${dispatchKey(sp)} : ${verdict} }`
    : `delete element ${t} ${map} { ${dispatchKey(sp)} }`;
}

/** The whole ruleset of `servicePorts`, as one transaction into an empty namespace. */
export function kubeLayoutRuleset(servicePorts: ServicePortMap, opts: KubeLayoutOptions = {}): string {
  const out = baseRules(opts);
  for (const sp of servicePorts.values()) {
    serviceChains(sp, opts, out);
    out.push(mapElement(sp, opts, 'add'));
  }
  return `${out.join('\n')}\n`;
}

/**
 * The transaction kube-proxy would send when one service port changed from `before` to `after`
 * (undefined: absent): rewrite its chains, add its new endpoint chains, delete the stale ones,
 * and update its map element when its dispatch changed.
 */
export function kubeLayoutServiceUpdate(
  before: ServicePort | undefined,
  after: ServicePort | undefined,
  opts: KubeLayoutOptions = {},
): string {
  const t = `ip ${tableName(opts)}`;
  const out: string[] = [];
  const oldChains = new Set<string>();
  if (before) {
    const eps = selectEndpoints(before).internal;
    for (const ep of eps) oldChains.add(endpointChainName(before, ep));
    if (eps.length > 0) oldChains.add(serviceChainName(before));
  }
  let keep = new Set<string>();
  if (after) {
    keep = serviceChains(after, opts, out);
    if (selectEndpoints(after).internal.length > 0) keep.add(serviceChainName(after));
  }
  const dispatchChanged =
    !before ||
    !after ||
    dispatchKey(before) !== dispatchKey(after) ||
    selectEndpoints(before).internal.length > 0 !== selectEndpoints(after).internal.length > 0;
  if (before && dispatchChanged) out.push(mapElement(before, opts, 'delete'));
  if (after && dispatchChanged) out.push(mapElement(after, opts, 'add'));
  // Stale chains go last, once nothing in this transaction refers to them; the service chain
  // (which jumps to endpoint chains) before the endpoint chains.
  const stale = [...oldChains].filter((c) => !keep.has(c)).sort((a, b) => (a < b ? 1 : -1));
  for (const c of stale) out.push(`flush chain ${t} ${c}`, `delete chain ${t} ${c}`);
  return `${out.join('\n')}\n`;
}

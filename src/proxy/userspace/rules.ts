/**
 * What the userspace mode asks of the kernel: a private nftables table that redirects service
 * addresses to the proxy's listeners, rejects (or, for Local policy, drops) traffic to ports
 * without usable endpoints, and enforces loadBalancerSourceRanges before any NAT. Pure
 * functions, so the golden test pins the text.
 */
import { nftString } from '../../escape/index.js';
import type { Family, Protocol, ServicePort } from '../model/index.js';
import { isExternallyAccessible, selectEndpoints, type Endpoint } from '../model/index.js';

/** The table's name (in family `ip` or `ip6`), apart from nftables mode's `weft`. */
export const USERSPACE_TABLE = 'weft-userspace';

/** The protocols a Node listener can serve. */
export type ListenerProtocol = 'TCP' | 'UDP';

/** Which traffic of a service port a listener takes. */
export type TrafficKind = 'all' | 'internal' | 'external';

/** One listener the proxier keeps, and the endpoints its balancer chooses among. */
export interface ListenerPlan {
  /** The service port id, plus `@external` for the external listener of split policies. */
  key: string;
  servicePort: ServicePort;
  protocol: ListenerProtocol;
  kind: TrafficKind;
  endpoints: Endpoint[];
  /**
   * What to do when `endpoints` is empty: `reject` (no endpoint at all) or `drop` (a Local
   * policy with endpoints only on other nodes, as kube-proxy does).
   */
  empty: 'reject' | 'drop';
}

/** The suffix of the key of a service port's external listener. */
export const EXTERNAL_SUFFIX = '@external';

/**
 * The listeners of one service port: one, or two when internal and external traffic policies
 * differ on an externally reachable port (their endpoint sets differ). SCTP has none: Node
 * cannot accept SCTP associations.
 */
export function planListeners(sp: ServicePort): ListenerPlan[] {
  if (sp.protocol === 'SCTP') return [];
  const sel = selectEndpoints(sp);
  const protocol: ListenerProtocol = sp.protocol;
  const emptyFor = (local: boolean): 'reject' | 'drop' =>
    local && sel.cluster.length > 0 ? 'drop' : 'reject';
  if (!isExternallyAccessible(sp) || sp.internalPolicyLocal === sp.externalPolicyLocal) {
    return [
      {
        key: sp.id,
        servicePort: sp,
        protocol,
        kind: 'all',
        endpoints: sel.internal,
        empty: emptyFor(sp.internalPolicyLocal),
      },
    ];
  }
  return [
    {
      key: sp.id,
      servicePort: sp,
      protocol,
      kind: 'internal',
      endpoints: sel.internal,
      empty: emptyFor(sp.internalPolicyLocal),
    },
    {
      key: `${sp.id}${EXTERNAL_SUFFIX}`,
      servicePort: sp,
      protocol,
      kind: 'external',
      endpoints: sel.external,
      empty: emptyFor(sp.externalPolicyLocal),
    },
  ];
}

/** Every listener of a set of service ports, sorted by key. */
export function planAll(servicePorts: Iterable<ServicePort>): ListenerPlan[] {
  const out: ListenerPlan[] = [];
  for (const sp of servicePorts) out.push(...planListeners(sp));
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** What the rules are rendered for. */
export interface RenderContext {
  family: Family;
  /** `--nodeport-addresses`: CIDRs of node addresses that accept NodePorts; empty = all local. */
  nodePortAddresses: string[];
}

function l4(p: Protocol): string {
  return p.toLowerCase();
}

/**
 * The `nft -f -` transaction that replaces the whole table: listeners with a port get redirect
 * rules, listeners without endpoints get reject/drop rules. `listenerPort(key)` undefined means
 * the listener could not be bound: its addresses get no rule (the sync reports the error).
 */
export function renderUserspaceRules(
  plans: readonly ListenerPlan[],
  ctx: RenderContext,
  listenerPort: (key: string) => number | undefined,
): string {
  const fam = ctx.family === 4 ? 'ip' : 'ip6';
  const cidrs = ctx.nodePortAddresses.filter((c) => (c.includes(':') ? 6 : 4) === ctx.family);
  const services: string[] = [];
  const noEndpoints: string[] = [];
  const firewall: string[] = [];

  for (const plan of plans) {
    const sp = plan.servicePort;
    const proto = l4(sp.protocol);
    // nftString keeps the comment under nft's 128 bytes (Kubernetes' longest names exceed it) and
    // out of nft's syntax; `@` of the listener key is not among its safe characters.
    const comment = `comment ${nftString(plan.kind === 'external' ? `${sp.id} external` : sp.id)}`;
    // The destinations this listener takes, as nft matches.
    const dests: string[] = [];
    if (plan.kind !== 'external') dests.push(`${fam} daddr ${sp.clusterIP} ${proto} dport ${sp.port}`);
    if (plan.kind !== 'internal') {
      for (const ip of [...sp.externalIPs, ...sp.loadBalancerIPs])
        dests.push(`${fam} daddr ${ip} ${proto} dport ${sp.port}`);
      if (sp.nodePort > 0) {
        const addrs = cidrs.length > 0 ? `${fam} daddr { ${cidrs.join(', ')} } ` : '';
        dests.push(`${addrs}fib daddr type local ${proto} dport ${sp.nodePort}`);
      }
      if (sp.loadBalancerSourceRanges.length > 0) {
        for (const ip of sp.loadBalancerIPs)
          firewall.push(
            `${fam} daddr ${ip} ${proto} dport ${sp.port} ${fam} saddr != { ${sp.loadBalancerSourceRanges.join(', ')} } drop ${comment}`,
          );
      }
    }
    if (plan.endpoints.length === 0) {
      const verdict = plan.empty === 'drop' ? 'drop' : proto === 'tcp' ? 'reject with tcp reset' : 'reject';
      for (const d of dests) noEndpoints.push(`${d} ${verdict} ${comment}`);
      continue;
    }
    const port = listenerPort(plan.key);
    if (port === undefined) continue;
    for (const d of dests) services.push(`${d} redirect to :${port} ${comment}`);
  }

  // The listeners bind every address on their ports: only traffic that a redirect above sent
  // there may reach them (ct status dnat), or a port scan would bypass the ClusterIP-only scope,
  // loadBalancerSourceRanges, --nodeport-addresses and Local policy.
  const listenerGuard: string[] = [];
  for (const proto of ['tcp', 'udp'] as const) {
    const ports = new Set<number>();
    for (const plan of plans) {
      const port = l4(plan.protocol) === proto ? listenerPort(plan.key) : undefined;
      if (port !== undefined && port > 0) ports.add(port);
    }
    if (ports.size === 0) continue;
    const list = [...ports].sort((a, b) => a - b).join(', ');
    listenerGuard.push(`ct status ! dnat ${proto} dport { ${list} } drop`);
  }

  const chain = (name: string, head: string[], rules: string[]) =>
    [`\tchain ${name} {`, ...head.map((h) => `\t\t${h}`), ...rules.map((r) => `\t\t${r}`), '\t}'].join('\n');
  const base = (type: string, hook: string, prio: number) =>
    `type ${type} hook ${hook} priority ${prio}; policy accept;`;
  return [
    `add table ${fam} ${USERSPACE_TABLE}`,
    `delete table ${fam} ${USERSPACE_TABLE}`,
    `table ${fam} ${USERSPACE_TABLE} {`,
    `\tcomment "weft-proxy userspace mode: service addresses redirected to the proxy's listeners"`,
    // Filter ahead of NAT (-110 < -100) so that refused and firewalled traffic is judged on
    // its original destination.
    chain('filter-prerouting', [base('filter', 'prerouting', -110)], ['ct state new jump firewall']),
    chain(
      'filter-input',
      [base('filter', 'input', -110)],
      ['ct state new jump no-endpoints', 'ct state new jump listeners'],
    ),
    chain('filter-forward', [base('filter', 'forward', -110)], ['ct state new jump no-endpoints']),
    chain(
      'filter-output',
      [base('filter', 'output', -110)],
      ['ct state new jump no-endpoints', 'ct state new jump firewall'],
    ),
    chain('nat-prerouting', [base('nat', 'prerouting', -100)], ['jump services']),
    chain('nat-output', [base('nat', 'output', -100)], ['jump services']),
    chain('firewall', [], firewall),
    chain('no-endpoints', [], noEndpoints),
    chain('listeners', [], listenerGuard),
    chain('services', [], services),
    '}',
    '',
  ].join('\n');
}

/** The transaction that removes the table, whether or not it exists. */
export function renderCleanup(family: Family): string {
  const fam = family === 4 ? 'ip' : 'ip6';
  return `add table ${fam} ${USERSPACE_TABLE}\ndelete table ${fam} ${USERSPACE_TABLE}\n`;
}

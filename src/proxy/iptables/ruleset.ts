/**
 * The pure half of the iptables mode: service ports in, `iptables-restore --noflush` input out.
 * It mirrors kube-proxy's syncProxyRules (pkg/proxy/iptables/proxier.go) rule for rule, with
 * `WEFT-` chains, so an operator who knows kube-proxy can read `iptables-save` output.
 *
 * The top-level chains (WEFT-SERVICES, WEFT-NODEPORTS, ...) are rewritten in full on every sync;
 * a partial sync writes the per-service chains only of the changed service ports, since the
 * kernel still holds the others; stale per-service chains are flushed and deleted in the same
 * transaction.
 */
import { isIP } from 'node:net';
import { iptablesComment } from '../../escape/index.js';
import { isExternallyAccessible, selectEndpoints } from '../model/index.js';
import type { Endpoint, Family, ServicePort, ServicePortMap } from '../model/index.js';
import { MASQUERADE_MARK } from '../proxier.js';
import {
  CANARY_CHAIN,
  EXTERNAL_SERVICES_CHAIN,
  FILTER_TOP_CHAINS,
  FIREWALL_CHAIN,
  FORWARD_CHAIN,
  MARK_MASQ_CHAIN,
  NAT_TOP_CHAINS,
  NODEPORTS_CHAIN,
  POSTROUTING_CHAIN,
  SERVICES_CHAIN,
  endpointChainName,
  endpointString,
  isServiceChainName,
  servicePortChains,
} from './chain-names.js';

/** What the rules depend on besides the service ports. */
export interface IptablesRulesConfig {
  family: Family;
  /** Pod network of the family; traffic to a ClusterIP from outside it is masqueraded. */
  clusterCidr: string | undefined;
  /** Masquerade all ClusterIP traffic. */
  masqueradeAll: boolean;
  /** CIDRs of the node addresses that accept NodePorts; empty: every local address. */
  nodePortAddresses: readonly string[];
  /** Add `--random-fully` to MASQUERADE (iptables ≥ 1.6.2). */
  randomFully: boolean;
}

/** One sync's request to the generator. */
export interface RestoreRequest {
  servicePorts: ServicePortMap;
  /** Ids whose chains must be rewritten; undefined for a full sync. */
  changed: ReadonlySet<string> | undefined;
  /**
   * Per-service chains (SVC/SVL/EXT/FW/SEP) present in the nat table before this sync. Those the
   * new rules do not use are flushed and deleted.
   */
  existingChains: Iterable<string>;
}

/** The generated restore input and what it leaves in the kernel. */
export interface RestoreInput {
  /** `iptables-restore --noflush` input: `*nat`, `*filter` and, on a full sync, `*mangle`. */
  text: string;
  /** Every per-service chain in use after this sync (written now or kept from before). */
  activeChains: Set<string>;
  /** The stale chains this input deletes, sorted. */
  deletedChains: string[];
  /** How many service ports had their chains written. */
  writtenServicePorts: number;
}

const MARK = `0x${MASQUERADE_MARK.toString(16)}`;

/**
 * kube-proxy's probability of rule i of N: 1/(N−i) with 10 decimals, so that the rules together
 * choose each endpoint with probability 1/N.
 */
export function probability(remaining: number): string {
  return (1 / remaining).toFixed(10);
}

/** A comment as one iptables-restore token: registry names in it never become syntax. */
const q = iptablesComment;

/** One line of rules, built from tokens. */
type Line = string;

class Section {
  readonly chains: Line[] = [];
  readonly rules: Line[] = [];
  chain(name: string): void {
    this.chains.push(`:${name} - [0:0]`);
  }
  rule(...tokens: (string | number)[]): void {
    this.rules.push(tokens.join(' '));
  }
}

/** A sink for the chains of unchanged service ports in a partial sync. */
class Discard extends Section {
  override chain(): void {}
  override rule(): void {}
}

function hostCidr(ip: string): string {
  return `${ip}/${isIP(ip) === 6 ? 128 : 32}`;
}

/** Generates the restore input of one sync. Pure. */
export function buildRestoreInput(cfg: IptablesRulesConfig, req: RestoreRequest): RestoreInput {
  const full = req.changed === undefined;
  const nat = new Section();
  const filter = new Section();
  const discard = new Discard();
  const active = new Set<string>();
  let written = 0;

  for (const c of NAT_TOP_CHAINS) nat.chain(c);
  for (const c of FILTER_TOP_CHAINS) filter.chain(c);
  if (full) {
    // kube-proxy keeps a canary in every table it writes; the mangle one is polled.
    nat.chain(CANARY_CHAIN);
    filter.chain(CANARY_CHAIN);
  }

  nat.rule('-A', POSTROUTING_CHAIN, '-m', 'mark', '!', '--mark', `${MARK}/${MARK}`, '-j', 'RETURN');
  // Clear the mark so that a packet traversing the stack again is not masqueraded twice.
  nat.rule('-A', POSTROUTING_CHAIN, '-j', 'MARK', '--xor-mark', MARK);
  nat.rule(
    '-A',
    POSTROUTING_CHAIN,
    '-m',
    'comment',
    '--comment',
    q('weft service traffic requiring SNAT'),
    '-j',
    'MASQUERADE',
    ...(cfg.randomFully ? ['--random-fully'] : []),
  );
  nat.rule('-A', MARK_MASQ_CHAIN, '-j', 'MARK', '--or-mark', MARK);

  const ifLocal = cfg.clusterCidr !== undefined ? ['-s', cfg.clusterCidr] : undefined;
  const ifNotLocal = cfg.clusterCidr !== undefined ? ['!', '-s', cfg.clusterCidr] : undefined;

  const ports = [...req.servicePorts.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const sp of ports) {
    const proto = sp.protocol.toLowerCase();
    const name = sp.id;
    const chains = servicePortChains(sp);
    const sel = selectEndpoints(sp);
    const accessible = isExternallyAccessible(sp);
    const externalLocal = sp.externalPolicyLocal && accessible;
    // kube-proxy's UsesClusterEndpoints / UsesLocalEndpoints: external traffic under Local policy
    // still needs the Cluster chain, for the pod and host short-circuits.
    const usesCluster = !sp.internalPolicyLocal || accessible;
    const usesLocal = sp.internalPolicyLocal || externalLocal;
    const clusterEps = usesCluster ? sel.cluster : [];
    const localEps = usesLocal ? sel.local : [];
    const reachable = sp.endpoints.filter((e) => clusterEps.includes(e) || localEps.includes(e));
    const hasEndpoints = sel.cluster.length > 0;

    const usesClusterChain = clusterEps.length > 0;
    const usesLocalChain = localEps.length > 0;
    const internalChain = sp.internalPolicyLocal ? chains.svl : chains.svc;
    const hasInternal = hasEndpoints && !(sp.internalPolicyLocal && localEps.length === 0);
    const externalPolicyChain = externalLocal ? chains.svl : chains.svc;
    const hasExternal = hasEndpoints && !(externalLocal && localEps.length === 0);
    const usesExtChain = hasEndpoints && accessible;
    const usesFw = hasEndpoints && sp.loadBalancerIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
    const lbChain = usesFw ? chains.fw : chains.ext;

    let internalTarget = '';
    let internalComment = '';
    let externalTarget = '';
    let externalComment = '';
    if (!hasEndpoints) {
      internalTarget = externalTarget = 'REJECT';
      internalComment = externalComment = q(`${name} has no endpoints`);
    } else {
      if (!hasInternal) {
        internalTarget = 'DROP';
        internalComment = q(`${name} has no local endpoints`);
      }
      if (!hasExternal) {
        externalTarget = 'DROP';
        externalComment = q(`${name} has no local endpoints`);
      }
    }

    const match = ['-m', proto, '-p', proto];
    const clusterIpArgs = [...match, '-d', sp.clusterIP, '--dport', sp.port];
    const clusterIpComment = ['-m', 'comment', '--comment', q(`${name} cluster IP`)];

    if (hasInternal) {
      nat.rule('-A', SERVICES_CHAIN, ...clusterIpComment, ...clusterIpArgs, '-j', internalChain);
    } else {
      filter.rule(
        '-A',
        SERVICES_CHAIN,
        '-m',
        'comment',
        '--comment',
        internalComment,
        ...clusterIpArgs,
        '-j',
        internalTarget,
      );
    }

    for (const ip of sp.externalIPs) {
      const args = [...match, '-d', ip, '--dport', sp.port];
      if (hasEndpoints) {
        nat.rule(
          '-A',
          SERVICES_CHAIN,
          '-m',
          'comment',
          '--comment',
          q(`${name} external IP`),
          ...args,
          '-j',
          chains.ext,
        );
      }
      if (!hasExternal) {
        filter.rule(
          '-A',
          EXTERNAL_SERVICES_CHAIN,
          '-m',
          'comment',
          '--comment',
          externalComment,
          ...args,
          '-j',
          externalTarget,
        );
      }
    }

    for (const ip of sp.loadBalancerIPs) {
      const args = [...match, '-d', ip, '--dport', sp.port];
      if (hasEndpoints) {
        nat.rule(
          '-A',
          SERVICES_CHAIN,
          '-m',
          'comment',
          '--comment',
          q(`${name} loadbalancer IP`),
          ...args,
          '-j',
          lbChain,
        );
      }
      if (usesFw) {
        filter.rule(
          '-A',
          FIREWALL_CHAIN,
          '-m',
          'comment',
          '--comment',
          q(`${name} traffic not accepted by ${chains.fw}`),
          ...args,
          '-j',
          'DROP',
        );
      }
    }
    if (!hasExternal) {
      for (const ip of sp.loadBalancerIPs) {
        filter.rule(
          '-A',
          EXTERNAL_SERVICES_CHAIN,
          '-m',
          'comment',
          '--comment',
          externalComment,
          ...match,
          '-d',
          ip,
          '--dport',
          sp.port,
          '-j',
          externalTarget,
        );
      }
    }

    if (sp.nodePort > 0) {
      if (hasEndpoints) {
        // As in kube-proxy, NodePorts are not subject to loadBalancerSourceRanges.
        nat.rule(
          '-A',
          NODEPORTS_CHAIN,
          '-m',
          'comment',
          '--comment',
          q(name),
          ...match,
          '--dport',
          sp.nodePort,
          '-j',
          chains.ext,
        );
      }
      if (!hasExternal) {
        filter.rule(
          '-A',
          EXTERNAL_SERVICES_CHAIN,
          '-m',
          'comment',
          '--comment',
          externalComment,
          '-m',
          'addrtype',
          '--dst-type',
          'LOCAL',
          ...match,
          '--dport',
          sp.nodePort,
          '-j',
          externalTarget,
        );
      }
    }

    if (sp.healthCheckNodePort > 0) {
      // Accepted whether or not the node has local endpoints: the health server answers 503 then.
      filter.rule(
        '-A',
        NODEPORTS_CHAIN,
        '-m',
        'comment',
        '--comment',
        q(`${name} health check node port`),
        '-m',
        'tcp',
        '-p',
        'tcp',
        '--dport',
        sp.healthCheckNodePort,
        '-j',
        'ACCEPT',
      );
    }

    // Chains of a service port the kernel already holds unchanged are still active, but not written.
    const write = req.changed === undefined || req.changed.has(sp.id);
    const out = write ? nat : discard;
    if (write) written++;

    if (hasInternal) {
      if (cfg.masqueradeAll) {
        out.rule('-A', internalChain, ...clusterIpComment, ...clusterIpArgs, '-j', MARK_MASQ_CHAIN);
      } else if (ifNotLocal) {
        // Off-cluster clients may route the service range to any node, which may forward to an
        // endpoint on another node: the reply must come back through this node.
        out.rule(
          '-A',
          internalChain,
          ...clusterIpComment,
          ...clusterIpArgs,
          ...ifNotLocal,
          '-j',
          MARK_MASQ_CHAIN,
        );
      }
    }

    if (usesExtChain) {
      out.chain(chains.ext);
      active.add(chains.ext);
      if (!externalLocal) {
        // Cluster policy may send the packet to another node: masquerade so the reply returns here.
        out.rule(
          '-A',
          chains.ext,
          '-m',
          'comment',
          '--comment',
          q(`masquerade traffic for ${name} external destinations`),
          '-j',
          MARK_MASQ_CHAIN,
        );
      } else {
        if (ifLocal) {
          // A pod calling an external address of the service acts as if it went out to a load
          // balancer and back: no traffic policy applies.
          out.rule(
            '-A',
            chains.ext,
            '-m',
            'comment',
            '--comment',
            q(`pod traffic for ${name} external destinations`),
            ...ifLocal,
            '-j',
            chains.svc,
          );
        }
        // The host's own source address would be the external address itself: masquerade.
        out.rule(
          '-A',
          chains.ext,
          '-m',
          'comment',
          '--comment',
          q(`masquerade LOCAL traffic for ${name} external destinations`),
          '-m',
          'addrtype',
          '--src-type',
          'LOCAL',
          '-j',
          MARK_MASQ_CHAIN,
        );
        out.rule(
          '-A',
          chains.ext,
          '-m',
          'comment',
          '--comment',
          q(`route LOCAL traffic for ${name} external destinations`),
          '-m',
          'addrtype',
          '--src-type',
          'LOCAL',
          '-j',
          chains.svc,
        );
      }
      if (hasExternal) out.rule('-A', chains.ext, '-j', externalPolicyChain);
    }

    if (usesFw) {
      out.chain(chains.fw);
      active.add(chains.fw);
      const fwComment = ['-m', 'comment', '--comment', q(`${name} loadbalancer IP`)];
      for (const cidr of sp.loadBalancerSourceRanges) {
        out.rule('-A', chains.fw, ...fwComment, '-s', cidr, '-j', chains.ext);
      }
      // What falls through is not DNATed, and WEFT-PROXY-FIREWALL drops it in filter.
      out.rule(
        '-A',
        chains.fw,
        '-m',
        'comment',
        '--comment',
        q(`other traffic to ${name} will be dropped by ${FIREWALL_CHAIN}`),
      );
    }

    if (usesClusterChain) {
      out.chain(chains.svc);
      active.add(chains.svc);
      if (write) endpointRules(out, sp, chains.svc, clusterEps);
    }
    if (usesLocalChain) {
      out.chain(chains.svl);
      active.add(chains.svl);
      if (write) endpointRules(out, sp, chains.svl, localEps);
    }

    for (const ep of reachable) {
      const epStr = endpointString(ep.ip, ep.port);
      const sep = endpointChainName(name, proto, epStr);
      active.add(sep);
      if (!write) continue;
      out.chain(sep);
      const head = ['-A', sep, '-m', 'comment', '--comment', q(name)];
      // Hairpin: an endpoint reaching itself through the service must see the node as source.
      out.rule(...head, '-s', hostCidr(ep.ip), '-j', MARK_MASQ_CHAIN);
      out.rule(
        ...head,
        ...(sp.affinityTimeoutSeconds > 0 ? ['-m', 'recent', '--name', sep, '--set'] : []),
        ...match,
        '-j',
        'DNAT',
        '--to-destination',
        epStr,
      );
    }
  }

  const deleted = [...new Set(req.existingChains)]
    .filter((c) => isServiceChainName(c) && !active.has(c))
    .sort();
  for (const c of deleted) {
    // Declaring the chain flushes it, which drops its references to other stale chains.
    nat.chain(c);
  }

  // NodePorts come last in WEFT-SERVICES, after every service address.
  // A fixed text (kube-proxy's), quoted as it is: `;` means nothing inside quotes.
  const nodePortsComment = '"weft service nodeports; NOTE: this must be the last rule in this chain"';
  const loopback = cfg.family === 6 ? '::1/128' : '127.0.0.0/8';
  const cidrs = cfg.nodePortAddresses.filter((c) => isIP(c.split('/')[0] ?? '') === cfg.family);
  if (cidrs.length === 0) {
    // NodePorts on loopback would need route_localnet; kube-proxy blocks them without it.
    nat.rule(
      '-A',
      SERVICES_CHAIN,
      '-m',
      'comment',
      '--comment',
      nodePortsComment,
      '-m',
      'addrtype',
      '--dst-type',
      'LOCAL',
      '!',
      '-d',
      loopback,
      '-j',
      NODEPORTS_CHAIN,
    );
  } else {
    // Local addresses inside each CIDR: the same set kube-proxy enumerates from the interfaces,
    // but it follows address changes without a resync.
    for (const cidr of cidrs) {
      nat.rule(
        '-A',
        SERVICES_CHAIN,
        '-m',
        'comment',
        '--comment',
        nodePortsComment,
        '-d',
        cidr,
        '-m',
        'addrtype',
        '--dst-type',
        'LOCAL',
        '-j',
        NODEPORTS_CHAIN,
      );
    }
  }

  for (const c of deleted) nat.rule('-X', c);

  // Packets conntrack cannot place would be reset by the endpoint; drop them instead.
  filter.rule('-A', FORWARD_CHAIN, '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP');
  filter.rule(
    '-A',
    FORWARD_CHAIN,
    '-m',
    'comment',
    '--comment',
    q('weft forwarding rules'),
    '-m',
    'mark',
    '--mark',
    `${MARK}/${MARK}`,
    '-j',
    'ACCEPT',
  );
  filter.rule(
    '-A',
    FORWARD_CHAIN,
    '-m',
    'comment',
    '--comment',
    q('weft forwarding conntrack rule'),
    '-m',
    'conntrack',
    '--ctstate',
    'RELATED,ESTABLISHED',
    '-j',
    'ACCEPT',
  );

  const parts = [
    '*nat',
    ...nat.chains,
    ...nat.rules,
    'COMMIT',
    '*filter',
    ...filter.chains,
    ...filter.rules,
    'COMMIT',
  ];
  if (full) parts.push('*mangle', `:${CANARY_CHAIN} - [0:0]`, 'COMMIT');
  return {
    text: `${parts.join('\n')}\n`,
    activeChains: active,
    deletedChains: deleted,
    writtenServicePorts: written,
  };
}

/** The affinity and random-choice rules from a SVC or SVL chain to its endpoints' chains. */
function endpointRules(out: Section, sp: ServicePort, chain: string, eps: Endpoint[]): void {
  const proto = sp.protocol.toLowerCase();
  const named = eps.map((e) => {
    const s = endpointString(e.ip, e.port);
    return { s, sep: endpointChainName(sp.id, proto, s) };
  });
  if (sp.affinityTimeoutSeconds > 0) {
    for (const { s, sep } of named) {
      out.rule(
        '-A',
        chain,
        '-m',
        'comment',
        '--comment',
        q(`${sp.id} -> ${s}`),
        '-m',
        'recent',
        '--name',
        sep,
        '--rcheck',
        '--seconds',
        sp.affinityTimeoutSeconds,
        '--reap',
        '-j',
        sep,
      );
    }
  }
  named.forEach(({ s, sep }, i) => {
    const stat =
      i < named.length - 1
        ? ['-m', 'statistic', '--mode', 'random', '--probability', probability(named.length - i)]
        : [];
    out.rule('-A', chain, '-m', 'comment', '--comment', q(`${sp.id} -> ${s}`), ...stat, '-j', sep);
  });
}

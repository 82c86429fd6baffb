/**
 * kube-proxy's iptables chain names with weft's `WEFT-` prefix. The per-service and per-endpoint
 * hashes are computed exactly as kube-proxy computes them (pkg/proxy/iptables: portProtoHash and
 * servicePortEndpointChainName), so an operator can map a chain to its service the same way, and
 * so that kube-proxy's published chain names double as test vectors.
 */
import { hashName } from '../hash-name.js';

export { base32 } from '../hash-name.js';
import type { Family, ServicePort } from '../model/index.js';

/** nat and filter entry chain (from PREROUTING and OUTPUT in nat; FORWARD and OUTPUT in filter). */
export const SERVICES_CHAIN = 'WEFT-SERVICES';
/** filter: rejects and drops for external destinations (externalIPs, LB IPs, NodePorts). */
export const EXTERNAL_SERVICES_CHAIN = 'WEFT-EXTERNAL-SERVICES';
/** nat: NodePort dispatch; filter: healthCheckNodePort accepts. */
export const NODEPORTS_CHAIN = 'WEFT-NODEPORTS';
/** nat: masquerades marked packets (from POSTROUTING). */
export const POSTROUTING_CHAIN = 'WEFT-POSTROUTING';
/** nat: sets the masquerade mark. */
export const MARK_MASQ_CHAIN = 'WEFT-MARK-MASQ';
/** filter: accepts forwarded service traffic. */
export const FORWARD_CHAIN = 'WEFT-FORWARD';
/** filter: drops LB traffic that loadBalancerSourceRanges did not let through (KUBE-PROXY-FIREWALL). */
export const FIREWALL_CHAIN = 'WEFT-PROXY-FIREWALL';
/** Empty chain whose disappearance tells that something flushed the tables. */
export const CANARY_CHAIN = 'WEFT-PROXY-CANARY';

/** Cluster-policy endpoint dispatch of one service port. */
export const SVC_PREFIX = 'WEFT-SVC-';
/** Local-policy endpoint dispatch of one service port. */
export const SVL_PREFIX = 'WEFT-SVL-';
/** External entry (NodePort, externalIP, LB IP) of one service port. */
export const EXT_PREFIX = 'WEFT-EXT-';
/** loadBalancerSourceRanges filter of one service port. */
export const FW_PREFIX = 'WEFT-FW-';
/** One endpoint of one service port. */
export const SEP_PREFIX = 'WEFT-SEP-';

/** Prefixes of the chains owned by one service port; the only chains a sync deletes as stale. */
export const SERVICE_CHAIN_PREFIXES = [SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX] as const;

/** The fixed chains of each table (canary excluded), in the order they are declared. */
export const NAT_TOP_CHAINS = [SERVICES_CHAIN, NODEPORTS_CHAIN, POSTROUTING_CHAIN, MARK_MASQ_CHAIN] as const;
export const FILTER_TOP_CHAINS = [
  SERVICES_CHAIN,
  EXTERNAL_SERVICES_CHAIN,
  FORWARD_CHAIN,
  NODEPORTS_CHAIN,
  FIREWALL_CHAIN,
] as const;

/** iptables' limit on chain names. */
export const MAX_CHAIN_NAME = 28;

function hash16(text: string): string {
  return hashName(text, 16);
}

/**
 * kube-proxy's portProtoHash: the first 16 characters of base32(sha256(servicePortName +
 * protocol)), protocol in lower case.
 */
export function portProtoHash(servicePortName: string, protocol: string): string {
  return hash16(servicePortName + protocol.toLowerCase());
}

/** `ip:port`, bracketed for IPv6 (Go's net.JoinHostPort, which kube-proxy hashes and DNATs to). */
export function endpointString(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** kube-proxy's servicePortEndpointChainName: the hash also covers the endpoint string. */
export function endpointChainName(servicePortName: string, protocol: string, endpoint: string): string {
  return SEP_PREFIX + hash16(servicePortName + protocol.toLowerCase() + endpoint);
}

/** The chains of one service port. */
export interface ServicePortChains {
  svc: string;
  svl: string;
  ext: string;
  fw: string;
}

/** The SVC/SVL/EXT/FW chain names of a service port. */
export function servicePortChains(sp: Pick<ServicePort, 'id' | 'protocol'>): ServicePortChains {
  const h = portProtoHash(sp.id, sp.protocol);
  return { svc: SVC_PREFIX + h, svl: SVL_PREFIX + h, ext: EXT_PREFIX + h, fw: FW_PREFIX + h };
}

/** True for a per-service or per-endpoint chain (the ones stale-chain deletion may remove). */
export function isServiceChainName(name: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((p) => name.startsWith(p));
}

/** True for any chain this mode creates, in any table. */
export function isOwnChainName(name: string): boolean {
  return (
    isServiceChainName(name) ||
    name === CANARY_CHAIN ||
    (NAT_TOP_CHAINS as readonly string[]).includes(name) ||
    (FILTER_TOP_CHAINS as readonly string[]).includes(name)
  );
}

/** The program names of one family. */
export interface IptablesCommands {
  iptables: string;
  save: string;
  restore: string;
}

/** iptables or ip6tables, by family. */
export function iptablesCommands(family: Family): IptablesCommands {
  const p = family === 4 ? 'iptables' : 'ip6tables';
  return { iptables: p, save: `${p}-save`, restore: `${p}-restore` };
}

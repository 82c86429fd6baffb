/**
 * Names of the nftables objects weft writes. They follow kube-proxy's nftables mode
 * (`service-<hash>-<ns>/<name>/<proto>/<port>`) so an operator can read them, with kube-proxy's
 * hash so that the same service port has the same hash in every mode.
 */
import { hashName } from '../hash-name.js';
import type { Endpoint, Family, ServicePort } from '../model/index.js';

/** The table weft owns in each family. */
export const TABLE_NAME = 'weft';

/** The nft family keyword of an IP family. */
export function nftFamily(family: Family): 'ip' | 'ip6' {
  return family === 4 ? 'ip' : 'ip6';
}

/** kube-proxy's hash: the first 8 characters of base32(sha256(text)) in nftables mode. */
export function shortHash(text: string): string {
  return hashName(text, 8);
}

/** The protocols, as nft spells them. */
export const NFT_PROTOS = ['tcp', 'udp', 'sctp'] as const;
export type NftProto = (typeof NFT_PROTOS)[number];

/** The lowercase protocol, as nft spells it. */
export function nftProto(sp: ServicePort): NftProto {
  return sp.protocol.toLowerCase() as NftProto;
}

function portBase(sp: ServicePort): string {
  const proto = nftProto(sp);
  return `${shortHash(sp.id + proto)}-${sp.namespace}/${sp.name}/${proto}/${sp.portName || String(sp.port)}`;
}

/** The chains and sets of one service port. */
export interface ServicePortNames {
  /** DNAT to any usable endpoint. */
  cluster: string;
  /** DNAT to this node's usable endpoints (Local traffic policies). */
  local: string;
  /** Entry of externalIP and LB traffic. */
  external: string;
  /** Entry of NodePort traffic. */
  nodePort: string;
}

/** Chain names of one service port. */
export function servicePortNames(sp: ServicePort): ServicePortNames {
  const base = portBase(sp);
  return {
    cluster: `service-${base}`,
    local: `local-${base}`,
    external: `external-${base}`,
    nodePort: `nodeport-${base}`,
  };
}

/**
 * The endpoint chain and the affinity set of one endpoint of one service port (IPv6 colons become
 * dots: nft identifiers cannot hold them).
 */
export function endpointNames(sp: ServicePort, ep: Endpoint): { chain: string; affinity: string } {
  const proto = nftProto(sp);
  const h = shortHash(`${sp.id}${proto}${ep.ip}:${ep.port}`);
  const base = `${h}-${sp.namespace}/${sp.name}/${proto}/${sp.portName || String(sp.port)}__${ep.ip.replaceAll(':', '.')}/${ep.port}`;
  // The affinity set's hash covers the timeout: a new timeout is a new set, so a full sync can
  // keep every existing set (and the clients it remembers) by name.
  const ha = shortHash(`${sp.id}${proto}${ep.ip}:${ep.port}/${sp.affinityTimeoutSeconds}`);
  return { chain: `endpoint-${base}`, affinity: `affinity-${ha}${base.slice(h.length)}` };
}

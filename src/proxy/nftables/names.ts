/**
 * Names of the nftables objects weft writes. They follow kube-proxy's nftables mode
 * (`service-<hash>-<ns>/<name>/<proto>/<port>`) so an operator can read them, with kube-proxy's
 * hash so that the same service port has the same hash in every mode.
 */
import { nftIdentifierPart } from '../../escape/index.js';
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

/**
 * Longest readable part of a name: the hash in front identifies the object, the rest is for the
 * operator. Kubernetes' longest valid names (63 + 63 + 15) fit uncut; with the endpoint part and
 * the prefixes every name stays under nft's 255 bytes.
 */
const READABLE_MAX = 160;
const ENDPOINT_READABLE_MAX = 50;

// The readable part of the names of a service port, escaped: a registry name never reaches the
// script as it is, whatever validation let through.
function readable(sp: ServicePort, proto: NftProto): string {
  return nftIdentifierPart(
    `${sp.namespace}/${sp.name}/${proto}/${sp.portName || String(sp.port)}`,
    READABLE_MAX,
  );
}

function portBase(sp: ServicePort): string {
  const proto = nftProto(sp);
  return `${shortHash(sp.id + proto)}-${readable(sp, proto)}`;
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
  const epPart = nftIdentifierPart(`${ep.ip.replaceAll(':', '.')}/${ep.port}`, ENDPOINT_READABLE_MAX);
  const base = `${h}-${readable(sp, proto)}__${epPart}`;
  // The affinity set's hash covers the timeout: a new timeout is a new set, so a full sync can
  // keep every existing set (and the clients it remembers) by name.
  const ha = shortHash(`${sp.id}${proto}${ep.ip}:${ep.port}/${sp.affinityTimeoutSeconds}`);
  return { chain: `endpoint-${base}`, affinity: `affinity-${ha}${base.slice(h.length)}` };
}

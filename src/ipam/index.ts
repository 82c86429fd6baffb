/**
 * IP address management for weft: CIDR arithmetic, flannel's network config, lease keys and
 * values in flannel's formats, and the choice of a node's subnet. Pure code, no I/O.
 */
export {
  ADDRESS_BITS,
  bigIntToIp,
  canonicalIp,
  ipFamily,
  ipToBigInt,
  isIPv4,
  isIPv6,
  parseIp,
  type IpFamily,
} from './ip.js';
export { Cidr, parseCidrField, type CidrFieldOptions } from './cidr.js';
export {
  netConfigJsonSchema,
  parseNetConfig,
  type AllocBackend,
  type BackendConfig,
  type HostGwBackend,
  type NetConfig,
  type NetConfigJson,
  type SubnetPool,
  type UdpBackend,
  type VxlanBackend,
} from './net-config.js';
export {
  DEFAULT_PREFIX,
  formatSubnetKey,
  parseSubnetKey,
  subnetKeyOfPath,
  subnetPath,
  subnetsDir,
  type SubnetKey,
} from './subnet-key.js';
export { decodeLeaseAttrs, encodeLeaseAttrs, type LeaseAttrs } from './lease-attrs.js';
export { CANDIDATE_LIMIT, allocateSubnet, leaseFitsConfig, subnetFitsPool } from './allocator.js';

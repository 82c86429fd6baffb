/**
 * IP address management for weft: CIDR arithmetic, flannel's network config, lease keys and
 * values in flannel's formats, and the choice of a node's subnet: pure code, no I/O. Besides, the
 * Service ClusterIP/nodePort allocator, whose only I/O is through the store it is given.
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
export {
  DEFAULT_NODE_PORT_RANGE,
  DEFAULT_RECLAIM_GRACE_MS,
  DEFAULT_SERVICE_CIDR,
  ServiceAllocator,
  allocationKey,
  allocationsPrefix,
  formatPortRange,
  parsePortRange,
  type Allocation,
  type AllocationKind,
  type AllocationStore,
  type OwnerHolds,
  type PortRange,
  type ServiceAllocatorOptions,
} from './service-allocator.js';

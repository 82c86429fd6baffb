/**
 * weft-flanneld's backends: the {@link Backend} contract (prepare devices, plan a
 * {@link DesiredState} from the leases), the registry by `Backend.Type`, and the built-in
 * `vxlan`, `host-gw` and `alloc`. A new backend registers a factory here; the dataplane and the
 * daemon stay as they are.
 */
import { createAllocBackend } from './alloc.js';
import { createHostGwBackend } from './host-gw.js';
import { registerBackend } from './registry.js';
import { createUdpBackend } from './udp.js';
import { createVxlanBackend } from './vxlan.js';

export {
  leaseAttrsOf,
  type Backend,
  type BackendContext,
  type BackendFactory,
  type ExternalInterface,
  type NodeLease,
  type PlanInput,
  type PreparedBackend,
  type PreparedDevice,
  type Underlay,
} from './backend.js';
export {
  emptyDesiredState,
  sortSkips,
  type AddressEntry,
  type DesiredState,
  type FdbEntry,
  type LeaseSkip,
  type NeighbourEntry,
  type Ownership,
  type RouteEntry,
} from './desired-state.js';
export {
  assertBackendAvailable,
  createBackend,
  registerBackend,
  registeredBackendTypes,
  unregisterBackend,
} from './registry.js';
export {
  clusterFamilies,
  selectRemoteLeases,
  type ClusterFamily,
  type LeaseSelection,
  type RemoteLease,
  type SelectOptions,
} from './remote-leases.js';
export { isDirectlyConnected } from './underlay.js';
export {
  deriveVtepMac,
  parseVxlanBackendData,
  unicastMac,
  vxlanBackendData,
  type VxlanLeaseData,
} from './vtep-mac.js';
export { VXLAN_OVERHEAD, VxlanBackendImpl, createVxlanBackend, planVxlan, vxlanDeviceName } from './vxlan.js';
export { createHostGwBackend, planHostGw } from './host-gw.js';
export { createAllocBackend, planAlloc } from './alloc.js';

export { UDP_DEVICE, UDP_OVERHEAD, createUdpBackend, planUdp, udpRouteTable } from './udp.js';

registerBackend('vxlan', createVxlanBackend);
registerBackend('host-gw', createHostGwBackend);
registerBackend('alloc', createAllocBackend);
registerBackend('udp', createUdpBackend);

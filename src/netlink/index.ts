/**
 * Typed rtnetlink for weft: links (vxlan, veth, bridge), addresses, ARP neighbours, FDB entries,
 * routes and change events, as plain value objects. The only module that imports `netlink`.
 *
 * Every request has a deadline (WeftError TIMEOUT); every kernel refusal is a WeftError NETLINK
 * whose message and details name the operation, the object and the errno
 * (`netlink addRoute 10.244.2.0/24 via 10.244.2.0 dev flannel.1: EEXIST`).
 */
export { Netlink, openNetlink, type NetlinkOptions } from './client.js';
export { Links, DEFAULT_VXLAN_PORT } from './links.js';
export { Addresses, type AddressListOptions } from './addresses.js';
export { Neighbours, Fdb, type NeighbourListOptions, type FdbListOptions } from './neighbours.js';
export { Routes, type RouteListOptions } from './routes.js';
export {
  NetlinkEvents,
  openNetlinkEvents,
  type NetlinkEvent,
  type NetlinkEventAction,
  type NetlinkEventGroup,
  type NetlinkEventsOptions,
} from './events.js';
export { NetlinkSocket, type NetlinkSocketOptions, type Transport } from './socket.js';
export { errnoName, errnoOf } from './errors.js';
export * from './types.js';

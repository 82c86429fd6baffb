/**
 * The Kubernetes objects weft reads from the registry (Service, EndpointSlice, Pod, Node, and
 * weft-cni's pod attachments): their schemas and validation, their registry keys, label
 * selectors, and the list-and-watch tracker. One component shared by
 * weft-proxy, weftctl and (later) weft-controller, so that one validation guards every door.
 */
export * from './schema.js';
export * from './keys.js';
export * from './pod.js';
export * from './label-selector.js';
export * from './object-tracker.js';
export * from './names.js';
export * from './limits.js';
export * from './addresses.js';
export * from './service-policy.js';

/**
 * The Kubernetes objects weft reads from the registry (Service, EndpointSlice): their schemas and
 * validation, their registry keys, and the list-and-watch tracker. One component shared by
 * weft-proxy, weftctl and (later) weft-controller, so that one validation guards every door.
 */
export * from './schema.js';
export * from './keys.js';
export * from './pod.js';
export * from './object-tracker.js';
export * from './names.js';
export * from './limits.js';
export * from './addresses.js';
export * from './service-policy.js';

// The proxy's view of the shared object model: the objects themselves come from src/k8s; what is
// the proxy's own is how a service port is joined with its endpoints.
export * from '../../k8s/schema.js';
export * from '../../k8s/keys.js';
export * from './service-port.js';

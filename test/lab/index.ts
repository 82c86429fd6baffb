/**
 * The lab: network namespaces, real servers and processes for integration tests and the demo.
 * Import from here, not from the files behind it.
 */
export * from './exec.js';
export * from './netns.js';
export * from './servers.js';
export * from './topology.js';
export * from './cni-plugin.js';
export * from './pods.js';
export * from './lab.js';
export * from './flanneld.js';
export * from './proxy.js';
export * from './controller.js';

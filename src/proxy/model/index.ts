export * from './schema.js';
export * from './service-port.js';
export * from './keys.js';

export * from './endpoint-slices.js';

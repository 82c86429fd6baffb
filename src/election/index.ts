/**
 * Leader election through the registry: one leader among candidates, a fencing guard for its
 * writes, and who leads for status displays.
 */
export { LeaderElector, type ElectionHolder, type LeaderElectorOptions } from './leader-elector.js';
export { decodeRecord, encodeRecord, type ElectionRecord } from './record.js';

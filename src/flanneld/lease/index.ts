/**
 * The subnet lease of weft-flanneld: the pure choice of a lease from a registry listing
 * ({@link chooseLease}) and its lifecycle over a Store ({@link LeaseManager}), in flannel's
 * etcd layout and JSON.
 */
export {
  chooseLease,
  isOwnLease,
  readLeaseListing,
  type ChooseLeaseInput,
  type LeaseChoice,
  type LeaseListing,
  type ParsedLease,
  type PreviousRejection,
  type SkippedLease,
} from './choose-lease.js';
export {
  DEFAULT_LEASE_TTL_SECONDS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_RENEW_MARGIN_SECONDS,
  LeaseManager,
  type AcquireOptions,
  type Lease,
  type LeaseEvent,
  type LeaseManagerOptions,
  type LeaseSource,
} from './lease-manager.js';

/**
 * weft-flanneld's dataplane: the {@link Dataplane} that keeps a backend's kernel state in place
 * (on lease updates, netlink notifications and a periodic check), the {@link Reconciler} that
 * runs one pass, and the pure pieces they are made of: {@link diffState} and the scoped views of
 * a kernel dump.
 */
export { Dataplane, type DataplaneOptions, type DataplaneStatus, type ReconcileResult } from './dataplane.js';
export {
  DataplaneMetrics,
  type DataplaneErrorStage,
  type ReconcileTrigger,
  type RepairKind,
} from './dataplane-metrics.js';
export {
  Reconciler,
  ReconcileStageError,
  type DataplaneInput,
  type OpFailure,
  type PlannedHook,
  type ReconcileOutcome,
  type ReconcilerOptions,
  type UnreadableLease,
} from './reconciler.js';
export {
  addressKey,
  describeEntry,
  describeOp,
  diffState,
  entryKey,
  fdbKey,
  fdbMatches,
  neighbourKey,
  neighbourMatches,
  routeKey,
  routeMatches,
  type ActualState,
  type DataplaneOp,
  type EntryKind,
  type KindedEntry,
  type OpAction,
} from './diff-state.js';
export { actualStateOf, readKernelSnapshot, underlayOf, type KernelSnapshot } from './kernel-snapshot.js';
export { EventRelevance } from './event-relevance.js';

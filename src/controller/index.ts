/**
 * weft-controller: EndpointSlices for the Services with a selector, from the pods in the
 * registry, leader-elected, with node lifecycle. The public face: the pure slice planning, the
 * loop, the node lifecycle, the daemon and its flags.
 */
export * from './endpoint-slices.js';
export {
  CONTROLLER_KINDS,
  SliceController,
  type ControllerLeadership,
  type ControllerObjects,
  type SliceControllerOptions,
} from './controller.js';
export {
  DEFAULT_MAX_NODES,
  HEARTBEAT_DAEMON,
  NodeLifecycle,
  NodePresence,
  heartbeatNode,
  type NodeLifecycleOptions,
} from './node-lifecycle.js';
export { WorkQueue, type WorkItem } from './work-queue.js';
export {
  CONTROLLER_ENV_PREFIX,
  CONTROLLER_FLAGS,
  DEFAULT_CONTROLLER_HEALTHZ_PORT,
  DEFAULT_CONTROLLER_METRICS_PORT,
  controllerHelp,
  parseControllerFlags,
  parseSecondsOrDuration,
  resolveControllerConfig,
  type ControllerConfig,
  type ControllerFlags,
  type ResolveControllerOptions,
} from './flags.js';
export { WeftController, type WeftControllerOptions } from './daemon.js';

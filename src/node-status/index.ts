/**
 * Daemon status records in the registry: what each daemon publishes about itself for
 * `weftctl status`.
 */
export {
  NODE_DAEMONS,
  STATUS_DAEMONS,
  parseDaemonStatus,
  statusKey,
  statusPrefix,
  type DaemonStatus,
  type StatusDaemon,
} from './status-record.js';
export {
  StatusPublisher,
  healthUrl,
  type StatusPublisherOptions,
  type StatusSnapshot,
} from './status-publisher.js';

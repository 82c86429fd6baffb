/**
 * Backends by config type, in the manner of grpc-js's resolver and load-balancer registries: an
 * implementation registers a factory under its name, and the daemon asks for the one its network
 * config names without knowing the implementations.
 */
import { ErrorCodes, invalid } from '../../errors/index.js';
import type { Backend, BackendContext, BackendFactory } from './backend.js';

const factories = new Map<string, BackendFactory>();

/** Register `factory` for `Backend.Type` `type`, replacing any earlier one (tests substitute fakes). */
export function registerBackend(type: string, factory: BackendFactory): void {
  factories.set(type, factory);
}

/** Remove a registration; for tests. */
export function unregisterBackend(type: string): void {
  factories.delete(type);
}

/** The registered types, sorted. */
export function registeredBackendTypes(): string[] {
  return [...factories.keys()].sort();
}

/**
 * The backend for `ctx.config.backend.type`. Throws WEFT_INVALID_CONFIG naming the type when none
 * is registered (e.g. `udp` before the native backend exists).
 */
export function createBackend(ctx: BackendContext): Backend {
  return factoryOf(ctx.config.backend.type)(ctx);
}

/**
 * Throws WEFT_INVALID_CONFIG (field `Backend.Type`) unless a backend is registered for `type`: a
 * config may be valid flannel and still name a backend this build lacks, and a daemon must treat
 * it as invalid (keep waiting, or keep the running config) rather than fail on it.
 */
export function assertBackendAvailable(type: string): void {
  factoryOf(type);
}

function factoryOf(type: string): BackendFactory {
  const factory = factories.get(type);
  if (!factory) {
    throw invalid(
      'net-conf',
      'Backend.Type',
      `backend ${JSON.stringify(type)} is not available in this build (available: ${registeredBackendTypes().join(', ')})`,
      ErrorCodes.INVALID_CONFIG,
    );
  }
  return factory;
}

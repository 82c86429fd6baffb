/**
 * The registry: where nodes publish their subnet leases and watch each other's. One contract
 * (./store.ts), backends registered by name (etcd, redis, memory), opened from options or a
 * URL.
 */
import { ErrorCodes, WeftError, invalid } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import type { Registry } from '../metrics/index.js';
import { EtcdStore, type EtcdStoreOptions } from './etcd-store.js';
import { MemoryStore, type MemoryStoreOptions } from './memory-store.js';
import { RedisStore, type RedisStoreOptions } from './redis-store.js';
import type { Store } from './store.js';

export type * from './store.js';
export { EtcdStore, type EtcdStoreOptions, type EtcdTlsOptions } from './etcd-store.js';
export { MemoryStore, type MemoryStoreOptions } from './memory-store.js';
export { RedisStore, type RedisStoreOptions } from './redis-store.js';

/**
 * Options of {@link openStore}. A third-party backend adds its own options field by
 * augmenting this interface (`declare module`), as the built-in ones have theirs.
 */
export interface OpenStoreOptions {
  /** Backend name, as registered: `etcd` (default), `redis`, `memory`. */
  registry?: string;
  /** Options of the etcd backend. */
  etcd?: EtcdStoreOptions;
  /** Options of the redis backend. */
  redis?: RedisStoreOptions;
  /** Options of the memory backend. */
  memory?: MemoryStoreOptions;
  /** Logger for any backend (a backend's own `logger` option wins). */
  logger?: Logger;
  /** Prometheus registry for the weft_registry_* metrics (a backend's own option wins). */
  metrics?: Registry;
}

/** Opens a store of one backend from the whole options object. */
export type StoreFactory = (options: OpenStoreOptions) => Promise<Store>;

const backends = new Map<string, StoreFactory>();

/** Makes a backend available to {@link openStore} under `name`; a later registration replaces it. */
export function registerStoreBackend(name: string, factory: StoreFactory): void {
  if (!/^[a-z][a-z0-9_-]*$/.test(name))
    throw invalid('registerStoreBackend', 'name', `bad backend name ${JSON.stringify(name)}`);
  backends.set(name, factory);
}

/** Names of the registered backends. */
export function storeBackends(): string[] {
  return [...backends.keys()].sort();
}

/**
 * Opens a store. `target` is an options object, or a URL: `redis://…`/`rediss://…` for Redis,
 * `http://…`/`https://…` (comma-separated for several members) for etcd, `memory:` for an
 * in-process store.
 */
export async function openStore(target: OpenStoreOptions | string): Promise<Store> {
  const options = typeof target === 'string' ? optionsFromUrl(target) : target;
  const name = options.registry ?? 'etcd';
  const factory = backends.get(name);
  if (!factory) {
    throw new WeftError(
      ErrorCodes.INVALID_CONFIG,
      `registry backend ${JSON.stringify(name)} is not registered (known: ${storeBackends().join(', ')})`,
      { field: 'registry' },
    );
  }
  return factory(options);
}

function optionsFromUrl(url: string): OpenStoreOptions {
  if (/^rediss?:\/\//.test(url)) return { registry: 'redis', redis: { url } };
  if (/^https?:\/\//.test(url)) {
    return {
      registry: 'etcd',
      etcd: {
        endpoints: url
          .split(',')
          .map((u) => u.trim())
          .filter(Boolean),
      },
    };
  }
  if (url === 'memory:' || url === 'memory://') return { registry: 'memory' };
  throw invalid(
    'openStore',
    'url',
    `no registry backend for ${JSON.stringify(url)}`,
    ErrorCodes.INVALID_CONFIG,
  );
}

const common = (o: OpenStoreOptions): { logger?: Logger; metrics?: Registry } => ({
  ...(o.logger ? { logger: o.logger } : {}),
  ...(o.metrics ? { metrics: o.metrics } : {}),
});

registerStoreBackend('etcd', (o) => EtcdStore.open({ ...common(o), ...o.etcd }));
registerStoreBackend('redis', (o) => RedisStore.open({ ...common(o), ...o.redis }));
registerStoreBackend('memory', (o) => Promise.resolve(new MemoryStore({ ...common(o), ...o.memory })));

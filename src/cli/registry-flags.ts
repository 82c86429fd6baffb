/**
 * The registry flags weft's daemons share (`--registry`, `--etcd-endpoints`, the etcd TLS and auth
 * flags), with one validation, and the opening of the store they name. A daemon spreads the specs
 * into its own flag table, so the names, defaults and errors are the same in every program and an
 * operator configures weft-flanneld and weft-proxy on a node the same way.
 */
import type { Registry } from 'prom-client';
import { ErrorCodes, WeftError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import type { OpenStoreOptions, Store } from '../registry/index.js';
import { listFlag, stringFlag } from './flag-parser.js';

/** The etcd connection flags, in help order. */
export const ETCD_CONNECTION_FLAGS = {
  etcdEndpoints: listFlag({
    name: 'etcd-endpoints',
    metavar: '<url,...>',
    description: 'etcd endpoints, comma-separated (the flag may also be repeated).',
    default: ['http://127.0.0.1:2379'],
    commaSeparated: true,
    nonEmpty: true,
    validate: httpUrl,
  }),
} as const;

/** The etcd TLS and authentication flags, in help order. */
export const ETCD_AUTH_FLAGS = {
  etcdKeyfile: stringFlag({
    name: 'etcd-keyfile',
    metavar: '<file>',
    description: 'TLS key file for etcd client authentication; needs --etcd-certfile.',
    validate: nonEmpty,
  }),
  etcdCertfile: stringFlag({
    name: 'etcd-certfile',
    metavar: '<file>',
    description: 'TLS certificate file for etcd client authentication; needs --etcd-keyfile.',
    validate: nonEmpty,
  }),
  etcdCafile: stringFlag({
    name: 'etcd-cafile',
    metavar: '<file>',
    description: 'CA bundle that verifies the etcd servers.',
    validate: nonEmpty,
  }),
  etcdUsername: stringFlag({
    name: 'etcd-username',
    metavar: '<name>',
    description: 'Username for etcd authentication.',
    validate: nonEmpty,
  }),
  etcdPassword: stringFlag({
    name: 'etcd-password',
    metavar: '<password>',
    description: 'Password for etcd authentication (prefer the environment variable to the command line).',
    secret: true,
  }),
} as const;

/**
 * The `--registry` flag. `what` completes "Where … are kept" in its help (`leases`,
 * `services and endpoint slices`).
 */
export function registryFlag(what: string) {
  return stringFlag({
    name: 'registry',
    metavar: '<etcd|redis-url>',
    description: `Where ${what} are kept: "etcd" (the --etcd-* flags apply) or redis://host[:port][/db].`,
    default: 'etcd',
    validate: registryTarget,
  });
}

/** The parsed registry flags, as every daemon's flags carry them. */
export interface RegistryFlags {
  /** etcd client URLs (`--etcd-endpoints`). */
  etcdEndpoints: string[];
  /** TLS client key (`--etcd-keyfile`); set together with `etcdCertfile`. */
  etcdKeyfile: string | undefined;
  /** TLS client certificate (`--etcd-certfile`). */
  etcdCertfile: string | undefined;
  /** CA bundle for the etcd servers (`--etcd-cafile`). */
  etcdCafile: string | undefined;
  /** etcd username (`--etcd-username`). */
  etcdUsername: string | undefined;
  /** etcd password (`--etcd-password`); never logged. */
  etcdPassword: string | undefined;
  /** `etcd`, or a `redis://` URL (`--registry`). */
  registry: string;
}

/**
 * The checks across registry flags that a single flag's validator cannot make: a client
 * certificate needs its key and the other way round. Throws INVALID_ARGUMENT naming the flag.
 */
export function checkRegistryFlags(values: RegistryFlags): void {
  if ((values.etcdCertfile === undefined) !== (values.etcdKeyfile === undefined)) {
    const missing = values.etcdCertfile === undefined ? 'etcd-certfile' : 'etcd-keyfile';
    const given = missing === 'etcd-certfile' ? 'etcd-keyfile' : 'etcd-certfile';
    throw new WeftError(ErrorCodes.INVALID_ARGUMENT, `flag --${missing}: required when --${given} is set`, {
      object: 'flag',
      field: `--${missing}`,
    });
  }
}

/**
 * Why the flags send a registry password in clear text, or undefined when they do not: an etcd
 * password with an `http://` endpoint (etcd's password login travels unencrypted), or a password
 * in a plain `redis://` URL. Endpoint URLs are named without their credentials.
 */
export function cleartextPasswordWarning(flags: RegistryFlags): string | undefined {
  if (flags.registry.startsWith('redis://')) {
    let url: URL;
    try {
      url = new URL(flags.registry);
    } catch {
      return undefined;
    }
    if (!url.password) return undefined;
    return `the Redis password in --registry is sent unencrypted (redis://${url.host}); use rediss://`;
  }
  if (flags.registry.startsWith('rediss://') || !flags.etcdPassword) return undefined;
  const plain = flags.etcdEndpoints
    .filter((e) => e.trim().toLowerCase().startsWith('http://'))
    .map(withoutCredentials);
  if (plain.length === 0) return undefined;
  return `--etcd-password is sent unencrypted to ${plain.join(', ')}; use https:// endpoints (--etcd-cafile)`;
}

function withoutCredentials(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    return `${url.protocol}//${url.host}`;
  } catch {
    return '(unparsable endpoint)';
  }
}

/** Deadlines of {@link openStoreFromFlags}; each backend's own default when absent. */
export interface StoreTimeouts {
  /** How long opening waits for a first answer, in ms. */
  dialTimeoutMs?: number;
  /** Deadline of each request, in ms. */
  requestTimeoutMs?: number;
}

/**
 * Why a `--registry-prefix` value is refused, or undefined: it must start with `/` and (unless it
 * is `/`) not end with one, so `<prefix>/<kind>/...` keys have exactly one slash between parts.
 */
export function registryPrefixProblem(v: string): string | undefined {
  if (!v.startsWith('/')) return 'must start with "/"';
  if (v.length > 1 && v.endsWith('/')) return 'must not end with "/"';
  return undefined;
}

/**
 * The options of `openStore` the flags name: etcd (default) or a `redis://` URL. Pure; `timeouts`
 * shortens the backend's deadlines (a CNI call cannot wait long).
 */
export function storeOptionsFromFlags(
  flags: RegistryFlags,
  logger: Logger,
  metrics?: Registry,
  timeouts: StoreTimeouts = {},
): OpenStoreOptions {
  if (flags.registry.startsWith('redis://') || flags.registry.startsWith('rediss://')) {
    return {
      registry: 'redis',
      redis: { url: flags.registry, ...timeouts },
      logger,
      ...(metrics && { metrics }),
    };
  }
  const tls =
    flags.etcdCafile || flags.etcdCertfile || flags.etcdKeyfile
      ? {
          ...(flags.etcdCafile && { caFile: flags.etcdCafile }),
          ...(flags.etcdCertfile && { certFile: flags.etcdCertfile }),
          ...(flags.etcdKeyfile && { keyFile: flags.etcdKeyfile }),
        }
      : undefined;
  return {
    registry: flags.registry,
    etcd: {
      endpoints: flags.etcdEndpoints,
      ...(tls && { tls }),
      ...(flags.etcdUsername && { username: flags.etcdUsername }),
      ...(flags.etcdPassword && { password: flags.etcdPassword }),
      ...timeouts,
    },
    logger,
    ...(metrics && { metrics }),
  };
}

/**
 * The store the flags name: etcd (default) or a `redis://` URL. Warns once about a cleartext
 * password. The registry's code is loaded on the first call, so a program that only validates
 * the flags (weft-cni's config check) does not load the etcd and Redis clients.
 */
export async function openStoreFromFlags(
  flags: RegistryFlags,
  logger: Logger,
  metrics?: Registry,
  timeouts: StoreTimeouts = {},
): Promise<Store> {
  const cleartext = cleartextPasswordWarning(flags);
  if (cleartext) logger.warn({ field: flags.etcdPassword ? '--etcd-password' : '--registry' }, cleartext);
  const { openStore } = await import('../registry/index.js');
  return openStore(storeOptionsFromFlags(flags, logger, metrics, timeouts));
}

/** A validator for flags that must not be blank. */
export function nonEmpty(v: string): string | undefined {
  return v.trim() === '' ? 'must not be empty' : undefined;
}

function httpUrl(v: string): string | undefined {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return 'must be an http:// or https:// URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http:// or https:// URL';
  if (!url.hostname) return 'must name a host';
  return undefined;
}

function registryTarget(v: string): string | undefined {
  if (v === 'etcd') return undefined;
  const bad = 'must be "etcd" or redis://host[:port][/db]';
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return bad;
  }
  if (url.protocol !== 'redis:' || !url.hostname) return bad;
  if (url.search || url.hash) return `${bad} without query or fragment`;
  const db = url.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) return `${bad}, with db a non-negative integer`;
  return undefined;
}

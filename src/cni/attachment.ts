/**
 * The pod attachment record: what weft-cni writes at `<prefix>/podattachments/<ns>/<name>` on ADD
 * (the pod's addresses as host-local gave them, its node, the container) and removes on DEL.
 * weft has no kubelet to write `status.podIPs`; this record is what gives a declared pod its IP.
 *
 * Loaded only when the network config has a `weftRegistry` section, so flannel-compatible calls
 * never load a registry client.
 */
import { hostname } from 'node:os';
import {
  checkRegistryFlags,
  cleartextPasswordWarning,
  ETCD_AUTH_FLAGS,
  ETCD_CONNECTION_FLAGS,
  registryFlag,
  registryPrefixProblem,
  storeOptionsFromFlags,
  type RegistryFlags,
} from '../cli/registry-flags.js';
import { ErrorCodes, isWeftError, messageOf } from '../errors/index.js';
import { canonicalIp, ipFamily } from '../ipam/index.js';
// The two leaf modules, not k8s/index.js: a CNI call starts a process per pod operation, and the
// index loads every schema and the object tracker, which weft-cni never uses.
import { DEFAULT_PROXY_PREFIX, podAttachmentKey } from '../k8s/keys.js';
import { dns1123SubdomainProblem } from '../k8s/names.js';
import type { Logger } from '../log/index.js';
import type { Store } from '../registry/index.js';
import type { PodIdentity } from './cni-args.js';
import { CniError, CniErrorCodes } from './cni-error.js';
import { configFieldError, type JsonObject, type WeftRegistryConf } from './net-conf.js';

/** The `weftRegistry` section, checked, with defaults applied. */
export interface RegistryTarget {
  /** The store to open, in the daemons' flag form. */
  flags: RegistryFlags;
  /** Key prefix. */
  prefix: string;
  /** The node name written into records. */
  nodeName: string;
}

/** Opens the store a section names; tests inject a memory store. */
export type RegistryOpener = (flags: RegistryFlags, log: Logger) => Promise<Store>;

/**
 * Deadlines of registry calls: a runtime waits for the plugin, and the kubelet retries a failed
 * ADD, so failing within seconds beats hanging on an unreachable registry.
 */
export const REGISTRY_DIAL_TIMEOUT_MS = 5_000;
export const REGISTRY_REQUEST_TIMEOUT_MS = 5_000;

/** Attempts of a compare-and-swap before giving up (another writer keeps winning). */
const CAS_ATTEMPTS = 5;

/**
 * The real opener: the daemons' store options, with deadlines fit for a CNI call. Only the one
 * backend the section names is loaded (registry/index.js would load the etcd and the Redis
 * client, over a second of a pod's start on a busy node).
 */
export const openRegistry: RegistryOpener = async (flags, log) => {
  const cleartext = cleartextPasswordWarning(flags);
  if (cleartext) log.warn({ field: flags.etcdPassword ? 'etcdPassword' : 'registry' }, cleartext);
  const o = storeOptionsFromFlags(flags, log, undefined, {
    dialTimeoutMs: REGISTRY_DIAL_TIMEOUT_MS,
    requestTimeoutMs: REGISTRY_REQUEST_TIMEOUT_MS,
  });
  if (o.registry === 'redis') {
    const { RedisStore } = await import('../registry/redis-store.js');
    return RedisStore.open({ logger: log, ...o.redis });
  }
  const { EtcdStore } = await import('../registry/etcd-store.js');
  return EtcdStore.open({ logger: log, ...o.etcd });
};

const field = (name: string): string => `weftRegistry.${name}`;

/**
 * Checks the section with the rules of the daemons' registry flags (one validation for both) and
 * applies the same defaults. Throws INVALID_CONFIG (7) naming the field.
 */
export function registryTarget(conf: WeftRegistryConf, host: () => string = hostname): RegistryTarget {
  const check = (name: string, value: string, validate: ((v: string) => string | undefined) | undefined) => {
    const problem = validate?.(value);
    if (problem) throw configFieldError(field(name), problem);
  };
  const registry = conf.registry ?? 'etcd';
  check('registry', registry, registryFlag('pod attachments').validate);
  const endpoints = conf.etcdEndpoints ?? [...ETCD_CONNECTION_FLAGS.etcdEndpoints.default];
  if (endpoints.length === 0) throw configFieldError(field('etcdEndpoints'), 'must not be empty');
  endpoints.forEach((e, i) => check(`etcdEndpoints.${i}`, e, ETCD_CONNECTION_FLAGS.etcdEndpoints.validate));
  const auth = {
    etcdCafile: conf.etcdCafile,
    etcdCertfile: conf.etcdCertfile,
    etcdKeyfile: conf.etcdKeyfile,
    etcdUsername: conf.etcdUsername,
  } as const;
  for (const [name, value] of Object.entries(auth)) {
    if (value !== undefined) check(name, value, ETCD_AUTH_FLAGS[name as keyof typeof auth].validate);
  }
  const flags: RegistryFlags = {
    registry,
    etcdEndpoints: endpoints,
    ...auth,
    etcdPassword: conf.etcdPassword,
  };
  try {
    checkRegistryFlags(flags);
  } catch (err) {
    // The flags' message names --etcd-certfile; here the field is etcdCertfile.
    const missing = flags.etcdCertfile === undefined ? 'etcdCertfile' : 'etcdKeyfile';
    const given = missing === 'etcdCertfile' ? 'etcdKeyfile' : 'etcdCertfile';
    if (isWeftError(err)) throw configFieldError(field(missing), `is required when ${given} is set`);
    throw err;
  }
  const prefix = conf.prefix ?? DEFAULT_PROXY_PREFIX;
  check('prefix', prefix, registryPrefixProblem);
  const nodeName = conf.nodeName ?? host().toLowerCase();
  const nodeProblem = dns1123SubdomainProblem(nodeName);
  if (nodeProblem) {
    throw configFieldError(
      field('nodeName'),
      `${JSON.stringify(nodeName.slice(0, 100))} ${nodeProblem}${conf.nodeName === undefined ? ' (from the host name; set nodeName)' : ''}`,
    );
  }
  return { flags, prefix, nodeName };
}

/**
 * The pod's addresses in an ADD result (`ips[].address`, CIDR form): canonical, without prefix
 * length, at most one per family (the first), as a Pod's `status.podIPs`. Throws
 * DELEGATE_BAD_OUTPUT when the result has none: a pod without an address cannot be recorded.
 */
export function resultIps(result: JsonObject): string[] {
  const out: string[] = [];
  const families = new Set<number>();
  const ips = Array.isArray(result.ips) ? (result.ips as unknown[]) : [];
  for (const entry of ips) {
    const address = (entry as { address?: unknown } | null)?.address;
    if (typeof address !== 'string') continue;
    const ip = address.split('/')[0] ?? '';
    const family = ipFamily(ip);
    if (family === undefined || families.has(family)) continue;
    families.add(family);
    out.push(canonicalIp(ip));
  }
  if (out.length === 0) {
    throw new CniError(
      CniErrorCodes.DELEGATE_BAD_OUTPUT,
      'the delegate ADD result has no IP address to record',
    );
  }
  return out;
}

/** The stored JSON of a record (INTERFACES section 1; parsePodAttachment reads it). */
export function attachmentJson(
  pod: PodIdentity,
  node: string,
  containerId: string,
  ips: readonly string[],
): string {
  return JSON.stringify({
    apiVersion: 'weft.dev/v1',
    kind: 'PodAttachment',
    metadata: { namespace: pod.namespace, name: pod.name },
    node,
    containerId,
    ips,
  });
}

/** The containerId of a stored record, or undefined when the value is not a record. */
export function storedContainerId(value: string): string | undefined {
  try {
    const v = JSON.parse(value) as { containerId?: unknown } | null;
    return typeof v?.containerId === 'string' ? v.containerId : undefined;
  } catch {
    return undefined;
  }
}

/** A registry failure as a CNI error: TRY_AGAIN_LATER (11) when unreachable, so the runtime retries. */
export function registryError(what: string, err: unknown): CniError {
  if (err instanceof CniError) return err;
  const unavailable = isWeftError(err) && err.code === ErrorCodes.REGISTRY_UNAVAILABLE;
  return new CniError(
    unavailable ? CniErrorCodes.TRY_AGAIN_LATER : CniErrorCodes.REGISTRY_FAILED,
    `weftRegistry: ${what}: ${messageOf(err)}`,
  );
}

/**
 * Writes the record, replacing whatever is there: a new ADD for a pod name is a new sandbox (the
 * pod was recreated), and the old one's DEL will leave the new record alone (its containerId
 * differs). Compare-and-swap, so a concurrent writer is never overwritten blindly.
 */
export async function writeAttachment(store: Store, key: string, value: string): Promise<void> {
  for (let i = 0; i < CAS_ATTEMPTS; i++) {
    const current = await store.get(key);
    if (!current) {
      if ((await store.create(key, value)).created) return;
      continue;
    }
    if (current.value === value) return;
    if ((await store.update(key, value, { modRevision: current.modRevision }, { ttlSeconds: null })).updated)
      return;
  }
  throw new CniError(CniErrorCodes.REGISTRY_FAILED, `weftRegistry: ${key} kept changing; not written`);
}

/** What {@link removeAttachment} found. */
export type RemoveOutcome = 'removed' | 'absent' | 'other-container';

/**
 * Removes the record when it belongs to `containerId`, by compare-and-swap on its modRevision:
 * the record of a newer sandbox of the same pod (or an unreadable one) is left alone.
 */
export async function removeAttachment(
  store: Store,
  key: string,
  containerId: string,
): Promise<RemoveOutcome> {
  for (let i = 0; i < CAS_ATTEMPTS; i++) {
    const current = await store.get(key);
    if (!current) return 'absent';
    if (storedContainerId(current.value) !== containerId) return 'other-container';
    if (await store.delete(key, { modRevision: current.modRevision })) return 'removed';
  }
  throw new CniError(CniErrorCodes.REGISTRY_FAILED, `weftRegistry: ${key} kept changing; not removed`);
}

/** The key of a pod's record under the section's prefix. */
export function attachmentKey(target: RegistryTarget, pod: PodIdentity): string {
  return podAttachmentKey(target.prefix, pod.namespace, pod.name);
}

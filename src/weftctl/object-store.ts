/**
 * What an API server does with a Service or EndpointSlice on its way into the registry, for
 * `weftctl apply` and `delete`: fill in the namespace, a creation time, ClusterIPs and nodePorts
 * (allocated through src/ipam, so concurrent runs never share one), validate with weft-proxy's own
 * parser (what the daemons would refuse never gets stored), and write with a compare-and-swap so
 * a concurrent change is reported rather than overwritten. A re-applied Service keeps what it was
 * given; what it no longer uses is freed after the write, and what a failed write had taken is
 * freed at once.
 */
import { ErrorCodes, WeftError, invalid } from '../errors/index.js';
import type { ServiceAllocator } from '../ipam/index.js';
import {
  allocationKey,
  canonicalIp,
  ipFamily,
  type Allocation,
  type AllocationKind,
  type OwnerHolds,
} from '../ipam/index.js';
import {
  objectKey as registryKey,
  parseEndpointSlice,
  parseNode,
  parsePod,
  parseService,
  serviceKey,
} from '../k8s/index.js';
import type { Store } from '../registry/index.js';
import { canonicalJson, isRecord, type ManifestObject, type ObjectKind } from './manifest.js';

/** What an apply did to one object, in kubectl's words. */
export type ApplyOutcome = 'created' | 'configured' | 'unchanged';

/** The result of applying one object. */
export interface ApplyResult {
  outcome: ApplyOutcome;
  key: string;
  /** The object as stored. */
  object: Record<string, unknown>;
}

/** How kubectl names a kind in `service/web created`. */
export const KIND_RESOURCE: Record<ObjectKind, string> = {
  Service: 'service',
  EndpointSlice: 'endpointslice.discovery.k8s.io',
  Pod: 'pod',
  Node: 'node',
};

/** How kubectl names a kind's resource in `pods "web" not found`. */
export const KIND_PLURAL: Record<ObjectKind, string> = {
  Service: 'services',
  EndpointSlice: 'endpointslices.discovery.k8s.io',
  Pod: 'pods',
  Node: 'nodes',
};

/** The registry key of an object (`namespace` is ignored for a Node). */
export function objectKey(prefix: string, kind: ObjectKind, namespace: string, name: string): string {
  return registryKey(prefix, kind, namespace, name);
}

/** `pods "web" not found in namespace default`, as kubectl says it. */
export function notFound(kind: ObjectKind, namespace: string, name: string, key: string): WeftError {
  const where = kind === 'Node' ? '' : ` in namespace ${namespace}`;
  return new WeftError(ErrorCodes.NOT_FOUND, `${KIND_PLURAL[kind]} "${name}" not found${where}`, {
    object: key,
  });
}

/** `<namespace>/<name>`: how allocations name their owner. */
export function ownerOf(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** The ClusterIPs (canonical; `None` left out) and node ports a stored Service holds. */
export function allocatedValues(obj: unknown): { clusterips: string[]; nodeports: string[] } {
  const spec = isRecord(obj) && isRecord(obj.spec) ? obj.spec : {};
  const ips = new Set<string>();
  const listed = Array.isArray(spec.clusterIPs) ? (spec.clusterIPs as unknown[]) : [spec.clusterIP];
  for (const ip of listed) if (typeof ip === 'string' && ipFamily(ip) !== undefined) ips.add(canonicalIp(ip));
  const ports = new Set<string>();
  for (const p of Array.isArray(spec.ports) ? (spec.ports as unknown[]) : []) {
    if (isRecord(p) && typeof p.nodePort === 'number' && p.nodePort > 0) ports.add(String(p.nodePort));
  }
  if (typeof spec.healthCheckNodePort === 'number' && spec.healthCheckNodePort > 0)
    ports.add(String(spec.healthCheckNodePort));
  return { clusterips: [...ips], nodeports: [...ports] };
}

/**
 * The allocator's leak test: does the owner's stored Service hold the value? A Service whose text
 * is not JSON counts as holding it, so a broken object never loses its addresses to a reclaim.
 */
export function serviceOwnerHolds(store: Pick<Store, 'get'>, prefix: string): OwnerHolds {
  return async (kind: AllocationKind, value: string, owner: string) => {
    const [namespace, name, extra] = owner.split('/');
    if (!namespace || !name || extra !== undefined) return false;
    const kv = await store.get(serviceKey(prefix, namespace, name));
    if (!kv) return false;
    let obj: unknown;
    try {
      obj = JSON.parse(kv.value);
    } catch {
      return true;
    }
    return allocatedValues(obj)[kind].includes(value);
  };
}

function parseStored(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(text);
    return isRecord(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function record(v: unknown): Record<string, unknown> {
  return isRecord(v) ? v : {};
}

/** Applies one object: fill in, allocate, validate, write. Throws a WeftError naming the object. */
export async function applyObject(
  store: Store,
  allocator: ServiceAllocator,
  prefix: string,
  m: ManifestObject,
  now: () => Date = () => new Date(),
): Promise<ApplyResult> {
  const key = objectKey(prefix, m.kind, m.namespace, m.name);
  const current = await store.get(key);
  const existing = parseStored(current?.value);
  const obj = structuredClone(m.object);
  const metadata = record(obj.metadata);
  obj.metadata = metadata;
  // The server owns the creation time; a manifest's (kubectl prints `creationTimestamp: null`) is ignored.
  const created = record(existing?.metadata).creationTimestamp;
  metadata.creationTimestamp =
    typeof created === 'string'
      ? created
      : now()
          .toISOString()
          .replace(/\.\d+Z$/, 'Z');

  // Filled as values are taken, so a failure half-way still gives back what was taken before it.
  const allocations: Allocation[] = [];
  const owner = ownerOf(m.namespace, m.name);
  try {
    if (m.kind === 'Service') {
      // The manifest as written must pass before anything is allocated for it.
      parseService(key, m.namespace, m.name, JSON.stringify(m.object));
      await fillService(allocator, owner, key, obj, existing, allocations);
      parseService(key, m.namespace, m.name, JSON.stringify(obj));
    } else if (m.kind === 'EndpointSlice') {
      parseEndpointSlice(key, m.namespace, m.name, JSON.stringify(obj));
    } else if (m.kind === 'Pod') {
      keepServerFields(obj, existing);
      parsePod(key, m.namespace, m.name, JSON.stringify(obj));
    } else {
      parseNode(key, m.name, JSON.stringify(obj));
    }
    if (existing && canonicalJson(existing) === canonicalJson(obj)) {
      return { outcome: 'unchanged', key, object: existing };
    }
    const text = JSON.stringify(obj);
    const written = current
      ? (await store.update(key, text, { modRevision: current.modRevision })).updated
      : (await store.create(key, text)).created;
    if (!written) {
      throw new WeftError(
        ErrorCodes.CONFLICT,
        `${m.kind} ${key} was changed by someone else during this apply; apply again`,
        { object: key },
      );
    }
  } catch (err) {
    await allocator.rollback(allocations, owner).catch(() => undefined);
    throw err;
  }
  await checkStillOwned(allocator, owner, key, allocations);
  if (m.kind === 'Service' && existing) {
    const before = allocatedValues(existing);
    const after = allocatedValues(obj);
    for (const kind of ['clusterips', 'nodeports'] as const) {
      for (const v of before[kind]) if (!after[kind].includes(v)) await allocator.release(kind, v, owner);
    }
  }
  return { outcome: current ? 'configured' : 'created', key, object: obj };
}

/**
 * What the server owns in a stored Pod survives a re-apply, as with kube-apiserver: a pending
 * deletion (deletionTimestamp, deletionGracePeriodSeconds) and the status when the manifest gives
 * none (kubectl prints `status: {}`). A manifest with a status sets it: weft has no kubelet, and
 * a pod may be declared with its address.
 */
function keepServerFields(obj: Record<string, unknown>, existing: Record<string, unknown> | undefined): void {
  const metadata = record(obj.metadata);
  delete metadata.deletionTimestamp;
  delete metadata.deletionGracePeriodSeconds;
  const old = record(existing?.metadata);
  if (old.deletionTimestamp !== undefined) metadata.deletionTimestamp = old.deletionTimestamp;
  if (old.deletionGracePeriodSeconds !== undefined)
    metadata.deletionGracePeriodSeconds = old.deletionGracePeriodSeconds;
  const given = isRecord(obj.status) && Object.keys(obj.status).length > 0;
  if (!given && existing && isRecord(existing.status)) obj.status = existing.status;
  else if (!given) delete obj.status;
}

/**
 * After the write: every value the object was given must still be recorded as its owner's. A
 * value can only have been lost to a reclaim that took this apply for a crashed one (it stalled
 * longer than the grace period between allocating and writing); the object then shares a value
 * with another and the operator must know.
 */
async function checkStillOwned(
  allocator: ServiceAllocator,
  owner: string,
  key: string,
  allocations: readonly Allocation[],
): Promise<void> {
  for (const a of allocations) {
    const kv = await allocator.store.get(allocationKey(allocator.registryPrefix, a.kind, a.value));
    if (kv?.value !== owner) {
      throw new WeftError(
        ErrorCodes.CONFLICT,
        `Service ${key}: ${a.value} was written but its allocation now belongs to ${kv?.value ?? 'nobody'} (this apply stalled and was taken for a crashed one); delete the service and apply it again`,
        { object: key, value: a.value },
      );
    }
  }
}

/**
 * Fills in a Service's ClusterIPs and nodePorts (in place) as kube-apiserver does, taking them
 * from the stored object when the manifest leaves them out; what it takes goes into `taken`.
 */
async function fillService(
  allocator: ServiceAllocator,
  owner: string,
  key: string,
  obj: Record<string, unknown>,
  existing: Record<string, unknown> | undefined,
  taken: Allocation[],
): Promise<void> {
  const spec = record(obj.spec);
  obj.spec = spec;
  const old = record(existing?.spec);
  const type = typeof spec.type === 'string' ? spec.type : 'ClusterIP';
  const oldType = typeof old.type === 'string' ? old.type : 'ClusterIP';
  const object = `Service ${key}`;

  if (type === 'ExternalName') {
    delete spec.clusterIP;
    delete spec.clusterIPs;
  } else {
    const given = ipList(spec);
    const before = oldType === 'ExternalName' ? [] : ipList(old);
    let ips: string[];
    if (given.length) {
      if (before.length && canonicalOrSelf(given[0]) !== canonicalOrSelf(before[0])) {
        throw invalid(
          object,
          'spec.clusterIP',
          `is immutable: the service has ${before[0] ?? ''}, the manifest asks for ${given[0] ?? ''} (delete the service to change it)`,
        );
      }
      ips = given;
    } else {
      ips = before;
    }
    if (ips.includes('None')) {
      spec.clusterIP = 'None';
      spec.clusterIPs = ['None'];
    } else {
      const out: string[] = [];
      for (const [i, ip] of ips.entries()) {
        const field = i === 0 ? 'spec.clusterIP' : `spec.clusterIPs[${i}]`;
        const a = await allocator.allocateClusterIp(owner, { requested: ip, field: `${field}` });
        taken.push(a);
        out.push(a.value);
      }
      if (!out.length) {
        for (const family of wantedFamilies(allocator, spec, object)) {
          const a = await allocator.allocateClusterIp(owner, { family });
          taken.push(a);
          out.push(a.value);
        }
      }
      spec.clusterIP = out[0];
      spec.clusterIPs = out;
      if (!Array.isArray(spec.ipFamilies)) spec.ipFamilies = out.map((ip) => `IPv${ipFamily(ip) ?? 4}`);
      spec.ipFamilyPolicy ??= out.length > 1 ? 'RequireDualStack' : 'SingleStack';
    }
  }

  const ports = Array.isArray(spec.ports) ? (spec.ports as unknown[]).filter(isRecord) : [];
  const oldPorts = Array.isArray(old.ports) ? (old.ports as unknown[]).filter(isRecord) : [];
  const wantsNodePorts =
    type === 'NodePort' || (type === 'LoadBalancer' && spec.allocateLoadBalancerNodePorts !== false);
  if (wantsNodePorts) {
    const used = new Set<number>();
    for (const [i, p] of ports.entries()) {
      const given = typeof p.nodePort === 'number' ? p.nodePort : 0;
      const kept = given || matchingNodePort(p, oldPorts);
      const a = await allocator.allocateNodePort(owner, {
        ...(kept ? { requested: kept } : {}),
        exclude: used,
        field: `spec.ports[${i}].nodePort`,
      });
      taken.push(a);
      const nodePort = Number(a.value);
      p.nodePort = nodePort;
      used.add(nodePort);
    }
    if (type === 'LoadBalancer' && spec.externalTrafficPolicy === 'Local') {
      const given = typeof spec.healthCheckNodePort === 'number' ? spec.healthCheckNodePort : 0;
      const keptHc = typeof old.healthCheckNodePort === 'number' ? old.healthCheckNodePort : 0;
      const a = await allocator.allocateNodePort(owner, {
        ...(given || keptHc ? { requested: given || keptHc } : {}),
        exclude: used,
        field: 'spec.healthCheckNodePort',
      });
      taken.push(a);
      spec.healthCheckNodePort = Number(a.value);
    }
  }
}

/** The ClusterIPs a spec asks for: `clusterIPs`, else `clusterIP` (`""` = none). */
function ipList(spec: Record<string, unknown>): string[] {
  if (Array.isArray(spec.clusterIPs) && spec.clusterIPs.length) {
    return (spec.clusterIPs as unknown[]).filter((v): v is string => typeof v === 'string');
  }
  return typeof spec.clusterIP === 'string' && spec.clusterIP !== '' ? [spec.clusterIP] : [];
}

function canonicalOrSelf(ip: string | undefined): string | undefined {
  return ip !== undefined && ipFamily(ip) !== undefined ? canonicalIp(ip) : ip;
}

/** The families to allocate for, from `ipFamilies` and `ipFamilyPolicy` and the configured CIDRs. */
function wantedFamilies(
  allocator: ServiceAllocator,
  spec: Record<string, unknown>,
  object: string,
): (4 | 6)[] {
  const available = allocator.serviceCidrs.map((c) => c.family);
  const listed = Array.isArray(spec.ipFamilies)
    ? (spec.ipFamilies as unknown[]).map((f, i) => {
        if (f !== 'IPv4' && f !== 'IPv6')
          throw invalid(object, `spec.ipFamilies[${i}]`, 'must be IPv4 or IPv6');
        return f === 'IPv4' ? 4 : 6;
      })
    : [];
  const policy = spec.ipFamilyPolicy ?? 'SingleStack';
  const primary = listed[0] ?? available[0] ?? 4;
  if (!available.includes(primary)) {
    throw invalid(
      object,
      'spec.ipFamilies[0]',
      `no IPv${primary} service CIDR is configured (--service-cidr)`,
    );
  }
  if (policy === 'SingleStack') return [primary];
  const other = listed[1] ?? available.find((f) => f !== primary);
  if (other !== undefined && available.includes(other)) return [primary, other];
  if (policy === 'RequireDualStack') {
    throw invalid(
      object,
      'spec.ipFamilyPolicy',
      'RequireDualStack needs an IPv4 and an IPv6 service CIDR (--service-cidr)',
    );
  }
  return [primary];
}

/** The nodePort the stored object gave the same port (by name and protocol, else number and protocol). */
function matchingNodePort(p: Record<string, unknown>, oldPorts: Record<string, unknown>[]): number {
  const proto = (x: Record<string, unknown>) => (typeof x.protocol === 'string' ? x.protocol : 'TCP');
  const byName = oldPorts.find((o) => (o.name ?? '') === (p.name ?? '') && proto(o) === proto(p));
  const byPort = oldPorts.find((o) => o.port === p.port && proto(o) === proto(p));
  const hit = (p.name ? byName : undefined) ?? byPort ?? byName;
  return hit && typeof hit.nodePort === 'number' ? hit.nodePort : 0;
}

/** The outcome of deleting one object. */
export interface DeleteResult {
  key: string;
  /** Allocations freed with it (Services only). */
  freed: { kind: AllocationKind; value: string }[];
}

/**
 * Deletes one object (and, for a Service, every allocation it owns). Throws NOT_FOUND when it is
 * absent, CONFLICT when it changed while being deleted.
 */
export async function deleteObject(
  store: Store,
  allocator: ServiceAllocator,
  prefix: string,
  kind: ObjectKind,
  namespace: string,
  name: string,
): Promise<DeleteResult> {
  const key = objectKey(prefix, kind, namespace, name);
  const kv = await store.get(key);
  if (!kv) throw notFound(kind, namespace, name, key);
  if (!(await store.delete(key, { modRevision: kv.modRevision }))) {
    throw new WeftError(ErrorCodes.CONFLICT, `${kind} ${key} changed while being deleted; delete again`, {
      object: key,
    });
  }
  const freed = kind === 'Service' ? await allocator.releaseAll(ownerOf(namespace, name)) : [];
  return { key, freed };
}

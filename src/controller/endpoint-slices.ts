/**
 * The pure core of weft-controller: from a Service with a selector, the pods it selects and the
 * slices weft-controller already wrote for it, the slice writes that bring the registry in step.
 * It follows kube-controller-manager's endpointslice reconciler, whose aim is few writes: an
 * endpoint stays in the slice it is in, only slices whose content changed are rewritten, and new
 * endpoints go first into slices being rewritten anyway, then into one existing slice that can
 * take them all, and only then into new slices.
 *
 * Where weft differs from kube, and why:
 * - An endpoint is identified by its address (kube: addresses and the pod reference), because the
 *   parsed slices weft compares against carry no pod reference. Two selected pods with the same
 *   address (host-network pods, an address reused while its old pod terminates) give one endpoint:
 *   the readiest of them.
 * - A service left with no endpoints has no slices (kube keeps an empty placeholder slice): for
 *   weft-proxy both mean "no endpoints", and the empty slice would be a write for nothing.
 * - A pod whose Node object is absent is still an endpoint (kube skips it): weft's Node objects are
 *   optional, the zone label is all they give.
 * - A slice holding more endpoints than the limit (the limit was lowered) gives its surplus back to
 *   be placed again, so no slice is ever left over the limit.
 * - An ExternalName service gets no slices.
 */
import { ErrorCodes, WeftError } from '../errors/index.js';
import { isIP } from 'node:net';
import { ipFamily } from '../ipam/index.js';
import {
  MANAGED_BY_LABEL,
  SERVICE_NAME_LABEL,
  dns1123SubdomainProblem,
  type EffectivePod,
  type EndpointSliceSpec,
  type ServiceSpec,
  type SliceEndpoint,
} from '../k8s/index.js';
import { endpointPorts, portMapKey, type SlicePort } from './endpoint-ports.js';

/** The value of the managed-by label on every slice weft-controller writes. */
export const CONTROLLER_NAME = 'weft-controller';

/** kube-controller-manager's default `--max-endpoints-per-slice`. */
export const DEFAULT_MAX_ENDPOINTS_PER_SLICE = 100;

/** The largest `--max-endpoints-per-slice` (the API's limit on a slice's endpoints). */
export const MAX_MAX_ENDPOINTS_PER_SLICE = 1000;

/** What the slices of one service are computed from. */
export interface SliceInputs {
  /** The service; its `selector` is defined. */
  service: ServiceSpec;
  /** The pods of the service's namespace its selector matches. */
  pods: readonly EffectivePod[];
  /** The zone of a node (its topology.kubernetes.io/zone label), undefined when unknown. */
  nodeZone: (node: string) => string | undefined;
  /** False when a node is not ready: its pods' endpoints are then neither ready nor serving. */
  nodeReady: (node: string) => boolean;
  /** At most this many endpoints in one slice: 1..1000, kube's default 100. */
  maxEndpointsPerSlice: number;
}

/** A slice weft-controller wrote for this service, as stored. */
export interface ExistingSlice {
  spec: EndpointSliceSpec;
  modRevision: number;
}

/** One slice to store. */
export interface SliceWrite {
  name: string;
  /** The slice's JSON. */
  value: string;
  /** For an update: the modRevision the stored slice must still have (compare-and-swap). */
  modRevision?: number;
}

/** The writes that bring a service's slices in step with its pods. */
export interface SlicePlan {
  create: SliceWrite[];
  update: SliceWrite[];
  delete: ExistingSlice[];
}

type AddressType = 'IPv4' | 'IPv6';

/** A desired endpoint: one pod's address with its conditions and place. */
interface Endpoint {
  address: string;
  /** Sorts as the address's number: a stable order. */
  order: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string | undefined;
  zone: string | undefined;
  namespace: string;
  pod: string;
}

/** The desired endpoints of one port mapping. */
interface Group {
  ports: SlicePort[];
  /** By address, in address order. */
  endpoints: Map<string, Endpoint>;
}

/** A slice being planned: an existing one (named) or a new one. */
interface Working {
  existing: ExistingSlice | undefined;
  addressType: AddressType;
  ports: SlicePort[];
  endpoints: Endpoint[];
}

/**
 * Plans the writes for one service's slices. `existing` are the slices weft-controller manages
 * for this service; `newName` names each created slice (see {@link generateSliceName}); the plan
 * is a function of the inputs and the names it returns.
 */
export function planSlices(
  inputs: SliceInputs,
  existing: readonly ExistingSlice[],
  newName: (service: string) => string,
): SlicePlan {
  const max = inputs.maxEndpointsPerSlice;
  if (!Number.isInteger(max) || max < 1 || max > MAX_MAX_ENDPOINTS_PER_SLICE) {
    throw new WeftError(
      ErrorCodes.INVALID_ARGUMENT,
      `maxEndpointsPerSlice ${String(max)} is not an integer in 1..${MAX_MAX_ENDPOINTS_PER_SLICE}`,
      { field: 'maxEndpointsPerSlice' },
    );
  }
  const service = inputs.service;
  const byName = [...existing].sort((a, b) => cmp(a.spec.name, b.spec.name));
  const types = serviceAddressTypes(service);
  const create: Working[] = [];
  const update: Working[] = [];
  const del: ExistingSlice[] = [];
  for (const type of types) {
    const planned = planAddressType(
      inputs,
      type,
      byName.filter((s) => s.spec.addressType === type),
    );
    create.push(...planned.create);
    update.push(...planned.update);
    del.push(...planned.delete);
  }
  // Slices of a family the service no longer has (and FQDN slices): nothing of theirs is wanted.
  for (const s of byName) if (!(types as string[]).includes(s.spec.addressType)) del.push(s);

  const used = new Set(existing.map((s) => s.spec.name));
  const plan: SlicePlan = {
    create: [],
    update: [],
    delete: del.sort((a, b) => cmp(a.spec.name, b.spec.name)),
  };
  for (const w of create) {
    const name = freshName(service.name, newName, used);
    plan.create.push({ name, value: sliceJson(service, name, w) });
  }
  for (const w of update.sort((a, b) => cmp(nameOf(a), nameOf(b)))) {
    const name = nameOf(w);
    plan.update.push({
      name,
      value: sliceJson(service, name, w),
      modRevision: w.existing?.modRevision,
    });
  }
  return plan;
}

/**
 * The address types a service's slices have: one per family of its ClusterIPs, in their order;
 * IPv4 for a headless service (weft's services carry no ipFamilies; IPv4 is the API server's
 * single-stack default); none for an ExternalName service.
 */
export function serviceAddressTypes(service: ServiceSpec): AddressType[] {
  if (service.type === 'ExternalName') return [];
  if (service.clusterIPs.length === 0) return ['IPv4'];
  const out: AddressType[] = [];
  for (const ip of service.clusterIPs) {
    const t: AddressType = ipFamily(ip) === 6 ? 'IPv6' : 'IPv4';
    if (!out.includes(t)) out.push(t);
  }
  return out;
}

/**
 * kube's generateName for a slice: `<service>-` and five random characters of kube's alphabet
 * (lowercase consonants and digits, so that no word is spelled), the prefix cut to 58 characters so
 * that the name stays within a DNS label's 63. `random` returns numbers in [0, 1).
 */
export function generateSliceName(service: string, random: () => number = Math.random): string {
  let name = `${service}-`.slice(0, GENERATED_PREFIX_MAX);
  for (let i = 0; i < GENERATED_RANDOM_LENGTH; i++) {
    const n = Math.floor(random() * NAME_ALPHABET.length);
    name += NAME_ALPHABET[Math.min(Math.max(n, 0), NAME_ALPHABET.length - 1)];
  }
  const why = dns1123SubdomainProblem(name);
  if (why) {
    throw new WeftError(ErrorCodes.INVALID_ARGUMENT, `slice name ${JSON.stringify(name)} ${why}`, {
      field: 'metadata.name',
    });
  }
  return name;
}

// k8s.io/apimachinery's rand alphabet and generateName lengths.
const NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
const GENERATED_RANDOM_LENGTH = 5;
const GENERATED_PREFIX_MAX = 63 - GENERATED_RANDOM_LENGTH;
/** How many names `newName` may return that are already taken before planning gives up. */
const NAME_ATTEMPTS = 100;

function freshName(service: string, newName: (service: string) => string, used: Set<string>): string {
  for (let i = 0; i < NAME_ATTEMPTS; i++) {
    const name = newName(service);
    if (!used.has(name)) {
      used.add(name);
      return name;
    }
  }
  throw new WeftError(
    ErrorCodes.INVALID_ARGUMENT,
    `no unused slice name for service ${JSON.stringify(service)} in ${NAME_ATTEMPTS} attempts`,
    { field: 'metadata.name' },
  );
}

/** The plan for one address type, before the new slices are named. */
function planAddressType(
  inputs: SliceInputs,
  type: AddressType,
  existing: readonly ExistingSlice[],
): { create: Working[]; update: Working[]; delete: ExistingSlice[] } {
  const groups = desiredGroups(inputs, type === 'IPv4' ? 4 : 6);
  const existingByKey = new Map<string, ExistingSlice[]>();
  for (const s of existing) {
    const key = portMapKey(s.spec.ports);
    existingByKey.set(key, [...(existingByKey.get(key) ?? []), s]);
  }
  const create: Working[] = [];
  const update: Working[] = [];
  const del: ExistingSlice[] = [];
  for (const key of [...groups.keys()].sort(cmp)) {
    const group = groups.get(key) as Group;
    const r = planPortMapping(inputs, type, group, existingByKey.get(key) ?? []);
    create.push(...r.create);
    update.push(...r.update);
    del.push(...r.delete);
  }
  // Slices of a port mapping no pod has any more.
  for (const [key, slices] of [...existingByKey].sort((a, b) => cmp(a[0], b[0]))) {
    if (!groups.has(key)) del.push(...slices);
  }
  // As kube: rather than create one slice and delete another, rewrite the one to be deleted.
  del.sort((a, b) => cmp(a.spec.name, b.spec.name));
  while (create.length > 0 && del.length > 0) {
    const w = create.pop() as Working;
    w.existing = del.shift();
    update.push(w);
  }
  return { create, update, delete: del };
}

/** The desired endpoints of `family`, grouped by port mapping (by portMapKey). */
function desiredGroups(inputs: SliceInputs, family: 4 | 6): Map<string, Group> {
  const { service } = inputs;
  const pods = [...inputs.pods].sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
  const byAddress = new Map<string, { ep: Endpoint; ports: SlicePort[] }>();
  for (const pod of pods) {
    // Pods' addresses are validated and canonical: node's isIP is enough to tell the family, and
    // is much cheaper than a full parse at 10,000 pods.
    const address = pod.ips.find((ip) => isIP(ip) === family);
    if (address === undefined) continue;
    const node = pod.nodeName;
    const nodeOk = node === undefined || inputs.nodeReady(node);
    const ep: Endpoint = {
      address,
      order: addressOrder(address),
      ready: pod.ready && !pod.terminating && nodeOk,
      serving: pod.ready && nodeOk,
      terminating: pod.terminating,
      nodeName: node,
      // As kube: an empty zone label is no zone.
      zone: (node === undefined ? undefined : inputs.nodeZone(node)) || undefined,
      namespace: pod.namespace,
      pod: pod.name,
    };
    const had = byAddress.get(address);
    if (had === undefined || rank(ep) > rank(had.ep))
      byAddress.set(address, { ep, ports: endpointPorts(service.ports, pod) });
  }
  const groups = new Map<string, Group>();
  for (const { ep, ports } of [...byAddress.values()].sort((a, b) => byOrder(a.ep, b.ep))) {
    const key = portMapKey(ports);
    let g = groups.get(key);
    if (g === undefined) {
      g = { ports, endpoints: new Map() };
      groups.set(key, g);
    }
    g.endpoints.set(ep.address, ep);
  }
  return groups;
}

/** Of two pods with one address, the one whose endpoint is readiest wins. */
function rank(ep: Endpoint): number {
  return (ep.ready ? 4 : 0) + (ep.serving ? 2 : 0) + (ep.terminating ? 0 : 1);
}

/** kube's reconcileByPortMapping: the slices of one port mapping. */
function planPortMapping(
  inputs: SliceInputs,
  addressType: AddressType,
  group: Group,
  existing: readonly ExistingSlice[],
): { create: Working[]; update: Working[]; delete: ExistingSlice[] } {
  const max = inputs.maxEndpointsPerSlice;
  const desired = new Map(group.endpoints);
  const unchanged: Working[] = [];
  const update: Working[] = [];
  const del: ExistingSlice[] = [];

  // 1. Existing slices keep the endpoints still desired (in their desired state) and lose the rest.
  for (const s of existing) {
    let kept: Endpoint[] = [];
    let changed = !labelsCurrent(s.spec, inputs.service);
    for (const e of s.spec.endpoints) {
      const key = e.addresses.join(',');
      const want = desired.get(key);
      if (want === undefined) continue;
      desired.delete(key);
      kept.push(want);
      if (!sameEndpoint(want, e)) changed = true;
    }
    if (kept.length > max) {
      kept.sort(byOrder);
      for (const ep of kept.slice(max)) desired.set(ep.address, ep);
      kept = kept.slice(0, max);
    }
    const w: Working = { existing: s, addressType, ports: group.ports, endpoints: kept };
    if (kept.length === 0) del.push(s);
    else if (changed || kept.length !== s.spec.endpoints.length) update.push(w);
    else unchanged.push(w);
  }

  const remaining = [...desired.values()].sort(byOrder).reverse();
  const fill = (w: Working): void => {
    while (remaining.length > 0 && w.endpoints.length < max) w.endpoints.push(remaining.pop() as Endpoint);
  };
  // 2. Slices rewritten anyway take new endpoints first, the fullest first.
  for (const w of [...update].sort((a, b) => b.endpoints.length - a.endpoints.length)) fill(w);

  // 3. The rest go into the one unchanged slice closest to full that can take them all, when there
  //    is one; else into new slices.
  const create: Working[] = [];
  while (remaining.length > 0) {
    let target: Working | undefined;
    if (remaining.length < max) target = sliceToFill(unchanged, remaining.length, max);
    if (target === undefined) {
      target = { existing: undefined, addressType, ports: group.ports, endpoints: [] };
      create.push(target);
    } else {
      unchanged.splice(unchanged.indexOf(target), 1);
      update.push(target);
    }
    fill(target);
  }
  return { create, update, delete: del };
}

/** kube's getSliceToFill: the slice closest to full with room for `count` more, if any. */
function sliceToFill(slices: readonly Working[], count: number, max: number): Working | undefined {
  let best: Working | undefined;
  let bestRoom = max;
  for (const w of slices) {
    const room = max - (w.endpoints.length + count);
    if (room >= 0 && room < bestRoom) {
      best = w;
      bestRoom = room;
    }
  }
  return best;
}

function labelsCurrent(spec: EndpointSliceSpec, service: ServiceSpec): boolean {
  return spec.serviceName === service.name && spec.managedBy === CONTROLLER_NAME;
}

function sameEndpoint(want: Endpoint, got: SliceEndpoint): boolean {
  return (
    want.ready === got.ready &&
    want.serving === got.serving &&
    want.terminating === got.terminating &&
    want.nodeName === got.nodeName &&
    want.zone === got.zone
  );
}

/**
 * A key that sorts canonical addresses of one family in numeric order: the address in hex,
 * zero-padded (strings compare faster than bigints, which matters at 10,000 pods).
 */
function addressOrder(address: string): string {
  if (!address.includes(':')) {
    return address
      .split('.')
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .join('');
  }
  const [head = '', tail] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return groups.map((g) => g.padStart(4, '0')).join('');
}

function byOrder(a: Endpoint, b: Endpoint): number {
  return a.order < b.order ? -1 : a.order > b.order ? 1 : cmp(a.address, b.address);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function nameOf(w: Working): string {
  return w.existing?.spec.name ?? '';
}

/** The stored form of a slice, endpoints in address order so that equal content is equal text. */
function sliceJson(service: ServiceSpec, name: string, w: Working): string {
  const endpoints = [...w.endpoints].sort(byOrder).map((e) => ({
    addresses: [e.address],
    conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating },
    ...(e.nodeName === undefined ? {} : { nodeName: e.nodeName }),
    ...(e.zone === undefined ? {} : { zone: e.zone }),
    targetRef: { kind: 'Pod', namespace: e.namespace, name: e.pod },
  }));
  return JSON.stringify({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: service.namespace,
      labels: { [SERVICE_NAME_LABEL]: service.name, [MANAGED_BY_LABEL]: CONTROLLER_NAME },
    },
    addressType: w.addressType,
    endpoints,
    ports: w.ports.map((p) => ({ name: p.name, protocol: p.protocol, port: p.port })),
  });
}

/**
 * The proxy's working model: one {@link ServicePort} per (service, port, IP family), with its
 * endpoints resolved from every slice of the service. This is what the proxiers turn into rules;
 * it is computed by pure functions so that golden tests can pin it.
 */
import { isIP } from 'node:net';
import { Cidr } from '../../ipam/index.js';
import { PROTOCOLS } from '../../k8s/schema.js';
import type { EndpointSliceSpec, Family, Protocol, ServicePortSpec, ServiceSpec } from '../../k8s/schema.js';

/** One endpoint of a service port. */
export interface Endpoint {
  ip: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** The endpoint runs on this node (its slice's nodeName is the proxy's node). */
  isLocal: boolean;
}

/** What a proxier programs for one port of one service in one family. */
export interface ServicePort {
  /**
   * kube-proxy's ServicePortName: `<namespace>/<name>` plus `:<portName>` when the port is named.
   * Unique per family; the key of every map of service ports.
   */
  id: string;
  namespace: string;
  name: string;
  portName: string;
  protocol: Protocol;
  family: Family;
  clusterIP: string;
  port: number;
  /** 0 when none. */
  nodePort: number;
  externalIPs: string[];
  loadBalancerIPs: string[];
  /** CIDRs allowed to reach the LB IPs; empty allows all. */
  loadBalancerSourceRanges: string[];
  /** 0 when there is no ClientIP affinity. */
  affinityTimeoutSeconds: number;
  externalPolicyLocal: boolean;
  internalPolicyLocal: boolean;
  /** 0 when none. */
  healthCheckNodePort: number;
  /** Every endpoint, deduplicated by ip:port and sorted; see {@link selectEndpoints}. */
  endpoints: Endpoint[];
}

/** Map of service ports by id, for one family. */
export type ServicePortMap = ReadonlyMap<string, ServicePort>;

/** kube-proxy's ServicePortName string. */
export function servicePortId(namespace: string, name: string, portName: string): string {
  return `${namespace}/${name}${portName ? `:${portName}` : ''}`;
}

/**
 * The most endpoints a sync expands per object. Ports × endpoints are expanded on every sync, so
 * without a bound one Service (a slice of 1,000 endpoints and 100 ports, a Service of many ports
 * over many slices) multiplies the work of every sync for every Service.
 */
export interface EndpointBudget {
  /**
   * Endpoints of one service port, summed over the Service's slices. Default 10,000: twice
   * Kubernetes' scalability threshold of 5,000 backends per Service.
   */
  perServicePort: number;
  /**
   * Endpoints of all ports of one Service together (ports × endpoints). Default 100,000: one full
   * slice at the API's maxima (1,000 endpoints × 100 ports), or 5,000 backends × 20 ports.
   */
  perService: number;
}

/** The budget the proxy applies; see {@link EndpointBudget}. */
export const DEFAULT_ENDPOINT_BUDGET: Readonly<EndpointBudget> = {
  perServicePort: 10_000,
  perService: 100_000,
};

/** Options of {@link buildServicePorts}. */
export interface BuildOptions {
  family: Family;
  /** This node's name; endpoints whose slice names it are local. */
  nodeName: string;
  /** Default {@link DEFAULT_ENDPOINT_BUDGET}. */
  budget?: EndpointBudget;
}

/** A Service left out because expanding it would pass the {@link EndpointBudget}. */
export interface OverBudgetService {
  /** `<namespace>/<name>`. */
  service: string;
  /** The field at fault: `spec.ports[i]` (one port over budget) or `spec.ports` (all together). */
  field: string;
  message: string;
}

/** The service ports of one family, and the Services left out. */
export interface ServicePortPlan {
  servicePorts: Map<string, ServicePort>;
  overBudget: OverBudgetService[];
}

/**
 * Joins services with their slices into the service ports of one family. Services without a
 * ClusterIP of the family (headless, ExternalName, single-stack of the other family) have none.
 * Slices of another family, FQDN slices and slices of absent services are ignored. A Service
 * whose expansion would pass the budget is left out whole (counted before anything is expanded)
 * and reported in `overBudget`.
 */
export function planServicePorts(
  services: Iterable<ServiceSpec>,
  slices: Iterable<EndpointSliceSpec>,
  opts: BuildOptions,
): ServicePortPlan {
  const budget = opts.budget ?? DEFAULT_ENDPOINT_BUDGET;
  const addressType = opts.family === 4 ? 'IPv4' : 'IPv6';
  const slicesBySvc = new Map<string, EndpointSliceSpec[]>();
  for (const sl of slices) {
    if (sl.addressType !== addressType) continue;
    const k = `${sl.namespace}/${sl.serviceName}`;
    const list = slicesBySvc.get(k) ?? [];
    list.push(sl);
    slicesBySvc.set(k, list);
  }
  const out = new Map<string, ServicePort>();
  const overBudget: OverBudgetService[] = [];
  for (const svc of services) {
    const clusterIP = svc.clusterIPs.find((a) => isIP(a) === opts.family);
    if (clusterIP === undefined) continue;
    const ofFamily = (list: string[]) => list.filter((a) => isIP(a) === opts.family);
    const ofFamilyCidr = (list: string[]) => list.filter((c) => isIP(c.split('/')[0] ?? '') === opts.family);
    const svcSlices = (slicesBySvc.get(`${svc.namespace}/${svc.name}`) ?? []).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    const external = svc.type === 'NodePort' || svc.type === 'LoadBalancer' || svc.externalIPs.length > 0;
    const slicePort = (sl: EndpointSliceSpec, p: ServicePortSpec): number | undefined => {
      if (sl.ports === undefined) {
        return typeof p.targetPort === 'number'
          ? p.targetPort
          : p.targetPort === undefined
            ? p.port
            : undefined;
      }
      return sl.ports.find((sp) => sp.name === p.name && sp.protocol === p.protocol)?.port;
    };
    const over = overBudgetField(svc, svcSlices, slicePort, budget);
    if (over) {
      overBudget.push({ service: `${svc.namespace}/${svc.name}`, ...over });
      continue;
    }
    for (const p of svc.ports) {
      const byKey = new Map<string, Endpoint>();
      for (const sl of svcSlices) {
        const epPort = slicePort(sl, p);
        if (epPort === undefined) continue;
        for (const e of sl.endpoints) {
          const ip = e.addresses[0];
          if (ip === undefined) continue;
          const key = `${ip}:${epPort}`;
          // kube-proxy keeps the first copy of an endpoint listed by two slices.
          if (byKey.has(key)) continue;
          byKey.set(key, {
            ip,
            port: epPort,
            ready: e.ready,
            serving: e.serving,
            terminating: e.terminating,
            isLocal: e.nodeName !== undefined && e.nodeName === opts.nodeName,
          });
        }
      }
      const id = servicePortId(svc.namespace, svc.name, p.name);
      out.set(id, {
        id,
        namespace: svc.namespace,
        name: svc.name,
        portName: p.name,
        protocol: p.protocol,
        family: opts.family,
        clusterIP,
        port: p.port,
        nodePort: p.nodePort,
        externalIPs: ofFamily(svc.externalIPs),
        loadBalancerIPs: ofFamily(svc.loadBalancerIPs),
        loadBalancerSourceRanges: ofFamilyCidr(svc.loadBalancerSourceRanges),
        affinityTimeoutSeconds: svc.affinityTimeoutSeconds,
        externalPolicyLocal: external && svc.externalTrafficPolicy === 'Local',
        internalPolicyLocal: svc.internalTrafficPolicy === 'Local',
        healthCheckNodePort: external && svc.externalTrafficPolicy === 'Local' ? svc.healthCheckNodePort : 0,
        endpoints: [...byKey.values()].sort(compareEndpoints),
      });
    }
  }
  return { servicePorts: out, overBudget };
}

/** {@link planServicePorts} without the report of the Services left out. */
export function buildServicePorts(
  services: Iterable<ServiceSpec>,
  slices: Iterable<EndpointSliceSpec>,
  opts: BuildOptions,
): Map<string, ServicePort> {
  return planServicePorts(services, slices, opts).servicePorts;
}

/**
 * Where a Service passes the budget, counted from the slices' sizes (duplicates included) so that
 * nothing is expanded to find out.
 */
function overBudgetField(
  svc: ServiceSpec,
  slices: EndpointSliceSpec[],
  slicePort: (sl: EndpointSliceSpec, p: ServicePortSpec) => number | undefined,
  budget: EndpointBudget,
): { field: string; message: string } | undefined {
  let total = 0;
  for (const [i, p] of svc.ports.entries()) {
    let n = 0;
    for (const sl of slices) if (slicePort(sl, p) !== undefined) n += sl.endpoints.length;
    if (n > budget.perServicePort) {
      return {
        field: `spec.ports[${i}]`,
        message: `${n} endpoints for one port, over the limit of ${budget.perServicePort}`,
      };
    }
    total += n;
    if (total > budget.perService) {
      return {
        field: 'spec.ports',
        message: `more than ${budget.perService} endpoints over all ports (ports × endpoints)`,
      };
    }
  }
  return undefined;
}

function compareEndpoints(a: Endpoint, b: Endpoint): number {
  if (a.ip !== b.ip) return a.ip < b.ip ? -1 : 1;
  return a.port - b.port;
}

/** True when traffic can reach the port from outside the cluster network. */
export function isExternallyAccessible(sp: ServicePort): boolean {
  return sp.nodePort > 0 || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0;
}

/** The endpoints each kind of traffic may use; kube-proxy's CategorizeEndpoints. */
export interface EndpointSelection {
  /** Usable endpoints anywhere: the ready ones, else the serving+terminating ones. */
  cluster: Endpoint[];
  /** The same choice among this node's endpoints. */
  local: Endpoint[];
  /** What ClusterIP traffic goes to: `local` under internalTrafficPolicy Local, else `cluster`. */
  internal: Endpoint[];
  /** What NodePort, externalIP and LB traffic goes to: `local` under externalTrafficPolicy Local. */
  external: Endpoint[];
  /** The node has at least one usable local endpoint (healthCheckNodePort answers 200). */
  hasLocal: boolean;
}

function usable(eps: Endpoint[]): Endpoint[] {
  const ready = eps.filter((e) => e.ready);
  if (ready.length > 0) return ready;
  return eps.filter((e) => e.serving && e.terminating);
}

/** Which endpoints serve which traffic. Pure. */
export function selectEndpoints(sp: ServicePort): EndpointSelection {
  const cluster = usable(sp.endpoints);
  const local = usable(sp.endpoints.filter((e) => e.isLocal));
  return {
    cluster,
    local,
    internal: sp.internalPolicyLocal ? local : cluster,
    external: sp.externalPolicyLocal ? local : cluster,
    hasLocal: local.length > 0,
  };
}

/**
 * The ids whose service port differs between `before` and `after` (added, removed or changed):
 * what a partial sync must rewrite.
 */
export function changedServicePorts(before: ServicePortMap, after: ServicePortMap): Set<string> {
  const out = new Set<string>();
  for (const [id, sp] of after) {
    const old = before.get(id);
    if (!old || JSON.stringify(old) !== JSON.stringify(sp)) out.add(id);
  }
  for (const id of before.keys()) if (!after.has(id)) out.add(id);
  return out;
}

const isAddress = (a: unknown): boolean => typeof a === 'string' && isIP(a) !== 0 && !a.includes('%');
const isCount = (n: unknown): boolean => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
function isCidr(c: unknown): boolean {
  if (typeof c !== 'string') return false;
  try {
    Cidr.parseLenient(c);
    return true;
  } catch {
    return false;
  }
}

/**
 * The first field of `sp` that a renderer would write as it is (an address, a CIDR, a number, the
 * protocol) and that is not of its lexical form, or undefined. Names are escaped where they are
 * rendered; these values cannot be, so a service port failing this is never rendered: a second
 * line behind validation, which already refuses them. Ranges and families are left to the kernel
 * (a value of the wrong range is refused there, not turned into syntax).
 */
export function unrenderableField(sp: ServicePort): { field: string; message: string } | undefined {
  const checks: [string, boolean][] = [
    ['protocol', (PROTOCOLS as readonly unknown[]).includes(sp.protocol)],
    ['family', sp.family === 4 || sp.family === 6],
    ['clusterIP', isAddress(sp.clusterIP)],
    ['port', isCount(sp.port)],
    ['nodePort', isCount(sp.nodePort)],
    ['healthCheckNodePort', isCount(sp.healthCheckNodePort)],
    ['affinityTimeoutSeconds', isCount(sp.affinityTimeoutSeconds)],
    ['externalIPs', Array.isArray(sp.externalIPs) && sp.externalIPs.every(isAddress)],
    ['loadBalancerIPs', Array.isArray(sp.loadBalancerIPs) && sp.loadBalancerIPs.every(isAddress)],
    [
      'loadBalancerSourceRanges',
      Array.isArray(sp.loadBalancerSourceRanges) && sp.loadBalancerSourceRanges.every(isCidr),
    ],
    [
      'endpoints',
      Array.isArray(sp.endpoints) && sp.endpoints.every((e) => isAddress(e.ip) && isCount(e.port)),
    ],
    ['name', [sp.id, sp.namespace, sp.name, sp.portName].every((n) => typeof n === 'string')],
  ];
  const bad = checks.find(([, ok]) => !ok);
  return bad ? { field: bad[0], message: `${bad[0]} is not renderable` } : undefined;
}

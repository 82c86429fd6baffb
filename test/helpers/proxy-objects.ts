/**
 * Builders of the Kubernetes JSON weft-proxy reads from the registry (v1 Service and
 * discovery.k8s.io/v1 EndpointSlice), shared by the compliance suite (which parses them into
 * service ports) and the lab tests (which store them), so both exercise the same shapes.
 */
import {
  buildServicePorts,
  parseEndpointSlice,
  parseService,
  serviceKey,
  sliceKey,
  type Family,
  type ServicePort,
} from '../../src/proxy/model/index.js';

/** The registry prefix the tests use (weft-proxy's default). */
export const PROXY_PREFIX = '/weft';

/** One port of a {@link ServiceObject}. */
export interface ServicePortDef {
  name?: string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  port: number;
  /** A number, or the name of a container port (resolved per pod by weft-controller). */
  targetPort?: number | string;
  nodePort?: number;
}

/** What {@link serviceObject} builds. */
export interface ServiceDef {
  namespace?: string;
  name: string;
  clusterIP: string;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  ports: ServicePortDef[];
  /** ClientIP affinity with this timeout (seconds); none when absent. */
  affinitySeconds?: number;
  /** `spec.selector`: weft-controller then writes the slices. None when absent. */
  selector?: Record<string, string>;
}

/** One endpoint of a {@link SliceDef}. */
export interface EndpointDef {
  ip: string;
  nodeName?: string;
  ready?: boolean;
}

/** What {@link sliceObject} builds. */
export interface SliceDef {
  namespace?: string;
  /** The slice's own name; default `<service>-0`. */
  name?: string;
  service: string;
  endpoints: EndpointDef[];
  ports: { name?: string; protocol?: 'TCP' | 'UDP' | 'SCTP'; port: number }[];
}

/** A stored object: its registry key and JSON value. */
export interface StoredObject {
  key: string;
  value: Record<string, unknown>;
}

/** A v1 Service. */
export function serviceObject(def: ServiceDef, prefix = PROXY_PREFIX): StoredObject {
  const namespace = def.namespace ?? 'default';
  return {
    key: serviceKey(prefix, namespace, def.name),
    value: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace, name: def.name },
      spec: {
        type: def.type ?? 'ClusterIP',
        clusterIP: def.clusterIP,
        clusterIPs: [def.clusterIP],
        ports: def.ports.map((p) => ({
          name: p.name ?? '',
          protocol: p.protocol ?? 'TCP',
          port: p.port,
          ...(p.targetPort !== undefined ? { targetPort: p.targetPort } : {}),
          ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
        })),
        ...(def.selector !== undefined ? { selector: def.selector } : {}),
        ...(def.affinitySeconds !== undefined
          ? {
              sessionAffinity: 'ClientIP',
              sessionAffinityConfig: { clientIP: { timeoutSeconds: def.affinitySeconds } },
            }
          : {}),
      },
    },
  };
}

/** A discovery.k8s.io/v1 EndpointSlice of IPv4 endpoints. */
export function sliceObject(def: SliceDef, prefix = PROXY_PREFIX): StoredObject {
  const namespace = def.namespace ?? 'default';
  const name = def.name ?? `${def.service}-0`;
  return {
    key: sliceKey(prefix, namespace, name),
    value: {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { namespace, name, labels: { 'kubernetes.io/service-name': def.service } },
      addressType: 'IPv4',
      endpoints: def.endpoints.map((e) => ({
        addresses: [e.ip],
        conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
        ...(e.nodeName !== undefined ? { nodeName: e.nodeName } : {}),
      })),
      ports: def.ports.map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port })),
    },
  };
}

/**
 * The service ports `nodeName` would program for these services and slices, through the same
 * parse and join the daemon uses. Throws on an invalid object (the builders make none).
 */
export function servicePortsOf(
  services: readonly ServiceDef[],
  slices: readonly SliceDef[],
  opts: { nodeName: string; family?: Family },
): Map<string, ServicePort> {
  const specs = services.map((s) => {
    const o = serviceObject(s);
    return parseService(o.key, s.namespace ?? 'default', s.name, JSON.stringify(o.value));
  });
  const sliceSpecs = slices.map((s) => {
    const o = sliceObject(s);
    const meta = o.value.metadata as { name: string };
    return parseEndpointSlice(o.key, s.namespace ?? 'default', meta.name, JSON.stringify(o.value));
  });
  return buildServicePorts(specs, sliceSpecs, { family: opts.family ?? 4, nodeName: opts.nodeName });
}

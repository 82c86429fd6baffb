/**
 * The Kubernetes-shaped objects weft-proxy reads from the registry: v1 Service and
 * discovery.k8s.io/v1 EndpointSlice, reduced to the fields kube-proxy acts on. Every name and
 * address is held to the API server's rule for its field (./names.ts), and every list to the
 * API's limits (./limits.ts), the text's size before it is parsed: whatever a registry writer
 * stores, what passes here is what a Kubernetes API server would have accepted. Fields weft does
 * not act on are accepted unchanged, so manifests written for a real API server (with status and
 * fields weft ignores) need no editing.
 *
 * A bad object is rejected whole with an error naming its registry key and the field at fault;
 * a service with one bad port is not served half-programmed.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { Cidr, canonicalIp, ipFamily } from '../ipam/index.js';
import { specialAddressProblem } from './addresses.js';
import {
  MAX_ENDPOINT_ADDRESSES,
  MAX_SERVICE_ADDRESSES,
  MAX_SERVICE_PORTS,
  MAX_SLICE_ENDPOINTS,
  MAX_SLICE_PORTS,
  MAX_SOURCE_RANGES,
} from './limits.js';
import {
  DNS_SUBDOMAIN_MAX,
  dns1035LabelProblem,
  dns1123LabelProblem,
  dns1123SubdomainProblem,
  ianaSvcNameProblem,
  labelValueProblem,
} from './names.js';
import {
  checkKeyNames,
  checkLabels,
  checkLabelsAndAnnotations,
  checkName,
  failure,
  firstIssue,
  ip,
  metadata,
  named,
  nullableList,
  optPort,
  parseJson,
  port,
  protocol,
  quote,
  stringMap,
  type Protocol,
} from './object-validation.js';

export { PROTOCOLS, displayName, quote, type Protocol } from './object-validation.js';

/** An IP family: 4 or 6. */
export type Family = 4 | 6;

/** A service port as stored, after defaults. */
export interface ServicePortSpec {
  /** Port name; empty when the service has a single unnamed port. */
  name: string;
  protocol: Protocol;
  port: number;
  /** A number, a named port, or undefined (= `port`). Used only when a slice lists no ports. */
  targetPort: number | string | undefined;
  /** 0 when the service has no NodePort. */
  nodePort: number;
}

/** A validated v1 Service. */
export interface ServiceSpec {
  namespace: string;
  name: string;
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  /** ClusterIPs in canonical text; empty for headless (`None`) and ExternalName services. */
  clusterIPs: string[];
  ports: ServicePortSpec[];
  externalIPs: string[];
  /** `status.loadBalancer.ingress[].ip`. */
  loadBalancerIPs: string[];
  /** Canonical CIDRs. */
  loadBalancerSourceRanges: string[];
  /** ClientIP affinity timeout in seconds; 0 when sessionAffinity is None. */
  affinityTimeoutSeconds: number;
  externalTrafficPolicy: 'Cluster' | 'Local';
  internalTrafficPolicy: 'Cluster' | 'Local';
  /** 0 when none. */
  healthCheckNodePort: number;
  /**
   * `spec.selector`; undefined when absent or empty (the API server drops an empty map), which
   * leaves the Service's slices to whoever writes them by hand.
   */
  selector: Readonly<Record<string, string>> | undefined;
}

/** One endpoint of a slice, with kube's nil-condition defaults applied. */
export interface SliceEndpoint {
  addresses: string[];
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string | undefined;
  zone: string | undefined;
}

/** A validated discovery.k8s.io/v1 EndpointSlice. */
export interface EndpointSliceSpec {
  namespace: string;
  name: string;
  /** `metadata.labels["kubernetes.io/service-name"]`. */
  serviceName: string;
  /** `metadata.labels["endpointslice.kubernetes.io/managed-by"]`: weft-controller's, or another writer's. */
  managedBy: string | undefined;
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: SliceEndpoint[];
  /** Undefined when the slice lists no ports (kube: all ports of the service). */
  ports: { name: string; protocol: Protocol; port: number }[] | undefined;
}

/** kube's default ClientIP affinity timeout: three hours. */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10_800;

/** The label that ties a slice to its service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** The label that names a slice's writer. */
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';

/** An address a Service may claim: not loopback, link-local, multicast or unspecified. */
const serviceIp = ip.superRefine((v, ctx) => {
  const why = ipFamily(v) === undefined ? undefined : specialAddressProblem(v);
  if (why) ctx.addIssue({ code: 'custom', message: `${quote(v)} ${why}` });
});
const cidr = z.string().superRefine((v, ctx) => {
  try {
    Cidr.parseLenient(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `${quote(v)} is not a CIDR` });
  }
});

const serviceSchema = z.looseObject({
  apiVersion: z.literal('v1').optional(),
  kind: z.literal('Service').optional(),
  metadata: metadata.optional(),
  spec: z.looseObject({
    type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']).default('ClusterIP'),
    clusterIP: z.union([z.literal('None'), z.literal(''), ip]).optional(),
    clusterIPs: z
      .array(z.union([z.literal('None'), ip]))
      .max(2)
      .nullish(),
    ports: nullableList(
      z.looseObject({
        // The API server: a DNS-1123 label, required when the service has several ports.
        name: z
          .string()
          .default('')
          .superRefine((v, ctx) => {
            const why = v === '' ? undefined : dns1123LabelProblem(v);
            if (why) ctx.addIssue({ code: 'custom', message: `${quote(v)} ${why}` });
          }),
        protocol,
        port,
        targetPort: z.union([port, named(ianaSvcNameProblem)]).optional(),
        nodePort: optPort.default(0),
      }),
      MAX_SERVICE_PORTS,
    ),
    selector: stringMap,
    externalIPs: nullableList(serviceIp, MAX_SERVICE_ADDRESSES),
    externalName: z
      .string()
      .max(DNS_SUBDOMAIN_MAX + 1)
      .nullish(),
    sessionAffinity: z.enum(['None', 'ClientIP']).default('None'),
    sessionAffinityConfig: z
      .looseObject({
        clientIP: z.looseObject({ timeoutSeconds: z.number().int().min(1).max(86_400).optional() }).nullish(),
      })
      .nullish(),
    externalTrafficPolicy: z.enum(['Cluster', 'Local']).default('Cluster'),
    internalTrafficPolicy: z.enum(['Cluster', 'Local']).default('Cluster'),
    healthCheckNodePort: optPort.default(0),
    loadBalancerSourceRanges: nullableList(cidr, MAX_SOURCE_RANGES),
  }),
  status: z
    .looseObject({
      loadBalancer: z
        .looseObject({
          ingress: nullableList(
            z.looseObject({
              ip: serviceIp.optional(),
              hostname: named(dns1123SubdomainProblem).nullish(),
            }),
            MAX_SERVICE_ADDRESSES,
          ),
        })
        .nullish(),
    })
    .nullish(),
});

const sliceSchema = z.looseObject({
  apiVersion: z.literal('discovery.k8s.io/v1').optional(),
  kind: z.literal('EndpointSlice').optional(),
  metadata: metadata,
  addressType: z.enum(['IPv4', 'IPv6', 'FQDN']),
  endpoints: nullableList(
    z.looseObject({
      addresses: z
        .array(z.string().max(DNS_SUBDOMAIN_MAX))
        .min(1, { error: 'must contain at least 1 address' })
        .max(MAX_ENDPOINT_ADDRESSES, { error: `must have at most ${MAX_ENDPOINT_ADDRESSES} items` }),
      conditions: z
        .looseObject({
          ready: z.boolean().nullish(),
          serving: z.boolean().nullish(),
          terminating: z.boolean().nullish(),
        })
        .nullish(),
      nodeName: named(dns1123SubdomainProblem).nullish(),
      // The value of the topology.kubernetes.io/zone label.
      zone: named(labelValueProblem).nullish(),
      hostname: named(dns1123LabelProblem).nullish(),
    }),
    MAX_SLICE_ENDPOINTS,
  ),
  ports: z
    .array(
      z.looseObject({
        name: z
          .string()
          .nullish()
          .superRefine((v, ctx) => {
            const why = v ? dns1123LabelProblem(v) : undefined;
            if (why) ctx.addIssue({ code: 'custom', message: `${quote(v ?? '')} ${why}` });
          }),
        protocol,
        port: port.nullish(),
      }),
    )
    .max(MAX_SLICE_PORTS, { error: `must have at most ${MAX_SLICE_PORTS} items` })
    .nullish(),
});

function canonical(addr: string): string {
  return canonicalIp(addr);
}

/**
 * Parses and validates a stored Service. `namespace` and `name` come from the registry key; the
 * object's metadata, when present, must agree. Throws WEFT_INVALID_VALUE naming `key` and the
 * field at fault.
 */
export function parseService(key: string, namespace: string, name: string, text: string): ServiceSpec {
  const kind = 'Service';
  checkKeyNames(kind, key, namespace, name, dns1035LabelProblem);
  const res = serviceSchema.safeParse(parseJson(kind, key, text));
  if (!res.success) throw firstIssue(kind, key, res.error);
  const v = res.data;
  checkName(kind, key, v.metadata?.namespace, namespace, 'metadata.namespace');
  checkName(kind, key, v.metadata?.name, name, 'metadata.name');
  checkLabelsAndAnnotations(kind, key, v.metadata);
  checkLabels(kind, key, v.spec.selector, ['spec', 'selector']);
  const s = v.spec;
  if (s.externalName) {
    // The API server allows one trailing dot (a fully qualified name).
    const why = dns1123SubdomainProblem(s.externalName.replace(/\.$/, ''));
    if (why) throw failure(kind, key, ['spec', 'externalName'], `${quote(s.externalName)} ${why}`);
  }

  let clusterIPs: string[] = [];
  if (s.type !== 'ExternalName') {
    const listed = s.clusterIPs ?? (s.clusterIP ? [s.clusterIP] : []);
    if (s.clusterIP && s.clusterIPs && s.clusterIPs[0] !== s.clusterIP) {
      throw failure(kind, key, ['spec', 'clusterIPs', 0], 'must equal spec.clusterIP');
    }
    if (!listed.includes('None')) clusterIPs = listed.map(canonical);
    if (clusterIPs.length === 2 && isIP(clusterIPs[0] ?? '') === isIP(clusterIPs[1] ?? '')) {
      throw failure(kind, key, ['spec', 'clusterIPs'], 'two addresses of one family');
    }
  }

  const seen = new Set<string>();
  const names = new Set<string>();
  const ports: ServicePortSpec[] = [];
  s.ports.forEach((p, i) => {
    if (s.ports.length > 1 && p.name === '') {
      throw failure(kind, key, ['spec', 'ports', i, 'name'], 'is required when a service has several ports');
    }
    const id = `${p.name}/${p.protocol}`;
    if (seen.has(id))
      throw failure(kind, key, ['spec', 'ports', i], `duplicate port ${p.name || p.port}/${p.protocol}`);
    seen.add(id);
    // The API server wants port names unique across protocols too.
    if (names.has(p.name))
      throw failure(kind, key, ['spec', 'ports', i, 'name'], `duplicate name ${quote(p.name)}`);
    names.add(p.name);
    if (p.nodePort !== 0 && s.type !== 'NodePort' && s.type !== 'LoadBalancer') {
      throw failure(
        kind,
        key,
        ['spec', 'ports', i, 'nodePort'],
        `is only allowed for NodePort and LoadBalancer services`,
      );
    }
    ports.push({
      name: p.name,
      protocol: p.protocol,
      port: p.port,
      targetPort: p.targetPort,
      nodePort: p.nodePort,
    });
  });

  return {
    namespace,
    name,
    type: s.type,
    clusterIPs,
    ports,
    externalIPs: [...new Set(s.externalIPs.map(canonical))],
    loadBalancerIPs: [
      ...new Set(
        (v.status?.loadBalancer?.ingress ?? []).flatMap((i) => (i.ip !== undefined ? [canonical(i.ip)] : [])),
      ),
    ],
    // Ranges inside another one add nothing and would overlap in the kernel's interval sets.
    loadBalancerSourceRanges: Cidr.outermost(s.loadBalancerSourceRanges.map((c) => Cidr.parseLenient(c))).map(
      String,
    ),
    affinityTimeoutSeconds:
      s.sessionAffinity === 'ClientIP'
        ? (s.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        : 0,
    externalTrafficPolicy: s.externalTrafficPolicy,
    internalTrafficPolicy: s.internalTrafficPolicy,
    healthCheckNodePort: s.healthCheckNodePort,
    selector: s.selector && Object.keys(s.selector).length > 0 ? { ...s.selector } : undefined,
  };
}

/**
 * Parses and validates a stored EndpointSlice. Throws WEFT_INVALID_VALUE naming `key` and the
 * field at fault. Addresses must match `addressType` (FQDN slices are accepted and ignored, as in
 * kube-proxy).
 */
export function parseEndpointSlice(
  key: string,
  namespace: string,
  name: string,
  text: string,
): EndpointSliceSpec {
  const kind = 'EndpointSlice';
  checkKeyNames(kind, key, namespace, name, dns1123SubdomainProblem);
  const res = sliceSchema.safeParse(parseJson(kind, key, text));
  if (!res.success) throw firstIssue(kind, key, res.error);
  const v = res.data;
  checkName(kind, key, v.metadata.namespace, namespace, 'metadata.namespace');
  checkName(kind, key, v.metadata.name, name, 'metadata.name');
  checkLabelsAndAnnotations(kind, key, v.metadata);
  const serviceName = v.metadata.labels?.[SERVICE_NAME_LABEL];
  if (!serviceName) {
    throw failure(kind, key, ['metadata', 'labels', SERVICE_NAME_LABEL], 'is required: it names the service');
  }
  const want = v.addressType === 'IPv4' ? 4 : v.addressType === 'IPv6' ? 6 : 0;
  const endpoints: SliceEndpoint[] = v.endpoints.map((e, i) => {
    const addresses = e.addresses.map((a, j) => {
      if (want === 0) {
        const why = dns1123SubdomainProblem(a.replace(/\.$/, ''));
        if (why) throw failure(kind, key, ['endpoints', i, 'addresses', j], `${quote(a)} ${why}`);
        return a;
      }
      if (isIP(a) !== want || ipFamily(a) !== want) {
        throw failure(
          kind,
          key,
          ['endpoints', i, 'addresses', j],
          `${quote(a)} is not an ${v.addressType} address`,
        );
      }
      // As the API server: an endpoint on the node's own loopback or link-local addresses would
      // turn a service into a door to the node's local daemons.
      const why = specialAddressProblem(a);
      if (why) throw failure(kind, key, ['endpoints', i, 'addresses', j], `${quote(a)} ${why}`);
      return canonical(a);
    });
    // kube: a nil ready means ready; a nil serving follows ready; a nil terminating is false.
    const ready = e.conditions?.ready ?? true;
    return {
      addresses,
      ready,
      serving: e.conditions?.serving ?? ready,
      terminating: e.conditions?.terminating ?? false,
      nodeName: e.nodeName ?? undefined,
      zone: e.zone ?? undefined,
    };
  });
  let ports: EndpointSliceSpec['ports'];
  if (v.ports) {
    ports = [];
    const names = new Set<string>();
    v.ports.forEach((p, i) => {
      if (p.port === undefined || p.port === null) {
        throw failure(kind, key, ['ports', i, 'port'], 'is required');
      }
      if (names.has(p.name ?? ''))
        throw failure(kind, key, ['ports', i, 'name'], `duplicate name ${quote(p.name ?? '')}`);
      names.add(p.name ?? '');
      ports?.push({ name: p.name ?? '', protocol: p.protocol, port: p.port });
    });
  }
  const managedBy = v.metadata.labels?.[MANAGED_BY_LABEL];
  return { namespace, name, serviceName, managedBy, addressType: v.addressType, endpoints, ports };
}

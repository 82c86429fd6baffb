/**
 * The Kubernetes-shaped objects weft-proxy reads from the registry: v1 Service and
 * discovery.k8s.io/v1 EndpointSlice, reduced to the fields kube-proxy acts on. Validation is
 * strict about what reaches a rule (addresses, ports, protocols, policies) and lenient about the
 * rest, so that manifests written for a real API server (with labels, annotations, status and
 * fields weft ignores) are accepted unchanged.
 *
 * A bad object is rejected whole with an error naming its registry key and the field at fault;
 * a service with one bad port is not served half-programmed.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { ErrorCodes, WeftError } from '../errors/index.js';
import { Cidr, canonicalIp } from '../ipam/index.js';

/** The L4 protocols a service port may use. */
export const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

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
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: SliceEndpoint[];
  /** Undefined when the slice lists no ports (kube: all ports of the service). */
  ports: { name: string; protocol: Protocol; port: number }[] | undefined;
}

/** kube's default ClientIP affinity timeout: three hours. */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10_800;

/** The label that ties a slice to its service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

const port = z.number().int().min(1).max(65_535);
const optPort = z.number().int().min(0).max(65_535);
const protocol = z.enum(PROTOCOLS, { error: () => `must be one of ${PROTOCOLS.join(', ')}` }).default('TCP');
const ip = z.string().refine((v) => isIP(v) !== 0, { error: 'is not an IP address' });
const dnsLabel = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a lowercase DNS name');
const cidr = z.string().superRefine((v, ctx) => {
  try {
    Cidr.parseLenient(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'is not a CIDR' });
  }
});
const nullableList = <T extends z.ZodType>(item: T) =>
  z
    .array(item)
    .nullish()
    .transform((v) => v ?? []);

const metadata = z.looseObject({
  name: dnsLabel.optional(),
  namespace: dnsLabel.optional(),
  labels: z.record(z.string(), z.string()).nullish(),
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
        name: z.string().max(63).default(''),
        protocol,
        port,
        targetPort: z.union([port, z.string().min(1).max(15)]).optional(),
        nodePort: optPort.default(0),
      }),
    ),
    externalIPs: nullableList(ip),
    sessionAffinity: z.enum(['None', 'ClientIP']).default('None'),
    sessionAffinityConfig: z
      .looseObject({
        clientIP: z.looseObject({ timeoutSeconds: z.number().int().min(1).max(86_400).optional() }).nullish(),
      })
      .nullish(),
    externalTrafficPolicy: z.enum(['Cluster', 'Local']).default('Cluster'),
    internalTrafficPolicy: z.enum(['Cluster', 'Local']).default('Cluster'),
    healthCheckNodePort: optPort.default(0),
    loadBalancerSourceRanges: nullableList(cidr),
  }),
  status: z
    .looseObject({
      loadBalancer: z
        .looseObject({
          ingress: nullableList(z.looseObject({ ip: ip.optional() })),
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
      addresses: z.array(z.string()).min(1).max(100),
      conditions: z
        .looseObject({
          ready: z.boolean().nullish(),
          serving: z.boolean().nullish(),
          terminating: z.boolean().nullish(),
        })
        .nullish(),
      nodeName: z.string().nullish(),
      zone: z.string().nullish(),
    }),
  ),
  ports: z
    .array(
      z.looseObject({
        name: z.string().max(63).nullish(),
        protocol,
        port: port.nullish(),
      }),
    )
    .nullish(),
});

/** Which object an error is about: its kind and registry key. */
function failure(kind: string, key: string, path: readonly PropertyKey[], message: string): WeftError {
  const field = path
    .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
    .join('')
    .replace(/^\./, '');
  const where = field ? `${kind} ${key}: field ${field}` : `${kind} ${key}`;
  return new WeftError(ErrorCodes.INVALID_VALUE, `${where}: ${message}`, { object: key, kind, field });
}

function firstIssue(kind: string, key: string, err: z.ZodError): WeftError {
  const issue = err.issues[0];
  if (!issue) return failure(kind, key, [], 'invalid');
  return failure(kind, key, issue.path, issue.message);
}

function parseJson(kind: string, key: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw failure(kind, key, [], `not JSON: ${(err as Error).message}`);
  }
}

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
  const res = serviceSchema.safeParse(parseJson(kind, key, text));
  if (!res.success) throw firstIssue(kind, key, res.error);
  const v = res.data;
  checkName(kind, key, v.metadata?.namespace, namespace, 'metadata.namespace');
  checkName(kind, key, v.metadata?.name, name, 'metadata.name');
  const s = v.spec;

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
  const ports: ServicePortSpec[] = [];
  s.ports.forEach((p, i) => {
    if (s.ports.length > 1 && p.name === '') {
      throw failure(kind, key, ['spec', 'ports', i, 'name'], 'is required when a service has several ports');
    }
    const id = `${p.name}/${p.protocol}`;
    if (seen.has(id))
      throw failure(kind, key, ['spec', 'ports', i], `duplicate port ${p.name || p.port}/${p.protocol}`);
    seen.add(id);
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
    loadBalancerSourceRanges: [
      ...new Set(s.loadBalancerSourceRanges.map((c) => Cidr.parseLenient(c).toString())),
    ],
    affinityTimeoutSeconds:
      s.sessionAffinity === 'ClientIP'
        ? (s.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        : 0,
    externalTrafficPolicy: s.externalTrafficPolicy,
    internalTrafficPolicy: s.internalTrafficPolicy,
    healthCheckNodePort: s.healthCheckNodePort,
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
  const res = sliceSchema.safeParse(parseJson(kind, key, text));
  if (!res.success) throw firstIssue(kind, key, res.error);
  const v = res.data;
  checkName(kind, key, v.metadata.namespace, namespace, 'metadata.namespace');
  checkName(kind, key, v.metadata.name, name, 'metadata.name');
  const serviceName = v.metadata.labels?.[SERVICE_NAME_LABEL];
  if (!serviceName) {
    throw failure(kind, key, ['metadata', 'labels', SERVICE_NAME_LABEL], 'is required: it names the service');
  }
  const want = v.addressType === 'IPv4' ? 4 : v.addressType === 'IPv6' ? 6 : 0;
  const endpoints: SliceEndpoint[] = v.endpoints.map((e, i) => {
    const addresses = e.addresses.map((a, j) => {
      if (want === 0) return a;
      if (isIP(a) !== want) {
        throw failure(
          kind,
          key,
          ['endpoints', i, 'addresses', j],
          `${JSON.stringify(a)} is not an ${v.addressType} address`,
        );
      }
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
    v.ports.forEach((p, i) => {
      if (p.port === undefined || p.port === null) {
        throw failure(kind, key, ['ports', i, 'port'], 'is required');
      }
      ports?.push({ name: p.name ?? '', protocol: p.protocol, port: p.port });
    });
  }
  return { namespace, name, serviceName, addressType: v.addressType, endpoints, ports };
}

function checkName(kind: string, key: string, got: string | undefined, want: string, field: string): void {
  if (got !== undefined && got !== want) {
    throw failure(
      kind,
      key,
      field.split('.'),
      `${JSON.stringify(got)} does not match the key (${JSON.stringify(want)})`,
    );
  }
}

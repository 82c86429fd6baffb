/**
 * The synthetic workload of the proxy benchmarks: N ClusterIP services, each with one named TCP
 * port and one EndpointSlice of E ready endpoints on other nodes. The objects are the JSON a
 * user would store; they go through the proxy's own parse and buildServicePorts, so a benchmark
 * measures the path the daemon takes, not a hand-built model.
 */
import {
  buildServicePorts,
  parseEndpointSlice,
  parseService,
  serviceKey,
  sliceKey,
  DEFAULT_PROXY_PREFIX,
  SERVICE_NAME_LABEL,
  type ServicePort,
} from '../src/proxy/model/index.js';

/** The node the benchmark's proxiers run as; no endpoint is on it, so every endpoint is remote. */
export const BENCH_NODE = 'bench-node';
/** The cluster network the endpoints live in (room for 4M endpoints). */
export const BENCH_CLUSTER_CIDR = '10.64.0.0/10';
/** The namespace of every benchmark service. */
export const BENCH_NAMESPACE = 'bench';

const SERVICE_BASE = ipToInt('10.96.0.0');
const ENDPOINT_BASE = ipToInt('10.64.0.0');
/** Replacement endpoints (one-endpoint changes) come from outside the regular range. */
const REPLACEMENT_BASE = ipToInt('10.120.0.0');

function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Name of the i-th service. */
export function serviceName(i: number): string {
  return `svc-${i}`;
}

/** ClusterIP of the i-th service (10.96.0.0/12 holds a million). */
export function clusterIpOf(i: number): string {
  return intToIp(SERVICE_BASE + 1 + i);
}

/** Address of endpoint j of service i. */
export function endpointIpOf(i: number, j: number, perService: number): string {
  return intToIp(ENDPOINT_BASE + 2 + i * perService + j);
}

/** An address no regular endpoint uses, for the n-th replacement. */
export function replacementIp(n: number): string {
  return intToIp(REPLACEMENT_BASE + 2 + n);
}

/** The stored v1 Service of the i-th service. */
export function serviceObject(i: number): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: serviceName(i), namespace: BENCH_NAMESPACE },
    spec: {
      type: 'ClusterIP',
      clusterIP: clusterIpOf(i),
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
    },
  };
}

/** Options of {@link sliceObject}. */
export interface SliceOptions {
  /** Replace the first endpoint's address with this one. */
  firstAddress?: string;
}

/** The stored EndpointSlice of the i-th service, with `perService` ready endpoints. */
export function sliceObject(i: number, perService: number, opts: SliceOptions = {}): Record<string, unknown> {
  const endpoints = Array.from({ length: perService }, (_, j) => ({
    addresses: [j === 0 && opts.firstAddress ? opts.firstAddress : endpointIpOf(i, j, perService)],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: `node-${(j % 3) + 1}`,
  }));
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${serviceName(i)}-1`,
      namespace: BENCH_NAMESPACE,
      labels: { [SERVICE_NAME_LABEL]: serviceName(i) },
    },
    addressType: 'IPv4',
    endpoints,
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
  };
}

/** One object as the registry stores it. */
export interface StoredObject {
  key: string;
  value: string;
}

/** The registry keys and JSON of service i and its slice. */
export function storedObjects(i: number, perService: number, opts: SliceOptions = {}): StoredObject[] {
  return [
    {
      key: serviceKey(DEFAULT_PROXY_PREFIX, BENCH_NAMESPACE, serviceName(i)),
      value: JSON.stringify(serviceObject(i)),
    },
    {
      key: sliceKey(DEFAULT_PROXY_PREFIX, BENCH_NAMESPACE, `${serviceName(i)}-1`),
      value: JSON.stringify(sliceObject(i, perService, opts)),
    },
  ];
}

/**
 * Service ports of the services with the given indexes, through parseService,
 * parseEndpointSlice and buildServicePorts (IPv4, as {@link BENCH_NODE} sees them).
 */
export function servicePortsOf(
  indexes: Iterable<number>,
  perService: number,
  opts: SliceOptions = {},
): Map<string, ServicePort> {
  const services = [];
  const slices = [];
  for (const i of indexes) {
    const [svc, slice] = storedObjects(i, perService, opts);
    if (!svc || !slice) continue;
    services.push(parseService(svc.key, BENCH_NAMESPACE, serviceName(i), svc.value));
    slices.push(parseEndpointSlice(slice.key, BENCH_NAMESPACE, `${serviceName(i)}-1`, slice.value));
  }
  return buildServicePorts(services, slices, { family: 4, nodeName: BENCH_NODE });
}

/** Service ports of services 0 … count−1. */
export function workload(count: number, perService: number): Map<string, ServicePort> {
  return servicePortsOf(range(count), perService);
}

function* range(n: number): Generator<number> {
  for (let i = 0; i < n; i++) yield i;
}

/** The one service port of service i (throws when the model dropped it). */
export function servicePortOf(i: number, perService: number, opts: SliceOptions = {}): ServicePort {
  const sp = [...servicePortsOf([i], perService, opts).values()][0];
  if (!sp) throw new Error(`workload: service ${serviceName(i)} produced no service port`);
  return sp;
}

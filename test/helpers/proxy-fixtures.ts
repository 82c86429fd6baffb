/**
 * The fixed set of services the golden tests of every proxy mode render: ClusterIP with a
 * targetPort remap, one port number over two protocols, NodePort, externalIP, LoadBalancer with
 * source ranges, Local policies (with and without a local endpoint), ClientIP affinity, no
 * endpoints, terminating-only endpoints, SCTP and a headless service (which has no rules).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  buildServicePorts,
  parseEndpointSlice,
  parseObjectKey,
  parseService,
  type EndpointSliceSpec,
  type ServicePort,
  type ServiceSpec,
} from '../../src/proxy/model/index.js';
import type { ProxierContext } from '../../src/proxy/proxier.js';
import { silentLogger } from '../../src/log/index.js';
import { execRunner } from '../../src/exec/index.js';

/** The node the golden services are rendered for. */
export const GOLDEN_NODE = 'node-1';

/** The stored objects, as `{ key, value }`. */
export function goldenObjects(): { key: string; value: unknown }[] {
  const file = fileURLToPath(new URL('../fixtures/proxy/golden-services.json', import.meta.url));
  return JSON.parse(readFileSync(file, 'utf8')) as { key: string; value: unknown }[];
}

/** Parses stored objects into specs; throws on a bad one (the fixture has none). */
export function parseObjects(objs: { key: string; value: unknown }[]): {
  services: ServiceSpec[];
  slices: EndpointSliceSpec[];
} {
  const services: ServiceSpec[] = [];
  const slices: EndpointSliceSpec[] = [];
  for (const { key, value } of objs) {
    const k = parseObjectKey('/weft', key);
    if (!k) throw new Error(`bad fixture key ${key}`);
    const text = JSON.stringify(value);
    if (k.kind === 'Service') services.push(parseService(key, k.namespace, k.name, text));
    else slices.push(parseEndpointSlice(key, k.namespace, k.name, text));
  }
  return { services, slices };
}

/** The golden service ports (IPv4) as node-1 sees them. */
export function goldenServicePorts(): Map<string, ServicePort> {
  const { services, slices } = parseObjects(goldenObjects());
  return buildServicePorts(services, slices, { family: 4, nodeName: GOLDEN_NODE });
}

/** The proxier context the golden files are rendered with. */
export function goldenContext(over: Partial<ProxierContext> = {}): ProxierContext {
  return {
    family: 4,
    nodeName: GOLDEN_NODE,
    clusterCidr: '10.244.0.0/16',
    masqueradeAll: false,
    nodePortAddresses: [],
    runner: execRunner(),
    log: silentLogger(),
    ...over,
  };
}

/**
 * Synthetic service ports for the benchmark and the scale tests: `count` ClusterIP services with
 * `endpoints` ready endpoints each, deterministic so that runs compare.
 */
import type { Endpoint, ServicePort } from '../model/index.js';

function v4(n: number, base: [number, number]): string {
  return `${base[0]}.${base[1]}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Options of {@link syntheticServicePorts}. */
export interface SyntheticOptions {
  /** Namespace of every service. Default `bench`. */
  namespace?: string;
  /** Name of the node the proxier runs on; endpoint i of each service is local when i % 2 = 0. */
  nodeName?: string;
}

/**
 * IPv4 service ports `bench/svc-<i>:http` (TCP 80, ClusterIP 10.96.0.0/16 + i, up to 65,535) with
 * distinct endpoints from 10.244.0.1 upwards on port 8080.
 */
export function syntheticServicePorts(
  count: number,
  endpoints: number,
  opts: SyntheticOptions = {},
): Map<string, ServicePort> {
  if (count > 65_535 || count * endpoints > 65_535 * 256) {
    throw new RangeError(
      `syntheticServicePorts: ${count} services x ${endpoints} endpoints do not fit the address plan`,
    );
  }
  const namespace = opts.namespace ?? 'bench';
  const out = new Map<string, ServicePort>();
  let next = 1;
  for (let i = 1; i <= count; i++) {
    const name = `svc-${i}`;
    const id = `${namespace}/${name}:http`;
    const eps: Endpoint[] = [];
    for (let e = 0; e < endpoints; e++) {
      const n = next++;
      eps.push({
        ip: `10.${244 + Math.floor(n / 65_536)}.${(n >>> 8) & 255}.${n & 255}`,
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        isLocal: e % 2 === 0 && opts.nodeName !== undefined,
      });
    }
    eps.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
    out.set(id, {
      id,
      namespace,
      name,
      portName: 'http',
      protocol: 'TCP',
      family: 4,
      clusterIP: v4(i, [10, 96]),
      port: 80,
      nodePort: 0,
      externalIPs: [],
      loadBalancerIPs: [],
      loadBalancerSourceRanges: [],
      affinityTimeoutSeconds: 0,
      externalPolicyLocal: false,
      internalPolicyLocal: false,
      healthCheckNodePort: 0,
      endpoints: eps,
    });
  }
  return out;
}

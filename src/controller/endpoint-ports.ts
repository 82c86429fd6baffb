/**
 * The ports of a pod's endpoint, resolved from its service's ports, and the key that groups pods
 * with the same resolution into the same slices (kube-controller-manager: getEndpointPorts,
 * FindPort, NewPortMapKey).
 */
import type { EffectivePod, Protocol, ServicePortSpec } from '../k8s/index.js';

/** A port of an EndpointSlice. */
export interface SlicePort {
  name: string;
  protocol: Protocol;
  port: number;
}

/**
 * The port a service port reaches on `pod`, or undefined when the pod has no container port of
 * the targetPort's name and the service port's protocol (kube then leaves that port out of the
 * pod's endpoint ports rather than the pod out of the service).
 */
export function findPodPort(pod: EffectivePod, servicePort: ServicePortSpec): number | undefined {
  const target = servicePort.targetPort;
  if (target === undefined) return servicePort.port;
  if (typeof target === 'number') return target;
  const found = pod.ports.find((p) => p.name === target && p.protocol === servicePort.protocol);
  return found?.containerPort;
}

/** The endpoint ports of `pod` for a service with `servicePorts`, in the service's order. */
export function endpointPorts(servicePorts: readonly ServicePortSpec[], pod: EffectivePod): SlicePort[] {
  const out: SlicePort[] = [];
  for (const sp of servicePorts) {
    const port = findPodPort(pod, sp);
    if (port === undefined) continue;
    out.push({ name: sp.name, protocol: sp.protocol, port });
  }
  return out;
}

/**
 * A key equal for two port lists exactly when they hold the same ports in any order, as kube's
 * port map hash; `undefined` (a slice listing no ports at all) gets a key no port list has.
 */
export function portMapKey(ports: readonly SlicePort[] | undefined): string {
  if (ports === undefined) return '*';
  return JSON.stringify(
    ports
      .map((p) => [p.name, p.protocol, p.port] as const)
      .sort((a, b) => (a[0] !== b[0] ? cmp(a[0], b[0]) : a[1] !== b[1] ? cmp(a[1], b[1]) : a[2] - b[2])),
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

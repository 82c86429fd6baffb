/**
 * What the selector lab tests and the selector benchmark read and write in the registry besides
 * Services and hand-written slices: v1 Pods, the attachment records weft-cni writes, and the
 * endpoints a node's nftables currently holds for a ClusterIP (weft-proxy's nftables mode).
 */
import { podAttachmentKey, podKey } from '../../src/k8s/index.js';
import type { Lab, LabNode } from '../lab/index.js';
import { PROXY_PREFIX } from './proxy-objects.js';

/** What {@link podObject} builds. */
export interface PodDef {
  namespace?: string;
  name: string;
  labels?: Record<string, string>;
  nodeName?: string;
  ports?: { name?: string; containerPort: number; protocol?: 'TCP' | 'UDP' | 'SCTP' }[];
  /** A Ready condition in the status; none when absent (weft then counts an attached pod ready). */
  ready?: boolean;
}

/** A v1 Pod as `kubectl run --dry-run=client -o json` would print it, plus its node. */
export function podObject(
  def: PodDef,
  prefix = PROXY_PREFIX,
): { key: string; value: Record<string, unknown> } {
  const namespace = def.namespace ?? 'default';
  return {
    key: podKey(prefix, namespace, def.name),
    value: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace, name: def.name, labels: def.labels ?? {} },
      spec: {
        ...(def.nodeName !== undefined ? { nodeName: def.nodeName } : {}),
        containers: [
          {
            name: def.name,
            image: 'registry.k8s.io/pause:3.9',
            ports: (def.ports ?? []).map((p) => ({
              ...(p.name ? { name: p.name } : {}),
              containerPort: p.containerPort,
              protocol: p.protocol ?? 'TCP',
            })),
          },
        ],
      },
      ...(def.ready !== undefined
        ? { status: { conditions: [{ type: 'Ready', status: def.ready ? 'True' : 'False' }] } }
        : {}),
    },
  };
}

/** The record weft-cni writes on ADD (the shape fixed in INTERFACES.md §1). */
export function attachmentObject(
  def: { namespace?: string; name: string; node: string; ip: string; containerId?: string },
  prefix = PROXY_PREFIX,
): { key: string; value: Record<string, unknown> } {
  const namespace = def.namespace ?? 'default';
  return {
    key: podAttachmentKey(prefix, namespace, def.name),
    value: {
      apiVersion: 'weft.dev/v1',
      kind: 'PodAttachment',
      metadata: { namespace, name: def.name },
      node: def.node,
      containerId: def.containerId ?? `bench-${def.name}`,
      ips: [def.ip],
    },
  };
}

/** The nftables map weft-proxy fills with one element per ready endpoint of a TCP ClusterIP port. */
export const CLUSTER_IP_MAP = 'cluster-ip-endpoints-tcp';

/**
 * The endpoints (`ip:port`) of `clusterIP:port` in one element listing of
 * {@link CLUSTER_IP_MAP} (`<ClusterIP> . tcp . <port> . <bucket> : <ip> . <port>`).
 */
export function endpointsInMap(listing: string, clusterIP: string, port: number): string[] {
  const re = /(\d+\.\d+\.\d+\.\d+) \. tcp \. (\d+) \. \d+ : (\d+\.\d+\.\d+\.\d+) \. (\d+)/g;
  const out: string[] = [];
  for (const m of listing.matchAll(re)) {
    if (m[1] === clusterIP && m[2] === String(port)) out.push(`${m[3]}:${m[4]}`);
  }
  return out.sort();
}

/** What a node's nftables holds now for `clusterIP:port` (empty when the map is absent). */
export async function kernelEndpoints(
  lab: Lab,
  node: LabNode,
  clusterIP: string,
  port: number,
): Promise<string[]> {
  const r = await lab.exec(node, 'nft', ['list', 'map', 'ip', 'weft', CLUSTER_IP_MAP], { allowFail: true });
  return endpointsInMap(r.stdout, clusterIP, port);
}

/**
 * Polls every node's map as fast as `nft` answers until `want` holds on each; resolves with the
 * time (epoch ms) it was first seen holding on each node, by node name: the end of the `nft` call
 * that saw it, so each time is late by at most one call (one `ip netns exec nft`, 10–30 ms).
 */
export async function waitKernel(
  lab: Lab,
  nodes: readonly LabNode[],
  clusterIP: string,
  port: number,
  want: (endpoints: string[]) => boolean,
  timeoutMs: number,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  const seen = new Map<string, number>();
  const last = new Map<string, string[]>();
  await Promise.all(
    nodes.map(async (n) => {
      for (;;) {
        const eps = await kernelEndpoints(lab, n, clusterIP, port);
        // The kernel was read somewhere inside the call: its end bounds the change from above,
        // so a latency measured to it can only be overstated (by one call at most).
        const after = Date.now();
        last.set(n.name, eps);
        if (want(eps)) return void seen.set(n.name, after);
        if (Date.now() > deadline) return;
      }
    }),
  );
  if (seen.size < nodes.length) {
    const state = nodes.map((n) => `${n.name}: [${(last.get(n.name) ?? []).join(', ')}]`).join('; ');
    throw new Error(`nftables of every node did not reach the wanted state within ${timeoutMs} ms: ${state}`);
  }
  return seen;
}

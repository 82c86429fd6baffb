/**
 * Builders of what weft-controller reads (Services with a selector, Pods, pod attachments,
 * Nodes, weft-flanneld status records) and readers of what it writes (EndpointSlices), shared by
 * its unit and integration tests.
 */
import {
  MANAGED_BY_LABEL,
  POD_ATTACHMENT_API_VERSION,
  SERVICE_NAME_LABEL,
  ZONE_LABEL,
  nodeKey,
  podAttachmentKey,
  podKey,
  serviceKey,
  sliceKeysPrefix,
} from '../../src/k8s/index.js';
import type { Store } from '../../src/registry/index.js';

/** The registry prefix the tests use. */
export const PREFIX = '/weft';

/** A stored object: its registry key and JSON value. */
export interface Stored {
  key: string;
  value: Record<string, unknown>;
}

/** A v1 Service, with a selector unless `selector` is undefined. */
export function selectorService(def: {
  name: string;
  namespace?: string;
  clusterIP?: string;
  selector?: Record<string, string>;
  ports?: { name?: string; port: number; targetPort?: number | string; protocol?: string }[];
}): Stored {
  const namespace = def.namespace ?? 'default';
  const clusterIP = def.clusterIP ?? '10.96.0.10';
  return {
    key: serviceKey(PREFIX, namespace, def.name),
    value: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace, name: def.name },
      spec: {
        type: 'ClusterIP',
        clusterIP,
        clusterIPs: [clusterIP],
        ...(def.selector && { selector: def.selector }),
        ports: (def.ports ?? [{ name: 'http', port: 80, targetPort: 8080 }]).map((p) => ({
          name: p.name ?? '',
          protocol: p.protocol ?? 'TCP',
          port: p.port,
          ...(p.targetPort !== undefined && { targetPort: p.targetPort }),
        })),
      },
    },
  };
}

/** A v1 Pod as `kubectl run --labels --port` and a kubelet's status would make it. */
export function pod(def: {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  node?: string;
  ip?: string;
  ports?: { name?: string; containerPort: number }[];
  ready?: boolean;
  terminating?: boolean;
}): Stored {
  const namespace = def.namespace ?? 'default';
  return {
    key: podKey(PREFIX, namespace, def.name),
    value: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        namespace,
        name: def.name,
        labels: def.labels ?? {},
        ...(def.terminating && {
          deletionTimestamp: new Date().toISOString(),
          deletionGracePeriodSeconds: 30,
        }),
      },
      spec: {
        ...(def.node && { nodeName: def.node }),
        containers: [
          { name: 'c', image: 'busybox', ports: def.ports ?? [{ name: 'http', containerPort: 8080 }] },
        ],
      },
      ...((def.ip || def.ready !== undefined) && {
        status: {
          ...(def.ip && { podIP: def.ip, podIPs: [{ ip: def.ip }] }),
          ...(def.ready !== undefined && {
            conditions: [{ type: 'Ready', status: def.ready ? 'True' : 'False' }],
          }),
        },
      }),
    },
  };
}

/** The record weft-cni writes on ADD. */
export function attachment(def: { name: string; namespace?: string; node: string; ip: string }): Stored {
  const namespace = def.namespace ?? 'default';
  return {
    key: podAttachmentKey(PREFIX, namespace, def.name),
    value: {
      apiVersion: POD_ATTACHMENT_API_VERSION,
      kind: 'PodAttachment',
      metadata: { namespace, name: def.name },
      node: def.node,
      containerId: `c-${def.name}`,
      ips: [def.ip],
    },
  };
}

/** A v1 Node with a zone label. */
export function nodeObject(name: string, zone?: string): Stored {
  return {
    key: nodeKey(PREFIX, name),
    value: { apiVersion: 'v1', kind: 'Node', metadata: { name, labels: zone ? { [ZONE_LABEL]: zone } : {} } },
  };
}

/** weft-flanneld's status record of a node (its heartbeat). */
export function flanneldStatus(
  node: string,
  statusPrefix = `${PREFIX}/status`,
): { key: string; value: string } {
  const now = new Date().toISOString();
  return {
    key: `${statusPrefix}/${node}/weft-flanneld`,
    value: JSON.stringify({
      node,
      daemon: 'weft-flanneld',
      version: '0.1.0',
      pid: 1,
      startedAt: now,
      updatedAt: now,
      ready: true,
      detail: {},
    }),
  };
}

/** Writes an object whatever its current revision. */
export async function putObject(store: Store, o: { key: string; value: unknown }): Promise<void> {
  const text = typeof o.value === 'string' ? o.value : JSON.stringify(o.value);
  for (;;) {
    const cur = await store.get(o.key);
    if (!cur) {
      if ((await store.create(o.key, text)).created) return;
    } else if ((await store.update(o.key, text, { modRevision: cur.modRevision })).updated) return;
  }
}

/** One stored EndpointSlice, as JSON, with its key and modRevision. */
export interface StoredSlice {
  key: string;
  name: string;
  modRevision: number;
  service: string | undefined;
  managedBy: string | undefined;
  addressType: string;
  endpoints: {
    addresses: string[];
    conditions: { ready?: boolean; serving?: boolean; terminating?: boolean };
    nodeName?: string;
    zone?: string;
    targetRef?: { kind: string; namespace: string; name: string };
  }[];
  ports: { name: string; port: number; protocol: string }[];
}

/** The slices in the store (of one service when given), by name. */
export async function readSlices(
  store: Store,
  service?: string,
  namespace = 'default',
): Promise<StoredSlice[]> {
  const { items } = await store.list(`${sliceKeysPrefix(PREFIX)}${namespace}/`);
  const out: StoredSlice[] = [];
  for (const kv of items) {
    const v = JSON.parse(kv.value) as {
      metadata: { name: string; labels?: Record<string, string> };
      addressType: string;
      endpoints?: StoredSlice['endpoints'];
      ports?: StoredSlice['ports'];
    };
    const s: StoredSlice = {
      key: kv.key,
      name: v.metadata.name,
      modRevision: kv.modRevision,
      service: v.metadata.labels?.[SERVICE_NAME_LABEL],
      managedBy: v.metadata.labels?.[MANAGED_BY_LABEL],
      addressType: v.addressType,
      endpoints: v.endpoints ?? [],
      ports: v.ports ?? [],
    };
    if (service === undefined || s.service === service) out.push(s);
  }
  return out;
}

/** The endpoint addresses of a service's slices, sorted, with ready flags: `10.0.0.1` or `10.0.0.1!`. */
export async function endpointsOf(store: Store, service: string, namespace = 'default'): Promise<string[]> {
  const slices = await readSlices(store, service, namespace);
  return slices
    .flatMap((s) =>
      s.endpoints.map((e) => `${e.addresses[0] ?? '?'}${e.conditions.ready === false ? '!' : ''}`),
    )
    .sort();
}

/**
 * Pods, Nodes and pod attachments as weft keeps them in the registry.
 *
 * - A **Pod** (`<prefix>/pods/<ns>/<name>`, v1 Pod JSON) is declared by a user (`weftctl apply`,
 *   `weftctl lab pod add`): labels, `spec.nodeName`, container ports, and optionally a status.
 * - A **pod attachment** (`<prefix>/podattachments/<ns>/<name>`) is written by weft-cni on ADD and
 *   removed on DEL: the pod's addresses and node as the network gave them. weft has no kubelet, so
 *   the attachment is what turns a declared pod into one with an IP.
 * - A **Node** (`<prefix>/nodes/<name>`, v1 Node JSON) is optional; its labels give the zone.
 *
 * A pod is an endpoint once it is declared and has an address (its own status or an attachment):
 * see {@link effectivePod}.
 *
 * Each is validated at the door as ./schema.ts validates Services (./object-validation.ts): the
 * API server's name rules and sizes, weft's caps where the API server has none, a clear error
 * naming the key and the field. weft runs no containers, so a Pod's containers are read for
 * their ports only: a Pod may list none (one declared by the lab for its labels and address),
 * and a container's image is not required.
 */
import { z } from 'zod';
import { canonicalIp, ipFamily } from '../ipam/index.js';
import { specialAddressProblem } from './addresses.js';
import { MAX_POD_CONDITIONS, MAX_POD_CONTAINERS, MAX_POD_PORTS } from './limits.js';
import { dns1123LabelProblem, dns1123SubdomainProblem, ianaSvcNameProblem } from './names.js';
import {
  checkKeyNames,
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
  type Protocol,
} from './object-validation.js';

/** One container port of a pod (all containers' ports, flattened, in order). */
export interface PodContainerPort {
  /** An IANA_SVC_NAME, or '' when unnamed. */
  name: string;
  containerPort: number;
  protocol: Protocol;
}

/** A validated v1 Pod, reduced to what endpoints are made of. */
export interface PodSpec {
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  /** `spec.nodeName`; undefined when not scheduled (an attachment then gives the node). */
  nodeName: string | undefined;
  ports: PodContainerPort[];
  /** `status.podIPs` (or `status.podIP`), canonical, at most one per family. */
  podIPs: string[];
  /**
   * The Ready condition of `status.conditions`: true/false when the pod lists one, undefined when
   * it does not (weft then counts an attached pod as ready: there is no kubelet to say otherwise).
   */
  ready: boolean | undefined;
  /** `metadata.deletionTimestamp` is set: the pod is being stopped (terminating). */
  terminating: boolean;
  /** `spec.hostNetwork`: such pods take the node's address (kube: still endpoints). */
  hostNetwork: boolean;
}

/** What weft-cni records on ADD: the pod's network as the node gave it. */
export interface PodAttachment {
  namespace: string;
  name: string;
  /** The node the pod runs on. */
  node: string;
  /** CNI_CONTAINERID of the ADD; DEL removes the record only when it matches. */
  containerId: string;
  /** Canonical addresses, at most one per family. */
  ips: string[];
}

/** A validated v1 Node, reduced to its labels. */
export interface NodeSpec {
  name: string;
  labels: Readonly<Record<string, string>>;
}

/** The label of a node that names its zone. */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** A pod as the controller sees it: declared, with its address and node resolved. */
export interface EffectivePod {
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  nodeName: string | undefined;
  ports: PodContainerPort[];
  /** Empty when the pod has no address yet (not an endpoint). */
  ips: string[];
  ready: boolean;
  terminating: boolean;
}

/** The apiVersion of a pod attachment record. */
export const POD_ATTACHMENT_API_VERSION = 'weft.dev/v1';

/** Longest CNI container ID weft accepts (weft's cap; runtimes use 64 hex digits). */
export const MAX_CONTAINER_ID = 256;

// The CNI specification's rule for CNI_CONTAINERID.
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

const containerPort = z.looseObject({
  name: z.string().nullish(),
  containerPort: port,
  protocol,
  hostPort: optPort.nullish(),
  hostIP: z.string().nullish(),
});

const container = z.looseObject({
  name: named(dns1123LabelProblem),
  ports: nullableList(containerPort, MAX_POD_PORTS),
});

const podSchema = z.looseObject({
  apiVersion: z.literal('v1').optional(),
  kind: z.literal('Pod').optional(),
  metadata: metadata
    .extend({
      deletionTimestamp: z
        .string()
        .refine((v) => !Number.isNaN(Date.parse(v)), { error: 'is not an RFC 3339 time' })
        .nullish(),
      deletionGracePeriodSeconds: z.number().int().min(0).nullish(),
    })
    .optional(),
  spec: z
    .looseObject({
      // '' is how a serialiser writes "not scheduled".
      nodeName: z.union([z.literal(''), named(dns1123SubdomainProblem)]).nullish(),
      hostNetwork: z.boolean().nullish(),
      containers: nullableList(container, MAX_POD_CONTAINERS),
      initContainers: nullableList(container, MAX_POD_CONTAINERS),
    })
    .nullish(),
  status: z
    .looseObject({
      podIP: z.union([z.literal(''), ip]).nullish(),
      podIPs: z
        .array(z.looseObject({ ip }))
        .max(2, { error: 'must have at most 2 items, one per family' })
        .nullish(),
      conditions: nullableList(
        z.looseObject({
          type: z.string().max(316),
          status: z.enum(['True', 'False', 'Unknown'], { error: () => 'must be True, False or Unknown' }),
        }),
        MAX_POD_CONDITIONS,
      ),
    })
    .nullish(),
});

const nodeSchema = z.looseObject({
  apiVersion: z.literal('v1').optional(),
  kind: z.literal('Node').optional(),
  metadata: metadata.optional(),
});

const attachmentSchema = z.looseObject({
  apiVersion: z.literal(POD_ATTACHMENT_API_VERSION),
  kind: z.literal('PodAttachment'),
  metadata: metadata,
  node: named(dns1123SubdomainProblem),
  containerId: z
    .string()
    .max(MAX_CONTAINER_ID)
    .refine((v) => CONTAINER_ID.test(v), {
      error: 'must be letters, digits, "_", "." and "-", starting with a letter or digit',
    }),
  ips: z.array(ip).min(1, { error: 'must contain at least 1 address' }).max(2, {
    error: 'must have at most 2 items, one per family',
  }),
});

/**
 * Pod addresses: canonical, at most one per family, none that a Service may not claim (an
 * endpoint on loopback or link-local is refused by the EndpointSlice validation, and would take
 * its whole slice down with it).
 */
function podAddresses(
  kind: string,
  key: string,
  ips: readonly string[],
  path: readonly PropertyKey[],
): string[] {
  const out: string[] = [];
  const families = new Set<number>();
  ips.forEach((a, i) => {
    const why = specialAddressProblem(a);
    if (why) throw failure(kind, key, [...path, i], `${quote(a)} ${why}`);
    const family = ipFamily(a);
    if (families.has(family ?? 0)) throw failure(kind, key, [...path], 'two addresses of one family');
    families.add(family ?? 0);
    out.push(canonicalIp(a));
  });
  return out;
}

/**
 * Parses and validates a stored v1 Pod. `namespace` and `name` come from the registry key; the
 * object's metadata, when present, must agree. Throws WEFT_INVALID_VALUE naming `key` and the
 * field at fault.
 */
export function parsePod(key: string, namespace: string, name: string, text: string): PodSpec {
  const kind = 'Pod';
  checkKeyNames(kind, key, namespace, name, dns1123SubdomainProblem);
  const res = podSchema.safeParse(parseJson(kind, key, text));
  if (!res.success) throw firstIssue(kind, key, res.error);
  const v = res.data;
  checkName(kind, key, v.metadata?.namespace, namespace, 'metadata.namespace');
  checkName(kind, key, v.metadata?.name, name, 'metadata.name');
  checkLabelsAndAnnotations(kind, key, v.metadata);
  const containers = v.spec?.containers ?? [];

  const ports: PodContainerPort[] = [];
  const names = new Set<string>();
  const containerNames = new Set<string>();
  containers.forEach((c, i) => {
    if (containerNames.has(c.name))
      throw failure(kind, key, ['spec', 'containers', i, 'name'], `duplicate name ${quote(c.name)}`);
    containerNames.add(c.name);
    c.ports.forEach((p, j) => {
      const field = ['spec', 'containers', i, 'ports', j];
      const portName = p.name ?? '';
      if (portName !== '') {
        const why = ianaSvcNameProblem(portName);
        if (why) throw failure(kind, key, [...field, 'name'], `${quote(portName)} ${why}`);
        // Service targetPorts name a port of the pod, not of a container: unique in the pod.
        if (names.has(portName))
          throw failure(kind, key, [...field, 'name'], `duplicate name ${quote(portName)} in the pod`);
        names.add(portName);
      }
      ports.push({ name: portName, containerPort: p.containerPort, protocol: p.protocol });
    });
  });
  if (ports.length > MAX_POD_PORTS) {
    throw failure(
      kind,
      key,
      ['spec', 'containers'],
      `have ${ports.length} ports in all, more than weft's limit of ${MAX_POD_PORTS}`,
    );
  }

  const status = v.status;
  let listed = (status?.podIPs ?? []).map((p) => p.ip);
  const podIP = status?.podIP || undefined;
  if (podIP !== undefined && listed.length && listed[0] !== podIP) {
    throw failure(kind, key, ['status', 'podIPs', 0, 'ip'], `must equal status.podIP (${quote(podIP)})`);
  }
  if (!listed.length && podIP !== undefined) listed = [podIP];
  const podIPs = podAddresses(
    kind,
    key,
    listed,
    status?.podIPs?.length ? ['status', 'podIPs'] : ['status', 'podIP'],
  );

  const readyCondition = (status?.conditions ?? []).find((c) => c.type === 'Ready');
  return {
    namespace,
    name,
    labels: { ...(v.metadata?.labels ?? {}) },
    nodeName: v.spec?.nodeName || undefined,
    ports,
    podIPs,
    ready: readyCondition === undefined ? undefined : readyCondition.status === 'True',
    terminating: v.metadata?.deletionTimestamp !== undefined && v.metadata.deletionTimestamp !== null,
    hostNetwork: v.spec?.hostNetwork ?? false,
  };
}

/** Parses and validates a stored v1 Node (cluster-scoped: its key has no namespace). */
export function parseNode(key: string, name: string, text: string): NodeSpec {
  const kind = 'Node';
  checkKeyNames(kind, key, undefined, name, dns1123SubdomainProblem);
  const res = nodeSchema.safeParse(parseJson(kind, key, text));
  if (!res.success) throw firstIssue(kind, key, res.error);
  const v = res.data;
  checkName(kind, key, v.metadata?.name, name, 'metadata.name');
  checkLabelsAndAnnotations(kind, key, v.metadata);
  return { name, labels: { ...(v.metadata?.labels ?? {}) } };
}

/** Parses and validates a pod attachment record as weft-cni writes it. */
export function parsePodAttachment(
  key: string,
  namespace: string,
  name: string,
  text: string,
): PodAttachment {
  const kind = 'PodAttachment';
  checkKeyNames(kind, key, namespace, name, dns1123SubdomainProblem);
  const res = attachmentSchema.safeParse(parseJson(kind, key, text));
  if (!res.success) throw firstIssue(kind, key, res.error);
  const v = res.data;
  checkName(kind, key, v.metadata.namespace, namespace, 'metadata.namespace');
  checkName(kind, key, v.metadata.name, name, 'metadata.name');
  checkLabelsAndAnnotations(kind, key, v.metadata);
  return {
    namespace,
    name,
    node: v.node,
    containerId: v.containerId,
    ips: podAddresses(kind, key, v.ips, ['ips']),
  };
}

/** The pod attachment record weft-cni stores for a pod (the shape {@link parsePodAttachment} reads). */
export function podAttachmentObject(a: PodAttachment): Record<string, unknown> {
  return {
    apiVersion: POD_ATTACHMENT_API_VERSION,
    kind: 'PodAttachment',
    metadata: { namespace: a.namespace, name: a.name },
    node: a.node,
    containerId: a.containerId,
    ips: [...a.ips],
  };
}

/**
 * A declared pod with its address and node resolved: the pod's own status first (a pod written
 * by a real kubelet's owner), else what weft-cni recorded. Without an address a pod is no
 * endpoint, so it is never ready; with one and no Ready condition it is (no kubelet says otherwise).
 */
export function effectivePod(pod: PodSpec, attachment: PodAttachment | undefined): EffectivePod {
  const ips = pod.podIPs.length ? [...pod.podIPs] : [...(attachment?.ips ?? [])];
  return {
    namespace: pod.namespace,
    name: pod.name,
    labels: pod.labels,
    nodeName: pod.nodeName ?? attachment?.node,
    ports: pod.ports,
    ips,
    ready: ips.length > 0 ? (pod.ready ?? true) : false,
    terminating: pod.terminating,
  };
}

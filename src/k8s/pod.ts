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
 * TODO(issue 13, helper "pods"): parsing and validation are being written; the types are fixed.
 */
import type { Protocol } from './schema.js';

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

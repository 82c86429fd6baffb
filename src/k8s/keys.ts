/**
 * Where objects live in the registry, prefix `/weft` by default:
 * `<prefix>/services/<namespace>/<name>`, `<prefix>/endpointslices/<namespace>/<name>`,
 * `<prefix>/pods/<namespace>/<name>`, `<prefix>/podattachments/<namespace>/<name>` (written by
 * weft-cni) and `<prefix>/nodes/<name>` (cluster-scoped).
 */

/** The default registry prefix of weft-proxy's objects. */
export const DEFAULT_PROXY_PREFIX = '/weft';

/** The kind of object a key holds. */
export type ObjectKind = 'Service' | 'EndpointSlice' | 'Pod' | 'PodAttachment' | 'Node';

/** A parsed object key. */
export interface ObjectKey {
  kind: ObjectKind;
  /** '' for a cluster-scoped kind (Node). */
  namespace: string;
  name: string;
}

/** The path segment under the prefix that holds each kind. */
const SEGMENTS: Readonly<Record<ObjectKind, string>> = {
  Service: 'services',
  EndpointSlice: 'endpointslices',
  Pod: 'pods',
  PodAttachment: 'podattachments',
  Node: 'nodes',
};

/** The prefix under which objects of `kind` are stored, with a trailing slash. */
export function kindPrefix(prefix: string, kind: ObjectKind): string {
  return `${trim(prefix)}/${SEGMENTS[kind]}/`;
}

/** The key of an object; `namespace` is ignored for a cluster-scoped kind (Node). */
export function objectKey(prefix: string, kind: ObjectKind, namespace: string, name: string): string {
  return kind === 'Node'
    ? `${kindPrefix(prefix, kind)}${name}`
    : `${kindPrefix(prefix, kind)}${namespace}/${name}`;
}

/** The prefix under which services are stored. */
export function servicesPrefix(prefix: string): string {
  return kindPrefix(prefix, 'Service');
}

/** The prefix under which slices are stored. */
export function sliceKeysPrefix(prefix: string): string {
  return kindPrefix(prefix, 'EndpointSlice');
}

/** The key of a service. */
export function serviceKey(prefix: string, namespace: string, name: string): string {
  return `${servicesPrefix(prefix)}${namespace}/${name}`;
}

/** The key of a slice. */
export function sliceKey(prefix: string, namespace: string, name: string): string {
  return `${sliceKeysPrefix(prefix)}${namespace}/${name}`;
}

/** The key of a pod. */
export function podKey(prefix: string, namespace: string, name: string): string {
  return objectKey(prefix, 'Pod', namespace, name);
}

/** The key of a pod's attachment record. */
export function podAttachmentKey(prefix: string, namespace: string, name: string): string {
  return objectKey(prefix, 'PodAttachment', namespace, name);
}

/** The key of a node. */
export function nodeKey(prefix: string, name: string): string {
  return objectKey(prefix, 'Node', '', name);
}

/** Reads a key under `prefix`; undefined for keys of another shape (which readers ignore). */
export function parseObjectKey(prefix: string, key: string): ObjectKey | undefined {
  for (const kind of Object.keys(SEGMENTS) as ObjectKind[]) {
    const p = kindPrefix(prefix, kind);
    if (!key.startsWith(p)) continue;
    const parts = key.slice(p.length).split('/');
    if (kind === 'Node') {
      if (parts.length !== 1 || !parts[0]) return undefined;
      return { kind, namespace: '', name: parts[0] };
    }
    if (parts.length !== 2 || !parts[0] || !parts[1]) return undefined;
    return { kind, namespace: parts[0], name: parts[1] };
  }
  return undefined;
}

function trim(prefix: string): string {
  return prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
}

/**
 * Where services and slices live in the registry: `<prefix>/services/<namespace>/<name>` and
 * `<prefix>/endpointslices/<namespace>/<name>`, prefix `/weft` by default.
 */

/** The default registry prefix of weft-proxy's objects. */
export const DEFAULT_PROXY_PREFIX = '/weft';

/** The kind of object a key holds. */
export type ObjectKind = 'Service' | 'EndpointSlice';

/** A parsed object key. */
export interface ObjectKey {
  kind: ObjectKind;
  namespace: string;
  name: string;
}

/** The prefix under which services are stored. */
export function servicesPrefix(prefix: string): string {
  return `${trim(prefix)}/services/`;
}

/** The prefix under which slices are stored. */
export function sliceKeysPrefix(prefix: string): string {
  return `${trim(prefix)}/endpointslices/`;
}

/** The key of a service. */
export function serviceKey(prefix: string, namespace: string, name: string): string {
  return `${servicesPrefix(prefix)}${namespace}/${name}`;
}

/** The key of a slice. */
export function sliceKey(prefix: string, namespace: string, name: string): string {
  return `${sliceKeysPrefix(prefix)}${namespace}/${name}`;
}

/** Reads a key under `prefix`; undefined for keys of another shape (which the proxy ignores). */
export function parseObjectKey(prefix: string, key: string): ObjectKey | undefined {
  for (const [kind, p] of [
    ['Service', servicesPrefix(prefix)],
    ['EndpointSlice', sliceKeysPrefix(prefix)],
  ] as const) {
    if (!key.startsWith(p)) continue;
    const parts = key.slice(p.length).split('/');
    if (parts.length !== 2 || !parts[0] || !parts[1]) return undefined;
    return { kind, namespace: parts[0], name: parts[1] };
  }
  return undefined;
}

function trim(prefix: string): string {
  return prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
}

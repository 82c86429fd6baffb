/**
 * How big a Service or EndpointSlice may be. The API server's own limits where it has them, so
 * that anything a real cluster accepts is accepted here; weft's own, stated as such, where the
 * API server has none but the proxy multiplies a list into rules.
 */

/**
 * Largest stored object, in bytes of its JSON text, checked before the text is parsed: etcd's
 * default `--max-request-bytes` (1.5 MiB), the largest value a default etcd accepts, so the
 * largest object an API server can have stored.
 */
export const MAX_OBJECT_BYTES = 1.5 * 1024 * 1024;

/** Most endpoints in one EndpointSlice (discovery.k8s.io/v1 validation). */
export const MAX_SLICE_ENDPOINTS = 1000;
/** Most ports in one EndpointSlice (discovery.k8s.io/v1 validation). */
export const MAX_SLICE_PORTS = 100;
/** Most addresses of one endpoint (discovery.k8s.io/v1 validation). */
export const MAX_ENDPOINT_ADDRESSES = 100;

/**
 * Total size of an object's annotation keys and values, in bytes (the API server's
 * TotalAnnotationSizeLimitB).
 */
export const MAX_ANNOTATIONS_BYTES = 256 * 1024;

/**
 * Most ports of one Service. weft's cap (the API server has none): a Service with more ports
 * than an EndpointSlice may list cannot be served by kube's EndpointSlice controller either, and
 * every port multiplies the rules of every endpoint.
 */
export const MAX_SERVICE_PORTS = MAX_SLICE_PORTS;

/** Most externalIPs and most LoadBalancer ingress addresses of one Service (weft's cap). */
export const MAX_SERVICE_ADDRESSES = 100;

/** Most loadBalancerSourceRanges of one Service (weft's cap; each is one set element). */
export const MAX_SOURCE_RANGES = 1000;

/** Size of `text` in UTF-8 bytes, or undefined when it is larger than `max` (without counting it all). */
export function utf8SizeWithin(text: string, max: number): number | undefined {
  // A UTF-16 code unit is 1 to 3 UTF-8 bytes: decide from the length alone when that suffices.
  if (text.length > max) return undefined;
  if (text.length * 3 <= max) return Buffer.byteLength(text, 'utf8');
  const n = Buffer.byteLength(text, 'utf8');
  return n > max ? undefined : n;
}

/**
 * Most labels of one object (weft's cap; the API server bounds them only by the object's size):
 * every label is held against every selector and a pod's labels are read by every controller.
 */
export const MAX_LABELS = 1000;

/** Total size of an object's label keys and values, in bytes (weft's cap, like {@link MAX_LABELS}). */
export const MAX_LABELS_BYTES = 64 * 1024;

/** Most containers (and, apart, init containers) of one Pod (weft's cap). */
export const MAX_POD_CONTAINERS = 100;

/** Most container ports of one Pod, all containers together (weft's cap). */
export const MAX_POD_PORTS = 1000;

/** Most status conditions of one Pod (weft's cap). */
export const MAX_POD_CONDITIONS = 100;

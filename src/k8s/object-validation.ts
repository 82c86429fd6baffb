/**
 * The checks every registry object goes through at the door, whatever its kind: the size of its
 * text before it is parsed, JSON, the names its key gives, labels and annotations as the API
 * server holds them, and errors that name the object's key and the field at fault. Shared by the
 * parsers of ./schema.ts (Service, EndpointSlice) and ./pod.ts (Pod, Node, PodAttachment) so
 * that one rule guards every kind.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { ErrorCodes, WeftError } from '../errors/index.js';
import { ipFamily } from '../ipam/index.js';
import {
  MAX_ANNOTATIONS_BYTES,
  MAX_LABELS,
  MAX_LABELS_BYTES,
  MAX_OBJECT_BYTES,
  utf8SizeWithin,
} from './limits.js';
import { DNS_SUBDOMAIN_MAX, dns1123LabelProblem, labelValueProblem, qualifiedNameProblem } from './names.js';

/** The L4 protocols a service or container port may use. */
export const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** A port number, 1..65535. */
export const port = z.number().int().min(1).max(65_535);
/** A port number or 0 (none). */
export const optPort = z.number().int().min(0).max(65_535);
/** A protocol, TCP when absent. */
export const protocol = z
  .enum(PROTOCOLS, { error: () => `must be one of ${PROTOCOLS.join(', ')}` })
  .default('TCP');
// ip-address and node agree on what an address is only together: node accepts an IPv6 zone
// (`fe80::1%eth0`), ip-address a few forms node refuses.
/** An IP address of either family, without zone. */
export const ip = z
  .string()
  .refine((v) => isIP(v) !== 0 && ipFamily(v) !== undefined, { error: 'is not an IP address' });
/** A string held to one of the name rules of ./names.ts. */
export const named = (problem: (v: string) => string | undefined) =>
  z.string().superRefine((v, ctx) => {
    const why = problem(v);
    if (why) ctx.addIssue({ code: 'custom', message: `${quote(v)} ${why}` });
  });
/** A list that may be null or absent (= empty), of at most `max` items. */
export const nullableList = <T extends z.ZodType>(item: T, max: number) =>
  z
    .array(item)
    .max(max, { error: `must have at most ${max} items` })
    .nullish()
    .transform((v) => v ?? []);
/** A map of strings (labels, annotations, a selector). */
export const stringMap = z.record(z.string(), z.string()).nullish();

/** The metadata fields every kind shares; the others are accepted unchanged. */
export const metadata = z.looseObject({
  // Checked against the key, whose parts are held to the name rules (see checkKeyNames).
  name: z.string().max(DNS_SUBDOMAIN_MAX).optional(),
  namespace: z.string().max(DNS_SUBDOMAIN_MAX).optional(),
  labels: stringMap,
  annotations: stringMap,
});

/**
 * A value for an error message: JSON-quoted (so control characters show as escapes), cut to a
 * readable length, and with the characters that reorder a terminal line escaped too.
 */
export function quote(value: string): string {
  const cut = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(cut).replace(
    /[\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * A registry key or name for a message: as it is when it is plain printable ASCII, else quoted
 * by {@link quote}, so that a hostile key cannot forge a line of a log or a terminal.
 */
export function displayName(value: string): string {
  return /^[\x21-\x7e]{1,300}$/.test(value) ? value : quote(value);
}

/** Which object an error is about: its kind and registry key. */
export function failure(kind: string, key: string, path: readonly PropertyKey[], message: string): WeftError {
  const field = path
    .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
    .join('')
    .replace(/^\./, '');
  const where = field ? `${kind} ${displayName(key)}: field ${field}` : `${kind} ${displayName(key)}`;
  return new WeftError(ErrorCodes.INVALID_VALUE, `${where}: ${message}`, { object: key, kind, field });
}

export function firstIssue(kind: string, key: string, err: z.ZodError): WeftError {
  const issue = err.issues[0];
  if (!issue) return failure(kind, key, [], 'invalid');
  return failure(kind, key, issue.path, issue.message);
}

export function parseJson(kind: string, key: string, text: string): unknown {
  // Before parsing: the parse itself is the cost an oversized object would impose.
  if (utf8SizeWithin(text, MAX_OBJECT_BYTES) === undefined) {
    throw failure(
      kind,
      key,
      [],
      `is larger than ${MAX_OBJECT_BYTES} bytes (${text.length} characters), the most etcd stores by default`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw failure(kind, key, [], `not JSON: ${(err as Error).message}`);
  }
}

export function checkName(
  kind: string,
  key: string,
  got: string | undefined,
  want: string,
  field: string,
): void {
  if (got !== undefined && got !== want) {
    throw failure(kind, key, field.split('.'), `${quote(got)} does not match the key (${quote(want)})`);
  }
}

/**
 * The namespace and name a key gives, held to the API server's rules whether or not the object
 * repeats them in its metadata: they are what the proxy renders.
 */
export function checkKeyNames(
  kind: string,
  key: string,
  namespace: string | undefined,
  name: string,
  nameProblem: (v: string) => string | undefined,
): void {
  // undefined: a cluster-scoped kind (Node), whose key has no namespace.
  if (namespace !== undefined) {
    const ns = dns1123LabelProblem(namespace);
    if (ns) throw failure(kind, key, ['metadata', 'namespace'], `${quote(namespace)} (from the key) ${ns}`);
  }
  const n = nameProblem(name);
  if (n) throw failure(kind, key, ['metadata', 'name'], `${quote(name)} (from the key) ${n}`);
}

/** Label keys and values, as the API server checks labels and selectors. */
export function checkLabels(
  kind: string,
  key: string,
  labels: Record<string, string> | null | undefined,
  path: readonly PropertyKey[],
): void {
  const entries = Object.entries(labels ?? {});
  // weft's caps (the API server bounds labels only by the object's size): labels are matched
  // against every selector and copied into every slice, so one pod must not carry megabytes.
  if (entries.length > MAX_LABELS) {
    throw failure(
      kind,
      key,
      [...path],
      `has ${entries.length} entries, more than weft's limit of ${MAX_LABELS}`,
    );
  }
  let total = 0;
  for (const [k, val] of entries) total += Buffer.byteLength(k) + Buffer.byteLength(val);
  if (total > MAX_LABELS_BYTES) {
    throw failure(
      kind,
      key,
      [...path],
      `total size ${total} bytes is more than weft's limit of ${MAX_LABELS_BYTES}`,
    );
  }
  for (const [k, val] of entries) {
    const kp = qualifiedNameProblem(k);
    if (kp) throw failure(kind, key, [...path], `key ${quote(k)} ${kp}`);
    const vp = labelValueProblem(val);
    if (vp) throw failure(kind, key, [...path, k], `${quote(val)} ${vp}`);
  }
}

/** Labels, and annotations (qualified keys, lowercased as the API server does, within the total size). */
export function checkLabelsAndAnnotations(
  kind: string,
  key: string,
  meta: { labels?: Record<string, string> | null; annotations?: Record<string, string> | null } | undefined,
): void {
  checkLabels(kind, key, meta?.labels, ['metadata', 'labels']);
  let total = 0;
  for (const [k, val] of Object.entries(meta?.annotations ?? {})) {
    const kp = qualifiedNameProblem(k.toLowerCase());
    if (kp) throw failure(kind, key, ['metadata', 'annotations'], `key ${quote(k)} ${kp}`);
    total += Buffer.byteLength(k) + Buffer.byteLength(val);
  }
  if (total > MAX_ANNOTATIONS_BYTES) {
    throw failure(
      kind,
      key,
      ['metadata', 'annotations'],
      `total size ${total} bytes is more than the API's limit of ${MAX_ANNOTATIONS_BYTES}`,
    );
  }
}

/**
 * Manifests for `weftctl apply` and `delete -f`: JSON or YAML, several documents separated by
 * `---`, and `kind: List` (or `ServiceList`, …) documents whose `items` are objects. Only the
 * kinds weft keeps are accepted: v1 Service, discovery.k8s.io/v1 EndpointSlice, v1 Pod and v1
 * Node (cluster-scoped: its namespace is '' whatever `-n` says, as kubectl ignores it). Each
 * bad document becomes an error naming it (`document 2`, `document 1 item 3`) and the field, so
 * the caller can skip it and carry on with the rest, as kubectl does.
 */
import { parseAllDocuments } from 'yaml';
import { ErrorCodes, WeftError, messageOf } from '../errors/index.js';
import { displayName, quote } from '../k8s/index.js';

/** The kinds weftctl manages, with the apiVersion each must have. */
export const OBJECT_KINDS = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  Pod: 'v1',
  Node: 'v1',
} as const;
export type ObjectKind = keyof typeof OBJECT_KINDS;

/** An object read from a manifest. */
export interface ManifestObject {
  /** Where it was in the input, for messages: `document 2`, `document 1 item 0`. */
  source: string;
  kind: ObjectKind;
  /** '' for a Node. */
  namespace: string;
  name: string;
  /** The object as written, with `metadata.namespace` filled in (removed for a Node). */
  object: Record<string, unknown>;
}

/** A document that could not be used, and why. */
export interface ManifestError {
  source: string;
  error: WeftError;
}

/** Options of {@link parseManifests}. */
export interface ParseManifestOptions {
  /**
   * The namespace of `-n`: objects without one get it, objects with another one are refused (as
   * kubectl refuses them). Undefined: objects without a namespace get `default`.
   */
  namespace?: string | undefined;
  /** The input's name for messages (a path, or `stdin`). */
  input?: string;
}

/** The namespace of objects that name none. */
export const DEFAULT_NAMESPACE = 'default';

/** Reads every object of a manifest text; bad documents are returned as errors, not thrown. */
export function parseManifests(
  text: string,
  opts: ParseManifestOptions = {},
): { objects: ManifestObject[]; errors: ManifestError[] } {
  const objects: ManifestObject[] = [];
  const errors: ManifestError[] = [];
  const input = opts.input ? `${opts.input}: ` : '';
  const fail = (source: string, field: string, message: string) =>
    errors.push({
      source,
      error: new WeftError(
        ErrorCodes.INVALID_VALUE,
        `${input}${source}${field ? `: field ${field}` : ''}: ${message}`,
        { object: `${input}${source}`, field },
      ),
    });

  const docs = parseAllDocuments(text, { prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [];
  list.forEach((doc, i) => {
    const source = `document ${i + 1}`;
    const problem = doc.errors[0];
    if (problem) {
      fail(source, '', `not valid JSON or YAML: ${problem.message.split('\n')[0] ?? ''}`);
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      fail(source, '', `not valid YAML: ${messageOf(err)}`);
      return;
    }
    // An empty document (a leading `---`, a trailing one) is no object; kubectl skips it too.
    if (value === null || value === undefined) return;
    if (!isRecord(value)) {
      fail(source, '', `is not an object (got ${describe(value)})`);
      return;
    }
    const kind = value.kind;
    if (typeof kind === 'string' && kind.endsWith('List') && 'items' in value) {
      if (!Array.isArray(value.items)) {
        fail(source, 'items', 'must be a list of objects');
        return;
      }
      value.items.forEach((item, j) => readObject(`${source} item ${j}`, item));
      return;
    }
    readObject(source, value);
  });
  return { objects, errors };

  function readObject(source: string, value: unknown): void {
    if (!isRecord(value)) {
      fail(source, '', `is not an object (got ${describe(value)})`);
      return;
    }
    const { kind, apiVersion } = value;
    if (typeof kind !== 'string' || !(kind in OBJECT_KINDS)) {
      fail(
        source,
        'kind',
        `${JSON.stringify(kind ?? null)} is not supported (weftctl manages Service v1, EndpointSlice discovery.k8s.io/v1, Pod v1 and Node v1)`,
      );
      return;
    }
    const k = kind as ObjectKind;
    if (apiVersion !== OBJECT_KINDS[k]) {
      fail(
        source,
        'apiVersion',
        `must be ${OBJECT_KINDS[k]} for a ${k}, got ${JSON.stringify(apiVersion ?? null)}`,
      );
      return;
    }
    const metadata = value.metadata;
    if (!isRecord(metadata)) {
      fail(source, 'metadata', `a ${k} needs metadata with a name`);
      return;
    }
    const name = metadata.name;
    if (typeof name !== 'string' || name === '') {
      const hint = metadata.generateName !== undefined ? ' (generateName is not supported)' : '';
      fail(source, 'metadata.name', `is required${hint}`);
      return;
    }
    if (k === 'Node') {
      const { namespace: _ignored, ...rest } = metadata;
      objects.push({
        source: `${source} (${k} ${displayName(name)})`,
        kind: k,
        namespace: '',
        name,
        object: { ...value, metadata: rest },
      });
      return;
    }
    const what = `${source} (${k} ${displayName(name)})`;
    const ns = metadata.namespace;
    if (ns !== undefined && ns !== null && typeof ns !== 'string') {
      fail(what, 'metadata.namespace', 'must be a string');
      return;
    }
    if (opts.namespace !== undefined && typeof ns === 'string' && ns !== '' && ns !== opts.namespace) {
      fail(
        what,
        'metadata.namespace',
        `${quote(ns)} does not match the namespace ${quote(opts.namespace)} of -n; drop -n or make them agree`,
      );
      return;
    }
    const namespace = typeof ns === 'string' && ns !== '' ? ns : (opts.namespace ?? DEFAULT_NAMESPACE);
    objects.push({
      source: `${source} (${k} ${displayName(`${namespace}/${name}`)})`,
      kind: k,
      namespace,
      name,
      object: { ...value, metadata: { ...metadata, namespace } },
    });
  }
}

/** True for a plain object (not an array, not null). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  return `${typeof v} ${JSON.stringify(v).slice(0, 40)}`;
}

/**
 * A JSON text with object keys sorted, for comparing two objects whatever order their keys were
 * written in (kubectl's YAML and JSON order fields differently).
 */
export function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    isRecord(val)
      ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : val,
  );
}

/**
 * What an API server (and, for a pod's end, its kubelet) does for `weftctl delete pod` and
 * `weftctl label`: a graceful pod deletion first marks the pod terminating (metadata
 * deletionTimestamp and deletionGracePeriodSeconds, so that the controller turns its endpoints
 * terminating), then the key is removed once the grace period is over; labels change by
 * compare-and-swap, held to the same validation as `apply`.
 */
import { sleep } from '../backoff/index.js';
import { ErrorCodes, WeftError } from '../errors/index.js';
import { labelValueProblem, parseNode, parsePod, qualifiedNameProblem, quote } from '../k8s/index.js';
import type { KeyValue, Store } from '../registry/index.js';
import { isRecord, type ObjectKind } from './manifest.js';
import { notFound, objectKey } from './object-store.js';

/** kube's default `terminationGracePeriodSeconds`. */
export const DEFAULT_GRACE_SECONDS = 30;

/** How many times a compare-and-swap is retried after losing a race. */
const CAS_ATTEMPTS = 5;

/** A deletion requested: when the key goes. */
export interface PodDeletion {
  key: string;
  namespace: string;
  name: string;
  /** The grace period in force, in seconds; 0: the key is already gone. */
  graceSeconds: number;
  /** Wall-clock time (ms) after which the key is removed. */
  deadline: number;
}

function parseObject(kv: KeyValue): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(kv.value);
    return isRecord(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

/**
 * The grace period of a deletion as kubectl works it out: `--force` is 0; no `--grace-period`
 * (negative) takes the pod's `spec.terminationGracePeriodSeconds` (default 30); 0 without
 * `--force` is 1, the shortest graceful deletion.
 */
export function gracePeriod(
  requested: number,
  force: boolean,
  pod: Record<string, unknown> | undefined,
): number {
  if (force) return 0;
  if (requested > 0) return requested;
  if (requested === 0) return 1;
  const spec = pod && isRecord(pod.spec) ? pod.spec : {};
  const own = spec.terminationGracePeriodSeconds;
  return typeof own === 'number' && Number.isInteger(own) && own >= 0 ? own || 1 : DEFAULT_GRACE_SECONDS;
}

/**
 * Marks a pod terminating, or deletes it at once for a zero grace period. A pod already
 * terminating keeps the earlier of its deadline and the new one (kube shortens a grace period,
 * never lengthens it). A stored value that is not a JSON object cannot carry a deletion mark and
 * is deleted at once. Throws NOT_FOUND when absent.
 */
export async function requestPodDeletion(
  store: Store,
  prefix: string,
  namespace: string,
  name: string,
  opts: { gracePeriodSeconds: number; force: boolean; now?: () => number },
): Promise<PodDeletion> {
  const key = objectKey(prefix, 'Pod', namespace, name);
  const now = opts.now ?? Date.now;
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const kv = await store.get(key);
    if (!kv) throw notFound('Pod', namespace, name, key);
    const obj = parseObject(kv);
    const grace = obj ? gracePeriod(opts.gracePeriodSeconds, opts.force, obj) : 0;
    if (grace === 0) {
      if (await store.delete(key, { modRevision: kv.modRevision }))
        return { key, namespace, name, graceSeconds: 0, deadline: now() };
      continue;
    }
    const metadata = isRecord(obj?.metadata) ? { ...obj.metadata } : {};
    const deadline = now() + grace * 1000;
    const already =
      typeof metadata.deletionTimestamp === 'string' ? Date.parse(metadata.deletionTimestamp) : NaN;
    if (!Number.isNaN(already) && already <= deadline) {
      const left = Math.max(0, Math.ceil((already - now()) / 1000));
      return { key, namespace, name, graceSeconds: left, deadline: already };
    }
    metadata.deletionTimestamp = rfc3339(deadline);
    metadata.deletionGracePeriodSeconds = grace;
    const res = await store.update(key, JSON.stringify({ ...obj, metadata }), {
      modRevision: kv.modRevision,
    });
    if (res.updated) return { key, namespace, name, graceSeconds: grace, deadline };
  }
  throw new WeftError(ErrorCodes.CONFLICT, `Pod ${key} kept changing while being deleted; delete again`, {
    object: key,
  });
}

/**
 * Waits for the deadline, then removes the key if it still holds a terminating pod (one created
 * again under the same name in the meantime is left alone). Resolves true when this call removed
 * it, false when it was already gone or was re-created.
 */
export async function finishPodDeletion(
  store: Store,
  d: PodDeletion,
  opts: { now?: () => number; signal?: AbortSignal } = {},
): Promise<boolean> {
  const now = opts.now ?? Date.now;
  const wait = d.deadline - now();
  if (wait > 0) await sleep(wait, opts.signal);
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const kv = await store.get(d.key);
    if (!kv) return false;
    const obj = parseObject(kv);
    const meta = obj && isRecord(obj.metadata) ? obj.metadata : {};
    if (obj && typeof meta.deletionTimestamp !== 'string') return false;
    if (await store.delete(d.key, { modRevision: kv.modRevision })) return true;
  }
  throw new WeftError(ErrorCodes.CONFLICT, `Pod ${d.key} kept changing while being deleted; delete again`, {
    object: d.key,
  });
}

/** The label changes of `weftctl label`: `k=v` sets, `k-` removes. */
export interface LabelChanges {
  set: Record<string, string>;
  remove: string[];
}

/** Reads `k=v` and `k-` arguments, each key and value held to the label rules. */
export function parseLabelArgs(args: readonly string[]): LabelChanges {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  for (const arg of args) {
    const fail = (why: string) =>
      new WeftError(ErrorCodes.INVALID_ARGUMENT, `invalid label spec ${quote(arg)}: ${why}`, {
        object: 'command line',
      });
    let k: string;
    if (arg.endsWith('-') && !arg.includes('=')) {
      k = arg.slice(0, -1);
      remove.push(k);
    } else {
      const eq = arg.indexOf('=');
      if (eq < 0) throw fail('expected KEY=VALUE or KEY-');
      k = arg.slice(0, eq);
      const v = arg.slice(eq + 1);
      const vp = labelValueProblem(v);
      if (vp) throw fail(`value ${vp}`);
      if (k in set && set[k] !== v) throw fail(`key ${quote(k)} is given twice`);
      set[k] = v;
    }
    const kp = qualifiedNameProblem(k);
    if (kp) throw fail(`key ${kp}`);
  }
  for (const k of remove) {
    if (k in set) {
      throw new WeftError(ErrorCodes.INVALID_ARGUMENT, `can not both modify and remove label ${quote(k)}`, {
        object: 'command line',
      });
    }
  }
  return { set, remove };
}

/** The outcome of a label change. */
export interface LabelResult {
  key: string;
  changed: boolean;
  /** Keys asked to be removed that the object did not have. */
  missing: string[];
}

/**
 * Changes an object's labels by compare-and-swap. A label that has another value is replaced
 * only with `overwrite`, as kubectl's `--overwrite`. The result is validated as apply validates.
 */
export async function labelObject(
  store: Store,
  prefix: string,
  kind: Extract<ObjectKind, 'Pod' | 'Node'>,
  namespace: string,
  name: string,
  changes: LabelChanges,
  overwrite: boolean,
): Promise<LabelResult> {
  const key = objectKey(prefix, kind, namespace, name);
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const kv = await store.get(key);
    if (!kv) throw notFound(kind, namespace, name, key);
    const obj = parseObject(kv);
    if (!obj) {
      throw new WeftError(ErrorCodes.INVALID_VALUE, `${kind} ${key}: stored value is not a JSON object`, {
        object: key,
      });
    }
    const metadata = isRecord(obj.metadata) ? { ...obj.metadata } : {};
    const labels: Record<string, unknown> = isRecord(metadata.labels) ? { ...metadata.labels } : {};
    let changed = false;
    for (const [k, v] of Object.entries(changes.set)) {
      if (Object.prototype.hasOwnProperty.call(labels, k) && labels[k] !== v) {
        if (!overwrite) {
          throw new WeftError(
            ErrorCodes.INVALID_ARGUMENT,
            `'${k}' already has a value (${quote(String(labels[k]))}), and --overwrite is false`,
            { object: key, field: `metadata.labels.${k}` },
          );
        }
      }
      if (labels[k] !== v) changed = true;
      labels[k] = v;
    }
    const missing: string[] = [];
    for (const k of changes.remove) {
      if (Object.prototype.hasOwnProperty.call(labels, k)) {
        delete labels[k];
        changed = true;
      } else missing.push(k);
    }
    if (!changed) return { key, changed: false, missing };
    metadata.labels = labels;
    const text = JSON.stringify({ ...obj, metadata });
    if (kind === 'Pod') parsePod(key, namespace, name, text);
    else parseNode(key, name, text);
    const res = await store.update(key, text, { modRevision: kv.modRevision });
    if (res.updated) return { key, changed: true, missing };
  }
  throw new WeftError(ErrorCodes.CONFLICT, `${kind} ${key} kept changing while being labelled; try again`, {
    object: key,
  });
}

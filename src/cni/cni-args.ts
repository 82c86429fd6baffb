/**
 * CNI_ARGS, the runtime's extra arguments: `K=V;K=V`, read as libcni's `types.LoadArgs` reads them
 * (every pair must have exactly one `=`; a key the plugin does not know is an error unless
 * `IgnoreUnknown` is true). Every Kubernetes runtime passes the pod's identity this way:
 * `IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name;K8S_POD_INFRA_CONTAINER_ID=id;K8S_POD_UID=uid`.
 * Pure: no I/O.
 */
// The leaf module, not k8s/index.js, which loads every schema (see attachment.ts).
import { dns1123LabelProblem, dns1123SubdomainProblem } from '../k8s/names.js';
import { CniError, CniErrorCodes } from './cni-error.js';

/** The keys weft-cni knows; others need `IgnoreUnknown`. */
export const KNOWN_CNI_ARGS = [
  'IgnoreUnknown',
  'K8S_POD_NAMESPACE',
  'K8S_POD_NAME',
  'K8S_POD_INFRA_CONTAINER_ID',
  'K8S_POD_UID',
] as const;

/** More pairs than any runtime sends by far; a bound on what one call may make us hold. */
export const MAX_CNI_ARGS = 64;

/** The pod a call is for, from CNI_ARGS. */
export interface PodIdentity {
  /** K8S_POD_NAMESPACE, a DNS-1123 label. */
  namespace: string;
  /** K8S_POD_NAME, a DNS-1123 subdomain. */
  name: string;
}

/** A value as quoted in an error: JSON-escaped, cut short (CNI_ARGS is untrusted and unbounded). */
function shown(value: string): string {
  return JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}…` : value);
}

function argsError(message: string): CniError {
  return new CniError(CniErrorCodes.INVALID_ENV, `invalid environment variable CNI_ARGS: ${message}`);
}

/** libcni's UnmarshallableBool: `1`/`true` and `0`/`false`, any case. */
function parseBool(key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  throw argsError(`${key}: ${shown(value)} is not a boolean (1, 0, true or false)`);
}

/**
 * The pairs of CNI_ARGS; an empty or absent value has none. Throws INVALID_ENV (4) naming
 * CNI_ARGS for a pair without exactly one `=`, a repeated key, or (without IgnoreUnknown) an
 * unknown key.
 */
export function parseCniArgs(text: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!text) return out;
  const pairs = text.split(';');
  if (pairs.length > MAX_CNI_ARGS) throw argsError(`more than ${MAX_CNI_ARGS} pairs`);
  for (const pair of pairs) {
    const kv = pair.split('=');
    if (kv.length !== 2) throw argsError(`invalid pair ${shown(pair)}: want KEY=VALUE`);
    const [key, value] = kv as [string, string];
    if (out.has(key)) throw argsError(`${shown(key)} is given twice`);
    out.set(key, value);
  }
  const ignoreUnknown =
    out.has('IgnoreUnknown') && parseBool('IgnoreUnknown', out.get('IgnoreUnknown') ?? '');
  if (!ignoreUnknown) {
    const unknown = [...out.keys()].find((k) => !(KNOWN_CNI_ARGS as readonly string[]).includes(k));
    if (unknown !== undefined) {
      throw argsError(`unknown key ${shown(unknown)} (pass IgnoreUnknown=1 to allow it)`);
    }
  }
  return out;
}

/**
 * The pod's namespace and name from CNI_ARGS, validated as the API server validates them, or
 * undefined when neither is given (a runtime that is not Kubernetes'). One without the other, or
 * a bad value, is an INVALID_ENV (4) error naming the variable.
 */
export function podIdentity(args: ReadonlyMap<string, string>): PodIdentity | undefined {
  const namespace = args.get('K8S_POD_NAMESPACE');
  const name = args.get('K8S_POD_NAME');
  if (namespace === undefined && name === undefined) return undefined;
  if (namespace === undefined) throw argsError('K8S_POD_NAMESPACE is required with K8S_POD_NAME');
  if (name === undefined) throw argsError('K8S_POD_NAME is required with K8S_POD_NAMESPACE');
  const nsProblem = dns1123LabelProblem(namespace);
  if (nsProblem) throw argsError(`K8S_POD_NAMESPACE ${shown(namespace)} ${nsProblem}`);
  const nameProblem = dns1123SubdomainProblem(name);
  if (nameProblem) throw argsError(`K8S_POD_NAME ${shown(name)} ${nameProblem}`);
  return { namespace, name };
}

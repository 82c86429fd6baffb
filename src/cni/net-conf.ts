/**
 * The network config a runtime streams to weft-cni on stdin. It is flannel's CNI config
 * (`{"name","type":"flannel","subnetFile","dataDir","delegate","ipam"}`), so an existing
 * `/etc/cni/net.d/10-flannel.conflist` works by changing only `type`.
 */
import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { messageOf } from '../errors/index.js';
import { Cidr, ipFamily } from '../ipam/index.js';
import { CniError, CniErrorCodes } from './cni-error.js';

/** CNI spec versions weft-cni speaks, oldest first. 0.3.0 is the first with the rich result. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;

/** The version used in replies when the input did not name a supported one. */
export const LATEST_VERSION = '1.0.0';

/** Where weft-flanneld (like flanneld) writes the node's lease. */
export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

/**
 * Where each container's delegate config is kept between ADD and DEL. flannel's directory, so
 * containers added by flannel's plugin before a switch to weft-cni are still deleted cleanly.
 */
export const DEFAULT_DATA_DIR = '/var/lib/cni/flannel';

/** The spec's rule for network names and container ids; for a delegate type it also keeps `/` out of paths. */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** A JSON object, as the delegate and IPAM sections are passed on mostly untouched. */
export type JsonObject = Record<string, unknown>;

/** A validated network config, defaults applied. */
export interface CniNetConf {
  /** The spec version of this config, one of {@link SUPPORTED_VERSIONS}. */
  cniVersion: string;
  /** Network name; also the delegate's name, which keys host-local's allocations. */
  name: string;
  /** This plugin's type as the runtime invoked it (`weft-cni`, or `flannel` as a drop-in). */
  type: string;
  /** Absolute path of subnet.env. Default {@link DEFAULT_SUBNET_FILE}. */
  subnetFile: string;
  /** Absolute directory for saved delegate configs. Default {@link DEFAULT_DATA_DIR}. */
  dataDir: string;
  /**
   * Fields merged over the generated delegate config (e.g. `{"bridge":"cni1","mtu":1400}`).
   * `{}` when absent. Must not set `name` or `ipam`: those come from the network and the lease.
   */
  delegate: JsonObject;
  /**
   * IPAM overrides: every field except `ranges` is passed to the delegate's `ipam` (e.g.
   * `dataDir` for host-local); `routes` are kept and the cluster network routes appended.
   */
  ipam?: JsonObject;
  /** Runtime-supplied capabilities (portMappings, bandwidth...), handed to the delegate. */
  runtimeConfig?: JsonObject;
  /** The result of the previous ADD, given on CHECK and (from 0.4.0) on DEL. */
  prevResult?: JsonObject;
  /**
   * Where to record pods' attachments (`weftRegistry`). Absent: weft-cni records nothing and
   * behaves exactly as flannel's plugin. Only its shape is checked here; its values are checked
   * (with the daemons' flag rules) when a call uses it, so a node without it never loads the
   * registry client.
   */
  weftRegistry?: WeftRegistryConf;
}

/**
 * The `weftRegistry` section: the registry flags of weft-proxy (`--registry`, `--etcd-*`,
 * `--registry-prefix`) as JSON fields, plus the node's name.
 */
export interface WeftRegistryConf {
  /** `etcd` (default; the etcd fields apply) or `redis://host[:port][/db]`, as `--registry`. */
  registry?: string;
  /** etcd client URLs, as `--etcd-endpoints`. Default `["http://127.0.0.1:2379"]`. */
  etcdEndpoints?: string[];
  /** CA bundle for the etcd servers, as `--etcd-cafile`. */
  etcdCafile?: string;
  /** Client certificate, as `--etcd-certfile`; needs `etcdKeyfile`. */
  etcdCertfile?: string;
  /** Client key, as `--etcd-keyfile`; needs `etcdCertfile`. */
  etcdKeyfile?: string;
  /** etcd user, as `--etcd-username`. */
  etcdUsername?: string;
  /** etcd password, as `--etcd-password` (the config file is then a secret: mode 0600). */
  etcdPassword?: string;
  /** Key prefix of the objects, as `--registry-prefix`. Default `/weft`. */
  prefix?: string;
  /** The node the pods run on. Default the host name, lowercased (as kubelet names its node). */
  nodeName?: string;
}

const jsonObject = z.record(z.string(), z.unknown());
const absolutePath = z
  .string()
  .min(1)
  .refine((p) => isAbsolute(p), { message: 'must be an absolute path' });

const routeSchema = z.looseObject({
  dst: z.string().refine(isCidr, { message: 'must be a CIDR' }),
  gw: z
    .string()
    .refine((ip) => ipFamily(ip) !== undefined, { message: 'must be an IP address' })
    .optional(),
});

const confSchema = z.looseObject({
  cniVersion: z.string(),
  name: z.string().regex(NAME_RE, {
    message: 'must start with a letter or digit, followed by letters, digits, _, . or -',
  }),
  type: z.string().min(1),
  subnetFile: absolutePath.default(DEFAULT_SUBNET_FILE),
  dataDir: absolutePath.default(DEFAULT_DATA_DIR),
  delegate: z
    .looseObject({
      type: z
        .string()
        .regex(NAME_RE, { message: 'must be a plugin name (letters, digits, _, . or -)' })
        .optional(),
      name: z.never({ error: 'must not be set: weft-cni sets it to the network name' }).optional(),
      ipam: z.never({ error: 'must not be set: put IPAM overrides in the top-level ipam field' }).optional(),
    })
    .default({}),
  ipam: z
    .looseObject({
      type: z.string().regex(NAME_RE, { message: 'must be a plugin name' }).optional(),
      routes: z.array(routeSchema).optional(),
    })
    .optional(),
  runtimeConfig: jsonObject.optional(),
  prevResult: jsonObject.optional(),
  // Strict: a misspelt field (say `endpoints`) would otherwise silently mean the default etcd.
  weftRegistry: z
    .strictObject({
      registry: z.string().optional(),
      etcdEndpoints: z.array(z.string()).optional(),
      etcdCafile: z.string().optional(),
      etcdCertfile: z.string().optional(),
      etcdKeyfile: z.string().optional(),
      etcdUsername: z.string().optional(),
      etcdPassword: z.string().optional(),
      prefix: z.string().optional(),
      nodeName: z.string().optional(),
    })
    .optional(),
});

function isCidr(text: string): boolean {
  try {
    Cidr.parseLenient(text);
    return true;
  } catch {
    return false;
  }
}

/** An INVALID_CONFIG error that names the field at fault. */
export function configFieldError(field: string, message: string): CniError {
  return new CniError(CniErrorCodes.INVALID_CONFIG, `invalid network config: field ${field}: ${message}`);
}

const NOUNS: Readonly<Record<string, string>> = {
  record: 'a JSON object',
  object: 'a JSON object',
  array: 'an array',
  string: 'a string',
  number: 'a number',
  boolean: 'a boolean',
};

/** The wording of one zod issue, in the terms of a JSON document rather than of TypeScript. */
function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type') {
    const noun = NOUNS[issue.expected];
    if (noun === undefined) return issue.message;
    if (issue.input === undefined) return 'is required';
    return `must be ${noun}, got ${JSON.stringify(issue.input)}`;
  }
  if (issue.code === 'too_small' && issue.origin === 'string') return 'must not be empty';
  return issue.message;
}

/**
 * The cniVersion of a config, for error replies, when the input is an object naming a supported
 * version; otherwise undefined (replies then use {@link LATEST_VERSION}).
 */
export function peekCniVersion(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = (value as { cniVersion?: unknown }).cniVersion;
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v) ? v : undefined;
}

/** Parses stdin text as JSON; DECODING_FAILURE (6) when it is not a JSON object. */
export function decodeStdin(text: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CniError(
      CniErrorCodes.DECODING_FAILURE,
      `failed to decode network config on stdin: ${messageOf(err)}`,
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CniError(
      CniErrorCodes.DECODING_FAILURE,
      'failed to decode network config on stdin: expected a JSON object',
    );
  }
  return value as JsonObject;
}

/**
 * Validates a decoded config and applies defaults. Throws INCOMPATIBLE_VERSION (1) for a
 * cniVersion this plugin does not speak, INVALID_CONFIG (7) naming the field otherwise.
 */
export function parseNetConf(raw: JsonObject): CniNetConf {
  const version = raw.cniVersion;
  if (version === undefined) throw configFieldError('cniVersion', 'is required');
  if (typeof version !== 'string') throw configFieldError('cniVersion', 'must be a string');
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(
      CniErrorCodes.INCOMPATIBLE_VERSION,
      `incompatible CNI version: field cniVersion: ${JSON.stringify(version)} is not one of ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  // Go's encoding/json, which flannel's plugin uses, reads a null field as absent.
  const input = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== null));
  const parsed = confSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (!issue) throw configFieldError('', 'invalid');
    throw configFieldError(issue.path.join('.'), describeIssue(issue));
  }
  const c = parsed.data;
  return {
    cniVersion: version,
    name: c.name,
    type: c.type,
    subnetFile: c.subnetFile,
    dataDir: c.dataDir,
    delegate: c.delegate,
    ...(c.ipam ? { ipam: c.ipam } : {}),
    ...(c.runtimeConfig ? { runtimeConfig: c.runtimeConfig } : {}),
    ...(c.prevResult ? { prevResult: c.prevResult } : {}),
    ...(c.weftRegistry ? { weftRegistry: c.weftRegistry } : {}),
  };
}

/** True when `version` is at least `min` (both x.y.z). */
export function versionAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

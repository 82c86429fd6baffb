/**
 * The status record each daemon keeps in the registry, so `weftctl status` can list every node's
 * daemons without reaching each node: `<registry-prefix>/status/<node>/<daemon>`, TTL-bound, so a
 * daemon that died disappears on its own within the TTL.
 */
import { z } from 'zod';
import { ErrorCodes, WeftError } from '../errors/index.js';

/** The daemons every node runs, each with a record per node. */
export const NODE_DAEMONS = ['weft-flanneld', 'weft-proxy'] as const;

/**
 * The daemons that publish a record: the node daemons and weft-controller (a few per cluster,
 * on nodes of the operator's choosing, one of them the leader).
 */
export const STATUS_DAEMONS = [...NODE_DAEMONS, 'weft-controller'] as const;
export type StatusDaemon = (typeof STATUS_DAEMONS)[number];

const isoTime = z.string().refine((v) => !Number.isNaN(Date.parse(v)), 'must be an ISO 8601 time');

const recordSchema = z.object({
  node: z.string().min(1),
  daemon: z.enum(STATUS_DAEMONS),
  version: z.string(),
  pid: z.number().int().positive(),
  startedAt: isoTime,
  updatedAt: isoTime,
  ready: z.boolean(),
  reason: z.string().optional(),
  lastSync: isoTime.optional(),
  health: z.string().url().optional(),
  detail: z.record(z.string(), z.string()).default({}),
});

/** One daemon's status as it reported it. */
export type DaemonStatus = z.infer<typeof recordSchema>;

/** `/weft` → `/weft/status/`: where the records are. */
export function statusPrefix(registryPrefix: string): string {
  return `${registryPrefix.replace(/\/+$/, '')}/status/`;
}

/** The key of one daemon's record under a status prefix (`/weft/status/`). */
export function statusKey(prefix: string, node: string, daemon: StatusDaemon): string {
  return `${prefix.endsWith('/') ? prefix : `${prefix}/`}${node}/${daemon}`;
}

/** Parses a record; throws INVALID_VALUE naming the key and the field at fault. */
export function parseDaemonStatus(key: string, value: string): DaemonStatus {
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch (err) {
    throw new WeftError(ErrorCodes.INVALID_VALUE, `status ${key}: not JSON: ${(err as Error).message}`, {
      object: key,
      field: '',
    });
  }
  const r = recordSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue?.path.join('.') ?? '';
    throw new WeftError(
      ErrorCodes.INVALID_VALUE,
      `status ${key}: field ${field}: ${issue?.message ?? 'invalid'}`,
      {
        object: key,
        field,
      },
    );
  }
  return r.data;
}

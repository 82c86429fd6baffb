/**
 * The value stored under a lease key: flannel's LeaseAttrs as Go's encoding/json writes it, byte
 * for byte, so flannel nodes and weft nodes can read each other's leases:
 * `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{…}}`.
 */
import { z } from 'zod';
import { ErrorCodes, invalid } from '../errors/index.js';
import { decodeJson, goStruct } from './go-json.js';
import { canonicalIp, ipFamily, type IpFamily } from './ip.js';

/** What a node publishes about itself in its lease. */
export interface LeaseAttrs {
  /** The node's public IPv4 address; `0.0.0.0` on an IPv6-only node, as flannel writes it. */
  readonly publicIP: string;
  readonly publicIPv6?: string;
  /** Backend name; the udp backend writes none. */
  readonly backendType?: string;
  /** Backend-specific JSON (vxlan: `{"VNI":1,"VtepMAC":"…"}`), opaque here. */
  readonly backendData?: unknown;
  /** Backend-specific JSON for the IPv6 side. */
  readonly backendV6Data?: unknown;
}

function address(family: IpFamily) {
  const message = `must be an IPv${family} address`;
  return z
    .string({ error: (issue) => (issue.input === undefined ? 'required' : message) })
    .refine((text) => ipFamily(text) === family, message)
    .transform(canonicalIp);
}

const leaseJsonSchema = goStruct({
  PublicIP: address(4),
  PublicIPv6: address(6).optional(),
  BackendType: z.string().optional(),
  BackendData: z.unknown().optional(),
  BackendV6Data: z.unknown().optional(),
}).transform((json): LeaseAttrs => ({
  publicIP: json.PublicIP,
  ...(json.PublicIPv6 !== undefined && { publicIPv6: json.PublicIPv6 }),
  ...(json.BackendType && { backendType: json.BackendType }),
  ...(json.BackendData !== undefined && { backendData: json.BackendData }),
  ...(json.BackendV6Data !== undefined && { backendV6Data: json.BackendV6Data }),
}));

/** Go's field order and omitempty rules: PublicIPv6 is a pointer (null when unset), the rest vanish. */
function toJson(attrs: LeaseAttrs): Record<string, unknown> {
  return {
    PublicIP: attrs.publicIP,
    PublicIPv6: attrs.publicIPv6 ?? null,
    BackendType: attrs.backendType || undefined,
    BackendData: attrs.backendData ?? undefined,
    BackendV6Data: attrs.backendV6Data ?? undefined,
  };
}

/**
 * The lease value as flannel writes it. Addresses are checked and written canonically, since a
 * malformed one would break every flannel node that reads it; throws WEFT_INVALID_ARGUMENT.
 */
export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  const checked = decodeJson(toJson(attrs), leaseJsonSchema);
  if (!checked.ok) throw invalid('lease', checked.field, checked.message);
  return JSON.stringify(toJson(checked.value));
}

/**
 * Reads a lease value; `key` (the lease key) only names the lease in errors. Keys match
 * case-insensitively and unknown ones are ignored, as in Go. Throws WEFT_INVALID_VALUE with
 * `details.key` and `details.field`.
 */
export function decodeLeaseAttrs(value: string, key: string): LeaseAttrs {
  const decoded = decodeJson(value, leaseJsonSchema);
  if (decoded.ok) return decoded.value;
  const err = invalid(
    `lease ${JSON.stringify(key)}`,
    decoded.field,
    decoded.message,
    ErrorCodes.INVALID_VALUE,
  );
  err.details.key = key;
  throw err;
}

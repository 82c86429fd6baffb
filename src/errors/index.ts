/**
 * One error type for all of weft, with stable string codes (in the manner of undici's
 * `UND_ERR_*`). Callers branch on `code`, never on message text, so messages can improve
 * without breaking anyone.
 */

/** Every code weft can raise. Codes are part of the public contract: never rename one. */
export const ErrorCodes = {
  /** A value failed validation; `details.field` names the field at fault. */
  INVALID_ARGUMENT: 'WEFT_INVALID_ARGUMENT',
  /** The network config is missing or invalid. */
  INVALID_CONFIG: 'WEFT_INVALID_CONFIG',
  /** A registry key does not have the expected form. */
  INVALID_KEY: 'WEFT_INVALID_KEY',
  /** A stored value could not be decoded. */
  INVALID_VALUE: 'WEFT_INVALID_VALUE',
  /** No free subnet is left between SubnetMin and SubnetMax. */
  OUT_OF_SUBNETS: 'WEFT_OUT_OF_SUBNETS',
  /** Every value of a range (service CIDR, node-port range) is allocated. */
  RANGE_EXHAUSTED: 'WEFT_RANGE_EXHAUSTED',
  /** A create-if-absent found the key already present. */
  ALREADY_EXISTS: 'WEFT_ALREADY_EXISTS',
  /** A compare-and-swap lost to a concurrent writer. */
  CONFLICT: 'WEFT_CONFLICT',
  /** A key was expected but is absent. */
  NOT_FOUND: 'WEFT_NOT_FOUND',
  /** The registry cannot be reached or answered with an error. */
  REGISTRY_UNAVAILABLE: 'WEFT_REGISTRY_UNAVAILABLE',
  /** A watch cannot resume from the requested revision (compaction, stream trim). */
  REGISTRY_COMPACTED: 'WEFT_REGISTRY_COMPACTED',
  /**
   * A guarded write found its guard key absent or holding another value (a leader that lost
   * its election): nothing was written.
   */
  FENCED: 'WEFT_FENCED',
  /** A TTL-bound key or its lease was lost. */
  LEASE_LOST: 'WEFT_LEASE_LOST',
  /** The kernel refused a netlink request; `details.errno` carries the errno name. */
  NETLINK: 'WEFT_NETLINK',
  /** A request did not complete within its deadline. */
  TIMEOUT: 'WEFT_TIMEOUT',
  /** The object has been closed and cannot serve requests. */
  CLOSED: 'WEFT_CLOSED',
  /** An external program failed. */
  EXEC: 'WEFT_EXEC',
  /** A lab (test environment) operation failed. */
  LAB: 'WEFT_LAB',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Structured context attached to an error; kept JSON-serialisable for logs. */
export type ErrorDetails = Record<string, unknown>;

export class WeftError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WeftError';
    this.code = code;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, ...this.details };
  }
}

/** True when `err` is a WeftError, optionally with the given code. */
export function isWeftError(err: unknown, code?: ErrorCode): err is WeftError {
  return err instanceof WeftError && (code === undefined || err.code === code);
}

/** A validation error that names the object and the field at fault. */
export function invalid(
  object: string,
  field: string,
  message: string,
  code: ErrorCode = ErrorCodes.INVALID_ARGUMENT,
): WeftError {
  const where = field ? `${object}: field ${field}` : object;
  return new WeftError(code, `${where}: ${message}`, { object, field });
}

/** Best-effort message of an unknown thrown value. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

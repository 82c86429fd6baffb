/**
 * Errors in the CNI wire format. A runtime reads a failed plugin's stdout as
 * `{"cniVersion","code","msg","details"}` and branches on `code`, so every failure leaves
 * the plugin as one of these, never as a stack trace.
 */
import { isWeftError, messageOf } from '../errors/index.js';

/**
 * Error codes: 1..11 are the CNI spec's well-known codes; 100 and up are weft-cni's own (the
 * spec reserves that range for plugins).
 */
export const CniErrorCodes = {
  /** The config's cniVersion is not one this plugin speaks, or forbids the command (CHECK < 0.4.0). */
  INCOMPATIBLE_VERSION: 1,
  /** A config field holds a value the plugin does not support. */
  UNSUPPORTED_FIELD: 2,
  /** The container is unknown (never used for DEL). */
  UNKNOWN_CONTAINER: 3,
  /** A CNI_* environment variable is missing or malformed; the message names it. */
  INVALID_ENV: 4,
  /** Reading or writing a file failed. */
  IO_FAILURE: 5,
  /** stdin or subnet.env could not be decoded. */
  DECODING_FAILURE: 6,
  /** The network config is invalid; the message names the field. */
  INVALID_CONFIG: 7,
  /** A transient condition (subnet.env not written yet): the runtime should retry. */
  TRY_AGAIN_LATER: 11,
  /** The delegate plugin failed without printing a CNI error. */
  DELEGATE_FAILED: 100,
  /** The delegate plugin is not in any CNI_PATH directory. */
  DELEGATE_NOT_FOUND: 101,
  /** The delegate plugin succeeded but printed something that is not a CNI result. */
  DELEGATE_BAD_OUTPUT: 102,
  /**
   * The pod attachment could not be written or removed for another reason than an unreachable
   * registry (which is TRY_AGAIN_LATER): refused credentials, a record that kept changing.
   */
  REGISTRY_FAILED: 103,
  /** A bug in weft-cni itself. */
  INTERNAL: 199,
} as const;

/** One of {@link CniErrorCodes}, or a code passed through from a delegate plugin. */
export type CniErrorCode = number;

/** The JSON a failing plugin prints on stdout. */
export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/** A failure to report to the runtime as CNI error JSON. */
export class CniError extends Error {
  /** One of {@link CniErrorCodes}, or the delegate's own code. */
  readonly code: CniErrorCode;
  /** Longer explanation (the delegate's stderr, the raw output), when there is one. */
  readonly details: string | undefined;

  constructor(code: CniErrorCode, msg: string, details?: string) {
    super(msg);
    this.name = 'CniError';
    this.code = code;
    this.details = details;
  }

  /** The wire form; `cniVersion` is the config's when it was understood. */
  toJson(cniVersion: string): CniErrorJson {
    return {
      cniVersion,
      code: this.code,
      msg: this.message,
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

/**
 * Any thrown value as a CniError. A WeftError is a validation failure from shared code (the
 * subnet.env parser); anything else is a bug, reported rather than crashing with a stack
 * trace on stdout, which the runtime could not parse.
 */
export function toCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  if (isWeftError(err)) return new CniError(CniErrorCodes.INVALID_CONFIG, err.message);
  return new CniError(
    CniErrorCodes.INTERNAL,
    `internal error: ${messageOf(err)}`,
    err instanceof Error ? err.stack : undefined,
  );
}

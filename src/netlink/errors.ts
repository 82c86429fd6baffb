/**
 * Errors of netlink operations. Every message reads `netlink <op> <target>: <ERRNO>` so a log
 * line alone says what was attempted on which object and why the kernel refused; `details`
 * carries the same as fields (`op`, `target`, `errno`) for code that branches.
 */
import { constants } from 'node:os';
import { ErrorCodes, WeftError } from '../errors/index.js';

// os.constants.errno maps name -> number; several names share a number (ENOTSUP/EOPNOTSUPP,
// EAGAIN/EWOULDBLOCK). Prefer the name the kernel's own headers and iproute2 print.
const PREFERRED = new Set(['EOPNOTSUPP', 'EAGAIN', 'EDEADLK']);
const NAMES = new Map<number, string>();
for (const [name, num] of Object.entries(constants.errno)) {
  if (!NAMES.has(num) || PREFERRED.has(name)) NAMES.set(num, name);
}

/** The errno name (`EEXIST`) of an errno number, negative (as netlink sends it) or positive. */
export function errnoName(errno: number): string {
  return NAMES.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}

/** The errno names that mean "the object to delete is not there". */
export const MISSING_ERRNOS: ReadonlySet<string> = new Set(['ENODEV', 'ENOENT', 'ESRCH', 'EADDRNOTAVAIL']);

/** The kernel (or the socket) refused `op` on `target` with `errno`. */
export function netlinkError(op: string, target: string, errno: string, cause?: unknown): WeftError {
  const what = target ? `netlink ${op} ${target}` : `netlink ${op}`;
  return new WeftError(ErrorCodes.NETLINK, `${what}: ${errno}`, { op, target, errno }, { cause });
}

/** A failure that is not an errno (a reply the library could not decode, say). */
export function protocolError(op: string, target: string, reason: string, cause?: unknown): WeftError {
  const what = target ? `netlink ${op} ${target}` : `netlink ${op}`;
  return new WeftError(ErrorCodes.NETLINK, `${what}: ${reason}`, { op, target, reason }, { cause });
}

export function timeoutError(op: string, target: string, timeoutMs: number): WeftError {
  const what = target ? `netlink ${op} ${target}` : `netlink ${op}`;
  return new WeftError(ErrorCodes.TIMEOUT, `${what}: no reply within ${timeoutMs} ms`, {
    op,
    target,
    timeoutMs,
  });
}

export function closedError(op: string, target: string): WeftError {
  const what = target ? `netlink ${op} ${target}` : `netlink ${op}`;
  return new WeftError(ErrorCodes.CLOSED, `${what}: socket closed`, { op, target });
}

/** The errno name of a netlink WeftError, if it has one. */
export function errnoOf(err: unknown): string | undefined {
  if (err instanceof WeftError && err.code === ErrorCodes.NETLINK) {
    const e = err.details.errno;
    return typeof e === 'string' ? e : undefined;
  }
  return undefined;
}

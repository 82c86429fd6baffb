/**
 * Links named by index or by name. The kernel wants indexes; people reading errors want names.
 * A name is resolved to its index on every call (indexes change when a device is recreated, so
 * a cache would go stale exactly when it matters); an index is turned back into a name only
 * when an error needs one.
 */
import { rt } from 'netlink';
import { ErrorCodes, WeftError } from '../errors/index.js';
import { netlinkError } from './errors.js';
import type { NetlinkSocket } from './socket.js';
import type { LinkRef } from './types.js';
import { linkPayload } from './wire.js';

/** Ask the kernel for one link by index or name (RTM_GETLINK without DUMP). */
export async function getLinkMessage(
  sock: NetlinkSocket,
  ref: LinkRef,
  op = 'getLink',
  timeoutMs?: number,
): Promise<rt.LinkMessage | undefined> {
  const byName = typeof ref === 'string';
  const msgs = await sock.request({
    op,
    target: String(ref),
    type: rt.MessageType.GETLINK,
    payload: linkPayload({ index: byName ? 0 : ref }, byName ? { ifname: ref } : {}),
    timeoutMs,
  });
  return msgs.find((m): m is rt.LinkMessage => m.kind === 'link');
}

/**
 * Run `fn` against a device's index. `target(dev)` describes the operation given the device's
 * name; kernel errors and timeouts name the device even when it was given by index.
 */
export async function onDevice<T>(
  sock: NetlinkSocket,
  ref: LinkRef,
  op: string,
  target: (dev: string) => string,
  fn: (ifindex: number, target: string) => Promise<T>,
): Promise<T> {
  if (typeof ref === 'string') return fn(await resolveIndex(sock, ref, op, target(ref)), target(ref));
  try {
    return await fn(ref, target(`if${ref}`));
  } catch (err) {
    if (!(err instanceof WeftError) || err.code === ErrorCodes.CLOSED) throw err;
    let name: string | undefined;
    try {
      name = (await getLinkMessage(sock, ref, op, 1_000))?.attrs.ifname;
    } catch {
      /* the device may be the very thing that is missing; keep the index */
    }
    throw name ? relabel(err, op, target(name)) : err;
  }
}

/** The same error with `target` replaced in its message and details. */
function relabel(err: unknown, op: string, target: string): unknown {
  if (!(err instanceof WeftError)) return err;
  const old = typeof err.details.target === 'string' ? err.details.target : undefined;
  if (old === undefined || old === target) return err;
  const message = err.message.replace(
    `netlink ${err.details.op as string} ${old}`,
    `netlink ${op} ${target}`,
  );
  return new WeftError(err.code, message, { ...err.details, op, target }, { cause: err.cause });
}

/** The index of `ref`; a missing device fails `op` on `target` with ENODEV. */
export async function resolveIndex(
  sock: NetlinkSocket,
  ref: LinkRef,
  op: string,
  target: string,
): Promise<number> {
  if (typeof ref === 'number') return ref;
  let msg: rt.LinkMessage | undefined;
  try {
    msg = await getLinkMessage(sock, ref, op);
  } catch (err) {
    throw relabel(err, op, target);
  }
  const index = msg?.data.index;
  if (!index) throw netlinkError(op, target, 'ENODEV');
  return index;
}

/**
 * The netlink event relay: a child process that owns the multicast socket and forwards each
 * datagram, unparsed, to its parent over fd 3.
 *
 * It exists because a receive-buffer overflow cannot be survived inside the process that owns the
 * socket: with netlink 0.3.0 the kernel's ENOBUFS arrives as POLLERR, and the package's native poll
 * handler throws a C++ exception from a libuv callback, which aborts the process (see events.ts).
 * Here the abort costs only this relay: the parent sees it exit, starts a new one and tells its
 * consumers to re-list. The relay does nothing but read and copy, so its own event loop is never
 * the one that falls behind; when the parent is slow, the relay drops instead of queueing without
 * bound and reports the loss.
 *
 * Frames on fd 3: u32 length (big-endian, of what follows), u8 type, payload.
 *   0 DATA     one netlink datagram
 *   1 LOST     notifications were dropped (recvmsg ENOBUFS, or the parent fell behind)
 *   2 READY    memberships joined; payload: u32 receive buffer the kernel granted
 *   3 FAILED   the socket could not be set up; payload: the error message (UTF-8); the relay exits
 *
 * argv[2]: JSON {groups: number[], recvBufferSize: number, maxPendingBytes: number}.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { Socket } from 'node:net';
import { Protocol, RawNetlinkSocket } from 'netlink';
import { loadNative } from '../native/index.js';
import { FRAME, encodeFrame, type RelayConfig } from './event-relay-frames.js';

const config = JSON.parse(process.argv[2] ?? '{}') as RelayConfig;
// libuv's stdio pipes are socket pairs: reading fd 3 is how a quiet relay learns its parent died
// (end of file), instead of lingering until the next notification fails to write.
const out = new Socket({ fd: 3, readable: true, writable: true });
let lost = false;

// The parent is gone (or closed the pipe): nothing more to do.
out.on('error', () => process.exit(0));
out.on('end', () => process.exit(0));
out.on('close', () => process.exit(0));
out.resume();

function send(type: number, payload: Uint8Array = new Uint8Array(0)): void {
  out.write(encodeFrame(type, payload));
}

function forward(type: number, payload?: Uint8Array): void {
  // A parent whose event loop is blocked must not make this process grow without bound.
  if (out.writableLength > config.maxPendingBytes) {
    lost = true;
    return;
  }
  if (lost) {
    lost = false;
    send(FRAME.LOST);
  }
  send(type, payload);
}

function socketFds(): Set<number> {
  const fds = new Set<number>();
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`).startsWith('socket:')) fds.add(Number(name));
    } catch {
      // closed while listing (the fd of readdir itself)
    }
  }
  return fds;
}

/**
 * SO_RCVBUF is capped by net.core.rmem_max (208 KiB on a stock kernel), which a burst of route
 * changes fills. The netlink package does not expose its fd, so the relay, whose only new socket
 * is the netlink one, finds it in /proc/self/fd and has the addon set SO_RCVBUFFORCE, which
 * CAP_NET_ADMIN allows past the cap. Without the addon or the capability, SO_RCVBUF stands.
 */
function forceRecvBuffer(before: Set<number>): void {
  const { addon } = loadNative();
  if (!addon) return;
  const fresh = [...socketFds()].filter((fd) => !before.has(fd));
  if (fresh.length !== 1) return;
  try {
    addon.forceRecvBuffer(fresh[0] as number, config.recvBufferSize);
  } catch {
    // EPERM without CAP_NET_ADMIN: keep what SO_RCVBUF got; the parent logs the granted size.
  }
}

function main(): void {
  let sock: RawNetlinkSocket;
  try {
    const before = socketFds();
    // The library types both buffer sizes as required; 0 leaves the send buffer alone.
    sock = new RawNetlinkSocket(Protocol.ROUTE, { recvBufferSize: config.recvBufferSize, sendBufferSize: 0 });
    forceRecvBuffer(before);
    for (const g of config.groups) sock.addMembership(g);
  } catch (err) {
    send(FRAME.FAILED, Buffer.from(err instanceof Error ? err.message : String(err)));
    out.end(() => process.exit(1));
    return;
  }
  sock.on('message', (msg) => forward(FRAME.DATA, msg));
  // recvmsg reported ENOBUFS before the poll did: the socket stays usable, but events are gone.
  sock.on('error', () => forward(FRAME.LOST));
  const granted = Buffer.alloc(4);
  granted.writeUInt32BE(Math.min(sock.getRecvBufferSize(), 0xffffffff));
  send(FRAME.READY, granted);
}

main();

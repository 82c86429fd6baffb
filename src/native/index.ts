/**
 * The native addon (native/, built by `make build`): loaded once, on first use. Callers get
 * `undefined` when it is not built or is disabled with `WEFT_NATIVE=0`, and choose their
 * pure-Node fallback; the reason is returned so that they can log it once.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** How a relayed TCP connection ended, as the addon reports it. */
export interface NativeRelayEnd {
  id: number;
  /** Bytes moved from the first fd given to `addTcp` to the second. */
  bytesAtoB: number;
  bytesBtoA: number;
  reason: 'closed' | 'reset' | 'idle' | 'error' | 'shutdown';
  /** errno of a reset or error, else 0. */
  errno: number;
}

/** The addon's TCP relay: one I/O thread on epoll moving bytes with splice(2). */
export interface NativeRelay {
  /**
   * Relays between two connected sockets until both directions are closed. The fds are
   * duplicated, so the caller closes its own handles right after (without reading from them).
   * `id` and `idleTimeoutMs` are integers from 0 to 2^53 (0: no timeout); an id of a live
   * connection ends the new one at once with `error`/EEXIST, never the live one.
   */
  addTcp(id: number, fdA: number, fdB: number, idleTimeoutMs: number): void;
  stats(): { added: number; ended: number; bytes: number; batches: number };
  /** Ends every connection and joins the thread; no thread or fd outlives it. Idempotent. */
  close(): void;
}

/** Counters of the udp backend's forwarder. */
export interface NativeTunStats {
  /** Packets read from the TUN device. */
  tunRx: number;
  /** Packets written to the TUN device. */
  tunTx: number;
  udpRx: number;
  udpTx: number;
  bytesOut: number;
  bytesIn: number;
  /** Datagrams from the network that were not well-formed IPv4 (truncated, bad length, IPv6...). */
  dropMalformed: number;
  /** Packets from the TUN that were not IPv4 (the backend carries IPv4 only). */
  dropUnsupported: number;
  /** Packets for a destination no lease covers; each got an ICMP net-unreachable. */
  dropNoRoute: number;
  /** Packets whose TTL ran out. */
  dropTtl: number;
  icmpSent: number;
  /** Messages the socket refused (one failing message no longer takes its batch with it). */
  sendErrors: number;
  /** Datagrams whose outer source is no remote lease's public IP. */
  dropUnknownPeer: number;
  /** Datagrams from a lease's node whose inner source lies outside that lease's subnet. */
  dropForeignSource: number;
  /** ICMP errors not sent: the limit is 1000 a second with a burst of 50, as the kernel's. */
  icmpSuppressed: number;
}

/** Options of the addon's `Tun`. */
export interface NativeTunOptions {
  /** Device name; default `flannel0`. */
  name?: string;
  /** Address the UDP socket binds; default 0.0.0.0. */
  localIp?: string;
  /** UDP port, local and remote; default 8285. */
  port?: number;
  /** Source of ICMP errors sent back into the TUN. */
  icmpSource?: string;
}

/**
 * The udp backend's forwarder: a TUN device (IFF_TUN | IFF_NO_PI) created in the caller's network
 * namespace and an I/O thread moving packets between it and a UDP socket. The device disappears
 * with `close()`.
 */
export interface NativeTun {
  readonly name: string;
  /**
   * Replaces the table: `[network, prefixLength, publicIP]` per remote lease. It is also the
   * receive filter: a datagram enters the TUN only from a listed public IP, with an inner source
   * inside one of that node's subnets.
   */
  setRoutes(routes: [string, number, string][]): void;
  setIcmpSource(ip: string): void;
  stats(): NativeTunStats | undefined;
  close(): void;
}

/** Counters of one UDP listener of the addon's UDP relay. */
export interface NativeUdpListenerStats {
  id: number;
  /** Datagrams from clients. */
  datagramsIn: number;
  /** Replies sent to clients. */
  datagramsOut: number;
  flowsCreated: number;
  flowsActive: number;
  /** Datagrams dropped: no endpoint, no flow could be opened (caps full), or a send failed. */
  dropped: number;
  /** Flows closed early to make room for a new client (a flow cap was reached). */
  flowsEvicted: number;
  /** ClientIP affinity entries dropped early to make room (the affinity cap was reached). */
  affinityEvicted: number;
}

/**
 * The userspace proxier's UDP data path: service sockets bound by the addon, per-client flows to
 * the endpoints (round-robin in the given order, optional ClientIP affinity), replies sent from
 * the address each client used. Counters come back once a second, one batch for all listeners.
 */
export interface NativeUdpRelay {
  /** Binds `bindIp:port` (0 = any free port) and returns the port. */
  addListener(id: number, bindIp: string, port: number, idleTimeoutMs: number): number;
  /** Replaces the endpoints; flows to endpoints no longer listed end at once. */
  setEndpoints(id: number, endpoints: [string, number][], affinitySeconds: number): void;
  /**
   * Caps for flows created from now on: in total, per listener, and affinity entries per
   * listener (0 = unbounded). Past a cap the least recently active entry is closed and counted.
   */
  setLimits(maxFlows: number, maxFlowsPerListener: number, maxAffinityEntries: number): void;
  removeListener(id: number): void;
  close(): void;
}

/** Options of the addon's `Relay`. */
export interface NativeRelayOptions {
  /**
   * Pipe size asked for per direction (F_SETPIPE_SZ); default 64 KiB. The relay works with what
   * the kernel grants; tests set one page (4096) to make every write short.
   */
  pipeSize?: number;
  /** Called when the I/O thread stops on an error (it never stops silently). */
  onError?: (err: Error) => void;
}

/** The addon's exports. */
export interface NativeAddon {
  abiVersion: number;
  Relay: new (onEvents: (events: NativeRelayEnd[]) => void, opts?: NativeRelayOptions) => NativeRelay;
  /** `onError` hears of the I/O thread stopping on an error. */
  Tun: new (
    opts: NativeTunOptions,
    onStats: (stats: NativeTunStats) => void,
    onError?: (err: Error) => void,
  ) => NativeTun;
  UdpRelay: new (onStats: (stats: NativeUdpListenerStats[]) => void) => NativeUdpRelay;
  /** The forwarder's packet check, for tests: `ok` or why the packet would be dropped. */
  parseIpv4(packet: Buffer): { error: string; ttl?: number; protocol?: number; totalLength?: number };
  /**
   * SO_RCVBUFFORCE on `fd` (needs CAP_NET_ADMIN; past `net.core.rmem_max`); returns the receive
   * buffer the kernel then reports (twice the request, its bookkeeping share included). Throws
   * when refused.
   */
  forceRecvBuffer(fd: number, bytes: number): number;
}

/** The result of {@link loadNative}: the addon, or why there is none. */
export type NativeLoad = { addon: NativeAddon; path: string } | { addon: undefined; reason: string };

const ADDON = join('native', 'build', 'Release', 'weft_native.node');
let cached: NativeLoad | undefined;

/** Loads the addon once. `WEFT_NATIVE=0` disables it; `WEFT_NATIVE_PATH` names another build. */
export function loadNative(): NativeLoad {
  cached ??= load();
  return cached;
}

function load(): NativeLoad {
  if (process.env.WEFT_NATIVE === '0') return { addon: undefined, reason: 'disabled by WEFT_NATIVE=0' };
  const here = dirname(fileURLToPath(import.meta.url));
  // src/native → repo root is two up; dist/src/native is three up.
  const candidates = process.env.WEFT_NATIVE_PATH
    ? [process.env.WEFT_NATIVE_PATH]
    : [join(here, '..', '..', ADDON), join(here, '..', '..', '..', ADDON)];
  const path = candidates.find((p) => existsSync(p));
  if (!path) return { addon: undefined, reason: `${ADDON} is not built (run make build)` };
  try {
    const addon = createRequire(import.meta.url)(path) as NativeAddon;
    return { addon, path };
  } catch (err) {
    return { addon: undefined, reason: `${path}: ${(err as Error).message}` };
  }
}

/**
 * The bounds of the userspace mode. Every client can make the proxy hold something: a TCP
 * connection (two sockets, six fds with the splice relay's pipes), a UDP flow (one socket), an
 * affinity entry. Source ports and addresses are cheap to forge, so each of these is capped per
 * service port and in total, and the totals are cut further to fit the process's file
 * descriptor limit, leaving a reserve so that the registry session, /healthz and /metrics keep
 * working when the relay is full.
 */
import { readFileSync } from 'node:fs';

/** The caps of one proxier. Every value is a count; 0 is not allowed (use a large number). */
export interface UserspaceLimits {
  /** TCP connections being dialled or relayed, all listeners together. */
  maxTcpConnections: number;
  /** TCP connections being dialled or relayed through one listener (service port). */
  maxTcpConnectionsPerPort: number;
  /** Live UDP flows, all listeners together. */
  maxUdpFlows: number;
  /** Live UDP flows of one listener. */
  maxUdpFlowsPerPort: number;
  /** ClientIP affinity entries of one listener. */
  maxAffinityEntries: number;
}

/** The defaults, before the fd budget cuts them (flags `--userspace-max-*`). */
export const DEFAULT_USERSPACE_LIMITS: Readonly<UserspaceLimits> = {
  maxTcpConnections: 32_768,
  maxTcpConnectionsPerPort: 8_192,
  maxUdpFlows: 65_536,
  maxUdpFlowsPerPort: 16_384,
  maxAffinityEntries: 16_384,
};

/** Idle timeout of a relayed TCP connection by default (flag `--userspace-tcp-idle-timeout`). */
export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 3_600_000;

/** File descriptors one relayed TCP connection holds: client and upstream, plus two pipes natively. */
export function fdsPerTcpConnection(relay: 'native' | 'node'): number {
  return relay === 'native' ? 6 : 2;
}

/**
 * File descriptors never given to the relay: the registry connection(s), the health and metrics
 * listeners and their clients, nft/conntrack child processes, Node's own. At least 256, or 5 % of
 * a large limit.
 */
export function fdReserve(softLimit: number): number {
  return Math.max(256, Math.floor(softLimit * 0.05));
}

/**
 * `limits` cut to what `softLimit` file descriptors allow once the reserve is set aside: TCP
 * connections and UDP flows get half of the rest each. A per-port cap never exceeds its total.
 * Pure, so the arithmetic is tested without touching the process's limit.
 */
export function fitToFdLimit(
  limits: UserspaceLimits,
  softLimit: number,
  tcpRelay: 'native' | 'node',
  udpFlowFds = 1,
): UserspaceLimits {
  const soft = Number.isFinite(softLimit) ? softLimit : 2 ** 30;
  const usable = Math.max(0, soft - fdReserve(soft));
  const tcpTotal = Math.max(
    1,
    Math.min(limits.maxTcpConnections, Math.floor(usable / 2 / fdsPerTcpConnection(tcpRelay))),
  );
  const udpTotal = Math.max(1, Math.min(limits.maxUdpFlows, Math.floor(usable / 2 / udpFlowFds)));
  return {
    maxTcpConnections: tcpTotal,
    maxTcpConnectionsPerPort: Math.min(limits.maxTcpConnectionsPerPort, tcpTotal),
    maxUdpFlows: udpTotal,
    maxUdpFlowsPerPort: Math.min(limits.maxUdpFlowsPerPort, udpTotal),
    maxAffinityEntries: limits.maxAffinityEntries,
  };
}

/**
 * The soft RLIMIT_NOFILE of this process, from /proc/self/limits (Node has no getrlimit).
 * 1024, the usual default, when it cannot be read; `Infinity` for "unlimited".
 */
export function softFdLimit(read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number {
  let text: string;
  try {
    text = read();
  } catch {
    return 1024;
  }
  const m = /^Max open files\s+(\S+)/m.exec(text);
  if (!m) return 1024;
  if (m[1] === 'unlimited') return Number.POSITIVE_INFINITY;
  const n = Number(m[1]);
  return Number.isInteger(n) && n > 0 ? n : 1024;
}

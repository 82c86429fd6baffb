/**
 * Registers the three proxy modes with the proxier registry. Kept apart from the modes so that
 * each mode stays importable alone (golden tests, the benchmark) and from the daemon so that the
 * daemon can be tested with a mode of the test's own.
 */
import { createIptablesProxier } from './iptables/index.js';
import { createNftablesProxier } from './nftables/index.js';
import { registerProxier } from './proxier.js';
import { createUserspaceProxier, type UserspaceLimits } from './userspace/index.js';

/** Options of {@link registerProxyModes}. */
export interface ProxyModeOptions {
  /** userspace mode: idle timeout of a UDP flow, ms (`--udp-timeout`). */
  udpTimeoutMs?: number;
  /** userspace mode: caps (`--userspace-max-*`). */
  userspaceLimits?: UserspaceLimits;
  /** userspace mode: idle timeout of a relayed TCP connection, ms (`--userspace-tcp-idle-timeout`). */
  userspaceTcpIdleTimeoutMs?: number;
}

/** Registers nftables, iptables and userspace under their mode names. */
export function registerProxyModes(opts: ProxyModeOptions = {}): void {
  registerProxier('nftables', (ctx) => createNftablesProxier(ctx));
  registerProxier('iptables', (ctx) => createIptablesProxier(ctx));
  registerProxier('userspace', (ctx) =>
    createUserspaceProxier(ctx, {
      ...(opts.udpTimeoutMs !== undefined && { udpIdleTimeoutMs: opts.udpTimeoutMs }),
      ...(opts.userspaceLimits && { limits: opts.userspaceLimits }),
      ...(opts.userspaceTcpIdleTimeoutMs !== undefined && {
        tcpIdleTimeoutMs: opts.userspaceTcpIdleTimeoutMs,
      }),
    }),
  );
}

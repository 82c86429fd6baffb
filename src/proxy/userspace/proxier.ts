/**
 * The userspace proxier: kube-proxy's historical userspace mode. Every service port gets a
 * listener on the node, nftables redirects the service's addresses to it, and connections are
 * relayed to an endpoint chosen in user space. Slow by nature (every byte crosses user space,
 * unless the native relay splices), but independent of the kernel's NAT load balancing.
 */
import { networkInterfaces } from 'node:os';
import { messageOf } from '../../errors/index.js';
import type { Logger } from '../../log/index.js';
import { loadNative } from '../../native/index.js';
import { runChecked, SerialQueue } from '../../exec/index.js';
import type { Family, ServicePort } from '../model/index.js';
import type { Proxier, ProxierContext, SyncRequest } from '../proxier.js';
import { DIAL_TIMEOUTS_MS } from './balancer.js';
import {
  createListener,
  emptyStats,
  isUdpListener,
  type Listener,
  type UserspaceStats,
} from './listeners.js';
import {
  DEFAULT_TCP_IDLE_TIMEOUT_MS,
  DEFAULT_USERSPACE_LIMITS,
  fdReserve,
  fitToFdLimit,
  softFdLimit,
  type UserspaceLimits,
} from './limits.js';
import { loadRelay } from './load-relay.js';
import { publishUserspaceMetrics } from './metrics.js';
import { NativeUdpRelayHost } from './native-udp-listener.js';
import type { Relay } from './relay.js';
import { USERSPACE_TABLE, planAll, renderCleanup, renderUserspaceRules, type ListenerPlan } from './rules.js';

/** Options of {@link createUserspaceProxier}. */
export interface UserspaceOptions {
  /** Address the listeners bind. Default the family's wildcard (`0.0.0.0` or `::`). */
  bindAddress?: string;
  /**
   * The port for a listener, by listener key (service port id, `@external` appended for the
   * external listener of split traffic policies). Default 0: an ephemeral port.
   */
  listenerPort?: (key: string) => number;
  /** A UDP flow with no datagram in either direction for this long is closed. Default 1000. */
  udpIdleTimeoutMs?: number;
  /**
   * A relayed TCP connection idle in both directions for this long is closed. Default one hour;
   * 0 turns the timeout off.
   */
  tcpIdleTimeoutMs?: number;
  /**
   * Caps on connections, flows and affinity entries; missing ones take
   * {@link DEFAULT_USERSPACE_LIMITS}. Cut further to fit the file descriptor limit.
   */
  limits?: Partial<UserspaceLimits>;
  /** The soft RLIMIT_NOFILE to fit the caps to. Default: this process's, read at creation. */
  fdLimit?: number;
  /** Connect timeouts of the successive attempts. Default 250, 500, 1000, 2000 ms. */
  dialTimeoutsMs?: readonly number[];
  /** The relay; default {@link loadRelay} (native addon when built). Not closed by the proxier. */
  relay?: Relay;
  /**
   * Who moves UDP datagrams: `native` (the addon's UDP relay: recvmmsg/sendmmsg batches on its
   * thread) or `node` (dgram sockets). Default: native when the TCP relay is the native one.
   */
  udpRelay?: 'native' | 'node';
  /**
   * The node addresses on which UDP listeners also bind a socket of their own (so replies leave
   * from the address the datagram was redirected to). Default: every address of the family on
   * the node, loopback included, refreshed at each sync. Only used with a wildcard bindAddress.
   */
  udpBindAddresses?: () => string[];
  /**
   * Delete UDP conntrack entries of a service address when it gets endpoints after having none,
   * so flows that were rejected are not stuck without NAT. Default true.
   */
  clearUdpConntrack?: boolean;
  /** Monotonic milliseconds clock for affinity and flow expiry; for tests. Default monotonicMs. */
  now?: () => number;
  /** Random source of the endpoint shuffle; for tests. */
  random?: () => number;
}

/** The userspace proxier, with what it exposes beyond the Proxier contract. */
export interface UserspaceProxier extends Proxier {
  /** Counters since start (the engine turns them into metrics). */
  stats(): UserspaceStats;
  /** The bound port of every listener, by listener key. */
  listenerPorts(): Map<string, number>;
  /** Which relay moves UDP datagrams. */
  readonly udpRelayKind: 'native' | 'node';
  /** Which relay moves TCP bytes. */
  readonly relayKind: Relay['kind'];
  /** The caps in force, after fitting them to the file descriptor limit. */
  readonly limits: UserspaceLimits;
}

/** Every address of `family` on this node, loopback included, link-local IPv6 excluded. */
export function localAddresses(family: Family): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (family === 4 && a.family === 'IPv4') out.push(a.address);
      if (family === 6 && a.family === 'IPv6' && !a.address.toLowerCase().startsWith('fe80:'))
        out.push(a.address);
    }
  }
  return [...new Set(out)].sort();
}

/** Creates the userspace proxier of one family. Binds nothing and writes no rule until sync. */
export async function createUserspaceProxier(
  ctx: ProxierContext,
  opts: UserspaceOptions = {},
): Promise<UserspaceProxier> {
  const log = ctx.log.child({ mode: 'userspace', family: ctx.family });
  const relay = opts.relay ?? loadRelay(log);
  const fam = ctx.family === 4 ? 'ip' : 'ip6';
  const wildcard = ctx.family === 4 ? '0.0.0.0' : '::';
  const bindAddress = opts.bindAddress ?? wildcard;
  const udpAddrs = opts.udpBindAddresses ?? (() => localAddresses(ctx.family));
  const udpIdle = opts.udpIdleTimeoutMs ?? 1000;
  const stats = emptyStats();
  const fdLimit = opts.fdLimit ?? softFdLimit();
  const limits = fitToFdLimit({ ...DEFAULT_USERSPACE_LIMITS, ...opts.limits }, fdLimit, relay.kind);
  log.info(
    { fdLimit, fdReserve: fdReserve(fdLimit), ...limits },
    'userspace caps (fitted to the file descriptor limit, with a reserve for the registry and listeners)',
  );
  const udpHost = nativeUdpHost(
    opts.udpRelay ?? (relay.kind === 'native' ? 'native' : 'node'),
    stats,
    limits,
    log,
  );
  const deps = {
    family: ctx.family,
    relay,
    log,
    stats,
    tcpIdleTimeoutMs: opts.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS,
    udpIdleTimeoutMs: udpIdle,
    dialTimeoutsMs: opts.dialTimeoutsMs ?? DIAL_TIMEOUTS_MS,
    limits,
    tcpBudget: { used: 0 },
    udpBudget: { max: limits.maxUdpFlows, used: 0 },
    ...(opts.now ? { now: opts.now } : {}),
    ...(opts.random ? { random: opts.random } : {}),
    ...(udpHost ? { udpRelay: udpHost } : {}),
  };
  const listeners = new Map<string, Listener>();
  /** Listener keys that had endpoints at the last sync (for UDP conntrack clearing). */
  const hadEndpoints = new Set<string>();
  const warned = new Set<string>();
  const queue = new SerialQueue();
  let lastRules: string | undefined;
  let closed = false;

  const sweeper = setInterval(
    () => {
      for (const l of listeners.values()) l.sweep();
    },
    Math.min(1000, Math.max(50, Math.floor(udpIdle / 2))),
  );
  sweeper.unref();
  const unpublish = ctx.metrics
    ? publishUserspaceMetrics(ctx.metrics, ctx.family, () => ({ ...stats }), limits)
    : () => {};

  async function ensureListener(plan: ListenerPlan): Promise<void> {
    let l = listeners.get(plan.key);
    if (l && l.protocol !== plan.protocol) {
      await l.close();
      listeners.delete(plan.key);
      l = undefined;
    }
    if (l) {
      l.update(plan);
      return;
    }
    const created = createListener(plan, deps);
    try {
      await created.listen(bindAddress, opts.listenerPort?.(plan.key) ?? 0);
    } catch (err) {
      await created.close();
      log.error(
        { servicePort: plan.key, err: messageOf(err) },
        `${plan.key}: cannot bind a ${plan.protocol} listener on ${bindAddress}; its addresses get no redirect`,
      );
      return;
    }
    listeners.set(plan.key, created);
    log.info({ servicePort: plan.key, protocol: plan.protocol, port: created.port }, 'listener opened');
  }

  async function clearConntrack(plan: ListenerPlan): Promise<void> {
    const sp = plan.servicePort;
    const addrs = plan.kind === 'external' ? [] : [sp.clusterIP];
    if (plan.kind !== 'internal') addrs.push(...sp.externalIPs, ...sp.loadBalancerIPs);
    for (const a of addrs) {
      const args = ['-D', '-f', ctx.family === 4 ? 'ipv4' : 'ipv6', '-p', 'udp', '--orig-dst', a];
      args.push('--orig-port-dst', String(sp.port));
      // Exit 1 means no entry matched: the usual case.
      const res = await ctx.runner('conntrack', args);
      if (res.code > 1) log.warn({ servicePort: plan.key, err: res.stderr.trim() }, 'conntrack -D failed');
    }
  }

  function unsupported(servicePorts: Iterable<ServicePort>): void {
    for (const sp of servicePorts) {
      if (sp.protocol !== 'SCTP' || warned.has(sp.id)) continue;
      warned.add(sp.id);
      log.warn(
        { servicePort: sp.id },
        `${sp.id}: field protocol: SCTP is not supported in userspace mode; skipped`,
      );
    }
  }

  async function doSync(req: SyncRequest): Promise<void> {
    if (closed) throw new Error('userspace proxier is closed');
    unsupported(req.servicePorts.values());
    const plans = planAll(req.servicePorts.values());
    const wanted = new Set(plans.map((p) => p.key));
    for (const plan of plans) {
      // A partial sync leaves unchanged ports alone, but retries a listener that failed to bind.
      if (req.changed && !req.changed.has(plan.servicePort.id) && listeners.has(plan.key)) continue;
      await ensureListener(plan);
    }
    if (bindAddress === wildcard) {
      const addrs = udpAddrs();
      for (const l of listeners.values()) if (isUdpListener(l)) await l.bindAddresses(addrs);
    }
    const rules = renderUserspaceRules(plans, ctx, (key) => listeners.get(key)?.port);
    if (req.changed === undefined || rules !== lastRules) {
      await runChecked(ctx.runner, 'nft', ['-f', '-'], rules);
      lastRules = rules;
    }
    // Closed only now, once no rule sends traffic to them any more.
    for (const [key, l] of listeners) {
      if (wanted.has(key)) continue;
      await l.close();
      listeners.delete(key);
      log.info({ servicePort: key }, 'listener closed');
    }
    for (const plan of plans) {
      const has = plan.endpoints.length > 0;
      if (has && !hadEndpoints.has(plan.key) && plan.protocol === 'UDP' && opts.clearUdpConntrack !== false) {
        await clearConntrack(plan);
      }
      if (has) hadEndpoints.add(plan.key);
      else hadEndpoints.delete(plan.key);
    }
    for (const key of hadEndpoints) if (!wanted.has(key)) hadEndpoints.delete(key);
  }

  async function closeListeners(): Promise<void> {
    for (const l of listeners.values()) await l.close();
    listeners.clear();
    hadEndpoints.clear();
  }

  return {
    mode: 'userspace',
    family: ctx.family,
    relayKind: relay.kind,
    limits,
    udpRelayKind: udpHost ? 'native' : 'node',
    sync: (req) => queue.run(() => doSync(req)),
    async check(servicePorts) {
      // Listener ports do not change what nft accepts: any port stands in for them.
      const rules = renderUserspaceRules(planAll(servicePorts.values()), ctx, () => 1);
      await runChecked(ctx.runner, 'nft', ['-c', '-f', '-'], rules);
    },
    async rulesIntact() {
      if (lastRules === undefined) return false;
      const res = await ctx.runner('nft', ['list', 'chain', fam, USERSPACE_TABLE, 'services']);
      return res.code === 0;
    },
    cleanup: () =>
      queue.run(async () => {
        await closeListeners();
        await runChecked(ctx.runner, 'nft', ['-f', '-'], renderCleanup(ctx.family));
        lastRules = undefined;
      }),
    close: () =>
      queue.run(async () => {
        closed = true;
        clearInterval(sweeper);
        unpublish();
        await closeListeners();
        udpHost?.close();
        if (!opts.relay) await relay.close();
      }),
    stats: () => ({ ...stats }),
    listenerPorts: () => new Map([...listeners].map(([k, l]) => [k, l.port])),
  };
}

/** The addon's UDP relay when asked for and available; else undefined (Node sockets), logged. */
function nativeUdpHost(
  want: 'native' | 'node',
  stats: UserspaceStats,
  limits: UserspaceLimits,
  log: Logger,
): NativeUdpRelayHost | undefined {
  if (want === 'node') {
    log.info('UDP datagrams through Node sockets');
    return undefined;
  }
  const loaded = loadNative();
  if (!loaded.addon?.UdpRelay) {
    log.info(
      { reason: loaded.addon ? 'the addon has no UdpRelay' : loaded.reason },
      'native UDP relay not available; using Node sockets',
    );
    return undefined;
  }
  const { UdpRelay } = loaded.addon;
  try {
    const host = new NativeUdpRelayHost((onStats) => new UdpRelay(onStats), stats, limits);
    log.info('using the native UDP relay');
    return host;
  } catch (err) {
    log.warn({ err: messageOf(err) }, 'native UDP relay failed to start; using Node sockets');
    return undefined;
  }
}

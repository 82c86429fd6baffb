/**
 * flannel's `udp` backend: a TUN device `flannel0` carries the whole cluster network, and the
 * native addon's forwarder sends each packet as a plain UDP datagram (port 8285) to the node
 * owning its destination subnet. The kernel side (address, route, device) is planned like any
 * other backend; the forwarder's subnet table is the backend's `sync` state.
 *
 * Two choices differ from flannel on purpose: the device gets its address as a /32 plus an
 * explicit route for the network (flannel puts the network's prefix on the address, which makes
 * the kernel add a second, proto-kernel route that the reconciler would have to tolerate), and
 * the backend refuses to start without the addon rather than fall back to a slow JS loop, since
 * a Node event loop moving every packet would hold up the daemon.
 */
import { writeFile } from 'node:fs/promises';
import { ErrorCodes, WeftError } from '../../errors/index.js';
import { loadNative, type NativeTun, type NativeTunStats } from '../../native/index.js';
import type { Backend, BackendContext, PlanInput, PreparedBackend } from './backend.js';
import { sortSkips, type DesiredState, type RouteEntry } from './desired-state.js';
import { clusterFamilies, selectRemoteLeases } from './remote-leases.js';
import { feedUdpMetrics } from './udp-metrics.js';

/** The TUN device, as in flannel. */
export const UDP_DEVICE = 'flannel0';
/** flannel's udp port, also what `Port: 0` means. */
export const UDP_DEFAULT_PORT = 8285;

/** The port the forwarder uses: flannel reads `Port: 0` as 8285. */
export function udpPort(port: number): number {
  return port === 0 ? UDP_DEFAULT_PORT : port;
}
/** IPv4 header (20) + UDP header (8). */
export const UDP_OVERHEAD = 28;

/** The desired kernel state of the udp backend; pure. */
export function planUdp(input: PlanInput): DesiredState {
  const families = clusterFamilies(input.config).filter((f) => f.family === 4);
  const selection = selectRemoteLeases(input, { backendType: undefined, backendName: 'udp' });
  const skipped = [...selection.skipped];
  const own = selection.own[4];
  const network = families[0]?.network;
  const routes: RouteEntry[] = [];
  if (network) routes.push({ dst: network.toString(), dev: UDP_DEVICE, onlink: false });
  return {
    addresses: own ? [{ dev: UDP_DEVICE, address: own.network, prefixLen: 32 }] : [],
    neighbours: [],
    fdb: [],
    routes,
    owned: {
      devices: [UDP_DEVICE],
      routeDevices: [UDP_DEVICE],
      networks: families.map((f) => f.network.toString()),
    },
    skipped: sortSkips(skipped),
    programmed: [...new Set(selection.remotes.filter((r) => r.family === 4).map((r) => r.key))].sort(),
  };
}

/**
 * The forwarder's table for a set of leases: `[network, prefixLength, publicIP]` per remote. It
 * routes packets out and also filters them in: only these nodes, with sources in these subnets,
 * may put a packet into the TUN. Updated on every lease event through `sync`.
 */
export function udpRouteTable(input: PlanInput): [string, number, string][] {
  const selection = selectRemoteLeases(input, { backendType: undefined, backendName: 'udp' });
  return selection.remotes
    .filter((r) => r.family === 4)
    .map((r): [string, number, string] => [r.subnet.network, r.subnet.prefixLength, r.publicIP])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

class UdpBackendImpl implements Backend {
  readonly type = 'udp';
  readonly #ctx: BackendContext;
  #tun: NativeTun | undefined;
  #stats: NativeTunStats | undefined;

  constructor(ctx: BackendContext) {
    this.#ctx = ctx;
    if (ctx.metrics) feedUdpMetrics(ctx.metrics, () => this.stats);
  }

  /** The forwarder's latest counters (pushed by the addon about once a second). */
  get stats(): NativeTunStats | undefined {
    return this.#tun?.stats() ?? this.#stats;
  }

  plan(input: PlanInput): DesiredState {
    return planUdp(input);
  }

  async prepare(): Promise<PreparedBackend> {
    const { config, extIface, netlink, logger } = this.#ctx;
    if (config.backend.type !== 'udp') throw new Error('udp backend given another backend config');
    if (!extIface.ip) {
      throw new WeftError(
        ErrorCodes.INVALID_CONFIG,
        `udp backend: the external interface ${extIface.name} has no IPv4 address`,
        { field: 'ip', iface: extIface.name },
      );
    }
    const loaded = loadNative();
    if (!loaded.addon) {
      throw new WeftError(
        ErrorCodes.INVALID_CONFIG,
        `udp backend: needs the native addon (${loaded.reason})`,
        { field: 'Backend.Type' },
      );
    }
    const mtu = extIface.mtu - UDP_OVERHEAD;
    const port = udpPort(config.backend.port);
    const existing = await netlink.links.get(UDP_DEVICE);
    if (!this.#tun || !existing || existing.kind !== 'tun') {
      // The device lives as long as the forwarder's fd: a deleted one means a new forwarder.
      this.#tun?.close();
      if (existing && existing.kind !== 'tun') await netlink.links.delete(existing.index);
      else if (existing && !this.#tun) await netlink.links.delete(existing.index);
      const tun: NativeTun = new loaded.addon.Tun(
        { name: UDP_DEVICE, localIp: extIface.ip, port, icmpSource: extIface.ip },
        (s) => (this.#stats = s),
        (err) => {
          // The forwarder's thread is gone: closing it removes flannel0, and the reconciler's
          // repair of the missing device prepares a new forwarder.
          logger.error({ err, device: UDP_DEVICE }, 'udp forwarder stopped; recreating the device');
          if (this.#tun === tun) {
            this.#stats = tun.stats() ?? this.#stats;
            tun.close();
            this.#tun = undefined;
          }
        },
      );
      this.#tun = tun;
      logger.info({ device: UDP_DEVICE, port, mtu }, 'udp forwarder started');
    }
    const link = await netlink.links.get(UDP_DEVICE);
    if (!link) throw new WeftError(ErrorCodes.NETLINK, `udp backend: ${UDP_DEVICE} vanished after creation`);
    if (link.mtu !== mtu) await netlink.links.setMtu(link.index, mtu);
    if (!link.up) await netlink.links.setUp(link.index);
    // The forwarder's ICMP errors come from this node's overlay address, which is local: without
    // accept_local the kernel would drop them as martians before they reach the pod.
    await writeFile(`/proc/sys/net/ipv4/conf/${UDP_DEVICE}/accept_local`, '1\n').catch((err: unknown) =>
      logger.warn({ err, device: UDP_DEVICE }, 'cannot set accept_local: ICMP errors will not reach pods'),
    );
    // The backend carries IPv4 only; without IPv6 on the device the kernel sends it no router
    // solicitations to drop.
    await writeFile(`/proc/sys/net/ipv6/conf/${UDP_DEVICE}/disable_ipv6`, '1\n').catch(() => {});
    return { mtu, devices: [{ name: UDP_DEVICE, kind: 'tun', mtu }] };
  }

  sync(input: PlanInput): Promise<void> {
    if (!this.#tun) return Promise.resolve();
    this.#tun.setRoutes(udpRouteTable(input));
    // ICMP errors come from this node's own overlay address, as a router on that network would.
    const own = selectRemoteLeases(input, { backendType: undefined, backendName: 'udp' }).own[4];
    if (own) this.#tun.setIcmpSource(own.network);
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.#tun?.close();
    this.#tun = undefined;
    return Promise.resolve();
  }
}

/** The factory registered as `udp`. */
export function createUdpBackend(ctx: BackendContext): Backend {
  return new UdpBackendImpl(ctx);
}

/**
 * The sockets of the userspace mode: a TCP server or UDP sockets per service port, bound on the
 * node, each with its own balancer. Redirected connections are accepted here, an endpoint is
 * dialled with failover and the relay moves the bytes; UDP datagrams go through per-client flows.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { messageOf } from '../../errors/index.js';
import { dialWithFailover, targetKey, type Balancer, type Target } from './balancer.js';
import type { ListenerPlan } from './rules.js';
import { newBalancer, type Listener, type ListenerDeps } from './listener-contract.js';
import { NativeUdpListener } from './native-udp-listener.js';
import { UdpFlowTable, type Flow } from './udp-flows.js';

export { emptyStats, type Listener, type ListenerDeps, type UserspaceStats } from './listener-contract.js';

/** A listener for the plan's protocol. */
export function createListener(plan: ListenerPlan, deps: ListenerDeps): Listener {
  if (plan.protocol === 'TCP') return new TcpListener(plan, deps);
  return deps.udpRelay ? new NativeUdpListener(plan, deps, deps.udpRelay) : new UdpListener(plan, deps);
}

function unmapped(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** Connects to `t` within `timeoutMs`; the socket is half-open capable and has an error guard. */
function connectTcp(t: Target, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: t.ip, port: t.port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect ${targetKey(t)}: timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

class TcpListener implements Listener {
  readonly key: string;
  readonly protocol = 'TCP' as const;
  readonly balancer: Balancer;
  port = 0;
  readonly #deps: ListenerDeps;
  readonly #server: net.Server;
  /** Connections of this listener being dialled or relayed. */
  #open = 0;

  constructor(plan: ListenerPlan, deps: ListenerDeps) {
    this.key = plan.key;
    this.#deps = deps;
    this.balancer = newBalancer(plan, deps);
    this.update(plan);
    // Paused until an endpoint answers, so no client byte is read before there is a place for it.
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (c) => this.#accept(c));
    this.#server.on('error', (err) =>
      deps.log.error({ listener: this.key, err: messageOf(err) }, 'listener error'),
    );
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.#server.once('error', onError);
      // ipv6Only: the IPv6 proxier's `::` listener must not take the IPv4 proxier's traffic.
      this.#server.listen({ host, port, exclusive: true, ipv6Only: this.#deps.family === 6 }, () => {
        this.#server.off('error', onError);
        this.port = (this.#server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }

  update(plan: ListenerPlan): void {
    this.balancer.setAffinityTimeout(plan.servicePort.affinityTimeoutSeconds);
    this.balancer.setTargets(plan.endpoints);
  }

  sweep(): void {
    this.balancer.sweep();
  }

  #accept(client: net.Socket): void {
    const { stats, log, limits, tcpBudget } = this.#deps;
    stats.tcpAccepted++;
    // Until the relay takes over, a client reset must not become an uncaught error.
    client.on('error', () => {});
    // Full: refuse at once (RST), before any endpoint or file descriptor is spent on it.
    if (this.#open >= limits.maxTcpConnectionsPerPort || tcpBudget.used >= limits.maxTcpConnections) {
      stats.tcpRefused++;
      client.resetAndDestroy();
      return;
    }
    this.#open++;
    tcpBudget.used++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#open--;
      tcpBudget.used--;
    };
    const clientIp = unmapped(client.remoteAddress);
    dialWithFailover(this.balancer, clientIp, connectTcp, this.#deps.dialTimeoutsMs).then(
      ({ conn, target, failures }) => {
        stats.tcpDialRetries += failures;
        if (client.destroyed) {
          conn.destroy();
          release();
          return;
        }
        stats.tcpActive++;
        log.debug({ listener: this.key, client: clientIp, endpoint: targetKey(target) }, 'relaying');
        void this.#deps.relay
          .pipeTcp(client, conn, { idleTimeoutMs: this.#deps.tcpIdleTimeoutMs })
          .then((r) => {
            release();
            stats.tcpActive--;
            stats.bytesFromClients += r.bytesFromClient;
            stats.bytesToClients += r.bytesFromUpstream;
          });
      },
      (err: unknown) => {
        release();
        stats.tcpDialFailures++;
        log.warn(
          { listener: this.key, client: clientIp, err: messageOf(err) },
          'no endpoint reachable; resetting',
        );
        if (!client.destroyed) client.resetAndDestroy();
      },
    );
  }

  async close(): Promise<void> {
    if (this.#server.listening) this.#server.close();
  }
}

type Sock = dgram.Socket;

/** A flow's upstream socket, and what the client sent before its connect completed. */
interface Upstream {
  sock: Sock;
  /** Null once connected. */
  pending: Buffer[] | null;
}

class UdpListener implements Listener {
  readonly key: string;
  readonly protocol = 'UDP' as const;
  readonly balancer: Balancer;
  port = 0;
  readonly #deps: ListenerDeps;
  /** By bound address; the wildcard (or the configured address) first. */
  readonly #sockets = new Map<string, Sock>();
  readonly #flows: UdpFlowTable<Upstream>;
  #primary = '';

  constructor(plan: ListenerPlan, deps: ListenerDeps) {
    this.key = plan.key;
    this.#deps = deps;
    this.balancer = newBalancer(plan, deps);
    this.#flows = new UdpFlowTable<Upstream>({
      idleTimeoutMs: deps.udpIdleTimeoutMs,
      maxFlows: deps.limits.maxUdpFlowsPerPort,
      budget: deps.udpBudget,
      onClose: (f) => {
        deps.stats.udpFlowsActive--;
        closeQuietly(f.upstream.sock);
      },
      onEvicted: () => deps.stats.udpFlowsEvicted++,
      ...(deps.now ? { now: deps.now } : {}),
    });
    this.update(plan);
  }

  /** Live UDP flows. */
  get flowCount(): number {
    return this.#flows.size;
  }

  async listen(host: string, port: number): Promise<void> {
    this.#primary = host;
    const s = await this.#bind(host, port);
    this.port = s.address().port;
  }

  /**
   * Binds one more socket on each of `addresses` at the listener's port. A datagram redirected to
   * address A is received by the socket bound to A, and the reply sent through that socket
   * leaves from A, so conntrack recognises it as the reply of the redirected flow and restores
   * the service address as its source. Through the wildcard socket the kernel would pick the
   * source by route, and a local client (redirected to loopback) would get the reply from its
   * own address instead of the ClusterIP.
   */
  async bindAddresses(addresses: readonly string[]): Promise<void> {
    const want = new Set(addresses.filter((a) => a !== this.#primary));
    for (const [addr, s] of this.#sockets) {
      if (addr !== this.#primary && !want.has(addr)) {
        closeQuietly(s);
        this.#sockets.delete(addr);
      }
    }
    for (const addr of want) {
      if (this.#sockets.has(addr)) continue;
      try {
        await this.#bind(addr, this.port);
      } catch (err) {
        this.#deps.log.warn(
          { listener: this.key, address: addr, err: messageOf(err) },
          'cannot bind UDP socket',
        );
      }
    }
  }

  #bind(host: string, port: number): Promise<Sock> {
    const v6 = this.#deps.family === 6;
    const sock = dgram.createSocket({
      type: v6 ? 'udp6' : 'udp4',
      reuseAddr: true,
      ...(v6 ? { ipv6Only: true } : {}),
    });
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        closeQuietly(sock);
        reject(err);
      };
      sock.once('error', onError);
      sock.bind({ address: host, port, exclusive: true }, () => {
        sock.off('error', onError);
        sock.on('error', (err) =>
          this.#deps.log.warn({ listener: this.key, err: messageOf(err) }, 'UDP listener socket error'),
        );
        sock.on('message', (msg, rinfo) => {
          // A socket closed under us by a sync throws on send: lose the datagram, not the process.
          try {
            this.#onMessage(sock, msg, rinfo);
          } catch (err) {
            this.#deps.log.debug({ listener: this.key, err: messageOf(err) }, 'UDP datagram dropped');
          }
        });
        this.#sockets.set(host, sock);
        resolve(sock);
      });
    });
  }

  #onMessage(listener: Sock, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const { stats } = this.#deps;
    const client = targetKey({ ip: rinfo.address, port: rinfo.port });
    let flow = this.#flows.get(client);
    if (!flow) {
      const target = this.balancer.next(unmapped(rinfo.address));
      if (!target || !this.#flows.makeRoom()) {
        stats.udpDropped++;
        return;
      }
      flow = this.#openFlow(listener, client, rinfo, target);
    }
    stats.bytesFromClients += msg.length;
    const up = flow.upstream;
    if (up.pending) up.pending.push(msg);
    else up.sock.send(msg);
  }

  #openFlow(listener: Sock, client: string, rinfo: dgram.RemoteInfo, target: Target): Flow<Upstream> {
    const { stats } = this.#deps;
    const sock = dgram.createSocket(this.#deps.family === 4 ? 'udp4' : 'udp6');
    const up: Upstream = { sock, pending: [] };
    const flow = this.#flows.add(client, targetKey(target), up);
    stats.udpFlowsCreated++;
    stats.udpFlowsActive++;
    sock.on('message', (reply) => {
      this.#flows.touch(flow);
      stats.bytesToClients += reply.length;
      try {
        listener.send(reply, rinfo.port, rinfo.address);
      } catch {
        this.#flows.delete(flow);
      }
    });
    // An unreachable endpoint (ICMP error on the connected socket) ends the flow; the client's
    // next datagram chooses again.
    sock.on('error', () => this.#flows.delete(flow));
    // A connected socket receives only the endpoint's datagrams, and hears of its ICMP errors.
    sock.connect(target.port, target.ip, () => {
      const queued = up.pending ?? [];
      up.pending = null;
      for (const m of queued) sock.send(m);
    });
    return flow;
  }

  update(plan: ListenerPlan): void {
    this.balancer.setAffinityTimeout(plan.servicePort.affinityTimeoutSeconds);
    const removed = this.balancer.setTargets(plan.endpoints);
    if (removed.length > 0) this.#flows.closeTargets(removed);
  }

  sweep(): void {
    this.#flows.expire();
    this.balancer.sweep();
  }

  async close(): Promise<void> {
    this.#flows.clear();
    for (const s of this.#sockets.values()) closeQuietly(s);
    this.#sockets.clear();
  }
}

function closeQuietly(s: Sock): void {
  try {
    s.close();
  } catch {
    /* already closed */
  }
}

/** True for a UDP listener (it has per-address sockets to refresh). */
export function isUdpListener(
  l: Listener,
): l is Listener & { bindAddresses(a: readonly string[]): Promise<void> } {
  return l.protocol === 'UDP';
}

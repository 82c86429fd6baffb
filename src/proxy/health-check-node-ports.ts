/**
 * healthCheckNodePort servers: for each service with externalTrafficPolicy Local, an HTTP server
 * on its healthCheckNodePort tells load balancers whether this node has a local endpoint (200)
 * or not (503), so they send external traffic only to nodes that will not drop it. The body is
 * kube-proxy's: `{"service":{"namespace","name"},"localEndpoints":N}`.
 *
 * kube-proxy binds these on every address; weft binds them to the address it is given
 * (`--healthcheck-bind-address`, 127.0.0.1 by default), in line with weft's rule that listeners
 * stay on loopback unless the operator opens them.
 */
import { createServer, type Server } from 'node:http';
import { messageOf } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { selectEndpoints, type ServicePort } from './model/index.js';

/** What one health check port reports. */
export interface HealthCheckTarget {
  namespace: string;
  name: string;
  /** Usable endpoints of the service on this node (distinct addresses, all families). */
  localEndpoints: number;
}

/** The health check ports of a set of service ports: port → service and local endpoint count. */
export function healthCheckTargets(servicePorts: Iterable<ServicePort>): Map<number, HealthCheckTarget> {
  const addrs = new Map<number, { namespace: string; name: string; ips: Set<string> }>();
  for (const sp of servicePorts) {
    if (sp.healthCheckNodePort <= 0) continue;
    let entry = addrs.get(sp.healthCheckNodePort);
    if (!entry) {
      entry = { namespace: sp.namespace, name: sp.name, ips: new Set() };
      addrs.set(sp.healthCheckNodePort, entry);
    }
    // Two services claiming one port is a registry error; the first (by id order) keeps it.
    if (entry.namespace !== sp.namespace || entry.name !== sp.name) continue;
    for (const ep of selectEndpoints(sp).local) entry.ips.add(ep.ip);
  }
  const out = new Map<number, HealthCheckTarget>();
  for (const [port, e] of addrs)
    out.set(port, { namespace: e.namespace, name: e.name, localEndpoints: e.ips.size });
  return out;
}

/** Options of {@link HealthCheckNodePorts}. */
export interface HealthCheckNodePortsOptions {
  /** Address the servers bind. Default 127.0.0.1. */
  host?: string;
  log: Logger;
}

interface Listener {
  server: Server;
  target: HealthCheckTarget;
}

/** The running health check servers, reconciled with the service ports after each sync. */
export class HealthCheckNodePorts {
  readonly #host: string;
  readonly #log: Logger;
  readonly #listeners = new Map<number, Listener>();
  #serial: Promise<void> = Promise.resolve();

  constructor(opts: HealthCheckNodePortsOptions) {
    this.#host = opts.host ?? '127.0.0.1';
    this.#log = opts.log;
  }

  /** The ports served now. */
  get ports(): number[] {
    return [...this.#listeners.keys()].sort((a, b) => a - b);
  }

  /** Opens, updates and closes servers to match `servicePorts`. Never throws; failures are logged. */
  update(servicePorts: Iterable<ServicePort>): Promise<void> {
    const targets = healthCheckTargets(servicePorts);
    this.#serial = this.#serial.then(() => this.#reconcile(targets));
    return this.#serial;
  }

  /** Closes every server. */
  close(): Promise<void> {
    this.#serial = this.#serial.then(() => this.#reconcile(new Map()));
    return this.#serial;
  }

  async #reconcile(targets: Map<number, HealthCheckTarget>): Promise<void> {
    for (const [port, l] of [...this.#listeners]) {
      if (targets.has(port)) continue;
      this.#listeners.delete(port);
      await closeServer(l.server);
      this.#log.info({ port, service: `${l.target.namespace}/${l.target.name}` }, 'health check port closed');
    }
    for (const [port, target] of targets) {
      const l = this.#listeners.get(port);
      if (l) {
        l.target = target;
        continue;
      }
      const listener: Listener = { server: createServer(), target };
      listener.server.on('request', (req, res) => {
        const t = listener.target;
        const body = JSON.stringify({
          service: { namespace: t.namespace, name: t.name },
          localEndpoints: t.localEndpoints,
        });
        res.statusCode = t.localEndpoints > 0 ? 200 : 503;
        res.setHeader('Content-Type', 'application/json');
        res.setHeader('X-Content-Type-Options', 'nosniff');
        res.end(req.method === 'HEAD' ? undefined : body);
      });
      try {
        await listen(listener.server, port, this.#host);
        this.#listeners.set(port, listener);
        this.#log.info(
          { port, host: this.#host, service: `${target.namespace}/${target.name}` },
          'health check port open',
        );
      } catch (err) {
        // Retried on the next update (every sync): the port may be free by then.
        this.#log.warn(
          { port, host: this.#host, service: `${target.namespace}/${target.name}`, err: messageOf(err) },
          'cannot open health check port',
        );
      }
    }
  }
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

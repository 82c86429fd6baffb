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
import { Counter, metricName, type Registry } from '../metrics/index.js';
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
  /**
   * The daemon's own ports (healthz, metrics): a Service asking for one of them is refused and
   * named in the log instead of fighting the daemon for the port.
   */
  reservedPorts?: Iterable<number>;
  /** Where `weft_proxy_healthcheck_errors_total{reason}` goes. Default: none. */
  registry?: Registry;
}

/** Why a health check port is not served: refused for a Service, failed to bind, or failed later. */
export type HealthCheckErrorReason = 'reserved' | 'bind' | 'server';

interface Listener {
  server: Server;
  target: HealthCheckTarget;
}

/** The running health check servers, reconciled with the service ports after each sync. */
export class HealthCheckNodePorts {
  readonly #host: string;
  readonly #log: Logger;
  readonly #listeners = new Map<number, Listener>();
  readonly #reserved: Set<number>;
  readonly #errors: Counter<'reason'> | undefined;
  /** Refusals already logged (`port service`), so a refused Service is named once, not every sync. */
  #refused = new Set<string>();
  #serial: Promise<void> = Promise.resolve();

  constructor(opts: HealthCheckNodePortsOptions) {
    this.#host = opts.host ?? '127.0.0.1';
    this.#log = opts.log;
    this.#reserved = new Set([...(opts.reservedPorts ?? [])].filter((p) => p > 0));
    const registry = opts.registry;
    if (registry) {
      const name = 'weft_proxy_healthcheck_errors_total';
      this.#errors =
        (registry.getSingleMetric(name) as Counter<'reason'> | undefined) ??
        new Counter<'reason'>({
          name: metricName(name),
          help: 'healthCheckNodePort problems: refused (a daemon port), bind failures, server errors',
          labelNames: ['reason'],
          registers: [registry],
        });
      for (const reason of ['reserved', 'bind', 'server'] as const) this.#errors.inc({ reason }, 0);
    }
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
    const refused = new Set<string>();
    for (const [port, target] of [...targets]) {
      if (!this.#reserved.has(port)) continue;
      targets.delete(port);
      const service = `${target.namespace}/${target.name}`;
      const id = `${port} ${service}`;
      refused.add(id);
      if (this.#refused.has(id)) continue;
      this.#errors?.inc({ reason: 'reserved' });
      this.#log.warn(
        { port, service, field: 'spec.healthCheckNodePort' },
        `health check port ${port} of ${service} refused: it is one of weft-proxy's own ports`,
      );
    }
    this.#refused = refused;
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
        // Without a listener, an 'error' after bind (accept failing with EMFILE, say) is thrown
        // from the event loop and takes the whole proxy down.
        listener.server.on('error', (err) => {
          this.#errors?.inc({ reason: 'server' });
          this.#log.warn(
            { port, service: `${listener.target.namespace}/${listener.target.name}`, err: messageOf(err) },
            'health check server error',
          );
        });
        this.#listeners.set(port, listener);
        this.#log.info(
          { port, host: this.#host, service: `${target.namespace}/${target.name}` },
          'health check port open',
        );
      } catch (err) {
        // Retried on the next update (every sync): the port may be free by then.
        this.#errors?.inc({ reason: 'bind' });
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
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

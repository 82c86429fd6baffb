/**
 * The HTTP listener every weft daemon exposes: liveness, readiness and Prometheus metrics. It
 * binds to 127.0.0.1 unless told otherwise, because metrics describe the node's network and
 * nothing outside the node needs them by default.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, type Registry } from 'prom-client';
import { componentLogger, type Logger } from '../log/index.js';
import { metricName } from '../metrics/index.js';

/** A check's answer: ok, or not with a reason shown to the caller. */
export type CheckResult = { ok: true } | { ok: false; reason: string };

/** A named check; `/healthz`, `/livez` and `/readyz` run theirs on every request. */
export type Check = () => CheckResult;

/** Options for {@link startHealthServer}. */
export interface HealthServerOptions {
  /** Address to bind. Default `127.0.0.1`. */
  host?: string;
  /** Port; 0 picks a free one (see {@link HealthServer.port}). */
  port: number;
  /** Served at `/metrics` when given. */
  registry?: Registry;
  /** Path → check. Typical: `/healthz`, `/livez`, `/readyz`. A path without a check is 404. */
  checks: Record<string, Check>;
  /** Logs errors of the listener after it is bound. Default: the `health` component logger. */
  logger?: Logger;
}

/** A running health listener. */
export interface HealthServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the listener; resolves once it is bound. */
export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const host = opts.host ?? '127.0.0.1';
  const server: Server = createServer((req, res) => void handle(opts, req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  // An 'error' without a listener (accept failing with EMFILE, say) would be thrown from the
  // event loop: the daemon would die of its own health endpoint.
  const log = opts.logger ?? componentLogger('health');
  const errors = opts.registry && listenerErrors(opts.registry);
  server.on('error', (err) => {
    errors?.inc();
    log.warn({ host, port, err: err.message }, 'health listener error');
  });
  return {
    host,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function listenerErrors(registry: Registry): Counter {
  const name = 'weft_health_listener_errors_total';
  return (
    (registry.getSingleMetric(name) as Counter | undefined) ??
    new Counter({
      name: metricName(name),
      help: 'Errors of the health and metrics listener after it was bound (the listener keeps serving)',
      registers: [registry],
    })
  );
}

async function handle(opts: HealthServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'method not allowed\n');
  if (path === '/metrics' && opts.registry) {
    try {
      const body = await opts.registry.metrics();
      res.setHeader('Content-Type', opts.registry.contentType);
      return reply(res, 200, body);
    } catch (err) {
      return reply(res, 500, `metrics: ${(err as Error).message}\n`);
    }
  }
  const check = opts.checks[path];
  if (!check) return reply(res, 404, 'not found\n');
  let result: CheckResult;
  try {
    result = check();
  } catch (err) {
    result = { ok: false, reason: (err as Error).message };
  }
  return result.ok ? reply(res, 200, 'ok\n') : reply(res, 503, `${result.reason}\n`);
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  if (!res.hasHeader('Content-Type')) res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(body);
}

import { Server, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import t from 'tap';
import { silentLogger } from '../../../src/log/index.js';
import { Registry } from '../../../src/metrics/index.js';
import { HealthCheckNodePorts, healthCheckTargets } from '../../../src/proxy/health-check-node-ports.js';
import type { ServicePort } from '../../../src/proxy/model/index.js';
import { servicePortsOf } from '../../helpers/proxy-objects.js';

function get(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A Local-policy LoadBalancer service with a health check port and the given endpoints. */
function localService(hcPort: number, endpoints: { ip: string; nodeName: string }[]): ServicePort[] {
  const ports = servicePortsOf(
    [
      {
        name: 'lb',
        clusterIP: '10.96.0.40',
        type: 'LoadBalancer',
        ports: [
          { name: 'http', port: 80, nodePort: 30080 },
          { name: 'https', port: 443, nodePort: 30443 },
        ],
      },
    ],
    [
      {
        service: 'lb',
        endpoints,
        ports: [
          { name: 'http', port: 8080 },
          { name: 'https', port: 8443 },
        ],
      },
    ],
    { nodeName: 'node-1' },
  );
  return [...ports.values()].map((sp) => ({ ...sp, externalPolicyLocal: true, healthCheckNodePort: hcPort }));
}

t.test('targets count distinct local usable endpoints per service', async (t) => {
  const sps = localService(32000, [
    { ip: '10.244.1.2', nodeName: 'node-1' },
    { ip: '10.244.1.3', nodeName: 'node-1' },
    { ip: '10.244.2.2', nodeName: 'node-2' },
  ]);
  t.same([...healthCheckTargets(sps)], [[32000, { namespace: 'default', name: 'lb', localEndpoints: 2 }]]);
  t.same([...healthCheckTargets(sps.map((s) => ({ ...s, healthCheckNodePort: 0 })))], []);
});

t.test('a server per health check port: 200 with local endpoints, 503 without', async (t) => {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const hc = new HealthCheckNodePorts({ log: silentLogger() });
  t.teardown(() => hc.close());
  await hc.update(localService(port, [{ ip: '10.244.1.2', nodeName: 'node-1' }]));
  t.same(hc.ports, [port]);
  let res = await get(port);
  t.equal(res.status, 200);
  t.same(JSON.parse(res.body), { service: { namespace: 'default', name: 'lb' }, localEndpoints: 1 });

  await hc.update(localService(port, [{ ip: '10.244.2.2', nodeName: 'node-2' }]));
  res = await get(port);
  t.equal(res.status, 503, 'no local endpoint');
  t.same(JSON.parse(res.body), { service: { namespace: 'default', name: 'lb' }, localEndpoints: 0 });

  await hc.update([]);
  t.same(hc.ports, []);
  await t.rejects(get(port), 'closed when the service is gone');
});

/** The http.Server listening on `port` in this process (to inject what the kernel rarely does). */
function serverOn(port: number): Server | undefined {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return handles.find(
    (h): h is Server => h instanceof Server && (h.address() as AddressInfo | null)?.port === port,
  );
}

function recording(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { logger, lines };
}

async function metricValue(registry: Registry, name: string, labels: Record<string, string>) {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? [])
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((s, v) => s + v.value, 0);
}

t.test(
  "a health check port equal to the daemon's own port is refused for that Service, named once",
  async (t) => {
    const own = 20_000 + Math.floor(Math.random() * 20_000);
    const other = own + 1;
    const registry = new Registry();
    const rec = recording();
    const hc = new HealthCheckNodePorts({ log: rec.logger, reservedPorts: [own], registry });
    t.teardown(() => hc.close());
    const good = localService(other, [{ ip: '10.244.1.2', nodeName: 'node-1' }]);
    const bad = localService(own, [{ ip: '10.244.1.3', nodeName: 'node-1' }]).map((sp) => ({
      ...sp,
      name: 'grabber',
    }));
    await hc.update([...good, ...bad]);
    await hc.update([...good, ...bad]);
    t.same(hc.ports, [other], 'the other Service is served; the daemon port is not taken');
    t.equal(serverOn(own), undefined, 'nothing of ours listens on the daemon port');
    const refusals = rec.lines.filter((l) => String(l.msg).includes('refused'));
    t.equal(refusals.length, 1, 'logged once, not every sync');
    t.match(refusals[0], { port: own, service: 'default/grabber', field: 'spec.healthCheckNodePort' });
    t.equal(await metricValue(registry, 'weft_proxy_healthcheck_errors_total', { reason: 'reserved' }), 1);
  },
);

t.test('a server error after bind is logged and counted, not thrown; a busy port is counted', async (t) => {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const registry = new Registry();
  const rec = recording();
  const hc = new HealthCheckNodePorts({ log: rec.logger, registry });
  t.teardown(() => hc.close());
  await hc.update(localService(port, [{ ip: '10.244.1.2', nodeName: 'node-1' }]));
  const server = serverOn(port);
  t.ok(server, 'listening');
  // What accept(2) failing with EMFILE looks like to Node: an 'error' on the server.
  t.doesNotThrow(() => server?.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' })));
  t.equal(await metricValue(registry, 'weft_proxy_healthcheck_errors_total', { reason: 'server' }), 1);
  t.equal((await get(port)).status, 200, 'still serving');

  const busy = createServer();
  await new Promise<void>((r) => busy.listen(port + 1, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => busy.close(() => r())));
  await hc.update([
    ...localService(port, [{ ip: '10.244.1.2', nodeName: 'node-1' }]),
    ...localService(port + 1, []).map((sp) => ({ ...sp, name: 'other' })),
  ]);
  t.same(hc.ports, [port]);
  t.equal(await metricValue(registry, 'weft_proxy_healthcheck_errors_total', { reason: 'bind' }), 1);
});

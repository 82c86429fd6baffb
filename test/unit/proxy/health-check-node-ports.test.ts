import { request } from 'node:http';
import t from 'tap';
import { silentLogger } from '../../../src/log/index.js';
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

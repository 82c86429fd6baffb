import { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { Counter } from 'prom-client';
import { startHealthServer, type CheckResult } from '../../../src/health/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { createRegistry } from '../../../src/metrics/index.js';

t.test('checks answer 200 or 503 with the reason; metrics are served', async (t) => {
  const registry = createRegistry();
  new Counter({ name: 'weft_probe_total', help: 'probe', registers: [registry] }).inc(3);
  let ready: CheckResult = { ok: false, reason: 'subnet.env not written yet' };
  const srv = await startHealthServer({
    port: 0,
    registry,
    checks: { '/healthz': () => ({ ok: true }), '/readyz': () => ready },
  });
  t.teardown(() => srv.close());
  t.equal(srv.host, '127.0.0.1', 'binds loopback by default');
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${srv.port}${path}`);
    return { status: res.status, body: await res.text() };
  };
  t.same(await get('/healthz'), { status: 200, body: 'ok\n' });
  t.same(await get('/readyz'), { status: 503, body: 'subnet.env not written yet\n' });
  ready = { ok: true };
  t.same(await get('/readyz'), { status: 200, body: 'ok\n' });
  t.match((await get('/metrics')).body, /weft_probe_total 3/);
  t.equal((await get('/nope')).status, 404);
  const post = await fetch(`http://127.0.0.1:${srv.port}/healthz`, { method: 'POST' });
  t.equal(post.status, 405);
});

t.test('a throwing check is a 503, not a crash', async (t) => {
  const srv = await startHealthServer({
    port: 0,
    checks: {
      '/readyz': () => {
        throw new Error('boom');
      },
    },
  });
  t.teardown(() => srv.close());
  const res = await fetch(`http://127.0.0.1:${srv.port}/readyz`);
  t.equal(res.status, 503);
  t.equal(await res.text(), 'boom\n');
});

t.test('an error of the bound listener is logged and counted, and it keeps serving', async (t) => {
  const registry = createRegistry();
  const srv = await startHealthServer({
    port: 0,
    registry,
    checks: { '/healthz': () => ({ ok: true }) },
    logger: silentLogger(),
  });
  t.teardown(() => srv.close());
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  const server = handles.find(
    (h): h is Server => h instanceof Server && (h.address() as AddressInfo | null)?.port === srv.port,
  );
  t.ok(server, 'found the listener');
  // What accept(2) failing with EMFILE looks like to Node: an 'error' on the server.
  t.doesNotThrow(() => server?.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' })));
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === 'weft_health_listener_errors_total');
  t.equal(m?.values[0]?.value, 1);
  const res = await fetch(`http://127.0.0.1:${srv.port}/healthz`);
  t.equal(res.status, 200);
});

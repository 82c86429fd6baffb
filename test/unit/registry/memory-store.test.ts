/**
 * The store compliance suite against the in-memory store (no server: the restart and outage
 * cases are skipped), and what is particular to it.
 */
import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import { MemoryStore, openStore, type WatchEvent } from '../../../src/registry/index.js';
import { runStoreCompliance } from '../../integration/registry/compliance.js';

t.setTimeout(60_000);
setRootLogger(silentLogger());

// Clients of one store share its data, as clients of one server do.
const shared = new MemoryStore();
t.teardown(() => shared.close());

runStoreCompliance(t, {
  name: 'memory',
  open: async () => shared.client(),
  compact: async () => shared.compact(),
  ttlSeconds: 1,
});

t.test('a bounded history: a watch from before it starts with a resync', async (t) => {
  const s = new MemoryStore({ historyLimit: 3 });
  t.teardown(() => s.close());
  for (let i = 1; i <= 5; i++) await s.create(`/h/${i}`, String(i));
  const events: WatchEvent[] = [];
  const ac = new AbortController();
  const done = (async () => {
    for await (const ev of s.watch('/h/', { fromRevision: 1, signal: ac.signal })) {
      events.push(ev);
      if (events.length === 2) ac.abort();
    }
  })();
  await s.create('/h/6', '6');
  await done;
  t.match(events, [
    { type: 'resync', revision: 5 },
    { type: 'put', key: '/h/6', revision: 6 },
  ]);
});

t.test('closed stores and clients refuse requests', async (t) => {
  const s = new MemoryStore();
  const c = s.client();
  await c.close();
  await t.rejects(c.get('/x'), { code: ErrorCodes.CLOSED });
  t.ok((await s.create('/x', '1')).created, 'closing a client leaves the store open');
  await s.close();
  await t.rejects(s.get('/x'), { code: ErrorCodes.CLOSED });
});

t.test('openStore: backends by name and by URL', async (t) => {
  const m = await openStore('memory:');
  t.equal(m.kind, 'memory');
  await m.close();
  const n = await openStore({ registry: 'memory' });
  t.equal(n.kind, 'memory');
  await n.close();
  await t.rejects(openStore({ registry: 'nope' }), { code: ErrorCodes.INVALID_CONFIG });
  await t.rejects(openStore('ftp://x'), { code: ErrorCodes.INVALID_CONFIG });
});

t.test('metrics: requests by operation and result, resyncs, lost keys', async (t) => {
  const metrics = createRegistry();
  const s = new MemoryStore({ metrics, historyLimit: 1 });
  const again = new MemoryStore({ metrics });
  t.teardown(() => Promise.all([s.close(), again.close()]));
  await s.create('/m/a', '1');
  await s.create('/m/b', '1');
  await t.rejects(s.get('bad'));
  const ka = s.keepAlive('/m/none', { ttlSeconds: 1 });
  for await (const ev of ka.events()) if (ev.type === 'lost') break;
  for await (const ev of s.watch('/m/', { fromRevision: 1 })) if (ev.type === 'resync') break;
  const text = await metrics.metrics();
  t.match(text, /weft_registry_requests_total\{backend="memory",op="create",result="ok"\} 2/);
  t.match(text, /weft_registry_requests_total\{backend="memory",op="get",result="error"\} 1/);
  t.match(text, /weft_registry_watch_resyncs_total\{backend="memory"\} 1/);
  t.match(text, /weft_registry_keepalive_lost_total\{backend="memory"\} 1/);
});

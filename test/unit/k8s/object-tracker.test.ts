import t from 'tap';
import { Backoff } from '../../../src/backoff/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import { ObjectTracker, type ObjectChange } from '../../../src/k8s/index.js';
import { MemoryStore } from '../../../src/registry/index.js';
import { serviceObject, sliceObject } from '../../helpers/proxy-objects.js';
import { FlakyStore, put, recordingLogger } from './tracker-helpers.js';

const web = serviceObject({ name: 'web', clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] });
const webSlice = sliceObject({
  service: 'web',
  endpoints: [{ ip: '10.244.1.2' }],
  ports: [{ name: 'http', port: 8080 }],
});
const db = serviceObject({ name: 'db', clusterIP: '10.96.0.30', ports: [{ port: 5432 }] });
const badPort = (o: typeof db) => {
  const v = structuredClone(o.value) as { spec: { ports: { port: number }[] } };
  (v.spec.ports[0] as { port: number }).port = 70_000;
  return v;
};

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const setup = makeTracker;

function makeTracker(store: ConstructorParameters<typeof ObjectTracker>[0]['store']) {
  const { log, records } = recordingLogger('info');
  const metrics = createRegistry();
  const changes: ObjectChange[] = [];
  const tracker = new ObjectTracker({
    store,
    prefix: '/weft',
    log,
    metrics,
    onChange: (c) => changes.push(c),
    backoff: () => new Backoff({ initialMs: 5, maxMs: 20 }),
  });
  const names = () => [...tracker.services()].map((s) => s.name).sort();
  const gauge = async (kind: string) => {
    const m = await metrics.getSingleMetric('weft_proxy_invalid_objects')?.get();
    return m?.values.find((v) => v.labels.kind === kind)?.value;
  };
  return { tracker, log, records, metrics, changes, names, gauge };
}

t.test('bad objects are skipped and reported with key and field; the rest is served', async (t) => {
  const store = new MemoryStore();
  await put(store, web.key, web.value);
  await put(store, webSlice.key, webSlice.value);
  await put(store, db.key, badPort(db));
  const badSliceKey = '/weft/endpointslices/default/db-0';
  await put(store, badSliceKey, {
    addressType: 'IPv4',
    metadata: { name: 'db-0', labels: { 'kubernetes.io/service-name': 'db' } },
    endpoints: [{ addresses: ['10.244.999.1'] }],
  });
  const s = setup(store);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  t.same(s.names(), ['web']);
  t.same(
    [...s.tracker.slices()].map((x) => x.name),
    ['web-0'],
  );
  t.match(s.tracker.invalidObjects(), [
    { kind: 'EndpointSlice', key: badSliceKey, field: 'endpoints[0].addresses[0]' },
    { kind: 'Service', key: db.key, field: 'spec.ports[0].port' },
  ]);
  const warned = s.records.filter((r) => r.level === 40);
  t.match(warned, [
    { key: db.key, field: 'spec.ports[0].port', kind: 'Service' },
    { key: badSliceKey, field: 'endpoints[0].addresses[0]' },
  ]);
  t.match(String(warned[0]?.err), /Service \/weft\/services\/default\/db: field spec\.ports\[0\]\.port/);
  t.equal(await s.gauge('Service'), 1);
  t.equal(await s.gauge('EndpointSlice'), 1);
});

t.test('a fixed object is served; a broken one drops its previous good version', async (t) => {
  const store = new MemoryStore();
  await put(store, web.key, web.value);
  await put(store, db.key, badPort(db));
  const s = setup(store);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  t.same(s.names(), ['web']);
  const before = s.changes.length;

  await put(store, db.key, db.value);
  await until(() => s.names().includes('db'), 'db served');
  t.equal(await s.gauge('Service'), 0);
  t.same(s.tracker.invalidObjects(), []);
  t.ok(s.changes.length > before, 'the fix is a change');
  t.ok(s.records.some((r) => r.msg === 'Service is valid again' && r.key === db.key));

  await put(store, web.key, badPort(web));
  await until(() => !s.names().includes('web'), 'web dropped');
  t.same(s.names(), ['db'], 'the other service is still served');
  t.equal(await s.gauge('Service'), 1);

  await store.delete(web.key);
  await until(() => s.tracker.invalidObjects().length === 0, 'deleted bad object forgotten');
  t.equal(await s.gauge('Service'), 0);
});

t.test('changes carry the time they were seen and a rewrite of the same content is no change', async (t) => {
  const store = new MemoryStore();
  const s = setup(store);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  t.match(s.changes, [
    { kind: 'Service', count: 0 },
    { kind: 'EndpointSlice', count: 0 },
  ]);
  const t0 = Date.now();
  await put(store, web.key, web.value);
  await until(() => s.changes.length === 3, 'change');
  t.ok((s.changes[2]?.seenAt ?? 0) >= t0);
  await put(store, web.key, web.value);
  await put(store, webSlice.key, webSlice.value);
  await until(() => s.changes.length === 4, 'slice change');
  t.match(s.changes[3], { kind: 'EndpointSlice', count: 1 });
  t.equal(s.changes.length, 4, 'the identical rewrite was not reported');
});

t.test('keys of other shapes are ignored', async (t) => {
  const store = new MemoryStore();
  await put(store, '/weft/services/default', '{}');
  await put(store, '/weft/services/a/b/c', '{}');
  await put(store, web.key, web.value);
  const s = setup(store);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  t.same(s.names(), ['web']);
  t.same(s.tracker.invalidObjects(), []);
});

t.test('an outage is survived; a watch that lost history re-lists', async (t) => {
  const mem = new MemoryStore({ historyLimit: 2 });
  const flaky = new FlakyStore(mem);
  flaky.setDown(true);
  const s = setup(flaky.store);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await until(() => s.records.some((r) => r.msg === 'registry unavailable; retrying'), 'outage logged');
  t.notOk(s.tracker.isSynced);
  await put(mem, web.key, web.value);
  flaky.setDown(false);
  await s.tracker.synced;
  t.same(s.names(), ['web']);

  flaky.setDown(true);
  await put(mem, db.key, db.value);
  await mem.delete(web.key);
  for (let i = 0; i < 5; i++)
    await put(
      mem,
      `/weft/services/default/s${i}`,
      serviceObject({ name: `s${i}`, clusterIP: `10.96.1.${i}`, ports: [{ port: 80 }] }).value,
    );
  mem.compact();
  flaky.setDown(false);
  await until(() => s.names().length === 6, 're-listed');
  t.same(s.names(), ['db', 's0', 's1', 's2', 's3', 's4'], 'the deletion during the outage is seen too');
  t.ok(s.records.some((r) => r.msg === 'registry watch lost history; re-listing'));
});

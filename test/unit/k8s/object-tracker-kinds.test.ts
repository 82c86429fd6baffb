/**
 * The tracker beyond weft-proxy's kinds: pods, attachments and nodes followed when asked, bad
 * ones skipped and counted under their kind, onObject told previous and current before onChange,
 * modRevision for compare-and-swap, get(key), and relist() seeing every write made before it.
 */
import t from 'tap';
import { Backoff } from '../../../src/backoff/index.js';
import {
  ObjectTracker,
  nodeKey,
  podAttachmentKey,
  podKey,
  type ObjectEvent,
  type ObjectKind,
} from '../../../src/k8s/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import { MemoryStore, type Store } from '../../../src/registry/index.js';
import { serviceObject } from '../../helpers/proxy-objects.js';
import { put, recordingLogger } from './tracker-helpers.js';

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const pod = (name: string, labels: Record<string, string>) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'default', labels },
  spec: { containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
});

function make(store: Store, kinds?: readonly ObjectKind[]) {
  const { log, records } = recordingLogger('info');
  const metrics = createRegistry();
  const log2: string[] = [];
  const events: ObjectEvent[] = [];
  const tracker = new ObjectTracker({
    store,
    prefix: '/weft',
    log,
    metrics,
    ...(kinds ? { kinds } : {}),
    invalidMetricName: 'weft_controller_invalid_objects',
    onObject: (ev) => {
      events.push(ev);
      log2.push(`object ${ev.key}`);
    },
    onChange: (c) => log2.push(`change ${c.kind} ${c.count}`),
    backoff: () => new Backoff({ initialMs: 5, maxMs: 20 }),
  });
  const gauge = async (kind: string) => {
    const m = await metrics.getSingleMetric('weft_controller_invalid_objects')?.get();
    return m?.values.find((v) => v.labels.kind === kind)?.value;
  };
  return { tracker, records, events, order: log2, gauge };
}

t.test('pods, attachments and nodes are followed; bad ones skipped, logged and counted', async (t) => {
  const store = new MemoryStore();
  await put(store, podKey('/weft', 'default', 'a'), pod('a', { app: 'web' }));
  await put(store, podKey('/weft', 'default', 'bad'), '{"metadata": ');
  const labels: Record<string, string> = {};
  for (let i = 0; i < 10_000; i++) labels[`l${i}`] = 'v';
  await put(store, podKey('/weft', 'default', 'many'), pod('many', labels));
  await put(store, podKey('/weft', 'default', 'evil'), pod('evil', { app: 'x\u001b[2J' }));
  await put(store, podAttachmentKey('/weft', 'default', 'a'), {
    apiVersion: 'weft.dev/v1',
    kind: 'PodAttachment',
    metadata: { namespace: 'default', name: 'a' },
    node: 'n1',
    containerId: 'c1',
    ips: ['10.244.1.5'],
  });
  await put(store, nodeKey('/weft', 'n1'), {
    metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'z' } },
  });
  const s = make(store, ['Service', 'EndpointSlice', 'Pod', 'PodAttachment', 'Node']);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  t.same(
    [...s.tracker.pods()].map((p) => p.name),
    ['a'],
  );
  t.same(
    [...s.tracker.podAttachments()].map((p) => p.ips),
    [['10.244.1.5']],
  );
  t.same(
    [...s.tracker.nodes()].map((n) => n.labels),
    [{ 'topology.kubernetes.io/zone': 'z' }],
  );
  t.match(s.tracker.invalidObjects(), [
    { kind: 'Pod', key: '/weft/pods/default/bad', field: '' },
    { kind: 'Pod', key: '/weft/pods/default/evil', field: 'metadata.labels.app' },
    { kind: 'Pod', key: '/weft/pods/default/many', field: 'metadata.labels' },
  ]);
  const warned = s.records.filter((r) => r.level === 40);
  t.equal(warned.length, 3);
  t.ok(warned.every((r) => r.msg === 'invalid Pod skipped'));
  t.match(
    String(warned.find((r) => r.key === '/weft/pods/default/many')?.err),
    /10000 entries, more than weft's limit of 1000/,
  );
  t.ok(
    warned.every((r) => !String(r.err).includes('\u001b')),
    'no escape character reaches the log',
  );
  t.equal(await s.gauge('Pod'), 3);
  t.equal(await s.gauge('Node'), 0);
  t.equal(s.tracker.get(podKey('/weft', 'default', 'a'))?.name, 'a');
  t.equal(s.tracker.get(podKey('/weft', 'default', 'bad')), undefined);
  t.equal(s.tracker.get('/elsewhere/x'), undefined);
});

t.test('default kinds are weft-proxy’s: pods are not listed', async (t) => {
  const store = new MemoryStore();
  await put(store, podKey('/weft', 'default', 'a'), pod('a', { app: 'web' }));
  const s = make(store);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  t.same([...s.tracker.pods()], []);
  t.equal(s.tracker.get(podKey('/weft', 'default', 'a')), undefined);
});

t.test('onObject: previous and current, before onChange; modRevision follows the store', async (t) => {
  const store = new MemoryStore();
  const s = make(store, ['Pod']);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  const key = podKey('/weft', 'default', 'a');
  await put(store, key, pod('a', { app: 'web' }));
  await until(() => s.events.length === 1, 'create');
  const created = (await store.get(key))?.modRevision;
  t.match(s.events[0], {
    kind: 'Pod',
    key,
    previous: undefined,
    current: { labels: { app: 'web' } },
    modRevision: created,
  });
  t.equal(s.tracker.modRevision(key), created);
  t.same(s.order.slice(-2), [`object ${key}`, 'change Pod 1'], 'onObject before onChange');

  await put(store, key, pod('a', { app: 'db' }));
  await until(() => s.events.length === 2, 'update');
  t.match(s.events[1], { previous: { labels: { app: 'web' } }, current: { labels: { app: 'db' } } });
  t.equal(s.tracker.modRevision(key), (await store.get(key))?.modRevision);

  // The same content rewritten: no event, but a new modRevision (a CAS must use it).
  await put(store, key, pod('a', { app: 'db' }));
  const rewritten = (await store.get(key))?.modRevision;
  await until(() => s.tracker.modRevision(key) === rewritten, 'revision seen');
  t.equal(s.events.length, 2);

  await put(store, key, '{"broken');
  await until(() => s.events.length === 3, 'invalid');
  t.match(s.events[2], { previous: { labels: { app: 'db' } }, current: undefined });
  t.equal(
    s.tracker.modRevision(key),
    (await store.get(key))?.modRevision,
    'an invalid value has a revision too',
  );

  await put(store, key, pod('a', { app: 'web' }));
  await until(() => s.events.length === 4, 'valid again');
  await store.delete(key);
  await until(() => s.events.length === 5, 'delete');
  t.match(s.events[4], { previous: { labels: { app: 'web' } }, current: undefined, modRevision: undefined });
  t.equal(s.tracker.modRevision(key), undefined);
});

/** A store whose watch delivers nothing: only a listing can show a write. */
function deafStore(inner: MemoryStore): Store {
  return {
    kind: 'deaf',
    get: (k) => inner.get(k),
    timeToLive: (k) => inner.timeToLive(k),
    create: (...a) => inner.create(...a),
    update: (...a) => inner.update(...a),
    delete: (...a) => inner.delete(...a),
    keepAlive: (...a) => inner.keepAlive(...a),
    close: () => Promise.resolve(),
    list: (p) => inner.list(p),
    watch: async function* (_prefix, opts) {
      await new Promise<void>((resolve) => {
        if (opts.signal?.aborted) resolve();
        opts.signal?.addEventListener('abort', () => resolve(), { once: true });
      });
      yield* [];
    },
  };
}

t.test('relist() sees every write made before it, even when the watch missed them', async (t) => {
  const mem = new MemoryStore();
  const s = make(deafStore(mem), ['Service', 'Pod']);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  await put(mem, podKey('/weft', 'default', 'a'), pod('a', { app: 'web' }));
  const web = serviceObject({ name: 'web', clusterIP: '10.96.0.20', ports: [{ port: 80 }] });
  await put(mem, web.key, web.value);
  await new Promise((r) => setTimeout(r, 50));
  t.same([...s.tracker.pods()], [], 'the deaf watch did not deliver');
  await s.tracker.relist();
  t.same(
    [...s.tracker.pods()].map((p) => p.name),
    ['a'],
  );
  t.same(
    [...s.tracker.services()].map((x) => x.name),
    ['web'],
  );
  await mem.delete(web.key);
  await s.tracker.relist();
  t.same([...s.tracker.services()], [], 'a deletion too');
  t.match(s.events.at(-1), { kind: 'Service', current: undefined });
  // Concurrent calls all resolve.
  await Promise.all([s.tracker.relist(), s.tracker.relist(), s.tracker.relist()]);
  await s.tracker.stop();
  await s.tracker.relist();
  t.pass('relist after stop resolves');
});

t.test('relist() on a live watch re-lists and the watch carries on', async (t) => {
  const mem = new MemoryStore();
  const s = make(mem, ['Pod']);
  t.teardown(() => s.tracker.stop());
  s.tracker.start();
  await s.tracker.synced;
  await s.tracker.relist();
  await put(mem, podKey('/weft', 'default', 'b'), pod('b', { app: 'web' }));
  await until(() => [...s.tracker.pods()].length === 1, 'watched after the re-list');
  t.same(s.events.length, 1, 'the re-list of an unchanged registry told nothing');
});

t.test('a throwing onObject is logged; the object is still served and the watch goes on', async (t) => {
  const mem = new MemoryStore();
  const { log, records } = recordingLogger('info');
  const tracker = new ObjectTracker({
    store: mem,
    prefix: '/weft',
    log,
    kinds: ['Pod'],
    onObject: () => {
      throw new Error('consumer bug');
    },
    onChange: () => undefined,
    backoff: () => new Backoff({ initialMs: 5, maxMs: 20 }),
  });
  t.teardown(() => tracker.stop());
  tracker.start();
  await tracker.synced;
  await put(mem, podKey('/weft', 'default', 'a'), pod('a', { app: 'web' }));
  await put(mem, podKey('/weft', 'default', 'b'), pod('b', { app: 'web' }));
  await until(() => [...tracker.pods()].length === 2, 'both served');
  t.same(tracker.invalidObjects(), []);
  t.equal(records.filter((r) => r.msg === 'onObject failed; the tracker carries on').length, 2);
  t.notOk(records.some((r) => r.msg === 'registry unavailable; retrying'));
});

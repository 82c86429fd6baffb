import t from 'tap';
import { MemoryStore } from '../../../src/registry/index.js';
import { silentLogger } from '../../../src/log/index.js';
import {
  StatusPublisher,
  healthUrl,
  parseDaemonStatus,
  statusKey,
  statusPrefix,
  type StatusSnapshot,
} from '../../../src/node-status/index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(fn: () => Promise<T | undefined>, what: string, ms = 3_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

t.test('keys and URLs', async (t) => {
  t.equal(statusPrefix('/weft'), '/weft/status/');
  t.equal(statusPrefix('/weft/'), '/weft/status/');
  t.equal(statusKey('/weft/status', 'n1', 'weft-proxy'), '/weft/status/n1/weft-proxy');
  t.equal(statusKey('/weft/status/', 'n1', 'weft-flanneld'), '/weft/status/n1/weft-flanneld');
  t.equal(healthUrl('0.0.0.0', 10256), 'http://127.0.0.1:10256');
  t.equal(healthUrl('10.0.0.1', 1), 'http://10.0.0.1:1');
  t.equal(healthUrl('::', 2), 'http://[::1]:2');
});

t.test('parseDaemonStatus names the key and the field', async (t) => {
  const good = {
    node: 'n1',
    daemon: 'weft-proxy',
    version: '0.1.0',
    pid: 12,
    startedAt: '2026-11-29T06:00:00.000Z',
    updatedAt: '2026-11-29T06:00:01.000Z',
    ready: true,
    detail: { mode: 'nftables' },
  };
  t.same(parseDaemonStatus('/k', JSON.stringify(good)).detail, { mode: 'nftables' });
  t.throws(() => parseDaemonStatus('/weft/status/n1/x', '{'), /status \/weft\/status\/n1\/x: not JSON/);
  t.throws(() => parseDaemonStatus('/k', JSON.stringify({ ...good, pid: -1 })), /status \/k: field pid: /);
  t.throws(() => parseDaemonStatus('/k', JSON.stringify({ ...good, daemon: 'kube-proxy' })), /field daemon/);
  t.throws(
    () => parseDaemonStatus('/k', JSON.stringify({ ...good, lastSync: 'yesterday' })),
    /field lastSync: must be an ISO 8601 time/,
  );
});

t.test('writes at start, on a readiness change, and deletes on stop', async (t) => {
  const mem = new MemoryStore({ logger: silentLogger() });
  const store = mem.client();
  t.teardown(() => store.close());
  let snap: StatusSnapshot = { ready: false, reason: 'starting' };
  const p = new StatusPublisher({
    store,
    prefix: '/weft/status/',
    node: 'n1',
    daemon: 'weft-flanneld',
    version: '9.9.9',
    health: 'http://127.0.0.1:10999',
    snapshot: () => snap,
    logger: silentLogger(),
    checkMs: 20,
    refreshMs: 60_000,
    ttlSeconds: 30,
  });
  p.start();
  const key = '/weft/status/n1/weft-flanneld';
  const first = await until(async () => store.get(key), 'the first record');
  const r1 = parseDaemonStatus(key, first.value);
  t.equal(r1.ready, false);
  t.equal(r1.reason, 'starting');
  t.equal(r1.pid, process.pid);
  t.equal(r1.version, '9.9.9');
  t.equal(r1.health, 'http://127.0.0.1:10999');
  t.equal(first.ttlBound, true, 'bound to a TTL');
  const ttl = await store.timeToLive(key);
  t.ok(ttl !== undefined && ttl <= 30 && ttl > 25, `TTL about 30 s (${ttl})`);

  const synced = Date.parse('2026-11-29T06:10:00.000Z');
  snap = { ready: true, lastSyncMs: synced, detail: { subnet: '10.244.1.0/24' } };
  const second = await until(async () => {
    const kv = await store.get(key);
    return kv && kv.modRevision > first.modRevision ? kv : undefined;
  }, 'the record after the change');
  const r2 = parseDaemonStatus(key, second.value);
  t.equal(r2.ready, true);
  t.equal(r2.reason, undefined, 'no reason when ready');
  t.equal(r2.lastSync, '2026-11-29T06:10:00.000Z');
  t.same(r2.detail, { subnet: '10.244.1.0/24' });
  t.equal(r2.startedAt, r1.startedAt, 'start time kept');

  await sleep(100);
  t.equal((await store.get(key))?.modRevision, second.modRevision, 'no rewrite without a change');
  await p.stop();
  t.equal(await store.get(key), undefined, 'deleted on stop');
});

t.test('a store that fails does not stop the publisher; it writes once the store answers', async (t) => {
  const mem = new MemoryStore({ logger: silentLogger() });
  const inner = mem.client();
  t.teardown(() => inner.close());
  let failing = true;
  const store: typeof inner = {
    kind: inner.kind,
    get: (k) => (failing ? Promise.reject(new Error('down')) : inner.get(k)),
    timeToLive: (k) => inner.timeToLive(k),
    list: (p) => inner.list(p),
    create: (...a) => inner.create(...a),
    update: (...a) => inner.update(...a),
    delete: (...a) => inner.delete(...a),
    keepAlive: (...a) => inner.keepAlive(...a),
    watch: (...a) => inner.watch(...a),
    close: () => inner.close(),
  };
  const p = new StatusPublisher({
    store,
    prefix: '/s/',
    node: 'n2',
    daemon: 'weft-proxy',
    version: '1',
    snapshot: () => ({ ready: true }),
    logger: silentLogger(),
    checkMs: 20,
  });
  p.start();
  await sleep(100);
  t.equal(await inner.get('/s/n2/weft-proxy'), undefined, 'nothing written while the store fails');
  failing = false;
  await until(async () => inner.get('/s/n2/weft-proxy'), 'the record once the store answers');
  await p.stop();
});

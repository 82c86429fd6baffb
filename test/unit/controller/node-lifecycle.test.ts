/**
 * The node lifecycle: the pure presence state with a hand-driven clock, and the follower against
 * a MemoryStore with a short grace period: a record deleted turns its node not ready only after
 * the grace, a node never seen turns not ready once the grace from the start ran out, a record
 * that reappears restores its node at once, and bad or foreign records are no heartbeat.
 */
import t from 'tap';
import { Backoff } from '../../../src/backoff/index.js';
import { NodeLifecycle, NodePresence, heartbeatNode } from '../../../src/controller/node-lifecycle.js';
import { MemoryStore } from '../../../src/registry/index.js';
import { recordingLogger } from '../k8s/tracker-helpers.js';

const record = (node: string) =>
  JSON.stringify({
    node,
    daemon: 'weft-flanneld',
    version: '0.1.0',
    pid: 10,
    startedAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    ready: true,
    detail: {},
  });

async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

t.test('heartbeat keys', async (t) => {
  t.equal(heartbeatNode('/weft/status', '/weft/status/n1/weft-flanneld'), 'n1');
  t.equal(heartbeatNode('/weft/status/', '/weft/status/n1/weft-flanneld'), 'n1');
  t.equal(heartbeatNode('/weft/status', '/weft/status/n1/weft-proxy'), undefined, 'another daemon');
  t.equal(heartbeatNode('/weft/status', '/weft/status/a/b/weft-flanneld'), undefined, 'another shape');
  t.equal(heartbeatNode('/weft/status', '/weft/status//weft-flanneld'), undefined, 'no node');
  t.equal(heartbeatNode('/weft/status', '/other/n1/weft-flanneld'), undefined, 'another prefix');
});

t.test('presence: graces counted from the delete, or from the start for nodes never seen', async (t) => {
  const p = new NodePresence({ startedAt: 1_000, graceMs: 100 });
  t.ok(p.ready('n1', 5_000), 'not judged before the first listing');
  t.same(p.replaceAll(['n1', 'n2'], 1_010), [], 'first listing changes nobody');
  t.equal(p.nextDeadline(), 1_100, 'the start grace runs');
  t.ok(p.ready('n3', 1_099), 'never seen: ready within the grace from the start');
  t.notOk(p.ready('n3', 1_100), 'never seen: not ready past it');
  t.same(p.expire(1_100), { nodes: [], unseen: true }, 'the start grace ends once');
  t.same(p.expire(1_200), { nodes: [], unseen: false });
  p.gone('n1', 2_000);
  t.ok(p.ready('n1', 2_099), 'gone: ready within its grace');
  t.equal(p.nextDeadline(), 2_100);
  t.same(p.seen('n1', 2_050), { changed: false, capped: false }, 'back within the grace: no change');
  p.gone('n1', 3_000);
  t.same(p.expire(3_099), { nodes: [], unseen: false });
  t.same(p.expire(3_100), { nodes: ['n1'], unseen: false }, 'grace over');
  t.notOk(p.ready('n1', 3_100));
  t.ok(p.isUnknown('n1'), 'forgotten once past its grace');
  t.same(p.seen('n1', 3_500), { changed: true, capped: false }, 'back: ready again, a change');
  t.ok(p.ready('n1', 3_500));
  // A re-list that misses a node starts its grace; one that finds a node back reports it.
  t.same(p.replaceAll(['n1'], 4_000), []);
  t.ok(p.ready('n2', 4_050), 'n2 within its grace');
  t.same(p.expire(4_100).nodes, ['n2']);
  t.same(p.replaceAll(['n1', 'n2'], 4_200), ['n2']);
});

t.test('presence: capped', async (t) => {
  const p = new NodePresence({ startedAt: 0, graceMs: 100, maxNodes: 2 });
  p.replaceAll(['a', 'b', 'c'], 0);
  t.equal(p.presentCount, 2, 'the third is not followed');
  t.same(p.seen('d', 1), { changed: false, capped: true });
  p.gone('a', 2);
  t.same(p.seen('d', 3), { changed: false, capped: true }, 'an absent node within its grace still counts');
  p.expire(200);
  t.same(p.seen('d', 201).capped, false, 'room once its grace is over');
});

t.test('lifecycle: records in the registry decide, after the grace', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  await store.create('/weft/status/n1/weft-flanneld', record('n1'));
  await store.create('/weft/status/n2/weft-flanneld', record('n2'));
  await store.create('/weft/status/n9/weft-flanneld', '{"not": "a record"}');
  await store.create('/weft/status/n1/weft-proxy', 'whatever');
  const { log, records } = recordingLogger('info');
  const changes: (string | undefined)[] = [];
  const lc = new NodeLifecycle({
    store,
    statusPrefix: '/weft/status',
    gracePeriodMs: 300,
    log,
    onChange: (n) => changes.push(n),
    backoff: () => new Backoff({ initialMs: 5, maxMs: 20 }),
  });
  t.teardown(() => lc.stop());
  const started = performance.now();
  lc.start();
  await until(() => lc.synced, 'the listing');
  t.ok(lc.nodeReady('n1') && lc.nodeReady('n2'), 'present nodes ready');
  t.ok(lc.nodeReady('n3') && lc.nodeReady('n9'), 'never seen (or unreadable): ready within the grace');
  t.ok(
    records.some((r) => r.key === '/weft/status/n9/weft-flanneld' && /unreadable/.test(String(r.msg))),
    'the unreadable record is logged with its key',
  );

  await store.delete('/weft/status/n2/weft-flanneld');
  await until(() => records.some((r) => r.node === 'n2' && /gone/.test(String(r.msg))), 'the delete seen');
  const goneAt = performance.now();
  t.ok(lc.nodeReady('n2'), 'within its grace');
  await until(() => changes.includes(undefined), 'the start grace to end', 2_000);
  t.ok(performance.now() - started >= 300, 'not before the grace');
  t.notOk(lc.nodeReady('n3'), 'never seen: not ready');
  t.notOk(lc.nodeReady('n9'), 'unreadable record: no heartbeat');
  t.ok(lc.isUnknown('n3'));
  await until(() => changes.includes('n2'), 'n2 to turn not ready', 2_000);
  t.ok(performance.now() - goneAt >= 290, 'n2: after its grace');
  t.notOk(lc.nodeReady('n2'));
  t.ok(lc.nodeReady('n1'), 'n1 untouched');

  changes.length = 0;
  await store.create('/weft/status/n2/weft-flanneld', record('n2'));
  await until(() => changes.includes('n2'), 'n2 back');
  t.ok(lc.nodeReady('n2'), 'ready again at once');
  t.same(changes, ['n2'], 'one change');

  // A record that turns unreadable is a heartbeat gone.
  await store.update('/weft/status/n1/weft-flanneld', 'garbage', {
    modRevision: (await store.get('/weft/status/n1/weft-flanneld'))!.modRevision,
  });
  await until(() => changes.includes('n1'), 'n1 not ready after its grace', 2_000);
  t.notOk(lc.nodeReady('n1'));
});

/**
 * Graceful pod deletion and label changes on the in-process store: kubectl's grace-period rules,
 * a deadline only ever shortened, a pod created again during the grace period left alone, label
 * arguments held to the label rules, --overwrite, and validation before the write.
 */
import t from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import { MemoryStore } from '../../../src/registry/index.js';
import {
  DEFAULT_GRACE_SECONDS,
  finishPodDeletion,
  gracePeriod,
  labelObject,
  parseLabelArgs,
  requestPodDeletion,
} from '../../../src/weftctl/pod-store.js';

const KEY = '/weft/pods/default/web';
const pod = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', labels: { app: 'web' }, ...extra },
  });

t.test('gracePeriod follows kubectl', async (t) => {
  t.equal(gracePeriod(-1, false, {}), DEFAULT_GRACE_SECONDS);
  t.equal(gracePeriod(-1, false, { spec: { terminationGracePeriodSeconds: 7 } }), 7);
  t.equal(gracePeriod(-1, false, { spec: { terminationGracePeriodSeconds: 0 } }), 1);
  t.equal(gracePeriod(0, false, {}), 1, '0 without --force is the shortest graceful deletion');
  t.equal(gracePeriod(5, false, {}), 5);
  t.equal(gracePeriod(-1, true, {}), 0);
});

t.test('a deletion marks the pod, keeps the earlier deadline, then removes the key', async (t) => {
  const store = new MemoryStore();
  await store.create(KEY, pod());
  let now = 1_000_000;
  const d = await requestPodDeletion(store, '/weft', 'default', 'web', {
    gracePeriodSeconds: 30,
    force: false,
    now: () => now,
  });
  t.match(d, { graceSeconds: 30, deadline: 1_030_000 });
  const meta = (JSON.parse((await store.get(KEY))?.value ?? '{}') as { metadata: Record<string, unknown> })
    .metadata;
  t.equal(meta.deletionGracePeriodSeconds, 30);
  t.equal(meta.deletionTimestamp, new Date(1_030_000).toISOString().replace(/\.\d+Z$/, 'Z'));
  now += 10_000;
  const longer = await requestPodDeletion(store, '/weft', 'default', 'web', {
    gracePeriodSeconds: 60,
    force: false,
    now: () => now,
  });
  t.match(longer, { deadline: 1_030_000, graceSeconds: 20 }, 'a grace period is never lengthened');
  const shorter = await requestPodDeletion(store, '/weft', 'default', 'web', {
    gracePeriodSeconds: 1,
    force: false,
    now: () => now,
  });
  t.match(shorter, { deadline: 1_011_000, graceSeconds: 1 }, 'but shortened');
  t.equal(await finishPodDeletion(store, shorter, { now: () => 2_000_000 }), true);
  t.equal(await store.get(KEY), undefined);
  t.equal(await finishPodDeletion(store, shorter, { now: () => 2_000_000 }), false, 'already gone');
});

t.test('a pod created again during the grace period is left alone; force deletes at once', async (t) => {
  const store = new MemoryStore();
  await store.create(KEY, pod());
  const d = await requestPodDeletion(store, '/weft', 'default', 'web', {
    gracePeriodSeconds: 30,
    force: false,
  });
  await store.delete(KEY);
  await store.create(KEY, pod());
  t.equal(await finishPodDeletion(store, { ...d, deadline: 0 }), false);
  t.ok(await store.get(KEY), 'the new pod stays');
  const f = await requestPodDeletion(store, '/weft', 'default', 'web', {
    gracePeriodSeconds: -1,
    force: true,
  });
  t.equal(f.graceSeconds, 0);
  t.equal(await store.get(KEY), undefined);
  await t.rejects(
    requestPodDeletion(store, '/weft', 'default', 'web', { gracePeriodSeconds: -1, force: false }),
    { code: ErrorCodes.NOT_FOUND },
  );
  await store.create(KEY, '{not json');
  t.equal(
    (await requestPodDeletion(store, '/weft', 'default', 'web', { gracePeriodSeconds: 30, force: false }))
      .graceSeconds,
    0,
    'a value that cannot carry a mark is removed at once',
  );
});

t.test('label arguments and changes', async (t) => {
  t.same(parseLabelArgs(['a=b', 'example.com/c=', 'd-']), {
    set: { a: 'b', 'example.com/c': '' },
    remove: ['d'],
  });
  for (const bad of [['a'], ['a=b c'], ['-=x'], ['a=1', 'a=2'], ['a=1', 'a-'], ['x\u001b=1']]) {
    t.throws(() => parseLabelArgs(bad), { code: ErrorCodes.INVALID_ARGUMENT }, bad.join(' '));
  }
  const store = new MemoryStore();
  await store.create(KEY, pod());
  await t.rejects(
    labelObject(store, '/weft', 'Pod', 'default', 'web', { set: { app: 'db' }, remove: [] }, false),
    /'app' already has a value \("web"\), and --overwrite is false/,
  );
  t.match(
    await labelObject(store, '/weft', 'Pod', 'default', 'web', { set: { app: 'db' }, remove: ['x'] }, true),
    {
      changed: true,
      missing: ['x'],
    },
  );
  t.match(
    await labelObject(store, '/weft', 'Pod', 'default', 'web', { set: { app: 'db' }, remove: [] }, false),
    {
      changed: false,
    },
  );
  const many: Record<string, string> = {};
  for (let i = 0; i < 1001; i++) many[`l${i}`] = 'v';
  try {
    await labelObject(store, '/weft', 'Pod', 'default', 'web', { set: many, remove: [] }, false);
    t.fail('1001 labels accepted');
  } catch (err) {
    t.ok(isWeftError(err, ErrorCodes.INVALID_VALUE));
    t.match((err as Error).message, /field metadata\.labels: has 1002 entries/);
  }
  t.same(
    (JSON.parse((await store.get(KEY))?.value ?? '{}') as { metadata: { labels: unknown } }).metadata.labels,
    { app: 'db' },
    'nothing written by the refused change',
  );
});

/**
 * The endpointslice loop against a MemoryStore, with the real object tracker and fenced writes:
 * Services with a selector get slices that follow their pods (labels, attachments, readiness,
 * zones); Services without one and hand-written slices are never touched; a deleted Service loses
 * its slices; drift is repaired; a standby writes nothing and a fenced-off leader nothing either;
 * nodes past their grace turn their endpoints not ready and back; bad pods are skipped; slices
 * stay within the limit and one pod added rewrites one slice.
 */
import t, { type Test } from 'tap';
import { Backoff } from '../../../src/backoff/index.js';
import { CONTROLLER_KINDS, SliceController } from '../../../src/controller/controller.js';
import { NodeLifecycle } from '../../../src/controller/node-lifecycle.js';
import { ObjectTracker } from '../../../src/k8s/index.js';
import { createRegistry, type Registry } from '../../../src/metrics/index.js';
import {
  MemoryStore,
  type Store,
  type WatchEvent,
  type WatchOptions,
  type WriteGuard,
} from '../../../src/registry/index.js';
import {
  PREFIX,
  attachment,
  endpointsOf,
  flanneldStatus,
  nodeObject,
  pod,
  putObject,
  readSlices,
  selectorService,
} from '../../helpers/controller-objects.js';
import { recordingLogger } from '../k8s/tracker-helpers.js';

const LOCK = `${PREFIX}/leases/weft-controller`;

/** Leadership as the election would give it, driven by the test. */
class FakeLeadership {
  leader = true;
  /** What this controller believes its election key holds. */
  value = 'term-1';
  isLeader(): boolean {
    return this.leader;
  }
  guard(): WriteGuard | undefined {
    return this.leader ? { key: LOCK, value: this.value } : undefined;
  }
}

const fast = () => new Backoff({ initialMs: 5, maxMs: 50 });

async function until<T>(check: () => Promise<T> | T, what: string, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function metric(metrics: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  // A histogram's _count is a value of the histogram.
  const base = name.replace(/_count$/, '');
  const m = await (metrics.getSingleMetric(name) ?? metrics.getSingleMetric(base))?.get();
  const v = m?.values.find(
    (x) =>
      ((x as { metricName?: string }).metricName ?? name) === name &&
      Object.entries(labels).every(([k, l]) => x.labels[k] === l),
  );
  return v?.value ?? 0;
}

interface Setup {
  store: Store;
  ctl: SliceController;
  tracker: ObjectTracker;
  metrics: Registry;
  records: Record<string, unknown>[];
  leadership: FakeLeadership;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Waits until the endpoints of `service` are `want` and the loop is idle. */
  expectEndpoints(service: string, want: string[], what: string): Promise<void>;
}

async function setup(
  t: Test,
  o: {
    store?: Store;
    lead?: boolean;
    max?: number;
    lifecycle?: NodeLifecycle;
    preload?: (store: Store) => Promise<void>;
  } = {},
): Promise<Setup> {
  const store = o.store ?? new MemoryStore();
  if (!o.store) t.teardown(() => store.close());
  await putObject(store, { key: LOCK, value: 'term-1' });
  await o.preload?.(store);
  const metrics = createRegistry();
  const { log, records } = recordingLogger('info');
  const leadership = new FakeLeadership();
  leadership.leader = o.lead ?? true;
  const holder: { ctl?: SliceController } = {};
  const tracker = new ObjectTracker({
    store,
    prefix: PREFIX,
    kinds: CONTROLLER_KINDS,
    log,
    metrics,
    invalidMetricName: 'weft_controller_invalid_objects',
    onObject: (ev) => holder.ctl?.onObject(ev),
    onChange: () => undefined,
    backoff: fast,
  });
  const lc = o.lifecycle;
  const ctl = new SliceController({
    store,
    prefix: PREFIX,
    objects: tracker,
    leadership,
    maxEndpointsPerSlice: o.max ?? 100,
    log,
    metrics,
    backoff: fast,
    ...(lc && { nodeReady: (n: string) => lc.nodeReady(n), nodeUnknown: (n: string) => lc.isUnknown(n) }),
  });
  holder.ctl = ctl;
  t.teardown(async () => {
    await ctl.stop();
    await tracker.stop();
  });
  tracker.start();
  await tracker.synced;
  ctl.start();
  if (leadership.leader) await ctl.setLeader(true);
  return {
    store,
    ctl,
    tracker,
    metrics,
    records,
    leadership,
    metric: (name, labels) => metric(metrics, name, labels),
    async expectEndpoints(service, want, what) {
      await until(async () => {
        const got = await endpointsOf(store, service);
        return JSON.stringify(got) === JSON.stringify([...want].sort()) && ctl.queueDepth === 0;
      }, what);
      await ctl.idle();
    },
  };
}

const web = selectorService({ name: 'web', selector: { app: 'web' } });

t.test('a Service with a selector gets slices that follow its pods', async (t) => {
  const s = await setup(t, {
    preload: async (store) => {
      await putObject(store, web);
      await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
      await putObject(
        store,
        pod({ name: 'w2', labels: { app: 'web', tier: 'x' }, node: 'n2', ip: '10.244.2.2' }),
      );
      await putObject(store, pod({ name: 'other', labels: { app: 'db' }, node: 'n1', ip: '10.244.1.3' }));
    },
  });
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.2.2'], 'the first slices');
  const [slice, more] = await readSlices(s.store, 'web');
  t.notOk(more, 'one slice');
  t.equal(slice?.managedBy, 'weft-controller', 'managed-by label');
  t.equal(slice?.service, 'web', 'service-name label');
  t.match(slice?.name, /^web-[a-z0-9]{5}$/, 'generated name');
  t.same(slice?.ports, [{ name: 'http', port: 8080, protocol: 'TCP' }], 'the target port');
  t.match(
    slice?.endpoints.find((e) => e.addresses[0] === '10.244.1.2'),
    {
      nodeName: 'n1',
      conditions: { ready: true, serving: true, terminating: false },
      targetRef: { kind: 'Pod', namespace: 'default', name: 'w1' },
    },
  );
  t.ok((await s.metric('weft_controller_selector_to_slice_seconds_count')) >= 1, 'latency observed');

  // A pod declared first and attached later (weft-cni) joins once it has an address.
  await putObject(s.store, pod({ name: 'w3', labels: { app: 'web' } }));
  await putObject(s.store, attachment({ name: 'w3', node: 'n3', ip: '10.244.3.2' }));
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.2.2', '10.244.3.2'], 'the attached pod');
  const ep = (await readSlices(s.store, 'web'))[0]?.endpoints.find((e) => e.addresses[0] === '10.244.3.2');
  t.equal(ep?.nodeName, 'n3', "the attachment's node");

  // A label change moves a pod from one Service to another.
  await putObject(s.store, selectorService({ name: 'db', clusterIP: '10.96.0.11', selector: { app: 'db' } }));
  await s.expectEndpoints('db', ['10.244.1.3'], 'db gets its pod');
  await putObject(s.store, pod({ name: 'w2', labels: { app: 'db' }, node: 'n2', ip: '10.244.2.2' }));
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.3.2'], 'w2 leaves web');
  await s.expectEndpoints('db', ['10.244.1.3', '10.244.2.2'], 'w2 joins db');

  // Readiness and termination reach the conditions; a deleted pod leaves.
  await putObject(
    s.store,
    pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2', ready: false }),
  );
  await s.expectEndpoints('web', ['10.244.1.2!', '10.244.3.2'], 'w1 not ready');
  await putObject(
    s.store,
    pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2', terminating: true }),
  );
  await until(async () => {
    const e = (await readSlices(s.store, 'web'))[0]?.endpoints.find((x) => x.addresses[0] === '10.244.1.2');
    return (
      e?.conditions.terminating === true && e.conditions.serving === true && e.conditions.ready === false
    );
  }, 'w1 terminating (serving, not ready)');
  await s.store.delete(pod({ name: 'w1' }).key);
  await s.expectEndpoints('web', ['10.244.3.2'], 'w1 deleted');

  // A node's zone label reaches its endpoints.
  await putObject(s.store, nodeObject('n3', 'zone-a'));
  await until(
    async () => (await readSlices(s.store, 'web'))[0]?.endpoints[0]?.zone === 'zone-a',
    'the zone of n3',
  );
  t.pass('zone written');
});

t.test('Services without a selector and hand-written slices are never touched', async (t) => {
  const manual = selectorService({ name: 'manual', clusterIP: '10.96.0.12' });
  const handSlice = {
    key: `${PREFIX}/endpointslices/default/manual-1`,
    value: {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        namespace: 'default',
        name: 'manual-1',
        labels: { 'kubernetes.io/service-name': 'manual' },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.244.9.9'], conditions: { ready: true } }],
      ports: [{ name: 'http', port: 9000, protocol: 'TCP' }],
    },
  };
  // A hand-written slice beside the controller's, for a Service with a selector, with another writer.
  const otherWriter = {
    key: `${PREFIX}/endpointslices/default/web-extra`,
    value: {
      ...handSlice.value,
      metadata: {
        namespace: 'default',
        name: 'web-extra',
        labels: {
          'kubernetes.io/service-name': 'web',
          'endpointslice.kubernetes.io/managed-by': 'someone-else',
        },
      },
    },
  };
  const s = await setup(t, {
    preload: async (store) => {
      await putObject(store, manual);
      await putObject(store, handSlice);
      await putObject(store, otherWriter);
      await putObject(store, web);
      // Pods the selector-less Service would select if it had one: they must not matter.
      await putObject(store, pod({ name: 'm1', labels: { app: 'manual' }, node: 'n1', ip: '10.244.1.9' }));
      await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
    },
  });
  const before = await readSlices(s.store);
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.9.9'], "web's slices: ours and the other writer's");
  // Touch everything again: the manual Service, its slice, the other writer's slice.
  await putObject(s.store, {
    ...manual,
    value: { ...manual.value, metadata: { namespace: 'default', name: 'manual', labels: { x: 'y' } } },
  });
  await putObject(
    s.store,
    pod({ name: 'm1', labels: { app: 'manual', v: '2' }, node: 'n1', ip: '10.244.1.9' }),
  );
  s.ctl.resyncAll();
  await s.ctl.idle();
  await new Promise((r) => setTimeout(r, 100));
  await s.ctl.idle();
  const after = await readSlices(s.store);
  for (const key of [handSlice.key, otherWriter.key]) {
    const b = before.find((x) => x.key === key);
    const a = after.find((x) => x.key === key);
    t.ok(b && a, `${key} still there`);
    t.equal(a?.modRevision, b?.modRevision, `${key} never written`);
  }
  t.same(
    after.filter((x) => x.service === 'manual').map((x) => x.name),
    ['manual-1'],
    'no slice written for the selector-less Service',
  );
});

t.test('a deleted Service, or one that loses its selector, loses its managed slices', async (t) => {
  const s = await setup(t, {
    preload: async (store) => {
      await putObject(store, web);
      await putObject(
        store,
        selectorService({ name: 'api', clusterIP: '10.96.0.13', selector: { app: 'api' } }),
      );
      await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
      await putObject(store, pod({ name: 'a1', labels: { app: 'api' }, node: 'n1', ip: '10.244.1.4' }));
    },
  });
  await s.expectEndpoints('web', ['10.244.1.2'], 'web');
  await s.expectEndpoints('api', ['10.244.1.4'], 'api');
  await s.store.delete(web.key);
  await until(async () => (await readSlices(s.store, 'web')).length === 0, "web's slices deleted");
  await putObject(s.store, selectorService({ name: 'api', clusterIP: '10.96.0.13' }));
  await until(async () => (await readSlices(s.store, 'api')).length === 0, "api's slices deleted");
  t.ok((await s.metric('weft_controller_slices_written_total', { op: 'delete' })) >= 2, 'deletes counted');
  t.same(await readSlices(s.store), [], 'nothing left');
});

t.test('drift is repaired: a managed slice edited or deleted by someone else', async (t) => {
  const s = await setup(t, {
    preload: async (store) => {
      await putObject(store, web);
      await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
    },
  });
  await s.expectEndpoints('web', ['10.244.1.2'], 'web');
  const [slice] = await readSlices(s.store, 'web');
  const stored = JSON.parse((await s.store.get(slice!.key))!.value) as { endpoints: unknown[] };
  stored.endpoints = [{ addresses: ['10.244.66.66'], conditions: { ready: true } }];
  await putObject(s.store, { key: slice!.key, value: stored });
  await s.expectEndpoints('web', ['10.244.1.2'], 'the edit undone');
  await s.store.delete(slice!.key);
  await s.expectEndpoints('web', ['10.244.1.2'], 'the deleted slice written again');
  t.equal((await readSlices(s.store, 'web')).length, 1, 'one slice, not two');
});

t.test('a standby writes nothing; once elected it writes everything', async (t) => {
  const s = await setup(t, {
    lead: false,
    preload: async (store) => {
      await putObject(store, web);
      await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
    },
  });
  await putObject(s.store, pod({ name: 'w2', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.3' }));
  await new Promise((r) => setTimeout(r, 200));
  await s.ctl.idle();
  t.same(await readSlices(s.store), [], 'no slice from a standby');
  t.equal(await s.metric('weft_controller_leader'), 0, 'leader gauge 0');
  t.equal(await s.metric('weft_controller_syncs_total'), 0, 'no sync');
  s.leadership.leader = true;
  await s.ctl.setLeader(true);
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.1.3'], 'written once leader');
  t.equal(await s.metric('weft_controller_leader'), 1, 'leader gauge 1');
});

t.test('a leader fenced off (its key holds another term) writes nothing', async (t) => {
  const s = await setup(t, {
    preload: async (store) => {
      await putObject(store, web);
    },
  });
  // Another controller won an election this one has not heard of yet.
  await putObject(s.store, { key: LOCK, value: 'term-2' });
  await putObject(s.store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
  await until(() => s.records.some((r) => /fenced off/.test(String(r.msg))), 'the fenced write to be logged');
  await s.ctl.idle();
  t.same(await readSlices(s.store), [], 'nothing written');
});

t.test('node lifecycle: endpoints of a node gone past the grace are not ready, and back', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  for (const n of ['n1', 'n2']) await putObject(store, flanneldStatus(n));
  const { log } = recordingLogger('warn');
  const holder: { s?: Setup } = {};
  const lifecycle = new NodeLifecycle({
    store,
    statusPrefix: `${PREFIX}/status`,
    gracePeriodMs: 300,
    log,
    onChange: (n) => holder.s?.ctl.onNodeChange(n),
    backoff: fast,
  });
  t.teardown(() => lifecycle.stop());
  lifecycle.start();
  const s = await setup(t, {
    store,
    lifecycle,
    preload: async (st) => {
      await putObject(st, web);
      await putObject(st, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
      await putObject(st, pod({ name: 'w2', labels: { app: 'web' }, node: 'n2', ip: '10.244.2.2' }));
      await putObject(st, pod({ name: 'w3', labels: { app: 'web' }, node: 'n3', ip: '10.244.3.2' }));
    },
  });
  holder.s = s;
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.2.2', '10.244.3.2'], 'all ready at first');
  // n3 never had a heartbeat: not ready once the grace from the start is over.
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.2.2', '10.244.3.2!'], 'n3 never seen');
  await store.delete(flanneldStatus('n2').key);
  const goneAt = Date.now();
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.2.2!', '10.244.3.2!'], "n2's endpoint not ready");
  t.ok(Date.now() - goneAt >= 250, 'not before the grace');
  const e = (await readSlices(store, 'web'))[0]?.endpoints.find((x) => x.addresses[0] === '10.244.2.2');
  t.match(e?.conditions, { ready: false, serving: false }, 'neither ready nor serving');
  await putObject(store, flanneldStatus('n2'));
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.2.2', '10.244.3.2!'], 'n2 back');
  t.ok(await store.get(pod({ name: 'w2' }).key), 'the pod is never deleted');
});

t.test('bad pods are skipped and counted; the rest keeps working', async (t) => {
  const many: Record<string, string> = { app: 'web' };
  for (let i = 0; i < 10_000; i++) many[`k${i}`] = 'v';
  const s = await setup(t, {
    preload: async (store) => {
      await putObject(store, web);
      await putObject(store, { key: `${PREFIX}/pods/default/broken`, value: '{"metadata": {' });
      await putObject(
        store,
        pod({ name: 'hostile', labels: { app: 'web', 'bad key!': '\u001b[2J' }, ip: '10.244.1.66' }),
      );
      await putObject(store, pod({ name: 'labels', labels: many, ip: '10.244.1.77' }));
      await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
    },
  });
  await s.expectEndpoints('web', ['10.244.1.2'], 'only the good pod');
  t.equal(await s.metric('weft_controller_invalid_objects', { kind: 'Pod' }), 3, 'three bad pods counted');
  for (const name of ['broken', 'hostile', 'labels']) {
    t.ok(
      s.records.some((r) => r.key === `${PREFIX}/pods/default/${name}` && /invalid Pod/.test(String(r.msg))),
      `${name}: logged with its key`,
    );
  }
  // A bad pod that turns good joins.
  await putObject(s.store, pod({ name: 'hostile', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.66' }));
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.1.66'], 'the fixed pod');
});

t.test('slices stay within the limit; one pod added rewrites one slice', async (t) => {
  const s = await setup(t, {
    max: 100,
    preload: async (store) => {
      await putObject(store, web);
      for (let i = 0; i < 250; i++) {
        await putObject(
          store,
          pod({
            name: `p${i}`,
            labels: { app: 'web' },
            node: 'n1',
            ip: `10.244.${1 + Math.floor(i / 200)}.${(i % 200) + 2}`,
          }),
        );
      }
    },
  });
  await until(async () => (await endpointsOf(s.store, 'web')).length === 250, '250 endpoints');
  await s.ctl.idle();
  const slices = await readSlices(s.store, 'web');
  t.equal(slices.length, 3, '3 slices');
  t.ok(
    slices.every((x) => x.endpoints.length <= 100),
    'none over 100',
  );
  const written = async () =>
    (await s.metric('weft_controller_slices_written_total', { op: 'create' })) +
    (await s.metric('weft_controller_slices_written_total', { op: 'update' })) +
    (await s.metric('weft_controller_slices_written_total', { op: 'delete' }));
  const before = await written();
  await putObject(s.store, pod({ name: 'p250', labels: { app: 'web' }, node: 'n1', ip: '10.244.9.9' }));
  await until(async () => (await endpointsOf(s.store, 'web')).length === 251, '251 endpoints');
  await s.ctl.idle();
  t.equal((await written()) - before, 1, 'exactly one slice written');
  t.equal((await readSlices(s.store, 'web')).length, 3, 'still 3 slices');
});

/**
 * A store whose watch of the slices delivers every event late, as a busy watch stream can: the
 * tracker sees the controller's own slice writes after later changes of other kinds.
 */
function laggingStore(inner: Store, lagMs: number): Store {
  async function* watch(prefix: string, opts: WatchOptions): AsyncIterable<WatchEvent> {
    const lag = prefix.includes('/endpointslices/') ? lagMs : 0;
    for await (const ev of inner.watch(prefix, opts)) {
      if (lag) await new Promise((r) => setTimeout(r, lag));
      yield ev;
    }
  }
  return {
    kind: 'lagging',
    get: (k) => inner.get(k),
    timeToLive: (k) => inner.timeToLive(k),
    list: (p) => inner.list(p),
    create: (...a) => inner.create(...a),
    update: (...a) => inner.update(...a),
    delete: (...a) => inner.delete(...a),
    keepAlive: (...a) => inner.keepAlive(...a),
    watch,
    close: () => inner.close(),
  };
}

t.test('a change planned before the watch shows the last write waits for it: no second slice', async (t) => {
  const store = laggingStore(new MemoryStore(), 500);
  t.teardown(() => store.close());
  const s = await setup(t, {
    store,
    preload: async (st) => {
      await putObject(st, web);
      await putObject(st, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
    },
  });
  // The first slice is written at once (from the listing); its watch event comes 500 ms later.
  await until(async () => (await readSlices(store, 'web')).length === 1, 'the first slice');
  // A change seen before that event: planned from a view without the slice, it would create a
  // second slice holding w1 again.
  await putObject(store, pod({ name: 'w2', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.3' }));
  await s.expectEndpoints('web', ['10.244.1.2', '10.244.1.3'], 'both pods');
  const slices = await readSlices(store, 'web');
  t.equal(slices.length, 1, 'one slice');
  t.same(
    slices.flatMap((x) => x.endpoints.map((e) => e.addresses[0])).sort(),
    ['10.244.1.2', '10.244.1.3'],
    'each endpoint once',
  );
});

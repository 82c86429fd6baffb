/**
 * The lease state machine over the in-memory store: acquisition, races, renewal, reservations,
 * loss and re-take, restart and release. Short TTLs stand in for flannel's 24 h.
 */
import { setTimeout as delay } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { ErrorCodes, WeftError } from '../../../../src/errors/index.js';
import { LeaseManager, type Lease } from '../../../../src/flanneld/lease/index.js';
import {
  encodeLeaseAttrs,
  leaseFitsConfig,
  parseNetConfig,
  parseSubnetKey,
  type NetConfig,
} from '../../../../src/ipam/index.js';
import { setRootLogger, silentLogger } from '../../../../src/log/index.js';
import { createRegistry, type Registry } from '../../../../src/metrics/index.js';
import { MemoryStore, type Store } from '../../../../src/registry/index.js';
import {
  HookedStore,
  captureLogs,
  createBarrier,
  feedWatch,
  managerWith,
  seeded,
  vxlanAttrs,
} from './fixtures/lease-fixtures.js';

t.setTimeout(60_000);
setRootLogger(silentLogger());

const DIR = '/coreos.com/network/subnets/';
const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
/** One leasable subnet: 10.0.0.4/30. */
const single = parseNetConfig({ Network: '10.0.0.0/28', SubnetLen: 30, SubnetMax: '10.0.0.4' });
/** Three leasable subnets: 10.0.0.4/30, 10.0.0.8/30, 10.0.0.12/30. */
const tiny = parseNetConfig({ Network: '10.0.0.0/28', SubnetLen: 30 });
const me = vxlanAttrs('192.168.64.3');
const other = vxlanAttrs('192.168.64.4', 'aa:aa:aa:aa:aa:aa');
const FIRST = () => 0;
const quiet = silentLogger();
/** Short TTL: renew every 200 ms. */
const SHORT = { ttlSeconds: 0.6, renewMarginSeconds: 0.4 };

function newStore(t: Test): MemoryStore {
  const store = new MemoryStore({ logger: quiet });
  t.teardown(() => store.close());
  return store;
}

function manager(
  t: Test,
  store: Store,
  extra: Partial<ConstructorParameters<typeof LeaseManager>[0]> = {},
  cfg: NetConfig = config,
) {
  const m = managerWith({ store, config: cfg, attrs: me, random: FIRST, logger: quiet, ...extra });
  t.teardown(() => m.manager.close());
  return m;
}

async function metric(reg: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = reg.getSingleMetric(name);
  if (!m) return Number.NaN;
  const { values } = await m.get();
  const v = values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

/** Keys under the subnets dir whose value names `publicIP`. */
async function keysOf(store: Store, publicIP: string): Promise<string[]> {
  const { items } = await store.list(DIR);
  return items.filter((kv) => kv.value.includes(`"PublicIP":"${publicIP}"`)).map((kv) => kv.key);
}

t.test('acquire writes flannel key and exact JSON, TTL-bound, 24 h by default', async (t) => {
  const store = newStore(t);
  const metrics = createRegistry();
  let clock = 1_700_000_000_000;
  const { manager: m, events } = manager(t, store, { metrics, now: () => clock });
  const lease = await m.acquire();
  clock += 5_000;
  t.equal(lease.key, '10.244.1.0-24');
  t.equal(lease.path, `${DIR}10.244.1.0-24`);
  t.equal(lease.subnets.ipv4?.toString(), '10.244.1.0/24');
  t.equal(lease.reservation, false);
  t.equal(lease.expiresAt, 1_700_000_000_000 + 86_400_000);
  const kv = await store.get(lease.path);
  t.equal(
    kv?.value,
    '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
  );
  t.equal(kv?.ttlBound, true);
  t.same(events.types().slice(0, 1), ['acquired']);
  t.match(events.events[0], { source: 'allocated' });
  t.equal(await metric(metrics, 'weft_flanneld_lease_acquisitions_total'), 1);
  t.ok((await metric(metrics, 'weft_flanneld_lease_expiry_timestamp_seconds')) >= 1_700_000_000 + 86_400);
  t.same(await m.acquire(), m.current, 'a second acquire returns the held lease');
  t.equal(await metric(metrics, 'weft_flanneld_lease_acquisitions_total'), 1);
});

t.test('renewal is scheduled at expiry minus the margin, expecting our value', async (t) => {
  const cases: [string, { ttlSeconds?: number; renewMarginSeconds?: number }, number][] = [
    ['defaults: 24 h TTL, 60 min margin', {}, (86_400 - 3_600) * 1000],
    ['10 min margin', { renewMarginSeconds: 600 }, (86_400 - 600) * 1000],
    ['short TTL', SHORT, 200],
  ];
  for (const [name, opts, interval] of cases) {
    const store = new HookedStore(newStore(t));
    const { manager: m } = manager(t, store, opts);
    const lease = await m.acquire();
    t.equal(store.keepAliveCalls.length, 1, name);
    t.match(
      store.keepAliveCalls[0],
      { key: lease.path, opts: { ttlSeconds: opts.ttlSeconds ?? 86_400, expectValue: lease.value } },
      name,
    );
    t.ok(Math.abs((store.keepAliveCalls[0]?.opts.intervalMs ?? 0) - interval) < 1e-6, `${name}: interval`);
    await m.close();
  }
});

t.test('bad options are refused', async (t) => {
  const store = newStore(t);
  const base = { store, config, attrs: me };
  t.throws(() => new LeaseManager({ ...base, renewMarginSeconds: 86_400 }), {
    code: ErrorCodes.INVALID_ARGUMENT,
  });
  t.throws(() => new LeaseManager({ ...base, ttlSeconds: 0 }), { code: ErrorCodes.INVALID_ARGUMENT });
  t.throws(() => new LeaseManager({ ...base, maxAttempts: 0 }), { code: ErrorCodes.INVALID_ARGUMENT });
  t.throws(() => new LeaseManager({ ...base, attrs: { publicIP: 'nope' } }), {
    code: ErrorCodes.INVALID_ARGUMENT,
  });
});

t.test('renewal keeps a TTL-bound key alive', async (t) => {
  const store = newStore(t);
  const metrics = createRegistry();
  // Renew every 500 ms with a second of slack, so a busy test machine does not lose the key.
  const ttl = { ttlSeconds: 1.5, renewMarginSeconds: 1 };
  const { manager: m, events } = manager(t, store, { ...ttl, metrics });
  const lease = await m.acquire();
  // A control key of the same TTL that nobody renews: the TTL is really enforced.
  await store.create(`${DIR}control`, 'x', { ttlSeconds: ttl.ttlSeconds });
  await delay(2_600);
  t.notOk(await store.get(`${DIR}control`), 'an unrenewed key of that TTL expired');
  t.match(await store.get(lease.path), { value: lease.value, ttlBound: true }, 'ours is still there');
  t.ok(events.count('renewed') >= 4, `renewed ${events.count('renewed')} times in 2.6 s`);
  t.ok((await metric(metrics, 'weft_flanneld_lease_renewals_total', { result: 'ok' })) >= 4);
  t.equal(events.count('lost'), 0);
  t.ok((m.current?.expiresAt ?? 0) > (lease.expiresAt ?? 0), 'expiry moved forward');
});

t.test('two managers race for the only free subnet: one wins, the other is out of subnets', async (t) => {
  const shared = newStore(t);
  const barrier = createBarrier(2);
  const stores = [new HookedStore(shared.client()), new HookedStore(shared.client())];
  for (const s of stores) s.beforeCreate = barrier;
  const logs = captureLogs();
  const a = manager(t, stores[0] as Store, { logger: logs.logger }, single);
  const b = manager(t, stores[1] as Store, { attrs: other, logger: logs.logger }, single);
  const results = await Promise.allSettled([a.manager.acquire(), b.manager.acquire()]);
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r) => r.status === 'rejected');
  t.equal(won.length, 1, 'exactly one wins');
  t.equal(lost.length, 1);
  t.match((lost[0] as PromiseRejectedResult).reason, { code: ErrorCodes.OUT_OF_SUBNETS });
  t.equal(stores[0]?.creates, 1, 'both really tried to create');
  t.equal(stores[1]?.creates, 1);
  const { items } = await shared.list(DIR);
  t.same(
    items.map((kv) => kv.key),
    [`${DIR}10.0.0.4-30`],
  );
  const winner = (won[0] as PromiseFulfilledResult<Lease>).value;
  t.equal(items[0]?.value, winner.value, "the winner's value is stored");
  t.ok(
    logs.messages().some((msg) => /lost the race for subnet 10\.0\.0\.4-30/.test(msg)),
    'the loser logs the lost race',
  );
});

t.test('two managers pick the same subnet: the loser retries with another', async (t) => {
  const shared = newStore(t);
  const barrier = createBarrier(2);
  const stores = [new HookedStore(shared.client()), new HookedStore(shared.client())];
  for (const s of stores) s.beforeCreate = barrier;
  const a = manager(t, stores[0] as Store, {}, tiny);
  const b = manager(t, stores[1] as Store, { attrs: other }, tiny);
  const [la, lb] = await Promise.all([a.manager.acquire(), b.manager.acquire()]);
  t.same([la.key, lb.key].sort(), ['10.0.0.4-30', '10.0.0.8-30'], 'both got one, distinct');
  t.same(stores.map((s) => s.creates).sort(), [1, 2], 'the loser created twice');
  t.same(await keysOf(shared, '192.168.64.3'), [la.path]);
  t.same(await keysOf(shared, '192.168.64.4'), [lb.path]);
});

t.test('20 managers racing in a small pool all get distinct subnets', async (t) => {
  // 10.0.0.0/24 in /29s: 31 leasable subnets for 20 nodes.
  const pool = parseNetConfig({ Network: '10.0.0.0/24', SubnetLen: 29 });
  const shared = newStore(t);
  const barrier = createBarrier(20);
  const managers = Array.from({ length: 20 }, (_, i) => {
    const store = new HookedStore(shared.client());
    store.beforeCreate = barrier;
    return {
      store,
      ...manager(t, store, { attrs: vxlanAttrs(`192.168.1.${i + 1}`), random: seeded(i + 1) }, pool),
    };
  });
  const leases = await Promise.all(managers.map((m) => m.manager.acquire()));
  const keys = new Set(leases.map((l) => l.key));
  t.equal(keys.size, 20, 'distinct subnets');
  const { items } = await shared.list(DIR);
  t.equal(items.length, 20, 'one key per node');
  for (const [i, l] of leases.entries()) {
    t.ok(leaseFitsConfig(pool, parseSubnetKey(l.key)), `${l.key} fits`);
    t.equal((await shared.get(l.path))?.value, l.value, `node ${i + 1} holds ${l.key}`);
  }
  const totalCreates = managers.reduce((n, m) => n + m.store.creates, 0);
  t.ok(totalCreates > 20, `there were lost races (${totalCreates} creates)`);
});

t.test('too many lost races end in a clear conflict error', async (t) => {
  const store = new HookedStore(newStore(t));
  // Someone else always gets there first.
  let n = 0;
  store.beforeCreate = async (key) => {
    await store.base.create(key, encodeLeaseAttrs(vxlanAttrs(`192.168.9.${++n}`)));
  };
  const { manager: m } = manager(t, store, { maxAttempts: 3 });
  await t.rejects(m.acquire(), { code: ErrorCodes.CONFLICT, message: /3 attempts/ });
  t.equal(store.creates, 3);
  t.same(await keysOf(store, '192.168.64.3'), [], 'holds nothing');
});

t.test('a reservation is reused and never given a TTL', async (t) => {
  const store = new HookedStore(newStore(t));
  const metrics = createRegistry();
  const path = `${DIR}10.244.42.0-24`;
  // Pinned by an operator, with an old VtepMAC.
  await store.base.create(path, encodeLeaseAttrs(vxlanAttrs('192.168.64.3', '00:00:00:00:00:01')));
  const { manager: m, events } = manager(t, store, { ...SHORT, metrics });
  const lease = await m.acquire();
  t.equal(lease.key, '10.244.42.0-24');
  t.equal(lease.reservation, true);
  t.equal(lease.expiresAt, undefined);
  t.match(events.events[0], { type: 'acquired', source: 'public-ip' });
  const kv = await store.get(path);
  t.equal(kv?.value, encodeLeaseAttrs(me), 'the value is brought up to date');
  t.equal(kv?.ttlBound, false, 'still a reservation after acquire');
  t.same(
    store.updateCalls.map((c) => c.opts?.ttlSeconds),
    [null],
    'written explicitly without a TTL',
  );
  await delay(800); // four renewal periods of a TTL-bound lease
  t.equal(await m.renewNow(), true);
  t.equal((await store.get(path))?.ttlBound, false, 'still a reservation after renewals');
  t.equal(store.keepAliveCalls.length, 0, 'no keep-alive, so no TTL');
  t.equal(await metric(metrics, 'weft_flanneld_lease_expiry_timestamp_seconds'), Number.POSITIVE_INFINITY);
  t.equal(events.count('lost'), 0);
});

t.test('an identical reservation is reused without a write', async (t) => {
  const store = new HookedStore(newStore(t));
  const path = `${DIR}10.244.42.0-24`;
  await store.base.create(path, encodeLeaseAttrs(me));
  const before = await store.get(path);
  const { manager: m } = manager(t, store);
  const lease = await m.acquire();
  t.equal(lease.modRevision, before?.modRevision);
  t.equal(store.updateCalls.length, 0);
  t.equal((await store.get(path))?.modRevision, before?.modRevision);
});

t.test('own key deleted: the same subnet is re-taken, and it is logged', async (t) => {
  const store = newStore(t);
  const metrics = createRegistry();
  const logs = captureLogs();
  const { manager: m, events } = manager(t, store, { metrics, logger: logs.logger });
  const lease = await m.acquire();
  const stop = feedWatch(store, m);
  t.teardown(stop);
  const retaken = events.next('retaken');
  await store.delete(lease.path);
  const { lease: again } = await retaken;
  t.equal(again.key, lease.key, 'same subnet');
  t.ok(again.modRevision > lease.modRevision);
  t.match(await store.get(lease.path), { value: lease.value, ttlBound: true });
  t.same(
    events.types().filter((x) => x !== 'renewed'),
    ['acquired', 'lost', 'retaken'],
  );
  t.ok(
    logs.lines.some((l) => l.msg === 're-took subnet 10.244.1.0/24 after loss' && l.component === 'lease'),
    'logged',
  );
  t.equal(await metric(metrics, 'weft_flanneld_lease_losses_total'), 1);
  t.equal(await metric(metrics, 'weft_flanneld_lease_acquisitions_total'), 2);
  t.same(await keysOf(store, '192.168.64.3'), [lease.path], 'one key');
  // The delete event arrived once; the re-take's own put is not a loss.
  await delay(100);
  t.equal(events.count('lost'), 1);
});

t.test('own key gone after an outage (found by the renewal): re-taken', async (t) => {
  const store = newStore(t);
  const { manager: m, events } = manager(t, store, SHORT);
  const lease = await m.acquire();
  const retaken = events.next('retaken');
  await store.delete(lease.path); // nobody feeds the watch: only the renewal can notice
  const { lease: again } = await retaken;
  t.equal(again.key, lease.key);
  t.match(await store.get(lease.path), { value: lease.value, ttlBound: true });
  await delay(500);
  t.ok(await store.get(lease.path), 'renewed again afterwards');
});

t.test('own key deleted and taken by another node meanwhile: a new subnet, the old not held', async (t) => {
  const store = newStore(t);
  const metrics = createRegistry();
  const changes: [Lease, Lease][] = [];
  const { manager: m, events } = manager(t, store, {
    metrics,
    onChange: (lease, previous) => changes.push([lease, previous]),
  });
  const lease = await m.acquire();
  const deleted = await store.list(DIR);
  await store.delete(lease.path);
  const taken = await store.create(lease.path, encodeLeaseAttrs(other), { ttlSeconds: 60 });
  t.ok(taken.created, 'the other node got it');
  const changed = events.next('changed');
  // The delete event reaches the manager only now, after the other node's create.
  await m.handleWatchEvent({ type: 'delete', key: lease.path, revision: deleted.revision + 1 });
  const { lease: next, previous } = await changed;
  t.not(next.key, lease.key, 'another subnet');
  t.equal(previous.key, lease.key);
  t.same(
    changes.map(([l, p]) => [l.key, p.key]),
    [[next.key, lease.key]],
    'onChange told the daemon',
  );
  t.equal((await store.get(lease.path))?.value, encodeLeaseAttrs(other), "the old key is the other node's");
  t.same(await keysOf(store, '192.168.64.3'), [next.path], 'this node holds exactly one key');
  t.equal(m.current?.key, next.key);
  t.same(
    events.types().filter((x) => x !== 'renewed'),
    ['acquired', 'lost', 'acquired', 'changed'],
  );
  t.equal(await metric(metrics, 'weft_flanneld_lease_losses_total'), 1);
});

t.test('key taken over during an outage (the renewal sees another value): a new subnet', async (t) => {
  const store = newStore(t);
  const { manager: m, events } = manager(t, store, SHORT);
  const lease = await m.acquire();
  const changed = events.next('changed');
  await store.delete(lease.path);
  await store.create(lease.path, encodeLeaseAttrs(other), { ttlSeconds: 60 });
  const { lease: next } = await changed;
  t.not(next.key, lease.key);
  t.same(await keysOf(store, '192.168.64.3'), [next.path]);
  t.same(await keysOf(store, '192.168.64.4'), [lease.path]);
});

t.test('stale events and our own writes do not trigger a recovery', async (t) => {
  const store = new HookedStore(newStore(t));
  const { manager: m, events } = manager(t, store);
  const lease = await m.acquire();
  const stop = feedWatch(store, m);
  t.teardown(stop);
  await m.handleWatchEvent({ type: 'delete', key: lease.path, revision: lease.modRevision });
  await m.handleWatchEvent({ type: 'delete', key: `${DIR}10.244.9.0-24`, revision: lease.modRevision + 5 });
  await m.handleWatchEvent({
    type: 'put',
    key: lease.path,
    value: lease.value,
    revision: 1e6,
    ttlBound: true,
  });
  await delay(50);
  t.equal(store.gets, 0, 'no registry request for them');
  t.equal(m.current?.modRevision, 1e6, 'an identical write of our own is only noted');
  // A resync checks the key, finds it intact, and leaves it be.
  await m.handleWatchEvent({ type: 'resync', revision: lease.modRevision, reason: 'test' });
  t.equal(store.gets, 1, 'the resync read the key');
  t.equal(events.count('lost'), 0);
  t.equal(store.creates, 1, 'no re-create');
  t.equal(store.updateCalls.length, 0, 'no rewrite');
  t.equal(m.current?.modRevision, lease.modRevision, 'the modRevision read from the registry');
});

t.test('resync finds the key gone: re-taken', async (t) => {
  const store = newStore(t);
  const { manager: m, events } = manager(t, store);
  const lease = await m.acquire();
  await store.delete(lease.path);
  await m.handleWatchEvent({ type: 'resync', revision: 1_000, reason: 'compacted' });
  t.same(
    events.types().filter((x) => x !== 'renewed'),
    ['acquired', 'lost', 'retaken'],
  );
  t.ok(await store.get(lease.path));
});

t.test('lease turned into a reservation by an operator: kept, renewal stops, no TTL added', async (t) => {
  const store = new HookedStore(newStore(t));
  const { manager: m, events } = manager(t, store, SHORT);
  const lease = await m.acquire();
  const kv = await store.get(lease.path);
  await store.base.update(
    lease.path,
    lease.value,
    { modRevision: kv?.modRevision ?? 0 },
    { ttlSeconds: null },
  );
  await delay(600);
  t.equal(events.count('lost'), 0, 'not a loss');
  t.equal(m.current?.reservation, true);
  t.equal((await store.get(lease.path))?.ttlBound, false, 'no TTL put back');
  t.same(await keysOf(store, '192.168.64.3'), [lease.path]);
});

t.test('a reservation deleted by its operator: the subnet is kept as a TTL-bound lease', async (t) => {
  const store = newStore(t);
  const path = `${DIR}10.244.42.0-24`;
  await store.create(path, encodeLeaseAttrs(me));
  const { manager: m, events } = manager(t, store);
  const stop = feedWatch(store, m);
  t.teardown(stop);
  await m.acquire();
  const retaken = events.next('retaken');
  await store.delete(path);
  const { lease } = await retaken;
  t.equal(lease.key, '10.244.42.0-24');
  t.equal(lease.reservation, false);
  t.equal((await store.get(path))?.ttlBound, true, 'no longer pinned, so it expires if the node goes');
});

t.test('restart: a new manager with the same PublicIP reuses the lease', async (t) => {
  const store = newStore(t);
  const first = manager(t, store);
  const lease = await first.manager.acquire();
  await first.manager.close();
  t.ok(await store.get(lease.path), 'close keeps the lease');
  const attrs = vxlanAttrs('192.168.64.3', '02:00:00:00:00:02'); // the device was recreated
  const { manager: m, events } = manager(t, store, { attrs, random: () => 0.99 });
  const again = await m.acquire();
  t.equal(again.key, lease.key, 'same subnet');
  t.match(events.events[0], { type: 'acquired', source: 'public-ip' });
  t.match(await store.get(lease.path), { value: encodeLeaseAttrs(attrs), ttlBound: true });
  t.same(await keysOf(store, '192.168.64.3'), [lease.path]);
});

t.test('restart after the lease expired: the subnet.env subnet is reused when free', async (t) => {
  const store = newStore(t);
  const previous = parseSubnetKey('10.244.77.0-24');
  const { manager: m, events } = manager(t, store, { previous });
  const lease = await m.acquire();
  t.equal(lease.key, '10.244.77.0-24');
  t.match(events.events[0], { source: 'previous' });
});

t.test('a stale lease of this node that no longer fits is deleted: never two', async (t) => {
  const store = newStore(t);
  await store.create(`${DIR}10.245.3.0-24`, encodeLeaseAttrs(me), { ttlSeconds: 60 });
  const { manager: m } = manager(t, store);
  const lease = await m.acquire();
  t.equal(lease.key, '10.244.1.0-24');
  t.same(await keysOf(store, '192.168.64.3'), [lease.path]);
});

t.test('a stale lease of this node filling the pool is deleted, then the pool is listed again', async (t) => {
  const store = newStore(t);
  // An old SubnetLen /29 lease of this node covers 10.0.0.8/30 and 10.0.0.12/30; another node has 10.0.0.4/30.
  await store.create(`${DIR}10.0.0.8-29`, encodeLeaseAttrs(me), { ttlSeconds: 60 });
  await store.create(`${DIR}10.0.0.4-30`, encodeLeaseAttrs(other), { ttlSeconds: 60 });
  const { manager: m } = manager(t, store, {}, tiny);
  const lease = await m.acquire();
  t.equal(lease.key, '10.0.0.8-30');
  t.same(await keysOf(store, '192.168.64.3'), [lease.path]);
});

t.test('a create lost to this node itself (a lagging listing) is adopted, not doubled', async (t) => {
  const store = new HookedStore(newStore(t));
  let fail = true;
  store.afterCreate = async () => {
    if (!fail) return;
    fail = false;
    throw new WeftError(ErrorCodes.REGISTRY_UNAVAILABLE, 'connection reset');
  };
  // The next listing is from before the create, as a lagging replica would answer.
  store.afterList = (r) => (store.lists === 2 ? { ...r, items: [] } : r);
  // One attempt only: finding its own key must not count as a race lost to another node.
  const { manager: m } = manager(t, store, { backoff: { initialMs: 5, maxMs: 10 }, maxAttempts: 1 });
  const lease = await m.acquire();
  t.equal(store.creates, 2, 'the second create found the key');
  t.equal(lease.key, '10.244.1.0-24');
  t.same(await keysOf(store, '192.168.64.3'), [lease.path], 'one key');
});

t.test('a lost race is not repeated on the same subnet even when the listing lags', async (t) => {
  const store = new HookedStore(newStore(t));
  let raced = false;
  store.beforeCreate = async (key) => {
    if (raced) return;
    raced = true;
    await store.base.create(key, encodeLeaseAttrs(other));
  };
  // The listing after the lost race does not show the winner yet.
  store.afterList = (r) => (store.lists === 2 ? { ...r, items: [] } : r);
  const { manager: m } = manager(t, store, { maxAttempts: 2 });
  const lease = await m.acquire();
  t.equal(lease.key, '10.244.2.0-24', 'the lost subnet is excluded');
  t.equal(store.creates, 2);
});

t.test('a create whose answer was lost is found by PublicIP, not taken twice', async (t) => {
  const store = new HookedStore(newStore(t));
  let fail = true;
  store.afterCreate = async () => {
    if (!fail) return;
    fail = false;
    throw new WeftError(ErrorCodes.REGISTRY_UNAVAILABLE, 'connection reset');
  };
  const { manager: m } = manager(t, store, { backoff: { initialMs: 5, maxMs: 10 } });
  const lease = await m.acquire();
  t.equal(store.creates, 1, 'no second create');
  t.same(await keysOf(store, '192.168.64.3'), [lease.path]);
});

t.test('registry unavailable: acquire retries with backoff, or stops on abort', async (t) => {
  const store = new HookedStore(newStore(t));
  let failures = 3;
  store.beforeList = async () => {
    if (failures-- > 0) throw new WeftError(ErrorCodes.REGISTRY_UNAVAILABLE, 'etcd down');
  };
  const { manager: m } = manager(t, store, { backoff: { initialMs: 5, maxMs: 20 } });
  const lease = await m.acquire();
  t.equal(lease.key, '10.244.1.0-24');
  t.equal(failures, -1, 'listed four times');

  const down = new HookedStore(newStore(t));
  down.beforeList = async () => {
    throw new WeftError(ErrorCodes.REGISTRY_UNAVAILABLE, 'etcd down');
  };
  const { manager: n } = manager(t, down, { backoff: { initialMs: 5, maxMs: 20 } });
  await t.rejects(n.acquire({ signal: AbortSignal.timeout(100) }), { name: 'TimeoutError' });
  const bad = new HookedStore(newStore(t));
  bad.beforeList = async () => {
    throw new WeftError(ErrorCodes.INVALID_KEY, 'not retried');
  };
  await t.rejects(manager(t, bad).manager.acquire(), { code: ErrorCodes.INVALID_KEY });
});

t.test('release deletes the key; close keeps it; a reservation is never deleted', async (t) => {
  const store = newStore(t);
  const { manager: m } = manager(t, store);
  const lease = await m.acquire();
  t.equal(await m.release(), true);
  t.notOk(await store.get(lease.path), 'deleted');
  t.equal(m.current, undefined);
  await t.rejects(m.acquire(), { code: ErrorCodes.CLOSED });

  const path = `${DIR}10.244.42.0-24`;
  await store.create(path, encodeLeaseAttrs(me));
  const { manager: r } = manager(t, store);
  await r.acquire();
  t.equal(await r.release(), false);
  t.ok(await store.get(path), "the operator's reservation stays");
});

t.test('release does not delete a key another node holds now', async (t) => {
  const store = newStore(t);
  const { manager: m } = manager(t, store);
  const lease = await m.acquire();
  await store.delete(lease.path);
  await store.create(lease.path, encodeLeaseAttrs(other));
  t.equal(await m.release(), false);
  t.equal((await store.get(lease.path))?.value, encodeLeaseAttrs(other));
});

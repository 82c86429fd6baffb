/**
 * The ClusterIP/nodePort allocator on the in-process store: ranges without network and broadcast
 * addresses, requested values, exhaustion, release by owner only, rollback, leftovers of the same
 * owner adopted, and leaked allocations reclaimed only when their owner does not hold them.
 */
import t from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import {
  ServiceAllocator,
  allocationKey,
  parsePortRange,
  type ServiceAllocatorOptions,
} from '../../../src/ipam/index.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { MemoryStore } from '../../../src/registry/index.js';

setRootLogger(silentLogger());

function make(opts: Partial<ServiceAllocatorOptions> = {}): { store: MemoryStore; alloc: ServiceAllocator } {
  const store = new MemoryStore();
  const alloc = new ServiceAllocator({
    store,
    registryPrefix: '/weft',
    serviceCidrs: ['10.96.0.0/29'],
    nodePortRange: '30000-30002',
    reclaimGraceMs: 5,
    ...opts,
  });
  return { store, alloc };
}

t.test('parsePortRange', async (t) => {
  t.same(parsePortRange('30000-32767'), { min: 30000, max: 32767 });
  t.same(parsePortRange('30000+2767'), { min: 30000, max: 32767 });
  t.same(parsePortRange('8080'), { min: 8080, max: 8080 });
  t.throws(() => parsePortRange('32767-30000'), /low before high/);
  t.throws(() => parsePortRange('0-10'), /within 1-65535/);
  t.throws(() => parsePortRange('a-b'), /not a range/);
});

t.test('a /29 gives its six host addresses, each once, then is exhausted', async (t) => {
  const { store, alloc } = make();
  const got: string[] = [];
  for (let i = 0; i < 6; i++) got.push((await alloc.allocateClusterIp(`default/s${i}`)).value);
  t.same([...got].sort(), ['10.96.0.1', '10.96.0.2', '10.96.0.3', '10.96.0.4', '10.96.0.5', '10.96.0.6']);
  const err = await alloc.allocateClusterIp('default/s6').catch((e: unknown) => e);
  t.ok(isWeftError(err, ErrorCodes.RANGE_EXHAUSTED), 'RANGE_EXHAUSTED');
  t.match((err as Error).message, /service CIDR 10\.96\.0\.0\/29 is exhausted/);
  const kv = await store.get(allocationKey('/weft', 'clusterips', got[0] ?? ''));
  t.equal(kv?.value, 'default/s0', 'the key names the owner');
});

t.test('the scan starts where random says', async (t) => {
  const { alloc } = make({ random: () => 0.5 });
  t.equal((await alloc.allocateClusterIp('default/a')).value, '10.96.0.4');
  t.equal((await alloc.allocateClusterIp('default/b')).value, '10.96.0.5');
});

t.test('requested addresses', async (t) => {
  const { alloc } = make();
  t.same(await alloc.allocateClusterIp('default/a', { requested: '10.96.0.3' }), {
    kind: 'clusterips',
    value: '10.96.0.3',
    created: true,
  });
  t.same(
    await alloc.allocateClusterIp('default/a', { requested: '10.96.0.3' }),
    { kind: 'clusterips', value: '10.96.0.3', created: false },
    'the owner gets its own back, not created',
  );
  const taken = await alloc
    .allocateClusterIp('default/b', { requested: '10.96.0.3' })
    .catch((e: unknown) => e);
  t.ok(isWeftError(taken, ErrorCodes.ALREADY_EXISTS));
  t.match(
    (taken as Error).message,
    /default\/b: field spec\.clusterIP: 10\.96\.0\.3 is already allocated to default\/a/,
  );
  for (const ip of ['10.96.0.0', '10.96.0.7', '10.97.0.1']) {
    const e = await alloc.allocateClusterIp('default/b', { requested: ip }).catch((x: unknown) => x);
    t.ok(isWeftError(e, ErrorCodes.INVALID_ARGUMENT), `${ip} refused`);
    t.match((e as Error).message, /is not in the service CIDR 10\.96\.0\.0\/29/);
  }
  const v6 = await alloc.allocateClusterIp('default/b', { requested: 'fd00::1' }).catch((x: unknown) => x);
  t.match((v6 as Error).message, /not in the service CIDR/);
});

t.test('node ports: requested, excluded, exhausted', async (t) => {
  const { alloc } = make();
  t.equal((await alloc.allocateNodePort('default/a', { requested: 30001 })).value, '30001');
  const a2 = await alloc.allocateNodePort('default/a', { exclude: [30001] });
  t.not(a2.value, '30001');
  t.equal(a2.created, true);
  const a3 = await alloc.allocateNodePort('default/b');
  t.not(a3.value, a2.value);
  const err = await alloc.allocateNodePort('default/c').catch((e: unknown) => e);
  t.ok(isWeftError(err, ErrorCodes.RANGE_EXHAUSTED));
  t.match((err as Error).message, /node-port range 30000-30002 is exhausted/);
  const out = await alloc.allocateNodePort('default/c', { requested: 31000 }).catch((e: unknown) => e);
  t.match((out as Error).message, /31000 is not in the node-port range 30000-30002/);
});

t.test('release frees only what the owner holds; rollback frees only what was created', async (t) => {
  const { store, alloc } = make();
  const a = await alloc.allocateClusterIp('default/a', { requested: '10.96.0.1' });
  t.equal(await alloc.release('clusterips', '10.96.0.1', 'default/b'), false, 'not the owner');
  t.ok(await store.get(allocationKey('/weft', 'clusterips', '10.96.0.1')));
  const again = await alloc.allocateClusterIp('default/a', { requested: '10.96.0.1' });
  await alloc.rollback([again], 'default/a');
  t.ok(await store.get(allocationKey('/weft', 'clusterips', '10.96.0.1')), 'pre-existing kept on rollback');
  await alloc.rollback([a], 'default/a');
  t.notOk(await store.get(allocationKey('/weft', 'clusterips', '10.96.0.1')), 'created one freed');
  await alloc.allocateClusterIp('default/a');
  await alloc.allocateNodePort('default/a');
  await alloc.allocateNodePort('default/other');
  const freed = await alloc.releaseAll('default/a');
  t.equal(freed.length, 2);
  t.same(
    (await alloc.ownedBy('default/other')).map((x) => x.kind),
    ['nodeports'],
  );
});

t.test("an owner's leftover is adopted before anything new is taken", async (t) => {
  const { alloc } = make();
  const first = await alloc.allocateClusterIp('default/a');
  const second = await alloc.allocateClusterIp('default/a');
  t.equal(second.value, first.value);
  t.equal(second.created, false);
});

t.test('20 concurrent allocations never share a value', async (t) => {
  const { alloc } = make({ serviceCidrs: ['10.96.0.0/27'], random: () => 0 });
  const got = await Promise.all(
    Array.from({ length: 20 }, (_, i) => alloc.allocateClusterIp(`default/c${i}`).then((a) => a.value)),
  );
  t.equal(new Set(got).size, 20);
});

t.test('leaked allocations are reclaimed only when the owner does not hold them', async (t) => {
  const holders = new Map<string, boolean>();
  const { store, alloc } = make({
    serviceCidrs: ['10.96.0.0/30'],
    ownerHolds: async (_kind, value, owner) => holders.get(`${owner}=${value}`) ?? false,
  });
  // A /30 has two usable addresses.
  const a = await alloc.allocateClusterIp('default/live');
  const b = await alloc.allocateClusterIp('default/crashed');
  holders.set(`default/live=${a.value}`, true);
  const got = await alloc.allocateClusterIp('default/new');
  t.equal(got.value, b.value, 'the leak is reclaimed');
  t.equal((await store.get(allocationKey('/weft', 'clusterips', b.value)))?.value, 'default/new');
  holders.set(`default/new=${b.value}`, true);
  const err = await alloc.allocateClusterIp('default/more').catch((e: unknown) => e);
  t.ok(isWeftError(err, ErrorCodes.RANGE_EXHAUSTED), 'held values are never reclaimed');

  const req = await alloc.allocateClusterIp('default/more', { requested: a.value }).catch((e: unknown) => e);
  t.ok(isWeftError(req, ErrorCodes.ALREADY_EXISTS), 'a requested value held by its owner is refused');
  holders.set(`default/live=${a.value}`, false);
  t.equal((await alloc.allocateClusterIp('default/more', { requested: a.value })).value, a.value);
});

t.test('a key that changes during the grace period is not reclaimed', async (t) => {
  const store = new MemoryStore();
  let calls = 0;
  const alloc = new ServiceAllocator({
    store,
    registryPrefix: '/weft',
    serviceCidrs: ['10.96.0.0/30'],
    reclaimGraceMs: 20,
    ownerHolds: async (_k, value, owner) => {
      if (calls++ === 0) {
        // While the reclaimer waits, another allocator legitimately re-takes the value.
        const key = allocationKey('/weft', 'clusterips', value);
        const kv = await store.get(key);
        if (kv) await store.delete(key, { modRevision: kv.modRevision });
        await store.create(key, `${owner}-again`);
      }
      return false;
    },
  });
  await alloc.allocateClusterIp('default/x', { requested: '10.96.0.1' });
  await alloc.allocateClusterIp('default/y', { requested: '10.96.0.2' });
  const err = await alloc.allocateClusterIp('default/z', { requested: '10.96.0.1' }).catch((e: unknown) => e);
  t.ok(isWeftError(err, ErrorCodes.ALREADY_EXISTS), String(err));
});

t.test('IPv6 and dual-stack ranges', async (t) => {
  const { alloc } = make({ serviceCidrs: ['10.96.0.0/29', 'fd00:10:96::/112'] });
  const v6 = await alloc.allocateClusterIp('default/a', { family: 6 });
  t.match(v6.value, /^fd00:10:96::/);
  t.equal(
    (await alloc.allocateClusterIp('default/b', { requested: 'fd00:10:96:0:0:0:0:5' })).value,
    'fd00:10:96::5',
    'canonical form',
  );
  t.throws(
    () =>
      new ServiceAllocator({
        store: new MemoryStore(),
        registryPrefix: '/weft',
        serviceCidrs: ['10.0.0.0/8', '10.96.0.0/12'],
      }),
    /one CIDR, or two of different families/,
  );
  t.throws(
    () =>
      new ServiceAllocator({
        store: new MemoryStore(),
        registryPrefix: '/weft',
        serviceCidrs: ['10.0.0.0/31'],
      }),
    /too small/,
  );
});

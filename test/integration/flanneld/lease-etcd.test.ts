/**
 * The lease lifecycle against a real etcd (Debian's etcd 3.4) on loopback: the exact key, JSON
 * and etcd lease flannel expects (read back with etcdctl), an operator's reservation left
 * without a lease, a create race between two clients, and the re-take after the key is deleted.
 */
import { rmSync } from 'node:fs';
import t, { type Test } from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import type { Lease } from '../../../src/flanneld/lease/index.js';
import { encodeLeaseAttrs, parseNetConfig } from '../../../src/ipam/index.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { openStore, type Store } from '../../../src/registry/index.js';
import { run } from '../../lab/exec.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalEtcd } from '../../lab/servers.js';
import {
  HookedStore,
  captureLogs,
  createBarrier,
  feedWatch,
  managerWith,
  vxlanAttrs,
} from '../../unit/flanneld/lease/fixtures/lease-fixtures.js';

t.setTimeout(110_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
const etcd = await startLocalEtcd(dir);
t.teardown(async () => {
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
});

const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
const single = parseNetConfig({ Network: '10.0.0.0/28', SubnetLen: 30, SubnetMax: '10.0.0.4' });
const me = vxlanAttrs('192.168.64.3');
const other = vxlanAttrs('192.168.64.4', 'aa:aa:aa:aa:aa:aa');
const quiet = silentLogger();
/** etcd grants whole seconds, at least its minimum TTL; renew every 4 s. */
const TTL = { ttlSeconds: 10, renewMarginSeconds: 6 };

async function etcdctl(...args: string[]): Promise<string> {
  const r = await run('etcdctl', ['--endpoints', etcd.endpoint, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  return r.stdout;
}

/** The key as etcd has it: value, and the TTL of its etcd lease (0 for none). */
async function inEtcd(key: string): Promise<{ value: string; leaseTtl: number } | undefined> {
  const out = await etcdctl('get', key, '-w', 'json');
  const kv = (JSON.parse(out) as { kvs?: { value: string }[] }).kvs?.[0];
  if (!kv) return undefined;
  const value = Buffer.from(kv.value, 'base64').toString('utf8');
  // Lease IDs are 64-bit: read them from the text, JSON.parse would round them.
  const lease = BigInt(/"lease":(\d+)/.exec(out)?.[1] ?? '0');
  if (lease === 0n) return { value, leaseTtl: 0 };
  const ttl = await etcdctl('lease', 'timetolive', lease.toString(16), '-w', 'json');
  return { value, leaseTtl: Number(/"granted-ttl":(\d+)/.exec(ttl)?.[1] ?? 0) };
}

async function open(t: Test): Promise<Store> {
  const store = await openStore({ registry: 'etcd', etcd: { endpoints: [etcd.endpoint] }, logger: quiet });
  t.teardown(() => store.close());
  return store;
}

t.test('acquire: flannel key and JSON in etcd, attached to an etcd lease', async (t) => {
  const store = await open(t);
  const prefix = '/coreos.com/network';
  const { manager: m } = managerWith({ store, config, attrs: me, prefix, logger: quiet, ...TTL });
  t.teardown(() => m.release());
  const lease = await m.acquire();
  t.match(lease.path, /^\/coreos\.com\/network\/subnets\/10\.244\.\d+\.0-24$/);
  t.same(await inEtcd(lease.path), {
    value:
      '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
    leaseTtl: 10,
  });
  const listed = await etcdctl('get', '--prefix', '--keys-only', `${prefix}/subnets/`);
  t.same(listed.split('\n').filter(Boolean), [lease.path], 'one key under subnets/');
});

t.test('a reservation made with etcdctl stays without a lease', async (t) => {
  const store = await open(t);
  const prefix = '/reserved/network';
  const key = `${prefix}/subnets/10.244.42.0-24`;
  await etcdctl('put', key, encodeLeaseAttrs(vxlanAttrs('192.168.64.3', '00:00:00:00:00:01')));
  const { manager: m } = managerWith({ store, config, attrs: me, prefix, logger: quiet, ...TTL });
  t.teardown(() => m.close());
  const lease = await m.acquire();
  t.equal(lease.path, key);
  t.equal(lease.reservation, true);
  t.same(await inEtcd(key), { value: encodeLeaseAttrs(me), leaseTtl: 0 }, 'value updated, still no lease');
  t.equal(await m.renewNow(), true);
  t.equal((await inEtcd(key))?.leaseTtl, 0, 'still no lease after a renewal');
});

t.test('two clients race for the only free subnet: exactly one wins', async (t) => {
  const prefix = '/race/network';
  const barrier = createBarrier(2);
  const stores = [new HookedStore(await open(t)), new HookedStore(await open(t))];
  for (const s of stores) s.beforeCreate = barrier;
  const managers = [me, other].map((attrs, i) => {
    const { manager } = managerWith({
      store: stores[i] as Store,
      config: single,
      attrs,
      prefix,
      logger: quiet,
      ...TTL,
    });
    t.teardown(() => manager.close());
    return manager;
  });
  const results = await Promise.allSettled(managers.map((m) => m.acquire()));
  const won = results.filter((r): r is PromiseFulfilledResult<Lease> => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.equal(won.length, 1, 'one winner');
  t.match(lost[0]?.reason, { code: ErrorCodes.OUT_OF_SUBNETS });
  t.same(
    stores.map((s) => s.creates),
    [1, 1],
    'both tried',
  );
  const key = `${prefix}/subnets/10.0.0.4-30`;
  t.equal((await inEtcd(key))?.value, won[0]?.value.value, "the winner's value");
});

t.test('own key deleted with etcdctl: the same subnet is re-taken', async (t) => {
  const store = await open(t);
  const prefix = '/retake/network';
  const logs = captureLogs();
  const { manager: m, events } = managerWith({
    store,
    config,
    attrs: me,
    prefix,
    logger: logs.logger,
    ...TTL,
  });
  t.teardown(() => m.release());
  const lease = await m.acquire();
  const stop = feedWatch(store, m, prefix);
  t.teardown(stop);
  const retaken = events.next('retaken', 10_000);
  await etcdctl('del', lease.path);
  const { lease: again } = await retaken;
  t.equal(again.key, lease.key, 'same subnet');
  t.same(await inEtcd(lease.path), { value: lease.value, leaseTtl: 10 }, 'back, with a fresh etcd lease');
  t.ok(logs.messages().includes(`re-took subnet ${lease.subnets.ipv4?.toString()} after loss`), 'logged');
  const listed = await etcdctl('get', '--prefix', '--keys-only', `${prefix}/subnets/`);
  t.same(listed.split('\n').filter(Boolean), [lease.path], 'still one key');
});

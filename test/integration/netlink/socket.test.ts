/**
 * The request socket: concurrent dumps, errors that name the operation and the errno, deadlines,
 * and close().
 */
import { createNetlink, createRtNetlink, Protocol } from 'netlink';
import { ErrorCodes, WeftError } from '../../../src/errors/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { errnoName, openNetlink, type Transport } from '../../../src/netlink/index.js';
import { runInNetns } from '../../helpers/netns-test.js';
import { run } from '../../lab/exec.js';
import { ip } from './fixtures/iproute.js';

/** The WeftError a promise rejects with (fails the test when it resolves or throws something else). */
async function rejection(p: Promise<unknown>): Promise<WeftError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof WeftError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

runInNetns(import.meta.url, async (t) => {
  const nl = openNetlink({ logger: silentLogger() });
  t.teardown(() => nl.close());

  await ip('link', 'add', 'e0', 'type', 'veth', 'peer', 'name', 'e1');
  await ip('addr', 'add', '192.0.2.1/24', 'dev', 'e0');
  await ip('link', 'set', 'e0', 'up');
  await ip('link', 'set', 'e1', 'up');
  await ip(
    'link',
    'add',
    'flannel.1',
    'type',
    'vxlan',
    'id',
    '1',
    'local',
    '192.0.2.1',
    'dev',
    'e0',
    'nolearning',
  );
  await ip('link', 'set', 'flannel.1', 'up');
  const vx = await nl.links.get('flannel.1');
  if (!vx) throw new Error('flannel.1 missing');

  await t.test('20 concurrent dumps, mixed with writes, on one socket', async (t) => {
    // Enough links that a dump takes several reads, so requests really overlap in the kernel.
    const batch = Array.from({ length: 300 }, (_, i) => `link add cb${i} type bridge`).join('\n');
    await run('ip', ['-batch', '-'], { input: `${batch}\n` });

    // Precondition: this load breaks the library's own socket (EBUSY, or a torn multipart).
    const raw = createRtNetlink();
    const rawResults = await Promise.allSettled(Array.from({ length: 20 }, () => raw.getLinks()));
    raw.socket.close();
    t.ok(
      rawResults.some((r) => r.status === 'rejected'),
      'concurrent dumps fail on an unserialised socket',
    );

    const sequential = {
      links: await nl.links.list(),
      routes: await nl.routes.list({ table: 'all' }),
    };
    const writes = Array.from({ length: 10 }, (_, i) =>
      nl.addresses.add({ dev: 'e1', address: `198.51.100.${i + 1}`, prefixLen: 32 }),
    );
    const dumps = Array.from({ length: 20 }, (_, i) => {
      switch (i % 5) {
        case 0:
          return nl.links.list();
        case 1:
          return nl.routes.list({ table: 'all' });
        case 2:
          return nl.addresses.list();
        case 3:
          return nl.neighbours.list();
        default:
          return nl.fdb.list();
      }
    });
    const results = await Promise.allSettled([...dumps, ...writes]);
    const failed = results.filter((r) => r.status === 'rejected');
    t.same(failed, [], 'every request succeeded');
    const values = results.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
    for (let i = 0; i < 20; i += 5) t.same(values[i], sequential.links, `links dump ${i} complete`);
    const addrs = await nl.addresses.list({ dev: 'e1', family: 'inet' });
    t.equal(addrs.length, 10, 'all concurrent writes applied');
    // Routes change with the writes above (local routes), so just require whole, decoded dumps.
    for (let i = 1; i < 20; i += 5) t.ok(Array.isArray(values[i]) && (values[i] as unknown[]).length > 0);
    t.ok(sequential.routes.length > 0);
  });

  await t.test('500 concurrent writes: replies never overflow the receive buffer', async (t) => {
    // Unbounded, a few hundred ACKs overflow the socket and netlink 0.3.0 aborts the process.
    await ip('link', 'add', 'burst0', 'type', 'bridge');
    const writes = Array.from({ length: 500 }, (_, i) =>
      nl.addresses.add({ dev: 'burst0', address: `10.77.${i >> 8}.${i & 255}`, prefixLen: 32 }),
    );
    const results = await Promise.allSettled(writes);
    t.equal(results.filter((r) => r.status === 'fulfilled').length, 500);
    t.equal((await nl.addresses.list({ dev: 'burst0', family: 'inet' })).length, 500);
    await nl.links.delete('burst0');
  });

  await t.test('kernel errors carry the errno name and the operation', async (t) => {
    await nl.addresses.add({ dev: 'flannel.1', address: '10.244.1.0', prefixLen: 32 });
    const exists = await rejection(
      nl.addresses.add({ dev: 'flannel.1', address: '10.244.1.0', prefixLen: 32 }),
    );
    t.equal(exists.code, ErrorCodes.NETLINK);
    t.equal(exists.message, 'netlink addAddress 10.244.1.0/32 dev flannel.1: EEXIST');
    t.same(exists.details, { op: 'addAddress', target: '10.244.1.0/32 dev flannel.1', errno: 'EEXIST' });

    const missing = await rejection(nl.routes.delete({ dst: '10.99.0.0/24' }));
    t.equal(missing.message, 'netlink deleteRoute 10.99.0.0/24: ESRCH');
    t.equal(missing.details.errno, 'ESRCH');

    const route = { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1', onlink: true };
    await nl.routes.add(route);
    const dup = await rejection(nl.routes.add(route));
    t.equal(dup.message, 'netlink addRoute 10.244.2.0/24 via 10.244.2.0 dev flannel.1: EEXIST');
    // Given by index, the device is still named in the error.
    const dupByIndex = await rejection(nl.routes.add({ ...route, dev: vx.index }));
    t.equal(dupByIndex.message, 'netlink addRoute 10.244.2.0/24 via 10.244.2.0 dev flannel.1: EEXIST');
    t.equal(dupByIndex.details.op, 'addRoute');

    // Without onlink the gateway is not reachable: the kernel refuses.
    const unreachable = await rejection(
      nl.routes.add({ dst: '10.244.3.0/24', gateway: '10.244.3.0', dev: 'flannel.1' }),
    );
    t.match(unreachable.details, { op: 'addRoute', errno: /^E[A-Z]+$/ });

    const noDev = await rejection(nl.routes.add({ ...route, dev: 'flannel.9' }));
    t.equal(noDev.message, 'netlink addRoute 10.244.2.0/24 via 10.244.2.0 dev flannel.9: ENODEV');

    const noNeigh = await rejection(nl.neighbours.delete({ dev: 'flannel.1', dst: '10.244.7.0' }));
    t.equal(noNeigh.message, 'netlink deleteNeighbour 10.244.7.0 dev flannel.1: ENOENT');

    const noFdb = await rejection(
      nl.fdb.delete({ dev: 'flannel.1', lladdr: '0a:58:0a:f4:07:00', dst: '192.0.2.7' }),
    );
    t.equal(noFdb.message, 'netlink deleteFdb 0a:58:0a:f4:07:00 dev flannel.1 dst 192.0.2.7: ENOENT');

    const noAddr = await rejection(nl.addresses.delete({ dev: 'e0', address: '192.0.2.99', prefixLen: 24 }));
    t.equal(noAddr.message, 'netlink deleteAddress 192.0.2.99/24 dev e0: EADDRNOTAVAIL');

    const dupLink = await rejection(nl.links.createBridge({ name: 'flannel.1' }));
    t.equal(dupLink.message, 'netlink createLink flannel.1 type bridge: EEXIST');

    const noLink = await rejection(nl.links.delete('nosuch0'));
    t.equal(noLink.message, 'netlink deleteLink nosuch0: ENODEV');
    t.equal(await nl.links.get('nosuch0'), undefined);
    t.equal(await nl.links.get(99_999), undefined);

    const badMtu = await rejection(nl.links.setMtu('e0', 10));
    t.equal(badMtu.message, 'netlink setLink e0 mtu 10: EINVAL');
  });

  await t.test('bad arguments fail before reaching the kernel', async (t) => {
    const bad = [
      nl.routes.add({ dst: '10.0.0.0/33', dev: 'e0' }),
      nl.routes.add({ dst: 'not-an-ip/8', dev: 'e0' }),
      nl.routes.add({ dst: '10.0.0.0/8', gateway: 'fe80::1', dev: 'e0' }),
      nl.neighbours.add({ dev: 'e0', dst: '192.0.2.9' }),
      nl.fdb.add({ dev: 'flannel.1', lladdr: '0a:58:0a' }),
      nl.addresses.add({ dev: 'e0', address: '192.0.2.9', prefixLen: 40 }),
      nl.links.createVxlan({ name: 'vx9', id: 1 << 24 }),
    ];
    for (const p of bad) t.equal((await rejection(p)).code, ErrorCodes.INVALID_ARGUMENT);
  });

  await t.test('errno names come from os.constants.errno', async (t) => {
    t.equal(errnoName(-17), 'EEXIST');
    t.equal(errnoName(3), 'ESRCH');
    t.equal(errnoName(-95), 'EOPNOTSUPP');
    t.equal(errnoName(-11), 'EAGAIN');
    t.equal(errnoName(-4095), 'E4095');
  });

  await t.test('a request without a reply times out, naming the op; the socket recovers', async (t) => {
    // A second userspace socket that never answers stands in for a stuck kernel: the first
    // transport sends every request to it instead of to the kernel (port 0).
    const silent = createNetlink(Protocol.ROUTE);
    t.teardown(() => silent.close());
    let opened = 0;
    const openTransport = (): Transport => {
      const real = createNetlink(Protocol.ROUTE);
      if (opened++ > 0) return real;
      return {
        on: real.on.bind(real),
        close: real.close.bind(real),
        request: (type, data, options) =>
          real.request(type, data, { ...options, port: silent.address().port }),
      };
    };
    const stuck = openNetlink({ logger: silentLogger(), timeoutMs: 200, openTransport });
    t.teardown(() => stuck.close());
    const started = Date.now();
    // The dump runs alone, so the get waits behind it, then goes out on the replacement socket.
    const [dump, get] = await Promise.allSettled([stuck.links.list(), stuck.links.get('flannel.1')]);
    t.equal(dump.status, 'rejected');
    const err = dump.status === 'rejected' ? (dump.reason as WeftError) : undefined;
    t.equal(err?.code, ErrorCodes.TIMEOUT);
    t.equal(err?.message, 'netlink listLinks: no reply within 200 ms');
    t.same(err?.details, { op: 'listLinks', target: '', timeoutMs: 200 });
    t.ok(Date.now() - started >= 190, 'waited for the deadline');
    t.equal(opened, 2, 'the socket was replaced after the timeout');
    t.equal(
      get.status === 'fulfilled' ? get.value?.index : undefined,
      vx.index,
      'the queued request succeeded',
    );
    t.ok(
      (await stuck.links.list()).some((l) => l.name === 'flannel.1'),
      'the new socket answers dumps',
    );
  });

  await t.test('close() rejects queued requests and later ones with CLOSED', async (t) => {
    const other = openNetlink({ logger: silentLogger() });
    const pending = [other.links.list(), other.routes.list(), other.addresses.list()];
    other.close();
    other.close();
    for (const p of pending) t.equal((await rejection(p)).code, ErrorCodes.CLOSED);
    const after = await rejection(other.links.list());
    t.equal(after.code, ErrorCodes.CLOSED);
    t.equal(after.message, 'netlink listLinks: socket closed');
    t.ok(other.closed);
  });
});

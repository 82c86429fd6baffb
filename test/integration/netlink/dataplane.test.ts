/**
 * Acceptance: flannel's VXLAN dataplane for one remote node, programmed through src/netlink
 * inside a throwaway namespace, checked through the wrapper's own dumps and through iproute2's
 * JSON, then removed piece by piece and checked gone both ways.
 */
import { silentLogger } from '../../../src/log/index.js';
import {
  openNetlink,
  type IpFamily,
  type Link,
  type Neighbour,
  type Netlink,
} from '../../../src/netlink/index.js';
import { runInNetns } from '../../helpers/netns-test.js';
import { bridgeFdb, ipAddrs, ipLinks, ipNeighs, ipRoutes } from './fixtures/iproute.js';

const UNDERLAY_IP = '192.0.2.1';
const REMOTE_PUBLIC_IP = '192.0.2.2';
const REMOTE_VTEP_MAC = '0a:58:0a:f4:02:00';
const LOCAL_SUBNET_ADDR = '10.244.1.0';
const REMOTE_SUBNET = '10.244.2.0/24';
const REMOTE_SUBNET_ADDR = '10.244.2.0';
const GW_ROUTE = '198.51.100.0/24';
const GW = '192.0.2.254';

/**
 * Entries as `ip neigh show` lists them: it hides NOARP ones, which the kernel adds by itself
 * for multicast destinations (IGMP/MLD traffic once a device is up).
 */
async function neighbours(nl: Netlink, dev: string, family: IpFamily): Promise<Neighbour[]> {
  return (await nl.neighbours.list({ dev, family })).filter((n) => n.state !== 'noarp');
}

runInNetns(import.meta.url, async (t) => {
  const nl = openNetlink({ logger: silentLogger(), timeoutMs: 5_000 });
  t.teardown(() => nl.close());
  let underlay!: Link;
  let vx!: Link;

  await t.test('underlay: veth pair with an address, up', async (t) => {
    const { link, peer } = await nl.links.createVeth({ name: 'u0', peer: 'u1' });
    underlay = link;
    t.equal(link.kind, 'veth');
    t.equal(peer.name, 'u1');
    await nl.addresses.add({ dev: 'u0', address: UNDERLAY_IP, prefixLen: 24 });
    await nl.links.setUp('u0');
    await nl.links.setUp('u1');
    const [ip] = await ipLinks('u0');
    t.ok(ip?.flags.includes('UP'), 'ip shows u0 UP');
  });

  await t.test('vxlan flannel.1: id 1, local, dev, port 8472, nolearning', async (t) => {
    vx = await nl.links.createVxlan({
      name: 'flannel.1',
      id: 1,
      local: UNDERLAY_IP,
      dev: 'u0',
      port: 8472,
      learning: false,
    });
    await nl.links.setUp('flannel.1');
    const mine = await nl.links.get('flannel.1');
    t.match(mine, {
      index: vx.index,
      name: 'flannel.1',
      kind: 'vxlan',
      up: true,
      mtu: 1450,
      vxlan: { id: 1, local: UNDERLAY_IP, dev: underlay.index, port: 8472, learning: false, gbp: false },
    });
    t.match(mine?.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    const listed = (await nl.links.list()).find((l) => l.name === 'flannel.1');
    t.same(listed, mine, 'list() and get() agree');

    const [ip] = await ipLinks('flannel.1');
    t.ok(ip, 'ip sees flannel.1');
    t.equal(ip?.ifindex, vx.index);
    t.ok(ip?.flags.includes('UP'));
    t.equal(ip?.mtu, mine?.mtu);
    t.equal(ip?.address, mine?.mac);
    t.equal(ip?.linkinfo?.info_kind, 'vxlan');
    t.match(ip?.linkinfo?.info_data, { id: 1, local: UNDERLAY_IP, link: 'u0', port: 8472, learning: false });
    t.notOk(ip?.linkinfo?.info_data?.gbp, 'no gbp');
  });

  await t.test('address 10.244.1.0/32 on flannel.1', async (t) => {
    await nl.addresses.add({ dev: 'flannel.1', address: LOCAL_SUBNET_ADDR, prefixLen: 32 });
    const mine = await nl.addresses.list({ dev: 'flannel.1', family: 'inet' });
    t.same(mine, [{ ifindex: vx.index, family: 'inet', address: LOCAL_SUBNET_ADDR, prefixLen: 32 }]);
    const [ip] = await ipAddrs('flannel.1');
    t.same(
      ip?.addr_info.filter((a) => a.family === 'inet').map((a) => [a.local, a.prefixlen]),
      [[LOCAL_SUBNET_ADDR, 32]],
    );
  });

  await t.test('neighbour: remote subnet address lladdr remote VTEP MAC, nud permanent', async (t) => {
    await nl.neighbours.add({ dev: 'flannel.1', dst: REMOTE_SUBNET_ADDR, lladdr: REMOTE_VTEP_MAC });
    const mine = await neighbours(nl, 'flannel.1', 'inet');
    t.same(mine, [
      {
        ifindex: vx.index,
        family: 'inet',
        state: 'permanent',
        flags: [],
        dst: REMOTE_SUBNET_ADDR,
        lladdr: REMOTE_VTEP_MAC,
      },
    ]);
    const ip = await ipNeighs('flannel.1');
    t.same(
      ip.map((n) => [n.dst, n.lladdr, n.state]),
      [[REMOTE_SUBNET_ADDR, REMOTE_VTEP_MAC, ['PERMANENT']]],
    );
  });

  await t.test('FDB: remote VTEP MAC dst remote public IP, self permanent', async (t) => {
    await nl.fdb.add({ dev: 'flannel.1', lladdr: REMOTE_VTEP_MAC, dst: REMOTE_PUBLIC_IP });
    const mine = (await nl.fdb.list({ dev: 'flannel.1' })).filter((e) => e.lladdr === REMOTE_VTEP_MAC);
    t.same(mine, [
      {
        ifindex: vx.index,
        family: 'bridge',
        state: 'permanent',
        flags: ['self'],
        dst: REMOTE_PUBLIC_IP,
        lladdr: REMOTE_VTEP_MAC,
      },
    ]);
    const ip = (await bridgeFdb('flannel.1')).filter((e) => e.mac === REMOTE_VTEP_MAC);
    t.same(
      ip.map((e) => [e.mac, e.dst, e.flags, e.state]),
      [[REMOTE_VTEP_MAC, REMOTE_PUBLIC_IP, ['self'], 'permanent']],
    );
  });

  await t.test('route: remote subnet via its network address dev flannel.1 onlink', async (t) => {
    await nl.routes.add({ dst: REMOTE_SUBNET, gateway: REMOTE_SUBNET_ADDR, dev: 'flannel.1', onlink: true });
    const mine = (await nl.routes.list({ family: 'inet' })).filter((r) => r.dst === REMOTE_SUBNET);
    t.match(mine, [
      {
        family: 'inet',
        dst: REMOTE_SUBNET,
        gateway: REMOTE_SUBNET_ADDR,
        ifindex: vx.index,
        onlink: true,
        table: 254,
        type: 'unicast',
        scope: 'universe',
      },
    ]);
    t.equal(mine.length, 1);
    const ip = (await ipRoutes()).filter((r) => r.dst === REMOTE_SUBNET);
    t.same(
      ip.map((r) => [r.dst, r.gateway, r.dev, r.flags]),
      [[REMOTE_SUBNET, REMOTE_SUBNET_ADDR, 'flannel.1', ['onlink']]],
    );
  });

  await t.test('route via a gateway on a connected subnet', async (t) => {
    await nl.routes.add({ dst: GW_ROUTE, gateway: GW });
    const mine = (await nl.routes.list({ family: 'inet', dev: 'u0' })).filter((r) => r.dst === GW_ROUTE);
    t.match(mine, [{ dst: GW_ROUTE, gateway: GW, ifindex: underlay.index, onlink: false, table: 254 }]);
    t.equal(mine.length, 1);
    const ip = (await ipRoutes()).filter((r) => r.dst === GW_ROUTE);
    t.same(
      ip.map((r) => [r.dst, r.gateway, r.dev, r.flags]),
      [[GW_ROUTE, GW, 'u0', []]],
    );
  });

  await t.test('replace variants are idempotent and converge', async (t) => {
    await nl.addresses.replace({ dev: 'flannel.1', address: LOCAL_SUBNET_ADDR, prefixLen: 32 });
    await nl.neighbours.replace({ dev: 'flannel.1', dst: REMOTE_SUBNET_ADDR, lladdr: REMOTE_VTEP_MAC });
    await nl.fdb.replace({ dev: 'flannel.1', lladdr: REMOTE_VTEP_MAC, dst: REMOTE_PUBLIC_IP });
    await nl.routes.replace({ dst: REMOTE_SUBNET, gateway: REMOTE_SUBNET_ADDR, dev: vx.index, onlink: true });
    t.equal((await nl.addresses.list({ dev: 'flannel.1', family: 'inet' })).length, 1);
    t.equal((await neighbours(nl, 'flannel.1', 'inet')).length, 1);
    t.equal((await bridgeFdb('flannel.1')).filter((e) => e.mac === REMOTE_VTEP_MAC).length, 1);
    t.equal((await ipRoutes()).filter((r) => r.dst === REMOTE_SUBNET).length, 1);
    const again = await nl.links.ensureVxlan({ name: 'flannel.1', id: 1, local: UNDERLAY_IP, dev: 'u0' });
    t.equal(again.index, vx.index, 'ensureVxlan keeps a matching device');

    // A replace that changes something really changes it.
    await nl.fdb.replace({ dev: 'flannel.1', lladdr: REMOTE_VTEP_MAC, dst: '192.0.2.3' });
    t.same(
      (await bridgeFdb('flannel.1')).filter((e) => e.mac === REMOTE_VTEP_MAC).map((e) => e.dst),
      ['192.0.2.3'],
    );
    await nl.fdb.replace({ dev: 'flannel.1', lladdr: REMOTE_VTEP_MAC, dst: REMOTE_PUBLIC_IP });
    await nl.neighbours.replace({ dev: 'flannel.1', dst: REMOTE_SUBNET_ADDR, lladdr: '0a:58:0a:f4:02:99' });
    t.same(
      (await ipNeighs('flannel.1')).map((n) => n.lladdr),
      ['0a:58:0a:f4:02:99'],
    );
    await nl.neighbours.replace({ dev: 'flannel.1', dst: REMOTE_SUBNET_ADDR, lladdr: REMOTE_VTEP_MAC });
  });

  await t.test(
    'IPv6: flannel-v6.1 over an IPv6 underlay, with address, neighbour and onlink route',
    async (t) => {
      await nl.addresses.add({ dev: 'u0', address: 'fd00:1::1', prefixLen: 64 });
      const v6 = await nl.links.createVxlan({
        name: 'flannel-v6.1',
        id: 1,
        local: 'fd00:1::1',
        dev: 'u0',
        port: 8473,
      });
      t.match(v6.vxlan, { id: 1, local: 'fd00:1::1', dev: underlay.index, port: 8473 });
      t.match((await ipLinks('flannel-v6.1'))[0]?.linkinfo?.info_data, { id: 1, port: 8473, link: 'u0' });
      await nl.links.setUp(v6.index);
      await nl.addresses.add({ dev: 'flannel-v6.1', address: 'fd00:10:244:1::', prefixLen: 128 });
      t.same(
        await nl.addresses
          .list({ dev: v6.index, family: 'inet6' })
          .then((a) => a.filter((x) => !x.address.startsWith('fe80'))),
        [{ ifindex: v6.index, family: 'inet6', address: 'fd00:10:244:1::', prefixLen: 128 }],
      );
      await nl.neighbours.add({ dev: 'flannel-v6.1', dst: 'fd00:10:244:2::', lladdr: REMOTE_VTEP_MAC });
      t.match(await neighbours(nl, 'flannel-v6.1', 'inet6'), [
        { family: 'inet6', dst: 'fd00:10:244:2::', lladdr: REMOTE_VTEP_MAC, state: 'permanent' },
      ]);
      t.same(
        (await ipNeighs('flannel-v6.1')).map((n) => [n.dst, n.lladdr]),
        [['fd00:10:244:2::', REMOTE_VTEP_MAC]],
      );
      await nl.fdb.add({ dev: 'flannel-v6.1', lladdr: REMOTE_VTEP_MAC, dst: 'fd00:1::2' });
      t.same(
        (await bridgeFdb('flannel-v6.1')).filter((e) => e.mac === REMOTE_VTEP_MAC).map((e) => e.dst),
        ['fd00:1::2'],
      );
      const route = {
        dst: 'fd00:10:244:2::/64',
        gateway: 'fd00:10:244:2::',
        dev: 'flannel-v6.1',
        onlink: true,
      };
      await nl.routes.add(route);
      t.match(
        (await nl.routes.list({ family: 'inet6' })).filter((r) => r.dst === route.dst),
        [{ family: 'inet6', dst: route.dst, gateway: route.gateway, ifindex: v6.index, onlink: true }],
      );
      t.same(
        (await ipRoutes('-6')).filter((r) => r.dst === route.dst).map((r) => [r.gateway, r.dev, r.flags]),
        [[route.gateway, 'flannel-v6.1', ['onlink']]],
      );
      await nl.routes.delete(route);
      await nl.fdb.delete({ dev: 'flannel-v6.1', lladdr: REMOTE_VTEP_MAC, dst: 'fd00:1::2' });
      await nl.neighbours.delete({ dev: 'flannel-v6.1', dst: 'fd00:10:244:2::' });
      await nl.addresses.delete({ dev: 'flannel-v6.1', address: 'fd00:10:244:1::', prefixLen: 128 });
      t.same(
        (await ipRoutes('-6')).filter((r) => r.dst === route.dst),
        [],
      );
      t.same(await ipNeighs('flannel-v6.1'), []);
      t.same(
        (await bridgeFdb('flannel-v6.1')).filter((e) => e.mac === REMOTE_VTEP_MAC),
        [],
      );
      await nl.links.delete('flannel-v6.1');
      t.same(await ipLinks('flannel-v6.1'), []);
    },
  );

  await t.test('remove each, in flannel order, and see it gone both ways', async (t) => {
    await nl.routes.delete({ dst: REMOTE_SUBNET, gateway: REMOTE_SUBNET_ADDR, dev: 'flannel.1' });
    t.equal(
      (await nl.routes.list()).filter((r) => r.dst === REMOTE_SUBNET).length,
      0,
      'route gone (netlink)',
    );
    t.equal((await ipRoutes()).filter((r) => r.dst === REMOTE_SUBNET).length, 0, 'route gone (ip)');

    await nl.routes.delete({ dst: GW_ROUTE });
    t.equal(
      (await nl.routes.list()).filter((r) => r.dst === GW_ROUTE).length,
      0,
      'gateway route gone (netlink)',
    );
    t.equal((await ipRoutes()).filter((r) => r.dst === GW_ROUTE).length, 0, 'gateway route gone (ip)');

    await nl.fdb.delete({ dev: 'flannel.1', lladdr: REMOTE_VTEP_MAC, dst: REMOTE_PUBLIC_IP });
    t.equal(
      (await nl.fdb.list({ dev: 'flannel.1' })).filter((e) => e.lladdr === REMOTE_VTEP_MAC).length,
      0,
      'FDB entry gone (netlink)',
    );
    t.equal(
      (await bridgeFdb('flannel.1')).filter((e) => e.mac === REMOTE_VTEP_MAC).length,
      0,
      'FDB gone (bridge)',
    );

    await nl.neighbours.delete({ dev: 'flannel.1', dst: REMOTE_SUBNET_ADDR });
    t.same(await neighbours(nl, 'flannel.1', 'inet'), [], 'neighbour gone (netlink)');
    t.same(await ipNeighs('flannel.1'), [], 'neighbour gone (ip)');

    await nl.addresses.delete({ dev: 'flannel.1', address: LOCAL_SUBNET_ADDR, prefixLen: 32 });
    t.same(await nl.addresses.list({ dev: 'flannel.1', family: 'inet' }), [], 'address gone (netlink)');
    const [ip] = await ipAddrs('flannel.1');
    t.same(
      ip?.addr_info.filter((a) => a.family === 'inet'),
      [],
      'address gone (ip)',
    );

    // A reconciler may delete what is already gone when it says absence is fine.
    await nl.routes.delete({ dst: REMOTE_SUBNET }, { ignoreMissing: true });
    await nl.fdb.delete({ dev: 'flannel.1', lladdr: REMOTE_VTEP_MAC }, { ignoreMissing: true });
    await nl.neighbours.delete({ dev: 'flannel.1', dst: REMOTE_SUBNET_ADDR }, { ignoreMissing: true });
    await nl.addresses.delete(
      { dev: 'flannel.1', address: LOCAL_SUBNET_ADDR, prefixLen: 32 },
      { ignoreMissing: true },
    );

    await nl.links.delete('flannel.1');
    t.equal(await nl.links.get('flannel.1'), undefined, 'link gone (netlink)');
    t.same(await ipLinks('flannel.1'), [], 'link gone (ip)');
    await nl.links.delete('flannel.1', { ignoreMissing: true });
  });
});

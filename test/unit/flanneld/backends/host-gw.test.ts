/** The host-gw and alloc planners: golden outputs and host-gw's refusal of unreachable remotes. */
import t from 'tap';
import {
  createBackend,
  planAlloc,
  planHostGw,
  type NodeLease,
  type PlanInput,
} from '../../../../src/flanneld/backends/index.js';
import { Cidr, parseNetConfig } from '../../../../src/ipam/index.js';
import { silentLogger } from '../../../../src/log/index.js';
import type { Netlink } from '../../../../src/netlink/index.js';

const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
const hg = (n: number, ip = `192.0.2.${n}`): NodeLease => ({
  key: `10.244.${n}.0-24`,
  subnets: { ipv4: Cidr.parse(`10.244.${n}.0/24`) },
  attrs: { publicIP: ip, backendType: 'host-gw' },
});
const input = (leases: NodeLease[], connected = ['192.0.2.0/24']): PlanInput => ({
  config,
  underlay: { dev: 'eth0', connected },
  own: hg(1),
  leases,
});

t.test('golden: one route per connected remote via its PublicIP on the external interface', async (t) => {
  t.same(planHostGw(input([hg(3), hg(1), hg(2)])), {
    addresses: [],
    neighbours: [],
    fdb: [],
    routes: [
      { dst: '10.244.2.0/24', gateway: '192.0.2.2', dev: 'eth0', onlink: false },
      { dst: '10.244.3.0/24', gateway: '192.0.2.3', dev: 'eth0', onlink: false },
    ],
    owned: { devices: [], routeDevices: ['eth0'], networks: ['10.244.0.0/16'] },
    skipped: [],
    programmed: ['10.244.2.0-24', '10.244.3.0-24'],
  });
});

t.test(
  'a remote that is not directly connected is refused by lease and PublicIP; the others are programmed',
  async (t) => {
    const d = planHostGw(input([hg(2), hg(5, '203.0.113.5'), hg(3)]));
    t.same(d.programmed, ['10.244.2.0-24', '10.244.3.0-24']);
    t.same(
      d.routes.map((r) => r.dst),
      ['10.244.2.0/24', '10.244.3.0/24'],
    );
    t.same(d.skipped, [
      {
        key: '10.244.5.0-24',
        reason:
          'PublicIP 203.0.113.5 is not on a network directly connected to eth0; host-gw needs every node on one ' +
          'L2 network, so no route to 10.244.5.0/24 is installed',
      },
    ]);
  },
);

t.test('connected networks come from the underlay view, including link-scope routes', async (t) => {
  const d = planHostGw(input([hg(5, '203.0.113.5')], ['192.0.2.0/24', '203.0.113.0/24']));
  t.same(d.programmed, ['10.244.5.0-24']);
  t.same(planHostGw(input([hg(2)], [])).programmed, [], 'nothing connected: nothing programmed');
  t.same(planHostGw(input([hg(2)], ['not a cidr'])).programmed, [], 'a malformed view is no connection');
});

t.test('vxlan leases are not host-gw leases', async (t) => {
  const vx = { ...hg(2), attrs: { publicIP: '192.0.2.2', backendType: 'vxlan' } };
  t.match(planHostGw(input([vx])).skipped, [{ key: '10.244.2.0-24', reason: /BackendType "vxlan"/ }]);
});

t.test('prepare: host-gw writes its BackendType and no data; alloc writes neither', async (t) => {
  const ctx = {
    extIface: { name: 'eth0', index: 2, ip: '192.0.2.1', mtu: 9000 },
    netlink: {} as Netlink,
    logger: silentLogger(),
  };
  t.same(await createBackend({ ...ctx, config }).prepare(), {
    backendType: 'host-gw',
    mtu: 9000,
    devices: [],
  });
  const alloc = createBackend({
    ...ctx,
    config: parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'alloc' } }),
  });
  t.same(await alloc.prepare(), { mtu: 9000, devices: [] });
  t.same(alloc.plan(input([hg(2)])), planAlloc());
  t.same(
    planAlloc().owned,
    { devices: [], routeDevices: [], networks: [] },
    'alloc owns nothing, so removes nothing',
  );
});

/** The scoped views of a kernel dump: what weft owns, and the underlay a planner sees. */
import t from 'tap';
import { actualStateOf, underlayOf, type KernelSnapshot } from '../../../../src/flanneld/dataplane/index.js';
import type { Link, Neighbour, Route } from '../../../../src/netlink/index.js';

const links: Link[] = [
  { index: 1, name: 'lo', mtu: 65536, up: true },
  { index: 2, name: 'eth0', kind: 'veth', mtu: 1500, up: true, mac: '02:00:00:00:00:02' },
  { index: 3, name: 'cni0', kind: 'bridge', mtu: 1450, up: true, mac: '02:00:00:00:00:03' },
  { index: 4, name: 'flannel.1', kind: 'vxlan', mtu: 1450, up: true, mac: '02:00:00:00:00:04' },
  { index: 5, name: 'eth1', kind: 'veth', mtu: 1500, up: true },
];
const r = (dst: string, ifindex: number, over: Partial<Route> = {}): Route => ({
  family: dst.includes(':') ? 'inet6' : 'inet',
  dst,
  ifindex,
  onlink: false,
  table: 254,
  type: 'unicast',
  protocol: 'boot',
  scope: 'universe',
  ...over,
});
const n = (
  ifindex: number,
  dst: string,
  state: Neighbour['state'],
  lladdr = '0a:00:00:00:00:01',
): Neighbour => ({
  ifindex,
  family: dst.includes(':') ? 'inet6' : 'inet',
  dst,
  lladdr,
  state,
  flags: [],
});

const snapshot: KernelSnapshot = {
  links,
  addresses: [
    { ifindex: 2, family: 'inet', address: '192.0.2.1', prefixLen: 24 },
    { ifindex: 2, family: 'inet6', address: 'fe80::1', prefixLen: 64 },
    { ifindex: 3, family: 'inet', address: '10.244.1.1', prefixLen: 24 },
    { ifindex: 4, family: 'inet', address: '10.244.1.0', prefixLen: 32 },
    { ifindex: 4, family: 'inet6', address: 'fe80::4', prefixLen: 64 },
  ],
  routes: [
    r('10.244.2.0/24', 4, { gateway: '10.244.2.0', onlink: true }),
    r('10.244.3.0/24', 2, { gateway: '192.0.2.3' }),
    r('10.244.1.0/24', 3, { protocol: 'kernel', scope: 'link' }),
    r('10.244.4.0/24', 5, { gateway: '198.51.100.4' }),
    r('10.244.5.0/24', 4, { type: 'blackhole' }),
    r('198.51.100.0/24', 2, { gateway: '192.0.2.254' }),
    r('192.0.2.0/24', 2, { protocol: 'kernel', scope: 'link' }),
    r('203.0.113.0/24', 2, { scope: 'link' }),
    r('10.244.6.0/24', 2, { scope: 'link' }),
    r('0.0.0.0/0', 2, { scope: 'link' }),
  ],
  neighbours: [
    n(4, '10.244.2.0', 'permanent'),
    n(4, '224.0.0.22', 'noarp', '01:00:5e:00:00:16'),
    n(2, '192.0.2.77', 'permanent'),
  ],
  fdb: [
    {
      ifindex: 4,
      family: 'bridge',
      dst: '192.0.2.2',
      lladdr: '0a:58:0a:f4:02:00',
      state: 'permanent',
      flags: ['self'],
    },
    { ifindex: 3, family: 'bridge', lladdr: '02:00:00:00:00:03', state: 'permanent', flags: ['self'] },
  ],
};
const owned = { devices: ['flannel.1'], routeDevices: ['flannel.1', 'eth0'], networks: ['10.244.0.0/16'] };

t.test('actualStateOf sees only what weft owns', async (t) => {
  t.same(actualStateOf(snapshot, owned), {
    addresses: [{ dev: 'flannel.1', address: '10.244.1.0', prefixLen: 32 }],
    neighbours: [{ dev: 'flannel.1', dst: '10.244.2.0', lladdr: '0a:00:00:00:00:01', state: 'permanent' }],
    fdb: [{ dev: 'flannel.1', lladdr: '0a:58:0a:f4:02:00', dst: '192.0.2.2', state: 'permanent' }],
    routes: [
      { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1', onlink: true },
      { dst: '10.244.3.0/24', gateway: '192.0.2.3', dev: 'eth0', onlink: false },
      { dst: '10.244.6.0/24', dev: 'eth0', onlink: false },
    ],
  });
});

t.test('owning nothing sees nothing', async (t) => {
  t.same(actualStateOf(snapshot, { devices: [], routeDevices: [], networks: [] }), {
    addresses: [],
    neighbours: [],
    fdb: [],
    routes: [],
  });
  t.same(
    actualStateOf(snapshot, { devices: [], routeDevices: ['eth0'], networks: ['not a network'] }).routes,
    [],
  );
});

t.test('underlayOf: address prefixes and link-scope routes of the external interface', async (t) => {
  const eth0 = links[1];
  if (!eth0) throw new Error('fixture');
  t.same(underlayOf(snapshot, eth0, ['10.244.0.0/16']), {
    dev: 'eth0',
    connected: ['192.0.2.0/24', '203.0.113.0/24'],
  });
});

/** Which netlink notifications call for a reconcile: table of events against one desired state. */
import t from 'tap';
import { planVxlan, type NodeLease } from '../../../../src/flanneld/backends/index.js';
import { EventRelevance } from '../../../../src/flanneld/dataplane/index.js';
import { Cidr, parseNetConfig } from '../../../../src/ipam/index.js';
import type { Link, NetlinkEvent, Neighbour, Route } from '../../../../src/netlink/index.js';

const lease = (n: number): NodeLease => ({
  key: `10.244.${n}.0-24`,
  subnets: { ipv4: Cidr.parse(`10.244.${n}.0/24`) },
  attrs: {
    publicIP: `192.0.2.${n}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: `0a:58:0a:f4:0${n}:00` },
  },
});
const desired = planVxlan({
  config: parseNetConfig({ Network: '10.244.0.0/16' }),
  underlay: { dev: 'eth0', connected: ['192.0.2.0/24'] },
  own: lease(1),
  leases: [lease(2)],
});
const links: Link[] = [
  { index: 2, name: 'eth0', mtu: 1500, up: true },
  { index: 3, name: 'cni0', mtu: 1450, up: true },
  { index: 4, name: 'flannel.1', kind: 'vxlan', mtu: 1450, up: true },
];
const route = (over: Partial<Route> = {}): Route => ({
  family: 'inet',
  dst: '10.244.2.0/24',
  gateway: '10.244.2.0',
  ifindex: 4,
  onlink: true,
  table: 254,
  type: 'unicast',
  protocol: 'boot',
  scope: 'universe',
  ...over,
});
const neigh = (over: Partial<Neighbour> = {}): Neighbour => ({
  ifindex: 4,
  family: 'inet',
  dst: '10.244.2.0',
  lladdr: '0a:58:0a:f4:02:00',
  state: 'permanent',
  flags: [],
  ...over,
});
const fdb = (over: Partial<Neighbour> = {}): Neighbour =>
  neigh({ family: 'bridge', dst: '192.0.2.2', flags: ['self'], ...over });

const cases: [string, NetlinkEvent, boolean][] = [
  ['resync', { kind: 'resync', reason: 'overflow' }, true],
  ['desired route deleted', { kind: 'route', action: 'del', route: route() }, true],
  ['desired route added (its own change)', { kind: 'route', action: 'new', route: route() }, false],
  [
    'desired route changed by hand',
    { kind: 'route', action: 'new', route: route({ gateway: '10.244.2.1' }) },
    true,
  ],
  [
    'stale route deleted (its own change)',
    { kind: 'route', action: 'del', route: route({ dst: '10.244.9.0/24' }) },
    false,
  ],
  [
    'stale route added by hand',
    { kind: 'route', action: 'new', route: route({ dst: '10.244.9.0/24' }) },
    true,
  ],
  [
    'route outside the network',
    { kind: 'route', action: 'del', route: route({ dst: '10.99.0.0/16' }) },
    false,
  ],
  ['route on a device not owned', { kind: 'route', action: 'del', route: route({ ifindex: 3 }) }, false],
  [
    'kernel route',
    { kind: 'route', action: 'new', route: route({ dst: '10.244.9.0/24', protocol: 'kernel' }) },
    false,
  ],
  ['desired neighbour deleted', { kind: 'neighbour', action: 'del', neighbour: neigh() }, true],
  ['desired neighbour added', { kind: 'neighbour', action: 'new', neighbour: neigh() }, false],
  [
    'desired neighbour went stale',
    { kind: 'neighbour', action: 'new', neighbour: neigh({ state: 'stale' }) },
    true,
  ],
  [
    'multicast NOARP neighbour',
    { kind: 'neighbour', action: 'new', neighbour: neigh({ dst: '224.0.0.22', state: 'noarp' }) },
    false,
  ],
  [
    'learned neighbour not desired',
    { kind: 'neighbour', action: 'new', neighbour: neigh({ dst: '10.244.7.0', state: 'reachable' }) },
    false,
  ],
  [
    'permanent neighbour not desired',
    { kind: 'neighbour', action: 'new', neighbour: neigh({ dst: '10.244.7.0' }) },
    true,
  ],
  [
    'neighbour on the underlay',
    { kind: 'neighbour', action: 'del', neighbour: neigh({ ifindex: 2 }) },
    false,
  ],
  ['desired FDB entry deleted', { kind: 'neighbour', action: 'del', neighbour: fdb() }, true],
  ['desired FDB entry added', { kind: 'neighbour', action: 'new', neighbour: fdb() }, false],
  [
    'FDB entry pointed elsewhere',
    { kind: 'neighbour', action: 'new', neighbour: fdb({ dst: '192.0.2.99' }) },
    true,
  ],
  [
    'stale FDB entry deleted',
    { kind: 'neighbour', action: 'del', neighbour: fdb({ lladdr: '0a:00:00:00:00:09' }) },
    false,
  ],
  ['owned device changed', { kind: 'link', action: 'new', link: links[2]! }, true],
  ['external interface deleted', { kind: 'link', action: 'del', link: links[0]! }, true],
  ['other device', { kind: 'link', action: 'new', link: links[1]! }, false],
  [
    'address on the external interface',
    {
      kind: 'address',
      action: 'del',
      address: { ifindex: 2, family: 'inet', address: '192.0.2.1', prefixLen: 24 },
    },
    true,
  ],
  [
    'own address added',
    {
      kind: 'address',
      action: 'new',
      address: { ifindex: 4, family: 'inet', address: '10.244.1.0', prefixLen: 32 },
    },
    false,
  ],
  [
    'own address deleted',
    {
      kind: 'address',
      action: 'del',
      address: { ifindex: 4, family: 'inet', address: '10.244.1.0', prefixLen: 32 },
    },
    true,
  ],
  [
    'link-local address',
    {
      kind: 'address',
      action: 'new',
      address: { ifindex: 4, family: 'inet6', address: 'fe80::1', prefixLen: 64 },
    },
    false,
  ],
];

t.test('relevance of notifications', async (t) => {
  for (const [name, ev, want] of cases) {
    const r = new EventRelevance();
    r.update(links, desired, 'eth0', ['flannel.1']);
    t.equal(r.relevant(ev), want, name);
  }
});

t.test('a recreated device is known by its new index', async (t) => {
  const r = new EventRelevance();
  r.update(links, desired, 'eth0', ['flannel.1']);
  r.relevant({ kind: 'link', action: 'del', link: links[2]! });
  r.relevant({ kind: 'link', action: 'new', link: { ...links[2]!, index: 9 } });
  t.ok(r.relevant({ kind: 'route', action: 'del', route: route({ ifindex: 9 }) }));
  t.notOk(
    r.relevant({ kind: 'route', action: 'del', route: route({ ifindex: 4 }) }),
    'the old index is gone',
  );
});

t.test('nothing is relevant but a resync before the first plan', async (t) => {
  const r = new EventRelevance();
  t.notOk(r.relevant({ kind: 'route', action: 'del', route: route() }));
  t.ok(r.relevant({ kind: 'resync', reason: 'undecodable' }));
});

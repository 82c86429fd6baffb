import t from 'tap';
import {
  chooseExternalIface,
  lookupRoute,
  type InterfaceState,
} from '../../../src/flanneld/external-iface.js';
import type { Route } from '../../../src/netlink/index.js';

const route = (dst: string, ifindex: number, extra: Partial<Route> = {}): Route => ({
  family: dst.includes(':') ? 'inet6' : 'inet',
  dst,
  ifindex,
  onlink: false,
  table: 254,
  type: 'unicast',
  ...extra,
});

const state: InterfaceState = {
  links: [
    { index: 1, name: 'lo', mtu: 65536, up: true },
    { index: 2, name: 'eth0', mtu: 1500, up: true },
    { index: 3, name: 'eth1', mtu: 9000, up: true },
  ],
  addresses: [
    { ifindex: 1, family: 'inet', address: '127.0.0.1', prefixLen: 8 },
    { ifindex: 2, family: 'inet', address: '10.99.0.11', prefixLen: 24 },
    { ifindex: 2, family: 'inet6', address: 'fe80::1', prefixLen: 64 },
    { ifindex: 2, family: 'inet6', address: 'fd00::11', prefixLen: 64 },
    { ifindex: 3, family: 'inet', address: '192.0.2.5', prefixLen: 24 },
  ],
  routes: [
    route('0.0.0.0/0', 2, { gateway: '10.99.0.1' }),
    route('10.99.0.0/24', 2),
    route('192.0.2.0/24', 3),
    route('198.51.100.0/24', 3),
    route('198.51.100.0/25', 2, { type: 'blackhole' }),
  ],
};

const none = { iface: [], ifaceRegex: [] };

t.test('selection order and results', async (t) => {
  const cases: Array<[string, Parameters<typeof chooseExternalIface>[1], string, string, string?]> = [
    ['default route', none, 'eth0', '10.99.0.11', 'fd00::11'],
    ['--iface by name', { ...none, iface: ['eth1'] }, 'eth1', '192.0.2.5'],
    ['--iface by address', { ...none, iface: ['192.0.2.5'] }, 'eth1', '192.0.2.5'],
    ['--iface first match wins', { ...none, iface: ['nope', 'eth1', 'eth0'] }, 'eth1', '192.0.2.5'],
    ['--iface-regex by name', { ...none, ifaceRegex: ['^eth1$'] }, 'eth1', '192.0.2.5'],
    ['--iface-regex by address', { ...none, ifaceRegex: ['^10\\.99\\.'] }, 'eth0', '10.99.0.11'],
    ['--iface-can-reach', { ...none, ifaceCanReach: '198.51.100.7' }, 'eth1', '192.0.2.5'],
    ['--iface beats --iface-regex', { iface: ['eth0'], ifaceRegex: ['eth1'] }, 'eth0', '10.99.0.11'],
  ];
  for (const [name, sel, iface, ip, v6] of cases) {
    const got = chooseExternalIface(state, sel);
    t.equal(got.name, iface, `${name}: iface`);
    t.equal(got.ip, ip, `${name}: ip`);
    t.equal(got.publicIp, ip, `${name}: publicIp defaults to ip`);
    if (v6) t.equal(got.ipv6, v6, `${name}: ipv6 skips link-local`);
  }
});

t.test('--public-ip overrides the published address only', async (t) => {
  const got = chooseExternalIface(state, { ...none, publicIp: '203.0.113.9' });
  t.equal(got.ip, '10.99.0.11');
  t.equal(got.publicIp, '203.0.113.9');
  t.equal(got.mtu, 1500);
});

t.test('errors name the flag', async (t) => {
  t.throws(() => chooseExternalIface(state, { ...none, iface: ['wlan9'] }), /--iface/);
  t.throws(() => chooseExternalIface(state, { ...none, ifaceRegex: ['^zz'] }), /--iface-regex/);
  t.throws(() => chooseExternalIface(state, { ...none, ifaceCanReach: '2001:db8::1' }), /--iface-can-reach/);
  t.throws(() => chooseExternalIface({ ...state, routes: [] }, none), /no default route/);
});

t.test('longest prefix wins and non-unicast routes are ignored', async (t) => {
  t.equal(lookupRoute(state.routes, '198.51.100.1')?.ifindex, 3);
  t.equal(lookupRoute(state.routes, '10.99.0.200')?.dst, '10.99.0.0/24');
  t.equal(lookupRoute(state.routes, '8.8.8.8')?.dst, '0.0.0.0/0');
});

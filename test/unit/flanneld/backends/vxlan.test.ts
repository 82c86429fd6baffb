/** The vxlan planner (golden outputs, skip reasons) and its device preparation against a fake kernel. */
import t from 'tap';
import {
  deriveVtepMac,
  parseVxlanBackendData,
  planVxlan,
  unicastMac,
  VxlanBackendImpl,
  type NodeLease,
  type PlanInput,
} from '../../../../src/flanneld/backends/index.js';
import { ErrorCodes } from '../../../../src/errors/index.js';
import { Cidr, parseNetConfig, type LeaseAttrs } from '../../../../src/ipam/index.js';
import { silentLogger } from '../../../../src/log/index.js';
import type { Link, Netlink, VxlanOptions } from '../../../../src/netlink/index.js';

const V4 = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });

function lease(key: string, attrs: Partial<LeaseAttrs>, v6?: string): NodeLease {
  const [ip, len] = key.split('-');
  return {
    key,
    subnets: { ipv4: Cidr.from(ip ?? '', Number(len)), ...(v6 && { ipv6: Cidr.parse(v6) }) },
    attrs: { publicIP: '0.0.0.0', ...attrs },
  };
}
const vx = (n: number, ip = `192.0.2.${n}`, extra: Partial<LeaseAttrs> = {}) =>
  lease(`10.244.${n}.0-24`, {
    publicIP: ip,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: `0a:58:0a:f4:0${n}:00` },
    ...extra,
  });

const own = vx(1);
const input = (leases: NodeLease[], over: Partial<PlanInput> = {}): PlanInput => ({
  config: V4,
  underlay: { dev: 'eth0', connected: ['192.0.2.0/24'] },
  own,
  leases,
  ...over,
});

t.test('golden: IPv4, two remotes, in the reference order', async (t) => {
  t.same(planVxlan(input([vx(3), own, vx(2)])), {
    addresses: [{ dev: 'flannel.1', address: '10.244.1.0', prefixLen: 32 }],
    neighbours: [
      { dev: 'flannel.1', dst: '10.244.2.0', lladdr: '0a:58:0a:f4:02:00' },
      { dev: 'flannel.1', dst: '10.244.3.0', lladdr: '0a:58:0a:f4:03:00' },
    ],
    fdb: [
      { dev: 'flannel.1', lladdr: '0a:58:0a:f4:02:00', dst: '192.0.2.2' },
      { dev: 'flannel.1', lladdr: '0a:58:0a:f4:03:00', dst: '192.0.2.3' },
    ],
    routes: [
      { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1', onlink: true },
      { dst: '10.244.3.0/24', gateway: '10.244.3.0', dev: 'flannel.1', onlink: true },
    ],
    owned: { devices: ['flannel.1'], routeDevices: ['flannel.1', 'eth0'], networks: ['10.244.0.0/16'] },
    skipped: [],
    programmed: ['10.244.2.0-24', '10.244.3.0-24'],
  });
});

t.test('golden: VNI names the device; BackendData keys are matched as Go does', async (t) => {
  const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 4096 } });
  const remote = lease('10.244.2.0-24', {
    publicIP: '192.0.2.2',
    backendType: 'vxlan',
    backendData: { vni: 4096, vtepmac: '0A:58:0A:F4:02:00', Extra: true },
  });
  const ownLease = {
    ...own,
    attrs: { ...own.attrs, backendData: { VNI: 4096, VtepMAC: '0a:00:00:00:00:01' } },
  };
  const d = planVxlan(input([remote], { config, own: ownLease }));
  t.same(d.neighbours, [{ dev: 'flannel.4096', dst: '10.244.2.0', lladdr: '0a:58:0a:f4:02:00' }]);
  t.same(d.addresses, [{ dev: 'flannel.4096', address: '10.244.1.0', prefixLen: 32 }]);
  t.same(d.skipped, []);
});

t.test('golden: DirectRouting routes connected remotes over the underlay, tunnels the rest', async (t) => {
  const config = parseNetConfig({
    Network: '10.244.0.0/16',
    Backend: { Type: 'vxlan', DirectRouting: true },
  });
  const d = planVxlan(
    input([vx(2), vx(3, '198.51.100.3'), vx(4, '192.0.2.4', { backendData: undefined })], { config }),
  );
  t.same(d.neighbours, [{ dev: 'flannel.1', dst: '10.244.3.0', lladdr: '0a:58:0a:f4:03:00' }]);
  t.same(d.fdb, [{ dev: 'flannel.1', lladdr: '0a:58:0a:f4:03:00', dst: '198.51.100.3' }]);
  t.same(d.routes, [
    { dst: '10.244.2.0/24', gateway: '192.0.2.2', dev: 'eth0', onlink: false },
    { dst: '10.244.3.0/24', gateway: '10.244.3.0', dev: 'flannel.1', onlink: true },
    { dst: '10.244.4.0/24', gateway: '192.0.2.4', dev: 'eth0', onlink: false },
  ]);
  t.same(
    d.programmed,
    ['10.244.2.0-24', '10.244.3.0-24', '10.244.4.0-24'],
    'a direct remote needs no VtepMAC',
  );

  const off = planVxlan(input([vx(2)]));
  t.same(
    off.routes,
    [{ dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1', onlink: true }],
    'off: tunnel',
  );
});

t.test('golden: dual stack plans both devices and both families', async (t) => {
  const config = parseNetConfig({
    Network: '10.244.0.0/16',
    EnableIPv6: true,
    IPv6Network: 'fd00:10:244::/56',
    Backend: { Type: 'vxlan' },
  });
  const dual = (n: number) => ({
    ...lease(
      `10.244.${n}.0-24`,
      {
        publicIP: `192.0.2.${n}`,
        publicIPv6: `fd00:1::${n}`,
        backendType: 'vxlan',
        backendData: { VNI: 1, VtepMAC: `0a:58:0a:f4:0${n}:00` },
        backendV6Data: { VNI: 1, VtepMAC: `0a:58:0a:f6:0${n}:00` },
      },
      `fd00:10:244:${n}::/64`,
    ),
    key: `10.244.${n}.0-24&fd00:10:244:${n}::-64`,
  });
  const v4only = vx(3);
  const d = planVxlan(
    input([dual(2), v4only], {
      config,
      own: dual(1),
      underlay: { dev: 'eth0', connected: ['192.0.2.0/24', 'fd00:1::/64'] },
    }),
  );
  t.same(d.addresses, [
    { dev: 'flannel.1', address: '10.244.1.0', prefixLen: 32 },
    { dev: 'flannel-v6.1', address: 'fd00:10:244:1::', prefixLen: 128 },
  ]);
  t.same(d.neighbours, [
    { dev: 'flannel.1', dst: '10.244.2.0', lladdr: '0a:58:0a:f4:02:00' },
    { dev: 'flannel-v6.1', dst: 'fd00:10:244:2::', lladdr: '0a:58:0a:f6:02:00' },
    { dev: 'flannel.1', dst: '10.244.3.0', lladdr: '0a:58:0a:f4:03:00' },
  ]);
  t.same(d.fdb[1], { dev: 'flannel-v6.1', lladdr: '0a:58:0a:f6:02:00', dst: 'fd00:1::2' });
  t.same(d.routes[1], {
    dst: 'fd00:10:244:2::/64',
    gateway: 'fd00:10:244:2::',
    dev: 'flannel-v6.1',
    onlink: true,
  });
  t.same(d.owned, {
    devices: ['flannel.1', 'flannel-v6.1'],
    routeDevices: ['flannel.1', 'flannel-v6.1', 'eth0'],
    networks: ['10.244.0.0/16', 'fd00:10:244::/56'],
  });
  t.same(
    d.skipped,
    [{ key: '10.244.3.0-24', family: 6, reason: 'has no IPv6 subnet' }],
    'v4-only lease: v6 part skipped',
  );
  t.same(d.programmed, ['10.244.2.0-24&fd00:10:244:2::-64', '10.244.3.0-24']);
});

t.test('skip reasons name what is wrong', async (t) => {
  const cases: [string, NodeLease, RegExp][] = [
    [
      'wrong backend',
      lease('10.244.5.0-24', { publicIP: '192.0.2.5', backendType: 'host-gw' }),
      /BackendType "host-gw" is not this cluster's backend vxlan/,
    ],
    ['no backend type', lease('10.244.5.0-24', { publicIP: '192.0.2.5' }), /BackendType \(none\)/],
    ['no BackendData', vx(5, '192.0.2.5', { backendData: undefined }), /BackendData is missing/],
    ['BackendData not an object', vx(5, '192.0.2.5', { backendData: 'x' }), /BackendData is not an object/],
    ['no VtepMAC', vx(5, '192.0.2.5', { backendData: { VNI: 1 } }), /VtepMAC is missing/],
    [
      'bad VtepMAC',
      vx(5, '192.0.2.5', { backendData: { VtepMAC: 'zz' } }),
      /VtepMAC "zz" is not a unicast MAC/,
    ],
    [
      'multicast VtepMAC',
      vx(5, '192.0.2.5', { backendData: { VtepMAC: '33:33:00:00:00:01' } }),
      /not a unicast MAC/,
    ],
    [
      'other VNI',
      vx(5, '192.0.2.5', { backendData: { VNI: 2, VtepMAC: '0a:00:00:00:00:05' } }),
      /VNI 2 differs from this cluster's VNI 1/,
    ],
    [
      'bad VNI',
      vx(5, '192.0.2.5', { backendData: { VNI: 'one', VtepMAC: '0a:00:00:00:00:05' } }),
      /VNI "one" is not a VNI/,
    ],
    [
      'outside the network',
      { ...vx(5), key: '10.99.5.0-24', subnets: { ipv4: Cidr.parse('10.99.5.0/24') } },
      /10\.99\.5\.0\/24 is outside the cluster network 10\.244\.0\.0\/16/,
    ],
    [
      'inside own subnet',
      { ...vx(5), key: '10.244.1.0-25', subnets: { ipv4: Cidr.parse('10.244.1.0/25') } },
      /subnet 10\.244\.1\.0\/25 is not a \/24/,
    ],
    [
      'shorter than SubnetLen',
      { ...vx(5), key: '10.244.128.0-17', subnets: { ipv4: Cidr.parse('10.244.128.0/17') } },
      /subnet 10\.244\.128\.0\/17 is not a \/24 \(the config's SubnetLen\)/,
    ],
    [
      'longer than SubnetLen',
      { ...vx(5), key: '10.244.5.0-25', subnets: { ipv4: Cidr.parse('10.244.5.0/25') } },
      /is not a \/24/,
    ],
    ['own PublicIP', vx(5, '192.0.2.1'), /PublicIP 192\.0\.2\.1 is this node's/],
    ['unset PublicIP', vx(5, '0.0.0.0'), /PublicIP is unset/],
    ['IPv6 PublicIP', vx(5, 'fd00::5'), /PublicIP "fd00::5" is not an IPv4 address/],
    ['no IPv4 subnet', { ...vx(5), subnets: { ipv6: Cidr.parse('fd00::/64') } }, /has no IPv4 subnet/],
    [
      'no attributes',
      { key: '10.244.5.0-24', subnets: vx(5).subnets } as unknown as NodeLease,
      /has no attributes/,
    ],
  ];
  for (const [name, bad, reason] of cases) {
    const d = planVxlan(input([vx(2), bad]));
    t.match(d.skipped, [{ key: bad.key, reason }], name);
    t.same(d.programmed, ['10.244.2.0-24'], `${name}: the good lease is still programmed`);
  }
});

t.test('a lease of another length than SubnetLen is never routed and hides nothing', async (t) => {
  const at = (n: number): NodeLease => ({
    ...vx(5, `192.0.2.${n}`, { backendData: { VNI: 1, VtepMAC: `0a:58:0a:f4:${n.toString(16)}:00` } }),
    key: `10.244.${n}.0-24`,
    subnets: { ipv4: Cidr.parse(`10.244.${n}.0/24`) },
  });
  // 10.244.128.0-17 sorts before the real leases inside it; routed, it took their traffic.
  const wide: NodeLease = {
    ...vx(5, '192.0.2.9', { backendData: { VNI: 1, VtepMAC: '0a:58:0a:f4:09:00' } }),
    key: '10.244.128.0-17',
    subnets: { ipv4: Cidr.parse('10.244.128.0/17') },
  };
  for (const leases of [
    [at(200), at(201), wide],
    [wide, at(201), at(200)],
  ]) {
    const d = planVxlan(input(leases));
    t.same(d.programmed, ['10.244.200.0-24', '10.244.201.0-24'], 'the real leases are programmed');
    t.match(d.skipped, [{ key: '10.244.128.0-17', reason: /10\.244\.128\.0\/17 is not a \/24/ }]);
    t.notOk(
      d.routes.some((r) => r.dst === '10.244.128.0/17'),
      'no route for the wide lease',
    );
  }
});

t.test('conflicts are settled by key order, whatever the input order', async (t) => {
  const sameMac = vx(3, '192.0.2.3', { backendData: { VNI: 1, VtepMAC: '0a:58:0a:f4:02:00' } });
  const d = planVxlan(input([sameMac, vx(2)]));
  t.match(d.skipped, [
    { key: '10.244.3.0-24', reason: /VtepMAC 0a:58:0a:f4:02:00 is already used by lease 10\.244\.2\.0-24/ },
  ]);
  const twoLeasesOneNode = vx(3, '192.0.2.2', { backendData: { VNI: 1, VtepMAC: '0a:58:0a:f4:02:00' } });
  const e = planVxlan(input([twoLeasesOneNode, vx(2)]));
  t.same(e.programmed, ['10.244.2.0-24', '10.244.3.0-24'], 'one node with two leases: both routed');
  t.equal(e.fdb.length, 1, 'through one FDB entry');
  const dup = planVxlan(input([vx(2), vx(2, '192.0.2.22')]));
  t.same(dup.programmed, ['10.244.2.0-24']);
  t.match(dup.skipped, [{ key: '10.244.2.0-24', reason: /same key/ }]);
});

t.test('an unusable own lease is reported; remotes are still planned', async (t) => {
  const d = planVxlan(
    input([vx(2)], { own: { key: 'mine', subnets: {}, attrs: { publicIP: '192.0.2.1' } } }),
  );
  t.same(d.addresses, []);
  t.same(d.programmed, ['10.244.2.0-24']);
  t.match(d.skipped, [{ key: 'mine', reason: /this node's lease: has no IPv4 subnet/ }]);
});

t.test('VTEP MACs', async (t) => {
  t.equal(unicastMac('0A:58:0a:F4:02:00'), '0a:58:0a:f4:02:00');
  t.equal(unicastMac('01:00:5e:00:00:01'), undefined, 'multicast');
  t.equal(unicastMac('00:00:00:00:00:00'), undefined);
  t.equal(unicastMac('0a:58:0a:f4:02'), undefined);
  t.equal(unicastMac(7), undefined);
  const a = deriveVtepMac('192.0.2.1/1');
  t.equal(deriveVtepMac('192.0.2.1/1'), a, 'stable');
  t.not(deriveVtepMac('192.0.2.2/1'), a, 'per node');
  t.not(deriveVtepMac('192.0.2.1/2'), a, 'per VNI');
  t.equal(unicastMac(a), a, 'unicast');
  t.equal(parseInt(a.slice(0, 2), 16) & 2, 2, 'locally administered');
  t.same(parseVxlanBackendData({ VNI: 1, VtepMAC: a }), { vni: 1, vtepMac: a });
  t.same(parseVxlanBackendData({ VtepMAC: a, VNI: null }), { vtepMac: a });
});

/** Just enough of `links` for prepare: devices in a map, indexes handed out in order. */
class FakeLinks {
  readonly devices = new Map<string, Link>();
  readonly ensured: VxlanOptions[] = [];
  #next = 10;

  add(name: string, mac: string, kind = 'vxlan'): void {
    this.devices.set(name, { index: this.#next++, name, kind, mtu: 1450, up: true, mac });
  }

  get(name: string | number): Promise<Link | undefined> {
    return Promise.resolve(this.devices.get(String(name)));
  }

  ensureVxlan(o: VxlanOptions): Promise<Link> {
    this.ensured.push(o);
    const old = this.devices.get(o.name);
    if (old && old.kind === 'vxlan' && old.mac === o.mac) {
      const kept = { ...old, mtu: o.mtu ?? old.mtu };
      this.devices.set(o.name, kept);
      return Promise.resolve(kept);
    }
    const link: Link = {
      index: this.#next++,
      name: o.name,
      kind: 'vxlan',
      mtu: o.mtu ?? 1450,
      up: false,
      mac: o.mac ?? '0a:00:00:00:00:99',
    };
    this.devices.set(o.name, link);
    return Promise.resolve(link);
  }

  setUp(ref: number | string): Promise<void> {
    for (const [name, l] of this.devices)
      if (l.index === ref || name === ref) this.devices.set(name, { ...l, up: true });
    return Promise.resolve();
  }
}

function vxlanBackend(config = V4, ext: { ip?: string; ipv6?: string; mtu?: number } = { ip: '192.0.2.1' }) {
  const links = new FakeLinks();
  const backend = new VxlanBackendImpl({
    config,
    extIface: { name: 'eth0', index: 2, mtu: 1500, ...ext },
    netlink: { links } as unknown as Netlink,
    logger: silentLogger(),
  });
  return { links, backend };
}

t.test('prepare: creates flannel.<VNI> as the reference says, MTU = underlay − 50', async (t) => {
  const { links, backend } = vxlanBackend();
  const p = await backend.prepare();
  const mac = deriveVtepMac('192.0.2.1/1');
  t.same(p, {
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: mac },
    mtu: 1450,
    devices: [{ name: 'flannel.1', kind: 'vxlan', mtu: 1450, mac }],
  });
  t.same(links.ensured, [
    {
      name: 'flannel.1',
      id: 1,
      local: '192.0.2.1',
      dev: 'eth0',
      port: 8472,
      learning: false,
      gbp: false,
      mtu: 1450,
      mac,
    },
  ]);
  t.equal(links.devices.get('flannel.1')?.up, true, 'set up');
});

t.test('prepare: options are passed through; an explicit MTU wins', async (t) => {
  const config = parseNetConfig({
    Network: '10.244.0.0/16',
    Backend: { Type: 'vxlan', VNI: 7, Port: 4789, GBP: true, Learning: true, MTU: 1400 },
  });
  const { links, backend } = vxlanBackend(config);
  const p = await backend.prepare();
  t.equal(p.mtu, 1400);
  t.match(links.ensured[0], { name: 'flannel.7', id: 7, port: 4789, gbp: true, learning: true, mtu: 1400 });
  t.match(p.backendData, { VNI: 7 });
});

t.test('prepare: the MAC of an existing device is adopted and kept across recreation', async (t) => {
  const { links, backend } = vxlanBackend();
  links.add('flannel.1', 'c6:d2:32:6f:8f:44');
  const first = await backend.prepare();
  t.same(
    first.backendData,
    { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' },
    'adopted (a flannel node migrating keeps its MAC)',
  );
  links.devices.delete('flannel.1');
  const again = await backend.prepare();
  t.same(again, first, 'recreated with the same MAC, same lease attributes');
  t.equal(links.devices.get('flannel.1')?.mac, 'c6:d2:32:6f:8f:44');
  t.equal(links.ensured[1]?.mac, 'c6:d2:32:6f:8f:44');
});

t.test('prepare: a same-named device of another kind is not a MAC source', async (t) => {
  const { links, backend } = vxlanBackend();
  links.add('flannel.1', 'c6:d2:32:6f:8f:44', 'bridge');
  const p = await backend.prepare();
  t.same(p.backendData, { VNI: 1, VtepMAC: deriveVtepMac('192.0.2.1/1') });
});

t.test('prepare: dual stack creates flannel-v6.<VNI> with MTU − 70', async (t) => {
  const config = parseNetConfig({
    Network: '10.244.0.0/16',
    EnableIPv6: true,
    IPv6Network: 'fd00:10:244::/56',
    Backend: { Type: 'vxlan' },
  });
  const { links, backend } = vxlanBackend(config, { ip: '192.0.2.1', ipv6: 'fd00:1::1' });
  const p = await backend.prepare();
  t.same(
    p.devices.map((d) => [d.name, d.mtu]),
    [
      ['flannel.1', 1450],
      ['flannel-v6.1', 1430],
    ],
  );
  t.equal(p.mtu, 1430, 'pods get the smaller MTU');
  t.match(p.backendV6Data, { VNI: 1, VtepMAC: deriveVtepMac('fd00:1::1/1') });
  t.match(links.ensured[1], { name: 'flannel-v6.1', local: 'fd00:1::1' });
});

t.test('prepare: IPv6 enabled without an IPv6 address on the interface is a config error', async (t) => {
  const config = parseNetConfig({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });
  const { backend } = vxlanBackend(config);
  await t.rejects(backend.prepare(), {
    code: ErrorCodes.INVALID_CONFIG,
    message: /eth0 has no IPv6 address/,
  });
});

/**
 * The pure lease decision: flannel's acquisition order, reservations, and entries that are not
 * usable leases.
 */
import t from 'tap';
import { ErrorCodes } from '../../../../src/errors/index.js';
import {
  chooseLease,
  isOwnLease,
  readLeaseListing,
  type ChooseLeaseInput,
  type LeaseChoice,
} from '../../../../src/flanneld/lease/index.js';
import {
  Cidr,
  encodeLeaseAttrs,
  parseNetConfig,
  type LeaseAttrs,
  type SubnetKey,
} from '../../../../src/ipam/index.js';
import type { KeyValue } from '../../../../src/registry/index.js';

const DIR = '/coreos.com/network/subnets/';
const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
/** Network 10.0.0.0/28 in /30s, SubnetMin skipping the first: three leasable subnets. */
const tiny = parseNetConfig({ Network: '10.0.0.0/28', SubnetLen: 30 });
const dual = parseNetConfig({
  Network: '10.244.0.0/16',
  EnableIPv6: true,
  IPv6Network: 'fd00:10:244::/56',
});
const v6only = parseNetConfig({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });

const vxlan = (publicIP: string, mac = 'c6:d2:32:6f:8f:44', publicIPv6?: string): LeaseAttrs => ({
  publicIP,
  ...(publicIPv6 && { publicIPv6 }),
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: mac },
});
const me = vxlan('192.168.64.3');
const other = vxlan('192.168.64.4', 'aa:aa:aa:aa:aa:aa');

let revision = 0;
function entry(key: string, value: LeaseAttrs | string, ttlBound = true): KeyValue {
  revision++;
  return {
    key: key.startsWith('/') ? key : DIR + key,
    value: typeof value === 'string' ? value : encodeLeaseAttrs(value),
    modRevision: revision,
    createRevision: revision,
    ttlBound,
  };
}

const FIRST = () => 0;
const v4 = (cidr: string): SubnetKey => ({ ipv4: Cidr.parse(cidr) });

function choose(input: Partial<ChooseLeaseInput> & Pick<ChooseLeaseInput, 'entries'>): LeaseChoice {
  return chooseLease({ config, attrs: me, random: FIRST, ...input });
}

/** The outcome in a form a table can state. */
function summary(c: LeaseChoice): string {
  if (c.kind === 'reuse') return `reuse ${c.lease.key}${c.needsUpdate ? ' +update' : ''}`;
  if (c.kind === 'create') return `create ${c.key} (${c.source})`;
  return `error ${c.error.code}`;
}

t.test('acquisition order: PublicIP, then subnet.env, then allocation', async (t) => {
  const cases: [string, Partial<ChooseLeaseInput> & Pick<ChooseLeaseInput, 'entries'>, string][] = [
    ['empty registry: first free subnet', { entries: [] }, 'create 10.244.1.0-24 (allocated)'],
    [
      'own lease found by PublicIP (TTL refreshed)',
      { entries: [entry('10.244.1.0-24', other), entry('10.244.7.0-24', me)] },
      'reuse 10.244.7.0-24 +update',
    ],
    [
      'own lease wins over subnet.env',
      { entries: [entry('10.244.7.0-24', me)], previous: v4('10.244.9.0/24') },
      'reuse 10.244.7.0-24 +update',
    ],
    [
      'own lease whose backend data changed is reused',
      { entries: [entry('10.244.7.0-24', vxlan('192.168.64.3', '00:00:00:00:00:01'))] },
      'reuse 10.244.7.0-24 +update',
    ],
    [
      'stale own lease outside a changed Network is not reused',
      { entries: [entry('10.245.7.0-24', me)] },
      'create 10.244.1.0-24 (allocated)',
    ],
    [
      'stale own lease of another SubnetLen is not reused',
      { entries: [entry('10.244.7.0-25', me)] },
      'create 10.244.1.0-24 (allocated)',
    ],
    [
      'subnet.env subnet reused when free',
      { entries: [entry('10.244.1.0-24', other)], previous: v4('10.244.9.0/24') },
      'create 10.244.9.0-24 (previous)',
    ],
    [
      'subnet.env subnet taken by another node: allocate',
      { entries: [entry('10.244.9.0-24', other)], previous: v4('10.244.9.0/24') },
      'create 10.244.1.0-24 (allocated)',
    ],
    [
      'subnet.env subnet overlapped by a stale lease of another length: allocate',
      { entries: [entry('10.244.8.0-23', other)], previous: v4('10.244.9.0/24') },
      'create 10.244.1.0-24 (allocated)',
    ],
    [
      'subnet.env subnet outside the config: allocate',
      { entries: [], previous: v4('10.99.9.0/24') },
      'create 10.244.1.0-24 (allocated)',
    ],
    [
      'subnet.env subnet excluded (a create lost to another node): allocate',
      { entries: [], previous: v4('10.244.9.0/24'), exclude: new Set(['10.244.9.0-24']) },
      'create 10.244.1.0-24 (allocated)',
    ],
    [
      'allocation skips taken subnets',
      { entries: [entry('10.244.1.0-24', other), entry('10.244.2.0-24', other)] },
      'create 10.244.3.0-24 (allocated)',
    ],
    [
      'allocation skips excluded keys',
      { entries: [entry('10.244.1.0-24', other)], exclude: new Set(['10.244.2.0-24']) },
      'create 10.244.3.0-24 (allocated)',
    ],
    [
      'reservation of this node reused, no update when identical',
      { entries: [entry('10.244.7.0-24', me, false)] },
      'reuse 10.244.7.0-24',
    ],
    [
      'reservation of this node with old backend data: updated',
      { entries: [entry('10.244.7.0-24', vxlan('192.168.64.3', '00:00:00:00:00:01'), false)] },
      'reuse 10.244.7.0-24 +update',
    ],
    [
      "another node's reservation is never taken",
      { entries: [entry('10.244.1.0-24', other, false)], previous: v4('10.244.1.0/24') },
      'create 10.244.2.0-24 (allocated)',
    ],
    [
      'reservation preferred over a TTL-bound duplicate',
      { entries: [entry('10.244.3.0-24', me), entry('10.244.7.0-24', me, false)] },
      'reuse 10.244.7.0-24',
    ],
    [
      'among TTL-bound duplicates, the subnet.env one',
      {
        entries: [entry('10.244.3.0-24', me), entry('10.244.7.0-24', me)],
        previous: v4('10.244.7.0/24'),
      },
      'reuse 10.244.7.0-24 +update',
    ],
  ];
  for (const [name, input, want] of cases) t.equal(summary(choose(input)), want, name);
});

t.test('stale and duplicate leases of this node are reported, reservations kept', async (t) => {
  const stale = entry('10.245.7.0-24', me);
  const dup = entry('10.244.3.0-24', me);
  const pinnedElsewhere = entry('10.99.0.0-24', me, false);
  const kept = entry('10.244.7.0-24', me, false);
  const c = choose({ entries: [stale, dup, pinnedElsewhere, kept] });
  t.equal(summary(c), 'reuse 10.244.7.0-24');
  t.same(
    c.stale.map((l) => l.key),
    ['10.245.7.0-24', '10.244.3.0-24'],
    'TTL-bound ones to delete',
  );
  t.same(
    c.ignoredReservations.map((l) => l.key),
    ['10.99.0.0-24'],
    'reservations left alone',
  );
  t.equal(c.stale[0]?.modRevision, stale.modRevision, 'deleted at the revision seen');
});

t.test('a stale own lease still counts as taken until it is deleted', async (t) => {
  // 10.244.1.0/25 (a SubnetLen of the past) overlaps the first /24 of the pool.
  const c = choose({ entries: [entry('10.244.1.0-25', me)] });
  t.equal(summary(c), 'create 10.244.2.0-24 (allocated)');
  t.same(
    c.stale.map((l) => l.key),
    ['10.244.1.0-25'],
  );
});

t.test('the previous subnet is rejected with a reason', async (t) => {
  const taken = choose({ entries: [entry('10.244.9.0-24', other)], previous: v4('10.244.9.0/24') });
  t.match(taken.previousRejected, { subnet: '10.244.9.0/24', reason: /taken/ });
  const misfit = choose({ entries: [], previous: v4('10.99.9.0/24') });
  t.match(misfit.previousRejected, { subnet: '10.99.9.0/24', reason: /does not fit/ });
  t.equal(choose({ entries: [], previous: v4('10.244.9.0/24') }).previousRejected, undefined);
});

t.test('garbage JSON is skipped, but its subnet stays taken', async (t) => {
  const cases: [string, string][] = [
    ['not JSON', '{"PublicIP": '],
    ['not an object', '[1,2,3]'],
    ['no PublicIP', '{"BackendType":"vxlan"}'],
    ['bad PublicIP', '{"PublicIP":"999.1.1.1","PublicIPv6":null}'],
  ];
  for (const [name, value] of cases) {
    const c = choose({ entries: [entry('10.244.1.0-24', value)], previous: v4('10.244.1.0/24') });
    t.equal(summary(c), 'create 10.244.2.0-24 (allocated)', `${name}: neither previous nor allocated`);
    t.equal(c.skipped.length, 1, `${name}: reported`);
    t.equal(c.skipped[0]?.path, `${DIR}10.244.1.0-24`);
    t.equal(c.skipped[0]?.error.code, ErrorCodes.INVALID_VALUE);
  }
});

t.test('garbage JSON on the last free subnet: out of subnets, not a clash', async (t) => {
  const c = chooseLease({
    config: tiny,
    attrs: me,
    entries: [entry('10.0.0.4-30', other), entry('10.0.0.8-30', other), entry('10.0.0.12-30', 'garbage')],
  });
  t.equal(summary(c), `error ${ErrorCodes.OUT_OF_SUBNETS}`);
  t.equal(c.skipped.length, 1, 'the garbage is still reported');
});

t.test('malformed keys are skipped; what they seem to name stays taken', async (t) => {
  const c = choose({
    entries: [
      entry('not-a-key', me),
      entry('10.244.1.5-24', other), // host bits: flannel would read 10.244.1.0/24
      entry('10.244.2.0-24/nested', other),
      entry('10.244.3.0-24&10.244.4.0-24', other),
      entry('/elsewhere/10.244.5.0-24', other),
    ],
  });
  t.equal(summary(c), 'create 10.244.2.0-24 (allocated)', 'host-bit key blocks 10.244.1.0/24');
  t.same(
    c.skipped.map((s) => s.path),
    [
      `${DIR}not-a-key`,
      `${DIR}10.244.1.5-24`,
      `${DIR}10.244.2.0-24/nested`,
      `${DIR}10.244.3.0-24&10.244.4.0-24`,
      '/elsewhere/10.244.5.0-24',
    ],
  );
  for (const s of c.skipped) t.equal(s.error.code, ErrorCodes.INVALID_KEY, s.path);
  t.same(c.skipped[1]?.subnets.map(String), ['10.244.1.0/24']);
  t.same(c.skipped[0]?.subnets, []);
  t.equal(
    c.kind === 'create' && c.key,
    '10.244.2.0-24',
    'a malformed key whose value names this node is not its lease',
  );
});

t.test('out of subnets', async (t) => {
  const full = [entry('10.0.0.4-30', other), entry('10.0.0.8-30', other), entry('10.0.0.12-30', other)];
  const c = chooseLease({ config: tiny, attrs: me, entries: full });
  t.equal(c.kind, 'error');
  if (c.kind === 'error') t.match(c.error, { code: ErrorCodes.OUT_OF_SUBNETS, message: /out of subnets/ });
  const excluded = chooseLease({
    config: tiny,
    attrs: me,
    entries: full.slice(0, 2),
    exclude: new Set(['10.0.0.12-30']),
  });
  t.equal(summary(excluded), `error ${ErrorCodes.OUT_OF_SUBNETS}`, 'excluded keys count as taken');
});

t.test('random picks among the free subnets', async (t) => {
  const picks = new Set<string>();
  for (const r of [0, 0.3, 0.6, 0.99]) {
    const c = chooseLease({ config, attrs: me, entries: [], random: () => r });
    if (c.kind === 'create') picks.add(c.key);
  }
  t.ok(picks.size > 1, 'not always the first free subnet');
});

t.test('dual stack: both addresses identify the node; families chosen separately', async (t) => {
  const meDual = vxlan('192.168.64.3', undefined, 'fd00::3');
  const key = '10.244.7.0-24&fd00:10:244:7::-64';
  const own = chooseLease({ config: dual, attrs: meDual, entries: [entry(key, meDual)], random: FIRST });
  t.equal(summary(own), `reuse ${key} +update`);
  const otherV6 = chooseLease({
    config: dual,
    attrs: meDual,
    entries: [entry(key, vxlan('192.168.64.3', undefined, 'fd00::99'))],
    random: FIRST,
  });
  t.equal(otherV6.kind, 'create', 'same IPv4 but another IPv6 is not this node');
  const partial = chooseLease({
    config: dual,
    attrs: meDual,
    entries: [entry('10.244.1.0-24&fd00:10:244:9::-64', other)],
    previous: { ipv4: Cidr.parse('10.244.9.0/24'), ipv6: Cidr.parse('fd00:10:244:9::/64') },
    random: FIRST,
  });
  t.equal(
    summary(partial),
    'create 10.244.9.0-24&fd00:10:244:1::-64 (previous)',
    'the free IPv4 of subnet.env kept, the taken IPv6 replaced',
  );
  const v4Only = chooseLease({ config: dual, attrs: meDual, entries: [entry('10.244.7.0-24', meDual)] });
  t.equal(v4Only.kind, 'create', 'an IPv4-only lease does not fit a dual-stack config');
  t.same(
    v4Only.stale.map((l) => l.key),
    ['10.244.7.0-24'],
  );
});

t.test('IPv6 only: PublicIPv6 identifies the node', async (t) => {
  const a = vxlan('0.0.0.0', undefined, 'fd00::3');
  const b = vxlan('0.0.0.0', undefined, 'fd00::4');
  t.ok(isOwnLease(v6only, a, a));
  t.notOk(isOwnLease(v6only, b, a), 'PublicIP 0.0.0.0 is shared by every IPv6-only node');
  const c = chooseLease({
    config: v6only,
    attrs: a,
    entries: [entry('fd00:10:244:1::-64', b), entry('fd00:10:244:5::-64', a)],
  });
  t.equal(summary(c), 'reuse fd00:10:244:5::-64 +update');
});

t.test('readLeaseListing splits leases and skipped entries', async (t) => {
  const listing = readLeaseListing([entry('10.244.1.0-24', me, false), entry('x', me)]);
  t.match(listing.leases, [
    {
      key: '10.244.1.0-24',
      path: `${DIR}10.244.1.0-24`,
      ttlBound: false,
      attrs: { publicIP: '192.168.64.3', backendType: 'vxlan' },
    },
  ]);
  t.equal(listing.leases[0]?.subnets.ipv4?.toString(), '10.244.1.0/24');
  t.same(
    listing.skipped.map((s) => s.path),
    [`${DIR}x`],
  );
  const custom = readLeaseListing([entry('/weft/net/subnets/10.244.1.0-24', me)], '/weft/net');
  t.equal(custom.leases.length, 1, 'custom prefix');
});

import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import {
  CANDIDATE_LIMIT,
  Cidr,
  allocateSubnet,
  leaseFitsConfig,
  parseNetConfig,
  parseSubnetKey,
  subnetFitsPool,
  type SubnetPool,
} from '../../../src/ipam/index.js';

function pool(network: string, subnetLen: number, subnetMin: string, subnetMax: string): SubnetPool {
  return {
    network: Cidr.parse(network),
    subnetLen,
    subnetMin: Cidr.parse(subnetMin),
    subnetMax: Cidr.parse(subnetMax),
  };
}

const v4 = pool('10.244.0.0/16', 24, '10.244.1.0/24', '10.244.255.0/24');
const v6 = pool('fd00:10:244::/48', 64, 'fd00:10:244:1::/64', 'fd00:10:244:ffff::/64');
const cidrs = (...texts: string[]) => texts.map((text) => Cidr.parse(text));
const fixed = (value: number) => () => value;
/** `random` values that land on the first and the last of the 100 candidates. */
const FIRST = 0;
const LAST = 0.9999;

t.test('picks among the first free subnets from SubnetMin, skipping taken ones', async (t) => {
  const cases: [string, SubnetPool, Cidr[], number, string][] = [
    ['empty, first', v4, [], FIRST, '10.244.1.0/24'],
    ['empty, last of 100', v4, [], LAST, '10.244.100.0/24'],
    ['empty, middle', v4, [], 0.5, '10.244.51.0/24'],
    ['random() = 1 is clamped', v4, [], 1, '10.244.100.0/24'],
    ['first two taken', v4, cidrs('10.244.1.0/24', '10.244.2.0/24'), FIRST, '10.244.3.0/24'],
    ['taken shift the window', v4, cidrs('10.244.1.0/24', '10.244.2.0/24'), LAST, '10.244.102.0/24'],
    [
      'unsorted, duplicated',
      v4,
      cidrs('10.244.3.0/24', '10.244.1.0/24', '10.244.3.0/24', '10.244.2.0/24'),
      FIRST,
      '10.244.4.0/24',
    ],
    ['a shorter lease blocks every subnet in it', v4, cidrs('10.244.0.0/20'), FIRST, '10.244.16.0/24'],
    ['a longer lease blocks its subnet', v4, cidrs('10.244.1.64/26'), FIRST, '10.244.2.0/24'],
    ['holes are used', v4, cidrs('10.244.1.0/24', '10.244.3.0/24'), FIRST, '10.244.2.0/24'],
    [
      'leases outside the network are ignored',
      v4,
      cidrs('10.245.1.0/24', '192.168.0.0/16'),
      FIRST,
      '10.244.1.0/24',
    ],
    [
      'leases of the other family are ignored',
      v4,
      cidrs('fd00:10:244:1::/64', '::/0'),
      FIRST,
      '10.244.1.0/24',
    ],
    [
      'below SubnetMin is not offered',
      pool('10.244.0.0/16', 24, '10.244.10.0/24', '10.244.12.0/24'),
      [],
      FIRST,
      '10.244.10.0/24',
    ],
    [
      'above SubnetMax is not offered',
      pool('10.244.0.0/16', 24, '10.244.10.0/24', '10.244.12.0/24'),
      [],
      LAST,
      '10.244.12.0/24',
    ],
    [
      'taken below SubnetMin change nothing',
      pool('10.244.0.0/16', 24, '10.244.10.0/24', '10.244.12.0/24'),
      cidrs('10.244.1.0/24', '10.244.9.0/24'),
      FIRST,
      '10.244.10.0/24',
    ],
    ['IPv6 first', v6, [], FIRST, 'fd00:10:244:1::/64'],
    ['IPv6 last of 100', v6, [], LAST, 'fd00:10:244:64::/64'],
    ['IPv6 skips taken', v6, cidrs('fd00:10:244:1::/64', 'fd00:10:244:2::/63'), FIRST, 'fd00:10:244:4::/64'],
  ];
  for (const [name, p, taken, random, expected] of cases) {
    t.equal(allocateSubnet(p, taken, fixed(random)).toString(), expected, name);
  }
});

t.test('the random choice spans exactly the first 100 free subnets', async (t) => {
  const taken = cidrs('10.244.1.0/24', '10.244.5.0/24', '10.244.50.0/23');
  const picks = new Set<string>();
  for (let i = 0; i < CANDIDATE_LIMIT; i++) {
    picks.add(allocateSubnet(v4, taken, fixed((i + 0.5) / CANDIDATE_LIMIT)).toString());
  }
  t.equal(CANDIDATE_LIMIT, 100);
  t.equal(picks.size, 100, 'every candidate is reachable');
  const expected = [...v4.network.subnets(24)]
    .filter((s) => s.start >= v4.subnetMin.start && !taken.some((c) => c.overlaps(s)))
    .slice(0, 100)
    .map(String);
  t.strictSame([...picks].sort(), expected.sort());
});

t.test('the default random source is Math.random', async (t) => {
  const subnet = allocateSubnet(v4, []);
  t.ok(subnetFitsPool(v4, subnet), `${subnet} fits`);
  t.ok(subnet.start <= v4.network.subnetAt(24, 100n).start, `${subnet} is among the first 100`);
});

t.test('out of subnets', async (t) => {
  const small = pool('10.244.0.0/28', 30, '10.244.0.4/30', '10.244.0.12/30');
  const cases: [string, SubnetPool, Cidr[]][] = [
    ['every subnet taken', small, cidrs('10.244.0.4/30', '10.244.0.8/30', '10.244.0.12/30')],
    ['one lease covers the range', small, cidrs('10.244.0.0/29', '10.244.0.8/29')],
    ['a lease covers the network', small, cidrs('10.0.0.0/8')],
    [
      'min = max, taken',
      pool('fd00::/48', 64, 'fd00:0:0:7::/64', 'fd00:0:0:7::/64'),
      cidrs('fd00:0:0:7::/64'),
    ],
  ];
  for (const [name, p, taken] of cases) {
    const err = t.throws(() => allocateSubnet(p, taken, fixed(0)), name);
    t.hasStrict(err, { code: ErrorCodes.OUT_OF_SUBNETS }, `${name} code`);
    t.equal((err as Error).message, 'out of subnets', `${name} message`);
  }
});

t.test('large pools with many leases stay fast', async (t) => {
  const huge = pool('fd00::/16', 64, 'fd00:0:0:1::/64', 'fd00:ffff:ffff:ffff::/64');
  const taken = Array.from({ length: 20_000 }, (_, i) => huge.network.subnetAt(64, BigInt(i)));
  const started = performance.now();
  const subnet = allocateSubnet(huge, taken.reverse(), fixed(LAST));
  t.equal(subnet.toString(), huge.network.subnetAt(64, 20_099n).toString());
  t.ok(performance.now() - started < 1000, 'no enumeration of the whole range');
});

t.test('subnetFitsPool', async (t) => {
  const narrow = pool('10.244.0.0/16', 24, '10.244.10.0/24', '10.244.20.0/24');
  const cases: [string, boolean][] = [
    ['10.244.10.0/24', true],
    ['10.244.15.0/24', true],
    ['10.244.20.0/24', true],
    ['10.244.9.0/24', false],
    ['10.244.21.0/24', false],
    ['10.244.15.0/25', false],
    ['10.244.14.0/23', false],
    ['10.245.15.0/24', false],
    ['fd00::/24', false],
  ];
  for (const [text, fits] of cases) t.equal(subnetFitsPool(narrow, Cidr.parse(text)), fits, text);
});

t.test('leaseFitsConfig wants a fitting subnet for each enabled family and none other', async (t) => {
  const dual = parseNetConfig({
    Network: '10.244.0.0/16',
    EnableIPv6: true,
    IPv6Network: 'fd00:10:244::/48',
  });
  const v4only = parseNetConfig({ Network: '10.244.0.0/16' });
  const v6only = parseNetConfig({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/48' });
  const cases: [string, typeof dual, string, boolean][] = [
    ['dual', dual, '10.244.3.0-24&fd00:10:244:3::-64', true],
    ['dual', dual, '10.244.3.0-24', false],
    ['dual', dual, 'fd00:10:244:3::-64', false],
    ['dual', dual, '10.244.0.0-24&fd00:10:244:3::-64', false],
    ['dual', dual, '10.244.3.0-24&fd00:10:244::-64', false],
    ['v4only', v4only, '10.244.3.0-24', true],
    ['v4only', v4only, '10.244.3.0-25', false],
    ['v4only', v4only, '10.245.3.0-24', false],
    ['v4only', v4only, '10.244.3.0-24&fd00:10:244:3::-64', false],
    ['v6only', v6only, 'fd00:10:244:3::-64', true],
    ['v6only', v6only, '10.244.3.0-24&fd00:10:244:3::-64', false],
  ];
  for (const [name, config, key, fits] of cases) {
    t.equal(leaseFitsConfig(config, parseSubnetKey(key)), fits, `${name} ${key}`);
  }
});

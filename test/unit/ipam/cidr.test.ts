import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { Cidr } from '../../../src/ipam/index.js';

t.test('parse: family, prefix, network, first host, size', async (t) => {
  const cases: [string, 4 | 6, number, string, string, bigint][] = [
    ['10.244.0.0/16', 4, 16, '10.244.0.0', '10.244.0.1', 65536n],
    ['10.244.3.0/24', 4, 24, '10.244.3.0', '10.244.3.1', 256n],
    ['0.0.0.0/0', 4, 0, '0.0.0.0', '0.0.0.1', 1n << 32n],
    ['192.168.1.7/32', 4, 32, '192.168.1.7', '192.168.1.7', 1n],
    ['fd00:10:244:3::/64', 6, 64, 'fd00:10:244:3::', 'fd00:10:244:3::1', 1n << 64n],
    ['FD00:0:0:0::/48', 6, 48, 'fd00::', 'fd00::1', 1n << 80n],
    ['::/0', 6, 0, '::', '::1', 1n << 128n],
    ['fd00::5/128', 6, 128, 'fd00::5', 'fd00::5', 1n],
  ];
  for (const [text, family, prefix, network, firstHost, size] of cases) {
    const c = Cidr.parse(text);
    t.equal(c.family, family, `${text} family`);
    t.equal(c.prefixLength, prefix, `${text} prefix`);
    t.equal(c.network, network, `${text} network`);
    t.equal(c.firstHost, firstHost, `${text} first host`);
    t.equal(c.size, size, `${text} size`);
    t.equal(c.end, c.start + size - 1n, `${text} end`);
    t.equal(c.toString(), `${network}/${prefix}`, `${text} toString`);
    t.equal(JSON.stringify({ c }), JSON.stringify({ c: `${network}/${prefix}` }), `${text} toJSON`);
    t.ok(Object.isFrozen(c), `${text} frozen`);
  }
});

t.test('strict parse refuses malformed input and host bits; lenient masks', async (t) => {
  const bad: [string, RegExp][] = [
    ['10.244.1.0/16', /host bits set \(the network is 10\.244\.0\.0\/16\)/],
    ['fd00::1/64', /host bits set \(the network is fd00::\/64\)/],
    ['10.244.0.0', /is not a CIDR/],
    ['10.244.0.0/', /is not a CIDR/],
    ['10.244.0.0/016', /is not a CIDR/],
    ['10.244.0.0/-1', /is not a CIDR/],
    ['10.244.0.0/16/8', /is not a CIDR/],
    ['10.244.0.0/33', /prefix length out of range for IPv4 \(0\.\.32\)/],
    ['fd00::/129', /prefix length out of range for IPv6 \(0\.\.128\)/],
    ['10.244.0/16', /is not an IP address/],
    ['fe80::%eth0/64', /is not an IP address/],
    [' 10.244.0.0/16', /is not an IP address/],
    ['', /is not a CIDR/],
  ];
  for (const [text, message] of bad) {
    t.throws(() => Cidr.parse(text), { code: ErrorCodes.INVALID_ARGUMENT, message }, JSON.stringify(text));
  }
  t.equal(Cidr.parseLenient('10.244.1.7/16').toString(), '10.244.0.0/16');
  t.equal(Cidr.parseLenient('fd00::1/64').toString(), 'fd00::/64');
  t.throws(() => Cidr.parseLenient('10.244.1.7'), { code: ErrorCodes.INVALID_ARGUMENT });
});

t.test('from and fromBigInt are strict', async (t) => {
  t.equal(Cidr.from('10.244.3.0', 24).toString(), '10.244.3.0/24');
  t.throws(() => Cidr.from('10.244.3.1', 24), { message: /host bits/ });
  t.throws(() => Cidr.from('10.244.3.0', 24.5), { message: /prefix length/ });
  t.equal(Cidr.fromBigInt(6, 0xfd00n << 112n, 16).toString(), 'fd00::/16');
  t.throws(() => Cidr.fromBigInt(4, 1n << 32n, 32), { message: /out of range/ });
  t.throws(() => Cidr.fromBigInt(4, 1n, 31), { message: /"0\.0\.0\.1\/31" has host bits/ });
});

t.test('contains, overlaps, equals', async (t) => {
  const net = Cidr.parse('10.244.0.0/16');
  const cases: [string, boolean][] = [
    ['10.244.0.0', true],
    ['10.244.255.255', true],
    ['10.245.0.0', false],
    ['10.243.255.255', false],
    ['::', false],
    ['10.244.3.0/24', true],
    ['10.244.0.0/16', true],
    ['10.0.0.0/8', false],
    ['10.245.0.0/24', false],
    ['fd00::/64', false],
  ];
  for (const [other, expected] of cases) {
    const arg = other.includes('/') ? Cidr.parse(other) : other;
    t.equal(net.contains(arg), expected, `contains ${other}`);
  }
  t.throws(() => net.contains('junk'), { code: ErrorCodes.INVALID_ARGUMENT });

  const overlaps: [string, string, boolean][] = [
    ['10.244.0.0/16', '10.0.0.0/8', true],
    ['10.244.0.0/16', '10.244.7.0/24', true],
    ['10.244.0.0/16', '10.245.0.0/16', false],
    ['10.244.0.0/24', '10.244.1.0/24', false],
    ['fd00::/48', 'fd00:0:0:5::/64', true],
    ['fd00::/48', 'fd01::/48', false],
    ['0.0.0.0/0', '::/0', false],
  ];
  for (const [a, b, expected] of overlaps) {
    t.equal(Cidr.parse(a).overlaps(Cidr.parse(b)), expected, `${a} overlaps ${b}`);
    t.equal(Cidr.parse(b).overlaps(Cidr.parse(a)), expected, `${b} overlaps ${a}`);
  }

  t.ok(Cidr.parse('fd00::/64').equals(Cidr.parse('FD00:0::/64')));
  t.notOk(Cidr.parse('10.0.0.0/8').equals(Cidr.parse('10.0.0.0/9')));
  t.notOk(Cidr.parse('0.0.0.0/0').equals(Cidr.parse('::/0')));
});

t.test('next steps to the following network of the same length', async (t) => {
  const cases: [string, string | undefined][] = [
    ['10.244.3.0/24', '10.244.4.0/24'],
    ['10.244.255.0/24', '10.245.0.0/24'],
    ['255.255.255.0/24', undefined],
    ['0.0.0.0/0', undefined],
    ['fd00:10:244:3::/64', 'fd00:10:244:4::/64'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127', undefined],
  ];
  for (const [text, next] of cases) t.equal(Cidr.parse(text).next()?.toString(), next, text);
});

t.test('subnet index arithmetic', async (t) => {
  const v4 = Cidr.parse('10.244.0.0/16');
  t.equal(v4.subnetCount(24), 256n);
  t.equal(v4.subnetCount(16), 1n);
  t.equal(v4.subnetAt(24, 0n).toString(), '10.244.0.0/24');
  t.equal(v4.subnetAt(24, 3n).toString(), '10.244.3.0/24');
  t.equal(v4.subnetAt(24, 255n).toString(), '10.244.255.0/24');
  t.equal(v4.subnetAt(26, 5n).toString(), '10.244.1.64/26');
  t.equal(v4.subnetIndexOf(24, Cidr.parse('10.244.3.0/24').start), 3n);
  t.equal(v4.subnetIndexOf(24, Cidr.parse('10.244.3.200/32').start), 3n);
  t.equal(v4.subnetIndexOf(26, Cidr.parse('10.244.1.64/26').start), 5n);

  const v6 = Cidr.parse('fd00:10:244::/48');
  t.equal(v6.subnetCount(64), 65536n);
  t.equal(v6.subnetAt(64, 3n).toString(), 'fd00:10:244:3::/64');
  t.equal(v6.subnetAt(64, 65535n).toString(), 'fd00:10:244:ffff::/64');
  t.equal(v6.subnetIndexOf(64, Cidr.parse('fd00:10:244:ff::/64').start), 255n);

  const rangeError = { code: ErrorCodes.INVALID_ARGUMENT };
  t.throws(() => v4.subnetAt(24, 256n), rangeError);
  t.throws(() => v4.subnetAt(24, -1n), rangeError);
  t.throws(() => v4.subnetCount(15), rangeError);
  t.throws(() => v4.subnetCount(33), rangeError);
  t.throws(() => v4.subnetIndexOf(24, Cidr.parse('10.245.0.0/24').start), rangeError);

  t.same([...Cidr.parse('10.244.0.0/24').subnets(26)].map(String), [
    '10.244.0.0/26',
    '10.244.0.64/26',
    '10.244.0.128/26',
    '10.244.0.192/26',
  ]);
  const first = Cidr.parse('fd00::/16').subnets(64).next().value;
  t.equal(first?.toString(), 'fd00::/64', 'subnets is lazy over a huge split');
});

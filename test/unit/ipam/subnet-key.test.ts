import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import {
  Cidr,
  DEFAULT_PREFIX,
  formatSubnetKey,
  parseSubnetKey,
  subnetKeyOfPath,
  subnetPath,
  subnetsDir,
  type SubnetKey,
} from '../../../src/ipam/index.js';

const v4 = Cidr.parse('10.244.3.0/24');
const v6 = Cidr.parse('fd00:10:244:3::/64');

t.test('keys round-trip in flannel form', async (t) => {
  const cases: [SubnetKey, string][] = [
    [{ ipv4: v4 }, '10.244.3.0-24'],
    [{ ipv6: v6 }, 'fd00:10:244:3::-64'],
    [{ ipv4: v4, ipv6: v6 }, '10.244.3.0-24&fd00:10:244:3::-64'],
    [{ ipv4: Cidr.parse('10.0.0.4/30') }, '10.0.0.4-30'],
    [{ ipv4: Cidr.parse('0.0.0.0/0') }, '0.0.0.0-0'],
    [{ ipv6: Cidr.parse('::/0') }, '::-0'],
    [{ ipv6: Cidr.parse('fd00::8000:0:0:0/65') }, 'fd00::8000:0:0:0-65'],
  ];
  for (const [subnets, key] of cases) {
    t.equal(formatSubnetKey(subnets), key, `format ${key}`);
    const parsed = parseSubnetKey(key);
    t.strictSame(Object.keys(parsed).sort(), Object.keys(subnets).sort(), `families of ${key}`);
    t.equal(String(parsed.ipv4), String(subnets.ipv4), `ipv4 of ${key}`);
    t.equal(String(parsed.ipv6), String(subnets.ipv6), `ipv6 of ${key}`);
  }
});

t.test('malformed keys are refused, naming the key', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /has an empty part/],
    ['&', /has an empty part/],
    ['10.244.3.0-24&', /has an empty part/],
    ['&fd00:10:244:3::-64', /has an empty part/],
    ['10.244.3.0-24&fd00:10:244:3::-64&10.244.4.0-24', /has more than two parts/],
    ['10.244.3.0', /is not <address>-<prefix length>/],
    ['10.244.3.0-', /is not <address>-<prefix length>/],
    ['10.244.3.0-024', /is not <address>-<prefix length>/],
    ['10.244.3.0-+24', /is not <address>-<prefix length>/],
    ['10.244.3.0/24', /is not <address>-<prefix length>/],
    ['10.244.3.0-24 ', /is not <address>-<prefix length>/],
    [' 10.244.3.0-24', /is not an IP address/],
    ['10.244.3-24', /is not an IP address/],
    ['10.244.3.256-24', /is not an IP address/],
    ['-24', /is not an IP address/],
    ['10.244.3.0-33', /prefix length out of range for IPv4/],
    ['fd00::-129', /prefix length out of range for IPv6/],
    ['10.244.3.1-24', /host bits set/],
    ['fd00:10:244:3::1-64', /host bits set/],
    ['FD00:10:244:3::-64', /not in canonical form \(fd00:10:244:3::\)/],
    ['fd00:10:244:3:0:0:0:0-64', /not in canonical form/],
    ['fd00:10:244:3::-64&10.244.3.0-24', /must be <IPv4 part>&<IPv6 part>/],
    ['10.244.3.0-24&10.244.4.0-24', /must be <IPv4 part>&<IPv6 part>/],
    ['fd00:10:244:3::-64&fd00:10:244:4::-64', /must be <IPv4 part>&<IPv6 part>/],
    ['10.244.3.0-24 & fd00:10:244:3::-64', /is not/],
  ];
  for (const [key, message] of cases) {
    const err = t.throws(() => parseSubnetKey(key), JSON.stringify(key));
    t.hasStrict(err, { code: ErrorCodes.INVALID_KEY, details: { key } }, `${JSON.stringify(key)} code`);
    t.match((err as Error).message, message, `${JSON.stringify(key)} message`);
    t.ok(
      (err as Error).message.startsWith(`subnet key ${JSON.stringify(key)}: `),
      `${JSON.stringify(key)} named`,
    );
  }
});

t.test('format refuses nothing or wrong families', async (t) => {
  const cases: [SubnetKey, string][] = [
    [{}, ''],
    [{ ipv4: v6 }, 'ipv4'],
    [{ ipv6: v4 }, 'ipv6'],
    [{ ipv4: v4, ipv6: v4 }, 'ipv6'],
  ];
  for (const [subnets, field] of cases) {
    const err = t.throws(() => formatSubnetKey(subnets));
    t.hasStrict(err, { code: ErrorCodes.INVALID_ARGUMENT, details: { field } }, JSON.stringify(subnets));
  }
});

t.test('registry paths', async (t) => {
  t.equal(DEFAULT_PREFIX, '/coreos.com/network');
  t.equal(subnetsDir(), '/coreos.com/network/subnets/');
  t.equal(subnetsDir('/weft/net/'), '/weft/net/subnets/');
  t.equal(subnetPath('10.244.3.0-24'), '/coreos.com/network/subnets/10.244.3.0-24');
  t.equal(subnetPath({ ipv4: v4, ipv6: v6 }, '/x'), '/x/subnets/10.244.3.0-24&fd00:10:244:3::-64');

  const good: [string, string | undefined, string][] = [
    ['/coreos.com/network/subnets/10.244.3.0-24', undefined, '10.244.3.0-24'],
    ['/x/subnets/10.244.3.0-24&fd00:10:244:3::-64', '/x/', '10.244.3.0-24&fd00:10:244:3::-64'],
  ];
  for (const [path, prefix, key] of good) t.equal(subnetKeyOfPath(path, prefix), key, path);

  const bad: [string, string | undefined][] = [
    ['/coreos.com/network/config', undefined],
    ['/coreos.com/network/subnets/', undefined],
    ['/coreos.com/network/subnets/a/b', undefined],
    ['/other/subnets/10.244.3.0-24', undefined],
    ['/coreos.com/network/subnets/10.244.3.0-24', '/x'],
  ];
  for (const [path, prefix] of bad) {
    const err = t.throws(() => subnetKeyOfPath(path, prefix), path);
    t.hasStrict(err, { code: ErrorCodes.INVALID_KEY, details: { key: path } }, `${path} code`);
  }
});

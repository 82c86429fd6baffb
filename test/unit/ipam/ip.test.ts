import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { bigIntToIp, canonicalIp, ipFamily, ipToBigInt, isIPv4, isIPv6 } from '../../../src/ipam/index.js';

t.test('ipFamily recognises bare addresses only', async (t) => {
  const cases: [string, 4 | 6 | undefined][] = [
    ['10.244.0.1', 4],
    ['0.0.0.0', 4],
    ['255.255.255.255', 4],
    ['fd00:10:244:3::', 6],
    ['FD00::1', 6],
    ['::', 6],
    ['::ffff:1.2.3.4', 6],
    ['10.244.0.0/16', undefined],
    ['fd00::/64', undefined],
    ['fe80::1%eth0', undefined],
    ['010.1.1.1', undefined],
    ['256.1.1.1', undefined],
    ['1.2.3', undefined],
    [' 1.2.3.4', undefined],
    ['1.2.3.4 ', undefined],
    ['1::2::3', undefined],
    ['[::1]', undefined],
    ['', undefined],
    ['host.example', undefined],
  ];
  for (const [text, family] of cases) {
    t.equal(ipFamily(text), family, JSON.stringify(text));
    t.equal(isIPv4(text), family === 4, `isIPv4 ${JSON.stringify(text)}`);
    t.equal(isIPv6(text), family === 6, `isIPv6 ${JSON.stringify(text)}`);
  }
});

t.test('ip <-> bigint round trip in canonical form', async (t) => {
  const cases: [string, bigint, 4 | 6, string][] = [
    ['10.244.3.0', 0x0af40300n, 4, '10.244.3.0'],
    ['0.0.0.0', 0n, 4, '0.0.0.0'],
    ['255.255.255.255', 0xffffffffn, 4, '255.255.255.255'],
    ['::', 0n, 6, '::'],
    ['FD00:0010:0244:0003:0:0:0:0', 0xfd000010024400030000000000000000n, 6, 'fd00:10:244:3::'],
    ['1:0:0:2:0:0:0:3', 0x00010000000000020000000000000003n, 6, '1:0:0:2::3'],
    ['1:0:0:2:3:0:0:4', 0x00010000000000020003000000000004n, 6, '1::2:3:0:0:4'],
    ['1:0:2:3:4:5:6:7', 0x00010000000200030004000500060007n, 6, '1:0:2:3:4:5:6:7'],
  ];
  for (const [text, value, family, canonical] of cases) {
    t.equal(ipToBigInt(text), value, `${text} -> bigint`);
    t.equal(bigIntToIp(value, family), canonical, `${value} -> ip`);
    t.equal(canonicalIp(text), canonical, `canonical ${text}`);
  }
});

t.test('invalid input is refused', async (t) => {
  const invalidArgument = { code: ErrorCodes.INVALID_ARGUMENT };
  t.throws(() => ipToBigInt('10.0.0.0/8'), invalidArgument);
  t.throws(() => ipToBigInt('nope'), { ...invalidArgument, message: '"nope" is not an IP address' });
  t.throws(() => canonicalIp(''), invalidArgument);
  t.throws(() => bigIntToIp(1n << 32n, 4), { ...invalidArgument, message: /out of range for IPv4/ });
  t.throws(() => bigIntToIp(-1n, 6), invalidArgument);
  t.equal(bigIntToIp(1n << 32n, 6), '::1:0:0');
});

/** Wire forms of addresses (pure: no namespace needed). */
import t from 'tap';
import { ErrorCodes, WeftError } from '../../../src/errors/index.js';
import {
  decodeCidr,
  decodeIp,
  decodeMac,
  encodeCidr,
  encodeIp,
  encodeMac,
  encodePort,
} from '../../../src/netlink/encoding.js';

t.test('IPv4 and IPv6 round-trip to iproute2 text', async (t) => {
  const cases: [string, string][] = [
    ['10.244.2.0', '0af40200'],
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['fd00:10:244:2::', 'fd000010024400020000000000000000'],
    ['2001:db8::1:0:0:1', '20010db8000000000001000000000001'],
    ['2001:db8:0:1:1:1:1:1', '20010db8000000010001000100010001'],
    ['::ffff:192.0.2.1', '00000000000000000000ffffc0000201'],
    ['fe80::1', 'fe800000000000000000000000000001'],
  ];
  for (const [text, hex] of cases) {
    const wire = encodeIp(text);
    t.equal(wire.bytes.toString('hex'), hex, `encode ${text}`);
    t.equal(decodeIp(wire.bytes), text, `decode ${text}`);
  }
  t.equal(encodeIp('2001:DB8:0:0::1').bytes.toString('hex'), '20010db8000000000000000000000001');
  t.equal(encodeIp('1:2:3:4:5:6:7.8.9.10').bytes.toString('hex'), '0001000200030004000500060708090a');
  t.equal(encodeIp('::7.8.9.10').bytes.toString('hex'), '0000000000000000000000000708090a');
});

t.test('CIDRs, MACs and ports', async (t) => {
  t.match(encodeCidr('10.244.2.0/24'), { family: 'inet', prefixLen: 24 });
  t.match(encodeCidr('10.244.2.7'), { prefixLen: 32 });
  t.match(encodeCidr('fd00::/8'), { family: 'inet6', prefixLen: 8 });
  t.equal(decodeCidr('inet', undefined, 0), '0.0.0.0/0');
  t.equal(decodeCidr('inet6', undefined, 0), '::/0');
  t.equal(encodeMac('0A:58:0a:f4:02:00').toString('hex'), '0a580af40200');
  t.equal(decodeMac(Buffer.from('0a580af40200', 'hex')), '0a:58:0a:f4:02:00');
  t.equal(encodePort(8472).toString('hex'), '2118', 'big-endian');
});

t.test('bad input is INVALID_ARGUMENT naming the field', async (t) => {
  const bad: [() => unknown, string][] = [
    [() => encodeIp('10.0.0.256'), 'address'],
    [() => encodeIp('fe80::1%eth0'), 'address'],
    [() => encodeCidr('10.0.0.0/33'), 'dst'],
    [() => encodeCidr('10.0.0.0/'), 'dst'],
    [() => encodeCidr('::/129'), 'dst'],
    [() => encodeMac('0a:58:0a:f4:02'), 'lladdr'],
    [() => encodePort(65536), 'port'],
  ];
  for (const [fn, field] of bad) {
    const err = t.throws(fn) as unknown;
    t.ok(err instanceof WeftError && err.code === ErrorCodes.INVALID_ARGUMENT && err.details.field === field);
  }
});

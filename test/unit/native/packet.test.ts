import t from 'tap';
import { loadNative } from '../../../src/native/index.js';

const loaded = loadNative();
if (!loaded.addon) throw new Error(`the native addon must be built for this test: ${loaded.reason}`);
const { parseIpv4 } = loaded.addon;

/** A valid IPv4/ICMP echo packet of `payload` bytes. */
function packet(payload = 8): Buffer {
  const b = Buffer.alloc(20 + 8 + payload);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b[8] = 64;
  b[9] = 1;
  b.set([10, 244, 1, 2], 12);
  b.set([10, 244, 2, 2], 16);
  b[20] = 8;
  return b;
}

t.test('a well-formed packet is read', async (t) => {
  t.same(parseIpv4(packet()), { error: 'ok', ttl: 64, protocol: 1, totalLength: 36 });
  const padded = Buffer.concat([packet(), Buffer.alloc(10)]);
  t.equal(parseIpv4(padded).totalLength, 36, 'the header length wins over trailing bytes');
});

t.test('malformed packets are named, never read past their end', async (t) => {
  const cases: [string, (b: Buffer) => Buffer, string][] = [
    ['empty', () => Buffer.alloc(0), 'truncated'],
    ['shorter than a header', (b) => b.subarray(0, 19), 'truncated'],
    ['IPv6', (b) => ((b[0] = 0x60), b), 'bad-version'],
    ['one byte of IPv6', () => Buffer.from([0x60]), 'bad-version'],
    ['IHL below 5', (b) => ((b[0] = 0x44), b), 'bad-ihl'],
    ['IHL beyond the packet', (b) => ((b[0] = 0x4f), b.subarray(0, 40)), 'truncated'],
    ['total length beyond the bytes', (b) => (b.writeUInt16BE(1500, 2), b), 'bad-length'],
    ['total length below the header', (b) => (b.writeUInt16BE(10, 2), b), 'bad-length'],
  ];
  for (const [name, mangle, error] of cases) t.equal(parseIpv4(mangle(packet())).error, error, name);
});

t.test('random bytes never crash the parser', async (t) => {
  let seed = 1;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed);
  for (let i = 0; i < 20_000; i++) {
    const b = Buffer.alloc(rnd() % 80);
    for (let j = 0; j < b.length; j++) b[j] = rnd() & 0xff;
    if (b.length > 0 && i % 2 === 0) b[0] = 0x40 | (b[0]! & 0x0f);
    const r = parseIpv4(b);
    if (r.error === 'ok' && (r.totalLength ?? 0) > b.length) t.fail(`length beyond the buffer at ${i}`);
  }
  t.pass('20,000 random packets parsed');
});

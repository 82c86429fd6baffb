import { spawnSync } from 'node:child_process';
import {
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  closeSync,
  statSync,
  mkdirSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import {
  formatSubnetEnv,
  parseSubnetEnv,
  writeSubnetEnv,
  type SubnetEnv,
} from '../../../src/flanneld/subnet-env.js';

const V4: SubnetEnv = { network: '10.244.0.0/16', subnet: '10.244.3.0/24', mtu: 1450, ipMasq: false };
const DUAL: SubnetEnv = {
  network: '10.244.0.0/16',
  subnet: '10.244.3.0/24',
  ipv6Network: 'fd00:10:244::/56',
  ipv6Subnet: 'fd00:10:244:3::/64',
  mtu: 1430,
  ipMasq: true,
};

t.test('golden: IPv4', async (t) => {
  t.equal(
    formatSubnetEnv(V4),
    'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
  );
});

t.test('golden: dual stack', async (t) => {
  t.equal(
    formatSubnetEnv(DUAL),
    [
      'FLANNEL_NETWORK=10.244.0.0/16',
      'FLANNEL_SUBNET=10.244.3.1/24',
      'FLANNEL_IPV6_NETWORK=fd00:10:244::/56',
      'FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64',
      'FLANNEL_MTU=1430',
      'FLANNEL_IPMASQ=true',
      '',
    ].join('\n'),
  );
});

t.test('first host is computed on the whole address, with the lease prefix', async (t) => {
  const cases: [string, string, string][] = [
    ['10.0.0.0/8', '10.0.0.0/30', '10.0.0.1/30'],
    ['10.244.0.0/16', '10.244.255.0/24', '10.244.255.1/24'],
    ['10.0.0.0/8', '10.1.0.0/16', '10.1.0.1/16'],
    ['0.0.0.0/0', '255.255.255.0/24', '255.255.255.1/24'],
  ];
  for (const [network, subnet, want] of cases) {
    t.match(formatSubnetEnv({ ...V4, network, subnet }), `FLANNEL_SUBNET=${want}\n`, subnet);
  }
  const v6: [string, string, string][] = [
    ['fd00::/48', 'fd00:0:0:ff::/64', 'fd00:0:0:ff::1/64'],
    ['2001:db8::/32', '2001:db8:1:2::/64', '2001:db8:1:2::1/64'],
    // Canonical text: lower case, the longest zero run compressed, a lone zero group kept.
    ['FD00:0:0:0::/56', 'FD00:0:0:1::/64', 'fd00:0:0:1::1/64'],
    ['2001:db8:0:1:1::/80', '2001:db8:0:1:1:0::/96', '2001:db8:0:1:1::1/96'],
    ['2001:db8::/64', '2001:db8::ffff:ffff:fffc/126', '2001:db8::ffff:ffff:fffd/126'],
  ];
  for (const [ipv6Network, ipv6Subnet, want] of v6) {
    t.match(formatSubnetEnv({ ...V4, ipv6Network, ipv6Subnet }), `FLANNEL_IPV6_SUBNET=${want}\n`, ipv6Subnet);
  }
  t.match(
    formatSubnetEnv({ ...V4, ipv6Network: 'FD00:0:0:0::/56', ipv6Subnet: 'fd00::/64' }),
    'FLANNEL_IPV6_NETWORK=fd00::/56\n',
  );
});

t.test('invalid input names the field', async (t) => {
  const cases: [Partial<SubnetEnv>, string | RegExp][] = [
    [{ network: '10.244.0.0' }, 'subnet.env: field network: must be an IPv4 CIDR, got "10.244.0.0"'],
    [{ network: 'fd00::/48' }, 'subnet.env: field network: must be an IPv4 CIDR, got "fd00::/48"'],
    [
      { subnet: '10.244.3.5/24' },
      'subnet.env: field subnet: 10.244.3.5/24 has host bits set (the network is 10.244.3.0/24)',
    ],
    [{ subnet: '10.245.3.0/24' }, 'subnet.env: field subnet: 10.245.3.0/24 is not inside 10.244.0.0/16'],
    [
      { subnet: '10.244.3.0/31' },
      /^subnet\.env: field subnet: 10\.244\.3\.0\/31 has no room for a first host/,
    ],
    [{ subnet: '010.244.3.0/24' }, /field subnet: must be an IPv4 CIDR/],
    [{ mtu: 0 }, 'subnet.env: field mtu: must be an integer in 68..65535, got 0'],
    [{ mtu: 1450.5 }, /field mtu/],
    [
      { ipv6Network: 'fd00::/48' },
      'subnet.env: field ipv6Subnet: ipv6Network and ipv6Subnet must be given together',
    ],
    [{ ipv6Network: '10.0.0.0/8', ipv6Subnet: '10.0.0.0/24' }, /field ipv6Network: must be an IPv6 CIDR/],
    [
      { ipv6Network: 'fd00::/48', ipv6Subnet: 'fd01::/64' },
      /field ipv6Subnet: fd01::\/64 is not inside fd00::\/48/,
    ],
  ];
  for (const [patch, message] of cases) {
    t.throws(
      () => formatSubnetEnv({ ...V4, ...patch }),
      { code: ErrorCodes.INVALID_ARGUMENT, message },
      JSON.stringify(patch),
    );
  }
});

t.test('parse round trip', async (t) => {
  for (const env of [V4, DUAL]) t.strictSame(parseSubnetEnv(formatSubnetEnv(env)), env);
  const text = formatSubnetEnv(DUAL);
  t.equal(formatSubnetEnv(parseSubnetEnv(text)), text, 'text → env → the same text');
});

t.test('parse tolerates what a shell would', async (t) => {
  const text = [
    '# written by flanneld',
    '',
    '  FLANNEL_NETWORK=10.244.0.0/16  ',
    'export FLANNEL_SUBNET="10.244.3.1/24"',
    "FLANNEL_MTU='1450'",
    'FLANNEL_IPMASQ=true',
    'FLANNEL_SOMETHING_NEW=whatever',
    'FLANNEL_MTU=1400',
  ].join('\r\n');
  t.strictSame(parseSubnetEnv(text), {
    network: '10.244.0.0/16',
    subnet: '10.244.3.0/24',
    mtu: 1400,
    ipMasq: true,
  });
});

t.test('parse errors name the line and the key', async (t) => {
  const good = formatSubnetEnv(V4).split('\n');
  const withLine = (i: number, line: string) => good.map((l, j) => (j === i ? line : l)).join('\n');
  const cases: [string, string | RegExp][] = [
    [
      withLine(2, 'FLANNEL_MTU=big'),
      'subnet.env line 3: field FLANNEL_MTU: must be an integer in 68..65535, got "big"',
    ],
    [
      withLine(3, 'FLANNEL_IPMASQ=yes'),
      'subnet.env line 4: field FLANNEL_IPMASQ: must be true or false, got "yes"',
    ],
    [
      withLine(0, 'FLANNEL_NETWORK=10.244.0.1/16'),
      'subnet.env line 1: field FLANNEL_NETWORK: 10.244.0.1/16 has host bits set',
    ],
    [
      withLine(1, 'FLANNEL_SUBNET=fd00::1/64'),
      'subnet.env line 2: field FLANNEL_SUBNET: must be an IPv4 CIDR, got "fd00::1/64"',
    ],
    [
      withLine(1, 'this is not an assignment'),
      'subnet.env line 2: expected KEY=VALUE, got "this is not an assignment"',
    ],
    [withLine(2, '# FLANNEL_MTU=1450'), 'subnet.env: field FLANNEL_MTU: missing'],
    [
      `${formatSubnetEnv(V4)}FLANNEL_IPV6_NETWORK=fd00::/48\n`,
      'subnet.env: field FLANNEL_IPV6_SUBNET: missing',
    ],
    [
      `${formatSubnetEnv(V4)}FLANNEL_IPV6_SUBNET=fd00::1/64\n`,
      'subnet.env: field FLANNEL_IPV6_NETWORK: missing',
    ],
    [
      `${formatSubnetEnv(V4)}FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=10.0.0.1/24\n`,
      'subnet.env line 6: field FLANNEL_IPV6_SUBNET: must be an IPv6 CIDR, got "10.0.0.1/24"',
    ],
  ];
  for (const [text, message] of cases) {
    t.throws(
      () => parseSubnetEnv(text),
      { code: ErrorCodes.INVALID_ARGUMENT, message },
      JSON.stringify(text),
    );
  }
});

t.test('atomic write', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'weft-subnet-env-'));
  t.teardown(() => import('node:fs').then((fs) => fs.rmSync(root, { recursive: true, force: true })));
  const dir = join(root, 'run', 'flannel');
  const path = join(dir, 'subnet.env');

  await t.test('creates the directory and writes the text', async (t) => {
    await writeSubnetEnv(path, formatSubnetEnv(V4));
    t.equal(readFileSync(path, 'utf8'), formatSubnetEnv(V4));
    t.equal(statSync(path).mode & 0o777, 0o644);
    t.strictSame(readdirSync(dir), ['subnet.env'], 'no temp file left');
  });

  await t.test('replaces the file in one rename', async (t) => {
    const before = statSync(path);
    // A reader that opened the old file keeps reading the old text in full: the new text went
    // to a new inode and was renamed over the name, the old one was never truncated.
    const fd = openSync(path, 'r');
    await writeSubnetEnv(path, formatSubnetEnv(DUAL));
    const buf = Buffer.alloc(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    closeSync(fd);
    t.equal(buf.subarray(0, n).toString(), formatSubnetEnv(V4), 'the old inode still holds the old text');
    t.not(statSync(path).ino, before.ino, 'the name points to a new inode');
    t.equal(readFileSync(path, 'utf8'), formatSubnetEnv(DUAL));
    t.strictSame(readdirSync(dir), ['subnet.env'], 'no temp file left');
  });

  await t.test('a concurrent reader sees one whole version or the other', async (t) => {
    const a = formatSubnetEnv(V4).repeat(500);
    const b = formatSubnetEnv(DUAL).repeat(500);
    let stop = false;
    let reads = 0;
    const bad: string[] = [];
    const reader = (async () => {
      while (!stop) {
        const text = readFileSync(path, 'utf8');
        reads++;
        if (text !== a && text !== b && text !== formatSubnetEnv(DUAL)) bad.push(text.slice(0, 60));
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 0; i < 100; i++) await writeSubnetEnv(path, i % 2 ? a : b);
    stop = true;
    await reader;
    t.ok(reads > 0, `reader ran (${reads} reads)`);
    t.strictSame(bad, [], 'no torn or empty read');
    t.strictSame(readdirSync(dir), ['subnet.env'], 'no temp file left');
  });

  await t.test('a failed write leaves no temp file and the old file alone', async (t) => {
    const blocked = join(root, 'blocked');
    mkdirSync(join(blocked, 'subnet.env'), { recursive: true });
    writeFileSync(join(blocked, 'subnet.env', 'keep'), 'x');
    await t.rejects(writeSubnetEnv(join(blocked, 'subnet.env'), 'new\n'));
    t.strictSame(readdirSync(blocked), ['subnet.env'], 'no temp file left');
    t.strictSame(readdirSync(join(blocked, 'subnet.env')), ['keep']);
  });
});

t.test('temp files a killed writer left are removed; a live writer and other files are not', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-subnet-env-stale-'));
  t.teardown(() => import('node:fs').then((fs) => fs.rmSync(dir, { recursive: true, force: true })));
  // A PID that is certainly gone: a child that has exited and been reaped.
  const dead = spawnSync('true').pid;
  const stale = `.subnet.env.${dead}.0123abcd.tmp`;
  const live = `.subnet.env.1.89abcdef.tmp`;
  for (const f of [stale, live, 'other.env', `.other.env.${dead}.0123abcd.tmp`]) {
    writeFileSync(join(dir, f), 'half a file');
  }
  await writeSubnetEnv(join(dir, 'subnet.env'), formatSubnetEnv(V4));
  t.strictSame(
    readdirSync(dir).sort(),
    [`.other.env.${dead}.0123abcd.tmp`, live, 'other.env', 'subnet.env'].sort(),
    "only the dead writer's temp file of subnet.env is removed",
  );
});

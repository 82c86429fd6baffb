import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { parseNetConfig, type NetConfig, type SubnetPool } from '../../../src/ipam/index.js';

/** A pool as plain strings, to compare in one assertion. */
function show(pool: SubnetPool | undefined) {
  return (
    pool && {
      ...pool,
      network: `${pool.network}`,
      subnetMin: `${pool.subnetMin}`,
      subnetMax: `${pool.subnetMax}`,
    }
  );
}

function pool(network: string, subnetLen: number, subnetMin: string, subnetMax: string) {
  return { network, subnetLen, subnetMin, subnetMax };
}

const vxlanDefaults = { type: 'vxlan', vni: 1, port: 0, gbp: false, learning: false, directRouting: false };

t.test('a minimal config gets every default', async (t) => {
  const config = parseNetConfig('{"Network":"10.244.0.0/16"}');
  t.strictSame(show(config.ipv4), pool('10.244.0.0/16', 24, '10.244.1.0/24', '10.244.255.0/24'));
  t.equal(config.ipv6, undefined);
  t.notOk('ipv6' in config, 'no ipv6 key when IPv6 is disabled');
  t.strictSame(config.backend, vxlanDefaults);
});

t.test('an already parsed object is accepted too', async (t) => {
  t.strictSame(
    show(parseNetConfig({ Network: '10.0.0.0/8' }).ipv4),
    pool('10.0.0.0/8', 24, '10.0.1.0/24', '10.255.255.0/24'),
  );
});

t.test('IPv4 SubnetLen, SubnetMin and SubnetMax defaults follow the network size', async (t) => {
  const cases: [string, ReturnType<typeof pool>][] = [
    ['10.0.0.0/8', pool('10.0.0.0/8', 24, '10.0.1.0/24', '10.255.255.0/24')],
    ['10.244.0.0/22', pool('10.244.0.0/22', 24, '10.244.1.0/24', '10.244.3.0/24')],
    ['10.244.0.0/23', pool('10.244.0.0/23', 25, '10.244.0.128/25', '10.244.1.128/25')],
    ['10.244.0.0/24', pool('10.244.0.0/24', 26, '10.244.0.64/26', '10.244.0.192/26')],
    ['10.244.0.0/28', pool('10.244.0.0/28', 30, '10.244.0.4/30', '10.244.0.12/30')],
  ];
  for (const [network, expected] of cases) {
    t.strictSame(show(parseNetConfig({ Network: network }).ipv4), expected, network);
  }
});

t.test('IPv6 defaults follow the network size', async (t) => {
  const cases: [string, ReturnType<typeof pool>][] = [
    ['fd00:10:244::/48', pool('fd00:10:244::/48', 64, 'fd00:10:244:1::/64', 'fd00:10:244:ffff::/64')],
    ['fd00::/62', pool('fd00::/62', 64, 'fd00:0:0:1::/64', 'fd00:0:0:3::/64')],
    ['fd00::/63', pool('fd00::/63', 65, 'fd00::8000:0:0:0/65', 'fd00:0:0:1:8000::/65')],
    ['fd00::/124', pool('fd00::/124', 126, 'fd00::4/126', 'fd00::c/126')],
  ];
  for (const [network, expected] of cases) {
    const config = parseNetConfig({ EnableIPv6: true, IPv6Network: network, Network: '10.244.0.0/16' });
    t.strictSame(show(config.ipv6), expected, network);
    t.ok(config.ipv4, 'IPv4 stays enabled');
  }
});

t.test('explicit values within the rules are kept', async (t) => {
  const cases: [Record<string, unknown>, 'ipv4' | 'ipv6', ReturnType<typeof pool>][] = [
    [
      { Network: '10.244.0.0/16', SubnetLen: 18 },
      'ipv4',
      pool('10.244.0.0/16', 18, '10.244.64.0/18', '10.244.192.0/18'),
    ],
    [
      { Network: '10.244.0.0/16', SubnetLen: 30 },
      'ipv4',
      pool('10.244.0.0/16', 30, '10.244.0.4/30', '10.244.255.252/30'),
    ],
    [
      { Network: '10.244.0.0/16', SubnetLen: 0 },
      'ipv4',
      pool('10.244.0.0/16', 24, '10.244.1.0/24', '10.244.255.0/24'),
    ],
    [
      { Network: '10.244.0.0/16', SubnetMin: '10.244.10.0', SubnetMax: '10.244.20.0' },
      'ipv4',
      pool('10.244.0.0/16', 24, '10.244.10.0/24', '10.244.20.0/24'),
    ],
    [
      { Network: '10.244.0.0/16', SubnetMin: '10.244.0.0', SubnetMax: '10.244.0.0' },
      'ipv4',
      pool('10.244.0.0/16', 24, '10.244.0.0/24', '10.244.0.0/24'),
    ],
    [
      { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetLen: 56 },
      'ipv6',
      pool('fd00::/48', 56, 'fd00:0:0:100::/56', 'fd00:0:0:ff00::/56'),
    ],
    [
      { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetLen: 126 },
      'ipv6',
      pool('fd00::/48', 126, 'fd00::4/126', 'fd00::ffff:ffff:ffff:ffff:fffc/126'),
    ],
    [
      {
        EnableIPv4: false,
        EnableIPv6: true,
        IPv6Network: 'fd00::/48',
        IPv6SubnetMin: 'FD00:0:0:10::',
        IPv6SubnetMax: 'fd00::20:0:0:0:0',
      },
      'ipv6',
      pool('fd00::/48', 64, 'fd00:0:0:10::/64', 'fd00:0:0:20::/64'),
    ],
  ];
  for (const [json, family, expected] of cases) {
    t.strictSame(show(parseNetConfig(JSON.stringify(json))[family]), expected, JSON.stringify(json));
  }
});

t.test('keys match case-insensitively, unknown keys and nulls are ignored', async (t) => {
  const config = parseNetConfig(
    JSON.stringify({
      network: '10.244.0.0/16',
      SUBNETLEN: 26,
      subnetMax: '10.244.0.192',
      enableipv6: true,
      ipv6network: 'fd00::/48',
      SubnetMin: null,
      Flavour: 'strawberry',
      backend: {
        type: 'vxlan',
        vni: 7,
        PORT: 4789,
        gbp: true,
        LEARNING: true,
        directrouting: true,
        mtu: 1400,
        Extra: 1,
      },
    }),
  );
  t.strictSame(show(config.ipv4), pool('10.244.0.0/16', 26, '10.244.0.64/26', '10.244.0.192/26'));
  t.strictSame(show(config.ipv6), pool('fd00::/48', 64, 'fd00:0:0:1::/64', 'fd00:0:0:ffff::/64'));
  t.strictSame(config.backend, {
    type: 'vxlan',
    vni: 7,
    port: 4789,
    gbp: true,
    learning: true,
    directRouting: true,
    mtu: 1400,
  });
});

t.test('IPv6-only: the IPv4 fields are not consulted', async (t) => {
  const config = parseNetConfig({
    EnableIPv4: false,
    EnableIPv6: true,
    IPv6Network: 'fd00::/48',
    Network: 'junk',
  });
  t.notOk('ipv4' in config);
  t.equal(`${config.ipv6?.network}`, 'fd00::/48');
});

t.test('backends and their defaults', async (t) => {
  const cases: [unknown, NetConfig['backend']][] = [
    [undefined, vxlanDefaults as NetConfig['backend']],
    [null, vxlanDefaults as NetConfig['backend']],
    [{}, vxlanDefaults as NetConfig['backend']],
    [{ VNI: 4 }, { ...vxlanDefaults, vni: 4 } as NetConfig['backend']],
    [
      { Type: 'vxlan', VNI: 0xffffff, MTU: 1450 },
      { ...vxlanDefaults, vni: 0xffffff, mtu: 1450 } as NetConfig['backend'],
    ],
    [{ Type: 'udp' }, { type: 'udp', port: 8285 }],
    [
      { Type: 'udp', Port: 9000 },
      { type: 'udp', port: 9000 },
    ],
    [{ Type: 'host-gw', VNI: 3 }, { type: 'host-gw' }],
    [{ Type: 'alloc' }, { type: 'alloc' }],
  ];
  for (const [backend, expected] of cases) {
    const json =
      backend === undefined ? { Network: '10.0.0.0/8' } : { Network: '10.0.0.0/8', Backend: backend };
    t.strictSame(parseNetConfig(JSON.stringify(json)).backend, expected, JSON.stringify(backend));
  }
});

t.test('every error names the field at fault', async (t) => {
  const v4 = { Network: '10.244.0.0/16' };
  const v6only = { EnableIPv4: false, EnableIPv6: true };
  const cases: [unknown, string, string | RegExp][] = [
    ['{"Network": ', '', /^net-conf: not valid JSON/],
    ['', '', /^net-conf: not valid JSON/],
    ['5', '', /expected object/],
    ['[]', '', /expected object/],
    ['null', '', /expected object/],
    [{}, 'Network', 'net-conf: field Network: required when EnableIPv4 is true'],
    [{ Network: 16 }, 'Network', /expected string/],
    [{ Network: '10.244.1.0/16' }, 'Network', /host bits set/],
    [{ Network: '10.244.0.0' }, 'Network', /is not a CIDR/],
    [{ Network: 'fd00::/48' }, 'Network', 'net-conf: field Network: must be an IPv4 network'],
    [
      { Network: '10.244.0.0/29' },
      'Network',
      'net-conf: field Network: is too small: the prefix must be /28 or shorter',
    ],
    [{ Network: '10.244.0.0/29', SubnetLen: 30 }, 'Network', /too small/],
    [{ ...v4, SubnetLen: 17 }, 'SubnetLen', 'net-conf: field SubnetLen: must be ≥ 18 (Network prefix + 2)'],
    [{ ...v4, SubnetLen: 31 }, 'SubnetLen', 'net-conf: field SubnetLen: must be ≤ 30'],
    [{ ...v4, SubnetLen: -1 }, 'SubnetLen', /must be ≥ 18/],
    [{ ...v4, SubnetLen: 24.5 }, 'SubnetLen', /expected int/],
    [{ ...v4, SubnetLen: '24' }, 'SubnetLen', /expected number/],
    [{ Network: '10.244.0.0/24', SubnetLen: 25 }, 'SubnetLen', /must be ≥ 26 \(Network prefix \+ 2\)/],
    [
      { ...v4, SubnetMin: '10.245.0.0' },
      'SubnetMin',
      'net-conf: field SubnetMin: 10.245.0.0 is outside Network 10.244.0.0/16',
    ],
    [{ ...v4, SubnetMax: '10.243.255.0' }, 'SubnetMax', /outside Network/],
    [
      { ...v4, SubnetMin: '10.244.1.5' },
      'SubnetMin',
      /10\.244\.1\.5 is not aligned to SubnetLen \/24 \(nearest below: 10\.244\.1\.0\)/,
    ],
    [{ ...v4, SubnetMax: '10.244.1.128' }, 'SubnetMax', /not aligned/],
    [{ ...v4, SubnetMin: '10.244.1.0/24' }, 'SubnetMin', /is not an IP address/],
    [{ ...v4, SubnetMin: 'fd00::' }, 'SubnetMin', /must be an IPv4 address/],
    [
      { ...v4, SubnetMin: '10.244.9.0', SubnetMax: '10.244.8.0' },
      'SubnetMin',
      /SubnetMin 10\.244\.9\.0 is above SubnetMax 10\.244\.8\.0/,
    ],
    [
      { ...v4, SubnetMax: '10.244.0.0' },
      'SubnetMax',
      /SubnetMin 10\.244\.1\.0 is above SubnetMax 10\.244\.0\.0/,
    ],
    [{ ...v4, EnableIPv4: 'yes' }, 'EnableIPv4', /expected boolean/],
    [{ ...v4, EnableIPv4: false }, 'EnableIPv4', /at least one of EnableIPv4 and EnableIPv6 must be true/],
    [
      { ...v4, EnableIPv6: true },
      'IPv6Network',
      'net-conf: field IPv6Network: required when EnableIPv6 is true',
    ],
    [{ ...v6only, IPv6Network: '10.0.0.0/8' }, 'IPv6Network', /must be an IPv6 network/],
    [{ ...v6only, IPv6Network: 'fd00::1/48' }, 'IPv6Network', /host bits set/],
    [{ ...v6only, IPv6Network: 'fd00::/125' }, 'IPv6Network', /prefix must be \/124 or shorter/],
    [{ ...v6only, IPv6Network: 'fd00::/48', IPv6SubnetLen: 127 }, 'IPv6SubnetLen', /must be ≤ 126/],
    [
      { ...v6only, IPv6Network: 'fd00::/48', IPv6SubnetLen: 49 },
      'IPv6SubnetLen',
      'net-conf: field IPv6SubnetLen: must be ≥ 50 (IPv6Network prefix + 2)',
    ],
    [
      { ...v6only, IPv6Network: 'fd00::/48', IPv6SubnetMin: 'fd01::' },
      'IPv6SubnetMin',
      /outside IPv6Network fd00::\/48/,
    ],
    [
      { ...v6only, IPv6Network: 'fd00::/48', IPv6SubnetMax: 'fd00::1' },
      'IPv6SubnetMax',
      /not aligned to IPv6SubnetLen \/64/,
    ],
    [
      { ...v6only, IPv6Network: 'fd00::/48', IPv6SubnetMin: '10.0.0.0' },
      'IPv6SubnetMin',
      /must be an IPv6 address/,
    ],
    [{ ...v4, Backend: 'vxlan' }, 'Backend', /expected object/],
    [{ ...v4, Backend: [] }, 'Backend', /expected object/],
    [
      { ...v4, Backend: { Type: 'wireguard' } },
      'Backend.Type',
      'net-conf: field Backend.Type: unknown backend type "wireguard" (known: vxlan, udp, host-gw, alloc)',
    ],
    [{ ...v4, Backend: { Type: 'VXLAN' } }, 'Backend.Type', /unknown backend type "VXLAN"/],
    [{ ...v4, Backend: { Type: '' } }, 'Backend.Type', /unknown backend type ""/],
    [{ ...v4, Backend: { Type: 1 } }, 'Backend.Type', /unknown backend type 1/],
    [{ ...v4, Backend: { VNI: -1 } }, 'Backend.VNI', /too small/i],
    [{ ...v4, Backend: { VNI: 0x1000000 } }, 'Backend.VNI', /too big/i],
    [{ ...v4, Backend: { Port: 65536 } }, 'Backend.Port', /too big/i],
    [{ ...v4, Backend: { GBP: 'true' } }, 'Backend.GBP', /expected boolean/],
    [{ ...v4, Backend: { MTU: 20 } }, 'Backend.MTU', /too small/i],
    [{ ...v4, Backend: { Type: 'udp', Port: 'x' } }, 'Backend.Port', /expected number/],
  ];
  for (const [input, field, message] of cases) {
    const label = typeof input === 'string' ? input : JSON.stringify(input);
    const err = t.throws(() => parseNetConfig(input), label);
    t.hasStrict(
      err,
      { code: ErrorCodes.INVALID_CONFIG, details: { object: 'net-conf', field } },
      `${label} field`,
    );
    if (typeof message === 'string') t.equal((err as Error).message, message, `${label} message`);
    else t.match((err as Error).message, message, `${label} message`);
  }
});

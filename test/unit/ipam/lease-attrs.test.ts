import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { decodeLeaseAttrs, encodeLeaseAttrs, type LeaseAttrs } from '../../../src/ipam/index.js';

const KEY = '10.244.3.0-24';

t.test('encoding matches flannel byte for byte, and decodes back', async (t) => {
  const cases: [string, LeaseAttrs, string][] = [
    [
      'vxlan',
      {
        publicIP: '192.168.64.3',
        backendType: 'vxlan',
        backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' },
      },
      '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
    ],
    [
      'udp writes no BackendType',
      { publicIP: '192.168.64.3' },
      '{"PublicIP":"192.168.64.3","PublicIPv6":null}',
    ],
    [
      'host-gw',
      { publicIP: '10.0.0.5', backendType: 'host-gw' },
      '{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"host-gw"}',
    ],
    [
      'dual-stack vxlan',
      {
        publicIP: '192.168.64.3',
        publicIPv6: 'fd00::3',
        backendType: 'vxlan',
        backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' },
        backendV6Data: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:ff' },
      },
      '{"PublicIP":"192.168.64.3","PublicIPv6":"fd00::3","BackendType":"vxlan",' +
        '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
    ],
    [
      'IPv6-only',
      { publicIP: '0.0.0.0', publicIPv6: 'fd00::3', backendType: 'vxlan', backendV6Data: { VNI: 1 } },
      '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::3","BackendType":"vxlan","BackendV6Data":{"VNI":1}}',
    ],
  ];
  for (const [name, attrs, json] of cases) {
    t.equal(encodeLeaseAttrs(attrs), json, `${name}: encode`);
    t.strictSame(decodeLeaseAttrs(json, KEY), attrs, `${name}: decode`);
  }
});

t.test('empty values are omitted, addresses written canonically, key order fixed', async (t) => {
  const cases: [LeaseAttrs, string][] = [
    [
      {
        backendV6Data: { a: 1 },
        backendData: null,
        backendType: '',
        publicIPv6: 'FD00:0::3',
        publicIP: '10.0.0.5',
      },
      '{"PublicIP":"10.0.0.5","PublicIPv6":"fd00::3","BackendV6Data":{"a":1}}',
    ],
    [
      { publicIP: '10.0.0.5', backendType: undefined, backendData: undefined },
      '{"PublicIP":"10.0.0.5","PublicIPv6":null}',
    ],
  ];
  for (const [attrs, json] of cases) t.equal(encodeLeaseAttrs(attrs), json);
});

t.test('decoding is as lenient as Go: key case, unknown keys, nulls', async (t) => {
  const cases: [string, LeaseAttrs][] = [
    [
      '{"publicip":"10.0.0.5","PUBLICIPV6":"fd00:0::3","backendtype":"vxlan"}',
      {
        publicIP: '10.0.0.5',
        publicIPv6: 'fd00::3',
        backendType: 'vxlan',
      },
    ],
    ['{"PublicIP":"10.0.0.5","Extra":1,"BackendData":null,"BackendType":""}', { publicIP: '10.0.0.5' }],
    ['{"PublicIP":"10.0.0.5","BackendData":[1,2]}', { publicIP: '10.0.0.5', backendData: [1, 2] }],
  ];
  for (const [json, attrs] of cases) t.strictSame(decodeLeaseAttrs(json, KEY), attrs, json);
});

t.test('bad values name the key and the field', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['', '', /not valid JSON/],
    ['{"PublicIP":', '', /not valid JSON/],
    ['[]', '', /expected object/],
    ['"10.0.0.5"', '', /expected object/],
    ['{}', 'PublicIP', /: required$/],
    ['{"PublicIP":null}', 'PublicIP', /: required$/],
    ['{"PublicIP":5}', 'PublicIP', /must be an IPv4 address/],
    ['{"PublicIP":"fd00::3"}', 'PublicIP', /must be an IPv4 address/],
    ['{"PublicIP":"10.0.0.5/24"}', 'PublicIP', /must be an IPv4 address/],
    ['{"PublicIP":"10.0.0.5","PublicIPv6":"10.0.0.6"}', 'PublicIPv6', /must be an IPv6 address/],
    ['{"PublicIP":"10.0.0.5","PublicIPv6":"fe80::1%eth0"}', 'PublicIPv6', /must be an IPv6 address/],
    ['{"PublicIP":"10.0.0.5","BackendType":7}', 'BackendType', /expected string/],
  ];
  for (const [json, field, message] of cases) {
    const err = t.throws(() => decodeLeaseAttrs(json, KEY), json);
    t.hasStrict(err, { code: ErrorCodes.INVALID_VALUE, details: { key: KEY, field } }, `${json} details`);
    t.match((err as Error).message, message, `${json} message`);
    t.ok((err as Error).message.startsWith(`lease "${KEY}": `), `${json} names the key`);
  }
});

t.test('encoding refuses addresses of the wrong family', async (t) => {
  const cases: [LeaseAttrs, string][] = [
    [{ publicIP: 'fd00::3' }, 'PublicIP'],
    [{ publicIP: '' }, 'PublicIP'],
    [{ publicIP: '10.0.0.5', publicIPv6: '10.0.0.6' }, 'PublicIPv6'],
  ];
  for (const [attrs, field] of cases) {
    const err = t.throws(() => encodeLeaseAttrs(attrs), JSON.stringify(attrs));
    t.hasStrict(
      err,
      { code: ErrorCodes.INVALID_ARGUMENT, details: { field } },
      `${JSON.stringify(attrs)} details`,
    );
  }
});

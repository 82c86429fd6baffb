/**
 * The stdin network config and the CNI_* environment: defaults, and for every kind of bad input
 * the CNI error code and the name of the field or variable at fault.
 */
import t, { type Test } from 'tap';
import {
  CniError,
  DEFAULT_DATA_DIR,
  DEFAULT_SUBNET_FILE,
  decodeStdin,
  parseCallEnv,
  parseCommand,
  parseNetConf,
  type JsonObject,
} from '../../../src/cni/index.js';

const BASE = { cniVersion: '1.0.0', name: 'weft', type: 'weft-cni' };

function expectCniError(t: Test, fn: () => unknown, code: number, msg: RegExp, what: string): void {
  try {
    fn();
    t.fail(`${what}: no error`);
  } catch (err) {
    t.ok(err instanceof CniError, `${what}: a CniError`);
    t.equal((err as CniError).code, code, `${what}: code ${code}`);
    t.match((err as CniError).message, msg, `${what}: message`);
  }
}

t.test('defaults', async (t) => {
  t.strictSame(parseNetConf({ ...BASE }), {
    ...BASE,
    subnetFile: DEFAULT_SUBNET_FILE,
    dataDir: DEFAULT_DATA_DIR,
    delegate: {},
  });
  t.equal(DEFAULT_SUBNET_FILE, '/run/flannel/subnet.env');
  t.equal(DEFAULT_DATA_DIR, '/var/lib/cni/flannel');
});

t.test('every field given; unknown fields and nulls are tolerated as Go tolerates them', async (t) => {
  const conf = parseNetConf({
    ...BASE,
    subnetFile: '/tmp/s.env',
    dataDir: '/tmp/data',
    delegate: { bridge: 'br1' },
    ipam: { dataDir: '/tmp/ipam', routes: [{ dst: '0.0.0.0/0', gw: '10.0.0.1' }] },
    runtimeConfig: { bandwidth: {} },
    prevResult: { cniVersion: '1.0.0', ips: [] },
    capabilities: { portMappings: true },
    args: { cni: {} },
    dns: null,
  });
  t.equal(conf.subnetFile, '/tmp/s.env');
  t.equal(conf.dataDir, '/tmp/data');
  t.strictSame(conf.delegate, { bridge: 'br1' });
  t.strictSame(conf.ipam, { dataDir: '/tmp/ipam', routes: [{ dst: '0.0.0.0/0', gw: '10.0.0.1' }] });
  t.strictSame(conf.runtimeConfig, { bandwidth: {} });
  t.strictSame(conf.prevResult, { cniVersion: '1.0.0', ips: [] });
  t.strictSame(parseNetConf({ ...BASE, delegate: null, ipam: null }).delegate, {});
});

t.test('every supported version is accepted', async (t) => {
  for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0']) {
    t.equal(parseNetConf({ ...BASE, cniVersion: v }).cniVersion, v);
  }
});

t.test('decoding failures are code 6', async (t) => {
  expectCniError(
    t,
    () => decodeStdin('{"name":'),
    6,
    /failed to decode network config on stdin/,
    'truncated',
  );
  expectCniError(t, () => decodeStdin(''), 6, /stdin/, 'empty');
  expectCniError(t, () => decodeStdin('[1]'), 6, /expected a JSON object/, 'array');
  expectCniError(t, () => decodeStdin('"x"'), 6, /expected a JSON object/, 'string');
});

t.test('version errors', async (t) => {
  const { cniVersion: _, ...noVersion } = BASE;
  expectCniError(t, () => parseNetConf(noVersion), 7, /field cniVersion: is required/, 'missing');
  expectCniError(
    t,
    () => parseNetConf({ ...BASE, cniVersion: 1 }),
    7,
    /field cniVersion: must be a string/,
    'number',
  );
  expectCniError(
    t,
    () => parseNetConf({ ...BASE, cniVersion: '0.2.0' }),
    1,
    /field cniVersion: "0.2.0" is not one of 0.3.0, 0.3.1, 0.4.0, 1.0.0/,
    'too old',
  );
  expectCniError(t, () => parseNetConf({ ...BASE, cniVersion: '1.1.0' }), 1, /cniVersion/, 'too new');
});

t.test('invalid configs are code 7 and name the field', async (t) => {
  const cases: [string, JsonObject, RegExp][] = [
    ['name missing', { name: undefined }, /field name: is required/],
    ['name not a string', { name: 5 }, /field name: must be a string, got 5/],
    ['name with a slash', { name: 'a/b' }, /field name: must start with a letter or digit/],
    ['type missing', { type: undefined }, /field type: is required/],
    ['type empty', { type: '' }, /field type: must not be empty/],
    ['subnetFile relative', { subnetFile: 'run/subnet.env' }, /field subnetFile: must be an absolute path/],
    ['subnetFile not a string', { subnetFile: true }, /field subnetFile: must be a string/],
    ['dataDir relative', { dataDir: 'data' }, /field dataDir: must be an absolute path/],
    ['delegate an array', { delegate: [] }, /field delegate: must be a JSON object/],
    ['delegate a string', { delegate: 'bridge' }, /field delegate: must be a JSON object, got "bridge"/],
    ['delegate.name', { delegate: { name: 'x' } }, /field delegate\.name: must not be set/],
    ['delegate.ipam', { delegate: { ipam: {} } }, /field delegate\.ipam: must not be set.*top-level ipam/],
    [
      'delegate.type a path',
      { delegate: { type: '../../bin/sh' } },
      /field delegate\.type: must be a plugin name/,
    ],
    ['delegate.type a number', { delegate: { type: 1 } }, /field delegate\.type: must be a string/],
    ['ipam an array', { ipam: [] }, /field ipam: must be a JSON object/],
    ['ipam.type a path', { ipam: { type: '/bin/sh' } }, /field ipam\.type: must be a plugin name/],
    ['ipam.routes not an array', { ipam: { routes: {} } }, /field ipam\.routes: must be an array/],
    [
      'ipam.routes[1].dst',
      { ipam: { routes: [{ dst: '10.0.0.0/8' }, { dst: 'nope' }] } },
      /field ipam\.routes\.1\.dst: must be a CIDR/,
    ],
    [
      'ipam.routes[0].gw',
      { ipam: { routes: [{ dst: '10.0.0.0/8', gw: '10.0.0.0/8' }] } },
      /field ipam\.routes\.0\.gw: must be an IP address/,
    ],
    ['runtimeConfig', { runtimeConfig: 3 }, /field runtimeConfig: must be a JSON object/],
    ['prevResult', { prevResult: 'x' }, /field prevResult: must be a JSON object/],
  ];
  for (const [what, patch, msg] of cases) {
    expectCniError(t, () => parseNetConf({ ...BASE, ...patch }), 7, msg, what);
  }
});

const ADD_ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'abc123',
  CNI_NETNS: '/run/netns/pod',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin::/usr/lib/cni',
};

t.test('environment: a valid call', async (t) => {
  t.strictSame(parseCallEnv(ADD_ENV), {
    command: 'ADD',
    containerId: 'abc123',
    netns: '/run/netns/pod',
    ifname: 'eth0',
    path: ['/opt/cni/bin', '/usr/lib/cni'],
  });
  t.equal(
    parseCallEnv({ ...ADD_ENV, CNI_COMMAND: 'DEL', CNI_NETNS: '' }).netns,
    undefined,
    'DEL needs no netns',
  );
  t.equal(parseCommand({ CNI_COMMAND: 'VERSION' }), 'VERSION', 'VERSION needs nothing else');
});

t.test('environment errors are code 4 and name the variable', async (t) => {
  const cases: [string, Record<string, string | undefined>, RegExp][] = [
    ['no command', { CNI_COMMAND: undefined }, /CNI_COMMAND: is required/],
    ['unknown command', { CNI_COMMAND: 'GC' }, /CNI_COMMAND: unknown command "GC"/],
    ['lowercase command', { CNI_COMMAND: 'add' }, /CNI_COMMAND: unknown command "add"/],
    ['no container id', { CNI_CONTAINERID: undefined }, /CNI_CONTAINERID: is required/],
    [
      'container id with a slash',
      { CNI_CONTAINERID: '../../etc/passwd' },
      /CNI_CONTAINERID: "\.\.\/\.\.\/etc\/passwd" must start/,
    ],
    ['container id starting with a dot', { CNI_CONTAINERID: '.hidden' }, /CNI_CONTAINERID/],
    ['no netns on ADD', { CNI_NETNS: undefined }, /CNI_NETNS: is required/],
    ['no ifname', { CNI_IFNAME: '' }, /CNI_IFNAME: is required/],
    [
      'ifname too long',
      { CNI_IFNAME: 'a234567890123456' },
      /CNI_IFNAME: "a234567890123456" must be at most 15 characters/,
    ],
    ['ifname with a colon', { CNI_IFNAME: 'eth0:1' }, /CNI_IFNAME: "eth0:1" must not contain/],
    ['ifname ..', { CNI_IFNAME: '..' }, /CNI_IFNAME: "\.\." must not be/],
    ['no CNI_PATH', { CNI_PATH: undefined }, /CNI_PATH: is required/],
    ['empty CNI_PATH entries', { CNI_PATH: '::' }, /CNI_PATH: names no directory/],
  ];
  for (const [what, patch, msg] of cases) {
    expectCniError(t, () => parseCallEnv({ ...ADD_ENV, ...patch }), 4, msg, what);
  }
  expectCniError(
    t,
    () => parseCallEnv({ ...ADD_ENV, CNI_COMMAND: 'CHECK', CNI_NETNS: '' }),
    4,
    /CNI_NETNS/,
    'CHECK needs netns',
  );
});

/**
 * The commands end to end, minus processes and the kernel: runPlugin with a recording fake
 * delegate, subnet.env and dataDir in a temp dir. Checks what the runtime sees (exit code, stdout
 * JSON) and what the delegate receives (command, config).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import {
  CniError,
  runPlugin,
  type DelegateCall,
  type DelegateOutput,
  type DelegateRunner,
  type JsonObject,
  type PluginReply,
} from '../../../src/cni/index.js';

const SUBNET_ENV =
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
const RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:07:02', sandbox: '/run/netns/pod' }],
  ips: [{ address: '10.244.7.2/24', gateway: '10.244.7.1', interface: 0 }],
};

interface Fixture {
  dir: string;
  subnetFile: string;
  dataDir: string;
  calls: DelegateCall[];
  /** What the fake delegate does; default: succeed with RESULT on ADD, nothing otherwise. */
  delegate: (call: DelegateCall) => DelegateOutput;
  run: DelegateRunner;
  env: (command: string, extra?: Record<string, string>) => Record<string, string>;
  conf: (extra?: JsonObject) => JsonObject;
  call: (command: string, conf?: JsonObject, env?: Record<string, string>) => Promise<PluginReply>;
}

function fixture(t: Test): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f: Fixture = {
    dir,
    subnetFile: join(dir, 'subnet.env'),
    dataDir: join(dir, 'data'),
    calls: [],
    delegate: (call) => ({
      stdout: call.command === 'ADD' ? JSON.stringify({ ...RESULT, cniVersion: call.config.cniVersion }) : '',
      stderr: '',
    }),
    run: async (call) => {
      f.calls.push(structuredClone(call));
      return f.delegate(call);
    },
    env: (command, extra = {}) => ({
      PATH: '/usr/bin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: 'ctr1',
      CNI_NETNS: '/run/netns/pod',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
      ...extra,
    }),
    conf: (extra = {}) => ({
      cniVersion: '1.0.0',
      name: 'weft',
      type: 'weft-cni',
      subnetFile: f.subnetFile,
      dataDir: f.dataDir,
      ...extra,
    }),
    call: (command, conf = f.conf(), env = f.env(command)) =>
      runPlugin({ env, stdin: JSON.stringify(conf), runDelegate: f.run }),
  };
  return f;
}

function errorOf(
  t: Test,
  reply: PluginReply,
): { cniVersion: string; code: number; msg: string; details?: string } {
  t.equal(reply.exitCode, 1, 'non-zero exit');
  t.match(reply.stdout, /\n$/, 'stdout ends with a newline');
  return JSON.parse(reply.stdout);
}

const savedPath = (f: Fixture, id = 'ctr1'): string => join(f.dataDir, id);

t.test('VERSION', async (t) => {
  const supportedVersions = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];
  const version = (stdin: string) => runPlugin({ env: { CNI_COMMAND: 'VERSION' }, stdin });
  for (const [stdin, cniVersion] of [
    ['{"cniVersion":"0.4.0"}', '0.4.0'],
    ['{"cniVersion":"0.3.1","name":"x"}', '0.3.1'],
    ['', '1.0.0'],
    ['{"cniVersion":"0.2.0"}', '1.0.0'],
    ['not json', '1.0.0'],
  ] as const) {
    const reply = await version(stdin);
    t.equal(reply.exitCode, 0, `exit 0 for ${JSON.stringify(stdin)}`);
    t.strictSame(
      JSON.parse(reply.stdout),
      { cniVersion, supportedVersions },
      `reply for ${JSON.stringify(stdin)}`,
    );
  }
});

t.test('ADD builds, saves and delegates the bridge config, and passes the result on', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  f.delegate = () => ({ stdout: JSON.stringify(RESULT), stderr: 'bridge says hi\n' });
  const reply = await f.call('ADD', f.conf({ ipam: { dataDir: join(f.dir, 'ipam') } }));
  t.equal(reply.exitCode, 0);
  t.strictSame(JSON.parse(reply.stdout), RESULT);
  t.match(reply.stderr, /bridge says hi/, "the delegate's stderr is passed on");

  t.equal(f.calls.length, 1);
  const call = f.calls[0]!;
  t.equal(call.command, 'ADD');
  t.strictSame(call.path, ['/opt/cni/bin']);
  t.equal(call.env.CNI_CONTAINERID, 'ctr1', 'the environment is passed on');
  const expected = {
    cniVersion: '1.0.0',
    name: 'weft',
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    isDefaultGateway: true,
    hairpinMode: true,
    ipMasq: false,
    mtu: 1450,
    ipam: {
      type: 'host-local',
      dataDir: join(f.dir, 'ipam'),
      ranges: [[{ subnet: '10.244.7.0/24' }]],
      routes: [{ dst: '10.244.0.0/16', gw: '10.244.7.1' }],
    },
  };
  t.strictSame(call.config, expected);
  t.equal(readFileSync(savedPath(f), 'utf8'), JSON.stringify(expected), 'the config is saved as given');
  t.equal(statSync(savedPath(f)).mode & 0o777, 0o600, 'saved file is owner-only');
  t.equal(statSync(f.dataDir).mode & 0o777, 0o700, 'dataDir is owner-only');
});

t.test('ADD: the result carries the config version', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  const { cniVersion: _, ...noVersion } = RESULT;
  f.delegate = () => ({ stdout: JSON.stringify(noVersion), stderr: '' });
  const reply = await f.call('ADD', f.conf({ cniVersion: '0.4.0' }));
  t.equal(reply.exitCode, 0);
  t.strictSame(JSON.parse(reply.stdout), { ...noVersion, cniVersion: '0.4.0' }, 'added when missing');
  t.equal(f.calls[0]?.config.cniVersion, '0.4.0', 'the delegate is asked for that version');

  f.delegate = () => ({ stdout: JSON.stringify(RESULT), stderr: '' });
  const e = errorOf(t, await f.call('ADD', f.conf({ cniVersion: '0.4.0' })));
  t.equal(e.code, 102);
  t.match(e.msg, /cniVersion "1.0.0", expected 0.4.0/);
});

t.test('ADD: unusable delegate output', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  for (const stdout of ['', 'hello', '[]', 'null']) {
    f.delegate = () => ({ stdout, stderr: '' });
    const e = errorOf(t, await f.call('ADD'));
    t.equal(e.code, 102, `code 102 for ${JSON.stringify(stdout)}`);
    t.match(e.msg, /delegate bridge ADD printed no JSON/);
  }
});

t.test('ADD without subnet.env: try again later (11), nothing saved or delegated', async (t) => {
  const f = fixture(t);
  const e = errorOf(t, await f.call('ADD', f.conf({ cniVersion: '0.3.1' })));
  t.strictSame(Object.keys(e).sort(), ['cniVersion', 'code', 'msg']);
  t.equal(e.code, 11);
  t.equal(e.cniVersion, '0.3.1', "the error speaks the config's version");
  t.match(e.msg, `subnetFile ${f.subnetFile} does not exist`);
  t.equal(f.calls.length, 0);
  t.notOk(existsSync(f.dataDir));
});

t.test('ADD with a bad subnet.env: decoding failure (6) naming the key', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV.replace('FLANNEL_MTU=1450', 'FLANNEL_MTU=big'));
  const e = errorOf(t, await f.call('ADD'));
  t.equal(e.code, 6);
  t.match(e.msg, `failed to decode subnetFile ${f.subnetFile}`);
  t.match(e.msg, /FLANNEL_MTU/);
  writeFileSync(f.subnetFile, SUBNET_ENV.replace(/FLANNEL_IPMASQ=.*\n/, ''));
  t.match(errorOf(t, await f.call('ADD')).msg, /FLANNEL_IPMASQ: missing/);
  t.equal(f.calls.length, 0);
});

t.test('ADD: a delegate error is passed through; the saved config stays for the DEL', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  f.delegate = () => {
    throw new CniError(7, 'bridge: failed to allocate', 'range is full');
  };
  const e = errorOf(t, await f.call('ADD'));
  t.strictSame(e, {
    cniVersion: '1.0.0',
    code: 7,
    msg: 'bridge: failed to allocate',
    details: 'range is full',
  });
  t.ok(existsSync(savedPath(f)));
});

t.test('a crash of the delegate runner is an internal error, not a stack trace', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  f.delegate = () => {
    throw new TypeError('boom');
  };
  const e = errorOf(t, await f.call('ADD'));
  t.equal(e.code, 199);
  t.match(e.msg, 'internal error: boom');
});

t.test('DEL uses the saved config even after subnet.env changed, then removes it', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  t.equal((await f.call('ADD')).exitCode, 0);
  writeFileSync(f.subnetFile, SUBNET_ENV.replace('10.244.7.1/24', '10.244.9.1/24'));
  const prevResult = RESULT;
  const reply = await f.call('DEL', f.conf({ prevResult }), f.env('DEL', { CNI_NETNS: '' }));
  t.strictSame(reply, { exitCode: 0, stdout: '', stderr: '' });
  const del = f.calls[1]!;
  t.equal(del.command, 'DEL');
  t.strictSame((del.config.ipam as JsonObject).ranges, [[{ subnet: '10.244.7.0/24' }]], 'the old lease');
  t.strictSame(del.config.prevResult, prevResult, 'prevResult passed on');
  t.notOk(existsSync(savedPath(f)), 'saved config removed');
});

t.test('DEL without a saved config rebuilds it from subnet.env', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  const reply = await f.call('DEL');
  t.equal(reply.exitCode, 0);
  t.equal(f.calls.length, 1);
  t.equal(f.calls[0]?.command, 'DEL');
  t.strictSame((f.calls[0]?.config.ipam as JsonObject).ranges, [[{ subnet: '10.244.7.0/24' }]]);
  t.notOk('prevResult' in (f.calls[0]?.config ?? {}), 'no prevResult when the runtime gave none');
});

t.test('DEL with a corrupt saved config rebuilds it and removes the file', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  t.equal((await f.call('ADD')).exitCode, 0);
  writeFileSync(savedPath(f), '{"type":');
  const reply = await f.call('DEL');
  t.equal(reply.exitCode, 0);
  t.match(reply.stderr, /ignoring saved delegate config/);
  t.equal(f.calls[1]?.config.type, 'bridge');
  t.notOk(existsSync(savedPath(f)));
});

t.test('DEL with neither saved config nor subnet.env succeeds without delegating', async (t) => {
  const f = fixture(t);
  const reply = await f.call('DEL');
  t.equal(reply.exitCode, 0);
  t.equal(reply.stdout, '');
  t.match(reply.stderr, /nothing to do/);
  t.equal(f.calls.length, 0);
  t.equal((await f.call('DEL')).exitCode, 0, 'and again');
});

t.test('DEL: a delegate failure keeps the saved config for the retry', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  t.equal((await f.call('ADD')).exitCode, 0);
  f.delegate = () => {
    throw new CniError(11, 'bridge: busy');
  };
  t.equal(errorOf(t, await f.call('DEL')).code, 11);
  t.ok(existsSync(savedPath(f)));
  f.delegate = () => ({ stdout: '', stderr: '' });
  t.equal((await f.call('DEL')).exitCode, 0);
  t.notOk(existsSync(savedPath(f)));
});

t.test('CHECK delegates the saved config with prevResult', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  const add = await f.call('ADD');
  const prevResult = JSON.parse(add.stdout) as JsonObject;
  writeFileSync(f.subnetFile, SUBNET_ENV.replace('FLANNEL_MTU=1450', 'FLANNEL_MTU=1400'));
  const reply = await f.call('CHECK', f.conf({ prevResult }));
  t.strictSame(reply, { exitCode: 0, stdout: '', stderr: '' });
  const check = f.calls[1]!;
  t.equal(check.command, 'CHECK');
  t.equal(check.config.mtu, 1450, 'the config ADD used');
  t.strictSame(check.config.prevResult, prevResult);
  t.ok(existsSync(savedPath(f)), 'CHECK keeps the saved config');
});

t.test('CHECK: failures', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  let e = errorOf(t, await f.call('CHECK'));
  t.equal(e.code, 7);
  t.match(e.msg, /field prevResult: is required for CHECK/);

  e = errorOf(t, await f.call('CHECK', f.conf({ cniVersion: '0.3.1', prevResult: RESULT })));
  t.equal(e.code, 1);
  t.match(e.msg, /CHECK needs 0.4.0 or later/);

  f.delegate = () => {
    throw new CniError(100, 'bridge: eth0 has the wrong address');
  };
  e = errorOf(t, await f.call('CHECK', f.conf({ prevResult: RESULT })));
  t.equal(e.code, 100, "the delegate's verdict is passed through");

  rmSync(f.subnetFile);
  e = errorOf(t, await f.call('CHECK', f.conf({ prevResult: RESULT })));
  t.equal(e.code, 11, 'nothing saved and no subnet.env');
});

t.test('errors before the config is understood', async (t) => {
  const f = fixture(t);
  writeFileSync(f.subnetFile, SUBNET_ENV);
  let e = errorOf(t, await f.call('ADD', f.conf({ cniVersion: '0.4.0' }), f.env('ADD', { CNI_IFNAME: '' })));
  t.equal(e.code, 4);
  t.equal(e.cniVersion, '0.4.0', 'env errors still use the version on stdin');
  t.match(e.msg, /CNI_IFNAME/);

  const noCommand = await runPlugin({ env: {}, stdin: '', runDelegate: f.run });
  e = errorOf(t, noCommand);
  t.equal(e.code, 4);
  t.match(e.msg, /CNI_COMMAND: is required/);
  t.match(noCommand.stderr, /weft-cni: .*0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0/, 'says what it is');

  e = errorOf(t, await runPlugin({ env: f.env('ADD'), stdin: '{', runDelegate: f.run }));
  t.equal(e.code, 6);
  e = errorOf(t, await f.call('ADD', f.conf({ delegate: { name: 'x' } })));
  t.equal(e.code, 7);
  t.match(e.msg, /field delegate\.name/);
  e = errorOf(t, await f.call('ADD', f.conf({ cniVersion: '2.0.0' })));
  t.equal(e.code, 1);
  t.equal(e.cniVersion, '1.0.0');
  t.equal(f.calls.length, 0);
});

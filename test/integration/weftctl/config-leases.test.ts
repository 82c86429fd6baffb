/**
 * weftctl's framework, `config get|set` and `leases`, `lease reserve|release` against a real
 * etcd, as an operator runs them: flags and the daemons' environment variables, the three output
 * formats and the exit codes.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { openStore, type Store } from '../../../src/registry/index.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalEtcd } from '../../lab/servers.js';
import { runCli } from '../../helpers/weftctl-run.js';

t.setTimeout(120_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
mkdirSync(dir, { recursive: true });
const etcd = await startLocalEtcd(dir);
const store: Store = await openStore({ registry: 'etcd', etcd: { endpoints: [etcd.endpoint] } });
t.teardown(async () => {
  await store.close();
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
/** A fresh etcd prefix per test, so tests do not see each other's keys. */
const freshPrefix = () => `/t${++n}/network`;
const cli = (prefix: string, argv: string[], stdin?: string) =>
  runCli(
    ['--etcd-endpoints', etcd.endpoint, '--etcd-prefix', prefix, ...argv],
    stdin === undefined ? {} : { stdin },
  );

const CONFIG = { Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } };
const vxlanLease = (ip: string, mac: string) =>
  JSON.stringify({
    PublicIP: ip,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: mac },
  });

t.test('misuse exits 2 with a hint; --help and --version exit 0', async (t) => {
  const unknown = await runCli(['frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown command "frobnicate"; commands: config, /);
  const sub = await runCli(['lease', 'frob']);
  t.equal(sub.code, 2);
  t.match(sub.stderr, /"lease" takes: reserve, release/);
  const badFlag = await runCli(['leases', '--public-ip', '10.0.0.1']);
  t.equal(badFlag.code, 2, 'a flag of another command');
  t.match(badFlag.stderr, /flag --public-ip does not apply to "weftctl leases"/);
  const badOutput = await runCli(['leases', '-o', 'xml']);
  t.equal(badOutput.code, 2);
  t.match(badOutput.stderr, /flag --output/);
  const extra = await runCli(['leases', 'extra']);
  t.equal(extra.code, 2);
  t.match(extra.stderr, /unexpected argument "extra"/);
  const none = await runCli([]);
  t.equal(none.code, 2, 'no command is misuse');
  t.match(none.stderr, /Commands:/);
  const help = await runCli(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /weftctl lease reserve SUBNET --public-ip IP/);
  t.match(help.stdout, /Exit codes: 0 success, 1 error, 2 misuse/);
  t.match(help.stdout, /--etcd-endpoints/);
  const cmdHelp = await runCli(['config', 'set', '--help']);
  t.equal(cmdHelp.code, 0);
  t.match(cmdHelp.stdout, /Usage: weftctl config set -f FILE\|- \[flags\]/);
  t.match(cmdHelp.stdout, /--dry-run/);
  const version = await runCli(['--version']);
  t.same(version, { code: 0, stdout: 'weftctl test\n', stderr: '' });
});

t.test('an unreachable registry is an error (1), not misuse', async (t) => {
  const r = await runCli(['--etcd-endpoints', 'http://127.0.0.1:1', 'leases'], {});
  t.equal(r.code, 1);
  t.match(r.stderr, /weftctl: .*(unavailable|127\.0\.0\.1:1)/i);
});

t.test("the daemons' environment variables name the registry", async (t) => {
  const prefix = freshPrefix();
  await store.create(`${prefix}/config`, JSON.stringify(CONFIG));
  for (const env of [
    { FLANNELD_ETCD_ENDPOINTS: etcd.endpoint, FLANNELD_ETCD_PREFIX: prefix },
    { WEFT_PROXY_ETCD_ENDPOINTS: etcd.endpoint, WEFTCTL_ETCD_PREFIX: prefix },
    {
      WEFTCTL_ETCD_ENDPOINTS: etcd.endpoint,
      FLANNELD_ETCD_ENDPOINTS: 'http://127.0.0.1:1',
      FLANNELD_ETCD_PREFIX: prefix,
    },
  ]) {
    const r = await runCli(['config', 'get', '-o', 'json'], { env });
    t.equal(r.code, 0, `reads the config with ${Object.keys(env).join(', ')}`);
    t.same(JSON.parse(r.stdout), CONFIG);
  }
  const wrong = await runCli(['config', 'get'], { env: { FLANNELD_ETCD_ENDPOINTS: 'ftp://x' } });
  t.equal(wrong.code, 2, 'a bad value in a daemon variable is misuse');
  t.match(wrong.stderr, /etcd-endpoints/);
});

t.test('config get: table, json, yaml; missing and invalid configs exit 1', async (t) => {
  const prefix = freshPrefix();
  const missing = await cli(prefix, ['config', 'get']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, new RegExp(`no network config at ${prefix}/config`));
  await store.create(`${prefix}/config`, JSON.stringify(CONFIG));
  const table = await cli(prefix, ['config', 'get']);
  t.equal(table.code, 0);
  t.match(table.stdout, /"Network": "10.244.0.0\/16"/);
  t.match(table.stdout, /IPv4 network\s+10\.244\.0\.0\/16/);
  t.match(table.stdout, /IPv4 subnets\s+10\.244\.1\.0\/24 … 10\.244\.255\.0\/24/);
  t.match(table.stdout, /Backend\s+vxlan/);
  t.match(table.stdout, /vni\s+1/);
  t.same(parseYaml((await cli(prefix, ['config', 'get', '-o', 'yaml'])).stdout), CONFIG);

  const bad = freshPrefix();
  await store.create(`${bad}/config`, JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 7 }));
  const invalid = await cli(bad, ['config', 'get']);
  t.equal(invalid.code, 1);
  t.match(invalid.stderr, /field SubnetLen/);
  t.match(invalid.stderr, /weft-flanneld will not start with it/);
});

t.test('config set: validates before writing, shows a diff, dry run, unchanged', async (t) => {
  const prefix = freshPrefix();
  const file = join(dir, `net-conf-${n}.json`);
  writeFileSync(file, JSON.stringify(CONFIG));
  const created = await cli(prefix, ['config', 'set', '-f', file]);
  t.equal(created.code, 0, created.stderr);
  t.match(created.stdout, /\+ {3}"Network": "10\.244\.0\.0\/16",/);
  t.match(created.stdout, new RegExp(`${prefix}/config: created`));
  t.same(JSON.parse((await store.get(`${prefix}/config`))?.value ?? ''), CONFIG);

  const again = await cli(prefix, ['config', 'set', '-f', file]);
  t.equal(again.code, 0);
  t.match(again.stdout, /unchanged/);

  const next = { ...CONFIG, Backend: { Type: 'host-gw' } };
  const dry = await cli(prefix, ['config', 'set', '-f', '-', '--dry-run'], JSON.stringify(next));
  t.equal(dry.code, 0);
  t.match(dry.stdout, /- {5}"Type": "vxlan"/);
  t.match(dry.stdout, /\+ {5}"Type": "host-gw"/);
  t.match(dry.stdout, /dry run: nothing written/);
  t.equal(JSON.parse((await store.get(`${prefix}/config`))?.value ?? '').Backend.Type, 'vxlan');

  const updated = await cli(prefix, ['config', 'set', '-f', '-'], JSON.stringify(next));
  t.equal(updated.code, 0);
  t.match(updated.stdout, /updated/);
  t.equal(JSON.parse((await store.get(`${prefix}/config`))?.value ?? '').Backend.Type, 'host-gw');

  const before = (await store.get(`${prefix}/config`))?.modRevision;
  const invalid = await cli(
    prefix,
    ['config', 'set', '-f', '-'],
    JSON.stringify({ ...CONFIG, SubnetLen: 33 }),
  );
  t.equal(invalid.code, 1);
  t.match(invalid.stderr, /stdin: .*field SubnetLen/);
  const notJson = await cli(prefix, ['config', 'set', '-f', '-'], '{"Network": ');
  t.equal(notJson.code, 1);
  t.match(notJson.stderr, /stdin: not JSON/);
  const noFile = await cli(prefix, ['config', 'set', '-f', join(dir, 'absent.json')]);
  t.equal(noFile.code, 1);
  t.match(noFile.stderr, /cannot read .*absent\.json: ENOENT/);
  const noF = await cli(prefix, ['config', 'set']);
  t.equal(noF.code, 2, 'without -f: misuse');
  t.equal((await store.get(`${prefix}/config`))?.modRevision, before, 'nothing written by the failures');
});

t.test('leases: every column, TTL left, reservations, unreadable leases skipped', async (t) => {
  const prefix = freshPrefix();
  const empty = await cli(prefix, ['leases']);
  t.equal(empty.code, 0);
  t.match(empty.stdout, /no leases under/);
  await store.create(`${prefix}/config`, JSON.stringify(CONFIG));
  await store.create(`${prefix}/subnets/10.244.1.0-24`, vxlanLease('10.99.0.11', 'aa:bb:cc:00:00:01'), {
    ttlSeconds: 86_400,
  });
  await store.create(
    `${prefix}/subnets/10.244.2.0-24`,
    JSON.stringify({ PublicIP: '10.99.0.12', PublicIPv6: null }),
  );
  await store.create(`${prefix}/subnets/10.244.3.0-24`, '{"PublicIP": "not an ip"}', { ttlSeconds: 600 });

  const table = await cli(prefix, ['leases']);
  t.equal(table.code, 1, 'an unreadable lease makes the exit code 1');
  const lines = table.stdout.trim().split('\n');
  t.match(lines[0], /^SUBNET\s+PUBLIC-IP\s+BACKEND\s+VTEP-MAC\s+TTL\s+RESERVED$/);
  t.match(lines[1], /^10\.244\.1\.0\/24\s+10\.99\.0\.11\s+vxlan\s+aa:bb:cc:00:00:01\s+23h5\dm\s+no$/);
  t.match(lines[2], /^10\.244\.2\.0\/24\s+10\.99\.0\.12\s+<none>\s+<none>\s+-\s+yes$/);
  t.equal(lines.length, 3, 'the unreadable lease is not a row');
  t.match(table.stderr, /skipped unreadable lease .*10\.244\.3\.0-24.*field PublicIP/);

  const json = JSON.parse((await cli(prefix, ['leases', '-o', 'json'])).stdout) as Record<string, unknown>[];
  t.equal(json.length, 2);
  t.match(json[0], {
    subnet: '10.244.1.0/24',
    publicIP: '10.99.0.11',
    vtepMAC: 'aa:bb:cc:00:00:01',
    reservation: false,
  });
  t.ok((json[0]?.ttlSeconds as number) > 86_000, 'TTL left in seconds');
  t.match(json[1], { subnet: '10.244.2.0/24', reservation: true });
  t.notOk('ttlSeconds' in (json[1] ?? {}), 'a reservation has no TTL');
  const yaml = parseYaml((await cli(prefix, ['leases', '-o', 'yaml'])).stdout) as unknown[];
  t.equal(yaml.length, 2);
});

t.test('lease reserve and release', async (t) => {
  const prefix = freshPrefix();
  const noConfig = await cli(prefix, ['lease', 'reserve', '10.244.5.0/24', '--public-ip', '10.99.0.15']);
  t.equal(noConfig.code, 1);
  t.match(noConfig.stderr, /no network config/);
  await store.create(`${prefix}/config`, JSON.stringify(CONFIG));

  const r = await cli(prefix, ['lease', 'reserve', '10.244.5.0/24', '--public-ip', '10.99.0.15']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /reserved 10\.244\.5\.0-24 for 10\.99\.0\.15/);
  const kv = await store.get(`${prefix}/subnets/10.244.5.0-24`);
  t.equal(kv?.ttlBound, false, 'a key without TTL');
  t.equal(kv?.value, '{"PublicIP":"10.99.0.15","PublicIPv6":null}', "flannel's JSON");
  const same = await cli(prefix, ['lease', 'reserve', '10.244.5.0-24', '--public-ip', '10.99.0.15']);
  t.equal(same.code, 0);
  t.match(same.stdout, /already reserved/);
  const other = await cli(prefix, ['lease', 'reserve', '10.244.5.0/24', '--public-ip', '10.99.0.16']);
  t.equal(other.code, 1);
  t.match(other.stderr, /subnet 10\.244\.5\.0-24 is reserved to 10\.99\.0\.15; release it first/);

  // A node's live lease becomes a reservation in place, value untouched.
  const leased = vxlanLease('10.99.0.17', 'aa:bb:cc:00:00:07');
  await store.create(`${prefix}/subnets/10.244.7.0-24`, leased, { ttlSeconds: 86_400 });
  const taken = await cli(prefix, ['lease', 'reserve', '10.244.7.0/24', '--public-ip', '10.99.0.18']);
  t.equal(taken.code, 1);
  t.match(taken.stderr, /is leased to 10\.99\.0\.17/);
  const pin = await cli(prefix, ['lease', 'reserve', '10.244.7.0/24', '--public-ip', '10.99.0.17']);
  t.equal(pin.code, 0);
  const pinned = await store.get(`${prefix}/subnets/10.244.7.0-24`);
  t.equal(pinned?.ttlBound, false);
  t.equal(pinned?.value, leased);

  for (const [args, re] of [
    [['10.244.5.0/25', '--public-ip', '10.99.0.15'], /does not fit the network config/],
    [['10.245.5.0/24', '--public-ip', '10.99.0.15'], /does not fit the network config/],
  ] as const) {
    const bad = await cli(prefix, ['lease', 'reserve', ...args]);
    t.equal(bad.code, 1, args.join(' '));
    t.match(bad.stderr, re);
  }
  for (const args of [
    ['10.244.5.1/24', '--public-ip', '10.99.0.15'],
    ['10.244.5.0/24', '--public-ip', 'nope'],
    ['10.244.5.0/24'],
    [],
  ]) {
    t.equal((await cli(prefix, ['lease', 'reserve', ...args])).code, 2, `misuse: ${args.join(' ')}`);
  }

  const rel = await cli(prefix, ['lease', 'release', '10.244.5.0/24']);
  t.equal(rel.code, 0, rel.stderr);
  t.match(rel.stdout, /released 10\.244\.5\.0-24 \(10\.99\.0\.15\)/);
  const released = await store.get(`${prefix}/subnets/10.244.5.0-24`);
  t.equal(released?.ttlBound, true, 'an ordinary lease again');
  const left = await store.timeToLive(`${prefix}/subnets/10.244.5.0-24`);
  t.ok(left !== undefined && left > 86_000, `flannel's TTL (${left})`);
  const notRes = await cli(prefix, ['lease', 'release', '10.244.5.0/24']);
  t.equal(notRes.code, 1);
  t.match(notRes.stderr, /is not a reservation/);
  const del = await cli(prefix, ['lease', 'release', '10.244.5.0/24', '--delete']);
  t.equal(del.code, 0);
  t.equal(await store.get(`${prefix}/subnets/10.244.5.0-24`), undefined, 'deleted');
  const gone = await cli(prefix, ['lease', 'release', '10.244.5.0/24']);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /no lease or reservation for 10\.244\.5\.0-24/);
});

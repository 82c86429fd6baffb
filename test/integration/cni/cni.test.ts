/**
 * Acceptance: weft-cni with the real bridge and host-local plugins, as a runtime on a node would
 * run it. A "node" namespace stands for the host (the plugin runs in it, through `ip netns exec`)
 * and "pod" namespaces for pods. Every file the plugins write (saved delegate configs, host-local
 * reservations) goes to this run's temp dir, never to /var/lib/cni.
 */
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Cidr } from '../../../src/ipam/index.js';
import { run, type RunResult } from '../../lab/exec.js';
import {
  cleanupStale,
  createNetns,
  deleteNetns,
  listNetns,
  netnsName,
  newRunId,
  runDir,
} from '../../lab/netns.js';
import { buildPlugin } from '../../lab/build-plugin.js';

/** Everything under a directory, to show nothing was added there. */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}
const VAR_LIB_CNI = '/var/lib/cni';
const varLibCniBefore = { exists: existsSync(VAR_LIB_CNI), files: tree(VAR_LIB_CNI) };

await cleanupStale();
const runId = newRunId();
const nodeNs = netnsName(runId, 'cninode');
const pods = { a: netnsName(runId, 'poda'), b: netnsName(runId, 'podb') };
const allNs = [nodeNs, pods.a, pods.b];
const dir = runDir(runId);
mkdirSync(dir, { recursive: true });
t.teardown(async () => {
  for (const ns of allNs) await deleteNetns(ns);
  rmSync(dir, { recursive: true, force: true });
});
for (const ns of allNs) await createNetns(ns);

const main = buildPlugin(join(dir, 'build'));
// CNI_PATH as a node has it: the delegate and its IPAM plugin, found by name.
const cniBin = join(dir, 'cni-bin');
mkdirSync(cniBin);
for (const p of ['bridge', 'host-local', 'loopback']) symlinkSync(join('/usr/lib/cni', p), join(cniBin, p));

const subnetFile = join(dir, 'subnet.env');
const dataDir = join(dir, 'flannel');
const ipamDir = join(dir, 'ipam');
const NETWORK = 'weftnet';
const SUBNET_ENV = [
  'FLANNEL_NETWORK=10.244.0.0/16',
  'FLANNEL_SUBNET=10.244.7.1/24',
  'FLANNEL_MTU=1450',
  'FLANNEL_IPMASQ=true',
  '',
].join('\n');
const LEASE = Cidr.parse('10.244.7.0/24');

const baseConf = {
  cniVersion: '1.0.0',
  name: NETWORK,
  type: 'weft-cni',
  subnetFile,
  dataDir,
  ipam: { dataDir: ipamDir },
};

interface CallOptions {
  containerId: string;
  pod?: string;
  conf?: Record<string, unknown>;
}

/** One plugin call, run in the node namespace as the runtime would run it. */
function cni(command: string, opts: CallOptions): Promise<RunResult> {
  return run(process.execPath, [main], {
    netns: nodeNs,
    env: {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: opts.containerId,
      CNI_NETNS: opts.pod ? `/run/netns/${opts.pod}` : '',
      CNI_IFNAME: 'eth0',
      CNI_PATH: cniBin,
    },
    input: JSON.stringify(opts.conf ?? baseConf),
    allowFail: true,
  });
}

function ok(t: Test, r: RunResult, what: string): void {
  t.equal(r.code, 0, `${what}: exit 0`, { stdout: r.stdout, stderr: r.stderr });
}

async function ipJson<T>(ns: string, ...args: string[]): Promise<T> {
  return JSON.parse((await run('ip', ['-j', ...args], { netns: ns })).stdout || '[]') as T;
}

interface IpLink {
  ifname: string;
  mtu: number;
  master?: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
}

const ping = (ns: string, ip: string) =>
  run('ping', ['-c', '2', '-i', '0.2', '-W', '2', ip], { netns: ns, allowFail: true });
const bridgePorts = async () => (await ipJson<IpLink[]>(nodeNs, 'link', 'show', 'master', 'cni0')).length;
const reservation = (ip: string) => join(ipamDir, NETWORK, ip);

interface AddResult {
  cniVersion: string;
  interfaces: { name: string; sandbox?: string }[];
  ips: { address: string; gateway: string; interface: number }[];
}
const added: Record<string, { result: AddResult; ip: string }> = {};

t.test('VERSION', async (t) => {
  const r = await cni('VERSION', { containerId: 'x' });
  ok(t, r, 'VERSION');
  t.strictSame(JSON.parse(r.stdout), {
    cniVersion: '1.0.0',
    supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'],
  });
});

t.test('ADD before subnet.env exists: error JSON with code 11, nothing set up', async (t) => {
  const r = await cni('ADD', { containerId: 'early', pod: pods.a });
  t.not(r.code, 0);
  const e = JSON.parse(r.stdout);
  t.equal(e.cniVersion, '1.0.0');
  t.equal(e.code, 11);
  t.match(e.msg, subnetFile);
  t.strictSame(await ipJson<IpLink[]>(pods.a, 'link', 'show', 'type', 'veth'), [], 'no interface in the pod');
  t.notOk(existsSync(join(dataDir, 'early')));
});

t.test('ADD: the first pod gets an address from the lease, MTU and routes', async (t) => {
  writeFileSync(subnetFile, SUBNET_ENV);
  const r = await cni('ADD', { containerId: 'ctr-a', pod: pods.a });
  ok(t, r, 'ADD');
  const result = JSON.parse(r.stdout) as AddResult;
  t.equal(result.cniVersion, '1.0.0');
  const ip4 = result.ips[0];
  if (!ip4) throw new Error(`no IP in the result: ${r.stdout}`);
  const [ip, len] = ip4.address.split('/') as [string, string];
  t.ok(LEASE.contains(ip), `${ip} is in ${LEASE}`);
  t.equal(len, '24');
  t.equal(ip4.gateway, '10.244.7.1');
  const eth0 = result.interfaces[ip4.interface];
  t.equal(eth0?.name, 'eth0');
  t.equal(eth0?.sandbox, `/run/netns/${pods.a}`);
  added.a = { result, ip };

  const [link] = await ipJson<IpLink[]>(pods.a, 'addr', 'show', 'dev', 'eth0');
  t.equal(link?.mtu, 1450, 'pod MTU from FLANNEL_MTU');
  t.ok(
    link?.addr_info?.some((a) => a.family === 'inet' && a.local === ip && a.prefixlen === 24),
    `eth0 has ${ip}/24`,
  );
  const routes = await ipJson<IpRoute[]>(pods.a, 'route', 'show');
  t.ok(
    routes.some((x) => x.dst === 'default' && x.gateway === '10.244.7.1' && x.dev === 'eth0'),
    'default route via the bridge',
  );
  t.ok(
    routes.some((x) => x.dst === '10.244.0.0/16' && x.gateway === '10.244.7.1'),
    'cluster network route via the bridge',
  );

  const [cni0] = await ipJson<IpLink[]>(nodeNs, 'addr', 'show', 'dev', 'cni0');
  t.ok(
    cni0?.addr_info?.some((a) => a.family === 'inet' && a.local === '10.244.7.1' && a.prefixlen === 24),
    'cni0 in the node namespace has 10.244.7.1/24',
  );
  t.equal(await bridgePorts(), 1, 'one veth on cni0');

  const saved = JSON.parse(readFileSync(join(dataDir, 'ctr-a'), 'utf8'));
  t.equal(saved.type, 'bridge');
  t.equal(saved.ipMasq, false, 'inverse of FLANNEL_IPMASQ=true');
  t.equal(saved.ipam.dataDir, ipamDir);
  t.equal(readFileSync(reservation(ip), 'utf8').split(/\r?\n/)[0], 'ctr-a', 'host-local reserved the IP');

  ok(t, await ping(pods.a, '10.244.7.1'), 'pod pings the bridge');
});

t.test('ADD: a second pod gets another address; the pods reach each other', async (t) => {
  const r = await cni('ADD', { containerId: 'ctr-b', pod: pods.b });
  ok(t, r, 'ADD');
  const result = JSON.parse(r.stdout) as AddResult;
  const ip = result.ips[0]?.address.split('/')[0] ?? '';
  t.ok(LEASE.contains(ip), `${ip} is in ${LEASE}`);
  t.not(ip, added.a?.ip, 'a different address');
  added.b = { result, ip };
  t.equal(await bridgePorts(), 2);
  ok(t, await ping(pods.a, ip), 'a pings b');
  ok(t, await ping(pods.b, added.a?.ip ?? ''), 'b pings a');
});

t.test('CHECK', async (t) => {
  const conf = (prevResult: unknown) => ({ ...baseConf, prevResult });
  const r = await cni('CHECK', { containerId: 'ctr-a', pod: pods.a, conf: conf(added.a?.result) });
  ok(t, r, 'CHECK');
  t.equal(r.stdout, '', 'CHECK prints nothing on success');

  // The delegate really checks: a's result does not describe b's namespace.
  const bad = await cni('CHECK', { containerId: 'ctr-b', pod: pods.b, conf: conf(added.a?.result) });
  t.not(bad.code, 0, 'CHECK against the wrong result fails');
  const e = JSON.parse(bad.stdout);
  t.type(e.code, 'number');
  t.match(e.msg, /^bridge: /, "the delegate's error, passed through");
});

t.test('DEL removes the veth and releases the address', async (t) => {
  const ip = added.a?.ip ?? '';
  const r = await cni('DEL', {
    containerId: 'ctr-a',
    pod: pods.a,
    conf: { ...baseConf, prevResult: added.a?.result },
  });
  ok(t, r, 'DEL');
  t.equal(r.stdout, '');
  t.strictSame(await ipJson<IpLink[]>(pods.a, 'link', 'show', 'type', 'veth'), [], 'no eth0 in the pod');
  t.equal(await bridgePorts(), 1, 'its veth left cni0');
  t.notOk(existsSync(reservation(ip)), `${ip} released`);
  t.notOk(existsSync(join(dataDir, 'ctr-a')), 'saved config removed');
  ok(t, await ping(pods.b, '10.244.7.1'), 'the other pod is unaffected');

  ok(t, await cni('DEL', { containerId: 'ctr-a', pod: pods.a }), 'a repeated DEL succeeds');
  ok(t, await cni('DEL', { containerId: 'ctr-a' }), 'a DEL without a namespace succeeds');
});

t.test('DEL after the lease changed still releases what ADD allocated', async (t) => {
  writeFileSync(subnetFile, SUBNET_ENV.replace('10.244.7.1/24', '10.244.9.1/24'));
  const ip = added.b?.ip ?? '';
  ok(t, await cni('DEL', { containerId: 'ctr-b', pod: pods.b }), 'DEL');
  t.strictSame(await ipJson<IpLink[]>(pods.b, 'link', 'show', 'type', 'veth'), [], 'no eth0 in the pod');
  t.equal(await bridgePorts(), 0);
  t.notOk(existsSync(reservation(ip)), `${ip} released`);
  t.strictSame(readdirSync(dataDir), [], 'no saved configs left');
});

t.test('DEL with nothing saved and no subnet.env succeeds', async (t) => {
  rmSync(subnetFile);
  const r = await cni('DEL', { containerId: 'never-added', pod: pods.a });
  ok(t, r, 'DEL');
  t.equal(r.stdout, '');
});

t.test('nothing was written under /var/lib/cni', async (t) => {
  t.equal(existsSync(VAR_LIB_CNI), varLibCniBefore.exists);
  t.strictSame(tree(VAR_LIB_CNI), varLibCniBefore.files);
});

t.test('namespaces are removed', async (t) => {
  for (const ns of allNs) await deleteNetns(ns);
  const left = (await listNetns()).filter((ns) => ns.startsWith(runId));
  t.strictSame(left, []);
});

/**
 * Pods in the lab: weft-cni (with the real bridge and host-local plugins) wires pod namespaces
 * into their node, from a subnet.env written by hand here as the daemon would write it. Pods on
 * one node reach each other and the node's bridge; there is no overlay yet, so cross-node
 * traffic is not looked at. Teardown leaves no namespace behind and nothing in /var/lib/cni.
 */
import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import { formatSubnetEnv, writeSubnetEnv } from '../../../src/flanneld/subnet-env.js';
import { Cidr } from '../../../src/ipam/index.js';
import { CNI_NETWORK, Lab, listNetns, type LabPod, type TeardownReport } from '../../lab/index.js';

t.setTimeout(120_000);

const VAR_LIB_CNI = '/var/lib/cni';
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}
const varLibCniBefore = { exists: existsSync(VAR_LIB_CNI), files: tree(VAR_LIB_CNI) };

const NETWORK = '10.244.0.0/16';
const LEASES: Record<string, string> = { node1: '10.244.1.0/24', node2: '10.244.2.0/24' };

const lab = await Lab.create({ nodes: 2, etcdMembers: 1 });
let report: TeardownReport | undefined;
// If a test fails before the teardown test, still clean up (keeping the logs to look at).
t.teardown(async () => {
  if (!report) await lab.teardown({ keepLogs: !t.passing() });
});

async function namespacesOfRun(): Promise<string[]> {
  return (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
}

interface IpLink {
  ifname: string;
  mtu: number;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

async function ipJson<T>(target: string | { netns: string }, ...args: string[]): Promise<T> {
  return JSON.parse((await lab.exec(target, 'ip', ['-j', ...args])).stdout || '[]') as T;
}

const bridgePorts = async (node: string): Promise<number> =>
  (await ipJson<IpLink[]>(node, 'link', 'show', 'master', 'cni0')).length;

/** host-local's reservation file of `ip` on `node`: it exists exactly while the IP is allocated. */
function reservation(node: string, ip: string): string {
  const ipam = lab.cniConfig(node).ipam as { dataDir: string };
  return join(ipam.dataDir, CNI_NETWORK, ip);
}

function inet(links: IpLink[]): string[] {
  return links.flatMap((l) =>
    (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
  );
}

const pods: Record<string, LabPod> = {};
function pod(name: string): LabPod {
  const p = pods[name];
  if (!p) throw new Error(`pod ${name} was not added`);
  return p;
}

t.test('a pod cannot be added before its node has a subnet.env, and leaves nothing', async (t) => {
  const before = await namespacesOfRun();
  const err = await lab.addPod('node1', 'early').then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(isWeftError(err) && err.code === ErrorCodes.LAB, 'rejects with WeftError LAB');
  if (isWeftError(err)) {
    t.equal(err.details.cniCode, 11, 'CNI error 11, try again later');
    t.match(String(err.details.cniMsg), lab.subnetEnvPath('node1'));
  }
  t.strictSame(lab.pods, []);
  t.strictSame(await namespacesOfRun(), before, 'its namespace was removed again');
});

t.test('pods get addresses from their node lease, with the lease MTU', async (t) => {
  for (const node of lab.nodes) {
    await writeSubnetEnv(
      lab.subnetEnvPath(node),
      formatSubnetEnv({ network: NETWORK, subnet: LEASES[node.name] ?? '', mtu: 1450, ipMasq: false }),
    );
  }
  t.equal(lab.subnetEnvPath('node1'), join(lab.dir, 'node1', 'subnet.env'));
  t.match(readFileSync(lab.subnetEnvPath('node2'), 'utf8'), /^FLANNEL_SUBNET=10\.244\.2\.1\/24$/m);

  // Both node1 pods at once: the lab serialises CNI calls per node, as a runtime does.
  const [a, b, c] = await Promise.all([
    lab.addPod('node1', 'a'),
    lab.addPod('node1', 'b'),
    lab.addPod('node2', 'c'),
  ]);
  Object.assign(pods, { a, b, c });

  const present = await namespacesOfRun();
  for (const p of [a, b, c]) {
    const lease = Cidr.parse(LEASES[p.node] ?? '');
    t.ok(lease.contains(p.ip), `${p.node}/${p.name}: ${p.ip} is in ${lease}`);
    t.equal(p.prefixLength, 24);
    t.equal(p.gateway, lease.firstHost, 'the gateway is the bridge, the lease first host');
    t.equal(p.ifname, 'eth0');
    t.ok(p.netns.startsWith(`${lab.runId}-`), `namespace ${p.netns} carries the run id`);
    t.ok(present.includes(p.netns), `namespace ${p.netns} exists`);
    t.ok(existsSync(reservation(p.node, p.ip)), `host-local reserved ${p.ip} in the run dir`);

    const [eth0] = await ipJson<IpLink[]>(p, 'addr', 'show', 'dev', 'eth0');
    t.equal(eth0?.mtu, 1450, 'the pod MTU is FLANNEL_MTU');
    t.strictSame(inet(eth0 ? [eth0] : []), [`${p.ip}/24`], 'eth0 has the address ADD reported');
  }
  t.not(a.ip, b.ip, 'pods on one node get different addresses');
  t.strictSame(
    lab.pods.map((p) => `${p.node}/${p.name}`),
    ['node1/a', 'node1/b', 'node2/c'],
  );
  t.strictSame(
    lab.podsOn('node1').map((p) => p.name),
    ['a', 'b'],
  );

  t.strictSame(inet(await ipJson<IpLink[]>('node1', 'addr', 'show', 'dev', 'cni0')), ['10.244.1.1/24']);
  t.strictSame(inet(await ipJson<IpLink[]>('node2', 'addr', 'show', 'dev', 'cni0')), ['10.244.2.1/24']);
  t.equal(await bridgePorts('node1'), 2, 'two veths on node1 cni0');
  t.equal(await bridgePorts('node2'), 1, 'one veth on node2 cni0');

  await t.rejects(lab.addPod('node1', 'a'), { code: ErrorCodes.LAB }, 'a second pod a on node1 is refused');
  await t.rejects(lab.addPod('node1', 'Bad_Name'), { code: ErrorCodes.LAB }, 'a bad pod name is refused');
});

t.test('pods on one node reach each other and the bridge', async (t) => {
  const checks: [LabPod, string, string][] = [
    [pod('a'), pod('b').ip, 'a -> b'],
    [pod('b'), pod('a').ip, 'b -> a'],
    [pod('a'), '10.244.1.1', 'a -> cni0 on node1'],
    [pod('b'), '10.244.1.1', 'b -> cni0 on node1'],
    [pod('c'), '10.244.2.1', 'c -> cni0 on node2'],
  ];
  const results = await Promise.all(checks.map(([from, ip]) => lab.ping(from, ip)));
  results.forEach((r, i) => {
    t.ok(r.transmitted > 0 && r.received === r.transmitted, `${checks[i]?.[2]}: no loss`, { ping: r });
  });
  const fromNode = await lab.ping('node1', pod('a').ip);
  t.equal(fromNode.received, fromNode.transmitted, 'the node reaches its pod through cni0');
});

t.test('the TCP responder answers from another pod on the same node', async (t) => {
  const a = pod('a');
  const server = await lab.startTcpServer(a, 8080);
  t.ok(server.running, 'it listens');
  t.equal(await lab.tcpRequest(pod('b'), a.ip, 8080), 'a\n', "answers with the pod's name");
  t.equal(await lab.tcpRequest('node1', a.ip, 8080), 'a\n', 'and to its node');

  const http = await lab.tcpRequest(pod('b'), a.ip, 8080, { send: 'GET / HTTP/1.1\r\nHost: a\r\n\r\n' });
  t.match(http, /^HTTP\/1\.1 200 OK\r\n/, 'an HTTP request gets an HTTP answer');
  t.ok(http.endsWith('\r\n\r\na\n'), 'whose body is the name');

  await lab.startTcpServer(a, 8081, { reply: 'peer', includePeer: true });
  const peer = await lab.tcpRequest(pod('b'), a.ip, 8081);
  t.match(
    peer,
    new RegExp(`^peer ${pod('b').ip.replaceAll('.', '\\.')}:\\d+\\n$`),
    'b is seen unmasqueraded',
  );

  await t.rejects(
    lab.tcpRequest(pod('b'), a.ip, 8099),
    { code: ErrorCodes.LAB, details: { code: 'ECONNREFUSED' } },
    'a closed port is refused',
  );
  await t.rejects(
    lab.tcpRequest(pod('b'), '10.244.1.250', 8080, { timeoutMs: 500 }),
    { code: ErrorCodes.LAB },
    'an address nobody holds fails',
  );
});

t.test('topology shows the pods', async (t) => {
  const text = await lab.topology();
  for (const p of lab.pods) {
    t.ok(text.includes(p.netns), `mentions ${p.netns}`);
    t.ok(text.includes(`${p.ip}/24`), `mentions ${p.ip}/24`);
  }
});

t.test('removePod stops its processes, runs DEL and deletes the namespace', async (t) => {
  const b = pod('b');
  const server = await lab.startTcpServer(b, 9000);
  await lab.removePod(b);
  t.notOk(server.running, 'the responder in the pod was stopped');
  t.notOk((await namespacesOfRun()).includes(b.netns), 'its namespace is gone');
  t.notOk(existsSync(reservation('node1', b.ip)), `${b.ip} was released`);
  t.equal(await bridgePorts('node1'), 1, 'its veth left cni0');
  t.strictSame(
    lab.pods.map((p) => p.name),
    ['a', 'c'],
  );
  await lab.removePod(b);
  t.pass('removing it again does nothing');

  const d = await lab.addPod('node1', 'd');
  pods.d = d;
  t.ok(Cidr.parse('10.244.1.0/24').contains(d.ip), 'a new pod on node1 still gets an address');
  const r = await lab.ping(pod('a'), d.ip);
  t.equal(r.received, r.transmitted, 'and reaches the others');
});

t.test('teardown removes the pods and leaves nothing behind', async (t) => {
  const dir = lab.dir;
  const podNetns = lab.pods.map((p) => p.netns);
  report = await lab.teardown();
  t.strictSame(report.pods.sort(), ['node1/a', 'node1/d', 'node2/c']);
  for (const ns of podNetns) t.ok(report.namespaces.includes(ns), `${ns} was deleted`);
  t.strictSame(await namespacesOfRun(), [], 'no namespace of the run is left');
  t.notOk(existsSync(dir), 'the run dir is gone');
  t.equal(existsSync(VAR_LIB_CNI), varLibCniBefore.exists, '/var/lib/cni was not created');
  t.strictSame(tree(VAR_LIB_CNI), varLibCniBefore.files, 'nothing was written under /var/lib/cni');
});

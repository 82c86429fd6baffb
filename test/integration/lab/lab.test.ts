/**
 * The lab itself: three nodes on one underlay, each reaching the others and etcd, and a
 * teardown that leaves no namespace, process or temp dir behind.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import {
  Lab,
  listNetns,
  newRunId,
  pidsMentioning,
  processAlive,
  run,
  runDir,
  waitFor,
  type TeardownReport,
} from '../../lab/index.js';

t.setTimeout(60_000);

async function namespacesOf(runId: string): Promise<string[]> {
  return (await listNetns()).filter((n) => n.startsWith(`${runId}-`));
}

interface IpAddrJson {
  ifname: string;
  flags: string[];
  mtu: number;
  master?: string;
  addr_info: { family: string; local: string; prefixlen: number }[];
}

const lab = await Lab.create({ nodes: 3 });
let report: TeardownReport | undefined;
// If a test fails before the teardown test, still clean up (keeping the logs to look at).
t.teardown(async () => {
  if (!report) await lab.teardown({ keepLogs: !t.passing() });
});

t.test('three nodes come up on the underlay', async (t) => {
  t.same(
    lab.nodes.map((n) => n.name),
    ['node1', 'node2', 'node3'],
  );
  t.same(
    lab.nodes.map((n) => n.ip),
    ['10.99.0.11', '10.99.0.12', '10.99.0.13'],
  );
  const present = await namespacesOf(lab.runId);
  for (const ns of [
    lab.underlay.netns,
    ...lab.nodes.map((n) => n.netns),
    ...lab.etcdMembers.map((m) => m.netns),
  ]) {
    t.ok(present.includes(ns), `namespace ${ns} exists`);
  }
  const ulLinks = JSON.parse(
    (await lab.exec('underlay', 'ip', ['-j', 'addr', 'show'])).stdout,
  ) as IpAddrJson[];
  const br0 = ulLinks.find((l) => l.ifname === 'br0');
  t.same(
    br0?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
    ['10.99.0.1/24'],
    'the underlay bridge has its own address',
  );
  for (const n of lab.nodes) {
    const links = JSON.parse((await lab.exec(n, 'ip', ['-j', 'addr', 'show'])).stdout) as IpAddrJson[];
    const eth0 = links.find((l) => l.ifname === 'eth0');
    t.ok(eth0?.flags.includes('UP'), `${n.name}: eth0 is up`);
    t.equal(eth0?.mtu, 1500, `${n.name}: eth0 has the lab's MTU`);
    t.same(
      eth0?.addr_info.filter((a) => a.family === 'inet').map((a) => a.local),
      [n.ip],
      `${n.name}: eth0 has its underlay address`,
    );
    t.ok(links.find((l) => l.ifname === 'lo')?.flags.includes('UP'), `${n.name}: loopback is up`);
    const fwd = await lab.exec(n, 'sysctl', ['-n', 'net.ipv4.ip_forward']);
    t.equal(fwd.stdout.trim(), '1', `${n.name}: ip_forward is on inside the node`);
    const peer = ulLinks.find((l) => l.ifname === n.peer);
    t.equal(peer?.master, 'br0', `${n.name}: its veth peer ${n.peer} is a port of br0`);
  }
});

t.test('every node pings every other node over the underlay', async (t) => {
  const m = await lab.reachability({ count: 2 });
  t.equal(m.cells.length, 6, 'six ordered pairs');
  for (const c of m.cells) {
    t.equal(c.stats.received, c.stats.transmitted, `${c.from} -> ${c.to}: every reply came back`);
    t.ok(c.stats.rtt && c.stats.rtt.avgMs > 0, `${c.from} -> ${c.to}: rtt measured`);
  }
  t.ok(m.allReachable, m.format());
  for (const n of lab.nodes) {
    const p = await lab.ping('underlay', n.ip, { count: 1 });
    t.equal(p.received, 1, `the underlay namespace reaches ${n.name}`);
  }
  // The negative control: an address nobody has must show up as unreachable.
  const none = await lab.ping('node1', '10.99.0.250', { count: 1, timeoutS: 0.3 });
  t.equal(none.received, 0, 'an unused underlay address does not answer');
  t.equal(none.loss, 1);
});

t.test('each node reaches etcd from inside its namespace', async (t) => {
  t.same(lab.etcdEndpoints, ['http://10.99.0.101:2379']);
  for (const n of lab.nodes) {
    const health = await lab.etcdHealth(n);
    t.same(
      health.map((h) => [h.endpoint, h.healthy]),
      [['http://10.99.0.101:2379', true]],
      `${n.name}: etcdctl endpoint health`,
    );
  }
  const key = `/weft/lab-test/${lab.runId}`;
  await lab.etcdctl('node1', ['put', key, 'from-node1']);
  for (const n of ['node2', 'node3']) {
    const got = await lab.etcdctl(n, ['get', key, '--print-value-only']);
    t.equal(got.stdout.trim(), 'from-node1', `${n} reads what node1 wrote`);
  }
});

t.test('exec and startProcess run inside the lab only', async (t) => {
  const addr = await lab.exec('node2', 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  t.match(addr.stdout, /10\.99\.0\.12\/24/);
  t.throws(() => lab.netnsOf('wt-1-abcdef-n1'), { code: ErrorCodes.LAB }, 'a foreign namespace is refused');
  t.throws(() => lab.netnsOf({ netns: 'wt-1-abcdef-n1' }), { code: ErrorCodes.LAB });
  t.throws(() => lab.netnsOf('node9'), { code: ErrorCodes.LAB }, 'an unknown node is refused');
  const p = lab.startProcess('node2', 'listener', 'sleep', ['300']);
  t.ok(p.running && p.pid, 'the process runs');
  t.ok(lab.pids().includes(p.pid ?? -1), 'the lab tracks its PID');
  const nsPids = await waitFor(
    async () => {
      const out = (await lab.exec('underlay', 'ip', ['netns', 'pids', lab.node('node2').netns])).stdout;
      return out.split(/\s+/).includes(String(p.pid)) || undefined;
    },
    { what: 'the process to show up in node2', timeoutMs: 3_000 },
  );
  t.ok(nsPids, 'it runs inside node2');
  t.ok(existsSync(p.logFile) && p.logFile.startsWith(lab.logsDir), `its log is in the run dir: ${p.logFile}`);
});

t.test('topology describes namespaces, links, addresses and etcd', async (t) => {
  const text = await lab.topology();
  for (const s of [
    lab.runId,
    lab.underlay.netns,
    'br0',
    '10.99.0.1/24',
    ...lab.nodes.flatMap((n) => [n.netns, `${n.ip}/24`, n.peer]),
    'http://10.99.0.101:2379',
  ]) {
    t.ok(text.includes(s), `mentions ${s}`);
  }
  t.match(text, /veth peer veth-n1 in underlay/);
  t.ok(text.split('\n').length > 15, 'is multi-line');
});

t.test('teardown leaves no namespace, process or temp dir of the run', async (t) => {
  const pids = lab.pids();
  t.ok(pids.length >= 2, `processes were started: ${pids.join(', ')} (etcd and one on node2)`);
  t.ok((await namespacesOf(lab.runId)).length >= 5, 'namespaces exist before');
  report = await lab.teardown();
  t.same(await namespacesOf(lab.runId), [], 'ip netns list has nothing of the run');
  t.same(pids.filter(processAlive), [], 'every PID the lab started is gone');
  t.same(pidsMentioning(lab.runId), [], 'no process mentions the run id');
  t.notOk(existsSync(lab.dir), 'the run dir is removed');
  t.equal(await lab.teardown(), report, 'a second teardown is a no-op');
  t.throws(() => lab.startProcess('node1', 'late', 'true', []), { code: ErrorCodes.LAB });
});

t.test('create refuses bad options before creating anything', async (t) => {
  const runId = newRunId();
  const bad = [
    { etcdMembers: 2 as 1 },
    { nodes: 0 },
    { underlayCidr: '10.244.3.0/24' },
    { underlayCidr: '10.99.0.0/26' },
    { runId: 'my-run' },
  ];
  for (const opts of bad) {
    await t.rejects(Lab.create({ runId, ...opts }), { code: ErrorCodes.LAB }, JSON.stringify(opts));
  }
  t.same(await namespacesOf(runId), []);
});

t.test('create cleans up after itself when it fails half-way', async (t) => {
  const runId = newRunId();
  const serverPids: number[] = [];
  const err = await Lab.create({
    runId,
    nodes: 2,
    redis: true,
    onProgress: async (step) => {
      if (step !== 'ready') return;
      // Everything is up: underlay, two nodes, etcd1 and redis, with their servers running.
      const namespaces = await namespacesOf(runId);
      t.equal(namespaces.length, 5, `the namespaces exist when the last step fails`);
      for (const ns of namespaces) {
        const out = await run('ip', ['netns', 'pids', ns]);
        serverPids.push(...out.stdout.split(/\s+/).filter(Boolean).map(Number));
      }
      throw new Error('injected failure');
    },
  }).catch((e: unknown) => e);
  t.ok(isWeftError(err, ErrorCodes.LAB), 'create rejects with WEFT_LAB');
  t.match((err as Error).message, /injected failure/);
  t.equal(serverPids.length, 2, `etcd and redis were running (${serverPids.join(', ')})`);
  t.same(serverPids.filter(processAlive), [], 'they are stopped');
  t.same(pidsMentioning(runId), [], 'no process mentions the run id');
  t.same(await namespacesOf(runId), [], 'no namespace of the run is left');
  t.notOk(existsSync(runDir(runId)), 'no temp dir is left');
});

t.test('a three-member etcd survives losing its leader', async (t) => {
  const lab3 = await Lab.create({ nodes: 1, etcdMembers: 3 });
  t.teardown(() => lab3.teardown({ keepLogs: !t.passing() }));
  t.same(lab3.etcdEndpoints, [
    'http://10.99.0.101:2379',
    'http://10.99.0.102:2379',
    'http://10.99.0.103:2379',
  ]);
  const leader = await lab3.etcdLeader();
  await leader.server.kill();
  t.notOk(leader.server.process?.running, `the leader ${leader.name} is killed`);
  await waitFor(
    async () =>
      (await lab3.etcdctl('node1', ['put', '/weft/lab-test/k', 'v'], { allowFail: true, commandTimeoutS: 1 }))
        .code === 0,
    { what: 'a write to succeed without the old leader', timeoutMs: 10_000 },
  );
  const next = await lab3.etcdLeader();
  t.not(next.name, leader.name, `a new leader was elected: ${next.name}`);
  const health = await lab3.etcdHealth('node1');
  t.same(health.filter((h) => h.healthy).length, 2, 'two members are healthy as seen from node1');
  await leader.server.start();
  await leader.server.waitHealthy();
  t.ok(leader.server.process?.running, 'the old leader restarts on its data and rejoins');
  t.same(
    (await lab3.etcdHealth('node1')).filter((h) => h.healthy).length,
    3,
    'all three members are healthy again',
  );
});

/**
 * weft-flanneld's node lifecycle on a 3-node vxlan lab: health and metrics of a running daemon,
 * a kill -9 and restart under pod traffic (same subnet, pings lost reported), a node that leaves
 * (its entries gone from the others within 1 s of its lease's deletion), the subnet re-taken
 * from subnet.env, stale entries of a node that left while a daemon was down, and `--cleanup`.
 */
import t from 'tap';
import { readFileSync, existsSync } from 'node:fs';
import { sleep } from '../../../src/backoff/index.js';
import {
  FlannelCluster,
  Lab,
  listNetns,
  metricValue,
  waitFor,
  type LabNode,
  type LabPod,
  type OverlayState,
} from '../../lab/index.js';
import { assertPodsTalk } from '../../helpers/pod-traffic.js';

t.setTimeout(150_000);

const PREFIX = '/coreos.com/network';

/** node name → lease key (`10.244.3.0-24`), from the PublicIPs in the registry. */
async function leaseKeys(cluster: FlannelCluster): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [path, value] of await cluster.leases()) {
    const ip = (JSON.parse(value) as { PublicIP: string }).PublicIP;
    const node = cluster.lab.nodes.find((n) => n.ip === ip);
    if (node) out.set(node.name, path.slice(`${PREFIX}/subnets/`.length));
  }
  return out;
}

/** `10.244.3.0-24` → `10.244.3.0/24`. */
const cidrOf = (key: string): string => key.replace('-', '/');
const networkOf = (key: string): string => key.split('-')[0] as string;

/** The entries of `node` that name the lease `key` of a remote with `publicIp`. */
function entriesFor(state: OverlayState, key: string, publicIp: string): string[] {
  const cidr = cidrOf(key);
  const net = networkOf(key);
  return [
    ...state.routes.filter((r) => r.startsWith(`${cidr} `)),
    ...state.neighbours.filter((n) => n.startsWith(`${net} `)),
    ...state.fdb.filter((f) => f.endsWith(` dst ${publicIp}`)),
  ];
}

const lab = await Lab.create({ nodes: 3 });
t.teardown(async () => {
  await lab.teardown();
  const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
  if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
});
const [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
const cluster = await FlannelCluster.create(lab, { args: ['--ip-masq'] });
await cluster.waitReady();
const keys = await leaseKeys(cluster);
const key1 = keys.get('node1') as string;
const key2 = keys.get('node2') as string;
const key3 = keys.get('node3') as string;
const [p1, p2, p3] = (await Promise.all(lab.nodes.map((n) => lab.addPod(n, 'web')))) as [
  LabPod,
  LabPod,
  LabPod,
];
for (const p of [p1, p2, p3]) await lab.startTcpServer(p, 8080);

t.test('a running daemon: /healthz, /readyz and /metrics', async (t) => {
  t.equal(keys.size, 3, 'every node holds a lease');
  t.equal((await cluster.health(n1, '/healthz')).status, 200, '/healthz 200');
  t.equal((await cluster.health(n1, '/readyz')).status, 200, '/readyz 200 once ready');
  const m = await cluster.metrics(n1);
  const now = Date.now() / 1000;
  t.ok((metricValue(m, 'weft_flanneld_lease_acquisitions_total') ?? 0) >= 1, 'lease acquisitions counted');
  const expiry = metricValue(m, 'weft_flanneld_lease_expiry_timestamp_seconds') ?? 0;
  t.ok(expiry > now + 86_000 && expiry < now + 86_500, `lease expiry ~24 h ahead (${expiry - now} s)`);
  t.ok(
    (metricValue(m, 'weft_flanneld_reconcile_runs_total', { result: 'ok' }) ?? 0) >= 1,
    'reconcile runs counted',
  );
  t.ok(
    (metricValue(m, 'weft_flanneld_reconcile_duration_seconds_count') ?? 0) >= 1,
    'reconcile duration observed',
  );
  const lastSync = metricValue(m, 'weft_flanneld_last_sync_timestamp_seconds') ?? 0;
  t.ok(
    lastSync > now - 60 && lastSync <= now + 1,
    `last sync is recent (${(now - lastSync).toFixed(1)} s ago)`,
  );
  // Counters that have not counted anything yet must still be exposed (with 0) to be alertable.
  for (const name of [
    'weft_flanneld_lease_renewals_total',
    'weft_flanneld_repairs_total',
    'weft_flanneld_errors_total',
    'weft_flanneld_dataplane_errors_total',
  ]) {
    t.not(metricValue(m, name), undefined, `${name} has a sample`);
  }
  t.equal(metricValue(m, 'weft_flanneld_config_stale'), 0, 'config is not stale');
});

t.test('kill -9 and restart: same subnet, pods keep talking', async (t) => {
  const envBefore = readFileSync(lab.subnetEnvPath(n1), 'utf8');
  const leaseBefore = (await cluster.leases()).get(`${PREFIX}/subnets/${key1}`);
  const devBefore = (await cluster.overlay(n1)).device;
  t.ok(devBefore, 'node1 has flannel.1');

  // 8 s of pings at 0.1 s from node2's pod to node1's pod, with the crash and restart inside.
  const pinging = lab.ping(p2, p1.ip, { count: 80, intervalS: 0.1, timeoutS: 1 });
  await sleep(1000);
  const started = performance.now();
  await cluster.daemon(n1).process.kill();
  cluster.start(n1);
  await cluster.waitReady([n1]);
  const restartMs = performance.now() - started;
  const ping = await pinging;
  const lost = ping.transmitted - ping.received;
  t.comment(
    `restart of node1 after kill -9: ready again in ${restartMs.toFixed(0)} ms; ` +
      `pings lost node2/web → node1/web: ${lost} of ${ping.transmitted} (${(ping.loss * 100).toFixed(1)}%)`,
  );
  t.ok(ping.transmitted >= 70, `the pings ran (${ping.transmitted} sent)`);
  t.ok(ping.loss <= 0.05, `at most 5% of the pings lost across the restart (${lost} lost)`);

  const keysAfter = await leaseKeys(cluster);
  t.equal(keysAfter.get('node1'), key1, 'node1 has the same subnet after the restart');
  t.equal(
    (await cluster.leases()).get(`${PREFIX}/subnets/${key1}`),
    leaseBefore,
    'the lease value (PublicIP, VtepMAC) is unchanged',
  );
  t.equal(keysAfter.size, 3, 'no extra lease was created');
  t.match(
    await cluster.log(n1),
    /reused this node's lease, found by its PublicIP/,
    'the restarted daemon reused its lease by PublicIP',
  );
  t.equal(readFileSync(lab.subnetEnvPath(n1), 'utf8'), envBefore, 'subnet.env is unchanged');
  // The kernel state was right all along: a restart must not take a live entry down, even briefly.
  t.notMatch(await cluster.log(n1), /"msg":"delete (route|neighbour|fdb) /, 'the restart deleted no entry');
  const devAfter = (await cluster.overlay(n1)).device;
  t.equal(devAfter?.index, devBefore?.index, 'flannel.1 was adopted, not recreated');
  t.equal(devAfter?.mac, devBefore?.mac, 'flannel.1 kept its MAC');
  await assertPodsTalk(t, lab, p2, p1, 'after the restart');
  await assertPodsTalk(t, lab, p1, p3, 'after the restart');
});

t.test('a node leaves: its entries vanish from the others within 1 s', async (t) => {
  for (const n of [n2, n3]) {
    const have = entriesFor(await cluster.overlay(n), key1, n1.ip);
    t.equal(have.length, 3, `${n.name} has node1's route, neighbour and FDB entry: ${have.join('; ')}`);
  }
  await cluster.daemon(n1).process.stop();

  const started = performance.now();
  await lab.etcdctl(n2, ['del', `${PREFIX}/subnets/${key1}`]);
  const deletedMs = performance.now() - started;
  const goneAt = await Promise.all(
    [n2, n3].map((n) =>
      waitFor(
        async () => {
          const left = entriesFor(await cluster.overlay(n), key1, n1.ip);
          return left.length === 0 ? performance.now() - started : undefined;
        },
        { what: `node1's entries to vanish from ${n.name}`, timeoutMs: 5000, intervalMs: 50 },
      ),
    ),
  );
  const worst = Math.max(...goneAt);
  t.comment(
    `node leave: node1's route, neighbour and FDB entry gone from node2 in ${goneAt[0]?.toFixed(0)} ms, ` +
      `from node3 in ${goneAt[1]?.toFixed(0)} ms after the delete started (etcdctl del took ${deletedMs.toFixed(0)} ms)`,
  );
  t.ok(worst < 1000, `entries gone within 1 s of the registry delete (${worst.toFixed(0)} ms)`);
  for (const [n, other, otherKey] of [
    [n2, n3, key3],
    [n3, n2, key2],
  ] as const) {
    const have = entriesFor(await cluster.overlay(n), otherKey, other.ip);
    t.equal(have.length, 3, `${n.name} keeps ${other.name}'s entries`);
  }
  await assertPodsTalk(t, lab, p2, p3, 'while node1 is gone');
  await assertPodsTalk(t, lab, p3, p2, 'while node1 is gone');
});

t.test('restart without a lease: the subnet of subnet.env is taken again', async (t) => {
  t.notOk((await cluster.leases()).has(`${PREFIX}/subnets/${key1}`), "node1's lease is gone");
  t.match(
    readFileSync(lab.subnetEnvPath(n1), 'utf8'),
    `FLANNEL_SUBNET=${networkOf(key1).replace(/0$/, '1')}/24`,
  );
  cluster.start(n1);
  await cluster.waitReady([n1]);
  t.equal((await leaseKeys(cluster)).get('node1'), key1, 'node1 re-took the subnet of its subnet.env');
  t.match(
    await cluster.log(n1),
    /reused the subnet of the previous subnet\.env/,
    'the log says the subnet came from subnet.env',
  );
  for (const n of [n2, n3]) {
    await waitFor(async () => entriesFor(await cluster.overlay(n), key1, n1.ip).length === 3, {
      what: `node1's entries back on ${n.name}`,
      timeoutMs: 3000,
      intervalMs: 50,
    });
    t.pass(`${n.name} has node1's entries again`);
  }
  await assertPodsTalk(t, lab, p2, p1, 'after node1 came back');
  await assertPodsTalk(t, lab, p1, p3, 'after node1 came back');
});

t.test("entries of a node that left while a daemon was down are removed at the daemon's start", async (t) => {
  await Promise.all([cluster.daemon(n2).process.stop(), cluster.daemon(n3).process.stop()]);
  await lab.etcdctl(n1, ['del', `${PREFIX}/subnets/${key3}`]);
  await waitFor(async () => entriesFor(await cluster.overlay(n1), key3, n3.ip).length === 0, {
    what: "node3's entries to vanish from node1",
    timeoutMs: 3000,
    intervalMs: 50,
  });
  t.equal(
    entriesFor(await cluster.overlay(n2), key3, n3.ip).length,
    3,
    "node2 (stopped) still has node3's entries",
  );
  cluster.start(n2);
  await cluster.waitReady([n2]);
  const state = await cluster.overlay(n2);
  t.same(entriesFor(state, key3, n3.ip), [], "node3's stale entries are gone from node2 once it is ready");
  t.equal(entriesFor(state, key1, n1.ip).length, 3, "node2 has node1's entries");
  await assertPodsTalk(t, lab, p1, p2, 'after node2 restarted');
});

t.test('--cleanup removes the device, the routes, the rules and subnet.env', async (t) => {
  // node3's daemon is stopped (previous test); what it installed is still there.
  const iptables = async (table: string) =>
    (await lab.exec(n3, 'iptables', ['-w', '-t', table, '-S'])).stdout;
  const before = await cluster.overlay(n3);
  t.ok(before.device, 'node3 has flannel.1 before');
  t.ok(before.routes.length > 0, `node3 has overlay routes before (${before.routes.join('; ')})`);
  t.match(await iptables('nat'), /^-N FLANNEL-POSTRTG$/m, 'FLANNEL-POSTRTG exists before');
  t.match(await iptables('filter'), /^-N FLANNEL-FWD$/m, 'FLANNEL-FWD exists before');
  t.ok(existsSync(lab.subnetEnvPath(n3)), 'subnet.env exists before');

  const r = await cluster.cleanup(n3);
  t.equal(
    r.code,
    0,
    `--cleanup exits 0 (${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')})`,
  );
  const after = await cluster.overlay(n3);
  t.notOk(after.device, 'flannel.1 is gone');
  t.same(after.routes, [], 'no route into the cluster network is left (but the kernel ones of cni0)');
  const nat = await iptables('nat');
  const filter = await iptables('filter');
  t.notMatch(nat, /FLANNEL-/, 'no FLANNEL-* chain or jump in nat');
  t.notMatch(filter, /FLANNEL-/, 'no FLANNEL-* chain or jump in filter');
  t.notOk(existsSync(lab.subnetEnvPath(n3)), 'subnet.env is gone');
  t.ok(
    (await leaseKeys(cluster)).size === 2,
    'the registry is left alone (node1 and node2 keep their leases)',
  );
  await assertPodsTalk(t, lab, p1, p2, 'other nodes after the clean-up of node3');
});

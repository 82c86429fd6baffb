/**
 * The `udp` backend on a 3-node lab: flannel0 TUN devices driven by the native forwarder carry
 * pod traffic (ICMP and TCP) between nodes, and a node that leaves is removed from every
 * forwarder's table, which the others then answer with ICMP net-unreachable instead of sending
 * packets into the void.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { FlannelCluster, Lab, type LabPod } from '../../lab/index.js';
import { RESPONDER_PORT, assertPodsTalk } from '../../helpers/pod-traffic.js';
import { waitFor } from '../../lab/exec.js';

t.setTimeout(240_000);

const PREFIX = '/coreos.com/network';

const lab = await Lab.create({ nodes: 3 });
t.teardown(() => lab.teardown());
const cluster = await FlannelCluster.create(lab, {
  config: { Network: '10.244.0.0/16', Backend: { Type: 'udp' } },
});
await cluster.waitReady();
const [n1, n2, n3] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0], (typeof lab.nodes)[0]];
const pods: LabPod[] = await Promise.all(lab.nodes.map((n) => lab.addPod(n, 'web')));
const [p1, p2, p3] = pods as [LabPod, LabPod, LabPod];
for (const p of pods) await lab.startTcpServer(p, RESPONDER_PORT);

t.test("leases are flannel's udp leases and flannel0 is a TUN with MTU 1472", async (t) => {
  for (const [key, value] of await cluster.leases()) {
    t.match(
      value,
      /^\{"PublicIP":"10\.99\.0\.1[123]","PublicIPv6":null\}$/,
      `${key}: no BackendType, as flannel`,
    );
  }
  for (const n of lab.nodes) {
    const link = await lab.exec(n, 'ip', ['-j', '-d', 'link', 'show', 'flannel0']);
    const [info] = JSON.parse(link.stdout) as [{ mtu: number; linkinfo?: { info_kind?: string } }];
    t.equal(info.linkinfo?.info_kind, 'tun', `${n.name}: flannel0 is a TUN device`);
    t.equal(info.mtu, 1472, `${n.name}: MTU is the underlay's minus 28`);
    t.match(readFileSync(lab.subnetEnvPath(n), 'utf8'), /FLANNEL_MTU=1472\n/, `${n.name}: subnet.env MTU`);
    const routes = await lab.exec(n, 'ip', ['-4', 'route', 'show', '10.244.0.0/16']);
    t.match(
      routes.stdout,
      /10\.244\.0\.0\/16 dev flannel0/,
      `${n.name}: the network is routed into flannel0`,
    );
  }
});

t.test('pods on every node talk over the udp backend (ICMP and TCP)', async (t) => {
  for (const from of pods)
    for (const to of pods) if (from !== to) await assertPodsTalk(t, lab, from, to, 'udp backend');
});

t.test('a node that leaves is removed from the forwarder table', async (t) => {
  await cluster.daemon(n3).process.stop();
  const key3 = [...(await cluster.leases())].find(([, v]) => v.includes(`"${n3.ip}"`))?.[0];
  t.ok(key3, "node3's lease found");
  await lab.etcdctl(n1, ['del', key3 ?? `${PREFIX}/subnets/none`]);
  const answer = await waitFor(
    async () => {
      const r = await lab.podExec(p1, 'ping', ['-n', '-c', '1', '-W', '1', p3.ip], { allowFail: true });
      return /Destination Net Unreachable/.test(r.stdout) ? r.stdout : undefined;
    },
    {
      what: "node1's forwarder to answer for node3's subnet with net-unreachable",
      timeoutMs: 5000,
      intervalMs: 200,
    },
  );
  t.match(answer, /From 10\.244\.\d+\.0 .*Destination Net Unreachable/, 'ICMP net-unreachable from the node');
  await assertPodsTalk(t, lab, p1, p2, 'node1 → node2 still works');
  await assertPodsTalk(t, lab, p2, p1, 'node2 → node1 still works');
  void n2;
});

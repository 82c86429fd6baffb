/**
 * weft-flanneld on a 3-node lab: leases in flannel's exact format, subnet.env on every node, and
 * pods created through weft-cni talking across nodes (ICMP and TCP) over vxlan and host-gw.
 */
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { FlannelCluster, Lab, type LabPod } from '../../lab/index.js';

t.setTimeout(240_000);

const LEASE_KEY = /^\/coreos\.com\/network\/subnets\/10\.244\.(\d+)\.0-24$/;

async function crossNodeTraffic(t: Test, lab: Lab, pods: LabPod[]): Promise<void> {
  for (const p of pods) await lab.startTcpServer(p, 8080);
  for (const from of pods) {
    for (const to of pods) {
      if (from === to) continue;
      const ping = await lab.ping(from, to.ip, { count: 2, timeoutS: 2 });
      t.equal(ping.received, 2, `${from.node}/${from.name} pings ${to.node}/${to.name} (${to.ip})`);
      const reply = await lab.tcpRequest(from, to.ip, 8080, { timeoutMs: 3000 });
      t.equal(reply.trim(), to.name, `${from.name} → ${to.name} over TCP`);
    }
  }
}

for (const backend of ['vxlan', 'host-gw'] as const) {
  t.test(`${backend}: leases, subnet.env and pod traffic across 3 nodes`, async (t) => {
    const lab = await Lab.create({ nodes: 3 });
    t.teardown(() => lab.teardown());
    const cluster = await FlannelCluster.create(lab, {
      config: { Network: '10.244.0.0/16', Backend: { Type: backend } },
    });
    await cluster.waitReady();

    const leases = await cluster.leases();
    t.equal(leases.size, 3, 'one lease per node');
    const byIp = new Map<string, string>();
    for (const [key, value] of leases) {
      t.match(key, LEASE_KEY, `key ${key} has flannel's form`);
      const parsed = JSON.parse(value) as { PublicIP: string; BackendData?: { VtepMAC: string } };
      byIp.set(parsed.PublicIP, key);
      if (backend === 'vxlan') {
        t.match(
          value,
          /^\{"PublicIP":"10\.99\.0\.1[123]","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"[0-9a-f]{2}(:[0-9a-f]{2}){5}"\}\}$/,
          "vxlan lease JSON is exactly flannel's",
        );
      } else {
        t.match(
          value,
          /^\{"PublicIP":"10\.99\.0\.1[123]","PublicIPv6":null,"BackendType":"host-gw"\}$/,
          'host-gw JSON',
        );
      }
    }
    t.same([...byIp.keys()].sort(), lab.nodes.map((n) => n.ip).sort(), 'every node published its PublicIP');

    for (const n of lab.nodes) {
      const key = byIp.get(n.ip) as string;
      const third = LEASE_KEY.exec(key)?.[1];
      const env = readFileSync(lab.subnetEnvPath(n), 'utf8');
      const mtu = backend === 'vxlan' ? 1450 : 1500;
      t.equal(
        env,
        `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${third}.1/24\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=false\n`,
        `${n.name} subnet.env matches its lease`,
      );
    }

    const pods = await Promise.all(lab.nodes.map((n) => lab.addPod(n, 'web')));
    await crossNodeTraffic(t, lab, pods);
  });
}

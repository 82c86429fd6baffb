/**
 * `node dist/bench/overlay.js` (issue 5 §6): pod-to-pod TCP throughput across two lab nodes over
 * weft-flanneld's `udp` backend (the native TUN forwarder), against kernel vxlan and the raw
 * underlay (node to node, no overlay) measured in the same run. Each backend gets a lab of its own
 * (two nodes, etcd, weft-flanneld, a pod per node through weft-cni); iperf3 runs between the
 * pods. CPU time per GB is the whole machine's (every namespace's softirq work included), from
 * /proc/stat, so kernel and user-space paths are comparable.
 */
import { readFileSync } from 'node:fs';
import { machineInfo, writeResults } from './harness.js';
import { FlannelCluster, Lab, type LabPod } from '../test/lab/index.js';

/** One path's figures. */
export interface OverlayCase {
  name: 'underlay' | 'vxlan' | 'udp';
  /** The lab the figure comes from (underlay is measured in both). */
  lab: 'vxlan' | 'udp';
  gbps: number;
  retransmits: number;
  /** Machine CPU seconds (all cores, busy time) per GB delivered. */
  cpuSecondsPerGb: number;
}

/** bench/results/overlay.json */
export interface OverlayResults {
  benchmark: 'overlay';
  date: string;
  machine: ReturnType<typeof machineInfo>;
  seconds: number;
  /** Whether the udp backend's TUN used offloads (virtio header, TSO, UDP GSO/GRO). */
  udpOffload: boolean;
  cases: OverlayCase[];
}

const SECONDS = Number(process.env.WEFT_BENCH_OVERLAY_SECONDS ?? 8);

function busySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return (total - idle) / 100;
}

async function iperf(
  lab: Lab,
  from: LabPod | Lab['nodes'][number],
  to: LabPod | Lab['nodes'][number],
  ip: string,
  port: number,
): Promise<{ gbps: number; retransmits: number; cpuSecondsPerGb: number }> {
  const server = lab.startProcess(to, `iperf3-${port}`, 'iperf3', ['-s', '-1', '-p', String(port)]);
  await new Promise((r) => setTimeout(r, 500));
  const cpu0 = busySeconds();
  const r = await lab.exec(from, 'iperf3', ['-c', ip, '-p', String(port), '-t', String(SECONDS), '-J'], {
    timeoutMs: (SECONDS + 30) * 1000,
  });
  const cpu = busySeconds() - cpu0;
  await server.stop();
  const j = JSON.parse(r.stdout) as {
    end: { sum_received: { bits_per_second: number; bytes: number }; sum_sent: { retransmits?: number } };
  };
  const gb = j.end.sum_received.bytes / 1e9;
  return {
    gbps: j.end.sum_received.bits_per_second / 1e9,
    retransmits: j.end.sum_sent.retransmits ?? 0,
    cpuSecondsPerGb: cpu / gb,
  };
}

async function measure(backend: 'vxlan' | 'udp'): Promise<{ cases: OverlayCase[]; offload: boolean }> {
  const lab = await Lab.create({ nodes: 2 });
  try {
    const cluster = await FlannelCluster.create(lab, {
      config: { Network: '10.244.0.0/16', Backend: { Type: backend } },
    });
    await cluster.waitReady();
    const [n1, n2] = lab.nodes as [Lab['nodes'][number], Lab['nodes'][number]];
    const a = await lab.addPod(n1, 'a');
    const b = await lab.addPod(n2, 'b');
    let offload = false;
    if (backend === 'udp') {
      // The TUN was opened with a virtio header when offloads are on: `ip -d link` shows vnet_hdr.
      const link = await lab.exec(n1, 'ip', ['-d', 'link', 'show', 'flannel0']);
      offload = /vnet_hdr/.test(link.stdout);
    }
    const under = await iperf(lab, n1, n2, n2.ip, 5301);
    const overlay = await iperf(lab, a, b, b.ip, 5302);
    return {
      offload,
      cases: [
        { name: 'underlay', lab: backend, ...under },
        { name: backend, lab: backend, ...overlay },
      ],
    };
  } finally {
    await lab.teardown();
  }
}

const udp = await measure('udp');
const vxlan = await measure('vxlan');
const results: OverlayResults = {
  benchmark: 'overlay',
  date: new Date().toISOString(),
  machine: machineInfo(),
  seconds: SECONDS,
  udpOffload: udp.offload,
  cases: [...vxlan.cases, ...udp.cases],
};
for (const c of results.cases) {
  console.log(
    `overlay ${c.name.padEnd(8)} (${c.lab} lab) ${c.gbps.toFixed(2)} Gbit/s  retransmits ${c.retransmits}  ` +
      `cpu ${c.cpuSecondsPerGb.toFixed(2)} s/GB`,
  );
}
console.log(`wrote ${await writeResults('overlay', results)}`);

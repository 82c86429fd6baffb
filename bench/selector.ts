/**
 * `node dist/bench/selector.js` (issue 13): how long a pod takes from being declared and attached
 * to being an endpoint in every node's nftables, through weft-controller and weft-proxy, at 100,
 * 1,000 and 10,000 selected pods; and what weft-controller costs (CPU, RSS) per 1,000 pod
 * changes. Each size gets a fresh lab of `--nodes` nodes (weft-proxy in nftables mode on each),
 * etcd and one weft-controller; bench/selector-results.ts says what each figure is.
 *
 * Options: --sizes 100,1000,10000 --samples 20 --nodes 3 --changes 1000 --quick (sizes 20, 5
 * samples, 200 changes, 2 nodes: seconds, a smoke test) --require-idle (refuse to run, exit 3,
 * when the 1-minute load average is above 0.5 per core; without it such a run is marked busy)
 * --out selector.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { sleep } from '../src/backoff/index.js';
import { messageOf } from '../src/errors/index.js';
import { serviceKey } from '../src/k8s/index.js';
import {
  ControllerCluster,
  Lab,
  ProxyCluster,
  REPO_ROOT,
  waitFor,
  type LabNode,
  type ManagedProcess,
} from '../test/lab/index.js';
import { RegistryAgent } from '../test/helpers/registry-agent.js';
import { serviceObject, type ServiceDef } from '../test/helpers/proxy-objects.js';
import { attachmentObject, kernelEndpoints, podObject } from '../test/helpers/selector-objects.js';
import { machineInfo, writeResults } from './harness.js';
import {
  idleState,
  summarize,
  type ControllerCost,
  type SelectorCase,
  type SelectorResults,
} from './selector-results.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100,1000,10000' },
    samples: { type: 'string', default: '20' },
    nodes: { type: 'string', default: '3' },
    changes: { type: 'string', default: '1000' },
    quick: { type: 'boolean', default: false },
    'require-idle': { type: 'boolean', default: false },
    out: { type: 'string', default: 'selector' },
  },
});
const quick = values.quick;
const sizes = quick ? [20] : values.sizes.split(',').map(Number);
const samples = quick ? 5 : Number(values.samples);
const nodeCount = quick ? 2 : Number(values.nodes);
const changes = quick ? 200 : Number(values.changes);
if (
  !sizes.every((n) => Number.isInteger(n) && n > samples) ||
  !(samples >= 5) ||
  !(nodeCount >= 1) ||
  !(changes >= 2)
) {
  console.error(
    'selector: --sizes must be integers above --samples, --samples ≥ 5, --nodes ≥ 1, --changes ≥ 2',
  );
  process.exit(2);
}

const SERVICE: ServiceDef = {
  name: 'bench',
  clusterIP: '10.96.200.1',
  ports: [{ name: 'http', port: 80, targetPort: 8080 }],
  selector: { app: 'bench' },
};
const SLICES = '/weft/endpointslices/default/';
const SAMPLE_CAP_MS = 30_000;
const WRITERS = 64;
const CLOCK_TICKS_PER_S = 100;

/** A distinct pod address per index, outside the lab's pod network (nothing answers it). */
function ipOf(i: number): string {
  return `10.${200 + Math.floor(i / 62_500)}.${Math.floor((i % 62_500) / 250)}.${(i % 250) + 1}`;
}

function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return (r.stdout || r.stderr || 'unknown').trim().split('\n')[0] ?? 'unknown';
}

/** `nft monitor` in every node: the time each add of an element reaches us, by endpoint IP. */
class KernelWatch {
  readonly #children: ChildProcess[] = [];
  readonly #waiters: { ip: string; node: string; resolve: (at: number) => void }[] = [];
  /** The last lines seen (any), to say what the monitor saw when a sample times out. */
  readonly recent: string[] = [];

  constructor(nodes: readonly LabNode[]) {
    for (const n of nodes) {
      const child = spawn(
        'ip',
        // nft writes to a pipe through stdio: line-buffer it, or events arrive in 4 KiB lumps.
        [
          'netns',
          'exec',
          n.netns,
          'setpriv',
          '--pdeathsig',
          'KILL',
          '--',
          'stdbuf',
          '-oL',
          'nft',
          'monitor',
          'elements',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      this.#children.push(child);
      child.stderr?.on('data', (b: Buffer) => this.#remember(`${n.name} stderr: ${b.toString().trim()}`));
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        this.#remember(`${n.name}: ${line}`);
        // Any element of weft's table that names the address marks the transaction that added
        // the endpoint (nft commits it whole). The endpoint map's own lines cannot be relied on:
        // nft 1.0.6's monitor loses track of that map ("Unable to cache set_elem") once weft
        // rewrites its buckets, while the hairpin set's element comes through.
        if (!line.startsWith('add element ip weft ')) return;
        const at = Date.now();
        for (let i = this.#waiters.length - 1; i >= 0; i--) {
          const w = this.#waiters[i];
          if (w && w.node === n.name && new RegExp(`[ {]${w.ip.replaceAll('.', '\\.')}[ }]`).test(line)) {
            this.#waiters.splice(i, 1);
            w.resolve(at);
          }
        }
      });
    }
  }

  #remember(line: string): void {
    this.recent.push(line.slice(0, 300));
    if (this.recent.length > 20) this.recent.shift();
  }

  /** Resolves with the time `ip` was added on `node`'s map (register before the write). */
  added(node: string, ip: string): Promise<number> {
    return new Promise((resolve) => this.#waiters.push({ ip, node, resolve }));
  }

  close(): void {
    for (const c of this.#children) if (c.pid) process.kill(c.pid, 'SIGKILL');
  }
}

/** utime + stime of a process, seconds. */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS_PER_S;
}

/** VmRSS and VmHWM of a process, MiB. */
function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

async function writeAll(count: number, write: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      for (let i = next++; i < count; i = next++) await write(i);
    }),
  );
}

/** Endpoints of the bench Service's slices now: how many, and how many ready. */
async function sliceState(agent: RegistryAgent): Promise<{ total: number; ready: number }> {
  const { items } = await agent.list(SLICES);
  let total = 0;
  let ready = 0;
  for (const kv of items) {
    const s = JSON.parse(kv.value) as {
      metadata?: { labels?: Record<string, string> };
      endpoints?: { conditions?: { ready?: boolean } }[];
    };
    if (s.metadata?.labels?.['kubernetes.io/service-name'] !== SERVICE.name) continue;
    for (const e of s.endpoints ?? []) {
      total++;
      if (e.conditions?.ready !== false) ready++;
    }
  }
  return { total, ready };
}

async function measureSize(pods: number): Promise<SelectorCase> {
  // The samples bring the Service to `pods` endpoints: weft-proxy refuses a port with more than
  // 10,000 (its budget), so 10,000 must be the most it is ever asked to hold.
  const pre = pods - samples;
  const lab = await Lab.create({ nodes: nodeCount });
  let controller: ManagedProcess | undefined;
  let watch: KernelWatch | undefined;
  let agent: RegistryAgent | undefined;
  let proxy: ProxyCluster | undefined;
  try {
    agent = await RegistryAgent.start(lab, lab.etcdEndpoints.join(','));
    const a = agent;
    const podAt = (i: number, ready = true) =>
      podObject({
        name: `bench-${i}`,
        nodeName: lab.nodes[i % nodeCount]?.name ?? 'node1',
        labels: { app: 'bench' },
        ports: [{ name: 'http', containerPort: 8080 }],
        ready,
      });
    const attachmentAt = (i: number) =>
      attachmentObject({ name: `bench-${i}`, node: lab.nodes[i % nodeCount]?.name ?? 'node1', ip: ipOf(i) });
    await a.put(serviceKey('/weft', 'default', SERVICE.name), serviceObject(SERVICE).value);
    const tw = Date.now();
    await writeAll(pre, async (i) => {
      const p = podAt(i);
      const at = attachmentAt(i);
      await a.put(p.key, p.value);
      await a.put(at.key, at.value);
    });
    console.log(`selector ${pods}: ${pre} pods written in ${((Date.now() - tw) / 1000).toFixed(1)} s`);

    proxy = await ProxyCluster.create(lab, { mode: 'nftables' });
    const tStart = Date.now();
    // These nodes run no weft-flanneld, so no status record: keep them ready all along.
    const cluster = await ControllerCluster.create(lab, { args: ['--node-monitor-grace-period=1h'] });
    controller = cluster.start(lab.nodes[0] as LabNode).process;
    const ctl = controller;
    let firstProgrammingMs: number | null = null;
    try {
      await waitFor(
        async () => {
          if (!ctl.running) throw new Error(`weft-controller exited; see ${ctl.logFile}`);
          const counts = await Promise.all(
            lab.nodes.map(async (n) => (await kernelEndpoints(lab, n, SERVICE.clusterIP, 80)).length),
          );
          return counts.every((c) => c === pre);
        },
        { what: `${pre} endpoints in every node's nftables`, timeoutMs: 600_000, intervalMs: 1000 },
      );
      firstProgrammingMs = Date.now() - tStart;
    } catch (err) {
      return {
        pods,
        firstProgrammingMs: null,
        latency: summarize([], 0),
        controller: null,
        note: `not every pod was programmed: ${messageOf(err)}`,
      };
    }
    console.log(
      `selector ${pods}: every node programmed ${firstProgrammingMs} ms after the controller started`,
    );

    watch = new KernelWatch(lab.nodes);
    const lat: number[] = [];
    let timeouts = 0;
    for (let k = 0; k < samples; k++) {
      // Wait out --min-sync-period (1 s) after the last change.
      await sleep(1300);
      const i = pre + k;
      const p = podAt(i);
      const at = attachmentAt(i);
      const seen = lab.nodes.map((n) => watch?.added(n.name, ipOf(i)) ?? Promise.resolve(0));
      await a.put(p.key, p.value);
      const { t } = await a.put(at.key, at.value);
      const all = Promise.all(seen);
      const r = await Promise.race([all, sleep(SAMPLE_CAP_MS).then(() => undefined)]);
      if (!r) {
        timeouts++;
        console.warn(
          `selector ${pods}: sample ${k} timed out; the monitors saw:\n${watch.recent.join('\n')}`,
        );
        continue;
      }
      // The monitor saw the transaction; the map must hold the endpoint now on every node.
      const there = await Promise.all(
        lab.nodes.map(async (n) =>
          (await kernelEndpoints(lab, n, SERVICE.clusterIP, 80)).includes(`${ipOf(i)}:8080`),
        ),
      );
      if (!there.every(Boolean)) {
        timeouts++;
        console.warn(`selector ${pods}: sample ${k}: seen by the monitor but not in every node's map`);
        continue;
      }
      lat.push(Math.max(...r) - t);
    }
    const latency = summarize(lat, timeouts);
    console.log(
      `selector ${pods}: latency median ${latency.medianMs} ms, p90 ${latency.p90Ms} ms, p99 ${latency.p99Ms} ms ` +
        `(${lat.length} samples, ${timeouts} timed out)`,
    );

    // The controller's cost: `changes` writes, each flipping one pod's Ready condition.
    const total = pods;
    const flipped = Math.min(total, Math.floor(changes / 2));
    const finalReady = new Map<number, boolean>();
    for (let j = 0; j < changes; j++) finalReady.set(j % flipped, Math.floor(j / flipped) % 2 === 1);
    const expectReady = total - [...finalReady.values()].filter((v) => !v).length;
    await sleep(1500);
    const pid = ctl.pid ?? 0;
    const before = memoryOf(pid);
    const cpu0 = cpuSecondsOf(pid);
    const t0 = Date.now();
    // In rounds, so a pod's writes land in order: round r sets Ready to (r odd).
    for (let round = 0; round * flipped < changes; round++) {
      const n = Math.min(flipped, changes - round * flipped);
      await writeAll(n, async (idx) => {
        const p = podAt(idx, round % 2 === 1);
        await a.put(p.key, p.value);
      });
    }
    let cost: ControllerCost | null = null;
    try {
      await waitFor(
        async () => {
          const s = await sliceState(a);
          return s.total === total && s.ready === expectReady;
        },
        { what: `the slices to show the last of ${changes} changes`, timeoutMs: 300_000, intervalMs: 250 },
      );
      const wall = (Date.now() - t0) / 1000;
      const cpu = cpuSecondsOf(pid) - cpu0;
      const after = memoryOf(pid);
      cost = {
        changes,
        cpuSeconds: Math.round(cpu * 100) / 100,
        wallSeconds: Math.round(wall * 100) / 100,
        cpuSecondsPer1000: Math.round(((cpu * 1000) / changes) * 1000) / 1000,
        wallSecondsPer1000: Math.round(((wall * 1000) / changes) * 1000) / 1000,
        rssBeforeMiB: Math.round(before.rss * 10) / 10,
        rssAfterMiB: Math.round(after.rss * 10) / 10,
        peakMiB: Math.round(after.hwm * 10) / 10,
      };
      console.log(
        `selector ${pods}: ${changes} changes: controller CPU ${cost.cpuSeconds} s, wall ${cost.wallSeconds} s, ` +
          `RSS ${cost.rssBeforeMiB} → ${cost.rssAfterMiB} MiB (peak ${cost.peakMiB})`,
      );
    } catch (err) {
      return {
        pods,
        firstProgrammingMs,
        latency,
        controller: null,
        note: `controller cost: ${messageOf(err)}`,
      };
    }
    return { pods, firstProgrammingMs, latency, controller: cost };
  } finally {
    watch?.close();
    proxy?.close();
    agent?.close();
    await lab.teardown();
  }
}

const started = Date.now();
const idle = idleState(loadavg(), cpus().length);
if (idle.busy) {
  const msg = `load average ${idle.loadAverage.join(' / ')} is ${idle.perCore} per core (above 0.5)`;
  if (values['require-idle']) {
    console.error(`selector: ${msg}: refusing to measure (--require-idle)`);
    process.exit(3);
  }
  console.warn(`selector: ${msg}: the results are marked busy`);
}
const cases: SelectorCase[] = [];
for (const n of sizes) cases.push(await measureSize(n));
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version?: string };
const results: SelectorResults = {
  benchmark: 'selector',
  date: new Date(started).toISOString(),
  seconds: Math.round((Date.now() - started) / 1000),
  machine: { ...machineInfo(), loadAverage: idle.loadAverage },
  versions: {
    weft: pkg.version ?? 'unknown',
    commit: versionOf('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']),
    etcd: versionOf('etcd', ['--version']),
  },
  idle,
  nodes: nodeCount,
  samplesPerSize: samples,
  quick,
  cases,
};
console.log(`wrote ${await writeResults(values.out, results)}`);

/**
 * `node dist/bench/relay.js` (issue 5 §6): the userspace proxy's TCP relay. In one namespace of
 * its own, iperf3 and a request/response client reach one server four ways, in the same run:
 *
 * - **direct**: no relay, the floor every relay is measured against;
 * - **haproxy**: Debian's HAProxy in TCP mode with `option splice-auto` (the peer);
 * - **native**: weft's userspace proxier through a ClusterIP, bytes moved by the addon's splice relay;
 * - **node**: the same proxier with the Node stream relay (what runs when the addon is missing).
 *
 * Figures: throughput (iperf3, receiver side), request/response latency p50/p99 of 64-byte
 * round trips over one connection, and the relay process's CPU time per GB moved.
 *
 * The outer process creates the namespace and re-runs this file inside it (Node cannot setns).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineInfo, writeResults } from './harness.js';
import { execRunner } from '../src/exec/index.js';
import { silentLogger } from '../src/log/index.js';
import { buildServicePorts, parseEndpointSlice, parseService } from '../src/proxy/model/index.js';
import { createNodeRelay, createUserspaceProxier, loadRelay } from '../src/proxy/userspace/index.js';

/** One contender's figures. */
export interface RelayCase {
  name: 'direct' | 'haproxy' | 'native' | 'node';
  /** iperf3 receiver throughput, Gbit/s. */
  gbps: number | null;
  /** Round-trip latency of 64-byte request/response over one connection, µs. */
  p50Us: number | null;
  p99Us: number | null;
  /** CPU seconds the relay process spent per GB moved (null: no relay process). */
  cpuSecondsPerGb: number | null;
  note?: string;
}

/** bench/results/relay.json */
export interface RelayResults {
  benchmark: 'relay';
  date: string;
  machine: ReturnType<typeof machineInfo>;
  seconds: number;
  roundTrips: number;
  cases: RelayCase[];
}

const execFileP = promisify(execFile);
const SERVER_PORT = 5201;
const ECHO_PORT = 7000;
const HAPROXY_PORT = 6000;
const HAPROXY_ECHO_PORT = 6001;
const CLUSTER_IP = '10.96.0.1';
const SECONDS = Number(process.env.WEFT_BENCH_RELAY_SECONDS ?? 5);
const ROUND_TRIPS = 5000;
const LATENCY_RUNS = 5;

/** A ping-pong client: N round trips of 64 bytes; prints {p50Us, p99Us}. */
const LATENCY_JS = `import { connect } from 'node:net';
const [host, port, n] = process.argv.slice(2);
const sock = connect({ host, port: Number(port), noDelay: true });
const msg = Buffer.alloc(64, 1);
const times = [];
let start = 0, got = 0, left = Number(n);
sock.on('connect', () => { start = process.hrtime.bigint(); sock.write(msg); });
sock.on('data', (d) => {
  got += d.length;
  if (got < 64) return;
  got = 0;
  times.push(Number(process.hrtime.bigint() - start) / 1000);
  if (--left === 0) {
    times.sort((a, b) => a - b);
    const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
    console.log(JSON.stringify({ p50Us: q(0.5), p99Us: q(0.99) }));
    sock.destroy();
    return;
  }
  start = process.hrtime.bigint();
  sock.write(msg);
});
sock.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

const ECHO_JS = `import { createServer } from 'node:net';
createServer((s) => { s.setNoDelay(true); s.pipe(s); }).listen(Number(process.argv[2]), '127.0.0.1', () => console.log('ready'));
`;

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function cpuOfPid(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function waitLine(child: ChildProcess, re: RegExp): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no ${re} from child`)), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (re.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/** Runs a client without blocking the event loop, which the proxier under test needs. */
async function run(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 1 << 24, timeout: (SECONDS + 60) * 1000 });
  return stdout;
}

async function iperf(host: string, port: number): Promise<{ gbps: number; bytes: number }> {
  const out = await run('iperf3', ['-c', host, '-p', String(port), '-t', String(SECONDS), '-J']);
  const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
  return { gbps: j.end.sum_received.bits_per_second / 1e9, bytes: j.end.sum_received.bytes };
}

/** Median p50 and p99 of LATENCY_RUNS runs: one run's percentiles move with the machine's noise. */
async function latency(dir: string, host: string, port: number): Promise<{ p50Us: number; p99Us: number }> {
  const runs: { p50Us: number; p99Us: number }[] = [];
  for (let i = 0; i < LATENCY_RUNS; i++) {
    const out = await run('node', [join(dir, 'latency.mjs'), host, String(port), String(ROUND_TRIPS)]);
    runs.push(JSON.parse(out) as { p50Us: number; p99Us: number });
  }
  const mid = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? 0;
  return { p50Us: mid(runs.map((r) => r.p50Us)), p99Us: mid(runs.map((r) => r.p99Us)) };
}

async function inner(outFile: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-relay-bench-'));
  const children: ChildProcess[] = [];
  try {
    writeFileSync(join(dir, 'latency.mjs'), LATENCY_JS);
    writeFileSync(join(dir, 'echo.mjs'), ECHO_JS);
    sh('ip', ['link', 'set', 'lo', 'up']);
    // A route for the ClusterIP: nat OUTPUT runs after the first routing decision.
    sh('ip', ['link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']);
    sh('ip', ['addr', 'add', '10.1.0.1/24', 'dev', 'v0']);
    sh('ip', ['link', 'set', 'v0', 'up']);
    sh('ip', ['link', 'set', 'v1', 'up']);
    sh('ip', ['route', 'add', 'default', 'via', '10.1.0.2']);

    const iperfServer = spawn('iperf3', ['-s', '-p', String(SERVER_PORT), '-B', '127.0.0.1'], {
      stdio: 'ignore',
    });
    children.push(iperfServer);
    const echo = spawn('node', [join(dir, 'echo.mjs'), String(ECHO_PORT)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(echo);
    await waitLine(echo, /ready/);
    await new Promise((r) => setTimeout(r, 300));

    const cases: RelayCase[] = [];
    // direct
    {
      const t = await iperf('127.0.0.1', SERVER_PORT);
      const l = await latency(dir, '127.0.0.1', ECHO_PORT);
      cases.push({ name: 'direct', gbps: t.gbps, ...l, cpuSecondsPerGb: null });
    }
    // haproxy
    {
      const cfg = join(dir, 'haproxy.cfg');
      writeFileSync(
        cfg,
        [
          'global',
          '  maxconn 1000',
          'defaults',
          '  mode tcp',
          '  option splice-auto',
          '  timeout connect 5s',
          '  timeout client 60s',
          '  timeout server 60s',
          `listen iperf`,
          `  bind 127.0.0.1:${HAPROXY_PORT}`,
          `  server s1 127.0.0.1:${SERVER_PORT}`,
          `listen echo`,
          `  bind 127.0.0.1:${HAPROXY_ECHO_PORT}`,
          `  server s1 127.0.0.1:${ECHO_PORT}`,
          '',
        ].join('\n'),
      );
      const hap = spawn('haproxy', ['-db', '-f', cfg], { stdio: 'ignore' });
      children.push(hap);
      await new Promise((r) => setTimeout(r, 500));
      const pid = hap.pid ?? 0;
      const c0 = cpuOfPid(pid);
      const t = await iperf('127.0.0.1', HAPROXY_PORT);
      const cpu = cpuOfPid(pid) - c0;
      const l = await latency(dir, '127.0.0.1', HAPROXY_ECHO_PORT);
      cases.push({ name: 'haproxy', gbps: t.gbps, ...l, cpuSecondsPerGb: cpu / (t.bytes / 1e9) });
      hap.kill('SIGKILL');
    }
    // the userspace proxier, native then node relay
    for (const name of ['native', 'node'] as const) {
      const relay = name === 'native' ? loadRelay(silentLogger()) : createNodeRelay();
      if (name === 'native' && relay.kind !== 'native') {
        cases.push({
          name,
          gbps: null,
          p50Us: null,
          p99Us: null,
          cpuSecondsPerGb: null,
          note: 'addon not built',
        });
        continue;
      }
      const proxier = await createUserspaceProxier(
        {
          family: 4,
          nodeName: 'bench',
          clusterCidr: undefined,
          masqueradeAll: false,
          nodePortAddresses: [],
          runner: execRunner(),
          log: silentLogger(),
        },
        { relay },
      );
      const svc = (n: string, port: number) =>
        parseService(
          `/weft/services/default/${n}`,
          'default',
          n,
          JSON.stringify({ spec: { clusterIP: CLUSTER_IP, ports: [{ name: n, port }] } }),
        );
      const slice = (n: string, port: number) =>
        parseEndpointSlice(
          `/weft/endpointslices/default/${n}`,
          'default',
          n,
          JSON.stringify({
            metadata: { labels: { 'kubernetes.io/service-name': n } },
            addressType: 'IPv4',
            endpoints: [{ addresses: ['127.0.0.1'] }],
            ports: [{ name: n, port }],
          }),
        );
      const servicePorts = buildServicePorts(
        [svc('iperf', SERVER_PORT), svc('echo', ECHO_PORT)],
        [slice('iperf', SERVER_PORT), slice('echo', ECHO_PORT)],
        { family: 4, nodeName: 'bench' },
      );
      await proxier.sync({ servicePorts, changed: undefined });
      const c0 = selfCpu();
      const t = await iperf(CLUSTER_IP, SERVER_PORT);
      const cpu = selfCpu() - c0;
      const l = await latency(dir, CLUSTER_IP, ECHO_PORT);
      cases.push({ name, gbps: t.gbps, ...l, cpuSecondsPerGb: cpu / (t.bytes / 1e9) });
      await proxier.cleanup();
      await proxier.close();
      await relay.close();
    }
    const results: RelayResults = {
      benchmark: 'relay',
      date: new Date().toISOString(),
      machine: machineInfo(),
      seconds: SECONDS,
      roundTrips: ROUND_TRIPS,
      cases,
    };
    writeFileSync(outFile, JSON.stringify(results));
  } finally {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

async function outer(): Promise<void> {
  const ns = `wt-${process.pid}-${Math.random().toString(16).slice(2, 8)}-benchrelay`;
  const out = join(mkdtempSync(join(tmpdir(), 'weft-relay-')), 'out.json');
  sh('ip', ['netns', 'add', ns]);
  try {
    const r = spawnSync(
      'ip',
      ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--inner', out],
      { stdio: 'inherit', env: process.env },
    );
    if (r.status !== 0) throw new Error(`relay benchmark failed (exit ${r.status})`);
    const results = JSON.parse(readFileSync(out, 'utf8')) as RelayResults;
    for (const c of results.cases) {
      console.log(
        `relay ${c.name.padEnd(8)} ${c.gbps?.toFixed(2) ?? '-'} Gbit/s  p50 ${c.p50Us?.toFixed(0) ?? '-'} µs  ` +
          `p99 ${c.p99Us?.toFixed(0) ?? '-'} µs  cpu ${c.cpuSecondsPerGb?.toFixed(2) ?? '-'} s/GB ${c.note ?? ''}`,
      );
    }
    console.log(`wrote ${await writeResults('relay', results)}`);
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

const i = process.argv.indexOf('--inner');
if (i >= 0) await inner(process.argv[i + 1] ?? '/tmp/relay.json');
else await outer();

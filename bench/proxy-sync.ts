/**
 * `make bench`, proxy part (`node dist/bench/proxy-sync.js`): how long weft-proxy takes to
 * program services into the kernel, against kube-proxy's nftables layout measured in the same
 * run (issue 4 §9).
 *
 * For 100, 1,000, 3,000 and 10,000 services × 2 and 10 endpoints, and for each of nftables,
 * iptables and userspace mode and the kube-proxy-layout peer, each in a fresh network namespace:
 * a full sync into the empty namespace, a one-endpoint change and a one-service add (partial
 * syncs). Small cases are repeated and the median reported; every measurement is capped
 * (`--timeout-s`) and reported as a timeout instead of hanging. Then the daemon's RSS at 10,000
 * services (bench/daemon-rss.ts). Results: bench/results/proxy-sync.json;
 * `node dist/bench/report.js` renders the tables and charts.
 *
 * Needs root (namespaces); never touches the root namespace's firewall.
 *
 * Options: --sizes 100,1000,3000,10000 --endpoints 2,10 --modes nftables,iptables,userspace,kube-nft
 * --timeout-s 180 --full-repeats 3 (cases of ≤ 1,000 services; larger ones run once)
 * --repeats 5 (partial syncs; 3 after a full sync over 20 s) --rss-services 10000 (0 skips the RSS measurement)
 * --rss-registries etcd,redis (the registries the daemon reads from, one measurement each)
 * --out proxy-sync
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { messageOf } from '../src/errors/index.js';
import type { CommandRunner } from '../src/exec/index.js';
import type { ServicePort } from '../src/proxy/model/index.js';
import { cleanupStale, createNetns, deleteNetns, netnsName, newRunId, runDir } from '../test/lab/netns.js';
import {
  elapsedMs,
  fromSamples,
  machineInfo,
  median,
  missing,
  netnsRunner,
  countingRunner,
  cpuTimeMs,
  timed,
  writeResults,
  type CountingRunner,
  type Measurement,
} from './harness.js';
import { BENCH_MODES, createContender, type BenchMode, type Contender, type SelfTimed } from './proxiers.js';
import {
  fmtMeasurement,
  fmtMs,
  targetFigures,
  type DaemonRss,
  type ProxySyncCase,
  type ProxySyncResults,
} from './proxy-sync-results.js';
import { replacementIp, servicePortOf, workload } from './workload.js';

const DEFAULT_SIZES = '100,1000,3000,10000';
/** A full sync slower than this is measured once, and its partial syncs fewer times. */
const SLOW_MS = 20_000;

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: DEFAULT_SIZES },
    endpoints: { type: 'string', default: '2,10' },
    modes: { type: 'string', default: BENCH_MODES.join(',') },
    'timeout-s': { type: 'string', default: '180' },
    'full-repeats': { type: 'string', default: '3' },
    repeats: { type: 'string', default: '5' },
    'rss-services': { type: 'string', default: '10000' },
    'rss-registries': { type: 'string', default: 'etcd,redis' },
    out: { type: 'string', default: 'proxy-sync' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (values.help) {
  console.log(
    `usage: node dist/bench/proxy-sync.js [--sizes ${DEFAULT_SIZES}] [--endpoints 2,10] ` +
      `[--modes ${BENCH_MODES.join(',')}] [--timeout-s 180] [--full-repeats 3] [--repeats 5] ` +
      '[--rss-services 10000] [--rss-registries etcd,redis] [--out proxy-sync]',
  );
  process.exit(0);
}

function numbers(flag: string, text: string): number[] {
  if (text.trim() === '') return [];
  const list = text.split(',').map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 0)) {
    console.error(`proxy-sync: --${flag} must be a comma-separated list of integers, got ${text}`);
    process.exit(2);
  }
  return list;
}

const sizes = numbers('sizes', values.sizes);
const endpointCounts = numbers('endpoints', values.endpoints);
const [timeoutS = 180] = numbers('timeout-s', values['timeout-s']);
const [fullRepeats = 3] = numbers('full-repeats', values['full-repeats']);
const [partialRepeats = 5] = numbers('repeats', values.repeats);
const [rssServices = 10_000] = numbers('rss-services', values['rss-services']);
const modes = values.modes
  .split(',')
  .map((m) => m.trim())
  .filter(Boolean) as BenchMode[];
for (const m of modes) {
  if (!BENCH_MODES.includes(m)) {
    console.error(`proxy-sync: unknown mode ${m} (have ${BENCH_MODES.join(', ')})`);
    process.exit(2);
  }
}
const rssRegistries = values['rss-registries']
  .split(',')
  .map((r) => r.trim())
  .filter(Boolean) as ('etcd' | 'redis')[];
for (const r of rssRegistries) {
  if (r !== 'etcd' && r !== 'redis') {
    console.error(`proxy-sync: --rss-registries takes etcd and/or redis, got ${r}`);
    process.exit(2);
  }
}
const capMs = timeoutS * 1000;
const runId = newRunId();
const live = new Set<string>();
let nsCounter = 0;

function log(msg: string): void {
  console.log(`[proxy-sync ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

async function freshNetns(): Promise<string> {
  const ns = netnsName(runId, `bench${nsCounter++}`);
  live.add(ns);
  await createNetns(ns);
  return ns;
}

async function dropNetns(ns: string): Promise<void> {
  await deleteNetns(ns);
  live.delete(ns);
}

/** What `ip netns exec` adds to every command (each figure includes it once per command). */
async function netnsExecOverhead(): Promise<{ wallMs: number; cpuMs: number }> {
  const ns = await freshNetns();
  try {
    const inNs = netnsRunner(ns, 10_000);
    const through: number[] = [];
    const plain: number[] = [];
    let cpuThrough = 0;
    let cpuPlain = 0;
    const rounds = 20;
    for (let i = 0; i < rounds; i++) {
      let s = process.hrtime.bigint();
      let c = cpuTimeMs();
      await inNs('true', []);
      through.push(elapsedMs(s));
      cpuThrough += cpuTimeMs() - c;
      s = process.hrtime.bigint();
      c = cpuTimeMs();
      await spawnTrue();
      plain.push(elapsedMs(s));
      cpuPlain += cpuTimeMs() - c;
    }
    const r2 = (v: number): number => Math.max(0, Math.round(v * 100) / 100);
    return { wallMs: r2(median(through) - median(plain)), cpuMs: r2((cpuThrough - cpuPlain) / rounds) };
  } finally {
    await dropNetns(ns);
  }
}

function spawnTrue(): Promise<void> {
  return new Promise((resolve) => {
    const c = spawn('true', [], { stdio: 'ignore' });
    c.on('close', () => resolve());
    c.on('error', () => resolve());
  });
}

/** Checks that the kernel holds `needle` (the last change) in the namespace's rules. */
async function verify(mode: BenchMode, runner: CommandRunner, needle: string): Promise<boolean> {
  const [cmd, args] = mode === 'iptables' ? ['iptables-save', ['-t', 'nat']] : ['nft', ['list', 'ruleset']];
  const res = await runner(cmd, args as string[]);
  return res.code === 0 && res.stdout.includes(needle);
}

/** Repeats a partial sync `partialRepeats` times; `step(r)` returns the change of repetition r. */
async function measurePartial(
  contender: Contender,
  counter: CountingRunner,
  state: { current: Map<string, ServicePort> },
  step: (r: number) => ServicePort,
  repeats: number,
): Promise<Measurement> {
  const samples: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const sp = step(r);
    const before = state.current.get(sp.id);
    const next = new Map(state.current);
    next.set(sp.id, sp);
    counter.calls = 0;
    let self: SelfTimed | void = undefined;
    const t = await timed(async () => {
      self = await contender.partialSync(next, sp.id, before);
    }, capMs);
    if (!t.ok)
      return samples.length > 0
        ? { ...fromSamples(samples, cpu), note: `then ${t.status}: ${t.note}` }
        : missing(t.status, t.note);
    const own = adopt(t, self, counter);
    samples.push(own.ms);
    cpu.push(own.cpuMs);
    state.current = next;
  }
  return { ...fromSamples(samples, cpu), commands: counter.calls };
}

/**
 * The figures of one timed sync: the contender's own when it timed itself (a worker process,
 * whose CPU time this process cannot see), else those measured here.
 */
function adopt(
  t: { ms: number; cpuMs: number },
  self: SelfTimed | void,
  counter: CountingRunner,
): { ms: number; cpuMs: number } {
  if (!self) return t;
  counter.calls = self.commands;
  return { ms: self.ms, cpuMs: self.cpuMs };
}

async function runCase(
  mode: BenchMode,
  n: number,
  e: number,
  map: Map<string, ServicePort>,
): Promise<ProxySyncCase> {
  const out: ProxySyncCase = {
    mode,
    services: n,
    endpointsPerService: e,
    fullSync: missing('skipped', 'not run'),
    endpointChange: missing('skipped', 'full sync failed'),
    serviceAdd: missing('skipped', 'full sync failed'),
    verified: null,
  };
  const repeats = n <= 1000 ? Math.max(1, fullRepeats) : 1;
  const samples: number[] = [];
  const cpu: number[] = [];
  let ns: string | undefined;
  let contender: Contender | undefined;
  let counter: CountingRunner | undefined;
  try {
    // A case slow enough to measure well once is not repeated.
    for (let r = 0; r < repeats && !(samples[0] !== undefined && samples[0] > SLOW_MS); r++) {
      if (ns) {
        await contender?.close();
        await dropNetns(ns);
      }
      ns = await freshNetns();
      counter = countingRunner(netnsRunner(ns, capMs));
      contender = await createContender(mode, counter.runner, { netns: ns, timeoutMs: capMs });
      const c = contender;
      const cannot = r === 0 ? await c.capacity?.(n, partialRepeats) : undefined;
      if (cannot) {
        out.fullSync = missing('skipped', cannot);
        out.endpointChange = missing('skipped', 'size not run');
        out.serviceAdd = missing('skipped', 'size not run');
        log(`${mode} ${n}×${e}: skipped (${cannot})`);
        return out;
      }
      counter.calls = 0;
      let self: SelfTimed | void = undefined;
      const t = await timed(async () => {
        self = await c.fullSync(map);
      }, capMs);
      if (!t.ok) {
        out.fullSync = missing(t.status, t.note);
        log(`${mode} ${n}×${e}: full sync ${t.status} (${t.note})`);
        return out;
      }
      const own = adopt(t, self, counter);
      samples.push(own.ms);
      cpu.push(own.cpuMs);
    }
    out.fullSync = { ...fromSamples(samples, cpu), commands: counter?.calls ?? 0 };
    log(
      `${mode} ${n}×${e}: full sync ${fmtMeasurement(out.fullSync)} [${out.fullSync.samples.join(', ')}], ` +
        `CPU ${fmtMs(out.fullSync.cpuMedianMs)}`,
    );
    if (!contender || !ns || !counter) return out;
    const runner = netnsRunner(ns, capMs);
    const state = { current: map };
    const repeatsHere = (samples[0] ?? 0) > SLOW_MS ? Math.min(partialRepeats, 3) : partialRepeats;
    // Spread the changed services over the table so no one spot is measured.
    out.endpointChange = await measurePartial(
      contender,
      counter,
      state,
      (r) => servicePortOf((r * 7919 + 13) % n, e, { firstAddress: replacementIp(r) }),
      repeatsHere,
    );
    log(
      `${mode} ${n}×${e}: one-endpoint change ${fmtMeasurement(out.endpointChange)}, ` +
        `CPU ${fmtMs(out.endpointChange.cpuMedianMs)}`,
    );
    if (out.endpointChange.status === 'ok' && !contender.verify) {
      out.verified = await verify(mode, runner, replacementIp(out.endpointChange.samples.length - 1));
    }
    out.serviceAdd = await measurePartial(
      contender,
      counter,
      state,
      (r) => servicePortOf(n + r, e),
      repeatsHere,
    );
    // Contenders whose rules name no endpoint (userspace) are checked on the last added service.
    if (out.serviceAdd.status === 'ok' && contender.verify) {
      out.verified = await contender.verify(servicePortOf(n + out.serviceAdd.samples.length - 1, e));
    }
    log(
      `${mode} ${n}×${e}: one-service add ${fmtMeasurement(out.serviceAdd)}, CPU ${fmtMs(out.serviceAdd.cpuMedianMs)}`,
    );
    return out;
  } catch (err) {
    const note = messageOf(err).slice(0, 500);
    log(`${mode} ${n}×${e}: error: ${note}`);
    if (out.fullSync.status === 'skipped') out.fullSync = missing('error', note);
    return out;
  } finally {
    await contender?.close().catch(() => {});
    if (ns) await dropNetns(ns);
  }
}

/** Runs bench/daemon-rss.js inside a fresh namespace and reads its JSON answer. */
async function daemonRss(services: number, e: number, registry: 'etcd' | 'redis'): Promise<DaemonRss> {
  const base: DaemonRss = { status: 'skipped', services, endpointsPerService: e, mode: 'nftables', registry };
  if (services === 0) return { ...base, note: '--rss-services 0' };
  const ns = await freshNetns();
  try {
    const script = fileURLToPath(new URL('./daemon-rss.js', import.meta.url));
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const res = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(
        'ip',
        [
          'netns',
          'exec',
          ns,
          'setpriv',
          '--pdeathsig',
          'KILL',
          '--',
          process.execPath,
          script,
          '--services',
          String(services),
          '--endpoints',
          String(e),
          '--run-id',
          runId,
          '--registry',
          registry,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], env },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => {
        stdout += b.toString();
        for (const line of b.toString().split('\n')) if (line.startsWith('[')) console.log(line);
      });
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20 * 60_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 128, stdout, stderr });
      });
    });
    const last = res.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop();
    if (!last)
      return { ...base, status: 'error', note: `exit ${res.code}: ${res.stderr.trim().slice(-500)}` };
    return JSON.parse(last) as DaemonRss;
  } catch (err) {
    return { ...base, status: 'error', note: messageOf(err) };
  } finally {
    await dropNetns(ns);
  }
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('proxy-sync: needs root (it creates network namespaces)');
    return 2;
  }
  const started = process.hrtime.bigint();
  const stop = (): void => {
    void (async () => {
      for (const ns of [...live]) await deleteNetns(ns);
      rmSync(runDir(runId), { recursive: true, force: true });
      process.exit(130);
    })();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await cleanupStale();

  const results: ProxySyncResults = {
    benchmark: 'proxy-sync',
    date: new Date().toISOString(),
    machine: machineInfo(),
    config: {
      sizes,
      endpoints: endpointCounts,
      modes,
      timeoutS,
      fullRepeatsSmall: fullRepeats,
      partialRepeats,
    },
    netnsExecOverheadMs: 0,
    netnsExecOverheadCpuMs: 0,
    cases: [],
    daemonRss: [],
    durationS: 0,
  };
  log(
    `machine: ${results.machine.cpuModel}, ${results.machine.cores} cores, kernel ${results.machine.kernel}`,
  );
  const overhead = await netnsExecOverhead();
  results.netnsExecOverheadMs = overhead.wallMs;
  results.netnsExecOverheadCpuMs = overhead.cpuMs;
  log(`ip netns exec adds ${overhead.wallMs} ms (CPU ${overhead.cpuMs} ms) per command`);

  for (const n of sizes) {
    for (const e of endpointCounts) {
      const s = process.hrtime.bigint();
      const map = workload(n, e);
      log(`workload ${n}×${e}: ${map.size} service ports built in ${elapsedMs(s).toFixed(0)} ms`);
      for (const mode of modes) {
        results.cases.push(await runCase(mode, n, e, map));
        await writeResults(values.out, results);
      }
    }
  }

  for (const registry of rssRegistries) {
    log(`daemon RSS at ${rssServices} services (${registry})…`);
    const d = await daemonRss(rssServices, 2, registry);
    results.daemonRss.push(d);
    log(`daemon RSS: ${JSON.stringify(d)}`);
    await writeResults(values.out, results);
  }
  rmSync(runDir(runId), { recursive: true, force: true });
  results.durationS = Math.round(elapsedMs(started) / 1000);
  const file = await writeResults(values.out, results);
  log(`results in ${file}`);
  for (const f of targetFigures(results)) {
    log(`${f.label}: ${f.value} (target ${f.target}${f.met === null ? '' : f.met ? ', met' : ', missed'})`);
  }
  return 0;
}

process.exitCode = await main();

/**
 * What every benchmark shares: the machine description recorded with the figures, medians,
 * measurements capped by a timeout, commands run inside a benchmark's own network namespace,
 * and where results live. Benchmarks never touch the root namespace's firewall: every kernel
 * change goes through a runner that enters a namespace the benchmark created.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { execRunner, type CommandRunner } from '../src/exec/index.js';
import { messageOf } from '../src/errors/index.js';

/** The machine a result was measured on. */
export interface MachineInfo {
  cpuModel: string;
  cores: number;
  kernel: string;
  node: string;
  nft: string;
  iptables: string;
  /** 1, 5 and 15 minute load averages when the run started (the machine may be shared). */
  loadAverage: number[];
}

function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return (r.stdout || r.stderr || '').trim().split('\n')[0] ?? 'unknown';
}

/** Describes this machine. */
export function machineInfo(): MachineInfo {
  const c = cpus();
  return {
    cpuModel: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    kernel: release(),
    node: process.version,
    nft: versionOf('nft', ['--version']),
    iptables: versionOf('iptables', ['--version']),
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

/** The repository root: the nearest directory above this file holding package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('bench: no package.json above the benchmark');
    dir = up;
  }
  return dir;
}

/** Where the JSON results of the benchmarks are written. */
export function resultsDir(): string {
  return join(repoRoot(), 'bench', 'results');
}

/**
 * Writes one benchmark's results as `bench/results/<name>.json`, formatted as the repository's
 * prettier config wants (so `make lint` passes on a fresh run); returns the path.
 */
export async function writeResults(name: string, data: unknown): Promise<string> {
  const file = join(resultsDir(), `${name}.json`);
  mkdirSync(dirname(file), { recursive: true });
  const options = (await prettier.resolveConfig(file)) ?? {};
  writeFileSync(file, await prettier.format(JSON.stringify(data, null, 2), { ...options, filepath: file }));
  return file;
}

/** Reads a results file. */
export function readResults(file: string): unknown {
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** The outcome of one measured quantity. */
export interface Measurement {
  /** `ok`: `samples` hold every repetition; otherwise the reason there is no figure. */
  status: 'ok' | 'timeout' | 'error' | 'skipped';
  /** Milliseconds, one per repetition, in the order measured. */
  samples: number[];
  /** Median of `samples`, or null. */
  medianMs: number | null;
  /**
   * CPU time (user + system) of each repetition: the benchmark process's own (rule generation)
   * plus its finished children's (nft, iptables-restore and the kernel work done in their
   * system calls). Unlike wall time it barely depends on what else the machine runs.
   */
  cpuSamples?: number[];
  /** Median of `cpuSamples`. */
  cpuMedianMs?: number | null;
  /** Why the figure is missing (error message, skip reason, the timeout hit). */
  note?: string;
  /** Commands (nft, iptables-restore…) the last repetition ran; each pays a process start. */
  commands?: number;
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** A measurement of `status` without figures. */
export function missing(status: Measurement['status'], note: string): Measurement {
  return { status, samples: [], medianMs: null, note };
}

/** Builds a measurement from wall-time samples and, when given, CPU-time samples. */
export function fromSamples(samples: number[], cpuSamples: number[] = []): Measurement {
  return {
    status: 'ok',
    samples: samples.map(round),
    medianMs: round(median(samples)),
    ...(cpuSamples.length > 0 && {
      cpuSamples: cpuSamples.map(round),
      cpuMedianMs: round(median(cpuSamples)),
    }),
  };
}

/** The result of one timed call. */
export type Timed =
  { ok: true; ms: number; cpuMs: number } | { ok: false; status: 'timeout' | 'error'; note: string };

const CLOCK_TICKS_PER_S = 100;

/** CPU time of this process and of its reaped children so far, in ms. */
export function cpuTimeMs(): number {
  const self = process.cpuUsage();
  let children = 0;
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, cutime 16, cstime 17.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    children = ((Number(f[13]) + Number(f[14])) * 1000) / CLOCK_TICKS_PER_S;
  } catch {
    /* not Linux: own CPU only */
  }
  return (self.user + self.system) / 1000 + children;
}

/**
 * Times `fn`, giving up after `capMs`. A call that times out is abandoned (its commands are
 * killed by the runner's own timeout, and the namespace is deleted by the caller), so a slow
 * mode is reported as a timeout instead of hanging the run.
 */
export async function timed(fn: () => Promise<unknown>, capMs: number): Promise<Timed> {
  const start = process.hrtime.bigint();
  const cpuStart = cpuTimeMs();
  let timer: NodeJS.Timeout | undefined;
  const cap = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), capMs);
  });
  try {
    const r = await Promise.race([fn().then(() => 'done' as const), cap]);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    if (r === 'timeout' || ms > capMs) {
      return { ok: false, status: 'timeout', note: `over ${Math.round(capMs / 1000)} s` };
    }
    return { ok: true, ms, cpuMs: cpuTimeMs() - cpuStart };
  } catch (err) {
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    // A command killed by the runner's timeout surfaces as an error: it is a timeout.
    if (ms >= capMs * 0.98)
      return { ok: false, status: 'timeout', note: `over ${Math.round(capMs / 1000)} s` };
    return { ok: false, status: 'error', note: messageOf(err).slice(0, 500) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A runner whose commands run in `netns` (through `ip netns exec`), each killed after
 * `timeoutMs`.
 */
export function netnsRunner(netns: string, timeoutMs: number): CommandRunner {
  const base = execRunner({ timeoutMs });
  return (cmd, args, input) => base('ip', ['netns', 'exec', netns, cmd, ...args], input);
}

/** A runner that counts the commands it runs (`calls`), for the figures' context. */
export interface CountingRunner {
  runner: CommandRunner;
  calls: number;
}

/** Wraps `inner` to count its commands. */
export function countingRunner(inner: CommandRunner): CountingRunner {
  const c: CountingRunner = {
    calls: 0,
    runner: (cmd, args, input) => {
      c.calls++;
      return inner(cmd, args, input);
    },
  };
  return c;
}

/** Milliseconds since `start` (from `process.hrtime.bigint()`). */
export function elapsedMs(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

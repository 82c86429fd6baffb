/**
 * The selector benchmark's results (bench/results/selector.json) and the pure parts around them:
 * quantiles, the idle check, and the report section of docs/benchmarks.md. Kept apart from
 * bench/selector.ts, which runs labs, so the report and its unit test load no lab code.
 */
import type { MachineInfo } from './harness.js';
import { fmtDate, type SectionInput } from './report-section.js';

/** Latency figures of one size, from its samples (ms). */
export interface LatencySummary {
  /** Every sample, in the order measured; a sample that timed out is left out and counted. */
  samples: number[];
  timeouts: number;
  medianMs: number | null;
  p90Ms: number | null;
  /** Nearest-rank p99: with fewer than 100 samples it is the largest one. */
  p99Ms: number | null;
  maxMs: number | null;
}

/** What the controller cost while pods changed. */
export interface ControllerCost {
  /** Pod writes made (each flips one pod's Ready condition). */
  changes: number;
  /** Controller CPU (user + system) from the first write until its slices showed the last, s. */
  cpuSeconds: number;
  /** Wall time over the same span, s. */
  wallSeconds: number;
  /** `cpuSeconds` per 1,000 changes. */
  cpuSecondsPer1000: number;
  wallSecondsPer1000: number;
  /** VmRSS before the changes (all pods in its cache), MiB. */
  rssBeforeMiB: number;
  /** VmRSS after them, MiB. */
  rssAfterMiB: number;
  /** VmHWM (peak RSS) at the end, MiB. */
  peakMiB: number;
}

/** One size's figures. */
export interface SelectorCase {
  /** Pods selected by the Service once the samples were taken (pre-written ones plus the samples). */
  pods: number;
  /**
   * From the controller's start until every node's nftables held every pre-written pod (all but
   * the samples), ms; or
   * null when it did not within the cap.
   */
  firstProgrammingMs: number | null;
  latency: LatencySummary;
  controller: ControllerCost | null;
  /** Why a figure is missing. */
  note?: string;
}

/** bench/results/selector.json */
export interface SelectorResults {
  benchmark: 'selector';
  date: string;
  seconds: number;
  machine: MachineInfo;
  versions: { weft: string; commit: string; etcd: string };
  idle: IdleState;
  /** Nodes, each running weft-proxy in nftables mode. */
  nodes: number;
  samplesPerSize: number;
  quick: boolean;
  cases: SelectorCase[];
}

/** Load average against the core count, and whether it is above the bar. */
export interface IdleState {
  loadAverage: number[];
  cores: number;
  /** 1-minute load average per core. */
  perCore: number;
  /** Above {@link IDLE_PER_CORE}: the figures are marked as measured on a busy machine. */
  busy: boolean;
}

/** A machine is idle enough when its 1-minute load average is at most this per core. */
export const IDLE_PER_CORE = 0.5;

/** Judges a load average (1, 5, 15 min) on `cores` cores. */
export function idleState(loadAverage: readonly number[], cores: number): IdleState {
  const perCore = (loadAverage[0] ?? 0) / Math.max(1, cores);
  return {
    loadAverage: loadAverage.map((l) => Math.round(l * 100) / 100),
    cores,
    perCore: Math.round(perCore * 100) / 100,
    busy: perCore > IDLE_PER_CORE,
  };
}

/** Nearest-rank quantile (`q` in (0, 1]) of a non-empty list. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) throw new Error('quantile of nothing');
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(q * s.length));
  return s[Math.min(s.length, rank) - 1] as number;
}

const r1 = (v: number): number => Math.round(v * 10) / 10;

/** The summary of a size's samples. */
export function summarize(samples: readonly number[], timeouts: number): LatencySummary {
  if (samples.length === 0) {
    return { samples: [], timeouts, medianMs: null, p90Ms: null, p99Ms: null, maxMs: null };
  }
  return {
    samples: samples.map(r1),
    timeouts,
    medianMs: r1(quantile(samples, 0.5)),
    p90Ms: r1(quantile(samples, 0.9)),
    p99Ms: r1(quantile(samples, 0.99)),
    maxMs: r1(Math.max(...samples)),
  };
}

const int = (n: number): string => n.toLocaleString('en-US');
const fms = (v: number | null | undefined): string =>
  v === null || v === undefined ? '–' : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`;
const f2 = (v: number): string => v.toFixed(2);

/** The section of docs/benchmarks.md. */
export function renderSelector(input: SectionInput): string {
  const r = input.data as SelectorResults;
  const m = r.machine;
  const lines = [
    '## weft-controller: selector to kernel (selector)',
    '',
    `From \`${input.file}\`, measured ${fmtDate(r.date)} in ${Math.round(r.seconds)} s on ${m.cpuModel} ` +
      `(${m.cores} cores), kernel ${m.kernel}, Node ${m.node}, ${m.nft}, ${r.versions.etcd}; weft ` +
      `${r.versions.weft} (${r.versions.commit}). Load average at the start ${r.idle.loadAverage.join(' / ')} ` +
      `(${f2(r.idle.perCore)} per core)` +
      (r.idle.busy
        ? `: **busy** — above ${IDLE_PER_CORE} per core, so every wall time below is inflated by other work.`
        : `, under the ${IDLE_PER_CORE} per core the benchmark asks for.`) +
      (r.quick ? ' **Quick run** (`--quick`): small sizes only, a smoke test rather than figures.' : ''),
    '',
    `A lab of ${r.nodes} nodes, each running weft-proxy in nftables mode, one weft-controller and etcd, ` +
      'each size in a fresh lab. The Service selects `app=bench`; all but the sampled pods (so the size is ' +
      'the count once the samples are in: weft-proxy refuses a port of over 10,000 endpoints) are written ' +
      'straight to the registry (a v1 Pod and the attachment record weft-cni would write) before the ' +
      'daemons start. **Latency**: one more pod is declared, then attached (the attachment write is ' +
      'time zero), and the time until its endpoint is in the ClusterIP map of *every* node’s nftables ' +
      '(the transaction adding it, seen by `nft monitor` in each node, then checked with `nft list map`) ' +
      'is one sample; between samples the run waits out ' +
      'weft-proxy’s `--min-sync-period` (1 s), so a sample is the pipeline (watch, controller, slice ' +
      `write, proxy watch, sync), not the rate limit. ${r.samplesPerSize} samples per size; p99 is ` +
      'nearest-rank, so with fewer than 100 samples it is the largest. **Controller cost**: a burst of ' +
      'pod writes, each flipping one pod’s Ready condition (so every one changes an endpoint), and the ' +
      'controller’s CPU time (user + system, from /proc) and wall time until its slices show the last ' +
      'write, per 1,000 changes; RSS from `/proc/<pid>/status`. The controller runs with ' +
      '`--node-monitor-grace-period=1h` since these nodes run no weft-flanneld.',
    '',
    '| Pods | Samples | Median | p90 | p99 | Max | Every pod programmed after start |',
    '|---|---|---|---|---|---|---|',
    ...r.cases.map(
      (c) =>
        `| ${int(c.pods)} | ${c.latency.samples.length}${c.latency.timeouts ? ` (+${c.latency.timeouts} timed out)` : ''} ` +
        `| ${fms(c.latency.medianMs)} | ${fms(c.latency.p90Ms)} | ${fms(c.latency.p99Ms)} | ${fms(c.latency.maxMs)} ` +
        `| ${fms(c.firstProgrammingMs)} |`,
    ),
    '',
    '| Pods | Pod changes | Controller CPU per 1,000 changes | Wall time per 1,000 changes | RSS before | RSS after | Peak RSS |',
    '|---|---|---|---|---|---|---|',
    ...r.cases.map((c) => {
      const k = c.controller;
      if (!k) return `| ${int(c.pods)} | – | – | – | – | – | – |`;
      return (
        `| ${int(c.pods)} | ${int(k.changes)} | ${f2(k.cpuSecondsPer1000)} s | ${f2(k.wallSecondsPer1000)} s ` +
        `| ${k.rssBeforeMiB.toFixed(1)} MiB | ${k.rssAfterMiB.toFixed(1)} MiB | ${k.peakMiB.toFixed(1)} MiB |`
      );
    }),
    '',
  ];
  const notes = r.cases.filter((c) => c.note);
  if (notes.length) {
    lines.push(...notes.map((c) => `- ${int(c.pods)} pods: ${c.note ?? ''}`), '');
  }
  return lines.join('\n');
}

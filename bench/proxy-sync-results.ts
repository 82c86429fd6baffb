/**
 * The shape of bench/results/proxy-sync.json and the figures issue 4 asks to be reported from it
 * (targets are reported, never asserted).
 */
import type { MachineInfo, Measurement } from './harness.js';
import type { BenchMode } from './proxiers.js';

/** One mode at one workload size. */
export interface ProxySyncCase {
  mode: BenchMode;
  services: number;
  endpointsPerService: number;
  /** Wall time of a full sync into an empty namespace. */
  fullSync: Measurement;
  /** A partial sync after one endpoint of one service was replaced. */
  endpointChange: Measurement;
  /** A partial sync adding one service. */
  serviceAdd: Measurement;
  /** The last change was found in the kernel's ruleset afterwards (null: not checked). */
  verified: boolean | null;
}

/** The daemon's memory once it has programmed the workload. */
export interface DaemonRss {
  status: 'ok' | 'error' | 'skipped';
  services: number;
  endpointsPerService: number;
  mode: string;
  /** Registry backend the daemon read the objects from. */
  registry?: 'etcd' | 'redis';
  /** VmRSS after the first sync, KiB. */
  rssKiB?: number;
  /** VmHWM (peak RSS), KiB. */
  peakRssKiB?: number;
  /** From the daemon's start to its first completed sync. */
  firstSyncMs?: number;
  /** Time to write the objects into etcd (not part of the daemon's figures). */
  loadMs?: number;
  note?: string;
}

/** The whole results file. */
export interface ProxySyncResults {
  benchmark: 'proxy-sync';
  date: string;
  machine: MachineInfo;
  config: {
    sizes: number[];
    endpoints: number[];
    modes: BenchMode[];
    timeoutS: number;
    fullRepeatsSmall: number;
    partialRepeats: number;
  };
  /** Median cost of `ip netns exec` per command, included in every figure. */
  netnsExecOverheadMs: number;
  /** Its CPU time per command. */
  netnsExecOverheadCpuMs?: number;
  cases: ProxySyncCase[];
  /** The first entry (etcd) is the one the issue asks for; later ones use other backends. */
  daemonRss: DaemonRss[];
  durationS: number;
}

/** One reported ratio or figure and its target. */
export interface TargetFigure {
  label: string;
  /** Text of the value (`1.2 s`, `3.1×`, `n/a`). */
  value: string;
  /** The same figure computed from CPU time instead of wall time (`–` when not applicable). */
  cpuValue: string;
  target: string;
  /** True when met, false when missed, null when it could not be computed. */
  met: boolean | null;
}

function find(r: ProxySyncResults, mode: BenchMode, n: number, e: number): ProxySyncCase | undefined {
  return r.cases.find((c) => c.mode === mode && c.services === n && c.endpointsPerService === e);
}

/** Milliseconds as text. */
export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return 'n/a';
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  return `${ms.toFixed(1)} ms`;
}

/** A measurement as table text: the median, or why there is none. */
export function fmtMeasurement(m: Measurement): string {
  if (m.status === 'ok') return fmtMs(m.medianMs);
  return m.status;
}

/** Its CPU-time median as text, or an empty string. */
export function fmtCpu(m: Measurement): string {
  return m.status === 'ok' && m.cpuMedianMs != null ? fmtMs(m.cpuMedianMs) : '';
}

/** `a / b` as a speed-up, or n/a. */
function ratio(slow: Measurement | undefined, fast: Measurement | undefined): number | null {
  if (!slow || !fast || fast.medianMs === null || fast.medianMs <= 0) return null;
  if (slow.status === 'timeout' && fast.status === 'ok') return null;
  if (slow.medianMs === null) return null;
  return slow.medianMs / fast.medianMs;
}

function fmtRatio(r: number | null, slow: Measurement | undefined, capS: number, fast?: Measurement): string {
  if (r !== null) return `${r.toFixed(2)}×`;
  if (slow?.status === 'timeout' && fast?.medianMs) {
    return `> ${((capS * 1000) / fast.medianMs).toFixed(1)}× (peer timed out)`;
  }
  return 'n/a';
}

/** The figures issue 4 asks for, at 10,000 services × 2 endpoints. */
export function targetFigures(r: ProxySyncResults): TargetFigure[] {
  const n = 10_000;
  const nft = find(r, 'nftables', n, 2);
  const ipt = find(r, 'iptables', n, 2);
  const kube = find(r, 'kube-nft', n, 2);
  const full = nft?.fullSync.medianMs ?? null;
  const vsIpt = ratio(ipt?.fullSync, nft?.fullSync);
  const vsKube = ratio(kube?.fullSync, nft?.fullSync);
  const ep = nft?.endpointChange.medianMs ?? null;
  const cpu = (m: Measurement | undefined): Measurement | undefined =>
    m?.cpuMedianMs != null ? { ...m, medianMs: m.cpuMedianMs } : undefined;
  const cpuRatio = (slow: Measurement | undefined): string => {
    const v = ratio(cpu(slow), cpu(nft?.fullSync));
    return v === null ? 'n/a' : `${v.toFixed(2)}×`;
  };
  const timeoutBound = (slow: Measurement | undefined): boolean | null =>
    slow?.status === 'timeout' && full !== null ? r.config.timeoutS * 1000 >= 1.5 * full : null;
  return [
    {
      label: 'nftables full sync, 10,000 services × 2 endpoints',
      value: fmtMs(full),
      cpuValue: fmtMs(nft?.fullSync.cpuMedianMs),
      target: '≤ 1.5 s',
      met: full === null ? null : full <= 1500,
    },
    {
      label: 'nftables vs iptables full sync (speed-up), 10,000 × 2',
      value: fmtRatio(vsIpt, ipt?.fullSync, r.config.timeoutS, nft?.fullSync),
      cpuValue: cpuRatio(ipt?.fullSync),
      target: '≥ 1.5×',
      met: vsIpt === null ? timeoutBound(ipt?.fullSync) : vsIpt >= 1.5,
    },
    {
      label: 'nftables vs kube-proxy nftables layout full sync (speed-up), 10,000 × 2',
      value: fmtRatio(vsKube, kube?.fullSync, r.config.timeoutS, nft?.fullSync),
      cpuValue: cpuRatio(kube?.fullSync),
      target: 'reported (> 1× is better than the peer)',
      met: vsKube === null ? null : vsKube > 1,
    },
    {
      label: 'nftables one-endpoint change, 10,000 × 2',
      value: fmtMs(ep),
      cpuValue: fmtMs(nft?.endpointChange.cpuMedianMs),
      target: '≤ 50 ms',
      met: ep === null ? null : ep <= 50,
    },
  ];
}

/**
 * The proxy-sync section of docs/benchmarks.md and its charts: sync time against the number of
 * services, one line per proxy mode and the kube-proxy-layout peer. Every figure, ratio, size and
 * setting comes from the results file; a file from an older run (fewer sizes, no userspace mode)
 * renders with what it has.
 */
import type { Measurement } from './harness.js';
import { BENCH_MODES, type BenchMode } from './proxiers.js';
import {
  fmtCpu,
  fmtMeasurement,
  fmtMs,
  targetFigures,
  type DaemonRss,
  type ProxySyncCase,
  type ProxySyncResults,
} from './proxy-sync-results.js';
import { fmtDate, type SectionInput } from './report-section.js';
import { lineChart, type Series } from './svg-chart.js';

/** How each contender is named in tables and legends. */
export const MODE_LABEL: Record<BenchMode, string> = {
  nftables: 'weft nftables',
  iptables: 'weft iptables',
  userspace: 'weft userspace',
  'kube-nft': 'kube-proxy nftables layout (peer)',
};
const KIND_LABEL = {
  fullSync: 'full sync',
  endpointChange: 'one-endpoint change',
  serviceAdd: 'one-service add',
} as const;
/** Each contender's colour in the charts. */
export const MODE_COLOR: Record<BenchMode, string> = {
  nftables: '#1b7837',
  iptables: '#c2410c',
  userspace: '#7c3aed',
  'kube-nft': '#2563eb',
};

/** The charts the section writes under docs/bench/. */
export const PROXY_CHARTS = {
  fullSync: 'proxy-sync.svg',
  endpointChange: 'proxy-endpoint-change.svg',
} as const;

function mark(met: boolean | null): string {
  return met === null ? '–' : met ? 'met' : 'missed';
}

function cell(m: Measurement): string {
  const text = fmtMeasurement(m);
  if (m.status !== 'ok') return text;
  const cpu = fmtCpu(m);
  const extra = [
    ...(cpu ? [`CPU ${cpu}`] : []),
    ...(m.samples.length > 1 ? [`n=${m.samples.length}`] : []),
    ...(m.commands !== undefined ? [`${m.commands} cmd`] : []),
  ];
  return extra.length > 0 ? `${text} (${extra.join(', ')})` : text;
}

const num = (n: number): string => n.toLocaleString('en-US');

/** The modes present in the results, in the report's order. */
function modesOf(r: ProxySyncResults): BenchMode[] {
  return BENCH_MODES.filter((m) => r.cases.some((c) => c.mode === m));
}

/**
 * One series per mode and endpoint count (solid for the smallest count, dashed for the others):
 * the measured medians in seconds, and timed-out cases as hollow points at the cap.
 */
export function syncSeries(
  r: ProxySyncResults,
  kind: 'fullSync' | 'endpointChange',
  unitMs: number,
): Series[] {
  const series: Series[] = [];
  const endpoints = [...new Set(r.cases.map((c) => c.endpointsPerService))].sort((a, b) => a - b);
  for (const mode of modesOf(r)) {
    endpoints.forEach((e, i) => {
      const points = r.cases
        .filter((c) => c.mode === mode && c.endpointsPerService === e)
        .flatMap((c) => {
          const m = c[kind];
          if (m.status === 'ok' && m.medianMs !== null) return [{ x: c.services, y: m.medianMs / unitMs }];
          if (m.status === 'timeout')
            return [{ x: c.services, y: (r.config.timeoutS * 1000) / unitMs, open: true }];
          return [];
        });
      if (points.length === 0) return;
      series.push({
        name: `${MODE_LABEL[mode].replace(' (peer)', '').replace(' nftables layout', ' layout')}, ${e} ep`,
        color: MODE_COLOR[mode],
        dashed: i > 0,
        points,
      });
    });
  }
  return series;
}

/**
 * A table of one kind of sync against the number of services: a row per mode and endpoint
 * count, a column per size (the charts' figures, as text).
 */
function pivot(r: ProxySyncResults, kind: 'fullSync' | 'endpointChange'): string[] {
  const services = [...new Set(r.cases.map((c) => c.services))].sort((a, b) => a - b);
  const endpoints = [...new Set(r.cases.map((c) => c.endpointsPerService))].sort((a, b) => a - b);
  const rows: string[] = [];
  for (const mode of modesOf(r)) {
    for (const e of endpoints) {
      const cells = services.map((n) => {
        const c = r.cases.find((x) => x.mode === mode && x.services === n && x.endpointsPerService === e);
        return c ? fmtMeasurement(c[kind]) : '–';
      });
      if (cells.every((x) => x === '–')) continue;
      rows.push(`| ${MODE_LABEL[mode]} | ${e} | ${cells.join(' | ')} |`);
    }
  }
  return [
    `### ${KIND_LABEL[kind][0]?.toUpperCase()}${KIND_LABEL[kind].slice(1)} against the number of services (wall time, median)`,
    '',
    `| Mode | Endpoints per service | ${services.map((n) => `${num(n)} services`).join(' | ')} |`,
    `|---|---|${services.map(() => '---|').join('')}`,
    ...rows,
    '',
  ];
}

const chartOptions = {
  xLabel: 'services (log scale)',
  logX: true,
  logY: true,
  formatX: (v: number) => v.toLocaleString('en-US'),
  formatY: (v: number) => String(Number(v.toPrecision(3))),
  width: 900,
  height: 460,
  legendWidth: 250,
};

/** Renders the section (and writes its charts through `writeChart`). */
export function renderProxySync({ data, file, writeChart }: SectionInput): string {
  const r = data as ProxySyncResults;
  const mc = r.machine;
  const modes = modesOf(r);
  const out: string[] = [
    '## weft-proxy: programming services (proxy-sync)',
    '',
    `From \`${file}\`, measured ${fmtDate(r.date)} in ${r.durationS} s on ` +
      `${mc.cpuModel} (${mc.cores} cores), kernel ${mc.kernel}, Node ${mc.node}, ${mc.nft}, ${mc.iptables}; ` +
      `load average at start ${mc.loadAverage.join(' / ')}. Sizes: ${r.config.sizes.map(num).join(', ')} ` +
      `services × ${r.config.endpoints.join(', ')} endpoints; contenders: ${modes.map((m) => MODE_LABEL[m]).join(', ')}.`,
    '',
    'Each mode runs in a fresh network namespace. **Full sync**: wall time of one sync of every ' +
      'service into the empty namespace (rule generation and the kernel transaction). ' +
      '**One-endpoint change**: a partial sync after one endpoint of one service was replaced. ' +
      '**One-service add**: a partial sync adding one service. The workload is N ClusterIP services ' +
      'with one TCP port and E ready endpoints each, built from Service and EndpointSlice JSON through ' +
      'the proxy model. The peer is the ruleset kube-proxy ≥ 1.31 writes in nftables mode ' +
      '(`service-ips` verdict map, one chain per service with an anonymous ' +
      '`numgen random mod N vmap`, one chain per endpoint), generated by bench/kube-nft-layout.ts and ' +
      'loaded with one `nft -f -`; its partial syncs rewrite the changed service’s chains, as ' +
      `kube-proxy does. Medians; cases of ≤ 1,000 services repeat the full sync ` +
      `${r.config.fullRepeatsSmall}×, partial syncs run ${r.config.partialRepeats}× (fewer after a ` +
      'full sync of over 20 s; "n=" gives the count); each measurement ' +
      `is capped at ${r.config.timeoutS} s ("timeout"). Every figure includes \`ip netns exec\`, ` +
      `which costs ${r.netnsExecOverheadMs} ms per command on this machine` +
      (r.netnsExecOverheadCpuMs !== undefined ? ` (${r.netnsExecOverheadCpuMs} ms of CPU)` : '') +
      '; the number of commands ' +
      'each sync ran is shown as "cmd". Next to each wall time is its CPU time: the benchmark ' +
      "process's own (rule generation) plus that of its finished children (nft, iptables-restore, " +
      'and the kernel work done in their system calls). On a busy machine wall times grow with the ' +
      'load average while CPU times barely move, so compare modes on the CPU figures when the load ' +
      'average above is well over the core count.',
  ];
  if (modes.includes('userspace')) {
    out.push(
      '',
      'weft userspace runs in a worker process inside the namespace, because its listeners are ' +
        'sockets of the namespace they are opened in; the worker times its own syncs (its CPU time ' +
        'and its children’s). Its sync opens or closes one listening socket per service port and ' +
        'loads its nftables redirect table in one `nft -f -`, rewritten whole whenever a redirect ' +
        'changes (a service added); an endpoint change only updates the user-space balancer, with ' +
        'no command. Its "Change in kernel" is checked on the last added service: it has a listener ' +
        'and its redirect to that listener’s port is in the ruleset. A size whose listeners need ' +
        'more open files or ephemeral ports than the namespace has is skipped, with the reason below.',
    );
  }
  out.push(
    '',
    '### Targets (issue 4; reported, not asserted)',
    '',
    '| Figure | Value (wall time) | Target | | Same from CPU time |',
    '|---|---|---|---|---|',
    ...targetFigures(r).map(
      (f) => `| ${f.label} | ${f.value} | ${f.target} | ${mark(f.met)} | ${f.cpuValue} |`,
    ),
    '',
    ...pivot(r, 'fullSync'),
    ...pivot(r, 'endpointChange'),
    '### Sync times',
    '',
    '| Services × endpoints | Mode | Full sync | One-endpoint change | One-service add | Change in kernel |',
    '|---|---|---|---|---|---|',
  );
  const ordered = [...r.cases].sort(
    (a, b) =>
      a.services - b.services ||
      a.endpointsPerService - b.endpointsPerService ||
      BENCH_MODES.indexOf(a.mode) - BENCH_MODES.indexOf(b.mode),
  );
  const sizes = [...new Set(ordered.map((c) => `${c.services}×${c.endpointsPerService}`))];
  for (const size of sizes) {
    const cases = ordered.filter((c) => `${c.services}×${c.endpointsPerService}` === size);
    for (const c of cases) {
      const verified = c.verified === null ? '–' : c.verified ? 'yes' : '**no**';
      out.push(
        `| ${num(c.services)} × ${c.endpointsPerService} | ${MODE_LABEL[c.mode]} | ` +
          `${cell(c.fullSync)} | ${cell(c.endpointChange)} | ${cell(c.serviceAdd)} | ${verified} |`,
      );
    }
  }
  const notes = ordered.flatMap((c) =>
    (['fullSync', 'endpointChange', 'serviceAdd'] as const)
      // A skipped full sync says why; a skipped partial sync only follows from it.
      .filter((k) => c[k].note && (c[k].status !== 'skipped' || k === 'fullSync'))
      .map(
        (k) =>
          `- ${MODE_LABEL[c.mode]}, ${num(c.services)} × ${c.endpointsPerService}, ${KIND_LABEL[k]}: ` +
          `${c[k].status === 'skipped' ? 'skipped: ' : ''}${c[k].note}`,
      ),
  );
  if (notes.length > 0) out.push('', ...notes);

  const others = modes.filter((m) => m !== 'nftables');
  if (modes.includes('nftables') && others.length > 0) {
    out.push('', '### Speed-up of weft nftables (full sync)', '');
    out.push(
      `| Services × endpoints | ${others.map((m) => `vs ${MODE_LABEL[m].replace(' (peer)', '')}`).join(' | ')} |`,
      `|---|${others.map(() => '---|').join('')}`,
    );
    for (const size of sizes) {
      const get = (m: BenchMode): ProxySyncCase | undefined =>
        r.cases.find((c) => `${c.services}×${c.endpointsPerService}` === size && c.mode === m);
      const nft = get('nftables')?.fullSync.medianMs;
      const speed = (m: BenchMode): string => {
        const other = get(m)?.fullSync;
        if (!nft || !other) return 'n/a';
        if (other.status === 'timeout')
          return `> ${((r.config.timeoutS * 1000) / nft).toFixed(1)}× (timeout)`;
        return other.medianMs ? `${(other.medianMs / nft).toFixed(2)}×` : 'n/a';
      };
      const [n = '', e = ''] = size.split('×');
      out.push(`| ${num(Number(n))} × ${e} | ${others.map(speed).join(' | ')} |`);
    }
  }

  out.push('', '### Daemon memory', '');
  // Older results files hold one object instead of a list.
  const rss = Array.isArray(r.daemonRss) ? r.daemonRss : [r.daemonRss as unknown as DaemonRss];
  if (rss.length === 0) out.push('Not measured.');
  for (const d of rss) {
    const from = d.registry ?? 'etcd';
    if (d.status === 'ok') {
      out.push(
        `- weft-proxy (${d.mode} mode) with ${num(d.services)} services × ` +
          `${d.endpointsPerService} endpoints from ${from}: RSS **${((d.rssKiB ?? 0) / 1024).toFixed(1)} MiB** ` +
          `3 s after its first sync (peak ${((d.peakRssKiB ?? 0) / 1024).toFixed(1)} MiB); the kernel held ` +
          `every service ${fmtMs(d.firstSyncMs)} after the daemon started (polled every 0.5 s; writing ` +
          `the objects into ${from} took ${fmtMs(d.loadMs)}, not included).`,
      );
    } else {
      out.push(
        `- weft-proxy with ${num(d.services)} services from ${from}: ` +
          `not measured (${d.status}${d.note ? `: ${d.note.split('; log: ')[0]}` : ''}).`,
      );
    }
  }

  const openNote = `timed out (≥ ${r.config.timeoutS} s)`;
  const fullLink = writeChart(
    PROXY_CHARTS.fullSync,
    lineChart({
      ...chartOptions,
      title: 'Full sync time vs number of services',
      yLabel: 'full sync (s, log scale)',
      series: syncSeries(r, 'fullSync', 1000),
      openNote,
    }),
  );
  const epLink = writeChart(
    PROXY_CHARTS.endpointChange,
    lineChart({
      ...chartOptions,
      title: 'One-endpoint change vs number of services',
      yLabel: 'one-endpoint change (ms, log scale)',
      series: syncSeries(r, 'endpointChange', 1),
      openNote,
    }),
  );
  out.push(
    '',
    '### Charts',
    '',
    `![Full sync time vs number of services, one line per mode](${fullLink})`,
    '',
    `![One-endpoint change vs number of services, one line per mode](${epLink})`,
    '',
    'Solid lines: the smallest endpoint count per service; dashed: the larger ones. Timed-out cases ' +
      'are hollow points at the cap; skipped and failed cases are left out (see the table).',
    '',
  );
  return out.join('\n');
}

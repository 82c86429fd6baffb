/**
 * The benchmark report is generated from the results files: every figure in its tables and
 * charts must come from the JSON (issue 6 §5), a chart has a line per proxy mode, and a results
 * file from an older run (fewer sizes, no userspace mode) still renders.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { renderOverlay, renderRelay } from '../../bench/dataplane-report.js';
import type { MachineInfo, Measurement } from '../../bench/harness.js';
import type { OverlayResults } from '../../bench/overlay.js';
import { BENCH_MODES, type BenchMode } from '../../bench/proxiers.js';
import { MODE_LABEL, PROXY_CHARTS, renderProxySync, syncSeries } from '../../bench/proxy-sync-report.js';
import { fmtMs, type ProxySyncCase, type ProxySyncResults } from '../../bench/proxy-sync-results.js';
import type { RelayResults } from '../../bench/relay.js';
import { renderReport } from '../../bench/report.js';
import { capacityProblem, openFileLimit } from '../../bench/userspace-worker.js';

const machine: MachineInfo = {
  cpuModel: 'Fixture CPU 9000',
  cores: 7,
  kernel: '6.1.99-fixture',
  node: 'v20.99.0',
  nft: 'nftables v9.9.9',
  iptables: 'iptables v9.9.9 (nf_tables)',
  loadAverage: [0.11, 0.22, 0.33],
};

const ok = (ms: number, n = 3): Measurement => ({
  status: 'ok',
  samples: Array.from({ length: n }, () => ms),
  medianMs: ms,
  cpuSamples: Array.from({ length: n }, () => ms * 0.9),
  cpuMedianMs: ms * 0.9,
  commands: 4,
});

/**
 * A results file whose every figure is distinct: the full sync of mode m at size index s and
 * endpoint index k is `scale × (1000·(s+1) + 100·m + 10·k + 1.5)` ms, partial syncs a tenth and a
 * twentieth of it. iptables times out at the largest size × 10; userspace is skipped there.
 */
function fixture(
  scale = 1,
  modes: readonly BenchMode[] = BENCH_MODES,
  sizes = [100, 1000, 3000],
): ProxySyncResults {
  const cases: ProxySyncCase[] = [];
  sizes.forEach((n, s) =>
    [2, 10].forEach((e, k) =>
      modes.forEach((mode) => {
        const m = BENCH_MODES.indexOf(mode);
        const base = scale * (1000 * (s + 1) + 100 * m + 10 * k + 1.5);
        const last = s === sizes.length - 1 && e === 10;
        if (last && mode === 'iptables') {
          cases.push({
            mode,
            services: n,
            endpointsPerService: e,
            fullSync: { status: 'timeout', samples: [], medianMs: null, note: 'over 180 s' },
            endpointChange: { status: 'skipped', samples: [], medianMs: null, note: 'full sync failed' },
            serviceAdd: { status: 'skipped', samples: [], medianMs: null, note: 'full sync failed' },
            verified: null,
          });
          return;
        }
        if (last && mode === 'userspace') {
          const skipped = (note: string): Measurement => ({
            status: 'skipped',
            samples: [],
            medianMs: null,
            note,
          });
          cases.push({
            mode,
            services: n,
            endpointsPerService: e,
            fullSync: skipped('needs 3261 open files (fixture reason)'),
            endpointChange: skipped('size not run'),
            serviceAdd: skipped('size not run'),
            verified: null,
          });
          return;
        }
        cases.push({
          mode,
          services: n,
          endpointsPerService: e,
          fullSync: ok(base),
          endpointChange: ok(base / 10, 5),
          serviceAdd: ok(base / 20, 5),
          verified: true,
        });
      }),
    ),
  );
  return {
    benchmark: 'proxy-sync',
    date: '2031-02-03T04:05:06.000Z',
    machine,
    config: {
      sizes,
      endpoints: [2, 10],
      modes: [...modes],
      timeoutS: 180,
      fullRepeatsSmall: 3,
      partialRepeats: 5,
    },
    netnsExecOverheadMs: 6.25,
    netnsExecOverheadCpuMs: 12.5,
    cases,
    daemonRss: [
      {
        status: 'ok',
        services: 10_000,
        endpointsPerService: 2,
        mode: 'nftables',
        registry: 'etcd',
        rssKiB: 123 * 1024,
        peakRssKiB: 130 * 1024,
        firstSyncMs: 4321,
        loadMs: 8765,
      },
    ],
    durationS: 777,
  };
}

function render(data: unknown): { md: string; charts: Map<string, string> } {
  const charts = new Map<string, string>();
  const md = renderProxySync({
    data,
    file: 'bench/results/proxy-sync.json',
    writeChart: (name, svg) => {
      charts.set(name, svg);
      return `bench/${name}`;
    },
  });
  return { md, charts };
}

/** The rows of the "Sync times" table. */
function syncRows(md: string): string[] {
  const start = md.indexOf('### Sync times');
  const end = md.indexOf('\n\n', md.indexOf('|---|', start));
  return md
    .slice(start, end)
    .split('\n')
    .filter((l) => /^\| [\d,]+ × \d+ \|/.test(l));
}

t.test('the sync table has a row per case holding its figures', async (t) => {
  const r = fixture();
  const { md } = render(r);
  const rows = syncRows(md);
  t.equal(rows.length, r.cases.length, 'one row per case');
  for (const c of r.cases) {
    const row = rows.find((l) =>
      l.startsWith(
        `| ${c.services.toLocaleString('en-US')} × ${c.endpointsPerService} | ${MODE_LABEL[c.mode]} |`,
      ),
    );
    if (!row) {
      t.fail(`no row for ${c.mode} ${c.services}×${c.endpointsPerService}`);
      continue;
    }
    if (c.fullSync.status === 'ok') {
      t.match(row, `${fmtMs(c.fullSync.medianMs)} (CPU ${fmtMs(c.fullSync.cpuMedianMs)}, n=3, 4 cmd)`);
      t.match(row, fmtMs(c.endpointChange.medianMs));
      t.match(row, fmtMs(c.serviceAdd.medianMs));
      t.match(row, /\| yes \|$/);
    } else {
      t.match(row, `| ${c.fullSync.status} |`);
    }
  }
  // The table of full syncs against the number of services: a row per mode × endpoint count.
  for (const mode of BENCH_MODES) {
    const cells = [100, 1000, 3000].map((n) => {
      const c = r.cases.find((x) => x.mode === mode && x.services === n && x.endpointsPerService === 2);
      return fmtMs(c?.fullSync.medianMs);
    });
    t.match(md, `| ${MODE_LABEL[mode]} | 2 | ${cells.join(' | ')} |`, `${mode}: full sync by size`);
  }
  t.match(md, '| weft iptables | 10 | ', 'the 10-endpoint row');
  t.match(md, /\| weft iptables \| 10 \| [^\n]* \| timeout \|\n/, 'a timeout in the by-size table');
  t.match(md, '- weft userspace, 3,000 × 10, full sync: skipped: needs 3261 open files (fixture reason)');
  t.match(md, '- weft iptables, 3,000 × 10, full sync: over 180 s');
  t.notMatch(md, 'size not run', 'skipped partial syncs that only follow the full sync are not listed');
  t.match(md, 'Fixture CPU 9000 (7 cores), kernel 6.1.99-fixture');
  t.match(md, 'measured 2031-02-03 04:05 UTC in 777 s');
  t.match(md, 'Sizes: 100, 1,000, 3,000 services × 2, 10 endpoints');
  t.match(md, '6.25 ms per command');
  t.match(md, 'RSS **123.0 MiB**');
});

t.test('no figure is typed in: scaling every measurement changes every row', async (t) => {
  const a = syncRows(render(fixture(1)).md);
  const b = syncRows(render(fixture(3)).md);
  t.equal(a.length, b.length);
  a.forEach((row, i) => {
    // Rows without a single measured figure (timeout, skipped) stay the same.
    if (/ ms|\ds/.test(row)) t.not(row, b[i], `row ${i} follows the data`);
  });
  const speedA = render(fixture(1)).md.split('### Speed-up')[1]?.split('###')[0] ?? '';
  t.match(speedA, /\| 100 × 2 \| [\d.]+× \| [\d.]+× \| [\d.]+× \|/, 'a speed-up per other mode');
  t.match(speedA, '> ', 'a timed-out peer is a lower bound');
});

t.test('charts: a line per mode and endpoint count, points from the results', async (t) => {
  const r = fixture();
  const { md, charts } = render(r);
  t.same([...charts.keys()].sort(), Object.values(PROXY_CHARTS).sort(), 'both charts written');
  t.match(md, `![Full sync time vs number of services, one line per mode](bench/${PROXY_CHARTS.fullSync})`);
  const svg = charts.get(PROXY_CHARTS.fullSync) ?? '';
  for (const mode of BENCH_MODES) {
    const name = MODE_LABEL[mode].replace(' (peer)', '').replace(' nftables layout', ' layout');
    t.match(svg, `>${name}, 2 ep</text>`, `${mode}: legend for 2 endpoints`);
    t.match(svg, `>${name}, 10 ep</text>`, `${mode}: legend for 10 endpoints`);
  }
  const series = syncSeries(r, 'fullSync', 1000);
  t.equal(series.length, BENCH_MODES.length * 2, 'one series per mode × endpoint count');
  const pathCount = (svg.match(/<path /g) ?? []).length;
  t.equal(pathCount, series.filter((s) => s.points.filter((p) => !p.open).length > 1).length);
  const points = series.flatMap((s) => s.points);
  t.equal(
    (svg.match(/<circle /g) ?? []).length,
    points.length + 1,
    'a marker per point, plus the hollow legend key',
  );
  t.equal(points.filter((p) => p.open).length, 1, 'the timed-out case is one hollow point');
  t.match(svg, 'timed out (≥ 180 s)');
  const nft2 = series.find((s) => s.name === 'weft nftables, 2 ep');
  t.same(
    nft2?.points,
    r.cases
      .filter((c) => c.mode === 'nftables' && c.endpointsPerService === 2)
      .map((c) => ({ x: c.services, y: (c.fullSync.medianMs ?? 0) / 1000 })),
    'points are the medians, in seconds',
  );
  t.notSame(render(fixture(2)).charts.get(PROXY_CHARTS.fullSync), svg, 'the chart follows the data');
  const ep = charts.get(PROXY_CHARTS.endpointChange) ?? '';
  t.match(ep, 'One-endpoint change vs number of services');
  t.match(ep, 'weft userspace, 2 ep');
});

t.test('an older results file (no userspace, two sizes) still renders', async (t) => {
  const r = fixture(1, ['nftables', 'iptables', 'kube-nft'], [1000, 10_000]);
  const { md, charts } = render(r);
  t.notMatch(md, 'weft userspace');
  t.match(md, '| Services × endpoints | vs weft iptables | vs kube-proxy nftables layout |');
  t.notMatch(charts.get(PROXY_CHARTS.fullSync) ?? '', 'userspace');
  t.match(md, /\| nftables full sync, 10,000 services × 2 endpoints \| [\d.]+ s \|/, 'targets from the data');
});

t.test('data-path sections name the machine and the date', async (t) => {
  const relay: RelayResults = {
    benchmark: 'relay',
    date: '2031-02-03T05:06:07.000Z',
    machine,
    seconds: 5,
    roundTrips: 100,
    cases: [
      { name: 'direct', gbps: 11.11, p50Us: 40, p99Us: 90, cpuSecondsPerGb: null },
      { name: 'haproxy', gbps: 4.44, p50Us: 99, p99Us: 300, cpuSecondsPerGb: 1.5 },
      { name: 'native', gbps: 6.66, p50Us: 98, p99Us: 290, cpuSecondsPerGb: 0.5 },
      { name: 'node', gbps: 2.22, p50Us: 120, p99Us: 400, cpuSecondsPerGb: 5 },
    ],
  };
  const overlay: OverlayResults = {
    benchmark: 'overlay',
    date: '2031-02-03T06:07:08.000Z',
    machine,
    seconds: 8,
    udpOffload: true,
    cases: [
      { name: 'underlay', lab: 'vxlan', gbps: 9.87, retransmits: 1, cpuSecondsPerGb: 1 },
      { name: 'vxlan', lab: 'vxlan', gbps: 7.65, retransmits: 2, cpuSecondsPerGb: 1.5 },
      { name: 'underlay', lab: 'udp', gbps: 9.12, retransmits: 3, cpuSecondsPerGb: 1 },
      { name: 'udp', lab: 'udp', gbps: 3.83, retransmits: 4, cpuSecondsPerGb: 3 },
    ],
  };
  const charts = new Map<string, string>();
  const writeChart = (name: string, svg: string): string => {
    charts.set(name, svg);
    return `bench/${name}`;
  };
  const rmd = renderRelay({ data: relay, file: 'bench/results/relay.json', writeChart });
  const omd = renderOverlay({ data: overlay, file: 'bench/results/overlay.json', writeChart });
  t.match(rmd, 'Measured 2031-02-03 05:06 UTC on Fixture CPU 9000 (7 cores), kernel 6.1.99-fixture');
  t.match(omd, 'Measured 2031-02-03 06:07 UTC on Fixture CPU 9000');
  t.match(rmd, '1.50×', 'native vs HAProxy from the figures (6.66 / 4.44)');
  t.match(omd, '0.50×', 'udp vs vxlan from the figures (3.83 / 7.65)');
  const bars = charts.get('overlay-throughput.svg') ?? '';
  for (const label of ['kernel vxlan', 'weft udp backend', 'underlay (vxlan lab)', 'underlay (udp lab)'])
    t.match(bars, `>${label}</text>`);
  t.match(bars, '3.83 Gbit/s');
  t.match(bars, ', Gbit/s</text>', 'the unit is in the title');
  t.match(charts.get('relay-throughput.svg') ?? '', '6.66 Gbit/s');
});

t.test('renderReport reads a results directory and writes the charts under the root', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'weft-bench-report-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, 'results');
  mkdirSync(dir);
  writeFileSync(join(dir, 'proxy-sync.json'), JSON.stringify(fixture()));
  writeFileSync(join(dir, 'other.json'), JSON.stringify({ benchmark: 'mystery' }));
  const md = renderReport(root, dir);
  t.match(md, '## weft-proxy: programming services (proxy-sync)');
  t.match(md, '## mystery');
  t.same(readdirSync(join(root, 'docs', 'bench')).sort(), Object.values(PROXY_CHARTS).sort());
  t.match(readFileSync(join(root, 'docs', 'bench', PROXY_CHARTS.fullSync), 'utf8'), /^<svg /);
});

t.test('userspace capacity: open files and ephemeral ports', async (t) => {
  t.equal(
    openFileLimit(
      'Limit Soft Hard Units\nMax open files            20000                20000                files\n',
    ),
    20000,
  );
  t.equal(
    openFileLimit('Max open files            unlimited            unlimited            files\n'),
    Infinity,
  );
  t.equal(openFileLimit('nothing here'), undefined);
  t.equal(capacityProblem(10_005, 20_000, [32768, 60999]), undefined, '10,000 services fit');
  t.match(capacityProblem(10_005, 1024, [32768, 60999]) ?? '', /needs 10261 open files .* the limit is 1024/);
  t.match(capacityProblem(30_005, 100_000, [32768, 60999]) ?? '', /needs 30005 ephemeral ports .* has 28232/);
});

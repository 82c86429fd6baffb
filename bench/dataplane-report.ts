/**
 * The report sections of the data-path benchmarks (issue 5 §6): the userspace proxy relay against
 * a direct connection, HAProxy and a Node pipe; the udp backend against kernel vxlan and the raw
 * underlay. Ratios are computed here from the figures of the same run, never typed in.
 */
import type { OverlayResults } from './overlay.js';
import type { RelayResults } from './relay.js';
import { fmtDate, type SectionInput as Input } from './report-section.js';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A horizontal bar chart as a standalone SVG document. */
export function barChart(
  title: string,
  unit: string,
  bars: { label: string; value: number; color: string }[],
): string {
  const W = 720;
  const rowH = 34;
  const left = 230;
  const right = 110;
  const top = 44;
  const H = top + bars.length * rowH + 20;
  const max = Math.max(...bars.map((b) => b.value), 1e-9);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="13">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(`${title}, ${unit}`)}</text>`,
  ];
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const w = ((W - left - right) * b.value) / max;
    parts.push(
      `<text x="${left - 8}" y="${y + 20}" text-anchor="end">${esc(b.label)}</text>`,
      `<rect x="${left}" y="${y + 6}" width="${w.toFixed(1)}" height="20" fill="${b.color}"/>`,
      `<text x="${(left + w + 6).toFixed(1)}" y="${y + 20}">${b.value.toFixed(2)} ${esc(unit)}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

const f2 = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : v.toFixed(2));
const f0 = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : v.toFixed(0));
const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a && b ? a / b : null;
const verdict = (ok: boolean | null): string => (ok === null ? '–' : ok ? 'met' : 'missed');

function machineLine(m: RelayResults['machine'], date: string): string {
  return `Measured ${fmtDate(date)} on ${m.cpuModel} (${m.cores} cores), kernel ${m.kernel}, Node ${m.node}; load average at the start ${m.loadAverage.join(' / ')}.`;
}

/** The relay section. */
export function renderRelay(input: Input): string {
  const r = input.data as RelayResults;
  const by = (n: string) => r.cases.find((c) => c.name === n);
  const native = by('native');
  const hap = by('haproxy');
  const node = by('node');
  const vsHap = ratio(native?.gbps, hap?.gbps);
  const vsNode = ratio(native?.gbps, node?.gbps);
  const p50ok = native?.p50Us && hap?.p50Us ? native.p50Us <= hap.p50Us * 1.05 : null;
  const chart = input.writeChart(
    'relay-throughput.svg',
    barChart(
      'Userspace proxy: iperf3 through one TCP relay',
      'Gbit/s',
      r.cases
        .filter((c) => c.gbps !== null)
        .map((c) => ({
          label: c.name === 'native' ? 'weft native (splice)' : c.name === 'node' ? 'weft Node pipe' : c.name,
          value: c.gbps ?? 0,
          color:
            c.name === 'native'
              ? '#1b7837'
              : c.name === 'haproxy'
                ? '#2563eb'
                : c.name === 'node'
                  ? '#c2410c'
                  : '#6b7280',
        })),
    ),
  );
  return [
    '## Userspace proxy relay (`relay`)',
    '',
    machineLine(r.machine, r.date),
    `iperf3 for ${r.seconds} s through each path, then ${r.roundTrips} round trips of 64 bytes over one connection (p50/p99: the median of 5 such runs); all in one namespace on loopback (\`bench/relay.ts\`). CPU is the relay process's own (user + system) per GB moved; \`direct\` has no relay process.`,
    '',
    '| path | throughput (Gbit/s) | p50 (µs) | p99 (µs) | relay CPU (s/GB) |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...r.cases.map(
      (c) =>
        `| ${c.name} | ${f2(c.gbps)} | ${f0(c.p50Us)} | ${f0(c.p99Us)} | ${f2(c.cpuSecondsPerGb)} |${c.note ? ` ${c.note}` : ''}`,
    ),
    '',
    `![relay throughput](${chart})`,
    '',
    '| target | figure | |',
    '| --- | --- | --- |',
    `| native ≥ 1.0× HAProxy throughput | ${f2(vsHap)}× | ${verdict(vsHap === null ? null : vsHap >= 1)} |`,
    `| native ≥ 1.3× Node pipe throughput | ${f2(vsNode)}× | ${verdict(vsNode === null ? null : vsNode >= 1.3)} |`,
    `| native p50 no worse than HAProxy's (5% noise allowed) | ${f0(native?.p50Us)} vs ${f0(hap?.p50Us)} µs | ${verdict(p50ok)} |`,
    '',
  ].join('\n');
}

/** The overlay section. */
export function renderOverlay(input: Input): string {
  const r = input.data as OverlayResults;
  const vx = r.cases.find((c) => c.name === 'vxlan');
  const udp = r.cases.find((c) => c.name === 'udp');
  const rel = ratio(udp?.gbps, vx?.gbps);
  const chart = input.writeChart(
    'overlay-throughput.svg',
    barChart(
      'Pod to pod across two lab nodes (iperf3)',
      'Gbit/s',
      r.cases.map((c) => ({
        label:
          c.name === 'underlay'
            ? `underlay (${c.lab} lab)`
            : c.name === 'udp'
              ? 'weft udp backend'
              : 'kernel vxlan',
        value: c.gbps,
        color: c.name === 'udp' ? '#1b7837' : c.name === 'vxlan' ? '#2563eb' : '#6b7280',
      })),
    ),
  );
  return [
    '## Overlay: the udp backend against kernel vxlan (`overlay`)',
    '',
    machineLine(r.machine, r.date),
    `Two-node labs with etcd and weft-flanneld, one pod per node through weft-cni; iperf3 for ${r.seconds} s pod to pod, and node to node over the underlay in the same lab (\`bench/overlay.ts\`). CPU is the whole machine's busy time per GB delivered (kernel softirq work included, so kernel and user-space paths compare). udp backend offloads: ${r.udpOffload ? 'on (virtio header, TSO, UDP GSO/GRO)' : 'off'}.`,
    '',
    '| path | lab | throughput (Gbit/s) | retransmits | machine CPU (s/GB) |',
    '| --- | --- | ---: | ---: | ---: |',
    ...r.cases.map(
      (c) => `| ${c.name} | ${c.lab} | ${f2(c.gbps)} | ${c.retransmits} | ${f2(c.cpuSecondsPerGb)} |`,
    ),
    '',
    `![overlay throughput](${chart})`,
    '',
    '| target | figure | |',
    '| --- | --- | --- |',
    `| udp backend ≥ 0.5× kernel vxlan | ${f2(rel)}× | ${verdict(rel === null ? null : rel >= 0.5)} |`,
    '',
  ].join('\n');
}

/**
 * The selector benchmark's figures and report section: nearest-rank quantiles (p99 of fewer than
 * 100 samples is the largest), the idle check at 0.5 per core, and a section whose every figure
 * comes from the results file, marked when the machine was busy or the run was a quick one.
 */
import t from 'tap';
import type { MachineInfo } from '../../bench/harness.js';
import {
  idleState,
  quantile,
  renderSelector,
  summarize,
  type SelectorResults,
} from '../../bench/selector-results.js';

const machine: MachineInfo = {
  cpuModel: 'Fixture CPU 9000',
  cores: 4,
  kernel: '6.1.99-fixture',
  node: 'v20.99.0',
  nft: 'nftables v9.9.9',
  iptables: 'iptables v9.9.9 (nf_tables)',
  loadAverage: [0.4, 0.3, 0.2],
};

function fixture(over: Partial<SelectorResults> = {}): SelectorResults {
  return {
    benchmark: 'selector',
    date: '2026-12-08T01:02:03.000Z',
    seconds: 321,
    machine,
    versions: { weft: '0.9.1', commit: 'abc1234', etcd: 'etcd Version: 3.4.23' },
    idle: idleState([0.4, 0.3, 0.2], 4),
    nodes: 3,
    samplesPerSize: 20,
    quick: false,
    cases: [
      {
        pods: 100,
        firstProgrammingMs: 1234,
        latency: summarize([110, 120, 130, 140, 150], 0),
        controller: {
          changes: 1000,
          cpuSeconds: 2.5,
          wallSeconds: 4,
          cpuSecondsPer1000: 2.5,
          wallSecondsPer1000: 4,
          rssBeforeMiB: 61.25,
          rssAfterMiB: 70.5,
          peakMiB: 75.75,
        },
      },
      {
        pods: 10_000,
        firstProgrammingMs: null,
        latency: summarize([], 2),
        controller: null,
        note: 'not every pod was programmed: timed out',
      },
    ],
    ...over,
  };
}

t.test('nearest-rank quantiles', async (t) => {
  t.equal(quantile([5, 1, 4, 2, 3], 0.5), 3, 'median of 5');
  t.equal(quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), 9, 'p90 of 10');
  const twenty = Array.from({ length: 20 }, (_, i) => i + 1);
  t.equal(quantile(twenty, 0.99), 20, 'p99 of 20 samples is the largest');
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  t.equal(quantile(hundred, 0.99), 99, 'p99 of 100 samples is the 99th');
  t.throws(() => quantile([], 0.5), 'nothing to take a quantile of');
  const s = summarize([300, 100, 200, 400, 500.04], 1);
  t.same(
    { median: s.medianMs, p90: s.p90Ms, p99: s.p99Ms, max: s.maxMs, timeouts: s.timeouts },
    { median: 300, p90: 500, p99: 500, max: 500, timeouts: 1 },
    'summary of five samples',
  );
  t.same(summarize([], 3), {
    samples: [],
    timeouts: 3,
    medianMs: null,
    p90Ms: null,
    p99Ms: null,
    maxMs: null,
  });
});

t.test('the idle check: above 0.5 per core is busy', async (t) => {
  t.same(idleState([1, 0.5, 0.25], 2), { loadAverage: [1, 0.5, 0.25], cores: 2, perCore: 0.5, busy: false });
  t.equal(idleState([1.02, 0, 0], 2).busy, true, '0.51 per core is busy');
  t.equal(idleState([3, 0, 0], 0).perCore, 3, 'no core count reads as one core');
});

t.test('the report section', async (t) => {
  const md = renderSelector({ data: fixture(), file: 'bench/results/selector.json', writeChart: () => '' });
  t.match(md, /^## weft-controller: selector to kernel \(selector\)/, 'its title');
  t.match(md, /measured 2026-12-08 01:02 UTC in 321 s on Fixture CPU 9000 \(4 cores\)/, 'when and where');
  t.match(md, /etcd Version: 3\.4\.23; weft 0\.9\.1 \(abc1234\)/, 'the versions');
  t.match(md, /0\.4 \/ 0\.3 \/ 0\.2 \(0\.10 per core\), under the 0\.5 per core/, 'the load, idle');
  t.notMatch(md, /\*\*busy\*\*/, 'not marked busy');
  t.match(
    md,
    /\| 100 \| 5 \| 130 ms \| 150 ms \| 150 ms \| 150 ms \| 1\.23 s \|/,
    'latency row from the samples',
  );
  t.match(md, /\| 10,000 \| 0 \(\+2 timed out\) \| – \| – \| – \| – \| – \|/, 'a size without figures');
  t.match(
    md,
    /\| 100 \| 1,000 \| 2\.50 s \| 4\.00 s \| 61\.3 MiB \| 70\.5 MiB \| 75\.8 MiB \|/,
    'controller cost row',
  );
  t.match(md, /- 10,000 pods: not every pod was programmed: timed out/, 'the note of a missing figure');
  t.match(md, /20 samples per size/, 'the sample count');

  const busy = renderSelector({
    data: fixture({ idle: idleState([3, 2, 1], 4), quick: true }),
    file: 'bench/results/selector.json',
    writeChart: () => '',
  });
  t.match(busy, /\(0\.75 per core\): \*\*busy\*\*/, 'a busy machine is marked');
  t.match(busy, /\*\*Quick run\*\*/, 'and a quick run is said to be one');
});

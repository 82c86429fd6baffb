/**
 * weftctl status without a cluster: records in a MemoryStore, probes given by hand. Covers the
 * verdict (exit 0 only when everything is ready), stale and missing records, bad records, the
 * overlay matrix and the table.
 */
import { createServer } from 'node:http';
import t from 'tap';
import { silentLogger } from '../../../src/log/index.js';
import { MemoryStore } from '../../../src/registry/index.js';
import {
  overlayAddress,
  resolveRun,
  labPlace,
  writeRunState,
  type LabRunState,
} from '../../../src/weftctl/lab-state.js';
import {
  buildReport,
  formatStatusReport,
  isLoopbackUrl,
  parsePingSummary,
  probeAll,
  probeReadyz,
  readStatusRecords,
  type ReadyzProbe,
} from '../../../src/weftctl/status-report.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const NOW = Date.parse('2026-11-29T06:10:00.000Z');
const iso = (agoS: number) => new Date(NOW - agoS * 1000).toISOString();

function record(node: string, daemon: string, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    node,
    daemon,
    version: '0.1.0',
    pid: 100,
    startedAt: iso(600),
    updatedAt: iso(5),
    ready: true,
    lastSync: iso(12),
    health: 'http://10.0.0.1:10256',
    detail: daemon === 'weft-proxy' ? { mode: 'nftables' } : { backend: 'vxlan', subnet: '10.244.1.0/24' },
    ...over,
  });
}

async function storeWith(entries: Record<string, string>): Promise<MemoryStore> {
  const s = new MemoryStore({ logger: silentLogger() });
  for (const [k, v] of Object.entries(entries)) await s.create(k, v);
  return s;
}

t.test('every daemon ready: ready, table and verdict line', async (t) => {
  const store = await storeWith({
    '/weft/status/n1/weft-flanneld': record('n1', 'weft-flanneld'),
    '/weft/status/n1/weft-proxy': record('n1', 'weft-proxy'),
    '/other/status/n9/weft-proxy': record('n9', 'weft-proxy', { ready: false }),
  });
  t.teardown(() => store.close());
  const { prefix, records, invalid } = await readStatusRecords(store, '/weft');
  t.equal(prefix, '/weft/status/');
  t.equal(records.length, 2, 'only records under the prefix');
  const probes = new Map<string, ReadyzProbe>(records.map((r) => [r.key, { state: 'ok', status: 200 }]));
  const report = buildReport(records, invalid, { prefix, now: NOW, probes });
  t.ok(report.ready);
  t.same(report.problems, []);
  const text = formatStatusReport(report, NOW);
  t.match(text, /^NODE\s+DAEMON\s+READY\s+READYZ\s+LAST SYNC\s+UPDATED\s+AGE\s+DETAIL$/m);
  t.match(text, /^n1\s+weft-proxy\s+yes\s+200\s+12s\s+5s\s+10m\s+mode=nftables$/m);
  t.match(text, /all 2 daemons on 1 node\(s\) ready\n$/);
});

t.test('not ready, stale, failing /readyz and a bad record each fail with a reason', async (t) => {
  const store = await storeWith({
    '/weft/status/n1/weft-flanneld': record('n1', 'weft-flanneld', { ready: false, reason: 'no lease yet' }),
    '/weft/status/n1/weft-proxy': record('n1', 'weft-proxy', { updatedAt: iso(300) }),
    '/weft/status/n2/weft-proxy': record('n2', 'weft-proxy'),
    '/weft/status/n3/weft-proxy': '{"node":"n3","daemon":"weft-proxy","pid":"x"}',
  });
  t.teardown(() => store.close());
  const { prefix, records, invalid } = await readStatusRecords(store, '/weft/');
  t.equal(records.length, 3);
  t.equal(invalid.length, 1);
  t.match(invalid[0]?.error, /\/weft\/status\/n3\/weft-proxy: field /, 'names the key and field');
  const probes = new Map<string, ReadyzProbe>([
    ['/weft/status/n2/weft-proxy', { state: 'failing', status: 503, note: 'syncing' }],
  ]);
  const report = buildReport(records, invalid, { prefix, now: NOW, probes });
  t.notOk(report.ready);
  t.equal(report.problems.length, 4);
  t.match(report.problems.join('\n'), /n1\/weft-flanneld: not ready: no lease yet/);
  t.match(report.problems.join('\n'), /n1\/weft-proxy: record not refreshed for 5m/);
  t.match(report.problems.join('\n'), /n2\/weft-proxy: \/readyz answered 503/);
  t.match(report.problems.join('\n'), /n3\/weft-proxy: unreadable record/);
  const stale = report.daemons.find((d) => d.key === '/weft/status/n1/weft-proxy');
  t.equal(stale?.ready, false, 'a stale record is not ready even if it says so');
  const text = formatStatusReport(report, NOW);
  t.match(text, /^n1\s+weft-flanneld\s+no: no lease yet\s+-/m, 'not probed shows -');
  t.match(text, /^n1\s+weft-proxy\s+stale/m);
  t.match(text, /^n2\s+weft-proxy\s+yes\s+503 syncing/m);
  t.match(text, /NOT READY: 4 problem\(s\):/);
});

t.test('no records at all is not ready', async (t) => {
  const report = buildReport([], [], { prefix: '/weft/status/', now: NOW, probes: new Map() });
  t.notOk(report.ready);
  t.match(report.problems[0], /no daemon status records under \/weft\/status\//);
});

t.test('unreachable counts only where it must be reachable (a lab)', async (t) => {
  const store = await storeWith({ '/weft/status/n1/weft-proxy': record('n1', 'weft-proxy') });
  t.teardown(() => store.close());
  const { prefix, records } = await readStatusRecords(store, '/weft');
  const probes = new Map<string, ReadyzProbe>([
    ['/weft/status/n1/weft-proxy', { state: 'unreachable', note: 'ECONNREFUSED' }],
  ]);
  t.ok(buildReport(records, [], { prefix, now: NOW, probes }).ready, 'elsewhere: the registry decides');
  const lab = buildReport(records, [], { prefix, now: NOW, probes, requireReachable: true });
  t.notOk(lab.ready);
  t.match(lab.problems[0], /unreachable \(ECONNREFUSED\)/);
});

t.test('a lab expects both daemons on every node, and a reachable overlay', async (t) => {
  const store = await storeWith({
    '/weft/status/node1/weft-flanneld': record('node1', 'weft-flanneld'),
    '/weft/status/node1/weft-proxy': record('node1', 'weft-proxy'),
  });
  t.teardown(() => store.close());
  const { prefix, records } = await readStatusRecords(store, '/weft');
  const probes = new Map<string, ReadyzProbe>(records.map((r) => [r.key, { state: 'ok', status: 200 }]));
  const reachability = {
    nodes: [
      { node: 'node1', overlayIp: '10.244.1.0' },
      { node: 'node2', overlayIp: '10.244.2.0' },
    ],
    cells: [
      { from: 'node1', to: 'node2', ip: '10.244.2.0', ok: true, rttMs: 0.21 },
      { from: 'node2', to: 'node1', ip: '10.244.1.0', ok: false, error: 'no reply' },
    ],
  };
  const report = buildReport(records, [], {
    prefix,
    now: NOW,
    probes,
    expectNodes: ['node1', 'node2'],
    requireReachable: true,
    reachability,
    lab: 'wt-1-abc',
  });
  t.notOk(report.ready);
  t.same(
    report.daemons.filter((d) => d.missing).map((d) => d.key),
    ['/weft/status/node2/weft-flanneld', '/weft/status/node2/weft-proxy'],
  );
  t.match(report.problems.join('\n'), /node2\/weft-proxy: no status record/);
  t.match(report.problems.join('\n'), /overlay node2 -> node1 \(10\.244\.1\.0\): no reply/);
  const text = formatStatusReport(report, NOW);
  t.match(text, /^node2\s+weft-proxy\s+missing/m);
  t.match(text, /^node1\s+-\s+ok 0\.21ms$/m);
  t.match(text, /^node2\s+FAIL\s+-$/m);
});

t.test('probes: live HTTP, loopback of another node not asked', async (t) => {
  const server = createServer((req, res) => {
    res.writeHead(req.url === '/readyz' ? 503 : 404);
    res.end('not synced yet\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  t.same(await probeReadyz(`http://127.0.0.1:${port}`), {
    state: 'failing',
    status: 503,
    note: 'not synced yet',
  });
  const down = await probeReadyz('http://127.0.0.1:1', 500);
  t.equal(down.state, 'unreachable');
  const store = await storeWith({
    '/weft/status/far/weft-proxy': record('far', 'weft-proxy', { health: `http://127.0.0.1:${port}` }),
    '/weft/status/me/weft-proxy': record('me', 'weft-proxy', { health: `http://127.0.0.1:${port}` }),
  });
  t.teardown(() => store.close());
  const { records } = await readStatusRecords(store, '/weft');
  const probes = await probeAll(records, () => undefined, 'me');
  t.same(probes.get('/weft/status/far/weft-proxy'), { state: 'not-checked', note: 'loopback of node far' });
  t.equal(probes.get('/weft/status/me/weft-proxy')?.status, 503);
  t.ok(isLoopbackUrl('http://[::1]:1'));
  t.notOk(isLoopbackUrl('http://10.0.0.1:1'));
});

t.test('helpers: overlay address, ping summary', async (t) => {
  t.equal(overlayAddress('10.244.7.0/24'), '10.244.7.0');
  t.equal(overlayAddress('10.244.7.1/24'), '10.244.7.0');
  t.equal(overlayAddress('bad'), undefined);
  t.same(
    parsePingSummary(
      '3 packets transmitted, 3 received, 0% packet loss, time 401ms\nrtt min/avg/max/mdev = 0.051/0.072/0.100/0.020 ms\n',
    ),
    { received: 3, avgMs: 0.072 },
  );
  t.same(parsePingSummary('3 packets transmitted, 0 received, 100% packet loss'), { received: 0 });
});

t.test('lab runs: resolving RUN and places', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weftctl-lab-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.throws(() => resolveRun(dir, undefined), /no lab is running/);
  const state = (runId: string, pid: number): LabRunState => ({
    runId,
    supervisorPid: pid,
    phase: 'ready',
    startedAt: iso(60),
    updatedAt: iso(1),
    socket: join(dir, `${runId}.sock`),
    logFile: join(dir, `${runId}.log`),
    labDir: '/tmp/x',
    daemons: true,
    underlay: { name: 'underlay', netns: `${runId}-ul`, ip: '10.99.0.1' },
    nodes: [{ name: 'node1', alias: 'n1', netns: `${runId}-n1`, ip: '10.99.0.11' }],
    etcd: [
      { name: 'etcd1', netns: `${runId}-etcd1`, ip: '10.99.0.101', endpoint: 'http://10.99.0.101:2379' },
    ],
    pods: [{ name: 'web', node: 'node1', netns: `${runId}-n1-web`, ip: '10.244.1.2' }],
  });
  writeRunState(dir, state(`wt-${process.pid}-aaaaaa`, process.pid));
  // PID 2^22+1 is above pid_max's ceiling: never a live process.
  writeRunState(dir, state('wt-4194305-bbbbbb', 4194305));
  t.equal(resolveRun(dir, undefined).state.runId, `wt-${process.pid}-aaaaaa`, 'the only live one');
  t.equal(resolveRun(dir, 'bbbbbb').alive, false, 'by the tail of its id, dead or alive');
  t.throws(() => resolveRun(dir, 'cccccc'), /no lab run cccccc/);
  writeRunState(dir, state(`wt-${process.pid}-dddddd`, process.pid));
  t.throws(() => resolveRun(dir, undefined), { name: 'UsageError', message: /2 labs are running; name one/ });
  const s = state('wt-1-x', 1);
  t.equal(labPlace(s, 'n1').netns, 'wt-1-x-n1');
  t.equal(labPlace(s, 'node1').netns, 'wt-1-x-n1');
  t.equal(labPlace(s, 'underlay').netns, 'wt-1-x-ul');
  t.equal(labPlace(s, 'etcd1').netns, 'wt-1-x-etcd1');
  t.equal(labPlace(s, 'n1/web').netns, 'wt-1-x-n1-web');
  t.throws(
    () => labPlace(s, 'n7'),
    /has no node, server or pod "n7"; it has: n1 \(node1\), underlay, etcd1, node1\/web/,
  );
});

t.test('weft-controller: the leader is named, escaped; controllers without a leader fail', async (t) => {
  const store = await storeWith({
    '/weft/status/n1/weft-controller': record('n1', 'weft-controller', {
      detail: { leader: 'yes', identity: 'n1_1', holder: 'n1_1' },
    }),
    '/weft/status/n2/weft-controller': record('n2', 'weft-controller', {
      detail: { leader: 'no', identity: 'n2_7', holder: 'n1_1' },
    }),
  });
  t.teardown(() => store.close());
  const { prefix, records, invalid } = await readStatusRecords(store, '/weft');
  t.equal(records.length, 2, 'weft-controller records are readable');
  const probes = new Map<string, ReadyzProbe>();
  const leader = { identity: 'n1_1\u001b[2J', token: 42, acquiredAt: iso(90) };
  const report = buildReport(records, invalid, { prefix, now: NOW, probes, controllerLeader: leader });
  t.ok(report.ready, 'ready with a leader');
  t.same(report.controllerLeader, leader, 'in the JSON form');
  const text = formatStatusReport(report, NOW);
  t.match(text, /^weft-controller leader: n1_1\\x1b\[2J \(for 90s, term 42\)$/m, 'named, escaped');
  t.notOk(text.includes('\u001b'), 'no escape sequence reaches the terminal');
  t.match(text, /^n2\s+weft-controller\s+yes\s+.*leader=no identity=n2_7 holder=n1_1$/m);

  // Every controller standing by (between a leader's death and the next election).
  const standby = await readStatusRecords(
    await storeWith({
      '/weft/status/n2/weft-controller': record('n2', 'weft-controller', {
        detail: { leader: 'no', identity: 'n2_7' },
      }),
    }),
    '/weft',
  );
  const none = buildReport(standby.records, [], { prefix, now: NOW, probes });
  t.notOk(none.ready, 'controllers running and none leading');
  t.match(none.problems, ['weft-controller: no leader elected']);
  const solo = await readStatusRecords(
    await storeWith({
      '/weft/status/n1/weft-controller': record('n1', 'weft-controller', {
        detail: { leader: 'yes', identity: 'n1_1' },
      }),
    }),
    '/weft',
  );
  t.ok(
    buildReport(solo.records, [], { prefix, now: NOW, probes }).ready,
    'a controller leading without an election (--leader-elect=false) is no problem',
  );
  // A lab's nodes must each run the node daemons, not a controller.
  const lab = buildReport([], [], { prefix, now: NOW, probes, expectNodes: ['n1'] });
  t.same(lab.daemons.map((d) => d.daemon).sort(), ['weft-flanneld', 'weft-proxy']);
});

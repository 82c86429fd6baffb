/**
 * `make demo` (`node dist/scripts/demo.js`): brings up a lab of three nodes and etcd, each in
 * its own network namespace on one underlay bridge, shows its topology, checks that every node
 * reaches every other node and etcd, starts weft-flanneld everywhere, puts a pod on each node
 * through weft-cni, shows the pods talking across nodes, and tears it all down. Exits 0 when every check passed,
 * 1 when one failed, 130 when interrupted; the lab is torn down in every case.
 *
 * Options: --nodes N (default 3), --etcd-members 1|3 (default 1), --keep-logs (copy the logs
 * to ./lab-logs/<run id> at teardown, as WEFT_LAB_KEEP_LOGS=1 does).
 */
import { parseArgs } from 'node:util';
import { messageOf } from '../src/errors/index.js';
import {
  FlannelCluster,
  Lab,
  deleteRun,
  listNetns,
  newRunId,
  processAlive,
  runDir,
  type LabStep,
} from '../test/lab/index.js';
import { rmSync } from 'node:fs';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3' },
    'etcd-members': { type: 'string', default: '1' },
    'keep-logs': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log('usage: node dist/scripts/demo.js [--nodes N] [--etcd-members 1|3] [--keep-logs]');
  process.exit(0);
}
const nodeCount = Number(values.nodes);
const etcdMembers = Number(values['etcd-members']);
if (etcdMembers !== 1 && etcdMembers !== 3) {
  console.error('demo: --etcd-members must be 1 or 3');
  process.exit(2);
}

const started = Date.now();
const runId = newRunId();
const abort = new AbortController();
let lab: Lab | undefined;
let interrupted = false;
let failures = 0;

const say = (text = ''): void => console.log(text);
const indent = (text: string, by = '      '): string =>
  text
    .split('\n')
    .map((l) => (l ? by + l : l))
    .join('\n');
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

class Interrupted extends Error {}
function checkInterrupted(): void {
  if (interrupted) throw new Interrupted('interrupted');
}

function onSignal(sig: NodeJS.Signals): void {
  if (interrupted) {
    // Second signal: do the least that leaves nothing behind, now.
    say(`\n${sig} again: deleting the namespaces of ${runId} and exiting`);
    void deleteRun(runId)
      .catch(() => undefined)
      .finally(() => {
        rmSync(runDir(runId), { recursive: true, force: true });
        process.exit(130);
      });
    return;
  }
  interrupted = true;
  say(`\n${sig}: stopping after the current step and tearing down (again to force)`);
  abort.abort(new Interrupted(sig));
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

async function bringUp(): Promise<Lab> {
  say(`[1/6] Bringing up the lab, run id ${runId} (every namespace and the temp dir carry it):`);
  const t0 = Date.now();
  const labels: Record<LabStep, string> = {
    cleanup: 'stale runs',
    underlay: 'underlay',
    nodes: 'nodes',
    etcd: 'etcd',
    redis: 'redis',
    ready: 'ready',
  };
  const created = await Lab.create({
    runId,
    nodes: nodeCount,
    etcdMembers: etcdMembers as 1 | 3,
    keepLogs: values['keep-logs'],
    signal: abort.signal,
    onProgress: (step, message) => {
      const text = message.replace(/^\w+: /, '');
      say(`      - ${labels[step]}: ${text}${step === 'etcd' ? ' (waiting until healthy)' : ''}`);
    },
  });
  say(`      lab up in ${seconds(Date.now() - t0)}`);
  return created;
}

async function showTopology(l: Lab): Promise<void> {
  say('\n[2/6] Topology, as the kernel reports it (`ip -d -j addr` in every namespace of the run):');
  say(indent(await l.topology()));
}

async function checkNodes(l: Lab): Promise<void> {
  const count = 3;
  say(
    `\n[3/6] Reachability over the underlay: every node pings every other node's eth0 address and the` +
      `\n      underlay bridge and etcd (${count} packets each; a cell is the average rtt, FAIL if no reply):`,
  );
  const m = await l.reachability({ count, includeServers: true });
  say(indent(m.format()));
  const pairs = m.cells.filter((c) => l.nodes.some((n) => n.name === c.to));
  const bad = m.cells.filter((c) => c.stats.received !== c.stats.transmitted || c.stats.transmitted === 0);
  if (bad.length === 0) {
    say(
      `      => all ${pairs.length} node-to-node pairs reachable (and every node reaches the servers), no loss.`,
    );
  } else {
    failures++;
    for (const c of bad) {
      say(
        `      => FAILED ${c.from} -> ${c.to} (${c.ip}): ${c.stats.received}/${c.stats.transmitted} replies`,
      );
    }
  }
}

async function checkEtcd(l: Lab): Promise<void> {
  say("\n[4/6] Each node reaches etcd: `etcdctl endpoint health` run inside the node's namespace:");
  let ok = 0;
  for (const n of l.nodes) {
    checkInterrupted();
    for (const h of await l.etcdHealth(n)) {
      const how = h.healthy ? `healthy (${h.tookMs?.toFixed(1) ?? '?'} ms)` : `UNHEALTHY: ${h.error ?? ''}`;
      say(`      ${n.name} (${n.ip}) -> ${h.endpoint}  ${how}`);
      if (h.healthy) ok++;
    }
  }
  const expected = l.nodes.length * l.etcdEndpoints.length;
  const first = l.nodes[0];
  const key = `/weft/demo/${runId}`;
  let roundTrip = first !== undefined;
  if (first) {
    await l.etcdctl(first, ['put', key, `written-by-${first.name}`]);
    for (const n of l.nodes.slice(1)) {
      const got = (await l.etcdctl(n, ['get', key, '--print-value-only'])).stdout.trim();
      if (got !== `written-by-${first.name}`) roundTrip = false;
    }
  }
  say(
    `      and a round trip: ${first?.name ?? '?'} puts ${key}, the other nodes read it back: ` +
      (roundTrip ? 'ok' : 'FAILED'),
  );
  if (ok === expected && roundTrip) say(`      => all ${l.nodes.length} nodes reach etcd.`);
  else {
    failures++;
    say(`      => FAILED: ${ok}/${expected} health checks passed${roundTrip ? '' : ', round trip failed'}.`);
  }
}

async function showOverlay(l: Lab): Promise<void> {
  say(
    '\n[5/6] The overlay: weft-flanneld starts on every node, leases a /24 of 10.244.0.0/16 from etcd' +
      "\n      (flannel's keys and JSON), builds flannel.1 (VXLAN) and writes subnet.env; then one pod per" +
      '\n      node is created through weft-cni, and every pod pings and calls every other pod:',
  );
  const cluster = await FlannelCluster.create(l, {
    config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
  });
  await cluster.waitReady();
  const leases = await cluster.leases();
  say('      leases in etcd:');
  for (const [key, value] of leases) say(`        ${key}  ${value}`);
  checkInterrupted();
  const pods = await Promise.all(l.nodes.map((n) => l.addPod(n, 'web')));
  say("      pods (through weft-cni, addresses from each node's lease):");
  for (const p of pods) {
    say(`        ${p.node}/${p.name}  ${p.ip}/${p.prefixLength}  gateway ${p.gateway ?? '-'}`);
    await l.startTcpServer(p, 8080);
  }
  checkInterrupted();
  const head = ['from \\ to', ...pods.map((p) => `${p.node} (${p.ip})`)];
  const rows: string[][] = [];
  let bad = 0;
  for (const from of pods) {
    const row = [from.node];
    for (const to of pods) {
      if (from === to) {
        row.push('-');
        continue;
      }
      const ping = await l.ping(from, to.ip, { count: 3, timeoutS: 2, intervalS: 0.2 });
      let tcp = 'tcp ok';
      try {
        const reply = (await l.tcpRequest(from, to.ip, 8080, { timeoutMs: 3000 })).trim();
        if (reply !== to.name) tcp = 'tcp WRONG';
      } catch {
        tcp = 'tcp FAIL';
      }
      const ok = ping.received > 0 && tcp === 'tcp ok';
      if (!ok) bad++;
      row.push(ping.rtt ? `${ping.rtt.avgMs.toFixed(3)}ms, ${tcp}` : `FAIL, ${tcp}`);
    }
    rows.push(row);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
  say('      cross-node pod traffic over VXLAN (average ping rtt of 3, and one TCP request):');
  say(indent(line(head), '        '));
  for (const r of rows) say(indent(line(r), '        '));
  const pairs = pods.length * (pods.length - 1);
  if (bad === 0) say(`      => all ${pairs} pod pairs talk across nodes (ICMP and TCP).`);
  else {
    failures++;
    say(`      => FAILED: ${bad} of ${pairs} pod pairs cannot talk.`);
  }
}

async function tearDown(l: Lab | undefined): Promise<void> {
  say(`\n[6/6] Tearing down run ${runId}:`);
  if (l) {
    const pids = l.pids();
    say(
      `      stopping ${pids.length} process(es) by PID (${pids.join(', ')}), deleting ` +
        `${l.namespaces().length} namespaces, removing ${l.dir}`,
    );
    const report = await l.teardown({ keepLogs: values['keep-logs'] || failures > 0 ? true : undefined });
    if (report.keptLogs) say(`      logs kept in ${report.keptLogs}`);
    const alive = pids.filter(processAlive);
    if (alive.length) throw new Error(`processes still running: ${alive.join(', ')}`);
  } else {
    // Create failed or was interrupted: it cleans up after itself; make sure of it.
    await deleteRun(runId);
    rmSync(runDir(runId), { recursive: true, force: true });
  }
  const left = (await listNetns()).filter((n) => n.startsWith(`${runId}-`));
  if (left.length) throw new Error(`namespaces still present: ${left.join(', ')}`);
  say(`      => \`ip netns list\` shows no namespace of ${runId}; no process of the lab is left.`);
}

async function main(): Promise<number> {
  say(
    `weft demo: a ${nodeCount}-node lab on this machine, built from network namespaces. Each node is a` +
      `\nnamespace whose eth0 is plugged into one underlay bridge; etcd runs in a namespace of its own.` +
      `\nNothing touches the root namespace's links, routes or firewall.\n`,
  );
  try {
    lab = await bringUp();
    checkInterrupted();
    await showTopology(lab);
    checkInterrupted();
    await checkNodes(lab);
    checkInterrupted();
    await checkEtcd(lab);
    checkInterrupted();
    await showOverlay(lab);
    checkInterrupted();
  } catch (err) {
    if (interrupted) say('      interrupted.');
    else {
      failures++;
      say(`\nFAILED: ${messageOf(err)}`);
    }
  } finally {
    try {
      await tearDown(lab);
    } catch (err) {
      failures++;
      say(`      teardown FAILED: ${messageOf(err)}`);
    }
  }
  const took = seconds(Date.now() - started);
  if (interrupted) {
    say(`\ndemo interrupted (${took}); everything it created is gone.`);
    return 130;
  }
  say(failures ? `\ndemo FAILED (${failures} check(s), ${took})` : `\ndemo OK: every check passed (${took})`);
  return failures ? 1 : 0;
}

process.exitCode = await main();

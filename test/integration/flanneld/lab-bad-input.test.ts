/**
 * weft-flanneld and bad input on a 2-node vxlan lab: a bad network config at start (the daemon
 * waits, live but not ready, names the field, and comes up as soon as a valid config is
 * written), a lease with garbage JSON and a malformed key (logged with their key, everything
 * else still programmed), invalid config changes while running (logged with the field, the
 * running config kept, weft_flanneld_config_stale 1) and a valid change (an in-process restart
 * that keeps the node's subnet and readiness).
 */
import t from 'tap';
import { sleep } from '../../../src/backoff/index.js';
import {
  FlannelCluster,
  Lab,
  listNetns,
  metricValue,
  waitFor,
  type LabNode,
  type LabPod,
  type LogRecord,
} from '../../lab/index.js';
import { assertPodsTalk } from '../../helpers/pod-traffic.js';

t.setTimeout(150_000);

const PREFIX = '/coreos.com/network';
const NETWORK = '10.244.0.0/16';
const GOOD = { Network: NETWORK, Backend: { Type: 'vxlan' } };
const GARBAGE_KEY = `${PREFIX}/subnets/10.244.200.0-24`;
const MALFORMED_KEY = `${PREFIX}/subnets/not-a-subnet`;

const lab = await Lab.create({ nodes: 2 });
t.teardown(async () => {
  await lab.teardown();
  const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
  if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
});
const [n1, n2] = lab.nodes as [LabNode, LabNode];
const cluster = await FlannelCluster.create(lab, {
  config: { Network: NETWORK, SubnetLen: 40, Backend: { Type: 'vxlan' } },
  start: false,
});

/** Waits for a log record of `node`'s daemon that `match` accepts; returns it. */
function waitForLog(node: LabNode, what: string, match: (r: LogRecord) => boolean, timeoutMs = 10_000) {
  return waitFor(async () => (await cluster.logRecords(node)).find(match), {
    what: `${node.name} to log ${what}`,
    timeoutMs,
    intervalMs: 100,
  });
}

async function leaseKeyOf(node: LabNode): Promise<string | undefined> {
  for (const [path, value] of await cluster.leases()) {
    try {
      if ((JSON.parse(value) as { PublicIP?: string }).PublicIP === node.ip) return path;
    } catch {
      /* the garbage entry */
    }
  }
  return undefined;
}

let pods: [LabPod, LabPod] | undefined;

t.test('a bad config at start: the daemon waits, names the field, and starts once it is fixed', async (t) => {
  const startedAt = performance.now();
  for (const n of lab.nodes) cluster.start(n);
  for (const n of lab.nodes) {
    const rec = await waitForLog(n, 'the invalid config', (r) => /network config is invalid/.test(r.msg));
    t.equal(rec.field, 'SubnetLen', `${n.name} names the field: ${rec.msg} (${String(rec.err)})`);
    t.equal(rec.level, 40, 'as a warning');
  }
  const healthz = await cluster.health(n1, '/healthz');
  t.equal(healthz.status, 200, '/healthz 200 while waiting for a valid config');
  const readyz = await cluster.health(n1, '/readyz');
  t.equal(readyz.status, 503, `/readyz 503 while waiting (${readyz.body.trim()})`);
  const m = await cluster.metrics(n1);
  t.equal(metricValue(m, 'weft_flanneld_config_stale'), 1, 'weft_flanneld_config_stale 1');
  t.equal((await cluster.leases()).size, 0, 'no lease is taken with an invalid config');
  t.ok(cluster.daemon(n1).process.running && cluster.daemon(n2).process.running, 'the daemons keep running');

  // Long enough for a retry backoff to have grown to several seconds.
  await sleep(Math.max(0, 8000 - (performance.now() - startedAt)));
  const writing = performance.now();
  await cluster.putConfig(GOOD);
  const written = performance.now();
  await cluster.waitReady(lab.nodes, 15_000);
  const readyMs = performance.now() - written;
  t.comment(
    `both daemons ready ${readyMs.toFixed(0)} ms after a valid config was written ` +
      `(the write took ${(written - writing).toFixed(0)} ms; the bad config was there for 8 s)`,
  );
  // Not at the end of a retry backoff grown over the wait (flannel itself polls every second).
  t.ok(readyMs < 2000, `ready within 2 s of the valid config (${readyMs.toFixed(0)} ms)`);
  t.equal((await cluster.health(n1, '/readyz')).status, 200, '/readyz 200');
  const after = await cluster.metrics(n1);
  t.equal(metricValue(after, 'weft_flanneld_config_stale'), 0, 'weft_flanneld_config_stale 0');
  t.equal((await cluster.leases()).size, 2, 'both nodes leased');

  const [p1, p2] = (await Promise.all(lab.nodes.map((n) => lab.addPod(n, 'web')))) as [LabPod, LabPod];
  for (const p of [p1, p2]) await lab.startTcpServer(p, 8080);
  pods = [p1, p2];
  await assertPodsTalk(t, lab, p1, p2, 'after the config was fixed');
});

t.test('a lease with garbage JSON and a malformed key are logged with their key and skipped', async (t) => {
  const [p1, p2] = pods as [LabPod, LabPod];
  const before1 = await cluster.overlay(n1);
  await cluster.put(GARBAGE_KEY, '{"PublicIP":"10.99.0.50", this is not json');
  await cluster.put(MALFORMED_KEY, JSON.stringify({ PublicIP: '10.99.0.51', PublicIPv6: null }));
  for (const n of lab.nodes) {
    for (const key of [GARBAGE_KEY, MALFORMED_KEY]) {
      const rec = await waitForLog(
        n,
        `a line naming ${key}`,
        (r) => r.level >= 40 && JSON.stringify(r).includes(key),
      );
      t.pass(`${n.name} logs ${key}: ${rec.msg}`);
    }
  }
  t.same(
    await cluster.overlay(n1),
    before1,
    "node1's dataplane is unchanged (node2 still programmed, nothing added)",
  );
  t.ok(
    (await cluster.overlay(n1)).routes.some((r) => r.startsWith('10.244.') && !r.startsWith('10.244.200.')),
  );
  for (const n of lab.nodes)
    t.equal((await cluster.health(n, '/readyz')).status, 200, `${n.name} stays ready`);
  await assertPodsTalk(t, lab, p1, p2, 'with bad entries in the registry');
  await assertPodsTalk(t, lab, p2, p1, 'with bad entries in the registry');

  // A daemon that starts with them there starts as well.
  const key2 = await leaseKeyOf(n2);
  await cluster.daemon(n2).process.stop();
  cluster.start(n2);
  await cluster.waitReady([n2]);
  t.equal(await leaseKeyOf(n2), key2, 'node2 restarted with the bad entries present, same subnet');
  const rec = await waitForLog(n2, 'the skipped entries', (r) => JSON.stringify(r).includes(GARBAGE_KEY));
  t.pass(`the restarted daemon logs the garbage entry: ${rec.msg}`);
  t.notOk(
    (await cluster.overlay(n2)).routes.some((r) => r.startsWith('10.244.200.')),
    'the garbage lease is not programmed',
  );
  await assertPodsTalk(t, lab, p1, p2, 'after node2 restarted among bad entries');
});

t.test(
  'a lease wider than SubnetLen is named and never routed; the leases inside it still are',
  async (t) => {
    const [p1, p2] = pods as [LabPod, LabPod];
    // The widest prefix holding node2's /24 but not node1's: routed, it would take node2's traffic
    // on node1 (and node2's own lease would be skipped as overlapping it: its key sorts first).
    const thirdOf = (key: string | undefined) =>
      Number(/\/subnets\/10\.244\.(\d+)\.0-24$/.exec(key ?? '')?.[1]);
    const [t1, t2] = [thirdOf(await leaseKeyOf(n1)), thirdOf(await leaseKeyOf(n2))];
    t.ok(Number.isInteger(t1) && Number.isInteger(t2), `leases 10.244.${t1}.0/24 and 10.244.${t2}.0/24`);
    const mask = (len: number) => (0xff << (24 - len)) & 0xff;
    let len = 17;
    while (len < 23 && (t1 & mask(len)) === (t2 & mask(len))) len++;
    const wide = `10.244.${t2 & mask(len)}.0-${len}`;
    const wideKey = `${PREFIX}/subnets/${wide}`;
    await cluster.put(
      wideKey,
      JSON.stringify({
        PublicIP: '10.99.0.52',
        BackendType: 'vxlan',
        BackendData: { VNI: 1, VtepMAC: '0a:58:0a:63:00:34' },
      }),
    );
    t.teardown(() => cluster.put(wideKey, '{"PublicIP":"10.99.0.52"}'));
    for (const n of lab.nodes) {
      const rec = await waitForLog(
        n,
        `a line naming ${wide}`,
        (r) => r.level >= 40 && JSON.stringify(r).includes(wide),
      );
      t.pass(`${n.name} logs ${wide}: ${rec.msg}`);
      t.notOk(
        (await cluster.overlay(n)).routes.some((r) => r.startsWith(wide.replace('-', '/'))),
        `${n.name} has no route for ${wide}`,
      );
    }
    await assertPodsTalk(t, lab, p1, p2, 'with a wide lease in the registry');
    await assertPodsTalk(t, lab, p2, p1, 'with a wide lease in the registry');
  },
);

t.test('invalid config changes while running: logged with the field, the running config kept', async (t) => {
  const [p1, p2] = pods as [LabPod, LabPod];
  for (const [bad, field] of [
    [{ Network: NETWORK, SubnetLen: 40, Backend: { Type: 'vxlan' } }, 'SubnetLen'],
    [{ Network: NETWORK, Backend: { Type: 'vxlan', VNI: -1 } }, 'Backend.VNI'],
    ['{"Network": "10.244.0.0/16", ', ''],
  ] as const) {
    const label = typeof bad === 'string' ? 'not JSON' : `bad ${field}`;
    const seen = (await cluster.logRecords(n1)).length;
    await cluster.putConfig(bad);
    for (const n of lab.nodes) {
      const rec = await waitForLog(
        n,
        `the invalid change (${label})`,
        (r) => /network config changed to an invalid value/.test(r.msg) && r.field === field,
      );
      t.pass(
        `${n.name} logs the invalid change (${label}) with field "${String(rec.field)}": ${String(rec.err)}`,
      );
    }
    // Give a wrong restart the time to happen.
    await sleep(500);
    for (const n of lab.nodes) {
      t.ok(cluster.daemon(n).process.running, `${n.name} keeps running`);
      t.equal((await cluster.health(n, '/readyz')).status, 200, `${n.name} stays ready`);
      t.equal(
        metricValue(await cluster.metrics(n), 'weft_flanneld_config_stale'),
        1,
        `${n.name}: weft_flanneld_config_stale 1`,
      );
    }
    const since = (await cluster.logRecords(n1)).slice(seen);
    t.notOk(
      since.some((r) => /restarting with the new config/.test(r.msg)),
      'no restart for an invalid config',
    );
    await assertPodsTalk(t, lab, p1, p2, `with an invalid config (${label})`);
  }
});

t.test('a valid config change restarts the daemon in-process; it stays ready', async (t) => {
  const [p1, p2] = pods as [LabPod, LabPod];
  const keys = [await leaseKeyOf(n1), await leaseKeyOf(n2)];
  // A real change that both subnets still fit: SubnetMax just above the highest lease.
  const thirds = keys.map((k) => Number(/10\.244\.(\d+)\.0-24$/.exec(k ?? '')?.[1]));
  const max = Math.max(...thirds);
  t.ok(max < 255, 'a lower SubnetMax is possible');
  const changed = { ...GOOD, SubnetMax: `10.244.${max}.0` };
  const pids = lab.nodes.map((n) => cluster.daemon(n).process.pid);
  const runsBefore =
    metricValue(await cluster.metrics(n1), 'weft_flanneld_reconcile_runs_total') ?? Number.NaN;

  // Watch /readyz of node1 across the change.
  let polling = true;
  const statuses: number[] = [];
  const poller = (async () => {
    while (polling) {
      statuses.push((await cluster.health(n1, '/readyz')).status);
      await sleep(50);
    }
  })();
  await sleep(300);
  await cluster.putConfig(changed);
  for (const n of lab.nodes) {
    const rec = await waitForLog(n, 'the config change', (r) =>
      /network config changed; restarting/.test(r.msg),
    );
    t.pass(`${n.name}: ${rec.msg}`);
  }
  await cluster.waitReady(lab.nodes, 10_000);
  await sleep(1000);
  polling = false;
  await poller;
  const notReady = statuses.filter((s) => s !== 200);
  t.comment(
    `node1 /readyz across the in-process restart: ${statuses.length} polls, ${notReady.length} not 200 (${[...new Set(notReady)].join(', ')})`,
  );
  t.same(notReady, [], '/readyz answered 200 throughout the in-process restart');
  t.same(
    lab.nodes.map((n) => cluster.daemon(n).process.pid),
    pids,
    'the processes did not exit (in-process restart)',
  );
  t.same([await leaseKeyOf(n1), await leaseKeyOf(n2)], keys, 'both nodes kept their subnets');
  for (const n of lab.nodes) {
    const m = await cluster.metrics(n);
    t.equal(metricValue(m, 'weft_flanneld_config_stale'), 0, `${n.name}: weft_flanneld_config_stale 0`);
  }
  t.ok(
    (metricValue(await cluster.metrics(n1), 'weft_flanneld_reconcile_runs_total') ?? 0) > runsBefore,
    'the counters carried on across the in-process restart (not reset)',
  );
  await assertPodsTalk(t, lab, p1, p2, 'after the config change');
  await assertPodsTalk(t, lab, p2, p1, 'after the config change');
});

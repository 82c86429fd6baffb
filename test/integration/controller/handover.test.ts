/**
 * Two weft-controller processes (bin/weft-controller, as installed) against a real etcd and a
 * real Redis, with a 3 s lease: one leads and writes the slices of a Service with a selector,
 * the other stands by and writes nothing; kill -9 of the leader, and the standby takes over
 * within the lease; a pod added while nobody leads ends up in a slice; no slice is duplicated
 * or lost; /healthz, /readyz, the metrics and the status records tell who leads.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { LeaderElector } from '../../../src/election/index.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { openStore, type Store } from '../../../src/registry/index.js';
import {
  PREFIX,
  endpointsOf,
  pod,
  putObject,
  readSlices,
  selectorService,
} from '../../helpers/controller-objects.js';
import { REPO_ROOT, ensureBuilt, metricValue, parseMetrics } from '../../lab/flanneld.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startProcess, waitFor, type ManagedProcess } from '../../lab/exec.js';
import { freePort, startLocalEtcd, startLocalRedis } from '../../lab/servers.js';

t.setTimeout(120_000);
setRootLogger(silentLogger());

const BIN = join(REPO_ROOT, 'bin', 'weft-controller');
const ELECTION_KEY = `${PREFIX}/leases/weft-controller`;
const LEASE_S = 3;

await ensureBuilt();
const runId = newRunId();
const dir = runDir(runId);
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface Controller {
  id: string;
  process: ManagedProcess;
  healthz: number;
  metrics: number;
}

async function startController(id: string, registryArgs: string[]): Promise<Controller> {
  const healthz = await freePort();
  const metrics = await freePort();
  const process_ = startProcess({
    name: id,
    // tap's hooks ride on NODE_OPTIONS; the daemon must start as it would in production.
    cmd: 'env',
    args: [
      '-u',
      'NODE_OPTIONS',
      BIN,
      ...registryArgs,
      `--identity=${id}`,
      `--node-name=${id}`,
      `--leader-elect-lease-duration=${LEASE_S}s`,
      '--leader-elect-renew-deadline=2s',
      '--leader-elect-retry-period=500ms',
      // The pods' nodes have no weft-flanneld here: keep their endpoints ready throughout.
      '--node-monitor-grace-period=1h',
      `--healthz-bind-address=127.0.0.1:${healthz}`,
      `--metrics-bind-address=127.0.0.1:${metrics}`,
    ],
    logFile: join(dir, `${id}.log`),
  });
  return { id, process: process_, healthz, metrics };
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2_000) });
  return { status: res.status, body: await res.text() };
}

async function leaderGauge(c: Controller): Promise<number | undefined> {
  return metricValue(parseMetrics((await get(c.metrics, '/metrics')).body), 'weft_controller_leader');
}

const ip = (i: number) => `10.244.${1 + Math.floor(i / 200)}.${(i % 200) + 2}`;

async function handover(t: Test, store: Store, registryArgs: string[]): Promise<void> {
  const web = selectorService({ name: 'web', selector: { app: 'web' } });
  await putObject(store, web);
  const PODS = 30;
  for (let i = 0; i < PODS; i++) {
    await putObject(store, pod({ name: `w${i}`, labels: { app: 'web' }, node: `n${i % 3}`, ip: ip(i) }));
  }
  const a = await startController('ctl-a', registryArgs);
  const b = await startController('ctl-b', registryArgs);
  const controllers = [a, b];
  t.teardown(async () => {
    await Promise.all(controllers.map((c) => c.process.stop()));
  });

  const want = Array.from({ length: PODS }, (_, i) => ip(i)).sort();
  await waitFor(async () => JSON.stringify(await endpointsOf(store, 'web')) === JSON.stringify(want), {
    what: 'the slices of web from the first leader',
    timeoutMs: 20_000,
    intervalMs: 100,
  });
  const holder = await LeaderElector.holder(store, ELECTION_KEY);
  t.ok(holder, 'a leader is elected');
  const leader = controllers.find((c) => c.id === holder?.identity) as Controller;
  const standby = controllers.find((c) => c !== leader) as Controller;
  t.ok(leader && standby, `leader ${holder?.identity ?? '?'}, one standby`);
  for (const c of controllers) {
    await waitFor(async () => (await get(c.healthz, '/readyz')).status === 200, {
      what: `${c.id} /readyz`,
      timeoutMs: 10_000,
      intervalMs: 100,
    });
    t.equal((await get(c.healthz, '/healthz')).status, 200, `${c.id} /healthz`);
  }
  t.equal(await leaderGauge(leader), 1, 'the leader says so');
  t.equal(await leaderGauge(standby), 0, 'the standby says so');
  const standbyWrites = metricValue(
    parseMetrics((await get(standby.metrics, '/metrics')).body),
    'weft_controller_slices_written_total',
  );
  t.equal(standbyWrites, 0, 'the standby wrote nothing');
  const records = await waitFor(
    async () => {
      const { items } = await store.list(`${PREFIX}/status/`);
      const recs = items.map(
        (kv) => JSON.parse(kv.value) as { daemon: string; detail: Record<string, string> },
      );
      const ctl = recs.filter((r) => r.daemon === 'weft-controller');
      return ctl.length === 2 && ctl.every((r) => r.detail.holder === leader.id) ? ctl : undefined;
    },
    { what: 'both status records naming the leader', timeoutMs: 15_000, intervalMs: 200 },
  );
  t.same(records.map((r) => r.detail.leader).sort(), ['no', 'yes'], 'leader=yes and leader=no');
  const before = await readSlices(store, 'web');
  t.equal(before.length, 1, `${PODS} pods: one slice`);

  // The leader dies without resigning: its key lives until the lease runs out.
  await leader.process.kill();
  const killedAt = Date.now();
  // Written while nobody leads: must not be lost.
  await putObject(store, pod({ name: 'late', labels: { app: 'web' }, node: 'n1', ip: '10.244.9.9' }));
  await waitFor(async () => (await LeaderElector.holder(store, ELECTION_KEY))?.identity === standby.id, {
    what: 'the standby to take over',
    timeoutMs: 15_000,
    intervalMs: 50,
  });
  const tookOverS = (Date.now() - killedAt) / 1000;
  // The lease, plus one retry period and a margin for a loaded machine.
  t.ok(tookOverS <= LEASE_S + 2, `took over in ${tookOverS.toFixed(1)} s (lease ${LEASE_S} s)`);
  const wantAfter = [...want, '10.244.9.9'].sort();
  await waitFor(async () => JSON.stringify(await endpointsOf(store, 'web')) === JSON.stringify(wantAfter), {
    what: 'the pod added during the handover in a slice',
    timeoutMs: 10_000,
    intervalMs: 50,
  });
  t.ok((Date.now() - killedAt) / 1000 <= LEASE_S + 4, 'written soon after the takeover');
  t.equal(await leaderGauge(standby), 1, 'the new leader says so');

  // Nothing duplicated or lost: every address once, the same slice kept.
  await new Promise((r) => setTimeout(r, 500));
  const after = await readSlices(store, 'web');
  const addresses = after.flatMap((s) => s.endpoints.map((e) => e.addresses[0]));
  t.equal(addresses.length, new Set(addresses).size, 'no endpoint twice');
  t.same([...addresses].sort(), wantAfter, 'none lost');
  t.same(
    after.map((s) => s.name),
    before.map((s) => s.name),
    'the slice written by the first leader was updated, not duplicated',
  );
  t.ok(after.every((s) => s.managedBy === 'weft-controller'));
}

t.test('etcd: kill -9 of the leader, the standby takes over within the lease', async (t) => {
  const etcd = await startLocalEtcd(join(dir, 'etcd'));
  t.teardown(() => etcd.stop());
  const store = await openStore({ registry: 'etcd', etcd: { endpoints: [etcd.endpoint] } });
  t.teardown(() => store.close());
  await handover(t, store, ['--registry=etcd', `--etcd-endpoints=${etcd.endpoint}`]);
});

t.test('Redis: kill -9 of the leader, the standby takes over within the lease', async (t) => {
  const redis = await startLocalRedis(join(dir, 'redis'));
  t.teardown(() => redis.stop());
  const store = await openStore(`${redis.url}/0`);
  t.teardown(() => store.close());
  await handover(t, store, [`--registry=${redis.url}/0`]);
});

/**
 * Smoke test of the lab's ControllerCluster: one weft-controller in a node's namespace against the
 * lab's etcd becomes ready and leader, answers /healthz and /metrics, and a kill -9 by PID ends
 * it. Skipped while the controller is not built (it is written in parallel with the lab helper).
 */
import t from 'tap';
import { ControllerCluster, LEADER_METRIC, Lab, type LabNode } from '../../lab/index.js';
import { ensureBuilt } from '../../lab/flanneld.js';

t.setTimeout(120_000);

await ensureBuilt();
if (!ControllerCluster.available()) {
  t.plan(0, 'dist/src/controller/main.js is not built yet');
} else {
  const lab = await Lab.create({ nodes: 1, etcdMembers: 1 });
  t.teardown(() => lab.teardown({ keepLogs: !t.passing() }));
  const node = lab.nodes[0] as LabNode;

  t.test('a controller starts, leads, reports health and metrics, and dies by kill -9', async (t) => {
    const cluster = await ControllerCluster.create(lab);
    const c = cluster.start(node);
    await cluster.waitReady(c);
    t.equal((await cluster.health(c)).status, 200, '/healthz');
    const leader = await cluster.waitLeader(30_000);
    t.equal(leader.id, c.id, 'the only controller leads');
    t.equal(await cluster.metric(c, LEADER_METRIC), 1);
    t.ok(cluster.logRecords(c).length > 0, 'it logs pino records');
    const second = cluster.start(node);
    t.not(second.healthzPort, c.healthzPort, 'a second controller on the node gets its own ports');
    await cluster.waitReady(second);
    t.notOk(await cluster.isLeader(second), 'the second one stands by');
    await cluster.kill9(c);
    t.notOk(c.process.running, 'killed');
    t.equal((await cluster.health(c)).status, 0, 'nothing answers on its port');
    await cluster.stopAll();
  });
}

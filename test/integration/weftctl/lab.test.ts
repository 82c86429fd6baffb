/**
 * `weftctl lab` end to end through the built CLI (bin/weftctl): up with two nodes and both
 * daemons, status, exec, a pod through weft-cni reached across nodes, `status --lab` with the
 * overlay matrix, and down leaving no namespace, process or file of the run. The lab's state
 * dir is this test's own, and whatever happens the teardown kills every supervisor found there
 * by PID and deletes its run's namespaces.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { listRuns } from '../../../src/weftctl/lab-state.js';
import { run } from '../../lab/exec.js';
import { REPO_ROOT, ensureBuilt } from '../../lab/flanneld.js';
import { pidsMentioning, processAlive } from '../../lab/lab.js';
import { deleteRun, listNetns } from '../../lab/netns.js';

t.setTimeout(400_000);

const stateDir = mkdtempSync(join(tmpdir(), 'weftctl-lab-test-'));
const WEFTCTL = join(REPO_ROOT, 'bin', 'weftctl');
const supervisors = new Set<number>();
const runs = new Set<string>();

t.teardown(async () => {
  for (const r of listRuns(stateDir)) {
    supervisors.add(r.state.supervisorPid);
    runs.add(r.state.runId);
  }
  for (const pid of supervisors) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const id of runs) {
    await deleteRun(id);
    rmSync(join(tmpdir(), id), { recursive: true, force: true });
  }
  rmSync(stateDir, { recursive: true, force: true });
});

/** Runs the built weftctl as a person would (without tap's NODE_OPTIONS hooks). */
function weftctl(...args: string[]) {
  return run('env', ['-u', 'NODE_OPTIONS', WEFTCTL, ...args], {
    allowFail: true,
    timeoutMs: 330_000,
    env: { ...process.env, WEFT_LAB_STATE_DIR: stateDir },
  });
}

await ensureBuilt();

t.test('lab up, use, down', async (t) => {
  const up = await weftctl('lab', 'up', '--nodes', '2');
  for (const r of listRuns(stateDir)) {
    supervisors.add(r.state.supervisorPid);
    runs.add(r.state.runId);
  }
  t.equal(up.code, 0, `lab up: ${up.stdout}${up.stderr}`);
  if (up.code !== 0) return;
  const m = /^lab (wt-(\d+)-[0-9a-f]+) is up/m.exec(up.stdout);
  t.ok(m, 'names the run');
  const runId = m?.[1] ?? '';
  const pid = Number(m?.[2]);
  t.match(up.stdout, /^node1\s+n1\s+10\.99\.0\.11\s+10\.244\.\d+\.0\/24\s/m, 'node1 with its lease');
  t.match(up.stdout, /^node2\s+n2\s+10\.99\.0\.12\s+10\.244\.\d+\.0\/24\s/m);
  t.match(up.stdout, /weftctl lab exec n1 -- weftctl leases/, 'hints');
  t.ok(processAlive(pid), 'the supervisor outlives lab up');

  const st = await weftctl('lab', 'status');
  t.equal(st.code, 0);
  t.match(
    st.stdout,
    new RegExp(`^${runId}\\s+ready\\s+${pid}\\s+n1,n2\\s+-\\s+http://10\\.99\\.0\\.101:2379\\s+\\d+`, 'm'),
  );

  const addr = await weftctl('lab', 'exec', 'n1', '--', 'ip', '-br', 'addr');
  t.equal(addr.code, 0, addr.stderr);
  t.match(addr.stdout, /^eth0@\S+\s+UP\s+10\.99\.0\.11\/24/m);
  t.match(addr.stdout, /^flannel\.1\s+\S+\s+10\.244\.\d+\.0\/32/m);
  t.equal((await weftctl('lab', 'exec', 'n2', '--', 'sh', '-c', 'exit 7')).code, 7, 'exit code passed on');
  const noCmd = await weftctl('lab', 'exec', 'n1');
  t.equal(noCmd.code, 2, 'exec without a command is misuse');
  const badNode = await weftctl('lab', 'exec', 'n9', '--', 'true');
  t.equal(badNode.code, 1);
  t.match(badNode.stderr, /has no node, server or pod "n9"/);

  const pod = await weftctl('lab', 'pod', 'add', 'n2', 'web');
  t.equal(pod.code, 0, pod.stderr);
  const podIp = /^pod node2\/web: (10\.244\.\d+\.\d+) /m.exec(pod.stdout)?.[1];
  t.ok(podIp, `pod address in: ${pod.stdout}`);
  const ping = await weftctl('lab', 'exec', 'n1', '--', 'ping', '-c', '2', '-W', '2', podIp ?? '0.0.0.0');
  t.equal(ping.code, 0, `node1 reaches the pod on node2 over the overlay: ${ping.stdout}`);
  const dup = await weftctl('lab', 'pod', 'add', 'n2', 'web');
  t.equal(dup.code, 1);
  t.match(dup.stderr, /has a pod node2\/web already/);

  // A labelled pod with ports: its Pod object and its attachment are in the lab's etcd.
  const api = await weftctl(
    ...['lab', 'pod', 'add', 'n1', 'api', '--labels', 'app=api,tier=back', '--port', 'http:8080'],
    ...['--port', '9090/udp'],
  );
  t.equal(api.code, 0, api.stderr);
  const apiIp = /^pod node1\/api: (10\.244\.\d+\.\d+) /m.exec(api.stdout)?.[1];
  const etcdGet = async (key: string) => {
    const r = await weftctl(
      ...['lab', 'exec', 'underlay', '--', 'sh', '-c'],
      `ETCDCTL_API=3 etcdctl --endpoints "$WEFTCTL_ETCD_ENDPOINTS" get --print-value-only ${key}`,
    );
    return r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
  };
  t.match(await etcdGet('/weft/pods/default/api'), {
    metadata: { name: 'api', namespace: 'default', labels: { app: 'api', tier: 'back' } },
    spec: {
      nodeName: 'node1',
      containers: [
        {
          ports: [
            { name: 'http', containerPort: 8080, protocol: 'TCP' },
            { containerPort: 9090, protocol: 'UDP' },
          ],
        },
      ],
    },
  });
  t.match(await etcdGet('/weft/podattachments/default/api'), { node: 'node1', ips: [apiIp] });
  const badLabels = await weftctl('lab', 'pod', 'add', 'n1', 'x', '--labels', 'app=a b');
  t.equal(badLabels.code, 2, 'a bad label is misuse');
  t.match(badLabels.stderr, /flag --labels: value "a b" of app must/);
  const del = await weftctl('lab', 'pod', 'del', 'n1', 'api');
  t.equal(del.code, 0, del.stderr);
  t.match(del.stdout, /^pod node1\/api removed$/m);
  t.equal(await etcdGet('/weft/pods/default/api'), undefined, 'Pod object gone');
  t.equal(await etcdGet('/weft/podattachments/default/api'), undefined, 'attachment gone');
  const delAgain = await weftctl('lab', 'pod', 'del', 'n1', 'api');
  t.equal(delAgain.code, 1);
  t.match(delAgain.stderr, /has no pod node1\/api/);

  // weftctl inside the lab finds its etcd by itself.
  const leases = await weftctl('lab', 'exec', 'n1', '--', 'weftctl', 'status', '-o', 'json');
  t.equal(leases.code, 0, `status inside the lab: ${leases.stdout}${leases.stderr}`);

  const status = await weftctl('status', '--lab');
  t.equal(status.code, 0, `status --lab: ${status.stdout}${status.stderr}`);
  for (const node of ['node1', 'node2']) {
    t.match(status.stdout, new RegExp(`^${node}\\s+weft-flanneld\\s+yes\\s+200\\s`, 'm'));
    t.match(status.stdout, new RegExp(`^${node}\\s+weft-proxy\\s+yes\\s+200\\s`, 'm'));
  }
  t.match(status.stdout, /^node1\s+-\s+ok [\d.]+ms$/m, 'node1 reaches node2 over the overlay');
  t.match(status.stdout, /^node2\s+ok [\d.]+ms\s+-$/m);
  t.match(status.stdout, /all 4 daemons on 2 node\(s\) ready, overlay fully reachable/);

  const down = await weftctl('lab', 'down');
  t.equal(down.code, 0, `lab down: ${down.stdout}${down.stderr}`);
  t.match(down.stdout, new RegExp(`lab ${runId} torn down by its supervisor`));
  t.notOk(processAlive(pid), 'supervisor gone');
  t.same(
    (await listNetns()).filter((n) => n.startsWith(`${runId}-`)),
    [],
    'no namespace of the run left',
  );
  t.same(pidsMentioning(runId), [], 'no process of the run left');
  t.same(
    readdirSync(stateDir).filter((f) => f.startsWith(runId)),
    [],
    'no state, socket or log left',
  );
  const after = await weftctl('lab', 'status');
  t.match(after.stdout, /no labs/);
  const again = await weftctl('lab', 'down');
  t.equal(again.code, 1, 'down with no lab is an error');
  t.match(again.stderr, /no lab is running/);
});

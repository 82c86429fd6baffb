/**
 * Issue 6's acceptance for `weftctl apply`: a Service printed by `kubectl create service clusterip
 * ... --dry-run=client -o yaml` is applied with the built weftctl, run inside a lab node against
 * the lab's etcd; it gets a ClusterIP from the service CIDR; an EndpointSlice applied the same way
 * points at two pods; weft-proxy (nftables mode) on a 2-node vxlan lab serves it, so a client pod's
 * requests to the allocated ClusterIP are answered by those pods. Deleting the Service with
 * weftctl frees the address and the proxy stops serving it.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { scenarioMissing } from '../../helpers/proxy-lab-scenario.js';
import {
  FlannelCluster,
  Lab,
  ProxyCluster,
  REPO_ROOT,
  listNetns,
  runClient,
  waitFor,
  type LabNode,
  type RunResult,
} from '../../lab/index.js';

t.setTimeout(300_000);

const WEFTCTL_MAIN = join(REPO_ROOT, 'dist', 'src', 'weftctl', 'main.js');
const TCP_PORT = 8080;
const SERVICE_CIDR = '10.96.0.0/12';

const missing = scenarioMissing('nftables');
if (missing) t.plan(0, missing);
else {
  const lab = await Lab.create({ nodes: 2 });
  t.teardown(async () => {
    await lab.teardown();
    const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
    if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
  });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const flannel = await FlannelCluster.create(lab);
  await flannel.waitReady(lab.nodes, 90_000);
  // As in the proxy lab scenario: real nodes have a default route, and the ClusterIP (not on any
  // link) needs one to reach the proxy's rules at all.
  await Promise.all(
    lab.nodes.map((n) =>
      lab.exec(n, 'ip', ['route', 'replace', 'default', 'via', lab.underlay.ip, 'dev', n.iface]),
    ),
  );
  const [client, epA, epB] = await Promise.all([
    lab.addPod(n1, 'client'),
    lab.addPod(n2, 'ep-a'),
    lab.addPod(n1, 'ep-b'),
  ]);
  await Promise.all([epA, epB].map((p) => lab.startTcpServer(p, TCP_PORT)));
  // Builds dist/ (weftctl included) when the sources are newer.
  const proxy = await ProxyCluster.create(lab, { mode: 'nftables' });
  t.teardown(() => proxy.close());

  /** The built weftctl, run on node 1 against the lab's etcd, as an operator would run it there. */
  const weftctl = (args: string[], input?: string): Promise<RunResult> =>
    lab.exec(
      n1,
      'env',
      [
        '-u',
        'NODE_OPTIONS',
        process.execPath,
        WEFTCTL_MAIN,
        `--etcd-endpoints=${lab.etcdEndpoints.join(',')}`,
        ...args,
      ],
      {
        allowFail: true,
        timeoutMs: 30_000,
        ...(input !== undefined ? { input } : {}),
        env: { PATH: process.env.PATH ?? '' },
      },
    );

  const manifest = (
    await promisify(execFile)('kubectl', [
      'create',
      'service',
      'clusterip',
      'web',
      `--tcp=80:${TCP_PORT}`,
      '--dry-run=client',
      '-o',
      'yaml',
    ])
  ).stdout;

  let clusterIp = '';
  await t.test("kubectl's manifest is applied and gets a ClusterIP", async (t) => {
    const r = await weftctl(['apply', '-f', '-'], manifest);
    t.same(
      { code: r.code, stdout: r.stdout, stderr: r.stderr },
      { code: 0, stdout: 'service/web created\n', stderr: '' },
    );
    const got = await weftctl(['get', 'svc', 'web', '-o', 'json']);
    t.equal(got.code, 0, got.stderr);
    clusterIp = (JSON.parse(got.stdout) as { spec: { clusterIP: string } }).spec.clusterIP;
    t.match(clusterIp, /^10\.(9[6-9]|10\d|11[01])\.\d+\.\d+$/, `allocated from ${SERVICE_CIDR}`);
    const objects = await proxy.objects();
    t.equal(objects.get(`/weft/allocations/clusterips/${clusterIp}`), 'default/web');
  });

  await t.test('an EndpointSlice applied with weftctl points the service at the pods', async (t) => {
    const slice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-pods', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: `80-${TCP_PORT}`, port: TCP_PORT, protocol: 'TCP' }],
      endpoints: [epA, epB].map((p) => ({
        addresses: [p.ip],
        nodeName: p.node,
        conditions: { ready: true },
      })),
    };
    const r = await weftctl(['apply', '-f', '-'], JSON.stringify(slice));
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, 'endpointslice.discovery.k8s.io/web-pods created\n');
    const d = await weftctl(['describe', 'service', 'web']);
    t.equal(d.code, 0, d.stderr);
    for (const p of [epA, epB]) {
      t.match(
        d.stdout,
        new RegExp(`web-pods\\s+${p.ip.replace(/\./g, '\\.')}\\s+\\S+\\s+true\\s+true\\s+false\\s+${p.node}`),
      );
    }
  });

  await t.test('requests to the allocated ClusterIP are answered by the pods', async (t) => {
    await proxy.waitSynced(lab.nodes, 0, 60_000);
    await waitFor(
      async () => {
        const r = await runClient(lab, client, { proto: 'tcp', host: clusterIp, port: 80, count: 1 });
        return Object.keys(r.counts).length > 0;
      },
      { what: `a first answer through ${clusterIp}:80`, timeoutMs: 30_000, intervalMs: 250 },
    );
    const r = await runClient(lab, client, { proto: 'tcp', host: clusterIp, port: 80, count: 30 });
    t.same(r.errors, {}, 'no failed request');
    t.same(Object.keys(r.counts).sort(), ['ep-a', 'ep-b'], `both pods answer: ${JSON.stringify(r.counts)}`);
    t.equal((r.counts['ep-a'] ?? 0) + (r.counts['ep-b'] ?? 0), 30);
  });

  await t.test('weftctl delete frees the ClusterIP and the proxy stops serving it', async (t) => {
    const r = await weftctl(['delete', 'service', 'web']);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, `service "web" deleted (freed ${clusterIp})\n`);
    t.notOk((await proxy.objects()).has(`/weft/allocations/clusterips/${clusterIp}`));
    await waitFor(
      async () => {
        const c = await runClient(lab, client, {
          proto: 'tcp',
          host: clusterIp,
          port: 80,
          count: 1,
          timeoutMs: 500,
        });
        return Object.keys(c.counts).length === 0;
      },
      { what: `${clusterIp} no longer answered`, timeoutMs: 30_000, intervalMs: 250 },
    );
    t.pass('no pod answers the deleted service');
  });
}

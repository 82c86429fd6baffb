/**
 * The acceptance scenario of issue 13 on a 3-node vxlan lab: weft-flanneld and weft-proxy
 * (nftables) on every node, weft-controller running, pods declared with labels through the lab
 * (`Lab.addPod` with labels and ports, weft-cni writing their attachments) and Services with
 * selectors; no EndpointSlice is written by hand except the selector-less Service's.
 *
 * Core (every registry): traffic spreads over 3 labelled pods on 3 nodes; a 4th pod is in every
 * node's nftables within 1 s of being declared and attached; a label removed takes it out within
 * 1 s. Full (etcd): bad pods skipped with a log line naming them while the rest keeps working; a
 * graceful `weftctl delete pod` turns the endpoint terminating, then removes it; a named targetPort
 * reaches each pod on its own port; 250 pods make 3 slices of ≤ 100 and one more pod rewrites
 * exactly one of them; kill -9 of the leading controller and the standby carries on; a node whose
 * weft-flanneld stopped has its endpoints not ready after the grace period (traffic avoids them)
 * and ready again once it is back; the selector-less Service's hand-written slice is untouched.
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { sleep } from '../../src/backoff/index.js';
import { MANAGED_BY_LABEL, podKey, serviceKey } from '../../src/k8s/index.js';
import {
  ControllerCluster,
  FlannelCluster,
  Lab,
  ProxyCluster,
  REPO_ROOT,
  listNetns,
  runClient,
  waitFor,
  type ClientReport,
  type LabNode,
  type LabPod,
  type ControllerInstance,
} from '../lab/index.js';
import { RegistryAgent, type AgentWatchEvent } from './registry-agent.js';
import { PROXY_PREFIX, serviceObject, sliceObject, type ServiceDef } from './proxy-objects.js';
import { attachmentObject, kernelEndpoints, podObject, waitKernel } from './selector-objects.js';

/** Options of {@link selectorLabScenario}. */
export interface SelectorScenarioOptions {
  registry: 'etcd' | 'redis';
  /** The whole scenario; false runs the core only (spread, a pod joining, a label removed). */
  full: boolean;
}

const POD_PORT = 8080;
const WEB: ServiceDef = {
  name: 'web',
  clusterIP: '10.96.110.10',
  ports: [{ name: 'http', port: 80, targetPort: POD_PORT }],
  selector: { app: 'web' },
};
const MANUAL: ServiceDef = {
  name: 'manual',
  clusterIP: '10.96.110.11',
  ports: [{ name: 'http', port: 80, targetPort: POD_PORT }],
};
const NAMED: ServiceDef = {
  name: 'named',
  clusterIP: '10.96.110.12',
  ports: [{ name: 'http', port: 80, targetPort: 'web-port' }],
  selector: { app: 'named' },
};
const BULK: ServiceDef = {
  name: 'bulk',
  clusterIP: '10.96.110.20',
  ports: [{ name: 'http', port: 80, targetPort: POD_PORT }],
  selector: { app: 'bulk' },
};
const WEB_LABELS = { app: 'web' };
const WEB_PORTS = [{ name: 'http', containerPort: POD_PORT }];
/** The grace period the controllers get (kube's default is 40 s; the test cannot wait that long). */
const GRACE_S = 3;
/** Lease settings of the two controllers of the full scenario, so a takeover fits the test. */
const LEASE_ARGS = [
  '--leader-elect-lease-duration=4s',
  '--leader-elect-renew-deadline=3s',
  '--leader-elect-retry-period=1s',
];
const BULK_PODS = 250;
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const ELECTION_KEY = `${PROXY_PREFIX}/leases/weft-controller`;
const SLICES = `${PROXY_PREFIX}/endpointslices/default/`;

/** One endpoint of a stored slice, as the test reads it. */
interface SliceEndpoint {
  addresses: string[];
  conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
  nodeName?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string };
}
interface StoredSlice {
  key: string;
  modRevision: number;
  metadata: { name: string; labels?: Record<string, string> };
  endpoints?: SliceEndpoint[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

const show = (r: ClientReport): string => JSON.stringify({ counts: r.counts, errors: r.errors });
const ms = (v: number): string => `${Math.round(v)} ms`;

/** Runs the scenario in one lab. */
export async function selectorLabScenario(t: Test, opts: SelectorScenarioOptions): Promise<void> {
  const redis = opts.registry === 'redis';
  const t0 = Date.now();
  const lap = (what: string): void => t.comment(`${what} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const lab = await Lab.create({ nodes: 3, redis });
  t.teardown(async () => {
    await lab.teardown();
    const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
    if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
  });
  const [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
  const target = redis ? (lab.redisUrl ?? '') : lab.etcdEndpoints.join(',');
  const registryArgs = redis ? [`--registry=${target}`] : [`--etcd-endpoints=${target}`];
  const flannel = await FlannelCluster.create(lab, { redis });
  await flannel.waitReady(lab.nodes, 90_000);
  // Real nodes have a default route; a ClusterIP is routed by it before the proxy's DNAT.
  await Promise.all(
    lab.nodes.map((n) =>
      lab.exec(n, 'ip', ['route', 'replace', 'default', 'via', lab.underlay.ip, 'dev', n.iface]),
    ),
  );
  const agent = await RegistryAgent.start(lab, target);
  t.teardown(() => agent.close());
  lap(`lab (${opts.registry}) and weft-flanneld ready`);

  /**
   * A pod declared with labels and attached by weft-cni. The lab declares Pod objects in etcd and
   * points weft-cni at etcd; on Redis the test declares the pod there itself, first (a user
   * declares, then the runtime attaches), and points weft-cni's attachment record at Redis.
   */
  const addPod = async (
    node: LabNode,
    name: string,
    labels: Record<string, string> = {},
    ports: { name?: string; containerPort: number }[] = [],
  ): Promise<LabPod> => {
    if (!redis) return lab.addPod(node, name, { labels, ports });
    const p = podObject({ name, nodeName: node.name, labels, ports });
    await agent.put(p.key, p.value);
    return lab.addPod(node, name, {
      labels,
      ports,
      conf: { weftRegistry: { registry: target, prefix: PROXY_PREFIX, nodeName: node.name } },
    });
  };

  // The Services first, and the one hand-written slice (for the Service without a selector).
  const services = opts.full ? [WEB, MANUAL, NAMED, BULK] : [WEB, MANUAL];
  for (const s of services) await agent.put(serviceObject(s).key, serviceObject(s).value);
  const [client, web1, web2, web3] = await Promise.all([
    addPod(n1, 'client'),
    addPod(n1, 'web-1', WEB_LABELS, WEB_PORTS),
    addPod(n2, 'web-2', WEB_LABELS, WEB_PORTS),
    addPod(n3, 'web-3', WEB_LABELS, WEB_PORTS),
  ]);
  const web = [web1, web2, web3] as LabPod[];
  const manualSlice = sliceObject({
    service: MANUAL.name,
    endpoints: [{ ip: web1.ip, nodeName: web1.node }],
    ports: [{ name: 'http', port: POD_PORT }],
  });
  await agent.put(manualSlice.key, manualSlice.value);
  const manualBefore = await agent.get(manualSlice.key);
  await Promise.all(web.map((p) => lab.startTcpServer(p, POD_PORT)));

  // One controller for the core; two (leader and standby) for the full scenario.
  const ctl = await ControllerCluster.create(lab, {
    redis,
    args: [`--node-monitor-grace-period=${GRACE_S}s`, ...(opts.full ? LEASE_ARGS : [])],
  });
  /** The controllers by identity (their node's name). */
  const controllers = new Map<string, ControllerInstance>();
  for (const n of opts.full ? [n1, n2] : [n1]) controllers.set(n.name, ctl.start(n, { identity: n.name }));
  const controllerLogs = async (): Promise<string> =>
    [...controllers.values()].map((c) => ctl.log(c)).join('\n');
  const proxy = await ProxyCluster.create(lab, {
    mode: 'nftables',
    ...(redis ? { args: registryArgs } : {}),
  });
  t.teardown(() => proxy.close());
  await proxy.waitSynced(lab.nodes, 0, 60_000);

  const webEps = (pods: readonly LabPod[]): string[] => pods.map((p) => `${p.ip}:${POD_PORT}`).sort();
  let lastChange = Date.now();
  try {
    await waitKernel(lab, lab.nodes, WEB.clusterIP, 80, (eps) => same(eps, webEps(web)), 60_000);
  } catch (err) {
    t.comment(`controller logs:\n${(await controllerLogs()).split('\n').slice(-30).join('\n')}`);
    throw err;
  }
  lastChange = Date.now();
  lap('weft-controller wrote the slices and weft-proxy programmed them on every node');

  /** The slices weft-controller manages for `service`, as stored now. */
  const managedSlices = async (service: string): Promise<StoredSlice[]> => {
    const { items } = await agent.list(SLICES);
    return items
      .map((kv) => ({
        ...(JSON.parse(kv.value) as Omit<StoredSlice, 'key' | 'modRevision'>),
        key: kv.key,
        modRevision: kv.modRevision,
      }))
      .filter(
        (s) =>
          s.metadata.labels?.[SERVICE_NAME_LABEL] === service &&
          s.metadata.labels[MANAGED_BY_LABEL] === 'weft-controller',
      );
  };
  const endpointsOf = (slices: readonly StoredSlice[]): SliceEndpoint[] =>
    slices.flatMap((s) => s.endpoints ?? []);
  /** Waits out weft-proxy's --min-sync-period (1 s) so a measured change is synced at once. */
  const quiet = async (): Promise<void> => {
    const wait = lastChange + 1300 - Date.now();
    if (wait > 0) await sleep(wait);
  };
  const weftctl = (args: string[]) =>
    lab.exec(
      n1,
      'env',
      [
        ...['-u', 'NODE_OPTIONS', process.execPath, join(REPO_ROOT, 'dist', 'src', 'weftctl', 'main.js')],
        ...(redis ? ['--registry', target] : ['--etcd-endpoints', target]),
        ...args,
      ],
      { allowFail: true, timeoutMs: 30_000 },
    );

  await t.test('3 labelled pods on 3 nodes: the controller writes the slice, traffic spreads', async (t) => {
    const slices = await managedSlices(WEB.name);
    const eps = endpointsOf(slices);
    t.same(
      eps.map((e) => e.targetRef?.name).sort(),
      ['web-1', 'web-2', 'web-3'],
      'the slices of web list the three pods (targetRef)',
    );
    t.same(
      eps.map((e) => `${e.addresses[0]}@${e.nodeName}`).sort(),
      web.map((p) => `${p.ip}@${p.node}`).sort(),
      'with their addresses and nodes',
    );
    t.ok(
      slices.every(
        (s) => s.ports?.length === 1 && s.ports[0]?.port === POD_PORT && s.ports[0]?.name === 'http',
      ),
      'port http resolved to 8080',
      { ports: slices.map((s) => s.ports) },
    );
    const all = (await agent.list(SLICES)).items.filter((kv) =>
      kv.value.includes(`"${SERVICE_NAME_LABEL}":"web"`),
    );
    t.equal(all.length, slices.length, 'every slice of web is the controller’s (none written by hand)');
    const r = await runClient(lab, client, {
      proto: 'tcp',
      host: WEB.clusterIP,
      port: 80,
      count: 300,
      timeoutMs: 2000,
    });
    t.same(r.errors, {}, 'no request failed');
    for (const p of web) {
      const n = r.counts[p.name] ?? 0;
      t.ok(Math.abs(n - 100) <= 40, `${p.name} on ${p.node}: ${n} of 300, within 100 ± 40`);
    }
  });

  const badKeys = {
    json: podKey(PROXY_PREFIX, 'default', 'bad-json'),
    hostile: podKey(PROXY_PREFIX, 'default', 'bad-labels'),
    many: podKey(PROXY_PREFIX, 'default', 'bad-many-labels'),
  };
  const badIps = ['10.251.0.1', '10.251.0.2', '10.251.0.3'];
  if (opts.full) {
    await t.test('bad pods are skipped with a log line naming them; the rest keeps working', async (t) => {
      // Each has an attachment with an address, so only validation keeps it out of the slices.
      const hostile = podObject({
        name: 'bad-labels',
        nodeName: n1.name,
        labels: { app: 'web', 'evil\u001b[31m/key': 'x\ny' },
      });
      const manyLabels: Record<string, string> = { app: 'web' };
      for (let i = 0; i < 10_000; i++) manyLabels[`l${i}`] = 'v';
      const many = podObject({ name: 'bad-many-labels', nodeName: n1.name, labels: manyLabels });
      await agent.put(
        badKeys.json,
        '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad-json","labels":{"app":"web"}',
      );
      await agent.put(badKeys.hostile, hostile.value);
      await agent.put(badKeys.many, many.value);
      for (const [i, name] of ['bad-json', 'bad-labels', 'bad-many-labels'].entries()) {
        const a = attachmentObject({ name, node: n1.name, ip: badIps[i] as string });
        await agent.put(a.key, a.value);
      }
      lastChange = Date.now();
      const logs = await waitFor(
        async () => {
          const text = await controllerLogs();
          return Object.values(badKeys).every((k) => text.includes(k)) ? text : undefined;
        },
        { what: 'the controllers to log every bad pod', timeoutMs: 10_000, intervalMs: 200 },
      ).catch(() => controllerLogs());
      const lines = logs.split('\n');
      const why: Record<keyof typeof badKeys, RegExp> = {
        json: /not JSON/,
        hostile: /metadata\.labels/,
        many: /metadata\.labels/,
      };
      for (const [what, key] of Object.entries(badKeys) as [keyof typeof badKeys, string][]) {
        const hits = lines.filter((l) => l.includes(key));
        t.ok(
          hits.some((l) => why[what].test(l)),
          `a log line names ${key} and why (${String(why[what])})`,
          { line: hits[0]?.slice(0, 300) },
        );
      }
      t.notOk(logs.includes(String.fromCharCode(27)), 'no raw escape character reaches the log');
      for (const [node, c] of controllers) {
        const invalid = await ctl.metric(c, 'weft_controller_invalid_objects', { kind: 'Pod' });
        t.equal(
          invalid,
          3,
          `the controller on ${node} counts 3 invalid pods (weft_controller_invalid_objects)`,
        );
      }
      for (const [node, c] of controllers) t.ok(c.process.running, `the controller on ${node} still runs`);
      await sleep(500);
      const eps = endpointsOf(await managedSlices(WEB.name)).map((e) => e.addresses[0]);
      t.same(
        eps.filter((ip) => badIps.includes(ip ?? '')),
        [],
        'no bad pod became an endpoint',
      );
      t.same([...eps].sort(), web.map((p) => p.ip).sort(), 'the three good pods are still the endpoints');
    });
  }

  let web4: LabPod | undefined;
  await t.test(
    'a 4th labelled pod is in every node’s nftables within 1 s of being declared and attached',
    async (t) => {
      await quiet();
      // Time zero is the attachment write as a watcher of the registry sees it (a few ms after
      // the write), not addPod's return, which also waits for the plugin process to exit.
      const attachments = await agent.watch(`${PROXY_PREFIX}/podattachments/default/`);
      const tCall = Date.now();
      const pod = await addPod(n2, 'web-4', WEB_LABELS, WEB_PORTS);
      const tReturned = Date.now();
      web4 = pod;
      const seen = await waitKernel(
        lab,
        lab.nodes,
        WEB.clusterIP,
        80,
        (eps) => eps.includes(`${pod.ip}:${POD_PORT}`),
        10_000,
      );
      lastChange = Date.now();
      await attachments.stop();
      const written = attachments.events.find((e) => e.type === 'put' && e.key?.endsWith('/web-4'));
      t.ok(written, 'the watch saw weft-cni write web-4’s attachment');
      const tAttached = Math.min(written?.at ?? tReturned, tReturned);
      const worst = Math.max(...seen.values());
      t.ok(
        worst - tAttached < 1000,
        `web-4 (${pod.ip}) in every node’s nftables ${ms(worst - tAttached)} after its attachment was written, the pod being declared before (< 1000; ${ms(worst - tReturned)} after addPod returned, ${ms(worst - tCall)} after it was called)`,
        {
          perNode: Object.fromEntries([...seen].map(([n, at]) => [n, ms(at - tAttached)])),
          loadAverage: loadavg()
            .map((l) => l.toFixed(1))
            .join(' '),
        },
      );
      await lab.startTcpServer(pod, POD_PORT);
      const r = await runClient(lab, client, {
        proto: 'tcp',
        host: WEB.clusterIP,
        port: 80,
        count: 80,
        timeoutMs: 2000,
      });
      t.ok((r.counts['web-4'] ?? 0) > 0, `web-4 takes part in the spread: ${show(r)}`);
      t.same(r.errors, {}, 'no request failed');
    },
  );

  await t.test('a label removed takes the pod out of every node’s nftables within 1 s', async (t) => {
    const pod = web4;
    if (!pod) return t.fail('web-4 was not added');
    await quiet();
    const key = podKey(PROXY_PREFIX, 'default', 'web-4');
    const stored = await agent.get(key);
    if (!stored) return t.fail(`${key} is not in the registry`);
    const obj = JSON.parse(stored.value) as { metadata: { labels?: Record<string, string> } };
    delete obj.metadata.labels?.app;
    const { t: tWrite } = await agent.put(key, obj);
    const seen = await waitKernel(
      lab,
      lab.nodes,
      WEB.clusterIP,
      80,
      (eps) => !eps.includes(`${pod.ip}:${POD_PORT}`),
      10_000,
    );
    lastChange = Date.now();
    const worst = Math.max(...seen.values());
    t.ok(
      worst - tWrite < 1000,
      `web-4 out of every node’s nftables ${ms(worst - tWrite)} after the label was removed (< 1000)`,
      {
        perNode: Object.fromEntries([...seen].map(([n, at]) => [n, ms(at - tWrite)])),
      },
    );
    const eps = endpointsOf(await managedSlices(WEB.name)).map((e) => e.targetRef?.name);
    t.notOk(eps.includes('web-4'), 'and out of the slices');
    const r = await runClient(lab, client, {
      proto: 'tcp',
      host: WEB.clusterIP,
      port: 80,
      count: 60,
      timeoutMs: 2000,
    });
    t.notOk(r.counts['web-4'], `60 requests never reach web-4: ${show(r)}`);
    t.same(r.errors, {}, 'no request failed');
  });

  if (!opts.full) return;

  await t.test(
    'weftctl label brings it back; a graceful delete turns it terminating, then removes it',
    async (t) => {
      const pod = web4;
      if (!pod) return t.fail('web-4 was not added');
      const label = await weftctl(['label', 'pod', 'web-4', 'app=web']);
      t.equal(label.code, 0, `weftctl label pod web-4 app=web exits 0 ${label.stderr.trim()}`);
      await waitKernel(
        lab,
        lab.nodes,
        WEB.clusterIP,
        80,
        (eps) => eps.includes(`${pod.ip}:${POD_PORT}`),
        10_000,
      );
      const watch = await agent.watch(SLICES);
      const tDelete = Date.now();
      const del = await weftctl(['delete', 'pod', 'web-4', '--grace-period=2']);
      const tDone = Date.now();
      t.equal(
        del.code,
        0,
        `weftctl delete pod web-4 --grace-period=2 exits 0 after ${ms(tDone - tDelete)} ${del.stderr.trim()}`,
      );
      const gone = await waitFor(
        async () => !endpointsOf(await managedSlices(WEB.name)).some((e) => e.targetRef?.name === 'web-4'),
        { what: 'web-4 to leave the slices', timeoutMs: 5_000, intervalMs: 100 },
      ).catch(() => false);
      await watch.stop();
      lastChange = Date.now();
      const states = watch.events
        .filter(
          (e): e is AgentWatchEvent & { value: string } => e.type === 'put' && typeof e.value === 'string',
        )
        .map((e) => ({
          at: e.at,
          ep: ((JSON.parse(e.value) as StoredSlice).endpoints ?? []).find(
            (x) => x.targetRef?.name === 'web-4',
          ),
        }));
      const terminating = states.find((s) => s.ep?.conditions?.terminating === true);
      t.ok(terminating, 'a slice write showed web-4 terminating', {
        states: states.map((s) => s.ep?.conditions ?? 'absent'),
      });
      t.equal(terminating?.ep?.conditions?.ready, false, 'with ready=false');
      t.ok(
        terminating && terminating.at - tDelete < 2000 + 1500,
        `while the grace period ran (${terminating ? ms(terminating.at - tDelete) : '?'} after the command started)`,
      );
      t.ok(gone, 'then web-4 left the slices');
      t.equal(
        await agent.get(podKey(PROXY_PREFIX, 'default', 'web-4')),
        undefined,
        'and the pod key is gone',
      );
      const eps = await kernelEndpoints(lab, n1, WEB.clusterIP, 80);
      t.same(eps, webEps(web), 'node1’s nftables is back to the three pods');
    },
  );

  await t.test('a named targetPort reaches each pod on its own container port', async (t) => {
    const [a, b] = await Promise.all([
      addPod(n1, 'np-a', { app: 'named' }, [{ name: 'web-port', containerPort: 8081 }]),
      addPod(n3, 'np-b', { app: 'named' }, [{ name: 'web-port', containerPort: 8082 }]),
    ]);
    await Promise.all([lab.startTcpServer(a, 8081), lab.startTcpServer(b, 8082)]);
    const want = [`${a.ip}:8081`, `${b.ip}:8082`].sort();
    await waitKernel(lab, lab.nodes, NAMED.clusterIP, 80, (eps) => same(eps, want), 15_000);
    lastChange = Date.now();
    t.pass(`every node maps ${NAMED.clusterIP}:80 to ${want.join(' and ')}`);
    const slices = await managedSlices(NAMED.name);
    const mapping = slices
      .flatMap((s) => (s.endpoints ?? []).map((e) => `${e.targetRef?.name}:${s.ports?.[0]?.port}`))
      .sort();
    t.same(mapping, ['np-a:8081', 'np-b:8082'], 'the slices carry each pod’s port');
    const r = await runClient(lab, client, {
      proto: 'tcp',
      host: NAMED.clusterIP,
      port: 80,
      count: 40,
      timeoutMs: 2000,
    });
    t.same(r.errors, {}, `no request failed: ${show(r)}`);
    t.ok(
      (r.counts['np-a'] ?? 0) > 0 && (r.counts['np-b'] ?? 0) > 0,
      'both pods answered, each on its own port',
    );
  });

  await t.test(
    `${BULK_PODS} matching pods: 3 slices of ≤ 100; one more pod rewrites exactly one slice`,
    async (t) => {
      const ipOf = (i: number): string => `10.250.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      const writePod = async (i: number): Promise<void> => {
        const name = `bulk-${i}`;
        const node = lab.nodes[i % 3] as LabNode;
        const p = podObject({ name, nodeName: node.name, labels: { app: 'bulk' }, ports: WEB_PORTS });
        const a = attachmentObject({ name, node: node.name, ip: ipOf(i) });
        await agent.put(p.key, p.value);
        await agent.put(a.key, a.value);
      };
      const tStart = Date.now();
      const queue = Array.from({ length: BULK_PODS }, (_, i) => i);
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let i = queue.shift(); i !== undefined; i = queue.shift()) await writePod(i);
        }),
      );
      const full = await waitFor(
        async () => {
          const s = await managedSlices(BULK.name);
          return endpointsOf(s).length === BULK_PODS ? s : undefined;
        },
        { what: `${BULK_PODS} endpoints in bulk's slices`, timeoutMs: 60_000, intervalMs: 250 },
      );
      t.comment(`${BULK_PODS} pods written and in slices ${ms(Date.now() - tStart)} after the first write`);
      t.equal(
        full.length,
        3,
        `3 slices (${full.map((s) => (s.endpoints ?? []).length).join(', ')} endpoints)`,
      );
      t.ok(
        full.every((s) => (s.endpoints ?? []).length <= 100),
        'each of ≤ 100 endpoints',
      );
      t.equal(new Set(endpointsOf(full).map((e) => e.addresses[0])).size, BULK_PODS, 'every pod once');
      await sleep(1500);
      const before = await managedSlices(BULK.name);
      const watch = await agent.watch(SLICES);
      await writePod(BULK_PODS);
      await waitFor(async () => endpointsOf(await managedSlices(BULK.name)).length === BULK_PODS + 1, {
        what: `pod ${BULK_PODS + 1} in bulk's slices`,
        timeoutMs: 10_000,
        intervalMs: 100,
      });
      await sleep(1500);
      await watch.stop();
      const bulkKeys = new Set(before.map((s) => s.key));
      const writes = watch.events.filter(
        (e) => bulkKeys.has(e.key ?? '') || (e.value ?? '').includes(`"${SERVICE_NAME_LABEL}":"bulk"`),
      );
      t.equal(
        writes.length,
        1,
        `exactly one slice write: ${writes.map((e) => `${e.type} ${e.key}@${e.revision}`).join(', ')}`,
      );
      t.ok(
        writes[0] && writes[0].type === 'put' && bulkKeys.has(writes[0].key ?? ''),
        'an update of an existing slice',
      );
      const seen = await waitKernel(
        lab,
        [n1],
        BULK.clusterIP,
        80,
        (eps) => eps.length === BULK_PODS + 1,
        20_000,
      ).catch(() => undefined);
      t.ok(seen, `node1’s nftables holds all ${BULK_PODS + 1} endpoints of bulk`);
      await agent.del(serviceKey(PROXY_PREFIX, 'default', BULK.name));
      const removed = await waitFor(async () => (await managedSlices(BULK.name)).length === 0, {
        what: "bulk's slices to be removed",
        timeoutMs: 10_000,
        intervalMs: 200,
      }).catch(() => false);
      t.ok(removed, 'deleting the Service removes its slices');
      lastChange = Date.now();
    },
  );

  await t.test('kill -9 of the leading controller: the standby carries on', async (t) => {
    const holder = JSON.parse((await agent.get(ELECTION_KEY))?.value ?? '{}') as {
      holder?: string;
      token?: number;
    };
    const leader = controllers.get(holder.holder ?? '');
    if (!leader) return t.fail(`no known controller holds ${ELECTION_KEY}: ${JSON.stringify(holder)}`);
    const standby = [...controllers.keys()].find((n) => n !== holder.holder) as string;
    const tKill = Date.now();
    await ctl.kill9(leader);
    controllers.delete(holder.holder ?? '');
    const p = podObject({
      name: 'np-c',
      nodeName: n2.name,
      labels: { app: 'named' },
      ports: [{ name: 'web-port', containerPort: 8083 }],
    });
    const a = attachmentObject({ name: 'np-c', node: n2.name, ip: '10.251.1.1' });
    await agent.put(p.key, p.value);
    await agent.put(a.key, a.value);
    const written = await waitFor(
      async () => endpointsOf(await managedSlices(NAMED.name)).some((e) => e.targetRef?.name === 'np-c'),
      { what: 'the standby to write np-c into the slices of named', timeoutMs: 20_000, intervalMs: 100 },
    ).catch(() => false);
    t.ok(
      written,
      `the standby wrote the change ${ms(Date.now() - tKill)} after the leader was killed (lease 4 s)`,
    );
    const now = JSON.parse((await agent.get(ELECTION_KEY))?.value ?? '{}') as {
      holder?: string;
      token?: number;
    };
    t.equal(now.holder, standby, `${standby} holds the election key now`);
    t.ok(
      (now.token ?? 0) > (holder.token ?? 0),
      `with a larger fencing token (${holder.token} → ${now.token})`,
    );
    const slices = await managedSlices(NAMED.name);
    const names = endpointsOf(slices)
      .map((e) => e.targetRef?.name)
      .sort();
    t.same(names, ['np-a', 'np-b', 'np-c'], 'no endpoint of named lost or duplicated');
    await agent.del(p.key);
    lastChange = Date.now();
  });

  await t.test(
    'a node whose weft-flanneld stopped: its endpoints not ready, traffic avoids them; back when it returns',
    async (t) => {
      const readyOf = async (): Promise<boolean | undefined> =>
        endpointsOf(await managedSlices(WEB.name)).find((e) => e.targetRef?.name === 'web-3')?.conditions
          ?.ready;
      const tStop = Date.now();
      await flannel.daemon(n3).process.stop(5_000);
      const down = await waitFor(async () => (await readyOf()) === false, {
        what: 'web-3 not ready in the slices',
        timeoutMs: (GRACE_S + 15) * 1000,
        intervalMs: 100,
      }).catch(() => false);
      t.ok(
        down,
        `web-3 (node3) ready=false ${ms(Date.now() - tStop)} after node3's weft-flanneld stopped (grace ${GRACE_S} s)`,
      );
      t.ok(Date.now() - tStop >= GRACE_S * 1000 - 500, 'not before the grace period');
      await waitKernel(
        lab,
        [n1, n2],
        WEB.clusterIP,
        80,
        (eps) => same(eps, webEps([web1, web2] as LabPod[])),
        10_000,
      );
      lastChange = Date.now();
      const r = await runClient(lab, client, {
        proto: 'tcp',
        host: WEB.clusterIP,
        port: 80,
        count: 60,
        timeoutMs: 2000,
      });
      t.notOk(r.counts['web-3'], `60 requests from node1 avoid web-3: ${show(r)}`);
      t.same(r.errors, {}, 'no request failed');
      const podKeyStill = await agent.get(podKey(PROXY_PREFIX, 'default', 'web-3'));
      t.ok(podKeyStill, 'the pod itself is not deleted');

      const tStart = Date.now();
      flannel.start(n3);
      await flannel.waitReady([n3], 60_000);
      const up = await waitFor(async () => (await readyOf()) === true, {
        what: 'web-3 ready again',
        timeoutMs: 20_000,
        intervalMs: 100,
      }).catch(() => false);
      t.ok(up, `web-3 ready again ${ms(Date.now() - tStart)} after weft-flanneld was restarted`);
      await waitKernel(lab, lab.nodes, WEB.clusterIP, 80, (eps) => same(eps, webEps(web)), 10_000);
      lastChange = Date.now();
      const back = await runClient(lab, client, {
        proto: 'tcp',
        host: WEB.clusterIP,
        port: 80,
        count: 60,
        timeoutMs: 2000,
      });
      t.ok((back.counts['web-3'] ?? 0) > 0, `web-3 gets traffic again: ${show(back)}`);
    },
  );

  await t.test('the selector-less Service’s hand-written slice is untouched', async (t) => {
    const now = await agent.get(manualSlice.key);
    t.equal(now?.modRevision, manualBefore?.modRevision, `${manualSlice.key} was never rewritten`);
    t.equal(now?.value, manualBefore?.value, 'and holds what was written');
    t.same(await managedSlices(MANUAL.name), [], 'the controller wrote no slice for it');
    const r = await runClient(lab, client, {
      proto: 'tcp',
      host: MANUAL.clusterIP,
      port: 80,
      count: 10,
      timeoutMs: 2000,
    });
    t.same(r.counts, { 'web-1': 10 }, `its traffic goes to web-1 as the slice says: ${show(r)}`);
    for (const [node, c] of controllers) t.ok(c.process.running, `the controller on ${node} still runs`);
  });
}

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The lab scenario every weft-proxy mode must pass (issue 4's acceptance, one assertion per
 * point): a 3-node vxlan lab with weft-flanneld and weft-proxy, a client pod on node1 and three
 * endpoint pods (two on node2, one on node3). From the client: 300 requests spread over the three;
 * an endpoint removed from its slice stops getting traffic within 1 s of the registry write;
 * ClientIP affinity pins a client; a service without endpoints is refused at once; an endpoint
 * reaching its own service is answered; a NodePort answers from the underlay; UDP answers, also
 * after its endpoint went away (same source port, so a stale conntrack entry would black-hole it)
 * and after a service went from 0 to N endpoints. Optionally, bad objects in the registry: each
 * reported with its key and field, and the good services keep working.
 */
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { sleep } from '../../src/backoff/index.js';
import {
  FlannelCluster,
  Lab,
  ProxyCluster,
  REPO_ROOT,
  listNetns,
  metricValue,
  runClient,
  startUdpServer,
  waitFor,
  type ClientReport,
  type LabNode,
  type LabPod,
} from '../lab/index.js';
import {
  serviceObject,
  sliceObject,
  type EndpointDef,
  type ServiceDef,
  type SliceDef,
} from './proxy-objects.js';

/** Options of {@link proxyLabScenario}. */
export interface ProxyLabScenarioOptions {
  mode: 'nftables' | 'iptables' | 'userspace';
  /** Also store bad Services and EndpointSlices and check how they are reported. */
  badInput?: boolean;
  /** Extra weft-proxy flags. */
  args?: string[];
  /**
   * Which relay the userspace daemons must report in their log (`native` or `node`), checked
   * before the traffic tests: the scenario then proves that relay carried the traffic.
   */
  expectRelay?: 'native' | 'node';
}

const TCP_PORT = 8080;
const UDP_PORT = 5353;
const NODE_PORT = 30080;
/** The even share of {@link DIST_REQUESTS} over three endpoints, and the allowed deviation. */
const DIST_REQUESTS = 300;
const SHARE = 100;
const SHARE_TOLERANCE = 40;

const WEB: ServiceDef = {
  name: 'web',
  clusterIP: '10.96.100.10',
  ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }],
};
const STICKY: ServiceDef = {
  name: 'sticky',
  clusterIP: '10.96.100.11',
  ports: [{ port: 80, targetPort: TCP_PORT }],
  affinitySeconds: 600,
};
const EMPTY: ServiceDef = {
  name: 'empty',
  clusterIP: '10.96.100.12',
  ports: [{ port: 80, targetPort: TCP_PORT }],
};
const HAIRPIN: ServiceDef = {
  name: 'hairpin',
  clusterIP: '10.96.100.13',
  ports: [{ port: 80, targetPort: TCP_PORT }],
};
const NODEPORT: ServiceDef = {
  name: 'web-np',
  type: 'NodePort',
  clusterIP: '10.96.100.14',
  ports: [{ port: 80, targetPort: TCP_PORT, nodePort: NODE_PORT }],
};
const DNS: ServiceDef = {
  name: 'dns',
  clusterIP: '10.96.100.15',
  ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: UDP_PORT }],
};
const DNS_LATE: ServiceDef = {
  name: 'dns-late',
  clusterIP: '10.96.100.16',
  ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: UDP_PORT }],
};

const BAD_KEYS = {
  ip: '/weft/services/default/bad-ip',
  port: '/weft/services/default/bad-port',
  proto: '/weft/services/default/bad-proto',
  json: '/weft/endpointslices/default/bad-json',
  addr: '/weft/endpointslices/default/bad-addr',
};

function endpointsOf(pods: readonly LabPod[]): EndpointDef[] {
  return pods.map((p) => ({ ip: p.ip, nodeName: p.node }));
}

function tcpSlice(service: string, pods: readonly LabPod[]): SliceDef {
  const port = service === 'web' ? { name: 'http', port: TCP_PORT } : { port: TCP_PORT };
  return { service, endpoints: endpointsOf(pods), ports: [port] };
}

function udpSlice(service: string, pods: readonly LabPod[]): SliceDef {
  return { service, endpoints: endpointsOf(pods), ports: [{ name: 'dns', protocol: 'UDP', port: UDP_PORT }] };
}

const show = (r: ClientReport): string => JSON.stringify({ counts: r.counts, errors: r.errors });

/** The bad objects, as stored text. */
function badObjects(web: readonly LabPod[]): { early: [string, string][]; late: [string, string][] } {
  const svc = (name: string, ip: string, port: number, protocol: string): string =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace: 'default', name },
      spec: { type: 'ClusterIP', clusterIP: ip, ports: [{ protocol, port, targetPort: TCP_PORT }] },
    });
  const badAddr = sliceObject({
    name: 'bad-addr',
    service: 'web',
    endpoints: [{ ip: '10.244.999.1' }, ...endpointsOf(web)],
    ports: [{ name: 'http', port: TCP_PORT }],
  });
  return {
    early: [
      [BAD_KEYS.ip, svc('bad-ip', '10.96.300.1', 80, 'TCP')],
      [BAD_KEYS.port, svc('bad-port', '10.96.100.40', 70000, 'TCP')],
    ],
    late: [
      [BAD_KEYS.proto, svc('bad-proto', '10.96.100.41', 80, 'ICMP')],
      [BAD_KEYS.json, '{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", '],
      [BAD_KEYS.addr, JSON.stringify(badAddr.value)],
    ],
  };
}

/** Why the scenario cannot run yet (a missing piece of weft-proxy), or undefined. */
export function scenarioMissing(mode: string): string | undefined {
  const need = [join('src', 'proxy', 'main.ts'), join('src', 'proxy', mode, 'index.ts')];
  const missing = need.filter((p) => !existsSync(join(REPO_ROOT, p)));
  return missing.length
    ? `weft-proxy ${mode} mode not testable yet: ${missing.join(', ')} missing`
    : undefined;
}

/** Runs the whole scenario for one mode in one lab. */
export async function proxyLabScenario(t: Test, opts: ProxyLabScenarioOptions): Promise<void> {
  const { mode } = opts;
  const t0 = Date.now();
  const lap = (what: string): void => t.comment(`${what} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const lab = await Lab.create({ nodes: 3 });
  t.teardown(async () => {
    await lab.teardown();
    const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
    if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
  });
  const [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
  const flannel = await FlannelCluster.create(lab);
  await flannel.waitReady(lab.nodes, 90_000);
  // Real nodes have a default route. Without one, a packet to a ClusterIP that is not DNATed
  // (no endpoints) dies in the routing decision, before the forward hook where kube-proxy's
  // layout rejects it, and the client would see ENETUNREACH instead of a refusal.
  await Promise.all(
    lab.nodes.map((n) =>
      lab.exec(n, 'ip', ['route', 'replace', 'default', 'via', lab.underlay.ip, 'dev', n.iface]),
    ),
  );

  lap('lab and weft-flanneld ready');
  const [client, epA, epB, epC] = await Promise.all([
    lab.addPod(n1, 'client'),
    lab.addPod(n2, 'ep-a'),
    lab.addPod(n2, 'ep-b'),
    lab.addPod(n3, 'ep-c'),
  ]);
  const eps = [epA, epB, epC];
  const names = eps.map((p) => p.name).sort();
  await Promise.all(eps.flatMap((p) => [lab.startTcpServer(p, TCP_PORT), startUdpServer(lab, p, UDP_PORT)]));

  lap('pods and responders up');
  const proxy = await ProxyCluster.create(lab, {
    mode,
    start: false,
    ...(opts.args ? { args: opts.args } : {}),
  });
  t.teardown(() => proxy.close());
  let lastWrite = 0;
  const put = async (o: { key: string; value: unknown }): Promise<number> =>
    (lastWrite = await proxy.putObject(o));

  for (const s of [WEB, STICKY, EMPTY, HAIRPIN, NODEPORT, DNS, DNS_LATE]) await put(serviceObject(s));
  for (const sl of [
    tcpSlice('web', eps),
    tcpSlice('sticky', eps),
    tcpSlice('hairpin', [epA]),
    tcpSlice('web-np', eps),
    udpSlice('dns', eps),
  ]) {
    await put(sliceObject(sl));
  }
  const bad = badObjects(eps);
  if (opts.badInput) for (const [k, v] of bad.early) lastWrite = await proxy.put(k, v);

  for (const n of lab.nodes) proxy.start(n);
  await proxy.waitSynced(lab.nodes, lastWrite, 60_000);
  // The rules are in; wait until the client's first request makes it through the overlay too.
  await waitFor(
    async () => {
      const r = await runClient(lab, client, { proto: 'tcp', host: WEB.clusterIP, port: 80, count: 1 });
      return Object.keys(r.counts).length > 0;
    },
    {
      what: `${mode}: first answer through ${WEB.clusterIP}`,
      timeoutMs: 15_000,
      intervalMs: 200,
    },
  );

  lap(`weft-proxy (${mode}) synced on every node`);
  if (opts.badInput) {
    await t.test(
      'bad Services and EndpointSlices are reported with key and field, and skipped',
      async (t) => {
        for (const [k, v] of bad.late) lastWrite = await proxy.put(k, v);
        const want: [string, RegExp][] = [
          [BAD_KEYS.ip, /spec\.clusterIP/],
          [BAD_KEYS.port, /spec\.ports\[0\]\.port/],
          [BAD_KEYS.proto, /spec\.ports\[0\]\.protocol/],
          [BAD_KEYS.json, /JSON/i],
          [BAD_KEYS.addr, /endpoints\[0\]\.addresses\[0\]/],
        ];
        for (const node of lab.nodes) {
          const lines = await waitFor(
            () => {
              const log = proxy.log(node).split('\n');
              const found = want.map(([key]) => log.filter((l) => l.includes(key)));
              return found.every((f) => f.length > 0) ? found : undefined;
            },
            { what: `${node.name} to log every bad object`, timeoutMs: 10_000, intervalMs: 200 },
          ).catch(() =>
            want.map(([key]) =>
              proxy
                .log(node)
                .split('\n')
                .filter((l) => l.includes(key)),
            ),
          );
          want.forEach(([key, field], i) => {
            const hits = lines[i] ?? [];
            t.ok(
              hits.some((l) => field.test(l)),
              `${node.name} logs ${key} with its field (${String(field)})`,
              { lines: hits.slice(0, 3) },
            );
          });
          t.ok(proxy.daemon(node).process.running, `${node.name}: weft-proxy still running`);
        }
        // Bad objects change no rule, so no sync need follow them: nothing may be left pending.
        await proxy.waitSynced(lab.nodes);
        t.equal((await proxy.health(n1)).status, 200, 'node1 /healthz still 200');
        const r = await runClient(lab, client, { proto: 'tcp', host: WEB.clusterIP, port: 80, count: 30 });
        t.same(Object.keys(r.counts).sort(), names, `web still served by all three endpoints: ${show(r)}`);
        t.same(r.errors, {}, 'without a failed request');
        const refused = await runClient(lab, client, {
          proto: 'tcp',
          host: '10.96.100.41',
          port: 80,
          count: 1,
          timeoutMs: 500,
        });
        t.same(refused.counts, {}, 'the ICMP service got no rule that leads to an endpoint');
      },
    );
  }

  await t.test(`${DIST_REQUESTS} requests from node1 reach all three endpoints evenly`, async (t) => {
    const r = await runClient(lab, client, {
      proto: 'tcp',
      host: WEB.clusterIP,
      port: 80,
      count: DIST_REQUESTS,
      timeoutMs: 2000,
    });
    t.same(r.errors, {}, 'no request failed');
    t.same(Object.keys(r.counts).sort(), names, `every endpoint answered: ${show(r)}`);
    for (const name of names) {
      const n = r.counts[name] ?? 0;
      t.ok(
        Math.abs(n - SHARE) <= SHARE_TOLERANCE,
        `${name}: ${n} of ${DIST_REQUESTS}, within ${SHARE} ± ${SHARE_TOLERANCE}`,
      );
    }
  });

  await t.test('ClientIP affinity sends every request to one endpoint', async (t) => {
    const r = await runClient(lab, client, { proto: 'tcp', host: STICKY.clusterIP, port: 80, count: 30 });
    t.same(r.errors, {}, 'no request failed');
    const answered = Object.entries(r.counts);
    t.equal(answered.length, 1, `one endpoint answered all: ${show(r)}`);
    t.equal(answered[0]?.[1], 30, 'all 30 requests');
  });

  await t.test('a service without endpoints is refused at once', async (t) => {
    const r = await runClient(lab, client, {
      proto: 'tcp',
      host: EMPTY.clusterIP,
      port: 80,
      count: 3,
      timeoutMs: 3000,
      log: true,
    });
    t.same(r.errors, { ECONNREFUSED: 3 }, `ECONNREFUSED, not a timeout: ${show(r)}`);
    const slowest = Math.max(...r.log.map((l) => l[2]));
    t.ok(slowest < 1000, `every refusal came at once (slowest ${slowest} ms)`);
  });

  await t.test('hairpin: an endpoint reaching its own service is answered', async (t) => {
    const self = await runClient(lab, epA, {
      proto: 'tcp',
      host: HAIRPIN.clusterIP,
      port: 80,
      count: 5,
      timeoutMs: 2000,
    });
    t.same(
      self.counts,
      { [epA.name]: 5 },
      `ep-a through a service whose only endpoint is itself: ${show(self)}`,
    );
    const shared = await runClient(lab, epA, {
      proto: 'tcp',
      host: WEB.clusterIP,
      port: 80,
      count: 30,
      timeoutMs: 2000,
    });
    t.same(shared.errors, {}, `ep-a through web: no request failed: ${show(shared)}`);
    t.ok((shared.counts[epA.name] ?? 0) > 0, 'ep-a was among those answering it');
  });

  await t.test('a NodePort answers from the underlay namespace', async (t) => {
    for (const node of [n1, n2]) {
      const r = await runClient(lab, 'underlay', {
        proto: 'tcp',
        host: node.ip,
        port: NODE_PORT,
        count: 20,
        timeoutMs: 2000,
      });
      t.same(r.errors, {}, `${node.ip}:${NODE_PORT} (${node.name}): no request failed: ${show(r)}`);
      t.ok(
        Object.keys(r.counts).length > 0 && Object.keys(r.counts).every((n) => names.includes(n)),
        `${node.name}: answered by the service's endpoints`,
      );
    }
  });

  await t.test('UDP, also after an endpoint change and after 0 → N endpoints', async (t) => {
    const srcPort = 40053;
    const before = await runClient(lab, client, {
      proto: 'udp',
      host: DNS.clusterIP,
      port: 53,
      count: 10,
      srcPort,
      timeoutMs: 1000,
    });
    t.same(before.errors, {}, `every datagram answered: ${show(before)}`);
    if (Object.keys(before.errors).length) {
      for (const n of lab.nodes) t.comment(await proxy.diagnose(n));
    }
    t.equal(Object.keys(before.counts).length, 1, 'one source port is one flow: one endpoint answers it');
    const [gone] = Object.entries(before.counts).sort((a, b) => b[1] - a[1])[0] ?? [];
    t.ok(gone && names.includes(gone), `the flow from port ${srcPort} is answered by ${gone}`);
    const remaining = eps.filter((p) => p.name !== gone);
    const tWrite = await put(sliceObject(udpSlice('dns', remaining)));
    // Keep the flow alive (as a resolver would), so only conntrack clean-up can move it.
    const moved = await runClient(lab, client, {
      proto: 'udp',
      host: DNS.clusterIP,
      port: 53,
      srcPort,
      timeoutMs: 300,
      intervalMs: 50,
      durationMs: 8000,
      log: true,
      stopOn: remaining.map((p) => p.name),
    });
    const last = moved.log.at(-1);
    t.ok(
      last && remaining.some((p) => p.name === last[1]),
      `the same flow reaches a remaining endpoint after ${gone} was removed (${last ? last[0] - tWrite : '?'} ms after the write): ${show(moved)}`,
    );
    const after = await runClient(lab, client, {
      proto: 'udp',
      host: DNS.clusterIP,
      port: 53,
      count: 10,
      srcPort,
      timeoutMs: 1000,
    });
    t.same(after.errors, {}, `and keeps being answered: ${show(after)}`);
    t.notOk(gone && after.counts[gone], `never by ${gone} again`);

    const latePort = 40054;
    const none = await runClient(lab, client, {
      proto: 'udp',
      host: DNS_LATE.clusterIP,
      port: 53,
      count: 3,
      srcPort: latePort,
      timeoutMs: 300,
    });
    t.same(none.counts, {}, `dns-late without endpoints answers nothing: ${show(none)}`);
    await put(sliceObject(udpSlice('dns-late', [epB])));
    const up = await runClient(lab, client, {
      proto: 'udp',
      host: DNS_LATE.clusterIP,
      port: 53,
      srcPort: latePort,
      timeoutMs: 300,
      intervalMs: 50,
      durationMs: 8000,
      log: true,
      stopOn: [epB.name],
    });
    t.equal(
      up.log.at(-1)?.[1],
      epB.name,
      `the same flow is answered once the service has an endpoint: ${show(up)}`,
    );
  });

  await t.test('removing an endpoint stops traffic to it within 1 s of the registry write', async (t) => {
    // A change right after another waits out --min-sync-period (1 s): start from a quiet state.
    const quiet = lastWrite + 1200 - Date.now();
    if (quiet > 0) await sleep(quiet);
    const removed = epC;
    const readyFile = join(lab.dir, 'removal-client.ready');
    const running = runClient(lab, client, {
      proto: 'tcp',
      host: WEB.clusterIP,
      port: 80,
      durationMs: 3500,
      timeoutMs: 1000,
      log: true,
      readyFile,
    });
    await waitFor(() => existsSync(readyFile), {
      what: 'the client to be running',
      timeoutMs: 10_000,
      intervalMs: 20,
    });
    await sleep(500);
    const tWrite = await put(sliceObject(tcpSlice('web', [epA, epB])));
    const r = await running;
    const hits = r.log.filter((l) => l[1] === removed.name).map((l) => l[0]);
    t.ok(
      hits.some((s) => s < tWrite),
      `${removed.name} got traffic before the write (${hits.filter((s) => s < tWrite).length} requests)`,
    );
    t.ok(
      r.log.some((l) => l[0] > tWrite + 1500),
      'requests kept running for 1.5 s after the write',
    );
    const lastHit = Math.max(...hits);
    const latency = Math.max(0, lastHit - tWrite);
    // The daemon's own view, to tell a slow sync from a slow watch when this fails.
    const samples = await proxy.metrics(n1).catch(() => []);
    const avg = (name: string): string => {
      const sum = metricValue(samples, `${name}_sum`);
      const count = metricValue(samples, `${name}_count`);
      return sum !== undefined && count ? `${((sum / count) * 1000).toFixed(0)} ms over ${count}` : 'n/a';
    };
    t.ok(
      latency < 1000,
      `last request to reach ${removed.name} started ${lastHit - tWrite} ms after the write (< 1000)`,
      {
        partialSyncAvg: avg('weft_proxy_sync_partial_proxy_rules_duration_seconds'),
        programmingLatencyAvg: avg('weft_proxy_network_programming_duration_seconds'),
        loadAverage: loadavg()
          .map((l) => l.toFixed(1))
          .join(' '),
      },
    );
    t.same(r.errors, {}, `no request failed meanwhile: ${show(r)}`);
    const after = await runClient(lab, client, { proto: 'tcp', host: WEB.clusterIP, port: 80, count: 30 });
    t.notOk(after.counts[removed.name], `30 more requests never reach ${removed.name}: ${show(after)}`);
    t.same(Object.keys(after.counts).sort(), [epA.name, epB.name], 'the other two share them');
  });

  if (opts.expectRelay) {
    const want = opts.expectRelay;
    await t.test(`the daemons moved the bytes with the ${want} relay`, async (t) => {
      for (const node of lab.nodes) {
        const log = proxy.log(node);
        const native = /using the native splice relay/.test(log);
        const fallback = /native relay not available; using the Node stream relay/.test(log);
        t.ok(
          want === 'native' ? native && !fallback : fallback && !native,
          `${node.name}: ${want} relay in use`,
        );
        t.match(
          log,
          want === 'native' ? /using the native UDP relay/ : /UDP datagrams through Node sockets/,
          `${node.name}: UDP through the ${want} path`,
        );
      }
    });
  }

  await t.test('the daemons stay healthy, and --cleanup removes what the mode installed', async (t) => {
    for (const node of lab.nodes) {
      t.ok(proxy.daemon(node).process.running, `${node.name}: weft-proxy still running`);
      t.equal((await proxy.health(node)).status, 200, `${node.name}: /healthz 200`);
    }
    await proxy.stop([n3]);
    const r = await proxy.cleanup(n3);
    t.equal(
      r.code,
      0,
      `weft-proxy --cleanup on node3 exits 0: ${r.stderr.trim().split('\n').slice(0, 4).join(' ')}`,
    );
    const rules = await proxy.ruleset(n3);
    // weft-flanneld's own table (weft-flannel) is not the proxy's.
    const left = rules.split('\n').filter((l) => /weft/i.test(l) && !/weft-flannel/i.test(l));
    t.same(left, [], 'node3 has no weft-proxy table, chain or rule left', { ruleset: rules });
  });
}

/**
 * `make demo` (`node dist/scripts/demo.js`): the whole story of weft on one machine, told step by
 * step for someone new. A lab of three nodes and etcd, each node a network namespace on one
 * underlay bridge; weft-flanneld (the overlay) and weft-proxy (Services, nftables mode) on every
 * node; a pod per node through weft-cni, pinging across nodes; a Service over those pods and how
 * 300 requests to its ClusterIP spread; one endpoint taken out and the traffic moving to the
 * others; then a teardown that leaves nothing behind. Exits 0 when every check passed, 1 when one
 * failed, 130 when interrupted; the lab is torn down in every case.
 *
 * Options: --nodes N (default 3, at least 2), --etcd-members 1|3 (default 1), --keep-logs (copy
 * the logs to ./lab-logs/<run id> at teardown, as WEFT_LAB_KEEP_LOGS=1 does; a failed run keeps
 * them anyway).
 */
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { messageOf } from '../src/errors/index.js';
import {
  FlannelCluster,
  Lab,
  ProxyCluster,
  deleteRun,
  ensureBuilt,
  listNetns,
  newRunId,
  processAlive,
  runClient,
  runDir,
  table,
  waitFor,
  type ClientReport,
  type LabNode,
  type LabPod,
  type LabStep,
} from '../test/lab/index.js';
import { stringify as stringifyYaml } from 'yaml';
import { WEFTCTL_MAIN } from '../src/weftctl/lab-control.js';
import { serviceObject, sliceObject, type ServiceDef, type SliceDef } from '../test/helpers/proxy-objects.js';

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
if (!Number.isInteger(nodeCount) || nodeCount < 2) {
  console.error('demo: --nodes must be an integer of at least 2 (the Service needs endpoints to move)');
  process.exit(2);
}
if (etcdMembers !== 1 && etcdMembers !== 3) {
  console.error('demo: --etcd-members must be 1 or 3');
  process.exit(2);
}

/** The demo's Service: a ClusterIP in front of one `web-N` pod per node. */
const SERVICE_IP = '10.96.0.100';
const SERVICE_PORT = 80;
const POD_PORT = 8080;
const WEB: ServiceDef = {
  name: 'web',
  clusterIP: SERVICE_IP,
  ports: [{ name: 'http', port: SERVICE_PORT, targetPort: POD_PORT }],
};
const REQUESTS = 300;
/** How far (as a fraction of the even share) an endpoint's count may be from it and still pass. */
const SHARE_TOLERANCE = 0.4;
const STEPS = 6;

const started = Date.now();
const runId = newRunId();
const abort = new AbortController();
let lab: Lab | undefined;
let proxy: ProxyCluster | undefined;
let interrupted = false;
let failures = 0;
/** One line per finished step, repeated at the end. */
const recap: string[] = [];

const say = (text = ''): void => console.log(text);
const INDENT = '      ';
const indent = (text: string, by = INDENT): string =>
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

/** Prints a step's title and what it shows, in plain words; returns its start time. */
function step(n: number, title: string, ...why: string[]): number {
  say(`\n[${n}/${STEPS}] ${title}`);
  for (const line of why) say(`${INDENT}${line}`);
  return Date.now();
}

/** Prints a step's one-line outcome (and counts a failure); it is repeated in the recap. */
function outcome(n: number, t0: number, ok: boolean, text: string): void {
  if (!ok) failures++;
  const line = `${ok ? 'ok  ' : 'FAIL'} ${text} (${seconds(Date.now() - t0)})`;
  say(`${INDENT}=> ${line}`);
  recap.push(`[${n}] ${line}`);
}

async function bringUp(): Promise<Lab> {
  const t0 = step(
    1,
    `A ${nodeCount}-node lab with etcd`,
    'Each node is a network namespace whose eth0 is plugged into one bridge (the "underlay",',
    'standing in for the data-centre network). etcd, where weft keeps all its state, runs in a',
    'namespace of its own. First we check that the nodes reach each other and etcd.',
  );
  const l = await Lab.create({
    runId,
    nodes: nodeCount,
    etcdMembers: etcdMembers as 1 | 3,
    keepLogs: values['keep-logs'],
    signal: abort.signal,
    onProgress: (s: LabStep) => {
      if (s === 'etcd') say(`${INDENT}starting etcd and waiting until it is healthy...`);
    },
  });
  lab = l;
  say(
    indent(
      table([
        ['role', 'namespace', 'address'],
        ['underlay', l.underlay.netns, `${l.underlay.ip}/${l.underlay.prefixLength} (bridge)`],
        ...l.nodes.map((n) => [n.name, n.netns, `${n.ip}/${n.prefixLength}`]),
        ...l.etcdMembers.map((m) => [m.name, m.netns, `${m.ip}/${m.prefixLength}`]),
      ]),
    ),
  );
  checkInterrupted();

  say(`${INDENT}ping over the underlay (average rtt of 3 packets; FAIL when no reply):`);
  const m = await l.reachability({ count: 3, includeServers: true });
  say(
    indent(
      table([
        ['from \\ to', ...m.targets.map((x) => x.name)],
        ...m.sources.map((from) => [
          from,
          ...m.targets.map((to) => {
            const c = m.get(from, to.name);
            if (!c) return '-';
            if (c.stats.received === 0) return 'FAIL';
            const rtt = c.stats.rtt ? `${c.stats.rtt.avgMs.toFixed(3)} ms` : 'ok';
            return c.stats.loss > 0 ? `${rtt}, ${Math.round(c.stats.loss * 100)}% loss` : rtt;
          }),
        ]),
      ]),
    ),
  );
  const bad = m.cells.filter((c) => c.stats.transmitted === 0 || c.stats.received !== c.stats.transmitted);
  checkInterrupted();

  say(`${INDENT}etcd seen from each node (\`etcdctl endpoint health\` inside the node):`);
  let healthy = 0;
  const rows = [['node', 'endpoint', 'health']];
  for (const n of l.nodes) {
    for (const h of await l.etcdHealth(n)) {
      rows.push([
        n.name,
        h.endpoint,
        h.healthy ? `healthy, ${h.tookMs?.toFixed(1) ?? '?'} ms` : `UNHEALTHY: ${h.error ?? ''}`,
      ]);
      if (h.healthy) healthy++;
    }
  }
  say(indent(table(rows)));
  const expected = l.nodes.length * l.etcdEndpoints.length;
  outcome(
    1,
    t0,
    bad.length === 0 && healthy === expected,
    bad.length === 0 && healthy === expected
      ? `lab up: ${l.nodes.length} nodes reach each other and etcd`
      : `lab: ${bad.length} unreachable pair(s), ${healthy}/${expected} etcd checks healthy`,
  );
  return l;
}

/**
 * weftctl as an operator runs it on a node: inside node1's namespace (the lab's etcd is on the
 * underlay, out of the root namespace's reach), pointed at the lab's etcd. Its output, indented.
 */
async function weftctl(l: Lab, args: readonly string[], input?: string): Promise<string> {
  const node = l.nodes[0] as LabNode;
  const r = await l.exec(
    node,
    'env',
    [
      '-u',
      'NODE_OPTIONS',
      process.execPath,
      WEFTCTL_MAIN,
      '--etcd-endpoints',
      l.etcdEndpoints.join(','),
      ...args,
    ],
    { ...(input !== undefined && { input }), allowFail: true, timeoutMs: 30_000 },
  );
  if (r.code !== 0) throw new Error(`weftctl ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.trimEnd();
}

async function startDaemons(l: Lab): Promise<ProxyCluster> {
  const t0 = step(
    2,
    'weft-flanneld and weft-proxy (nftables mode) on every node',
    'weft-flanneld leases a /24 of 10.244.0.0/16 per node in etcd (same keys and JSON as flannel),',
    "builds the VXLAN device flannel.1 and routes to the other nodes' subnets. weft-proxy watches",
    'Services and EndpointSlices in etcd and turns them into nftables rules, like kube-proxy.',
  );
  const flannel = await FlannelCluster.create(l, {
    config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
  });
  await flannel.waitReady(l.nodes, 60_000);
  checkInterrupted();
  // Real nodes have a default route; a ClusterIP sits on no link, so a node must be able to
  // route it somewhere before the proxy's rules rewrite it to a pod.
  await Promise.all(
    l.nodes.map((n) =>
      l.exec(n, 'ip', ['route', 'replace', 'default', 'via', l.underlay.ip, 'dev', n.iface]),
    ),
  );
  const p = await ProxyCluster.create(l, { mode: 'nftables' });
  proxy = p;
  await p.waitSynced(l.nodes, 0, 60_000);
  checkInterrupted();

  const leases = [...(await flannel.leases())].map(([key, value]) => {
    const v = JSON.parse(value) as { PublicIP?: string; BackendData?: { VtepMAC?: string } };
    return { subnet: key.slice(key.lastIndexOf('/') + 1).replace('-', '/'), ip: v.PublicIP ?? '?', v };
  });
  const rows = [['node', 'subnet (lease)', 'VTEP MAC', 'weft-flanneld', 'weft-proxy']];
  let ok = true;
  for (const n of l.nodes) {
    const lease = leases.find((x) => x.ip === n.ip);
    const fl = (await flannel.health(n, '/readyz')).status;
    const px = (await p.health(n)).status;
    if (!lease || fl !== 200 || px !== 200) ok = false;
    rows.push([
      n.name,
      lease?.subnet ?? 'NONE',
      lease?.v.BackendData?.VtepMAC ?? '-',
      fl === 200 ? 'ready' : `NOT READY (${fl})`,
      px === 200 ? 'synced' : `NOT HEALTHY (${px})`,
    ]);
  }
  say(indent(table(rows)));
  say(`${INDENT}the leases as \`weftctl leases\` shows them (run on node1):`);
  say(indent(await weftctl(l, ['leases']), `${INDENT}  `));
  outcome(
    2,
    t0,
    ok,
    ok
      ? `${l.nodes.length} subnets leased, both daemons healthy on every node`
      : 'a node has no lease or an unhealthy daemon (see the table)',
  );
  return p;
}

interface Pods {
  web: LabPod[];
  client: LabPod;
}

async function podsTalk(l: Lab): Promise<Pods> {
  const t0 = step(
    3,
    'Pods on every node through weft-cni, talking across nodes',
    "weft-cni gives each pod an address from its node's lease. Every web-N pod answers TCP on",
    `port ${POD_PORT} with its own name. Each pod pings every other pod (3 packets, average rtt)`,
    'and sends it one TCP request: all of it crosses nodes inside VXLAN.',
  );
  const first = l.nodes[0] as LabNode;
  const [client, ...web] = await Promise.all([
    l.addPod(first, 'client'),
    ...l.nodes.map((n, i) => l.addPod(n, `web-${i + 1}`)),
  ]);
  await Promise.all(web.map((p) => l.startTcpServer(p, POD_PORT)));
  const pods = [...web, client as LabPod];
  say(
    indent(
      table([
        ['pod', 'node', 'address', 'gateway'],
        ...pods.map((p) => [p.name, p.node, `${p.ip}/${p.prefixLength}`, p.gateway ?? '-']),
      ]),
    ),
  );
  checkInterrupted();

  const rows = [['from \\ to', ...web.map((p) => p.name)]];
  let bad = 0;
  for (const from of web) {
    const row = [from.name];
    for (const to of web) {
      if (from === to) {
        row.push('-');
        continue;
      }
      const ping = await l.ping(from, to.ip, { count: 3, timeoutS: 2, intervalS: 0.2 });
      let tcp = 'tcp ok';
      try {
        if ((await l.tcpRequest(from, to.ip, POD_PORT, { timeoutMs: 3000 })).trim() !== to.name) {
          tcp = 'tcp WRONG';
        }
      } catch {
        tcp = 'tcp FAIL';
      }
      if (ping.received === 0 || tcp !== 'tcp ok') bad++;
      row.push(`${ping.rtt ? `${ping.rtt.avgMs.toFixed(3)} ms` : 'FAIL'}, ${tcp}`);
    }
    rows.push(row);
  }
  say(indent(table(rows)));
  const pairs = web.length * (web.length - 1);
  outcome(
    3,
    t0,
    bad === 0,
    bad === 0
      ? `${pods.length} pods; all ${pairs} cross-node pairs answer ping and TCP`
      : `${bad} of ${pairs} pod pairs cannot talk`,
  );
  return { web, client: client as LabPod };
}

function slice(web: readonly LabPod[], notReady?: LabPod): SliceDef {
  return {
    service: WEB.name,
    endpoints: web.map((p) => ({ ip: p.ip, nodeName: p.node, ready: p !== notReady })),
    ports: [{ name: 'http', port: POD_PORT }],
  };
}

/** The Service and its EndpointSlice as stored in etcd, in a few lines. */
async function showObjects(p: ProxyCluster, web: readonly LabPod[]): Promise<void> {
  const stored = await p.objects();
  const svcKey = serviceObject(WEB).key;
  const sliceKey = sliceObject(slice(web)).key;
  const svc = JSON.parse(stored.get(svcKey) ?? '{}') as {
    spec?: {
      type?: string;
      clusterIP?: string;
      ports?: { port: number; protocol: string; targetPort?: number }[];
    };
  };
  const sl = JSON.parse(stored.get(sliceKey) ?? '{}') as {
    endpoints?: { addresses: string[]; nodeName?: string; conditions?: { ready?: boolean } }[];
    ports?: { port: number }[];
  };
  const port = svc.spec?.ports?.[0];
  say(`${INDENT}${svcKey}`);
  say(
    `${INDENT}  ${svc.spec?.type ?? '?'} ${svc.spec?.clusterIP ?? '?'}:${port?.port ?? '?'}/${port?.protocol ?? '?'}` +
      ` -> target port ${port?.targetPort ?? '?'}`,
  );
  say(`${INDENT}${sliceKey}  (kubernetes.io/service-name=${WEB.name})`);
  const byIp = new Map(web.map((w) => [w.ip, w]));
  say(
    indent(
      table(
        (sl.endpoints ?? []).map((e) => {
          const ip = e.addresses[0] ?? '?';
          return [
            '',
            `${ip}:${sl.ports?.[0]?.port ?? '?'}`,
            byIp.get(ip)?.name ?? '?',
            e.nodeName ?? '-',
            e.conditions?.ready === false ? 'ready=false' : 'ready=true',
          ];
        }),
      ),
    ),
  );
}

/**
 * How node1's rules choose an endpoint for the Service: the elements of the nftables map that
 * weft-proxy fills per service port (`<ClusterIP> . tcp . <port> . <bucket> : <pod> . <port>`,
 * see src/proxy/nftables/fragment.ts), one bucket per ready endpoint; a rule draws the bucket
 * with `numgen random mod N`. Lines to print, or a note when the map cannot be read.
 */
async function pickMap(l: Lab, web: readonly LabPod[]): Promise<string[]> {
  const map = 'cluster-ip-endpoints-tcp';
  const r = await l.exec(l.nodes[0] as LabNode, 'nft', ['list', 'map', 'ip', 'weft', map], {
    allowFail: true,
  });
  const re = /(\d+\.\d+\.\d+\.\d+) \. (\w+) \. (\d+) \. (\d+) : (\d+\.\d+\.\d+\.\d+) \. (\d+)/g;
  const rows = [...r.stdout.matchAll(re)]
    .filter((x) => x[1] === SERVICE_IP && x[3] === String(SERVICE_PORT))
    .sort((x, y) => Number(x[4]) - Number(y[4]))
    .map((x) => [
      `${x[1]} . ${x[2]} . ${x[3]} . ${x[4]}`,
      '->',
      `${x[5]} . ${x[6]}`,
      `(${web.find((w) => w.ip === x[5])?.name ?? '?'})`,
    ]);
  if (rows.length === 0) return [`(no element for ${SERVICE_IP} in map ${map} on node1: ${r.stderr.trim()})`];
  return [
    `node1's nftables map ${map} holds one element per ready endpoint;`,
    `a rule draws the last key part with \`numgen random mod ${rows.length}\`:`,
    ...table(rows)
      .split('\n')
      .map((x) => `  ${x}`),
  ];
}

/** Sends {@link REQUESTS} requests to the ClusterIP, prints how they spread; true when plausible. */
async function spread(l: Lab, pods: Pods, removed?: LabPod): Promise<{ ok: boolean; text: string }> {
  const r: ClientReport = await runClient(l, pods.client, {
    proto: 'tcp',
    host: SERVICE_IP,
    port: SERVICE_PORT,
    count: REQUESTS,
    timeoutMs: 2000,
  });
  const active = pods.web.filter((p) => p !== removed);
  const even = REQUESTS / active.length;
  const rows = [['endpoint', 'node', 'address', 'requests', 'share', '']];
  let ok = true;
  for (const p of pods.web) {
    const n = r.counts[p.name] ?? 0;
    const share = n / REQUESTS;
    const good = p === removed ? n === 0 : Math.abs(n - even) <= SHARE_TOLERANCE * even;
    if (!good) ok = false;
    const bar = '#'.repeat(Math.round(share * 45));
    const note = p === removed ? '(not ready)' : '';
    rows.push([
      p.name,
      p.node,
      `${p.ip}:${POD_PORT}`,
      String(n).padStart(8),
      `${(share * 100).toFixed(1)}%`.padStart(6),
      `${bar} ${good ? '' : 'IMPLAUSIBLE '}${note}`.trim(),
    ]);
  }
  const strangers = Object.entries(r.counts).filter(([who]) => !pods.web.some((p) => p.name === who));
  for (const [who, n] of strangers) rows.push([who, '?', '?', String(n).padStart(8), '', 'UNEXPECTED']);
  const failed = Object.values(r.errors).reduce((a, b) => a + b, 0);
  if (failed) rows.push(['failed', '', '', String(failed).padStart(8), '', JSON.stringify(r.errors)]);
  say(indent(table(rows)));
  ok &&= failed === 0 && strangers.length === 0;
  const range = `${Math.round(even * (1 - SHARE_TOLERANCE))}..${Math.round(even * (1 + SHARE_TOLERANCE))}`;
  const text = ok
    ? `${REQUESTS} requests, 0 failed; ${active.length} endpoints in ${range} (${Math.round(even)} ± ` +
      `${SHARE_TOLERANCE * 100}%)${removed ? `, ${removed.name} 0` : ''}`
    : `implausible: want ${range} each${removed ? `, 0 for ${removed.name}` : ''}, no failure`;
  return { ok, text };
}

async function serviceSpread(l: Lab, p: ProxyCluster, pods: Pods): Promise<void> {
  const t0 = step(
    4,
    `A Service with ${pods.web.length} endpoints, and how ${REQUESTS} requests spread`,
    `Service "web" gets a virtual address, the ClusterIP ${SERVICE_IP}:${SERVICE_PORT}; its`,
    `EndpointSlice lists the ${pods.web.length} web pods. \`weftctl apply\` writes both into etcd, where an`,
    `API server would put them and weft-proxy watches. Then the client pod on node1 opens ${REQUESTS}`,
    `connections to the ClusterIP, one after another; each goes to an endpoint drawn at random,`,
    `so each endpoint should get about 1/${pods.web.length} of them.`,
  );
  // Applied with weftctl, as an operator would: one YAML file with both objects.
  const manifest = [serviceObject(WEB), sliceObject(slice(pods.web))]
    .map((o) => stringifyYaml(o.value))
    .join('---\n');
  const written = Date.now();
  say(`${INDENT}$ weftctl apply -f web.yaml   (the Service and its EndpointSlice, as YAML)`);
  say(indent(await weftctl(l, ['apply', '-f', '-'], manifest), `${INDENT}  `));
  say(`${INDENT}$ weftctl get services`);
  say(indent(await weftctl(l, ['get', 'services']), `${INDENT}  `));
  await showObjects(p, pods.web);
  await p.waitSynced(l.nodes, written, 30_000);
  // The sync is in; make sure the first request makes it through the overlay too.
  await waitFor(
    async () => {
      const r = await runClient(l, pods.client, {
        proto: 'tcp',
        host: SERVICE_IP,
        port: SERVICE_PORT,
        count: 1,
      });
      return Object.keys(r.counts).length > 0;
    },
    { what: `a first answer through ${SERVICE_IP}:${SERVICE_PORT}`, timeoutMs: 15_000, intervalMs: 200 },
  );
  for (const line of await pickMap(l, pods.web)) say(`${INDENT}${line}`);
  checkInterrupted();
  say(`${INDENT}${REQUESTS} requests from client (node1) to ${SERVICE_IP}:${SERVICE_PORT}:`);
  const s = await spread(l, pods);
  outcome(4, t0, s.ok, s.text);
}

async function endpointRemoved(l: Lab, p: ProxyCluster, pods: Pods): Promise<void> {
  const gone = pods.web.at(-1) as LabPod;
  const others = pods.web.filter((w) => w !== gone).map((w) => w.name);
  const t0 = step(
    5,
    `An endpoint taken out: ${gone.name} marked not ready`,
    `This is what Kubernetes does when a readiness probe fails: ${gone.name} stays in the`,
    'EndpointSlice with ready=false and the pod keeps running, but a Service must stop sending it',
    `new connections. weft-proxy rewrites its rules; ${others.join(' and ')} take the traffic.`,
  );
  const written = await p.putObject(sliceObject(slice(pods.web, gone)));
  say(`${INDENT}wrote the EndpointSlice with ${gone.name} ready=false; waiting for every weft-proxy to sync`);
  await p.waitSynced(l.nodes, written, 30_000);
  const lags = await Promise.all(
    l.nodes.map(async (n) => {
      const last = await p.lastSyncMs(n);
      return `${n.name} +${last === undefined ? '?' : Math.max(0, Math.round(last - written))} ms`;
    }),
  );
  say(`${INDENT}synced after the write: ${lags.join(', ')}`);
  // A sync that raced the watch would pass waitSynced: confirm with traffic before measuring.
  await waitFor(
    async () => {
      const r = await runClient(l, pods.client, {
        proto: 'tcp',
        host: SERVICE_IP,
        port: SERVICE_PORT,
        count: 20,
      });
      return !r.counts[gone.name] && Object.keys(r.counts).length > 0;
    },
    { what: `${gone.name} to stop getting traffic`, timeoutMs: 15_000, intervalMs: 200 },
  );
  for (const line of await pickMap(l, pods.web)) say(`${INDENT}${line}`);
  say(`${INDENT}$ weftctl describe service web   (its endpoints, from the EndpointSlice)`);
  say(indent(await weftctl(l, ['describe', 'service', 'web']), `${INDENT}  `));
  let direct = 'no answer';
  try {
    direct = (await l.tcpRequest(pods.client, gone.ip, POD_PORT, { timeoutMs: 3000 })).trim();
  } catch (err) {
    direct = `no answer (${messageOf(err)})`;
  }
  say(
    `${INDENT}${gone.name} itself still runs: a direct request to ${gone.ip}:${POD_PORT} answers "${direct}"`,
  );
  checkInterrupted();
  say(`${INDENT}${REQUESTS} more requests to ${SERVICE_IP}:${SERVICE_PORT}:`);
  const s = await spread(l, pods, gone);
  outcome(
    5,
    t0,
    s.ok && direct === gone.name,
    s.ok && direct !== gone.name ? `${s.text}; but ${gone.name} did not answer directly` : s.text,
  );
}

async function tearDown(l: Lab | undefined): Promise<void> {
  const t0 = step(
    6,
    'Tear-down',
    'Every process is stopped by its PID and every namespace of the run deleted; then we check',
    'that nothing of the run is left (so a second `make demo` starts from a clean machine).',
  );
  proxy?.close();
  if (l) {
    const pids = l.pids();
    say(
      `${INDENT}stopping ${pids.length} processes, deleting ${l.namespaces().length} namespaces, ` +
        `removing ${l.dir}`,
    );
    const report = await l.teardown({ keepLogs: values['keep-logs'] || failures > 0 ? true : undefined });
    if (report.keptLogs) say(`${INDENT}logs kept in ${report.keptLogs}`);
    const alive = pids.filter(processAlive);
    if (alive.length) throw new Error(`processes still running: ${alive.join(', ')}`);
  } else {
    // Create failed or was interrupted: it cleans up after itself; make sure of it.
    await deleteRun(runId);
    rmSync(runDir(runId), { recursive: true, force: true });
  }
  const left = (await listNetns()).filter((n) => n.startsWith(`${runId}-`));
  if (left.length) throw new Error(`namespaces still present: ${left.join(', ')}`);
  outcome(6, t0, true, `no namespace, process or temp dir of ${runId} is left`);
}

async function main(): Promise<number> {
  say(
    `weft demo: a ${nodeCount}-node cluster of network namespaces on this machine, from the network up` +
      "\nto a load-balanced Service. Nothing touches the root namespace's links, routes or firewall." +
      `\nRun id ${runId}: every namespace and the temp dir of this run carry it.`,
  );
  try {
    // The daemons run from dist/: rebuild it first when src/ changed since (quiet when current).
    const tb = Date.now();
    await ensureBuilt();
    if (Date.now() - tb > 1000) say(`(rebuilt dist/ from changed sources in ${seconds(Date.now() - tb)})`);
    const l = await bringUp();
    checkInterrupted();
    const p = await startDaemons(l);
    checkInterrupted();
    const pods = await podsTalk(l);
    checkInterrupted();
    await serviceSpread(l, p, pods);
    checkInterrupted();
    await endpointRemoved(l, p, pods);
    checkInterrupted();
  } catch (err) {
    if (interrupted) say(`${INDENT}interrupted.`);
    else {
      failures++;
      say(`\nFAILED: ${messageOf(err)}`);
      recap.push(`FAIL ${messageOf(err).split('\n')[0]?.slice(0, 90) ?? ''}`);
    }
  } finally {
    try {
      await tearDown(lab);
    } catch (err) {
      failures++;
      say(`${INDENT}teardown FAILED: ${messageOf(err)}`);
      recap.push(`[6] FAIL teardown: ${messageOf(err).slice(0, 80)}`);
    }
  }
  const took = seconds(Date.now() - started);
  if (interrupted) {
    say(`\ndemo interrupted (${took}); everything it created is gone.`);
    return 130;
  }
  say('\nSummary:');
  for (const line of recap) say(`  ${line}`);
  say(failures ? `\ndemo FAILED (${failures} check(s), ${took})` : `\ndemo OK: every check passed (${took})`);
  return failures ? 1 : 0;
}

process.exitCode = await main();

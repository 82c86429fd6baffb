/**
 * `make demo` (`node dist/scripts/demo.js`): the whole story of weft on one machine, told step by
 * step for someone new. A lab of three nodes and etcd, each node a network namespace on one
 * underlay bridge; weft-flanneld (the overlay), weft-proxy (Services, nftables mode) and
 * weft-controller (EndpointSlices from label selectors) on every node; a pod labelled app=web per
 * node through weft-cni, pinging across nodes; a Service selecting app=web, the EndpointSlice the
 * controller wrote for it and how 300 requests to its ClusterIP spread; a new pod joining the
 * spread; a label removed and that pod leaving it; then a teardown that leaves nothing behind.
 * Nothing writes an EndpointSlice by hand. Exits 0 when every check passed, 1 when one failed,
 * 130 when interrupted; the lab is torn down in every case.
 *
 * Options: --nodes N (default 3, at least 2), --etcd-members 1|3 (default 1), --keep-logs (copy
 * the logs to ./lab-logs/<run id> at teardown, as WEFT_LAB_KEEP_LOGS=1 does; a failed run keeps
 * them anyway).
 */
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { messageOf } from '../src/errors/index.js';
import {
  ControllerCluster,
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
import { serviceObject, type ServiceDef } from '../test/helpers/proxy-objects.js';
import { kernelEndpoints, waitKernel } from '../test/helpers/selector-objects.js';

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

/** The demo's Service: a ClusterIP in front of the pods labelled app=web (one `web-N` per node). */
const SERVICE_IP = '10.96.0.100';
const SERVICE_PORT = 80;
const POD_PORT = 8080;
const WEB_LABELS = { app: 'web' };
/** The pods' container port, named as the Service's targetPort names it. */
const WEB_PORTS = [{ name: 'http', containerPort: POD_PORT }];
const WEB: ServiceDef = {
  name: 'web',
  clusterIP: SERVICE_IP,
  ports: [{ name: 'http', port: SERVICE_PORT, targetPort: 'http' }],
  selector: WEB_LABELS,
};
const REQUESTS = 300;
/** How far (as a fraction of the even share) an endpoint's count may be from it and still pass. */
const SHARE_TOLERANCE = 0.4;
const STEPS = 7;

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
    'weft-flanneld, weft-proxy (nftables mode) and weft-controller on every node',
    'weft-flanneld leases a /24 of 10.244.0.0/16 per node in etcd (same keys and JSON as flannel),',
    "builds the VXLAN device flannel.1 and routes to the other nodes' subnets. weft-proxy watches",
    'Services and EndpointSlices in etcd and turns them into nftables rules, like kube-proxy.',
    'weft-controller watches pods and Services and writes the EndpointSlices of every Service',
    "that selects pods by label, like kube-controller-manager's endpointslice controller; the",
    'controllers elect one leader through etcd, and only the leader writes.',
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
  // One per node, named after it; they elect one leader through etcd.
  const ctl = await ControllerCluster.create(l);
  const controllers = l.nodes.map((n) => ctl.start(n, { identity: n.name }));
  const p = await ProxyCluster.create(l, { mode: 'nftables' });
  proxy = p;
  await p.waitSynced(l.nodes, 0, 60_000);
  const leader = await ctl.waitLeader(30_000);
  checkInterrupted();

  const leases = [...(await flannel.leases())].map(([key, value]) => {
    const v = JSON.parse(value) as { PublicIP?: string; BackendData?: { VtepMAC?: string } };
    return { subnet: key.slice(key.lastIndexOf('/') + 1).replace('-', '/'), ip: v.PublicIP ?? '?', v };
  });
  const rows = [['node', 'subnet (lease)', 'VTEP MAC', 'weft-flanneld', 'weft-proxy', 'weft-controller']];
  let ok = true;
  for (const n of l.nodes) {
    const lease = leases.find((x) => x.ip === n.ip);
    const fl = (await flannel.health(n, '/readyz')).status;
    const px = (await p.health(n)).status;
    const c = controllers.find((x) => x.node.name === n.name);
    const ct = c ? (await ctl.health(c)).status : 0;
    if (!lease || fl !== 200 || px !== 200 || ct !== 200) ok = false;
    rows.push([
      n.name,
      lease?.subnet ?? 'NONE',
      lease?.v.BackendData?.VtepMAC ?? '-',
      fl === 200 ? 'ready' : `NOT READY (${fl})`,
      px === 200 ? 'synced' : `NOT HEALTHY (${px})`,
      ct !== 200 ? `NOT HEALTHY (${ct})` : c === leader ? 'leader' : 'standby',
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
      ? `${l.nodes.length} subnets leased, the three daemons healthy on every node, ${leader.identity} leads the controllers`
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
    'Pods labelled app=web on every node through weft-cni, talking across nodes',
    'Each web-N pod is declared in etcd with the label app=web and a container port named http',
    `(\`weftctl lab pod add node1 web-1 --labels app=web --port http:${POD_PORT}\`), then weft-cni gives it an`,
    "address from its node's lease and records that address beside the pod. Every web-N pod answers",
    `TCP on port ${POD_PORT} with its own name. Each pod pings every other pod (3 packets, average`,
    'rtt) and sends it one TCP request: all of it crosses nodes inside VXLAN.',
  );
  const first = l.nodes[0] as LabNode;
  const [client, ...web] = await Promise.all([
    l.addPod(first, 'client'),
    ...l.nodes.map((n, i) => l.addPod(n, `web-${i + 1}`, { labels: WEB_LABELS, ports: WEB_PORTS })),
  ]);
  await Promise.all(web.map((p) => l.startTcpServer(p, POD_PORT)));
  say(`${INDENT}$ weftctl get pods -o wide`);
  say(indent(await weftctl(l, ['get', 'pods', '-o', 'wide']), `${INDENT}  `));
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
      ? `${web.length + 1} pods; all ${pairs} cross-node pairs answer ping and TCP`
      : `${bad} of ${pairs} pod pairs cannot talk`,
  );
  return { web, client: client as LabPod };
}

/** The endpoints of the Service in a node's nftables, as `ip:port`, sorted. */
const endpointsOf = (pods: readonly LabPod[]): string[] => pods.map((p) => `${p.ip}:${POD_PORT}`).sort();
const sameList = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Waits until every node's nftables holds exactly `pods` as the Service's endpoints; returns how
 * long after `since` (epoch ms) each node got there, as `node1 +123 ms` items.
 */
async function kernelFollows(l: Lab, pods: readonly LabPod[], since: number): Promise<string[]> {
  const want = endpointsOf(pods);
  const seen = await waitKernel(l, l.nodes, SERVICE_IP, SERVICE_PORT, (eps) => sameList(eps, want), 30_000);
  return l.nodes.map((n) => `${n.name} +${Math.max(0, (seen.get(n.name) ?? since) - since)} ms`);
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
    const note = p === removed ? '(label removed)' : '';
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

async function serviceSpread(l: Lab, pods: Pods): Promise<void> {
  const t0 = step(
    4,
    `A Service selecting app=web, the EndpointSlice weft-controller wrote, and how ${REQUESTS} requests spread`,
    `Service "web" gets a virtual address, the ClusterIP ${SERVICE_IP}:${SERVICE_PORT}, and the selector`,
    'app=web; its targetPort names the pods\' port "http". `weftctl apply` writes it into etcd, where',
    'an API server would put it. Nobody writes its EndpointSlice: weft-controller finds the pods the',
    'selector matches, resolves "http" in each pod, writes the slice, and weft-proxy on every node',
    `programs it. Then the client pod on node1 opens ${REQUESTS} connections to the ClusterIP, one after`,
    `another; each goes to an endpoint drawn at random, so each should get about 1/${pods.web.length} of them.`,
  );
  const written = Date.now();
  say(`${INDENT}$ weftctl apply -f web.yaml   (the Service only)`);
  say(indent(stringifyYaml(serviceObject(WEB).value).trimEnd(), `${INDENT}    `));
  say(indent(await weftctl(l, ['apply', '-f', '-'], stringifyYaml(serviceObject(WEB).value)), `${INDENT}  `));
  say(`${INDENT}$ weftctl get services`);
  say(indent(await weftctl(l, ['get', 'services']), `${INDENT}  `));
  const lags = await kernelFollows(l, pods.web, written);
  say(`${INDENT}the pods were in every node's nftables after \`weftctl apply\` started: ${lags.join(', ')}`);
  say(`${INDENT}$ weftctl get endpointslices   (what weft-controller wrote)`);
  say(indent(await weftctl(l, ['get', 'endpointslices']), `${INDENT}  `));
  // The rules are in; make sure the first request makes it through the overlay too.
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

async function podJoins(l: Lab, pods: Pods): Promise<void> {
  const node = l.nodes[1] as LabNode;
  const t0 = step(
    5,
    `A new pod joins: web-${pods.web.length + 1} on ${node.name}, labelled app=web`,
    'A pod is an endpoint once it is declared with a matching label and weft-cni has given it an',
    'address. weft-controller adds it to the slice (to the one slice that has room, leaving the',
    'others untouched) and every weft-proxy adds it to the draw.',
  );
  const name = `web-${pods.web.length + 1}`;
  const pod = await l.addPod(node, name, { labels: WEB_LABELS, ports: WEB_PORTS });
  const attached = Date.now();
  await l.startTcpServer(pod, POD_PORT);
  pods.web.push(pod);
  const lags = await kernelFollows(l, pods.web, attached);
  say(
    `${INDENT}${name} (${pod.ip}) was in every node's nftables after weft-cni attached it: ${lags.join(', ')}`,
  );
  say(`${INDENT}$ weftctl get endpointslices`);
  say(indent(await weftctl(l, ['get', 'endpointslices']), `${INDENT}  `));
  for (const line of await pickMap(l, pods.web)) say(`${INDENT}${line}`);
  checkInterrupted();
  say(`${INDENT}${REQUESTS} requests to ${SERVICE_IP}:${SERVICE_PORT}:`);
  const s = await spread(l, pods);
  outcome(5, t0, s.ok, s.text);
}

async function labelRemoved(l: Lab, pods: Pods): Promise<void> {
  const gone = pods.web.at(-1) as LabPod;
  const others = pods.web.filter((w) => w !== gone);
  const t0 = step(
    6,
    `A label removed: ${gone.name} loses app=web and leaves the spread`,
    `\`weftctl label pod ${gone.name} app-\` removes the label. The pod keeps running, but the selector no`,
    'longer matches it: weft-controller takes it out of the slice and weft-proxy out of the draw.',
  );
  say(`${INDENT}$ weftctl label pod ${gone.name} app-`);
  say(indent(await weftctl(l, ['label', 'pod', gone.name, 'app-']), `${INDENT}  `));
  const labelled = Date.now();
  const lags = await kernelFollows(l, others, labelled);
  say(`${INDENT}${gone.name} was out of every node's nftables after weftctl returned: ${lags.join(', ')}`);
  say(`${INDENT}$ weftctl get pods -l app=web`);
  say(indent(await weftctl(l, ['get', 'pods', '-l', 'app=web']), `${INDENT}  `));
  let direct = 'no answer';
  try {
    direct = (await l.tcpRequest(pods.client, gone.ip, POD_PORT, { timeoutMs: 3000 })).trim();
  } catch (err) {
    direct = `no answer (${messageOf(err)})`;
  }
  say(
    `${INDENT}${gone.name} itself still runs: a direct request to ${gone.ip}:${POD_PORT} answers "${direct}"`,
  );
  const inKernel = await kernelEndpoints(l, l.nodes[0] as LabNode, SERVICE_IP, SERVICE_PORT);
  checkInterrupted();
  say(`${INDENT}${REQUESTS} more requests to ${SERVICE_IP}:${SERVICE_PORT}:`);
  const s = await spread(l, pods, gone);
  const ok = s.ok && direct === gone.name && sameList(inKernel, endpointsOf(others));
  outcome(
    6,
    t0,
    ok,
    s.ok && direct !== gone.name ? `${s.text}; but ${gone.name} did not answer directly` : s.text,
  );
}

async function tearDown(l: Lab | undefined): Promise<void> {
  const t0 = step(
    7,
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
  outcome(7, t0, true, `no namespace, process or temp dir of ${runId} is left`);
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
    await startDaemons(l);
    checkInterrupted();
    const pods = await podsTalk(l);
    checkInterrupted();
    await serviceSpread(l, pods);
    checkInterrupted();
    await podJoins(l, pods);
    checkInterrupted();
    await labelRemoved(l, pods);
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
      recap.push(`[7] FAIL teardown: ${messageOf(err).slice(0, 80)}`);
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

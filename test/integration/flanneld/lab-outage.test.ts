/**
 * weft-flanneld across registry outages, with pods on two nodes:
 *
 * - a single etcd member is stopped for 20 s and started again, timed so that a lease renewal
 *   (every 60 s with `--subnet-lease-renew-margin=1439`) falls in the outage;
 * - in a 3-member etcd cluster the leader, made to be the member serving the daemons' watches,
 *   is killed (SIGKILL) and kept down for 20 s; meanwhile a lease is written and a third node
 *   joins.
 *
 * Throughout, pod traffic (ping every 0.2 s one way, TCP requests the other) must be unbroken and
 * the daemons alive (/healthz 200) and quiet: a registry that is gone is reported by a few
 * warnings (and its return at info), not by a flood; with a quorum left, nothing fails at all.
 * Afterwards the lease keys must be the very same keys (same value, same revisions, same etcd
 * lease, still with a positive TTL), the failed renewal must have been retried (neither dropping
 * nor re-creating the lease), and the daemons must still follow the registry: a lease written
 * after the outage (with the leader dead: through the other members) gets its route on every
 * node, and its deletion removes it.
 */
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { sleep } from '../../../src/backoff/index.js';
import {
  FlannelCluster,
  Lab,
  parsePing,
  waitFor,
  type LabEtcdMember,
  type LabNode,
  type LabPod,
  type ManagedProcess,
} from '../../lab/index.js';

t.setTimeout(240_000);

const PREFIX = '/coreos.com/network';
const SUBNETS = `${PREFIX}/subnets/`;
const OUTAGE_MS = 20_000;
/** Most lines a daemon may log during the outage: a few rate-limited warnings, not a flood. */
const MAX_OUTAGE_LOG_LINES = 60;
/** A lease of a node that does not exist, written to see the daemons follow the registry. */
const FAKE_SUBNET = '10.244.250.0/24';
const FAKE_KEY = `${SUBNETS}10.244.250.0-24`;
const FAKE_VALUE =
  '{"PublicIP":"10.99.0.77","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:0a:63:00:4d"}}';
/** How long a daemon may take to program a lease written once the registry is back. */
const FOLLOW_TIMEOUT_MS = 20_000;

/** One lease key as etcd stores it. */
interface EtcdKv {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  /** The etcd lease id, decimal ('0': none). */
  lease: string;
}

/** Every key under `prefix`, read with etcdctl from the underlay (any live member answers). */
async function etcdKeys(lab: Lab, prefix: string): Promise<EtcdKv[]> {
  const r = await lab.etcdctl('underlay', ['get', prefix, '--prefix', '-w', 'json'], { commandTimeoutS: 5 });
  // Lease ids are 64-bit: quote them before JSON.parse rounds them.
  const json = r.stdout.replace(/"(lease|ID|id)":(\d+)/g, '"$1":"$2"');
  const parsed = JSON.parse(json) as {
    kvs?: {
      key: string;
      value: string;
      create_revision: number;
      mod_revision: number;
      version: number;
      lease?: string;
    }[];
  };
  const b64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8');
  return (parsed.kvs ?? []).map((kv) => ({
    key: b64(kv.key),
    value: b64(kv.value),
    createRevision: kv.create_revision,
    modRevision: kv.mod_revision,
    version: kv.version,
    lease: kv.lease ?? '0',
  }));
}

/** Remaining TTL of an etcd lease in seconds; 0 when it has expired (or never existed). */
async function leaseRemaining(lab: Lab, leaseDecimal: string): Promise<number> {
  const id = BigInt(leaseDecimal).toString(16);
  const r = await lab.etcdctl('underlay', ['lease', 'timetolive', id], { commandTimeoutS: 5 });
  const m = /remaining\((-?\d+)s\)/.exec(r.stdout);
  return m ? Number(m[1]) : 0;
}

/** The route of `cidr` on a node ('' when there is none). */
async function routeOf(lab: Lab, node: LabNode, cidr: string): Promise<string> {
  const r = await lab.exec(node, 'ip', ['route', 'show', cidr]);
  return r.stdout.trim();
}

/** The nodes that run a daemon. */
function daemonNodes(cluster: FlannelCluster): LabNode[] {
  return [...cluster.daemons.values()].map((d) => d.node);
}

/**
 * Waits until every node with a daemon has (or, with `present` false, no longer has) a route
 * for `cidr`; resolves with the time it took.
 */
async function waitRoutes(
  cluster: FlannelCluster,
  cidr: string,
  present: boolean,
  nodes: LabNode[] = daemonNodes(cluster),
): Promise<number> {
  const lab = cluster.lab;
  const started = Date.now();
  await waitFor(
    async () => {
      const routes = await Promise.all(nodes.map((n) => routeOf(lab, n, cidr)));
      return routes.every((r) => (present ? /dev flannel\.1/.test(r) : r === ''));
    },
    {
      what: `route ${cidr} ${present ? 'on' : 'gone from'} every node`,
      timeoutMs: FOLLOW_TIMEOUT_MS,
      intervalMs: 100,
    },
  );
  return Date.now() - started;
}

/** Lines in a daemon's log so far. */
function logLines(d: { process: ManagedProcess }): number {
  try {
    return readFileSync(d.process.logFile, 'utf8').split('\n').length - 1;
  } catch {
    return 0;
  }
}

/** The log lines after the first `from`. */
function logSince(d: { process: ManagedProcess }, from: number): string[] {
  try {
    return readFileSync(d.process.logFile, 'utf8').split('\n').slice(from, -1);
  } catch {
    return [];
  }
}

/** TCP requests from one pod to another, back to back, until stopped. */
function tcpLoop(
  lab: Lab,
  from: LabPod,
  to: LabPod,
  port: number,
): { stop: () => Promise<{ ok: number; failed: string[] }> } {
  let running = true;
  let ok = 0;
  const failed: string[] = [];
  const loop = (async () => {
    while (running) {
      const at = Date.now();
      try {
        const reply = await lab.tcpRequest(from, to.ip, port, { timeoutMs: 2_000 });
        if (reply.trim() === to.name) ok++;
        else failed.push(`unexpected reply ${JSON.stringify(reply)}`);
      } catch (err) {
        failed.push(`${new Date(at).toISOString()}: ${err instanceof Error ? err.message : String(err)}`);
      }
      await sleep(Math.max(0, 300 - (Date.now() - at)));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { ok, failed };
    },
  };
}

/** ping every 0.2 s from a pod, as a process, stopped (SIGINT: it prints its summary) on demand. */
function pingLoop(lab: Lab, from: LabPod, to: LabPod): { stop: () => Promise<ReturnType<typeof parsePing>> } {
  const p = lab.startProcess(from, 'ping', 'ping', ['-n', '-q', '-i', '0.2', '-W', '1', to.ip]);
  return {
    stop: async () => {
      p.signal('SIGINT');
      await Promise.race([p.exited(), sleep(5_000)]);
      // The log stream is closed shortly after the exit.
      await sleep(100);
      return parsePing(readFileSync(p.logFile, 'utf8'));
    },
  };
}

interface Outage {
  /** What happens, for messages. */
  what: string;
  /** Takes the registry (or part of it) away. */
  begin: (lab: Lab) => Promise<void>;
  /** Brings it back. */
  end: (lab: Lab) => Promise<void>;
  /** True when the registry still answers during the outage (a surviving quorum). */
  quorumDuringOutage: boolean;
  /**
   * The daemons renew every 60 s (`--subnet-lease-renew-margin=1439`, the shortest interval
   * flannel's flags allow): time the outage so that a renewal falls in it. The keep-alive must
   * retry quietly and renew once the registry is back, neither dropping nor re-creating the lease.
   */
  renewDuringOutage?: boolean;
  /** Called when the scenario idles until a renewal is due (to set up the next lab meanwhile). */
  whileWaiting?: () => void;
}

/** pino records among log lines (other lines left out). */
function records(lines: string[]): { level: number; msg?: string; component?: string }[] {
  const out: { level: number; msg?: string; component?: string }[] = [];
  for (const line of lines) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as { level: number; msg?: string; component?: string });
    } catch {
      /* a line cut short */
    }
  }
  return out;
}

/** The longest margin flannel allows, for the shortest renewal interval: 60 s (TTL 86 400 s). */
const RENEW_MARGIN_MINUTES = 1439;
const RENEW_EVERY_MS = (86_400 - RENEW_MARGIN_MINUTES * 60) * 1000;

/** When a daemon acquired its lease, from its log (ms since the epoch). */
function acquiredAt(d: { process: ManagedProcess }): number {
  for (const line of readFileSync(d.process.logFile, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const rec = JSON.parse(line) as { msg?: string; time?: string | number; component?: string };
    if (rec.component === 'lease' && rec.msg?.startsWith('acquired subnet'))
      return new Date(rec.time ?? 0).getTime();
  }
  throw new Error(`no lease acquisition in ${d.process.logFile}`);
}

/** Sum of the samples of one metric (with the given labels) a daemon exposes; 0 when absent. */
async function metric(
  cluster: FlannelCluster,
  node: LabNode,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const r = await cluster.health(node, '/metrics');
  let sum = 0;
  for (const line of r.body.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** A lab with weft-flanneld ready on both nodes and a pod serving TCP on each. */
interface Prepared {
  lab: Lab;
  cluster: FlannelCluster;
  a: LabPod;
  b: LabPod;
}

/** Every lab of this file, torn down at the end whatever happened (teardown is idempotent). */
const labs = new Set<Lab>();
t.teardown(async () => {
  await Promise.allSettled([...labs].map((l) => l.teardown()));
});

/**
 * Daemons run on the first two nodes; a third node, when asked for, is left for a daemon that
 * joins during the outage.
 */
async function prepare(etcdMembers: 1 | 3, nodes: 2 | 3, args: string[] = []): Promise<Prepared> {
  const lab = await Lab.create({ nodes, etcdMembers });
  labs.add(lab);
  const cluster = await FlannelCluster.create(lab, { args, start: false });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  cluster.start(n1);
  cluster.start(n2);
  await cluster.waitReady([n1, n2]);
  const [a, b] = await Promise.all([lab.addPod(n1, 'web'), lab.addPod(n2, 'web')]);
  await Promise.all([lab.startTcpServer(a, 8080), lab.startTcpServer(b, 8080)]);
  return { lab, cluster, a, b };
}

/**
 * A node joins while a member is down: its daemon must get through to the others at once,
 * without a failed request (each would be a warning in its log), and the other nodes must route
 * its new subnet. Clients given every endpoint (the fixture's, weft's own store) must not fail
 * either.
 */
async function join(t: Test, cluster: FlannelCluster, node: LabNode, leases: number): Promise<void> {
  const lab = cluster.lab;
  const started = Date.now();
  cluster.start(node);
  await cluster.waitReady([node]);
  t.comment(`${node.name} joined with a member down: ready after ${Date.now() - started} ms`);
  const own = (await etcdKeys(lab, SUBNETS)).find(
    (kv) => (JSON.parse(kv.value) as { PublicIP?: string }).PublicIP === node.ip,
  );
  t.ok(own, `${node.name} holds a lease`);
  const cidr = own?.key.slice(SUBNETS.length).replace('-', '/') ?? '';
  const others = daemonNodes(cluster).filter((n) => n !== node);
  const routedMs = await waitRoutes(cluster, cidr, true, others);
  t.pass(`the other nodes route ${node.name}'s subnet ${cidr} (after ${routedMs} ms)`);
  const complaints = records(readFileSync(cluster.daemon(node).process.logFile, 'utf8').split('\n'))
    .filter((r) => r.level >= 40)
    .map((r) => r.msg);
  t.same(complaints, [], `${node.name}'s daemon met no registry failure (no warnings)`);
  const listings = await Promise.allSettled(Array.from({ length: 6 }, () => cluster.leases()));
  t.same(
    listings.map((l) => (l.status === 'fulfilled' ? l.value.size : String(l.reason))),
    Array.from({ length: 6 }, () => leases + 1),
    'six fresh clients with every endpoint listed the leases (and the fake one) at the first try',
  );
}

async function scenario(t: Test, outage: Outage, prepared: Promise<Prepared>): Promise<void> {
  const { lab, cluster, a, b } = await prepared;
  t.teardown(() => lab.teardown());
  const [n1, n2] = lab.nodes as [LabNode, LabNode];

  const before = await etcdKeys(lab, SUBNETS);
  t.equal(before.length, 2, 'one lease per node before the outage');
  for (const kv of before) t.not(kv.lease, '0', `${kv.key} is attached to an etcd lease`);
  // Traffic works before anything is taken away (also warms up ARP and the neighbours).
  t.equal((await lab.ping(a, b.ip, { count: 2, timeoutS: 2 })).received, 2, 'pods talk before the outage');

  const daemons = [cluster.daemon(n1), cluster.daemon(n2)];
  let renewals: { ok: number; error: number }[] = [];
  if (outage.renewDuringOutage) {
    // Both daemons renew RENEW_EVERY_MS after their acquisition: begin the outage ~14 s before,
    // which leaves ~8 s of failing renewals (the outage, plus etcd's start). About 2.5 s pass
    // between here and the outage (metrics, ping start, a 2 s run-in).
    const renewAt = Math.min(...daemons.map(acquiredAt)) + RENEW_EVERY_MS;
    const wait = renewAt - 14_000 - 2_500 - Date.now();
    t.comment(`waiting ${Math.round(wait / 1000)} s so that the next renewal falls in the outage`);
    outage.whileWaiting?.();
    await sleep(Math.max(0, wait));
    renewals = await Promise.all(
      [n1, n2].map(async (n) => ({
        ok: await metric(cluster, n, 'weft_flanneld_lease_renewals_total', { result: 'ok' }),
        error: await metric(cluster, n, 'weft_flanneld_lease_renewals_total', { result: 'error' }),
      })),
    );
  }

  const ping = pingLoop(lab, a, b);
  const tcp = tcpLoop(lab, b, a, 8080);
  await sleep(2_000);

  const linesBefore = daemons.map(logLines);
  const outageStarted = Date.now();
  await outage.begin(lab);
  t.comment(`${outage.what}: registry outage begins`);

  // During the outage: the daemons stay up and healthy. With a surviving quorum, they must also
  // fail over to the other endpoints and follow a lease written meanwhile.
  const health: string[] = [];
  let followMs: number | undefined;
  if (outage.quorumDuringOutage) {
    await sleep(2_000);
    await lab.etcdctl('underlay', ['put', FAKE_KEY, FAKE_VALUE]);
    followMs = await waitRoutes(cluster, FAKE_SUBNET, true);
    t.comment(`lease written with the leader down: routed on every node after ${followMs} ms`);
    const n3 = lab.nodes[2];
    if (n3) await join(t, cluster, n3, before.length + 1);
  }
  while (Date.now() - outageStarted < OUTAGE_MS) {
    for (const n of daemonNodes(cluster)) {
      if (!cluster.daemon(n).process.running) health.push(`${n.name}: daemon exited`);
      const h = await cluster.health(n, '/healthz');
      if (h.status !== 200) health.push(`${n.name}: /healthz ${h.status} ${h.body}`);
    }
    await sleep(1_000);
  }
  t.same(health, [], 'daemons kept running with /healthz 200 throughout the outage');
  const readyDuring = await Promise.all([n1, n2].map((n) => cluster.health(n, '/readyz')));
  t.comment(`/readyz at the end of the outage: ${readyDuring.map((r) => r.status).join(', ')}`);

  const grown = daemons.map((d, i) => logLines(d) - (linesBefore[i] ?? 0));
  t.comment(`daemon log lines during the ${OUTAGE_MS / 1000} s outage: ${grown.join(', ')}`);
  for (const [i, g] of grown.entries()) {
    const d = daemons[i];
    t.ok(
      g <= MAX_OUTAGE_LOG_LINES,
      `${d?.node.name} logged ${g} lines during the outage (≤ ${MAX_OUTAGE_LOG_LINES})`,
      g > MAX_OUTAGE_LOG_LINES && d ? { tail: logSince(d, linesBefore[i] ?? 0).slice(-20) } : {},
    );
  }

  if (!outage.quorumDuringOutage) {
    // No member answers: the outage is reported, once: a warning, not silence and not a flood.
    for (const [i, d] of daemons.entries()) {
      const warnings = records(logSince(d, linesBefore[i] ?? 0)).filter((r) => r.level === 40);
      t.ok(warnings.length >= 1, `${d.node.name} warned about the registry (${warnings.length} warnings)`, {
        warnings: warnings.map((r) => r.msg),
      });
      t.notOk(
        records(logSince(d, linesBefore[i] ?? 0)).some((r) => /reconnected/.test(r.msg ?? '')),
        `${d.node.name} did not claim its watch was back while etcd was down`,
      );
    }
  }
  const linesAtEnd = daemons.map(logLines);

  await outage.end(lab);
  t.comment(`${outage.what}: registry back after ${Date.now() - outageStarted} ms`);
  await sleep(2_000);

  const pinged = await ping.stop();
  const tcpResult = await tcp.stop();
  const lost = pinged.transmitted - pinged.received;
  t.comment(
    `ping ${a.name}@${n1.name} → ${b.name}@${n2.name} across the outage: ${pinged.received}/${pinged.transmitted} ` +
      `received, ${lost} lost (${(pinged.loss * 100).toFixed(2)} %)`,
  );
  t.comment(
    `TCP ${b.node} → ${a.node} across the outage: ${tcpResult.ok} ok, ${tcpResult.failed.length} failed`,
  );
  t.ok(
    pinged.transmitted >= (OUTAGE_MS / 200) * 0.8,
    `ping ran across the outage (${pinged.transmitted} sent)`,
  );
  t.equal(lost, 0, 'no ping lost across the outage');
  t.ok(tcpResult.ok >= 10, `TCP requests kept going (${tcpResult.ok})`);
  t.same(tcpResult.failed, [], 'no TCP request failed across the outage');

  for (const d of daemons) t.ok(d.process.running, `${d.node.name}: daemon still running`);

  if (outage.renewDuringOutage) {
    // A renewal failed during the outage, and one succeeded once the registry was back.
    for (const [i, n] of [n1, n2].entries()) {
      const was = renewals[i] ?? { ok: 0, error: 0 };
      const errors =
        (await metric(cluster, n, 'weft_flanneld_lease_renewals_total', { result: 'error' })) - was.error;
      t.ok(errors >= 1, `${n.name}: the renewal during the outage failed (${errors} reported)`);
      const renewedMs = Date.now();
      await waitFor(
        async () =>
          (await metric(cluster, n, 'weft_flanneld_lease_renewals_total', { result: 'ok' })) > was.ok,
        { what: `${n.name} to renew its lease after the outage`, timeoutMs: 10_000, intervalMs: 200 },
      );
      t.comment(`${n.name}: lease renewed ${Date.now() - renewedMs} ms after the checks began`);
      t.equal(await metric(cluster, n, 'weft_flanneld_lease_losses_total'), 0, `${n.name}: lease never lost`);
      t.equal(
        await metric(cluster, n, 'weft_flanneld_lease_acquisitions_total'),
        1,
        `${n.name}: lease acquired once (not re-created)`,
      );
    }
  }

  if (!outage.quorumDuringOutage) {
    // ... and so is its end, at info.
    for (const [i, d] of daemons.entries()) {
      const resumed = () =>
        records(logSince(d, linesAtEnd[i] ?? 0)).some(
          (r) => r.level === 30 && r.component === 'registry' && /reconnected/.test(r.msg ?? ''),
        );
      await waitFor(resumed, { what: `${d.node.name} to log that its watch is back`, timeoutMs: 10_000 });
      t.pass(`${d.node.name} logged that its registry watch reconnected`);
      if (outage.renewDuringOutage) {
        const renewed = () =>
          records(logSince(d, linesAtEnd[i] ?? 0)).some(
            (r) => r.level === 30 && r.component === 'lease' && /renewed/.test(r.msg ?? ''),
          );
        await waitFor(renewed, { what: `${d.node.name} to log the renewal`, timeoutMs: 5_000 });
        t.pass(`${d.node.name} logged the renewal after the failed ones`);
      }
    }
  }

  // The leases: the very same keys, untouched (same revisions, same etcd lease), still TTL-bound.
  const after = (await etcdKeys(lab, SUBNETS)).filter((kv) => kv.key !== FAKE_KEY);
  t.same(
    after.filter((kv) => before.some((b) => b.key === kv.key)),
    before,
    'lease keys, values, revisions and etcd leases are unchanged',
  );
  t.equal(after.length, daemonNodes(cluster).length, 'one lease per node with a daemon');
  for (const kv of after) {
    const remaining = await leaseRemaining(lab, kv.lease);
    t.ok(remaining > 0, `${kv.key}: etcd lease ${BigInt(kv.lease).toString(16)} has ${remaining} s left`);
  }
  const byFixture = await cluster.leases();
  t.same(
    [...byFixture].filter(([k]) => k !== FAKE_KEY),
    after.map((kv) => [kv.key, kv.value]),
    'the fixture sees the same leases',
  );

  // The daemons still follow the registry: a new lease is routed, its deletion unrouted.
  if (!outage.quorumDuringOutage) {
    await lab.etcdctl('underlay', ['put', FAKE_KEY, FAKE_VALUE]);
    followMs = await waitRoutes(cluster, FAKE_SUBNET, true);
    t.comment(`lease written after the outage: routed on every node after ${followMs} ms`);
  }
  t.ok(
    followMs !== undefined,
    `daemons programmed a lease written ${outage.quorumDuringOutage ? 'during' : 'after'} the outage`,
  );
  for (const n of daemonNodes(cluster)) {
    t.match(
      await routeOf(lab, n, FAKE_SUBNET),
      /^10\.244\.250\.0\/24 via 10\.244\.250\.0 dev flannel\.1 onlink/,
      `${n.name} routes ${FAKE_SUBNET} over vxlan`,
    );
  }
  await lab.etcdctl('underlay', ['del', FAKE_KEY]);
  const goneMs = await waitRoutes(cluster, FAKE_SUBNET, false);
  t.comment(`lease deleted after the outage: route gone from every node after ${goneMs} ms`);
  t.pass('daemons removed the route of the deleted lease');

  t.equal((await lab.ping(a, b.ip, { count: 3, timeoutS: 2 })).received, 3, 'pods still talk afterwards');
}

/**
 * The 3-member lab, set up while the first scenario waits for its renewal to come due (it would
 * otherwise add its set-up time to the file's); rejections are handled where it is awaited.
 */
let cluster3: Promise<Prepared> | undefined;
const prepare3 = (): Promise<Prepared> => {
  cluster3 ??= prepare(3, 3);
  cluster3.catch(() => undefined);
  return cluster3;
};

t.test('single etcd member stopped for 20 s', (t) =>
  scenario(
    t,
    {
      what: 'etcd stopped',
      quorumDuringOutage: false,
      renewDuringOutage: true,
      whileWaiting: () => void prepare3(),
      begin: async (lab) => {
        for (const s of lab.etcd) await s.stop();
      },
      end: async (lab) => {
        for (const s of lab.etcd) await s.start();
      },
    },
    prepare(1, 2, [`--subnet-lease-renew-margin=${RENEW_MARGIN_MINUTES}`]),
  ),
);

/** Watch streams an etcd member serves now (its own metric; the lab's clients other than the daemons do not watch). */
async function watchStreams(lab: Lab, m: LabEtcdMember): Promise<number> {
  const r = await lab.exec('underlay', 'curl', ['-s', '-m', '2', `${m.endpoint}/metrics`], {
    allowFail: true,
  });
  const found = /^etcd_debugging_mvcc_watch_stream_total (\d+)/m.exec(r.stdout);
  return found ? Number(found[1]) : 0;
}

/** The hex member id of a member, from `etcdctl member list`. */
async function memberId(lab: Lab, m: LabEtcdMember): Promise<string> {
  const r = await lab.etcdctl('underlay', ['member', 'list']);
  const line = r.stdout.split('\n').find((l) => l.split(', ')[2] === m.name);
  const id = line?.split(', ')[0];
  if (!id) throw new Error(`member ${m.name} not in: ${r.stdout}`);
  return id;
}

t.test('3-member etcd cluster, leader killed for 20 s', (t) => {
  let killed: LabEtcdMember | undefined;
  return scenario(
    t,
    {
      what: 'etcd leader killed',
      quorumDuringOutage: true,
      begin: async (lab) => {
        // Make the leader the member that serves the daemons' watches (the client picks members
        // at random), so that killing it forces the watches over to the other endpoints.
        const streams = await Promise.all(lab.etcdMembers.map((m) => watchStreams(lab, m)));
        t.comment(
          `watch streams per member: ${lab.etcdMembers.map((m, i) => `${m.name}=${streams[i]}`).join(', ')}`,
        );
        const most = Math.max(...streams);
        const target = lab.etcdMembers[streams.indexOf(most)] as LabEtcdMember;
        t.ok(most > 0, `${target.name} serves ${most} of the daemons' watch streams`);
        if ((await lab.etcdLeader()).name !== target.name) {
          await lab.etcdctl('underlay', ['move-leader', await memberId(lab, target)], { commandTimeoutS: 5 });
          await waitFor(async () => (await lab.etcdLeader()).name === target.name, {
            what: `${target.name} to lead`,
            timeoutMs: 10_000,
            intervalMs: 200,
          });
        }
        killed = await lab.etcdLeader();
        t.equal(killed.name, target.name, `the leader is ${target.name}`);
        await killed.server.kill();
        t.comment(`killed the leader ${killed.name} (${killed.endpoint})`);
        const next = await waitFor(
          async () => {
            const l = await lab.etcdLeader();
            return l.name !== killed?.name ? l : undefined;
          },
          { what: 'a new etcd leader', timeoutMs: 15_000, intervalMs: 200 },
        );
        t.comment(`new leader: ${next.name}`);
      },
      end: async () => {
        await killed?.server.start();
      },
    },
    prepare3(),
  );
});

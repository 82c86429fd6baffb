/**
 * weft-flanneld on the Redis registry (`--registry=redis://…`), on a 2-node lab: leases in
 * flannel's exact format (and nothing in etcd), subnet.env, pods talking across nodes over ICMP
 * and TCP, the daemons following leases written and deleted by others; then a Redis restart
 * (10 s down) with pod traffic unbroken, the lease keys untouched and still TTL-bound, and the
 * daemons following the registry again afterwards.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from '../../../src/backoff/index.js';
import {
  FlannelCluster,
  Lab,
  REPO_ROOT,
  parsePing,
  waitFor,
  type LabNode,
  type LabPod,
} from '../../lab/index.js';

t.setTimeout(180_000);

const PREFIX = '/coreos.com/network';
const SUBNETS = `${PREFIX}/subnets/`;
const LEASE_KEY = /^\/coreos\.com\/network\/subnets\/10\.244\.(\d+)\.0-24$/;
const LEASE_VALUE =
  /^\{"PublicIP":"(10\.99\.0\.1[12])","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"[0-9a-f]{2}(:[0-9a-f]{2}){5}"\}\}$/;
const FAKE_SUBNET = '10.244.250.0/24';
const FAKE_KEY = `${SUBNETS}10.244.250.0-24`;
const FAKE_VALUE =
  '{"PublicIP":"10.99.0.77","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:0a:63:00:4d"}}';
const OUTAGE_MS = 10_000;
const MAX_OUTAGE_LOG_LINES = 60;

/** Deletes a registry key through weft's store, from inside the first node (as the fixture writes). */
async function deleteKey(lab: Lab, key: string): Promise<void> {
  const registry = join(REPO_ROOT, 'dist', 'src', 'registry', 'index.js');
  const script = `
    const { openStore } = await import(${JSON.stringify(registry)});
    const [target, key] = process.argv.slice(1);
    const store = await openStore(target);
    try { if (!(await store.delete(key))) process.exitCode = 3; } finally { await store.close(); }`;
  await lab.exec(lab.nodes[0] as LabNode, 'env', [
    '-u',
    'NODE_OPTIONS',
    process.execPath,
    '--input-type=module',
    '-e',
    script,
    lab.redisUrl ?? '',
    key,
  ]);
}

/** A lease key's hash as the Redis store keeps it (value, revisions, TTL binding) and its expiry. */
async function redisKey(lab: Lab, key: string): Promise<{ fields: string[]; pttl: number }> {
  const redis = lab.redis;
  if (!redis) throw new Error('no redis');
  const cli = (...args: string[]) =>
    lab.exec('redis', 'redis-cli', ['-h', redis.host, '-p', String(redis.port), ...args]);
  const h = await cli('HMGET', `weft:kv:${key}`, 'v', 'm', 'c', 'b');
  const pttl = await cli('PTTL', `weft:kv:${key}`);
  return { fields: h.stdout.trimEnd().split('\n'), pttl: Number(/-?\d+/.exec(pttl.stdout)?.[0] ?? NaN) };
}

async function routeOf(lab: Lab, node: LabNode, cidr: string): Promise<string> {
  return (await lab.exec(node, 'ip', ['route', 'show', cidr])).stdout.trim();
}

async function waitRoutes(lab: Lab, cidr: string, present: boolean): Promise<number> {
  const started = Date.now();
  await waitFor(
    async () => {
      const routes = await Promise.all(lab.nodes.map((n) => routeOf(lab, n, cidr)));
      return routes.every((r) => (present ? /dev flannel\.1/.test(r) : r === ''));
    },
    { what: `route ${cidr} ${present ? 'on' : 'gone from'} every node`, timeoutMs: 20_000, intervalMs: 100 },
  );
  return Date.now() - started;
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

function logLines(path: string): number {
  try {
    return readFileSync(path, 'utf8').split('\n').length - 1;
  } catch {
    return 0;
  }
}

t.test('vxlan over the Redis registry: leases, pods, a Redis restart', async (t) => {
  const lab = await Lab.create({ nodes: 2, redis: true });
  t.teardown(async () => {
    // A redis-server started again by the test is not one the lab tracks: stop it (by PID) first.
    await lab.redis?.kill();
    await lab.teardown();
  });
  const cluster = await FlannelCluster.create(lab, { redis: true });
  await cluster.waitReady();
  const [n1, n2] = lab.nodes as [LabNode, LabNode];

  // Leases in flannel's format, one per node, in Redis and not in etcd.
  const leases = await cluster.leases();
  t.equal(leases.size, 2, 'one lease per node');
  const byIp = new Map<string, string>();
  for (const [key, value] of leases) {
    t.match(key, LEASE_KEY, `key ${key} has flannel's form`);
    t.match(value, LEASE_VALUE, `${key}: lease JSON is exactly flannel's`);
    byIp.set(LEASE_VALUE.exec(value)?.[1] ?? '', key);
  }
  t.same([...byIp.keys()].sort(), lab.nodes.map((n) => n.ip).sort(), 'every node published its PublicIP');
  const inEtcd = await lab.etcdctl('underlay', ['get', PREFIX, '--prefix', '--keys-only']);
  t.equal(inEtcd.stdout.trim(), '', 'nothing was written to etcd');
  for (const n of lab.nodes) {
    const third = LEASE_KEY.exec(byIp.get(n.ip) ?? '')?.[1];
    t.equal(
      readFileSync(lab.subnetEnvPath(n), 'utf8'),
      `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${third}.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`,
      `${n.name} subnet.env matches its lease`,
    );
  }
  const before = new Map<string, { fields: string[]; pttl: number }>();
  for (const key of leases.keys()) {
    const k = await redisKey(lab, key);
    before.set(key, k);
    t.equal(k.fields[3], '1', `${key} is TTL-bound in the store`);
    t.ok(k.pttl > 86_000_000, `${key} expires in about a day (${Math.round(k.pttl / 1000)} s)`);
  }

  // Pods on both nodes talk both ways, over ICMP and TCP.
  const [a, b] = (await Promise.all([lab.addPod(n1, 'web'), lab.addPod(n2, 'web')])) as [LabPod, LabPod];
  await Promise.all([lab.startTcpServer(a, 8080), lab.startTcpServer(b, 8080)]);
  for (const [from, to] of [
    [a, b],
    [b, a],
  ] as const) {
    const ping = await lab.ping(from, to.ip, { count: 3, timeoutS: 2 });
    t.equal(ping.received, 3, `${from.node}/${from.name} pings ${to.node}/${to.name} (${to.ip})`);
    const reply = await lab.tcpRequest(from, to.ip, 8080, { timeoutMs: 3000 });
    t.equal(reply.trim(), to.name, `${from.node} → ${to.node} over TCP`);
  }

  // The daemons follow the Redis watch: a lease written by another routes, its deletion unroutes.
  await cluster.put(FAKE_KEY, FAKE_VALUE);
  t.comment(`lease written: routed on every node after ${await waitRoutes(lab, FAKE_SUBNET, true)} ms`);
  for (const n of lab.nodes) {
    t.match(
      await routeOf(lab, n, FAKE_SUBNET),
      /^10\.244\.250\.0\/24 via 10\.244\.250\.0 dev flannel\.1 onlink/,
      `${n.name} routes ${FAKE_SUBNET} over vxlan`,
    );
  }
  await deleteKey(lab, FAKE_KEY);
  t.comment(
    `lease deleted: route gone from every node after ${await waitRoutes(lab, FAKE_SUBNET, false)} ms`,
  );
  t.pass('a deleted lease is unrouted');

  // Redis goes away for a while: traffic goes on, the daemons stay up and quiet.
  const ping = lab.startProcess(a, 'ping', 'ping', ['-n', '-q', '-i', '0.2', '-W', '1', b.ip]);
  await sleep(1_000);
  const daemons = lab.nodes.map((n) => cluster.daemon(n));
  const linesBefore = daemons.map((d) => logLines(d.process.logFile));
  const redis = lab.redis;
  if (!redis) throw new Error('no redis');
  await redis.stop();
  const down = Date.now();
  const health: string[] = [];
  while (Date.now() - down < OUTAGE_MS) {
    for (const d of daemons) {
      if (!d.process.running) health.push(`${d.node.name}: daemon exited`);
      const h = await cluster.health(d.node, '/healthz');
      if (h.status !== 200) health.push(`${d.node.name}: /healthz ${h.status}`);
    }
    await sleep(1_000);
  }
  const linesAtEnd = daemons.map((d) => logLines(d.process.logFile));
  await redis.start();
  const grown = daemons.map((d, i) => (linesAtEnd[i] ?? 0) - (linesBefore[i] ?? 0));
  t.comment(`redis back after ${Date.now() - down} ms; daemon log lines meanwhile: ${grown.join(', ')}`);
  t.same(health, [], 'daemons kept running with /healthz 200 while Redis was down');
  const reconnected = (r: { level: number; msg?: string; component?: string }): boolean =>
    r.level === 30 && r.component === 'registry' && /reconnected/.test(r.msg ?? '');
  for (const [i, d] of daemons.entries()) {
    const g = grown[i] ?? 0;
    t.ok(g <= MAX_OUTAGE_LOG_LINES, `${d.node.name} logged ${g} lines (≤ ${MAX_OUTAGE_LOG_LINES})`);
    // The outage is reported (a warning, not silence), and its end (at info) once it is over.
    const lines = (from: number, to?: number) =>
      records(readFileSync(d.process.logFile, 'utf8').split('\n').slice(from, to));
    const during = lines(linesBefore[i] ?? 0, linesAtEnd[i] ?? 0);
    const warnings = during.filter((r) => r.level === 40);
    t.ok(warnings.length >= 1, `${d.node.name} warned that Redis is away (${warnings.length} warnings)`, {
      warnings: warnings.map((r) => r.msg),
    });
    t.notOk(during.some(reconnected), `${d.node.name} did not claim its watch was back while Redis was down`);
    await waitFor(() => lines(linesAtEnd[i] ?? 0).some(reconnected), {
      what: `${d.node.name} to log that its watch is back`,
      timeoutMs: 10_000,
    });
    t.pass(`${d.node.name} logged that its registry watch reconnected`);
  }
  await sleep(1_000);
  ping.signal('SIGINT');
  await Promise.race([ping.exited(), sleep(5_000)]);
  await sleep(100);
  const pinged = parsePing(readFileSync(ping.logFile, 'utf8'));
  t.comment(
    `ping across the Redis restart: ${pinged.received}/${pinged.transmitted} received, ` +
      `${pinged.transmitted - pinged.received} lost`,
  );
  t.ok(pinged.transmitted >= (OUTAGE_MS / 200) * 0.8, `ping ran across the outage (${pinged.transmitted})`);
  t.equal(pinged.transmitted - pinged.received, 0, 'no ping lost while Redis was down');

  // The lease keys are untouched (same value and revisions) and still expire.
  t.same(await cluster.leases(), leases, 'the same leases after the restart');
  for (const [key, was] of before) {
    const now = await redisKey(lab, key);
    t.same(now.fields, was.fields, `${key}: value, revisions and TTL binding unchanged`);
    t.ok(now.pttl > 0, `${key} still expires (${Math.round(now.pttl / 1000)} s left)`);
  }
  for (const d of daemons) t.ok(d.process.running, `${d.node.name}: daemon still running`);

  // And the daemons follow the registry again.
  await cluster.put(FAKE_KEY, FAKE_VALUE);
  t.comment(
    `lease written after the restart: routed on every node after ${await waitRoutes(lab, FAKE_SUBNET, true)} ms`,
  );
  await deleteKey(lab, FAKE_KEY);
  t.comment(
    `lease deleted after the restart: route gone after ${await waitRoutes(lab, FAKE_SUBNET, false)} ms`,
  );
  t.pass('daemons follow the Redis registry after its restart');
  t.equal((await lab.ping(a, b.ip, { count: 3, timeoutS: 2 })).received, 3, 'pods still talk afterwards');
});

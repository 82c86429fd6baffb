/**
 * The Proxier contract, checked against every mode in a namespace of its own with real kernel
 * state: a local client (OUTPUT path) reaches a ClusterIP and every endpoint is used; a service
 * without endpoints is refused at once; a partial sync removes an endpoint, adds and removes a
 * service; syncing the same state twice changes nothing; rulesIntact() notices rules wiped by
 * someone else and a full sync restores them; a Service with Kubernetes' longest valid names is
 * served, and one the kernel refuses (built past validation) is left out by the sync engine while
 * everything else is programmed; cleanup() leaves nothing of weft and is idempotent.
 */
import { createServer, connect, type Server } from 'node:net';
import type { Test } from 'tap';
import { silentLogger } from '../../src/log/index.js';
import { createRegistry } from '../../src/metrics/index.js';
import {
  changedServicePorts,
  parseEndpointSlice,
  parseService,
  type EndpointSliceSpec,
  type ServicePort,
  type ServiceSpec,
} from '../../src/proxy/model/index.js';
import type { Proxier, ProxierContext } from '../../src/proxy/proxier.js';
import { SyncEngine } from '../../src/proxy/sync-engine.js';
import { run } from '../lab/exec.js';
import { loadFactory, netnsRunner, runPerMode, type ModeInfo } from '../helpers/proxy-compliance.js';
import {
  serviceObject,
  servicePortsOf,
  sliceObject,
  type ServiceDef,
  type SliceDef,
} from '../helpers/proxy-objects.js';

const NODE = 'node-1';
const DEV = 'wveth0';
/** The client's source: inside the cluster network, and no endpoint (so not a hairpin). */
const CLIENT_IP = '10.244.1.1';
const EP = ['10.244.2.2', '10.244.2.3', '10.244.3.2'] as const;
const EP_PORT = 8080;

const WEB: ServiceDef = {
  name: 'web',
  clusterIP: '10.96.0.10',
  ports: [{ name: 'http', port: 80, targetPort: EP_PORT }],
};
const EMPTY: ServiceDef = {
  name: 'empty',
  clusterIP: '10.96.0.11',
  ports: [{ port: 80, targetPort: EP_PORT }],
};
const SOLO: ServiceDef = {
  name: 'solo',
  clusterIP: '10.96.0.12',
  ports: [{ port: 80, targetPort: EP_PORT }],
};
const LATE: ServiceDef = {
  name: 'late',
  clusterIP: '10.96.0.13',
  ports: [{ port: 80, targetPort: EP_PORT }],
};

/** Kubernetes' longest valid names: 63-character namespace and name, 15-character port name. */
const LONG: ServiceDef = {
  namespace: `long-${'n'.repeat(58)}`,
  name: `long-${'s'.repeat(58)}`,
  clusterIP: '10.96.0.14',
  ports: [{ name: 'longest-portnam', port: 80, targetPort: EP_PORT }],
};
/** Turned, past validation, into a service port no kernel checker accepts (port 70000). */
const REFUSED: ServiceDef = {
  name: 'refused',
  clusterIP: '10.96.0.15',
  ports: [{ port: 80, targetPort: EP_PORT }],
};

function webSlice(ips: readonly string[]): SliceDef {
  return {
    service: 'web',
    endpoints: ips.map((ip) => ({ ip, nodeName: ip.startsWith('10.244.3.') ? 'node-3' : 'node-2' })),
    ports: [{ name: 'http', port: EP_PORT }],
  };
}
const soloSlice = (svc: string, ip: string): SliceDef => ({
  service: svc,
  endpoints: [{ ip, nodeName: 'node-2' }],
  ports: [{ port: EP_PORT }],
});

async function sh(args: string[]): Promise<string> {
  const [cmd, ...rest] = args as [string, ...string[]];
  return (await run(cmd, rest)).stdout;
}

/** The namespace's nftables ruleset (iptables-nft included), without the parts traffic changes. */
async function ruleset(): Promise<string> {
  return (await sh(['nft', 'list', 'ruleset'])).replace(/counter packets \d+ bytes \d+/g, 'counter');
}

/** One TCP request: the endpoint that answered, or `!CODE`; with how long it took. */
function request(ip: string, port: number, timeoutMs = 2000): Promise<{ who: string; ms: number }> {
  const start = Date.now();
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const sock = connect({ host: ip, port });
    const finish = (who: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ who, ms: Date.now() - start });
    };
    const timer = setTimeout(() => finish('!ETIMEDOUT'), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.end('ping\n'));
    sock.on('data', (d: string) => (data += d));
    sock.on('end', () => finish(data.trim() || '!EEMPTY'));
    sock.on('error', (err: NodeJS.ErrnoException) => finish(`!${err.code ?? 'ERROR'}`));
  });
}

async function tally(ip: string, port: number, n: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const { who } = await request(ip, port);
    counts.set(who, (counts.get(who) ?? 0) + 1);
  }
  return counts;
}

const fmt = (m: Map<string, number>): string => JSON.stringify(Object.fromEntries(m));

async function setUpNamespace(t: Test): Promise<void> {
  // A veth pair (the dummy module may be missing) whose far end only keeps it up.
  await sh(['ip', 'link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`]);
  await sh(['ip', 'link', 'set', `${DEV}p`, 'up']);
  await sh(['ip', 'link', 'set', DEV, 'up']);
  for (const ip of [CLIENT_IP, ...EP]) await sh(['ip', 'addr', 'add', `${ip}/32`, 'dev', DEV]);
  // ClusterIPs need a route for connect() to send anything; OUTPUT DNAT then reroutes locally.
  await sh(['ip', 'route', 'add', '10.96.0.0/12', 'dev', DEV, 'src', CLIENT_IP]);
  const servers: Server[] = [];
  for (const ip of EP) {
    const srv = createServer({ allowHalfOpen: true }, (sock) => {
      sock.on('error', () => {});
      sock.resume();
      sock.on('end', () => sock.end(`${ip}\n`));
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(EP_PORT, ip, () => resolve());
    });
    servers.push(srv);
  }
  t.teardown(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));
}

async function suite(t: Test, info: ModeInfo, ns: string): Promise<void> {
  await setUpNamespace(t);
  const factory = await loadFactory(info);
  const ctx: ProxierContext = {
    family: 4,
    nodeName: NODE,
    clusterCidr: '10.244.0.0/16',
    masqueradeAll: false,
    nodePortAddresses: [],
    runner: netnsRunner(ns),
    log: silentLogger(),
  };
  const proxier: Proxier = await factory(ctx);
  t.teardown(async () => {
    await proxier.cleanup().catch(() => {});
    await proxier.close().catch(() => {});
  });
  t.equal(proxier.mode, info.mode, 'the proxier reports its mode');
  t.equal(proxier.family, 4, 'and its family');

  let state: Map<string, ServicePort> = servicePortsOf(
    [WEB, EMPTY, SOLO],
    [webSlice(EP), soloSlice('solo', EP[0])],
    { nodeName: NODE },
  );
  await proxier.sync({ servicePorts: state, changed: undefined });
  t.ok(await proxier.rulesIntact(), 'rulesIntact() after the first full sync');

  const first = await tally(WEB.clusterIP, 80, 45);
  t.same(
    [...first.keys()].sort(),
    [...EP].sort(),
    `ClusterIP reached from the node, every endpoint used: ${fmt(first)}`,
  );
  t.equal((await request(SOLO.clusterIP, 80)).who, EP[0], 'a one-endpoint service answers from it');

  const refused = await request(EMPTY.clusterIP, 80, 3000);
  t.equal(refused.who, '!ECONNREFUSED', 'a service without endpoints is refused');
  t.ok(refused.ms < 1000, `refused at once, not left to time out (${refused.ms} ms)`);

  // Partial sync: web loses an endpoint, late appears.
  const removed = EP[2];
  let next = servicePortsOf(
    [WEB, EMPTY, SOLO, LATE],
    [webSlice([EP[0], EP[1]]), soloSlice('solo', EP[0]), soloSlice('late', EP[1])],
    { nodeName: NODE },
  );
  let changed = changedServicePorts(state, next);
  t.same([...changed].sort(), ['default/late', 'default/web:http'], 'the change tracker sees web and late');
  await proxier.sync({ servicePorts: next, changed });
  state = next;
  const after = await tally(WEB.clusterIP, 80, 30);
  t.notOk(
    after.has(removed),
    `no traffic to the removed endpoint ${removed} after a partial sync: ${fmt(after)}`,
  );
  t.same([...after.keys()].sort(), [EP[0], EP[1]], 'the remaining endpoints share the traffic');
  t.equal((await request(LATE.clusterIP, 80)).who, EP[1], 'a service added by a partial sync answers');
  t.equal((await request(SOLO.clusterIP, 80)).who, EP[0], 'an unchanged service still answers');
  t.ok(await proxier.rulesIntact(), 'rulesIntact() after a partial sync');

  // Partial sync removing a whole service: its ClusterIP no longer leads to the endpoint.
  next = servicePortsOf([WEB, EMPTY, SOLO], [webSlice([EP[0], EP[1]]), soloSlice('solo', EP[0])], {
    nodeName: NODE,
  });
  changed = changedServicePorts(state, next);
  await proxier.sync({ servicePorts: next, changed });
  state = next;
  const gone = await request(LATE.clusterIP, 80, 500);
  t.ok(gone.who.startsWith('!'), `a service removed by a partial sync no longer answers (${gone.who})`);

  // Idempotence: the same state again, fully and as an empty partial sync.
  const before = await ruleset();
  await proxier.sync({ servicePorts: state, changed: undefined });
  const again = await ruleset();
  t.equal(again, before, 'a second full sync of the same state changes no rule');
  await proxier.sync({ servicePorts: state, changed: new Set() });
  t.equal(await ruleset(), before, 'an empty partial sync changes no rule');
  const still = await tally(WEB.clusterIP, 80, 15);
  t.same(
    [...still.keys()].sort(),
    [EP[0], EP[1]],
    `traffic unchanged after the repeated syncs: ${fmt(still)}`,
  );

  // Someone else wipes the rules.
  for (const cmd of info.wipe) await sh(cmd);
  t.notOk(
    await proxier.rulesIntact(),
    `rulesIntact() is false after ${info.wipe.map((c) => c.join(' ')).join('; ')}`,
  );
  await proxier.sync({ servicePorts: state, changed: undefined });
  t.ok(await proxier.rulesIntact(), 'rulesIntact() again after a full sync');
  const restored = await tally(WEB.clusterIP, 80, 15);
  t.same([...restored.keys()].sort(), [EP[0], EP[1]], `a full sync restored traffic: ${fmt(restored)}`);
  const refusedAgain = await request(EMPTY.clusterIP, 80, 3000);
  t.equal(refusedAgain.who, '!ECONNREFUSED', 'and the reject of the empty service');

  await isolation(t, proxier);

  // Cleanup.
  await proxier.cleanup();
  const left = await ruleset();
  t.notMatch(left, /weft/i, 'cleanup() leaves no weft table, chain, set or map', { ruleset: left });
  const listeners = (await sh(['ss', '-Htlnu']))
    .split('\n')
    .filter((l) => l.trim() && !l.includes(`:${EP_PORT} `));
  t.same(listeners, [], 'cleanup() leaves no listener of the proxier');
  await proxier.cleanup();
  t.pass('a second cleanup() succeeds');
  t.notMatch(await ruleset(), /weft/i, 'and still leaves nothing');
  await proxier.close();
}

function specs(
  defs: ServiceDef[],
  slices: SliceDef[],
): { services: ServiceSpec[]; slices: EndpointSliceSpec[] } {
  return {
    services: defs.map((d) => {
      const o = serviceObject(d);
      return parseService(o.key, d.namespace ?? 'default', d.name, JSON.stringify(o.value));
    }),
    slices: slices.map((d) => {
      const o = sliceObject(d);
      const meta = o.value.metadata as { name: string };
      return parseEndpointSlice(o.key, d.namespace ?? 'default', meta.name, JSON.stringify(o.value));
    }),
  };
}

/**
 * The sync engine over this proxier, with a Service of the longest valid names and one that the
 * kernel refuses next to the good ones: the good ones and the long one answer, the refused one is
 * named, and the engine is synced and healthy.
 */
async function isolation(t: Test, proxier: Proxier): Promise<void> {
  const longSlice: SliceDef = {
    ...soloSlice(LONG.name, EP[1]),
    namespace: LONG.namespace,
    name: 'long-0',
    ports: [{ name: 'longest-portnam', port: EP_PORT }],
  };
  const objs = specs(
    [WEB, EMPTY, SOLO, LONG, REFUSED],
    [webSlice([EP[0], EP[1]]), soloSlice('solo', EP[0]), longSlice, soloSlice('refused', EP[2])],
  );
  // Past validation, which refuses it at the door.
  objs.services = objs.services.map((s) =>
    s.name === REFUSED.name ? { ...s, ports: s.ports.map((p) => ({ ...p, port: 70_000 })) } : s,
  );
  t.ok(proxier.check, 'the proxier can check a ruleset without applying it');
  const engine = new SyncEngine({
    proxiers: [proxier],
    source: { services: () => objs.services, slices: () => objs.slices },
    nodeName: NODE,
    log: silentLogger(),
    metrics: createRegistry(),
    minSyncPeriodMs: 0,
    syncPeriodMs: 60_000,
  });
  engine.start();
  try {
    engine.queueChange({ kind: 'Service', seenAt: Date.now(), count: 1 });
    await Promise.race([
      engine.firstSync,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no sync within 20 s')), 20_000)),
    ]);
    t.same(
      engine.rejections().map((r) => [r.key, r.reason]),
      [['default/refused', 'kernel']],
      'the refused service port is named',
    );
    t.same(engine.healthz(), { ok: true }, '/healthz is fine');
    const web = await tally(WEB.clusterIP, 80, 10);
    t.same([...web.keys()].sort(), [EP[0], EP[1]], `the good services are programmed: ${fmt(web)}`);
    t.equal(
      (await request(LONG.clusterIP, 80)).who,
      EP[1],
      'the Service with the longest valid names answers',
    );
    t.equal((await request(EMPTY.clusterIP, 80, 3000)).who, '!ECONNREFUSED', 'the empty one is refused');
    t.ok(await proxier.rulesIntact(), 'rulesIntact()');
  } finally {
    await engine.stop();
  }
}

runPerMode(import.meta.url, suite);

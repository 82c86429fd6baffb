/**
 * Acceptance of the flanneld dataplane in a throwaway namespace: a veth underlay, the vxlan
 * backend with two remote leases, stale entries of a node that left while the daemon was down,
 * hand-made damage (a route, a neighbour, an FDB entry, the whole device) repaired by netlink
 * events and by the periodic check, DirectRouting, and host-gw's refusal of a remote that is not
 * directly connected. Every check reads the kernel through iproute2, not through weft.
 */
import { pino, type Logger } from 'pino';
import type { Test } from 'tap';
import { Dataplane, type DataplaneOptions } from '../../../src/flanneld/dataplane/index.js';
import { Cidr, parseNetConfig, type LeaseAttrs, type NetConfig } from '../../../src/ipam/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { Registry } from '../../../src/metrics/index.js';
import { openNetlink, type Netlink } from '../../../src/netlink/index.js';
import { runInNetns } from '../../helpers/netns-test.js';
import { run, waitFor } from '../../lab/exec.js';
import { bridgeFdb, ipAddrs, ipLinks, ipNeighs, ipRoutes } from '../netlink/fixtures/iproute.js';

const UNDERLAY = 'u0';
const OWN_IP = '192.0.2.1';
const ADOPTED_MAC = '02:11:22:33:44:55';

interface Node {
  key: string;
  subnet: string;
  ip: string;
  mac: string;
}
const A: Node = { key: '10.244.2.0-24', subnet: '10.244.2.0/24', ip: '192.0.2.2', mac: '0a:58:0a:f4:02:00' };
const B: Node = { key: '10.244.3.0-24', subnet: '10.244.3.0/24', ip: '192.0.2.3', mac: '0a:58:0a:f4:03:00' };
/** Left the cluster while the daemon was down: its entries are in the kernel, its lease is gone. */
const GONE: Node = {
  key: '10.244.9.0-24',
  subnet: '10.244.9.0/24',
  ip: '192.0.2.9',
  mac: '0a:58:0a:f4:09:00',
};
/** Behind a router: not on the underlay's network. */
const FAR: Node = {
  key: '10.244.5.0-24',
  subnet: '10.244.5.0/24',
  ip: '203.0.113.5',
  mac: '0a:58:0a:f4:05:00',
};

function lease(n: Node, type = 'vxlan', mac = n.mac) {
  const attrs: LeaseAttrs = {
    publicIP: n.ip,
    backendType: type,
    ...(type === 'vxlan' && { backendData: { VNI: 1, VtepMAC: mac } }),
  };
  return { key: n.key, subnets: { ipv4: Cidr.parse(n.subnet) }, attrs };
}

function ownLease(attrs: Omit<LeaseAttrs, 'publicIP'>) {
  return {
    key: '10.244.1.0-24',
    subnets: { ipv4: Cidr.parse('10.244.1.0/24') },
    attrs: { publicIP: OWN_IP, ...attrs },
  };
}

const ip = (...args: string[]) => run('ip', args);

/** `ip neigh` entries of a device, as `<dst> <lladdr> <STATE>`. */
async function neighs(dev: string): Promise<string[]> {
  return (await ipNeighs(dev)).map((n) => `${n.dst} ${n.lladdr ?? '-'} ${n.state.join(',')}`).sort();
}

/** `bridge fdb` entries of a device, as `<mac> <dst> <state>`. */
async function fdb(dev: string): Promise<string[]> {
  return (await bridgeFdb(dev)).map((e) => `${e.mac} ${e.dst ?? '-'} ${e.state || '-'}`).sort();
}

/** Main-table routes into 10.244.0.0/16, as iproute2 prints them (without protocol and scope). */
async function clusterRoutes(): Promise<string[]> {
  const net = Cidr.parse('10.244.0.0/16');
  return (await ipRoutes())
    .filter((r) => net.contains(Cidr.parseLenient(r.dst.includes('/') ? r.dst : `${r.dst}/32`)))
    .map(
      (r) =>
        `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.dev}${r.flags.includes('onlink') ? ' onlink' : ''}`,
    )
    .sort();
}

function tunnelRoute(n: Node): string {
  return `${n.subnet} via ${n.subnet.replace('/24', '')} dev flannel.1 onlink`;
}

async function inetAddrs(dev: string): Promise<string[]> {
  const [a] = await ipAddrs(dev);
  return (a?.addr_info ?? []).filter((x) => x.family === 'inet').map((x) => `${x.local}/${x.prefixlen}`);
}

/** A logger that keeps its lines, so tests can check what was reported. */
function recordingLogger(): {
  logger: Logger;
  lines: { level: number; msg: string; [k: string]: unknown }[];
} {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

async function metricSum(registry: Registry, name: string): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? []).reduce((sum, v) => sum + (name.endsWith('_seconds') ? 0 : v.value), 0);
}

/** How long `check` takes to hold, failing the test after `timeoutMs`. */
async function timeUntil(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const t0 = Date.now();
  await waitFor(check, { what, timeoutMs, intervalMs: 25 });
  return Date.now() - t0;
}

runInNetns(
  import.meta.url,
  async (t: Test) => {
    const nl: Netlink = openNetlink({ logger: silentLogger(), timeoutMs: 5_000 });
    t.teardown(() => nl.close());
    const vxlanConfig: NetConfig = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    const extIface = async () => {
      const link = await nl.links.get(UNDERLAY);
      if (!link) throw new Error('no underlay');
      return { name: UNDERLAY, index: link.index, ip: OWN_IP, mtu: link.mtu };
    };
    const dataplanes: Dataplane[] = [];
    t.teardown(async () => {
      for (const d of dataplanes) await d.close();
    });
    const open = async (opts: Partial<DataplaneOptions> & { config: NetConfig }): Promise<Dataplane> => {
      const d = new Dataplane({
        netlink: nl,
        extIface: await extIface(),
        logger: silentLogger(),
        // Long enough that anything repaired within the test's deadlines was repaired by an event.
        resyncIntervalMs: 120_000,
        debounceMs: 50,
        backoff: { initialMs: 50, maxMs: 500 },
        ...opts,
      });
      dataplanes.push(d);
      return d;
    };

    await t.test('setup: underlay, a bridge in the cluster network, state left from before', async () => {
      await ip('link', 'add', UNDERLAY, 'type', 'veth', 'peer', 'name', 'u1');
      await ip('addr', 'add', `${OWN_IP}/24`, 'dev', UNDERLAY);
      await ip('link', 'set', UNDERLAY, 'up');
      await ip('link', 'set', 'u1', 'up');
      // Not weft's: the pods' bridge with this node's subnet, an unrelated route and neighbour.
      await ip('link', 'add', 'cni0', 'type', 'bridge');
      await ip('addr', 'add', '10.244.1.1/24', 'dev', 'cni0');
      await ip('link', 'set', 'cni0', 'up');
      await ip('route', 'add', '198.51.100.0/24', 'via', '192.0.2.254');
      await ip(
        'neigh',
        'add',
        '192.0.2.77',
        'lladdr',
        '02:00:00:00:00:77',
        'dev',
        UNDERLAY,
        'nud',
        'permanent',
      );
      // The device of an earlier run, with an old subnet's address and the entries of a node that left.
      await ip(
        ...['link', 'add', 'flannel.1', 'address', ADOPTED_MAC, 'type', 'vxlan', 'id', '1'],
        ...['local', OWN_IP, 'dev', UNDERLAY, 'dstport', '8472', 'nolearning'],
      );
      await ip('link', 'set', 'flannel.1', 'up');
      await ip('addr', 'add', '10.244.8.0/32', 'dev', 'flannel.1');
      await ip('neigh', 'add', '10.244.9.0', 'lladdr', GONE.mac, 'dev', 'flannel.1', 'nud', 'permanent');
      await run('bridge', ['fdb', 'add', GONE.mac, 'dev', 'flannel.1', 'dst', GONE.ip, 'self', 'permanent']);
      await ip('route', 'add', GONE.subnet, 'via', '10.244.9.0', 'dev', 'flannel.1', 'onlink');
    });

    const registry = new Registry();
    const rec = recordingLogger();
    let vx!: Dataplane;
    let own!: ReturnType<typeof ownLease>;

    await t.test('start: adopts the device and its MAC, publishes it, MTU = underlay − 50', async (t) => {
      vx = await open({ config: vxlanConfig, registry, logger: rec.logger });
      const prepared = await vx.start();
      t.equal(prepared.backendType, 'vxlan');
      t.same(prepared.backendData, { VNI: 1, VtepMAC: ADOPTED_MAC });
      t.equal(prepared.mtu, 1450);
      const [link] = await ipLinks('flannel.1');
      t.equal(link?.address, ADOPTED_MAC);
      t.equal(link?.mtu, 1450);
      t.match(link?.linkinfo?.info_data, {
        id: 1,
        local: OWN_IP,
        link: UNDERLAY,
        port: 8472,
        learning: false,
      });
      t.notOk(vx.isReady, 'not ready before the first reconcile');
      own = ownLease({ backendType: prepared.backendType, backendData: prepared.backendData });
    });

    await t.test('first update: programs two remotes, removes what the departed node left', async (t) => {
      const garbage = lease(
        { ...B, key: '10.244.4.0-24', subnet: '10.244.4.0/24', ip: '192.0.2.4' },
        'vxlan',
        'zz',
      );
      const result = await vx.update({
        own,
        leases: [lease(B), own, garbage, lease(A)],
        unreadable: [
          { path: '/coreos.com/network/subnets/10.244.7.0-24', error: new Error('not valid JSON') },
        ],
      });
      t.same(result.errors, []);
      t.ok(result.ok);
      t.equal(result.removed, 4, 'stale address, neighbour, FDB entry and route removed');
      t.equal(result.added, 7, 'own address + 3 entries per remote');
      t.same(result.programmed, [A.key, B.key]);
      t.match(result.skipped, [
        { key: '/coreos.com/network/subnets/10.244.7.0-24', reason: /not valid JSON/ },
        { key: '10.244.4.0-24', reason: /VtepMAC "zz"/ },
      ]);
      await vx.ready;
      t.ok(vx.isReady);

      t.same(await inetAddrs('flannel.1'), ['10.244.1.0/32']);
      t.same(await neighs('flannel.1'), [`10.244.2.0 ${A.mac} PERMANENT`, `10.244.3.0 ${B.mac} PERMANENT`]);
      t.same(await fdb('flannel.1'), [`${A.mac} ${A.ip} permanent`, `${B.mac} ${B.ip} permanent`]);
      t.same(await clusterRoutes(), ['10.244.1.0/24 dev cni0', tunnelRoute(A), tunnelRoute(B)]);
      t.ok(
        (await ipRoutes()).some((r) => r.dst === '198.51.100.0/24'),
        'unrelated route kept',
      );
      t.ok(
        (await ipNeighs(UNDERLAY)).some((n) => n.dst === '192.0.2.77'),
        'unrelated neighbour on the underlay kept',
      );
      const warned = rec.lines.filter((l) => l.level === 40).map((l) => l.msg);
      t.ok(
        warned.some((m) => m.includes('10.244.7.0-24') && m.includes('not valid JSON')),
        'garbage logged',
      );
      t.ok(
        warned.some((m) => m.includes('10.244.4.0-24') && m.includes('VtepMAC')),
        'bad lease logged',
      );

      const again = await vx.update({ own, leases: [lease(A), lease(B), own] });
      t.same(
        [again.added, again.removed, again.updated, again.repaired],
        [0, 0, 0, 0],
        'nothing to do twice',
      );
    });

    await t.test('a removed lease takes its three entries with it', async (t) => {
      const result = await vx.update({ own, leases: [own, lease(A)] });
      t.equal(result.removed, 3);
      t.same(await neighs('flannel.1'), [`10.244.2.0 ${A.mac} PERMANENT`]);
      t.same(await fdb('flannel.1'), [`${A.mac} ${A.ip} permanent`]);
      t.same(await clusterRoutes(), ['10.244.1.0/24 dev cni0', tunnelRoute(A)]);
    });

    await t.test('a route, a neighbour and an FDB entry deleted by hand come back by event', async (t) => {
      const before = await metricSum(registry, 'weft_flanneld_repairs_total');
      await ip('route', 'del', A.subnet, 'via', '10.244.2.0', 'dev', 'flannel.1');
      const routeMs = await timeUntil('route restored', async () =>
        (await clusterRoutes()).includes(tunnelRoute(A)),
      );
      await ip('neigh', 'del', '10.244.2.0', 'dev', 'flannel.1');
      const neighMs = await timeUntil('neighbour restored', async () =>
        (await neighs('flannel.1')).includes(`10.244.2.0 ${A.mac} PERMANENT`),
      );
      await run('bridge', ['fdb', 'del', A.mac, 'dev', 'flannel.1', 'dst', A.ip, 'self']);
      const fdbMs = await timeUntil('FDB entry restored', async () =>
        (await fdb('flannel.1')).includes(`${A.mac} ${A.ip} permanent`),
      );
      t.comment(`restored after ${routeMs} / ${neighMs} / ${fdbMs} ms`);
      for (const ms of [routeMs, neighMs, fdbMs])
        t.ok(ms < 10_000, `well under the periodic interval (${ms} ms)`);
      await waitFor(async () => (await metricSum(registry, 'weft_flanneld_repairs_total')) >= before + 3, {
        what: 'three repairs counted',
        timeoutMs: 5_000,
      });
      t.pass('repairs counted');
    });

    await t.test('a deleted device is recreated with its MAC and every entry', async (t) => {
      await ip('link', 'del', 'flannel.1');
      const ms = await timeUntil(
        'device and entries back',
        async () =>
          (await clusterRoutes()).includes(tunnelRoute(A)) &&
          (await fdb('flannel.1').catch(() => [])).length === 1 &&
          (await neighs('flannel.1').catch(() => [])).length === 1,
      );
      t.comment(`recreated after ${ms} ms`);
      t.ok(ms < 10_000, `well under the periodic interval (${ms} ms)`);
      const [link] = await ipLinks('flannel.1');
      t.equal(link?.address, ADOPTED_MAC, 'same MAC as published in the lease');
      t.equal(link?.mtu, 1450);
      t.ok(link?.flags.includes('UP'));
      t.same(await inetAddrs('flannel.1'), ['10.244.1.0/32']);
      t.same(await neighs('flannel.1'), [`10.244.2.0 ${A.mac} PERMANENT`]);
      t.same(await fdb('flannel.1'), [`${A.mac} ${A.ip} permanent`]);
      t.same(vx.status().prepared?.backendData, { VNI: 1, VtepMAC: ADOPTED_MAC });
    });

    await t.test('a device set down is set up again and its routes replayed', async (t) => {
      await ip('link', 'set', 'flannel.1', 'down');
      await timeUntil('device up with its route', async () => {
        const [link] = await ipLinks('flannel.1');
        return Boolean(link?.flags.includes('UP')) && (await clusterRoutes()).includes(tunnelRoute(A));
      });
      t.pass();
    });

    await t.test('metrics', async (t) => {
      const text = await registry.metrics();
      t.match(text, /weft_flanneld_reconcile_runs_total\{trigger="update",result="ok"\} \d/);
      t.match(text, /weft_flanneld_reconcile_runs_total\{trigger="event",result="ok"\} \d/);
      t.match(text, /weft_flanneld_reconcile_duration_seconds_count \d/);
      t.match(text, /weft_flanneld_repairs_total\{kind="device"\} \d/);
      t.match(text, /weft_flanneld_dataplane_errors_total/);
      await vx.close();
    });

    await t.test('DirectRouting: a directly connected remote is routed over the underlay', async (t) => {
      const config = parseNetConfig({
        Network: '10.244.0.0/16',
        Backend: { Type: 'vxlan', DirectRouting: true },
      });
      const d = await open({ config });
      const prepared = await d.start();
      t.same(prepared.backendData, { VNI: 1, VtepMAC: ADOPTED_MAC }, 'MAC kept across daemon restarts');
      const result = await d.update({ own, leases: [own, lease(A), lease(FAR)] });
      t.same(result.errors, []);
      t.same(await clusterRoutes(), [
        '10.244.1.0/24 dev cni0',
        `${A.subnet} via ${A.ip} dev ${UNDERLAY}`,
        tunnelRoute(FAR),
      ]);
      t.same(await neighs('flannel.1'), [`10.244.5.0 ${FAR.mac} PERMANENT`], "A's tunnel neighbour removed");
      t.same(await fdb('flannel.1'), [`${FAR.mac} ${FAR.ip} permanent`]);
      await d.close();
    });

    await t.test('the periodic check repairs without events', async (t) => {
      const d = await open({ config: vxlanConfig, watchEvents: false, resyncIntervalMs: 300 });
      await d.start();
      const result = await d.update({ own, leases: [own, lease(FAR)] });
      t.equal(result.removed, 1, 'the direct route of A, no longer a lease, is removed');
      await ip('route', 'del', FAR.subnet);
      await ip('neigh', 'del', '10.244.5.0', 'dev', 'flannel.1');
      const ms = await timeUntil(
        'periodic repair',
        async () =>
          (await clusterRoutes()).includes(tunnelRoute(FAR)) &&
          (await neighs('flannel.1')).includes(`10.244.5.0 ${FAR.mac} PERMANENT`),
      );
      t.comment(`repaired after ${ms} ms`);
      t.equal(d.status().lastResult?.trigger, 'periodic');
      await d.close();
      await ip('link', 'del', 'flannel.1');
    });

    await t.test('host-gw: programs the connected remote, refuses the other by name', async (t) => {
      // A node that left while the daemon was down, as host-gw programmed it.
      await ip('route', 'add', GONE.subnet, 'via', GONE.ip, 'dev', UNDERLAY);
      const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
      const { logger, lines } = recordingLogger();
      const d = await open({ config, logger });
      const prepared = await d.start();
      t.same(prepared, { backendType: 'host-gw', mtu: 1500, devices: [] });
      const hostOwn = ownLease({ backendType: 'host-gw' });
      const result = await d.update({
        own: hostOwn,
        leases: [hostOwn, lease(A, 'host-gw'), lease(FAR, 'host-gw')],
      });
      t.same(result.errors, []);
      t.equal(result.removed, 1, "the departed node's route removed");
      t.equal(result.added, 1);
      t.same(result.programmed, [A.key]);
      t.match(result.skipped, [
        { key: FAR.key, reason: /203\.0\.113\.5 is not on a network directly connected to u0/ },
      ]);
      t.same(d.status().skipped, result.skipped);
      t.same(await clusterRoutes(), ['10.244.1.0/24 dev cni0', `${A.subnet} via ${A.ip} dev ${UNDERLAY}`]);
      t.ok(
        lines.some((l) => l.level === 40 && l.msg.includes(FAR.key) && l.msg.includes(FAR.ip)),
        'refusal logged with the lease and its PublicIP',
      );
      t.same(await ipLinks('flannel.1'), [], 'host-gw creates no device');
      await d.close();
    });
  },
  { role: 'dp' },
);

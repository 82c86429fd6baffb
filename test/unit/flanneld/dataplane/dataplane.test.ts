/**
 * The Dataplane shell against a fake kernel that refuses, times out and drops its event stream
 * on cue: failures never reach the caller as rejections, are counted, and are retried with
 * backoff until the kernel converges; events trigger debounced runs, the dataplane's own changes
 * do not.
 */
import t from 'tap';
import { waitFor } from '../../../lab/exec.js';
import { planVxlan, type Backend, type NodeLease } from '../../../../src/flanneld/backends/index.js';
import { Dataplane, type DataplaneOptions } from '../../../../src/flanneld/dataplane/index.js';
import { eventFamilies, eventGroups } from '../../../../src/flanneld/dataplane/dataplane.js';
import { ErrorCodes } from '../../../../src/errors/index.js';
import { Cidr, parseNetConfig } from '../../../../src/ipam/index.js';
import { silentLogger } from '../../../../src/log/index.js';
import { Registry } from '../../../../src/metrics/index.js';
import type { Neighbour } from '../../../../src/netlink/index.js';
import { FakeKernel, errnoError, timeoutError } from './fixtures/fake-kernel.js';

const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });

const lease = (n: number): NodeLease => ({
  key: `10.244.${n}.0-24`,
  subnets: { ipv4: Cidr.parse(`10.244.${n}.0/24`) },
  attrs: {
    publicIP: `192.0.2.${n}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: `0a:58:0a:f4:0${n}:00` },
  },
});
const own = lease(1);
const input = { own, leases: [own, lease(2), lease(3)] };

function setup(over: Partial<DataplaneOptions> = {}) {
  const kernel = new FakeKernel();
  const registry = new Registry();
  const dp = new Dataplane({
    config,
    extIface: { name: 'eth0', index: kernel.index('eth0'), ip: '192.0.2.1', mtu: 1500 },
    netlink: kernel.netlink(),
    logger: silentLogger(),
    registry,
    resyncIntervalMs: 0,
    debounceMs: 10,
    backoff: { initialMs: 20, maxMs: 100, jitter: 0 },
    ...over,
  });
  t.teardown(() => dp.close());
  return { kernel, registry, dp };
}

async function metric(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? [])
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((s, v) => s + v.value, 0);
}

const routeDsts = (k: FakeKernel) => k.routes.map((r) => r.dst).sort();

t.test('a refused entry is reported, the others programmed, and it is retried until it sticks', async (t) => {
  const { kernel, registry, dp } = setup();
  await dp.start();
  kernel.failNext('routes.replace', errnoError('replaceRoute 10.244.3.0/24', 'ENETUNREACH'), 2, (s) =>
    JSON.stringify(s).includes('10.244.3.0/24'),
  );
  const first = await dp.update(input);
  t.notOk(first.ok);
  t.match(first.errors, [/create route 10\.244\.3\.0\/24 .*ENETUNREACH/]);
  t.same(routeDsts(kernel), ['10.244.2.0/24'], 'the other remote is programmed');
  t.equal(kernel.neighbours.length, 2, 'both neighbours');
  t.ok(dp.isReady, "one remote's refused route does not keep the node unready");
  await waitFor(() => dp.status().lastResult?.ok, { what: 'converged by retries', timeoutMs: 10_000 });
  t.same(routeDsts(kernel), ['10.244.2.0/24', '10.244.3.0/24']);
  t.equal(dp.status().lastResult?.trigger, 'retry');
  t.equal(await metric(registry, 'weft_flanneld_dataplane_errors_total', { stage: 'apply' }), 2);
  t.equal(await metric(registry, 'weft_flanneld_reconcile_runs_total', { result: 'error' }), 2);
});

t.test('a failed dump never rejects: not ready, retried with backoff, then ready', async (t) => {
  const { kernel, registry, dp } = setup();
  await dp.start();
  kernel.failNext('routes.list', timeoutError('listRoutes'), 3);
  const started = Date.now();
  const first = await dp.update(input);
  t.notOk(first.ok);
  t.match(first.errors, [/^read: netlink listRoutes: no reply/]);
  t.notOk(dp.isReady);
  await dp.ready;
  const waited = Date.now() - started;
  t.ok(waited >= 20 + 40 + 80 - 10, `backoff grew between attempts (${waited} ms)`);
  t.same(routeDsts(kernel), ['10.244.2.0/24', '10.244.3.0/24']);
  t.equal(await metric(registry, 'weft_flanneld_dataplane_errors_total', { stage: 'read' }), 3);
});

t.test('start: a transient failure is waited out, a configuration error is not', async (t) => {
  const { kernel, dp } = setup();
  kernel.failNext('links.ensureVxlan', errnoError('createLink flannel.1', 'EBUSY'));
  const prepared = await dp.start();
  t.equal(prepared.devices[0]?.name, 'flannel.1');
  t.equal(kernel.calls.filter((c) => c === 'links.ensureVxlan').length, 2);

  const v6 = parseNetConfig({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });
  const other = setup({ config: v6 });
  await t.rejects(other.dp.start(), { code: ErrorCodes.INVALID_CONFIG });
  const hard = setup();
  hard.kernel.failNext('links.ensureVxlan', errnoError('createLink flannel.1', 'EPERM'));
  await t.rejects(hard.dp.start(), { message: /EPERM/ });
});

t.test('a device that vanished is recreated by prepare and everything replayed', async (t) => {
  const { kernel, registry, dp } = setup();
  const prepared = await dp.start();
  await dp.update(input);
  kernel.removeLink('flannel.1');
  const r = await dp.reconcile();
  t.ok(r.ok);
  t.equal(r.repaired, 8, 'the device, its address and 3 + 3 entries');
  t.equal(kernel.links.get('flannel.1')?.mac, prepared.devices[0]?.mac, 'same MAC');
  t.equal(kernel.links.get('flannel.1')?.up, true);
  t.equal(await metric(registry, 'weft_flanneld_repairs_total', { kind: 'device' }), 1);
  t.equal(await metric(registry, 'weft_flanneld_repairs_total', { kind: 'route' }), 2);
});

t.test('relevant notifications trigger one debounced run; its own changes do not', async (t) => {
  const { kernel, registry, dp } = setup();
  await dp.start();
  await dp.update(input);
  const events = kernel.events;
  if (!events) throw new Error('no event stream');
  const runs = () => metric(registry, 'weft_flanneld_reconcile_runs_total', { trigger: 'event' });
  const flannel = kernel.links.get('flannel.1');
  const route = kernel.routes.find((r) => r.dst === '10.244.2.0/24');
  if (!flannel || !route) throw new Error('not programmed');

  // What the kernel reports after the dataplane's own replace: nothing to do.
  events.push({ kind: 'route', action: 'new', route });
  events.push({
    kind: 'neighbour',
    action: 'new',
    neighbour: { ...kernel.neighbours[0], state: 'noarp' } as Neighbour,
  });
  await new Promise((r) => setTimeout(r, 60));
  t.equal(await runs(), 0, 'no run for its own changes');

  // A route deleted by hand, in a burst with an unrelated one.
  kernel.routes = kernel.routes.filter((r) => r !== route);
  events.push({ kind: 'route', action: 'del', route });
  events.push({ kind: 'route', action: 'del', route: { ...route, dst: '10.99.0.0/16' } });
  await waitFor(() => kernel.routes.some((r) => r.dst === '10.244.2.0/24'), {
    what: 'route restored',
    timeoutMs: 10_000,
  });
  t.equal(await runs(), 1, 'one run for the burst');
  t.equal(dp.status().lastResult?.repaired, 1);

  // A stale route added by hand is removed.
  kernel.routes.push({ ...route, dst: '10.244.9.0/24', gateway: '10.244.9.0' });
  events.push({
    kind: 'route',
    action: 'new',
    route: { ...route, dst: '10.244.9.0/24', gateway: '10.244.9.0' },
  });
  await waitFor(() => !kernel.routes.some((r) => r.dst === '10.244.9.0/24'), {
    what: 'stale route removed',
    timeoutMs: 10_000,
  });
  t.equal(await runs(), 2);
});

t.test('a failed event stream is reopened with backoff and followed by a reconcile', async (t) => {
  const { kernel, registry, dp } = setup();
  await dp.start();
  await dp.update(input);
  const first = kernel.events;
  kernel.routes = [];
  first?.fail(new Error('socket went away'));
  await waitFor(() => kernel.streams.length === 2, { what: 'stream reopened', timeoutMs: 10_000 });
  await waitFor(() => kernel.routes.length === 2, { what: 'reconciled after the gap', timeoutMs: 10_000 });
  t.ok(first?.closed, 'the failed stream is closed');
  t.equal(await metric(registry, 'weft_flanneld_dataplane_errors_total', { stage: 'events' }), 1);
});

t.test('lost notifications (ENOBUFS) are counted and resync the whole dataplane at once', async (t) => {
  const { kernel, registry, dp } = setup({ debounceMs: 60_000 });
  await dp.start();
  await dp.update(input);
  const events = kernel.events;
  if (!events) throw new Error('no event stream');
  t.equal(await metric(registry, 'weft_flanneld_netlink_overflows_total'), 0, 'exposed before the first');
  // Damage nobody was told about: the lost notifications would have said so.
  kernel.routes = [];
  events.push({ kind: 'resync', reason: 'overflow' });
  // Not held back by the (here one-minute) debounce of ordinary notifications.
  await waitFor(() => kernel.routes.length === 2, { what: 'resynced', timeoutMs: 5_000 });
  t.equal(await metric(registry, 'weft_flanneld_netlink_overflows_total'), 1);
  t.notOk(kernel.events?.closed, 'the stream stays open');
});

t.test('only the notification groups and families the backend needs', async (t) => {
  t.same(eventGroups('vxlan'), ['link', 'address', 'route', 'neighbour']);
  t.same(eventGroups('host-gw'), ['link', 'address', 'route'], 'no neighbour or FDB entries to watch');
  t.same(eventGroups('udp'), ['link', 'address', 'route']);
  t.same(eventFamilies(config), ['inet']);
  t.same(
    eventFamilies(
      parseNetConfig({
        EnableIPv4: false,
        EnableIPv6: true,
        IPv6Network: 'fd00:10::/64',
        Backend: { Type: 'vxlan' },
      }),
    ),
    ['inet6'],
  );
});

t.test('the periodic check runs without events', async (t) => {
  const { kernel, dp } = setup({ watchEvents: false, resyncIntervalMs: 30 });
  await dp.start();
  t.equal(kernel.streams.length, 0, 'no event stream');
  await dp.update(input);
  kernel.neighbours = [];
  await waitFor(() => kernel.neighbours.length === 2, { what: 'periodic repair', timeoutMs: 10_000 });
  t.equal(dp.status().lastResult?.trigger, 'periodic');
});

t.test('before any leases nothing runs; after close nothing runs', async (t) => {
  const { kernel, dp } = setup({ resyncIntervalMs: 10 });
  await dp.start();
  const r = await dp.reconcile();
  t.notOk(r.ok);
  t.same(r.errors, ['no leases given yet']);
  await new Promise((res) => setTimeout(res, 40));
  t.notOk(kernel.calls.includes('routes.list'), 'the periodic tick waits for leases');
  await dp.close();
  await t.rejects(dp.ready, { code: ErrorCodes.CLOSED });
  const after = await dp.update(input);
  t.same(after.errors, ['closed']);
  t.ok(kernel.events?.closed, 'event stream closed');
  await t.rejects(dp.start(), { code: ErrorCodes.CLOSED });
});

t.test('updates during a run are folded into one more run that sees the last leases', async (t) => {
  const { kernel, dp } = setup();
  await dp.start();
  const a = dp.update(input);
  const b = dp.update({ own, leases: [lease(2)] });
  const c = dp.update({ own, leases: [lease(4)] });
  const [ra, rb, rc] = await Promise.all([a, b, c]);
  t.same(ra.programmed, ['10.244.2.0-24', '10.244.3.0-24']);
  t.same(rb.programmed, ['10.244.4.0-24'], 'b waited for the run that saw c');
  t.equal(rb, rc, 'b and c share one run');
  t.same(routeDsts(kernel), ['10.244.4.0/24']);
});

t.test(
  'unreadable leases and planner skips are reported; a backend sync runs after each reconcile',
  async (t) => {
    const synced: string[][] = [];
    let failSync = true;
    const backend: Backend = {
      type: 'vxlan',
      prepare: () => Promise.resolve({ mtu: 1450, devices: [] }),
      plan: (i) => planVxlan(i),
      sync: (_i, desired) => {
        synced.push([...desired.programmed]);
        if (failSync) {
          failSync = false;
          return Promise.reject(new Error('forwarder not up'));
        }
        return Promise.resolve();
      },
    };
    const { registry, dp, kernel } = setup({ backend });
    kernel.addLink({ name: 'flannel.1', kind: 'vxlan', mtu: 1450, up: true, mac: '0a:00:00:00:00:01' });
    await dp.start();
    const bad = { ...lease(5), attrs: { ...lease(5).attrs, backendData: { VtepMAC: 'x' } } };
    const r = await dp.update({
      own,
      leases: [own, lease(2), bad],
      unreadable: [{ path: '/coreos.com/network/subnets/10.244.6.0-24', error: new Error('not valid JSON') }],
    });
    t.match(r.skipped, [
      { key: '/coreos.com/network/subnets/10.244.6.0-24', reason: 'unreadable lease: not valid JSON' },
      { key: '10.244.5.0-24', reason: /VtepMAC "x"/ },
    ]);
    t.same(r.programmed, ['10.244.2.0-24']);
    t.match(r.errors, ['backend sync: forwarder not up']);
    t.equal(await metric(registry, 'weft_flanneld_dataplane_skipped_leases'), 2);
    await waitFor(() => dp.status().lastResult?.ok, { what: 'sync retried', timeoutMs: 10_000 });
    t.same(synced, [['10.244.2.0-24'], ['10.244.2.0-24']]);
    t.equal(await metric(registry, 'weft_flanneld_dataplane_errors_total', { stage: 'sync' }), 1);
  },
);

t.test('a planner that throws is a plan-stage failure, not a crash', async (t) => {
  const backend: Backend = {
    type: 'vxlan',
    prepare: () => Promise.resolve({ mtu: 1450, devices: [] }),
    plan: () => {
      throw new Error('planner bug');
    },
  };
  const { registry, dp } = setup({ backend, backoff: { initialMs: 5_000 } });
  await dp.start();
  const r = await dp.update(input);
  t.same(r.errors, ['plan: planner bug']);
  t.equal(await metric(registry, 'weft_flanneld_dataplane_errors_total', { stage: 'plan' }), 1);
});

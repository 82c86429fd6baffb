/**
 * One object never stops rule programming for every Service: a service port the kernel refuses
 * is found (the proxier's checker, by bisection), left out, named in the log and a metric, and
 * everything else is programmed; it is tried again when it changes or on the periodic full sync,
 * never in a hot loop. A Service over the endpoint budget, and a value that cannot be rendered,
 * are left out the same way before any rule is written.
 */
import t from 'tap';
import { Backoff } from '../../../src/backoff/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import {
  parseEndpointSlice,
  parseService,
  type EndpointBudget,
  type EndpointSliceSpec,
  type ServicePortMap,
  type ServiceSpec,
} from '../../../src/proxy/model/index.js';
import type { Proxier, SyncRequest } from '../../../src/proxy/proxier.js';
import { SyncEngine } from '../../../src/proxy/sync-engine.js';
import {
  serviceObject,
  sliceObject,
  type EndpointDef,
  type ServiceDef,
} from '../../helpers/proxy-objects.js';
import { FakeClock } from './fake-clock.js';

/** A proxier whose "kernel" refuses any ruleset holding a poisoned id, in sync and check alike. */
class PickyProxier implements Proxier {
  readonly mode = 'nftables' as const;
  readonly family = 4 as const;
  readonly poison = new Set<string>();
  /** Every sync asked for, failed or not. */
  readonly attempts: { changed: string[] | undefined; ids: string[]; ok: boolean }[] = [];
  checks = 0;
  /** Without it, the proxier cannot check (as a proxier that does not implement `check`). */
  checking = true;

  #refuses(ports: ServicePortMap): string | undefined {
    return [...ports.keys()].find((id) => this.poison.has(id));
  }

  async sync(req: SyncRequest): Promise<void> {
    const bad = this.#refuses(req.servicePorts);
    this.attempts.push({
      changed: req.changed && [...req.changed].sort(),
      ids: [...req.servicePorts.keys()].sort(),
      ok: bad === undefined,
    });
    if (bad) throw new Error(`kernel: Invalid argument (${bad})`);
  }

  check = async (ports: ServicePortMap): Promise<void> => {
    if (!this.checking) throw new Error('cannot check');
    this.checks++;
    const bad = this.#refuses(ports);
    if (bad) throw new Error(`Error: Could not process rule: ${bad}`);
  };

  async rulesIntact(): Promise<boolean> {
    return true;
  }
  async cleanup(): Promise<void> {}
  async close(): Promise<void> {}
}

class MapSource {
  readonly isSynced = true;
  readonly svcs = new Map<string, ServiceSpec>();
  readonly sls = new Map<string, EndpointSliceSpec>();
  setService(def: ServiceDef): void {
    const o = serviceObject(def);
    this.svcs.set(o.key, parseService(o.key, def.namespace ?? 'default', def.name, JSON.stringify(o.value)));
  }
  setEndpoints(svc: ServiceDef, endpoints: EndpointDef[]): void {
    const o = sliceObject({
      service: svc.name,
      endpoints,
      ports: svc.ports.map((p) => ({ name: p.name ?? '', port: p.port + 1000 })),
    });
    const meta = o.value.metadata as { name: string };
    this.sls.set(o.key, parseEndpointSlice(o.key, 'default', meta.name, JSON.stringify(o.value)));
  }
  services(): Iterable<ServiceSpec> {
    return this.svcs.values();
  }
  slices(): Iterable<EndpointSliceSpec> {
    return this.sls.values();
  }
}

const svc = (name: string, n: number): ServiceDef => ({
  name,
  clusterIP: `10.96.0.${n}`,
  ports: [{ name: 'http', port: 80 }],
});
const SERVICES = Array.from({ length: 12 }, (_, i) => svc(`svc-${String(i).padStart(2, '0')}`, 20 + i));

function setup(budget?: EndpointBudget) {
  const clock = new FakeClock();
  const proxier = new PickyProxier();
  const source = new MapSource();
  const metrics = createRegistry();
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const log = silentLogger();
  for (const level of ['error', 'warn', 'info'] as const) {
    (log as unknown as Record<string, unknown>)[level] = (obj: Record<string, unknown>, msg: string) =>
      lines.push({ level, obj, msg });
  }
  const engine = new SyncEngine({
    proxiers: [proxier],
    source,
    nodeName: 'node-1',
    log,
    metrics,
    clock,
    minSyncPeriodMs: 1_000,
    syncPeriodMs: 30_000,
    integrityCheckIntervalMs: 5_000,
    backoff: new Backoff({ initialMs: 2_000, maxMs: 8_000, jitter: 0 }),
    ...(budget && { endpointBudget: budget }),
  });
  for (const d of SERVICES) source.setService(d);
  const change = () => engine.queueChange({ kind: 'Service', seenAt: clock.now(), count: 1 });
  const metric = async (name: string, labels: Record<string, string> = {}) => {
    const m = await metrics.getSingleMetric(name)?.get();
    return m?.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value;
  };
  return { clock, proxier, source, engine, change, metric, lines, metrics };
}

t.test('a service port the kernel refuses is left out; everything else is programmed', async (t) => {
  const s = setup();
  const bad = 'default/svc-07:http';
  s.proxier.poison.add(bad);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  const last = s.proxier.attempts.at(-1);
  t.ok(last?.ok, 'the last sync succeeded');
  t.equal(last?.changed, undefined, 'as a full sync');
  t.same(
    last?.ids,
    SERVICES.map((d) => `default/${d.name}:http`).filter((id) => id !== bad),
    'every other service port is programmed',
  );
  t.ok(s.engine.synced, 'the engine counts as synced (ready)');
  t.same(s.engine.healthz(), { ok: true }, '/healthz is fine');
  t.ok(s.proxier.checks <= 12, `found with ${s.proxier.checks} checks for 12 service ports`);
  t.same(
    s.engine.rejections().map((r) => [r.key, r.reason]),
    [[bad, 'kernel']],
    'the engine names it',
  );
  t.match(s.engine.rejections()[0]?.message, /Could not process rule/, 'with the checker error');
  t.equal(await s.metric('weft_proxy_sync_rejected_service_ports', { reason: 'kernel' }), 1);
  t.equal(await s.metric('weft_proxy_sync_rejections_total', { reason: 'kernel' }), 1);
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_failures_total'), 0, 'not a failed sync');
  const named = s.lines.filter((l) => l.obj.key === bad && l.level === 'error');
  t.equal(named.length, 1, 'one log line names it');
  t.match(named[0]?.msg, /svc-07.*left out/);

  // Another service changes: a partial sync without the refused one, no retry of it.
  const attempts = s.proxier.attempts.length;
  s.source.setEndpoints(SERVICES[1]!, [{ ip: '10.244.1.2' }]);
  s.change();
  await s.clock.advance(1_000);
  t.same(
    s.proxier.attempts.slice(attempts).map((a) => [a.changed, a.ok]),
    [[['default/svc-01:http'], true]],
    'one partial sync of the changed service, the refused one not tried again',
  );
  for (let i = 0; i < 10; i++) {
    s.change();
    await s.clock.advance(1_000);
  }
  t.equal(s.proxier.attempts.filter((a) => !a.ok).length, 1, 'no hot loop: it failed once');

  // Its own change retries it, at once.
  s.source.setEndpoints(SERVICES[7]!, [{ ip: '10.244.1.7' }]);
  s.change();
  await s.clock.advance(1_000);
  const retry = s.proxier.attempts.filter((a) => a.ids.includes(bad));
  t.equal(retry.length, 2, 'tried again after it changed');
  t.same(retry[1]?.changed, [bad], 'in a partial sync');
  t.equal(s.lines.filter((l) => l.obj.key === bad && l.level === 'error').length, 2, 'the new version named');

  // Fixed (here: the kernel now takes it): the periodic full sync programs it.
  s.proxier.poison.clear();
  await s.clock.advance(30_000);
  t.ok(s.proxier.attempts.at(-1)?.ids.includes(bad), 'the periodic full sync tries it again');
  t.same(s.engine.rejections(), [], 'nothing left out any more');
  t.equal(await s.metric('weft_proxy_sync_rejected_service_ports', { reason: 'kernel' }), 0);
  t.ok(
    s.lines.some((l) => l.obj.key === bad && l.level === 'info'),
    'its return is logged',
  );
});

t.test('several refused service ports are all found', async (t) => {
  const s = setup();
  const bad = ['default/svc-00:http', 'default/svc-05:http', 'default/svc-11:http'];
  for (const b of bad) s.proxier.poison.add(b);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  t.same(
    s.engine
      .rejections()
      .map((r) => r.key)
      .sort(),
    bad,
  );
  t.equal(s.proxier.attempts.at(-1)?.ids.length, 9);
  t.ok(s.proxier.attempts.at(-1)?.ok);
});

t.test('a failure that is no object`s (the checker accepts all) is an ordinary failed sync', async (t) => {
  const s = setup();
  s.engine.start();
  t.teardown(() => s.engine.stop());
  const sync = s.proxier.sync.bind(s.proxier);
  let fail = 1;
  s.proxier.sync = async (req) => {
    if (fail-- > 0) throw new Error('nft: resource busy');
    return sync(req);
  };
  s.change();
  await s.clock.advance(0);
  t.same(s.engine.rejections(), [], 'nothing is blamed');
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_failures_total'), 1, 'the sync failed');
  t.notOk(s.engine.synced);
  await s.clock.advance(2_000);
  t.ok(s.engine.synced, 'and is retried after the backoff');
});

t.test('without a checker the failure is not isolated', async (t) => {
  const s = setup();
  s.proxier.checking = false;
  (s.proxier as { check?: unknown }).check = undefined;
  s.proxier.poison.add('default/svc-03:http');
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  t.notOk(s.engine.synced);
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_failures_total'), 1);
});

t.test('a Service over the endpoint budget is left out before anything is expanded', async (t) => {
  const s = setup({ perServicePort: 3, perService: 4 });
  const wide: ServiceDef = {
    name: 'wide',
    clusterIP: '10.96.1.1',
    ports: [
      { name: 'a', port: 80 },
      { name: 'b', port: 81 },
    ],
  };
  const big = svc('big', 200);
  s.source.setService(wide);
  s.source.setService(big);
  s.source.setEndpoints(wide, [{ ip: '10.244.1.1' }, { ip: '10.244.1.2' }, { ip: '10.244.1.3' }]);
  s.source.setEndpoints(
    big,
    [1, 2, 3, 4].map((i) => ({ ip: `10.244.2.${i}` })),
  );
  s.source.setEndpoints(SERVICES[0]!, [{ ip: '10.244.3.1' }, { ip: '10.244.3.2' }, { ip: '10.244.3.3' }]);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  const ids = s.proxier.attempts.at(-1)?.ids ?? [];
  t.notOk(
    ids.some((id) => id.startsWith('default/wide') || id.startsWith('default/big')),
    'both left out',
  );
  t.equal(ids.length, 12, 'every other service is programmed, one at the per-port limit included');
  t.same(
    s.engine
      .rejections()
      .map((r) => [r.key, r.reason, r.field])
      .sort(),
    [
      ['default/big', 'budget', 'spec.ports[0]'],
      ['default/wide', 'budget', 'spec.ports'],
    ],
  );
  t.equal(await s.metric('weft_proxy_sync_rejected_service_ports', { reason: 'budget' }), 2);
  t.equal(s.lines.filter((l) => l.obj.reason === 'budget').length, 2, 'each named once');
  s.change();
  await s.clock.advance(1_000);
  t.equal(s.lines.filter((l) => l.obj.reason === 'budget').length, 2, 'and not again on the next sync');
});

t.test('a value that cannot be rendered is never handed to the proxier', async (t) => {
  const s = setup();
  s.source.setEndpoints(SERVICES[2]!, [{ ip: '10.244.1.2' }]);
  // Past validation (a bug there, or a hand-made object): an endpoint address with syntax in it.
  for (const sl of s.source.sls.values()) {
    const e = sl.endpoints[0]!;
    sl.endpoints[0] = { ...e, addresses: ['10.244.1.2 } ; flush ruleset ; {'] };
  }
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  t.equal(s.proxier.attempts.length, 1, 'one sync, which succeeded');
  t.notOk(s.proxier.attempts[0]?.ids.includes('default/svc-02:http'));
  t.same(
    s.engine.rejections().map((r) => [r.key, r.reason, r.field]),
    [['default/svc-02:http', 'unrenderable', 'endpoints']],
  );
});

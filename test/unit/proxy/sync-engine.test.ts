import t from 'tap';
import { Backoff } from '../../../src/backoff/index.js';
import type { CommandRunner } from '../../../src/exec/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import {
  parseEndpointSlice,
  parseService,
  type EndpointSliceSpec,
  type ServicePort,
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

/** An in-memory proxier that records what it is asked to do. */
class RecordingProxier implements Proxier {
  readonly mode = 'nftables' as const;
  readonly family = 4 as const;
  readonly syncs: { changed: string[] | undefined; ids: string[] }[] = [];
  failures = 0;
  intact = true;
  intactChecks = 0;

  async sync(req: SyncRequest): Promise<void> {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('nft: transaction failed');
    }
    this.syncs.push({
      changed: req.changed && [...req.changed].sort(),
      ids: [...req.servicePorts.keys()].sort(),
    });
    this.intact = true;
  }

  async rulesIntact(): Promise<boolean> {
    this.intactChecks++;
    return this.intact;
  }

  async cleanup(): Promise<void> {}
  async close(): Promise<void> {}
}

/** Services and slices kept in maps, standing in for the object tracker. */
class MapSource {
  isSynced = true;
  readonly svcs = new Map<string, ServiceSpec>();
  readonly sls = new Map<string, EndpointSliceSpec>();

  setService(def: ServiceDef): void {
    const o = serviceObject(def);
    this.svcs.set(o.key, parseService(o.key, def.namespace ?? 'default', def.name, JSON.stringify(o.value)));
  }

  setEndpoints(svc: ServiceDef, endpoints: EndpointDef[]): void {
    const o = sliceObject({
      namespace: svc.namespace ?? 'default',
      service: svc.name,
      endpoints,
      ports: svc.ports.map((p) => ({
        name: p.name ?? '',
        protocol: p.protocol ?? 'TCP',
        port: p.port + 1000,
      })),
    });
    const meta = o.value.metadata as { name: string };
    this.sls.set(
      o.key,
      parseEndpointSlice(o.key, svc.namespace ?? 'default', meta.name, JSON.stringify(o.value)),
    );
  }

  services(): Iterable<ServiceSpec> {
    return this.svcs.values();
  }

  slices(): Iterable<EndpointSliceSpec> {
    return this.sls.values();
  }
}

const web: ServiceDef = { name: 'web', clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] };
const api: ServiceDef = { name: 'api', clusterIP: '10.96.0.21', ports: [{ name: 'http', port: 80 }] };
const dns: ServiceDef = {
  namespace: 'kube-system',
  name: 'dns',
  clusterIP: '10.96.0.10',
  ports: [{ name: 'dns', protocol: 'UDP', port: 53 }],
};

function setup(opts: { conntrack?: CommandRunner; onSynced?: (p: readonly ServicePort[]) => void } = {}) {
  const clock = new FakeClock();
  const proxier = new RecordingProxier();
  const source = new MapSource();
  const metrics = createRegistry();
  const engine = new SyncEngine({
    proxiers: [proxier],
    source,
    nodeName: 'node-1',
    log: silentLogger(),
    metrics,
    clock,
    minSyncPeriodMs: 1_000,
    syncPeriodMs: 30_000,
    integrityCheckIntervalMs: 5_000,
    backoff: new Backoff({ initialMs: 2_000, maxMs: 8_000, jitter: 0 }),
    ...(opts.conntrack && { conntrackRunner: opts.conntrack }),
    ...(opts.onSynced && { onSynced: opts.onSynced }),
  });
  const change = (kind: 'Service' | 'EndpointSlice' = 'Service') =>
    engine.queueChange({ kind, seenAt: clock.now(), count: 1 });
  const metric = async (name: string) => {
    const m = await metrics.getSingleMetric(name)?.get();
    return m?.values.find(
      (v) => !('le' in v.labels) && !(v as { metricName?: string }).metricName?.endsWith('_sum'),
    )?.value;
  };
  return { clock, proxier, source, metrics, engine, change, metric };
}

t.test('the first sync is full; later syncs are partial with exactly the changed ids', async (t) => {
  const s = setup();
  s.source.setService(web);
  s.source.setService(api);
  s.source.setEndpoints(web, [{ ip: '10.244.1.2' }]);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  t.same(s.proxier.syncs, [{ changed: undefined, ids: ['default/api:http', 'default/web:http'] }]);
  t.ok(s.engine.synced);

  s.source.setEndpoints(web, [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }]);
  s.change('EndpointSlice');
  await s.clock.advance(999);
  t.equal(s.proxier.syncs.length, 1, 'the minimum interval holds the next sync');
  await s.clock.advance(1);
  t.same(s.proxier.syncs[1], {
    changed: ['default/web:http'],
    ids: ['default/api:http', 'default/web:http'],
  });

  s.source.svcs.delete('/weft/services/default/api');
  s.source.setService(dns);
  s.change();
  await s.clock.advance(1_000);
  t.same(s.proxier.syncs[2]?.changed, ['default/api:http', 'kube-system/dns:dns'], 'removed and added ids');

  s.change();
  await s.clock.advance(1_000);
  t.equal(s.proxier.syncs.length, 3, 'a change that changes no service port calls no sync');
});

t.test('the periodic sync is full', async (t) => {
  const s = setup();
  s.source.setService(web);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(10_000);
  s.source.setEndpoints(web, [{ ip: '10.244.1.2' }]);
  s.change();
  await s.clock.advance(0);
  t.same(
    s.proxier.syncs.map((x) => x.changed),
    [undefined, ['default/web:http']],
  );
  await s.clock.advance(30_000);
  t.equal(s.proxier.syncs.length, 3);
  t.equal(s.proxier.syncs[2]?.changed, undefined, 'periodic full sync');
  t.equal(await s.metric('weft_proxy_sync_full_proxy_rules_duration_seconds'), 2, 'two full syncs timed');
  t.equal(await s.metric('weft_proxy_sync_partial_proxy_rules_duration_seconds'), 1, 'one partial');
});

t.test('rules removed by something else are restored by a full sync', async (t) => {
  const s = setup();
  s.source.setService(web);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  await s.clock.advance(5_000);
  t.ok(s.proxier.intactChecks >= 1, 'checked periodically');
  t.equal(s.proxier.syncs.length, 1, 'intact rules: no sync');
  s.proxier.intact = false;
  await s.clock.advance(5_000);
  t.equal(s.proxier.syncs.length, 2);
  t.equal(s.proxier.syncs[1]?.changed, undefined, 'full sync');
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_restored_total'), 1);
});

t.test('a failed sync is retried as a full sync and counted', async (t) => {
  const s = setup();
  s.source.setService(web);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  s.source.setEndpoints(web, [{ ip: '10.244.1.2' }]);
  s.proxier.failures = 1;
  s.change();
  await s.clock.advance(1_000);
  t.equal(s.proxier.syncs.length, 1, 'the partial sync failed');
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_failures_total'), 1);
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_pending_changes'), 1, 'the change is still pending');
  await s.clock.advance(2_000);
  t.same(
    s.proxier.syncs[1],
    { changed: undefined, ids: ['default/web:http'] },
    'retried after the backoff, full',
  );
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_pending_changes'), 0);
});

t.test('/healthz fails when a queued change is not applied within the timeout', async (t) => {
  const s = setup();
  s.source.setService(web);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  t.same(s.engine.healthz(), { ok: true }, 'healthy with nothing queued');
  s.proxier.failures = 1_000;
  s.change();
  await s.clock.advance(59_000);
  t.same(s.engine.healthz(), { ok: true }, 'within twice the sync period');
  await s.clock.advance(2_000);
  const h = s.engine.healthz();
  t.equal(h.ok, false);
  t.match(h, { reason: /queued 61\.0 s ago has not been applied \(timeout 60\.0 s\)/ });
  s.proxier.failures = 0;
  await s.clock.advance(10_000);
  t.same(s.engine.healthz(), { ok: true }, 'healthy again once applied');
  t.ok(s.engine.synced);
});

t.test('nothing is synced before the source has listed everything', async (t) => {
  const s = setup();
  s.source.isSynced = false;
  s.source.setService(web);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(5_000);
  t.equal(s.proxier.syncs.length, 0);
  s.source.isSynced = true;
  s.change('EndpointSlice');
  await s.clock.advance(1_000);
  t.equal(s.proxier.syncs.length, 1);
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_pending_changes'), 0, 'both changes applied');
});

t.test('metrics follow kube-proxy names under weft_proxy_', async (t) => {
  const s = setup();
  s.source.setService(web);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  s.change('EndpointSlice');
  await s.clock.advance(3_000);
  const text = await s.metrics.metrics();
  for (const name of [
    'weft_proxy_sync_proxy_rules_duration_seconds_bucket',
    'weft_proxy_sync_full_proxy_rules_duration_seconds_count',
    'weft_proxy_sync_partial_proxy_rules_duration_seconds_count',
    'weft_proxy_sync_proxy_rules_last_timestamp_seconds',
    'weft_proxy_sync_proxy_rules_last_queued_timestamp_seconds',
    'weft_proxy_sync_proxy_rules_pending_changes',
    'weft_proxy_sync_proxy_rules_failures_total',
    'weft_proxy_network_programming_duration_seconds_bucket',
    'weft_proxy_sync_proxy_rules_endpoint_changes_total',
    'weft_proxy_sync_proxy_rules_service_changes_total',
  ]) {
    t.match(text, new RegExp(`^${name}`, 'm'), name);
  }
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_service_changes_total'), 1);
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_endpoint_changes_total'), 1);
  t.equal(await s.metric('weft_proxy_network_programming_duration_seconds'), 2, 'one latency per change');
  t.equal(await s.metric('weft_proxy_sync_proxy_rules_last_timestamp_seconds'), s.clock.now() / 1000 - 3);
});

t.test('stale UDP conntrack entries are deleted after a successful sync', async (t) => {
  const calls: string[] = [];
  const runner: CommandRunner = async (cmd, args) => {
    calls.push([cmd, ...args].join(' '));
    return { code: 1, stdout: '', stderr: '0 flow entries have been deleted.' };
  };
  let synced: readonly ServicePort[] = [];
  const s = setup({ conntrack: runner, onSynced: (p) => (synced = p) });
  s.source.setService(dns);
  s.engine.start();
  t.teardown(() => s.engine.stop());
  s.change();
  await s.clock.advance(0);
  t.same(calls, [], 'no endpoints: nothing to clear');
  s.source.setEndpoints(dns, [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }]);
  s.change();
  await s.clock.advance(1_000);
  t.same(calls, ['conntrack -D -p udp --orig-dst 10.96.0.10'], 'zero to some endpoints');
  t.equal(synced[0]?.endpoints.length, 2, 'onSynced sees the applied ports');
  s.source.setEndpoints(dns, [{ ip: '10.244.2.2' }]);
  s.change();
  await s.clock.advance(1_000);
  t.same(calls.slice(1), ['conntrack -D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2']);
  t.equal(await s.metric('weft_proxy_conntrack_cleanup_failures_total'), 0, '"0 flow entries" is no failure');
});

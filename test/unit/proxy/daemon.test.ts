import { get as httpGet } from 'node:http';
import t from 'tap';
import { silentLogger } from '../../../src/log/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import { WeftProxy, cleanupAllModes } from '../../../src/proxy/daemon.js';
import { parseProxyFlags, resolveProxyConfig } from '../../../src/proxy/flags.js';
import {
  registerProxier,
  type Proxier,
  type ProxierContext,
  type SyncRequest,
} from '../../../src/proxy/proxier.js';
import { MemoryStore } from '../../../src/registry/index.js';
import { serviceObject, sliceObject } from '../../helpers/proxy-objects.js';
import { put, recordingLogger } from '../k8s/tracker-helpers.js';

/** Proxiers made by the test mode, in creation order. */
const made: { ctx: ProxierContext; syncs: SyncRequest[]; cleaned: number; closed: number }[] = [];

// The daemon creates proxiers through the registry, so the test registers a mode of its own
// under a real mode name; no kernel is touched.
registerProxier('iptables', async (ctx): Promise<Proxier> => {
  const rec = { ctx, syncs: [] as SyncRequest[], cleaned: 0, closed: 0 };
  made.push(rec);
  return {
    mode: 'iptables',
    family: ctx.family,
    sync: async (req) => void rec.syncs.push(req),
    rulesIntact: async () => true,
    cleanup: async () => void rec.cleaned++,
    close: async () => void rec.closed++,
  };
});

function fetch(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('the daemon syncs the registry into its proxiers and serves health and metrics', async (t) => {
  made.length = 0;
  const store = new MemoryStore();
  const web = serviceObject({ name: 'web', clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] });
  await put(store, web.key, web.value);
  await put(
    store,
    sliceObject({ service: 'web', endpoints: [{ ip: '10.244.1.2' }], ports: [{ name: 'http', port: 8080 }] })
      .key,
    sliceObject({ service: 'web', endpoints: [{ ip: '10.244.1.2' }], ports: [{ name: 'http', port: 8080 }] })
      .value,
  );
  await put(store, '/weft/services/default/bad', { spec: { ports: [{ port: 80, protocol: 'ICMP' }] } });

  const flags = parseProxyFlags(
    [
      '--proxy-mode=iptables',
      '--hostname-override=node-1',
      '--cluster-cidr=10.244.0.0/16,fd00:10:244::/56',
      '--min-sync-period=10ms',
      '--healthz-bind-address=127.0.0.1:1',
      '--metrics-bind-address=127.0.0.1:1',
    ],
    {},
  );
  const config = resolveProxyConfig(flags, { readFile: () => undefined });
  // Port 0 picks free ports; the flags cannot say "any port", port 0 there means disabled.
  config.healthz = { host: '127.0.0.1', port: 0 };
  config.metrics = { host: '127.0.0.1', port: 0 };
  const { log, records } = recordingLogger('info');
  const proxy = new WeftProxy({ config, store, metrics: createRegistry(), logger: log });
  await proxy.start();
  let stopped = false;
  t.teardown(() => (stopped ? undefined : proxy.stop()));
  await proxy.firstSync;

  t.same(
    made.map((m) => [m.ctx.family, m.ctx.clusterCidr, m.ctx.nodeName]),
    [
      [4, '10.244.0.0/16', 'node-1'],
      [6, 'fd00:10:244::/56', 'node-1'],
    ],
    'one proxier per family of --cluster-cidr',
  );
  const v4 = made[0];
  t.equal(v4?.syncs[0]?.changed, undefined, 'first sync full');
  t.same(
    [...(v4?.syncs[0]?.servicePorts.keys() ?? [])],
    ['default/web:http'],
    'the bad service is not served',
  );
  t.same(
    v4?.syncs[0]?.servicePorts.get('default/web:http')?.endpoints.map((e) => e.ip),
    ['10.244.1.2'],
  );
  t.equal(made[1]?.syncs[0]?.servicePorts.size, 0, 'no IPv6 service ports');

  const healthzPort = proxy.healthzPort as number;
  const metricsPort = proxy.metricsPort as number;
  t.not(healthzPort, metricsPort);
  t.equal((await fetch(healthzPort, '/healthz')).status, 200);
  t.equal((await fetch(healthzPort, '/livez')).status, 200);
  const metrics = await fetch(metricsPort, '/metrics');
  t.equal(metrics.status, 200);
  t.match(metrics.body, /^weft_proxy_sync_proxy_rules_last_timestamp_seconds \d/m);
  t.match(metrics.body, /^weft_proxy_invalid_objects\{kind="Service"\} 1$/m);
  t.ok(
    records.some(
      (r) => r.key === '/weft/services/default/bad' && r.field === 'spec.ports[0].protocol' && r.level === 40,
    ),
    'the bad service is logged with its key and field',
  );

  const before = v4?.syncs.length ?? 0;
  const web2 = sliceObject({
    service: 'web',
    endpoints: [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }],
    ports: [{ name: 'http', port: 8080 }],
  });
  await put(store, web2.key, web2.value);
  await until(() => (v4?.syncs.length ?? 0) > before, 'a partial sync');
  t.same([...(v4?.syncs.at(-1)?.changed ?? [])], ['default/web:http']);

  await proxy.stop();
  stopped = true;
  t.same(
    made.map((m) => [m.closed, m.cleaned]),
    [
      [1, 0],
      [1, 0],
    ],
    'stop closes the proxiers without cleaning up',
  );
  await t.rejects(fetch(healthzPort, '/healthz'), 'health listener closed');
});

t.test('the daemon applies its address policy flags to the Services it serves', async (t) => {
  const store = new MemoryStore();
  const web = serviceObject({ name: 'web', clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] });
  const ext = serviceObject({ name: 'ext', clusterIP: '10.96.0.21', ports: [{ name: 'http', port: 80 }] });
  (ext.value.spec as Record<string, unknown>).externalIPs = ['192.0.2.10'];
  const outside = serviceObject({ name: 'out', clusterIP: '10.0.0.5', ports: [{ name: 'http', port: 80 }] });
  for (const o of [web, ext, outside]) await put(store, o.key, o.value);

  const served = async (args: string[]) => {
    made.length = 0;
    const flags = parseProxyFlags(
      ['--proxy-mode=iptables', '--hostname-override=node-1', '--min-sync-period=10ms', ...args],
      {},
    );
    const config = resolveProxyConfig(flags, { readFile: () => undefined });
    config.healthz = undefined;
    config.metrics = undefined;
    const { log, records } = recordingLogger('warn');
    const proxy = new WeftProxy({ config, store, metrics: createRegistry(), logger: log });
    await proxy.start();
    try {
      await proxy.firstSync;
      return {
        ports: [...(made[0]?.syncs[0]?.servicePorts.keys() ?? [])].sort(),
        refused: records.map((r) => [r.key, r.field]),
      };
    } finally {
      await proxy.stop();
    }
  };

  const byDefault = await served([]);
  t.same(
    byDefault.ports,
    ['default/web:http'],
    'externalIPs refused and ClusterIP outside --service-cidr refused',
  );
  t.same(byDefault.refused.sort(), [
    [ext.key, 'spec.externalIPs[0]'],
    [outside.key, 'spec.clusterIPs[0]'],
  ]);
  const allowed = await served(['--allowed-external-cidrs=192.0.2.0/24', '--service-cidr=10.0.0.0/8']);
  t.same(allowed.ports, ['default/ext:http', 'default/out:http', 'default/web:http']);
  t.same(allowed.refused, []);
});

t.test('cleanup asks every registered mode in both families', async (t) => {
  made.length = 0;
  const config = resolveProxyConfig(parseProxyFlags([], {}), {
    readFile: () => undefined,
    hostname: () => 'n',
  });
  const report = await cleanupAllModes(
    config,
    async () => ({ code: 0, stdout: '', stderr: '' }),
    silentLogger(),
  );
  t.ok(report.cleaned.includes('iptables/ipv4') && report.cleaned.includes('iptables/ipv6'));
  t.same(
    made.map((m) => [m.ctx.family, m.cleaned, m.closed]),
    [
      [4, 1, 1],
      [6, 1, 1],
    ],
  );
});

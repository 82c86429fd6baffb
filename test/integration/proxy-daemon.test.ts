/**
 * The compiled weft-proxy daemon in a one-node lab against the lab's etcd, in nftables mode:
 * a Service and its EndpointSlice become the `weft` table; a bad Service is logged with its key
 * and field while the good one is programmed; /healthz, /livez and /metrics answer; a table
 * deleted behind the daemon's back is restored; SIGTERM leaves the rules; `--cleanup` removes
 * them; `--help` and bad flags exit 0 and 2.
 */
import t from 'tap';
import {
  Lab,
  PROXY_MAIN,
  ProxyCluster,
  listNetns,
  run,
  waitFor,
  type LabNode,
  type LogRecord,
} from '../lab/index.js';
import { serviceObject, sliceObject } from '../helpers/proxy-objects.js';

t.setTimeout(180_000);

const lab = await Lab.create({ nodes: 1 });
t.teardown(async () => {
  await lab.teardown();
  const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
  if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
});
const [n1] = lab.nodes as [LabNode];
const proxy = await ProxyCluster.create(lab, { mode: 'nftables', args: ['--min-sync-period=100ms'] });

const WEB = { name: 'web', clusterIP: '10.96.50.10', ports: [{ name: 'http', port: 80 }] };
const WEB_SLICE = {
  service: 'web',
  endpoints: [{ ip: '10.244.7.2', nodeName: n1.name }],
  ports: [{ name: 'http', port: 8080 }],
};
const BAD = { name: 'bad', clusterIP: '10.96.50.11', ports: [{ name: 'dns', port: 53 }] };
const badValue = (() => {
  const o = serviceObject(BAD);
  const v = structuredClone(o.value) as { spec: { ports: { protocol: string }[] } };
  (v.spec.ports[0] as { protocol: string }).protocol = 'ICMP';
  return { key: o.key, value: v };
})();

async function table(): Promise<{ code: number; text: string }> {
  const r = await lab.exec(n1, 'nft', ['list', 'table', 'ip', 'weft'], { allowFail: true });
  return { code: r.code, text: r.stdout };
}

function findLog(match: (r: LogRecord) => boolean): LogRecord | undefined {
  return proxy.logRecords(n1).find(match);
}

t.test('services from etcd become the weft table; a bad one is reported and skipped', async (t) => {
  await proxy.putObject(badValue);
  await proxy.putObject(serviceObject(WEB));
  const since = await proxy.putObject(sliceObject(WEB_SLICE));
  await proxy.waitSynced([n1], since);
  await waitFor(async () => (await table()).text.includes('10.96.50.10'), {
    what: 'the ClusterIP of web in the weft table',
    timeoutMs: 10_000,
    intervalMs: 100,
  });
  const tbl = await table();
  t.equal(tbl.code, 0, 'nft list table ip weft');
  t.match(tbl.text, /10\.96\.50\.10/, 'web is programmed');
  t.match(tbl.text, /10\.244\.7\.2/, 'with its endpoint');
  t.notMatch(tbl.text, /10\.96\.50\.11/, 'the bad service is not');
  const bad = await waitFor(
    () => findLog((r) => r.key === badValue.key && r.field === 'spec.ports[0].protocol'),
    { what: 'the bad service to be logged', timeoutMs: 10_000, intervalMs: 100 },
  );
  t.equal(bad.level, 40, 'as a warning');

  t.equal((await proxy.health(n1)).status, 200, '/healthz 200');
  t.equal((await proxy.health(n1, '/livez')).status, 200, '/livez 200');
  const metrics = await proxy.http(n1, 10249, '/metrics');
  t.equal(metrics.status, 200);
  for (const name of [
    'weft_proxy_sync_proxy_rules_duration_seconds_count',
    'weft_proxy_sync_full_proxy_rules_duration_seconds_count',
    'weft_proxy_sync_proxy_rules_last_timestamp_seconds',
    'weft_proxy_network_programming_duration_seconds_count',
    'weft_proxy_sync_proxy_rules_pending_changes',
  ]) {
    t.match(metrics.body, new RegExp(`^${name}`, 'm'), name);
  }
  t.match(metrics.body, /^weft_proxy_invalid_objects\{kind="Service"\} 1$/m);

  // Fixed: served at once, and no longer counted.
  await proxy.putObject(serviceObject(BAD));
  await waitFor(async () => (await table()).text.includes('10.96.50.11'), {
    what: 'the fixed service in the weft table',
    timeoutMs: 10_000,
    intervalMs: 100,
  });
  const after = await proxy.http(n1, 10249, '/metrics');
  t.match(after.body, /^weft_proxy_invalid_objects\{kind="Service"\} 0$/m);
});

t.test('a table deleted behind the daemon is restored', async (t) => {
  await lab.exec(n1, 'nft', ['delete', 'table', 'ip', 'weft']);
  t.not((await table()).code, 0, 'deleted');
  await waitFor(async () => (await table()).text.includes('10.96.50.10'), {
    what: 'the weft table to be restored',
    timeoutMs: 20_000,
    intervalMs: 200,
  });
  t.pass('restored');
  await waitFor(() => findLog((r) => /restoring them with a full sync/.test(String(r.msg))), {
    what: 'the restore to be logged',
    timeoutMs: 5_000,
    intervalMs: 100,
  });
});

t.test('SIGTERM keeps the rules; --cleanup removes them', async (t) => {
  const d = proxy.daemon(n1);
  d.process.signal('SIGTERM');
  t.equal(await d.process.exited(), 0, 'exits 0 on SIGTERM');
  t.equal((await table()).code, 0, 'the table is still there');
  const r = await proxy.cleanup(n1);
  t.equal(r.code, 0, `--cleanup exits 0: ${r.stderr.trim().slice(-300)}`);
  t.not((await table()).code, 0, 'the table is gone');
  const again = await proxy.cleanup(n1);
  t.equal(again.code, 0, 'cleanup is idempotent');
});

t.test('--help exits 0; a bad flag exits 2 naming it', async (t) => {
  const help = await run('env', ['-u', 'NODE_OPTIONS', process.execPath, PROXY_MAIN, '--help'], {
    allowFail: true,
  });
  t.equal(help.code, 0);
  t.match(help.stdout, /^Usage: weft-proxy \[flags\]/);
  t.match(help.stdout, /--proxy-mode <mode>/);
  const bad = await run(
    'env',
    ['-u', 'NODE_OPTIONS', process.execPath, PROXY_MAIN, '--min-sync-period=fast'],
    { allowFail: true },
  );
  t.equal(bad.code, 2);
  t.match(bad.stderr, /flag --min-sync-period: must be a duration/);
});

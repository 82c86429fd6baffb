/**
 * `weftctl status` against a real etcd (on 127.0.0.1, free ports) with hand-written status
 * records and a real health listener: exit 0 when every daemon is ready, 1 with the reason when
 * one is not or its record is stale, and the same report as JSON and YAML.
 */
import { rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { statusKey, statusPrefix } from '../../../src/node-status/index.js';
import { openStore } from '../../../src/registry/index.js';
import { COMMANDS, runWeftctl } from '../../../src/weftctl/index.js';
import type { StatusReport } from '../../../src/weftctl/status-report.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalEtcd } from '../../lab/servers.js';

t.setTimeout(100_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
const etcd = await startLocalEtcd(dir);
t.teardown(async () => {
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
});

let readyz = 200;
const health = createServer((req, res) => {
  res.writeHead(req.url === '/readyz' ? readyz : 404);
  res.end(readyz === 200 ? 'ok\n' : 'rules not synced\n');
});
await new Promise<void>((r) => health.listen(0, '127.0.0.1', r));
t.teardown(() => health.close());
const healthUrl = `http://127.0.0.1:${(health.address() as { port: number }).port}`;

const store = await openStore({ registry: 'etcd', etcd: { endpoints: [etcd.endpoint] } });
t.teardown(() => store.close());
const prefix = statusPrefix('/weft');
const me = hostname();

async function put(node: string, daemon: 'weft-flanneld' | 'weft-proxy', over: Record<string, unknown> = {}) {
  const now = new Date().toISOString();
  const value = JSON.stringify({
    node,
    daemon,
    version: '0.1.0',
    pid: 4242,
    startedAt: now,
    updatedAt: now,
    ready: true,
    lastSync: now,
    health: healthUrl,
    detail: daemon === 'weft-proxy' ? { mode: 'nftables' } : { backend: 'vxlan', subnet: '10.244.3.0/24' },
    ...over,
  });
  const key = statusKey(prefix, node, daemon);
  const cur = await store.get(key);
  if (cur) await store.update(key, value, { modRevision: cur.modRevision });
  else await store.create(key, value);
}

async function weftctl(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runWeftctl(
    argv,
    {
      stdout: (s) => (stdout += s),
      stderr: (s) => (stderr += s),
      readStdin: () => Promise.resolve(''),
      env: { WEFTCTL_ETCD_ENDPOINTS: etcd.endpoint },
    },
    { commands: COMMANDS, version: 'test' },
  );
  return { code, stdout, stderr };
}

t.test('no records: exit 1 and says so', async (t) => {
  const r = await weftctl('status');
  t.equal(r.code, 1);
  t.match(r.stdout, /no daemon status records under \/weft\/status\//);
});

t.test('every daemon ready and /readyz 200: exit 0', async (t) => {
  await put(me, 'weft-flanneld');
  await put(me, 'weft-proxy');
  // A loopback health URL of another machine is shown, not asked (it would reach ours).
  await put('far-away', 'weft-proxy');
  const r = await weftctl('status');
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(
    r.stdout,
    new RegExp(
      `^${me}\\s+weft-flanneld\\s+yes\\s+200\\s+\\d+s\\s+\\d+s\\s+\\d+s\\s+backend=vxlan subnet=10.244.3.0/24$`,
      'm',
    ),
  );
  t.match(r.stdout, /^far-away\s+weft-proxy\s+yes\s+-\s/m);
  t.match(r.stdout, /all 3 daemons on 2 node\(s\) ready\n$/);
});

t.test('a daemon not ready, a live /readyz failing, a stale record: exit 1 naming each', async (t) => {
  await put('far-away', 'weft-proxy', { ready: false, reason: 'registry unavailable' });
  await put(me, 'weft-flanneld', { updatedAt: new Date(Date.now() - 120_000).toISOString() });
  readyz = 503;
  t.teardown(() => void (readyz = 200));
  const r = await weftctl('status');
  t.equal(r.code, 1);
  t.match(r.stdout, /^far-away\s+weft-proxy\s+no: registry unavailable/m);
  t.match(r.stdout, new RegExp(`^${me}\\s+weft-flanneld\\s+stale\\s+503 rules not synced`, 'm'));
  t.match(r.stdout, /NOT READY: 4 problem\(s\):/);
  t.match(r.stdout, /far-away\/weft-proxy: not ready: registry unavailable/);
  t.match(r.stdout, /weft-flanneld: record not refreshed for 2m/);
  t.match(r.stdout, /weft-proxy: \/readyz answered 503/);
});

t.test('JSON and YAML carry the same report, with the exit code', async (t) => {
  await put('far-away', 'weft-proxy');
  await put(me, 'weft-flanneld');
  await store.create(`${prefix}broken/weft-proxy`, '{"node":"broken"}');
  const json = await weftctl('status', '-o', 'json');
  t.equal(json.code, 1, 'a record that cannot be read fails the check');
  const report = JSON.parse(json.stdout) as StatusReport;
  t.equal(report.ready, false);
  t.equal(report.daemons.length, 3);
  t.match(report.invalid, [{ key: `${prefix}broken/weft-proxy`, error: /field / }]);
  t.same(
    report.daemons.map((d) => [d.node, d.daemon, d.ready, d.readyz.state]),
    [
      ['far-away', 'weft-proxy', true, 'not-checked'],
      [me, 'weft-flanneld', true, 'ok'],
      [me, 'weft-proxy', true, 'ok'],
    ].sort((a, b) => String(a[0]).localeCompare(String(b[0])) || String(a[1]).localeCompare(String(b[1]))),
  );
  const yaml = await weftctl('status', '-o', 'yaml');
  t.equal(yaml.code, 1);
  const y = parseYaml(yaml.stdout) as StatusReport;
  t.same(
    y.daemons.map((d) => d.key),
    report.daemons.map((d) => d.key),
  );
  await store.delete(`${prefix}broken/weft-proxy`);
  const ok = await weftctl('status', '-o', 'json');
  t.equal(ok.code, 0, ok.stdout);
  t.equal((JSON.parse(ok.stdout) as StatusReport).ready, true);
});

t.test('misuse: a RUN without --lab exits 2', async (t) => {
  const r = await weftctl('status', 'wt-1-abc');
  t.equal(r.code, 2);
  t.match(r.stderr, /a RUN goes with --lab/);
});

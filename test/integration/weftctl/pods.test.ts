/**
 * weftctl's pod and node commands in-process against a real etcd started for this file:
 * kubectl's own `run` manifests applied (kubectl talks to a stand-in discovery endpoint, the only
 * thing `kubectl run --dry-run=client` asks a server), `get pods` with selectors and `-o wide`
 * (the address from the pod's status or from weft-cni's attachment), `describe pod`, `label`
 * with and without --overwrite, graceful and forced `delete pod`, nodes, and a hostile stored
 * pod listed as invalid without its bytes reaching the terminal.
 */
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import t from 'tap';
import { parsePod, podAttachmentObject } from '../../../src/k8s/index.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { openStore, type Store } from '../../../src/registry/index.js';
import type { CommandIo } from '../../../src/weftctl/command.js';
import { COMMANDS } from '../../../src/weftctl/commands/index.js';
import { runWeftctl } from '../../../src/weftctl/run.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalEtcd } from '../../lab/servers.js';

t.setTimeout(110_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
const etcd = await startLocalEtcd(dir);
const store: Store = await openStore({ registry: 'etcd', etcd: { endpoints: [etcd.endpoint] } });

/** The discovery documents `kubectl run` reads before it prints a dry-run Pod. */
const discovery: Server = createServer((req, res) => {
  const path = (req.url ?? '').split('?')[0];
  const body =
    path === '/api'
      ? { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] }
      : path === '/apis'
        ? { kind: 'APIGroupList', apiVersion: 'v1', groups: [] }
        : path === '/api/v1'
          ? {
              kind: 'APIResourceList',
              groupVersion: 'v1',
              resources: [
                { name: 'pods', singularName: 'pod', namespaced: true, kind: 'Pod', verbs: ['create'] },
              ],
            }
          : undefined;
  if (!body) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
});
await new Promise<void>((resolve) => discovery.listen(0, '127.0.0.1', resolve));
const server = `http://127.0.0.1:${(discovery.address() as AddressInfo).port}`;

t.teardown(async () => {
  await new Promise((r) => discovery.close(r));
  await store.close();
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
});

const run = promisify(execFile);

/** What kubectl itself prints for `kubectl run NAME ARGS --dry-run=client -o yaml`. */
async function kubectlRun(name: string, ...args: string[]): Promise<string> {
  const r = await run('kubectl', [
    `--server=${server}`,
    'run',
    name,
    ...args,
    '--dry-run=client',
    '-o',
    'yaml',
  ]);
  return r.stdout;
}

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function weftctl(prefix: string, args: string[], stdin = ''): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const io: CommandIo = {
    stdout: (s) => (stdout += s),
    stderr: (s) => (stderr += s),
    readStdin: () => Promise.resolve(stdin),
    env: {},
  };
  const code = await runWeftctl(
    [`--etcd-endpoints=${etcd.endpoint}`, `--registry-prefix=${prefix}`, ...args],
    io,
    { commands: COMMANDS, version: 'test' },
  );
  return { code, stdout, stderr };
}

async function attach(prefix: string, name: string, node: string, ip: string): Promise<void> {
  const a = { namespace: 'default', name, node, containerId: `c-${name}`, ips: [ip] };
  await store.create(`${prefix}/podattachments/default/${name}`, JSON.stringify(podAttachmentObject(a)));
}

t.test("kubectl run manifests: applied, listed, filtered, wide with the attachment's address", async (t) => {
  const p = '/t-pods';
  const web = await kubectlRun('web', '--image=nginx', '--labels=app=web', '--port=8080');
  t.match(web, /kind: Pod/, 'kubectl printed a Pod');
  t.same(await weftctl(p, ['apply', '-f', '-'], web), { code: 0, stdout: 'pod/web created\n', stderr: '' });
  const kv = await store.get(`${p}/pods/default/web`);
  const spec = parsePod(kv?.key ?? '', 'default', 'web', kv?.value ?? '');
  t.same(spec.labels, { app: 'web' });
  t.same(spec.ports, [{ name: '', containerPort: 8080, protocol: 'TCP' }]);
  t.same(await weftctl(p, ['apply', '-f', '-'], web), { code: 0, stdout: 'pod/web unchanged\n', stderr: '' });

  const db = await kubectlRun('db', '--image=postgres', '--labels=app=db,tier=backend', '--port=5432');
  t.equal((await weftctl(p, ['apply', '-f', '-'], db)).stdout, 'pod/db created\n');
  const own = JSON.parse(
    (
      await run('kubectl', [
        `--server=${server}`,
        'run',
        'own',
        '--image=x',
        '--labels=app=web',
        '--dry-run=client',
        '-o',
        'json',
      ])
    ).stdout,
  ) as Record<string, unknown>;
  own.spec = { ...(own.spec as object), nodeName: 'node3' };
  own.status = { podIP: '10.244.3.7', conditions: [{ type: 'Ready', status: 'False' }] };
  t.equal((await weftctl(p, ['apply', '-f', '-'], JSON.stringify(own))).stdout, 'pod/own created\n');

  const list = await weftctl(p, ['get', 'pods']);
  t.equal(list.code, 0);
  t.match(list.stdout, /^NAME\s+READY\s+STATUS\s+AGE\n/);
  t.match(list.stdout, /\nweb\s+0\/1\s+Pending\s+\d+s\n/, 'declared, not attached: pending');

  await attach(p, 'web', 'node1', '10.244.1.5');
  const wide = await weftctl(p, ['get', 'pods', '-o', 'wide']);
  t.match(wide.stdout, /^NAME\s+READY\s+STATUS\s+AGE\s+IP\s+NODE\n/);
  t.match(
    wide.stdout,
    /\nweb\s+1\/1\s+Running\s+\d+s\s+10\.244\.1\.5\s+node1\n/,
    'address and node from the attachment',
  );
  t.match(wide.stdout, /\nown\s+0\/1\s+Running\s+\d+s\s+10\.244\.3\.7\s+node3\n/, "the pod's own status");
  t.match(wide.stdout, /\ndb\s+0\/1\s+Pending\s+\d+s\s+<none>\s+<none>\n/);

  const sel = await weftctl(p, ['get', 'pods', '-l', 'app=web']);
  t.same(
    sel.stdout
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((l) => l.split(/\s+/)[0]),
    ['own', 'web'],
  );
  const set = await weftctl(p, ['get', 'po', '-l', 'tier in (backend),app!=web', '-o', 'json']);
  t.same(
    (JSON.parse(set.stdout) as { items: { metadata: { name: string } }[] }).items.map((i) => i.metadata.name),
    ['db'],
  );
  const none = await weftctl(p, ['get', 'pods', '-l', 'app=nothing']);
  t.same(none, { code: 0, stdout: '', stderr: 'No resources found in default namespace.\n' });
  const bad = await weftctl(p, ['get', 'pods', '-l', 'app in ()']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /label selector "app in \(\)": the values of in for key "app" must not be empty/);

  const d = await weftctl(p, ['describe', 'pod', 'web']);
  t.equal(d.code, 0);
  t.match(d.stdout, /Node:\s+node1\n/);
  t.match(d.stdout, /IP:\s+10\.244\.1\.5\n/);
  t.match(d.stdout, /Address from:\s+attachment \(weft-cni\)\n/);
  t.match(d.stdout, /Attachment:\s+node node1, container c-web, 10\.244\.1\.5\n/);
  t.match(d.stdout, /Container ports:\nPORT\s+NAME\s+PROTOCOL\n8080\s+<none>\s+TCP\n/);
  const missing = await weftctl(p, ['describe', 'pod', 'nope']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /pods "nope" not found in namespace default/);
});

t.test('label: set, refuse to overwrite, overwrite, remove, invalid specs', async (t) => {
  const p = '/t-label';
  t.equal(
    (await weftctl(p, ['apply', '-f', '-'], await kubectlRun('web', '--image=nginx', '--labels=app=web')))
      .code,
    0,
  );
  t.same(await weftctl(p, ['label', 'pod', 'web', 'tier=fe', 'example.com/team=a']), {
    code: 0,
    stdout: 'pod/web labeled\n',
    stderr: '',
  });
  const refused = await weftctl(p, ['label', 'pod', 'web', 'tier=be']);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /'tier' already has a value \("fe"\), and --overwrite is false/);
  t.equal((await weftctl(p, ['label', 'pod', 'web', 'tier=be', '--overwrite'])).stdout, 'pod/web labeled\n');
  t.equal(
    (await weftctl(p, ['label', 'pod', 'web', 'tier=be'])).stdout,
    'pod/web not labeled\n',
    'same value',
  );
  const removed = await weftctl(p, ['label', 'pod', 'web', 'tier-', 'gone-']);
  t.same(removed, { code: 0, stdout: 'pod/web labeled\n', stderr: 'label "gone" not found.\n' });
  const kv = await store.get(`${p}/pods/default/web`);
  t.same(parsePod(kv?.key ?? '', 'default', 'web', kv?.value ?? '').labels, {
    app: 'web',
    'example.com/team': 'a',
  });
  for (const bad of ['x=a b', 'Bad Key=1', 'x', 'a=1']) {
    const args = bad === 'a=1' ? ['a=1', 'a-'] : [bad];
    const r = await weftctl(p, ['label', 'pod', 'web', ...args]);
    t.equal(r.code, 2, bad);
    t.match(r.stderr, /invalid label spec|both modify and remove/, bad);
  }
  t.equal((await weftctl(p, ['label', 'pod', 'nope', 'a=b'])).code, 1);
  t.equal((await weftctl(p, ['label', 'svc', 'x', 'a=b'])).code, 2);
});

t.test('delete pod: marked terminating for the grace period, then removed; --force at once', async (t) => {
  const p = '/t-delete';
  for (const n of ['a', 'b', 'c']) {
    t.equal(
      (await weftctl(p, ['apply', '-f', '-'], await kubectlRun(n, '--image=nginx', '--labels=app=web'))).code,
      0,
    );
  }
  await attach(p, 'a', 'node1', '10.244.1.9');
  const started = Date.now();
  const deleting = weftctl(p, ['delete', 'pod', 'a', '--grace-period=2']);
  let marked: Record<string, unknown> | undefined;
  while (!marked && Date.now() - started < 1_500) {
    const kv = await store.get(`${p}/pods/default/a`);
    const meta = kv ? ((JSON.parse(kv.value) as { metadata: Record<string, unknown> }).metadata ?? {}) : {};
    if (meta.deletionTimestamp) marked = meta;
    else await new Promise((r) => setTimeout(r, 20));
  }
  t.ok(marked, 'marked during the grace period');
  t.equal(marked?.deletionGracePeriodSeconds, 2);
  const during = await weftctl(p, ['get', 'pods', 'a']);
  t.match(during.stdout, /\na\s+1\/1\s+Terminating\s+/);
  const kvDuring = await store.get(`${p}/pods/default/a`);
  t.equal(parsePod(kvDuring?.key ?? '', 'default', 'a', kvDuring?.value ?? '').terminating, true);
  // A re-apply during the grace period keeps the deletion, as the API server does.
  t.equal(
    (await weftctl(p, ['apply', '-f', '-'], await kubectlRun('a', '--image=nginx', '--labels=app=web')))
      .stdout,
    'pod/a unchanged\n',
  );
  const r = await deleting;
  t.same(r, { code: 0, stdout: 'pod "a" deleted\n', stderr: 'pod "a" terminating; removing it in 2s\n' });
  t.ok(Date.now() - started >= 1_900, 'waited the grace period');
  t.equal(await store.get(`${p}/pods/default/a`), undefined);

  const forced = await weftctl(p, ['delete', 'pod', 'b', '--force']);
  t.same(forced, { code: 0, stdout: 'pod "b" force deleted\n', stderr: '' });
  const both = await weftctl(p, ['delete', 'pod', 'c', '--force', '--grace-period=5']);
  t.equal(both.code, 2);
  t.match(both.stderr, /--force and --grace-period greater than 0 cannot be specified together/);
  const gone = await weftctl(p, ['delete', 'pod', 'b']);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /pods "b" not found in namespace default/);
});

t.test(
  'nodes: applied, listed with their zone, labelled; hostile stored pods shown as invalid',
  async (t) => {
    const p = '/t-nodes';
    const node = JSON.stringify({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'node1', namespace: 'ignored', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    });
    t.same(await weftctl(p, ['apply', '-f', '-'], node), {
      code: 0,
      stdout: 'node/node1 created\n',
      stderr: '',
    });
    t.ok(await store.get(`${p}/nodes/node1`), 'cluster-scoped key');
    const list = await weftctl(p, ['get', 'nodes']);
    t.match(list.stdout, /^NAME\s+ZONE\s+AGE\nnode1\s+zone-a\s+\d+s\n$/);
    t.equal((await weftctl(p, ['label', 'node', 'node1', 'role=edge'])).stdout, 'node/node1 labeled\n');
    t.equal((await weftctl(p, ['get', 'nodes', '-l', 'role=edge', '-o', 'json'])).code, 0);

    await store.create(
      `${p}/pods/default/evil`,
      JSON.stringify({ metadata: { name: 'evil', labels: { app: 'x\u001b[2Jy' } } }),
    );
    await store.create(`${p}/pods/default/broken`, '{"metadata": ');
    const pods = await weftctl(p, ['get', 'pods']);
    t.match(pods.stdout, /\nevil\s+<invalid>\s+Invalid\s+/);
    t.match(pods.stderr, /Pod \/t-nodes\/pods\/default\/broken: stored value is not a JSON object/);
    t.notOk(pods.stdout.includes('\u001b'), 'no escape character reaches the terminal');
    const d = await weftctl(p, ['describe', 'pod', 'evil']);
    t.match(d.stdout, /Problem:\s+Pod \/t-nodes\/pods\/default\/evil: field metadata\.labels\.app:/);
    t.notOk(d.stdout.includes('\u001b'));
    t.equal((await weftctl(p, ['delete', 'node', 'node1'])).stdout, 'node "node1" deleted\n');
  },
);

t.test('get endpointslices -o wide shows the service and managed-by; -l on services', async (t) => {
  const p = '/t-eps';
  const slice = (name: string, managedBy?: string) =>
    JSON.stringify({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name,
        labels: {
          'kubernetes.io/service-name': 'web',
          ...(managedBy ? { 'endpointslice.kubernetes.io/managed-by': managedBy } : {}),
        },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.244.1.5'] }],
      ports: [{ port: 8080 }],
    });
  t.equal(
    (
      await weftctl(
        p,
        ['apply', '-f', '-'],
        `${slice('web-abcde', 'weft-controller')}\n---\n${slice('web-hand')}`,
      )
    ).code,
    0,
  );
  const wide = await weftctl(p, ['get', 'eps', '-o', 'wide']);
  t.match(wide.stdout, /^NAME\s+ADDRESSTYPE\s+PORTS\s+ENDPOINTS\s+AGE\s+SERVICE\s+MANAGED-BY\n/);
  t.match(wide.stdout, /\nweb-abcde\s+IPv4\s+8080\s+10\.244\.1\.5\s+\d+s\s+web\s+weft-controller\n/);
  t.match(wide.stdout, /\nweb-hand\s+IPv4\s+8080\s+10\.244\.1\.5\s+\d+s\s+web\s+<none>\n/);
  const managed = await weftctl(p, [
    'get',
    'eps',
    '-l',
    'endpointslice.kubernetes.io/managed-by=weft-controller',
  ]);
  t.same(
    managed.stdout
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((l) => l.split(/\s+/)[0]),
    ['web-abcde'],
  );
  const plain = await weftctl(p, ['get', 'eps']);
  t.match(
    plain.stdout,
    /^NAME\s+ADDRESSTYPE\s+PORTS\s+ENDPOINTS\s+AGE\n/,
    'the kubectl columns without wide',
  );
});

/**
 * weftctl's object commands (apply, get, delete, describe) in-process against a real etcd started
 * for this file: kubectl's own manifests applied from stdin, allocation from the service CIDR and
 * node-port range (20 concurrent runs never share an address, a tiny CIDR runs out with a clear
 * error, a requested address that is taken is refused, a re-apply keeps the address, a delete frees
 * it), endpoints shown by describe, bad documents skipped with exit code 1, misuse exit code 2.
 */
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import t from 'tap';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { parseService } from '../../../src/proxy/model/index.js';
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
t.teardown(async () => {
  await store.close();
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs weftctl in-process against the test etcd, under registry prefix `prefix`. */
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

const run = promisify(execFile);

/** What kubectl itself prints for `kubectl create service KIND NAME ARGS --dry-run=client -o yaml`. */
async function kubectl(kind: string, name: string, ...args: string[]): Promise<string> {
  const r = await run('kubectl', [
    'create',
    'service',
    kind,
    name,
    ...args,
    '--dry-run=client',
    '-o',
    'yaml',
  ]);
  return r.stdout;
}

function json(text: string): Record<string, unknown> {
  return JSON.parse(text) as Record<string, unknown>;
}

function specOf(obj: Record<string, unknown>): Record<string, unknown> {
  return obj.spec as Record<string, unknown>;
}

t.test("kubectl's ClusterIP manifest from stdin: created, served shape, kept on re-apply", async (t) => {
  const p = '/t-kubectl';
  const manifest = await kubectl('clusterip', 'web', '--tcp=80:8080');
  const r = await weftctl(p, ['apply', '-f', '-'], manifest);
  t.same(r, { code: 0, stdout: 'service/web created\n', stderr: '' });
  const kv = await store.get(`${p}/services/default/web`);
  t.ok(kv, 'stored where weft-proxy reads it');
  const spec = parseService(kv?.key ?? '', 'default', 'web', kv?.value ?? '');
  t.equal(spec.type, 'ClusterIP');
  t.match(spec.clusterIPs[0], /^10\.(9[6-9]|10[0-9]|11[01])\./, 'from 10.96.0.0/12');
  t.same(
    spec.ports.map((x) => [x.port, x.targetPort, x.nodePort]),
    [[80, 8080, 0]],
  );
  const ip = spec.clusterIPs[0] ?? '';
  t.equal((await store.get(`${p}/allocations/clusterips/${ip}`))?.value, 'default/web');

  const get = await weftctl(p, ['get', 'svc']);
  t.equal(get.code, 0);
  const [head, row] = get.stdout.trimEnd().split('\n');
  t.match(head, /^NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE$/);
  t.match(row, new RegExp(`^web\\s+ClusterIP\\s+${ip.replace(/\./g, '\\.')}\\s+<none>\\s+80/TCP\\s+\\d+s$`));

  t.same(await weftctl(p, ['apply', '-f', '-'], manifest), {
    code: 0,
    stdout: 'service/web unchanged\n',
    stderr: '',
  });
  const changed = manifest.replace('targetPort: 8080', 'targetPort: 9090');
  t.same(await weftctl(p, ['apply', '-f', '-'], changed), {
    code: 0,
    stdout: 'service/web configured\n',
    stderr: '',
  });
  const after = json((await weftctl(p, ['get', 'service', 'web', '-o', 'json'])).stdout);
  t.equal(specOf(after).clusterIP, ip, 're-apply keeps the ClusterIP');
  t.same(specOf(after).ports, [{ name: '80-8080', port: 80, protocol: 'TCP', targetPort: 9090 }]);
  // kubectl's JSON orders fields differently from its YAML; the object is the same all the same.
  const asJson = (
    await run('kubectl', [
      'create',
      'service',
      'clusterip',
      'web',
      '--tcp=80:8080',
      '--dry-run=client',
      '-o',
      'json',
    ])
  ).stdout;
  t.equal((await weftctl(p, ['apply', '-f', '-'], asJson)).stdout, 'service/web configured\n');
  t.equal((await weftctl(p, ['apply', '-f', '-'], manifest)).stdout, 'service/web unchanged\n');
});

t.test("kubectl's NodePort, LoadBalancer and headless manifests; -n; get -A; -o yaml", async (t) => {
  const p = '/t-kinds';
  const docs = [
    await kubectl('nodeport', 'np', '--tcp=80:8080,443:8443'),
    await kubectl('loadbalancer', 'lb', '--tcp=80'),
    await kubectl('clusterip', 'hl', '--clusterip=None'),
  ].join('---\n');
  const file = join(dir, 'kinds.yaml');
  writeFileSync(file, docs);
  const r = await weftctl(p, ['apply', '-f', file, '-n', 'prod']);
  t.same(r, { code: 0, stdout: 'service/np created\nservice/lb created\nservice/hl created\n', stderr: '' });
  const list = parseYaml((await weftctl(p, ['get', 'services', '-n', 'prod', '-o', 'yaml'])).stdout) as {
    kind: string;
    items: Record<string, unknown>[];
  };
  t.equal(list.kind, 'List');
  const byName = new Map(list.items.map((o) => [(o.metadata as { name: string }).name, specOf(o)]));
  const nodePorts = (s: Record<string, unknown> | undefined) =>
    (s?.ports as { nodePort?: number }[]).map((x) => x.nodePort ?? 0);
  const np = nodePorts(byName.get('np'));
  t.equal(np.length, 2);
  t.ok(
    np.every((x) => x >= 30000 && x <= 32767),
    `node ports in range: ${np.join(',')}`,
  );
  t.not(np[0], np[1]);
  t.ok(
    nodePorts(byName.get('lb')).every((x) => x >= 30000),
    'LoadBalancer gets node ports',
  );
  t.equal(byName.get('hl')?.clusterIP, 'None', 'headless stays headless');
  t.same(byName.get('hl')?.clusterIPs, ['None']);

  const table = await weftctl(p, ['get', 'svc', '-A']);
  t.match(table.stdout, /^NAMESPACE\s+NAME\s+TYPE/);
  t.match(
    table.stdout,
    new RegExp(`prod\\s+np\\s+NodePort\\s+10\\.\\S+\\s+<none>\\s+80:${np[0]}/TCP,443:${np[1]}/TCP`),
  );
  t.match(table.stdout, /prod\s+lb\s+LoadBalancer\s+10\.\S+\s+<pending>\s+80:\d+\/TCP/);
  t.match(table.stdout, /prod\s+hl\s+ClusterIP\s+None\s+<none>\s+<none>/);
  const empty = await weftctl(p, ['get', 'svc']);
  t.same(empty, { code: 0, stdout: '', stderr: 'No resources found in default namespace.\n' });
});

t.test('EndpointSlices: apply, get, describe shows endpoints with their conditions', async (t) => {
  const p = '/t-eps';
  const slice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abc', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: '80-8080', port: 8080, protocol: 'TCP' }],
    endpoints: [
      { addresses: ['10.244.1.5'], nodeName: 'n1', conditions: { ready: true } },
      {
        addresses: ['10.244.2.7'],
        nodeName: 'n2',
        conditions: { ready: false, serving: true, terminating: true },
      },
    ],
  };
  const text = `${await kubectl('clusterip', 'web', '--tcp=80:8080')}---\n${JSON.stringify(slice)}\n`;
  t.same(await weftctl(p, ['apply', '-f', '-'], text), {
    code: 0,
    stdout: 'service/web created\nendpointslice.discovery.k8s.io/web-abc created\n',
    stderr: '',
  });
  const eps = await weftctl(p, ['get', 'eps']);
  t.match(eps.stdout, /^NAME\s+ADDRESSTYPE\s+PORTS\s+ENDPOINTS\s+AGE\n/);
  t.match(eps.stdout, /web-abc\s+IPv4\s+8080\s+10\.244\.1\.5,10\.244\.2\.7\s+\d+s/);

  const d = await weftctl(p, ['describe', 'service', 'web']);
  t.equal(d.code, 0, d.stderr);
  t.match(d.stdout, /^Name:\s+web$/m);
  t.match(d.stdout, /^Namespace:\s+default$/m);
  t.match(d.stdout, /^IP:\s+10\.\d+\.\d+\.\d+$/m);
  t.match(d.stdout, /^Port:\s+80-8080\s+80\/TCP$/m);
  t.match(d.stdout, /^TargetPort:\s+8080\/TCP$/m);
  t.match(d.stdout, /^Endpoints:\s+10\.244\.1\.5$/m, 'ready endpoints only');
  t.match(d.stdout, /SLICE\s+ADDRESS\s+PORTS\s+READY\s+SERVING\s+TERMINATING\s+NODE/);
  t.match(d.stdout, /web-abc\s+10\.244\.1\.5\s+80-8080=8080\/TCP\s+true\s+true\s+false\s+n1/);
  t.match(d.stdout, /web-abc\s+10\.244\.2\.7\s+80-8080=8080\/TCP\s+false\s+true\s+true\s+n2/);
  const dj = json((await weftctl(p, ['describe', 'svc', 'web', '-o', 'json'])).stdout);
  t.equal((dj.endpoints as unknown[]).length, 2);

  t.same(await weftctl(p, ['delete', 'endpointslice', 'web-abc']), {
    code: 0,
    stdout: 'endpointslice.discovery.k8s.io "web-abc" deleted\n',
    stderr: '',
  });
  t.match((await weftctl(p, ['describe', 'service', 'web'])).stdout, /<no endpoints>/);
});

t.test(
  'a bad document is reported with its index and field, skipped, the rest applied, exit 1',
  async (t) => {
    const p = '/t-bad';
    const text = [
      await kubectl('clusterip', 'one', '--tcp=80:8080'),
      'apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 70000}]\n',
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n',
      await kubectl('clusterip', 'two', '--tcp=80:8080'),
    ].join('---\n');
    const r = await weftctl(p, ['apply', '-f', '-'], text);
    t.equal(r.code, 1);
    t.equal(r.stdout, 'service/one created\nservice/two created\n');
    t.match(r.stderr, /stdin: document 3: field kind: "Deployment" is not supported/);
    t.match(
      r.stderr,
      /document 2 \(Service default\/bad\): Service \/t-bad\/services\/default\/bad: field spec\.ports\[0\]\.port/,
    );
    t.notOk(await store.get(`${p}/services/default/bad`));
    t.same((await store.list(`${p}/allocations/clusterips/`)).items.map((i) => i.value).sort(), [
      'default/one',
      'default/two',
    ]);
  },
);

t.test('20 concurrent applies never get the same ClusterIP', async (t) => {
  const p = '/t-concurrent';
  // Manifests first, so that the applies themselves overlap.
  const manifests = await Promise.all(
    Array.from({ length: 20 }, (_, i) => kubectl('clusterip', `c${i}`, '--tcp=80')),
  );
  const outcomes = await Promise.all(
    manifests.map((m) => weftctl(p, ['apply', '-f', '-', '--service-cidr', '10.96.0.0/27'], m)),
  );
  t.same(
    outcomes.map((o) => o.code),
    Array(20).fill(0),
    outcomes.map((o) => o.stderr).join(''),
  );
  const ips = (await store.list(`${p}/services/`)).items.map(
    (kv) => (json(kv.value).spec as { clusterIP: string }).clusterIP,
  );
  t.equal(ips.length, 20);
  t.equal(new Set(ips).size, 20, `distinct: ${ips.join(' ')}`);
  const allocs = (await store.list(`${p}/allocations/clusterips/`)).items;
  t.equal(allocs.length, 20, 'one allocation key per service');
});

t.test('a tiny CIDR runs out; a taken address is refused; delete frees', async (t) => {
  const p = '/t-tiny';
  const cidr = ['--service-cidr', '10.96.0.0/29'];
  for (let i = 0; i < 6; i++) {
    const r = await weftctl(
      p,
      ['apply', '-f', '-', ...cidr],
      await kubectl('clusterip', `s${i}`, '--tcp=80'),
    );
    t.equal(r.code, 0, r.stderr);
  }
  const full = await weftctl(p, ['apply', '-f', '-', ...cidr], await kubectl('clusterip', 's6', '--tcp=80'));
  t.equal(full.code, 1);
  t.match(full.stderr, /service CIDR 10\.96\.0\.0\/29 is exhausted/);
  t.notOk(await store.get(`${p}/services/default/s6`));

  const s0 = json((await weftctl(p, ['get', 'svc', 's0', '-o', 'json'])).stdout);
  const ip = specOf(s0).clusterIP as string;
  const want = (await kubectl('clusterip', 'mine', '--tcp=80', `--clusterip=${ip}`)).toString();
  const taken = await weftctl(p, ['apply', '-f', '-', ...cidr], want);
  t.equal(taken.code, 1);
  t.match(
    taken.stderr,
    new RegExp(`spec\\.clusterIP: ${ip.replace(/\./g, '\\.')} is already allocated to default/s0`),
  );

  const del = await weftctl(p, ['delete', 'svc', 's0']);
  t.same(del, { code: 0, stdout: `service "s0" deleted (freed ${ip})\n`, stderr: '' });
  t.notOk(await store.get(`${p}/allocations/clusterips/${ip}`), 'allocation freed');
  const mine = await weftctl(p, ['apply', '-f', '-', ...cidr], want);
  t.same(mine, { code: 0, stdout: 'service/mine created\n', stderr: '' }, 'the freed address is requested');
  const notFound = await weftctl(p, ['get', 'svc', 's0']);
  t.equal(notFound.code, 1);
  t.match(notFound.stderr, /services "s0" not found in namespace default/);
  const again = await weftctl(p, ['delete', 'service', 's0']);
  t.equal(again.code, 1);
  t.match(again.stderr, /services "s0" not found/);

  const file = join(dir, 'tiny.yaml');
  writeFileSync(
    file,
    `${await kubectl('clusterip', 's1', '--tcp=80')}---\n${await kubectl('clusterip', 's2', '--tcp=80')}`,
  );
  const byFile = await weftctl(p, ['delete', '-f', file]);
  t.equal(byFile.code, 0, byFile.stderr);
  t.match(byFile.stdout, /^service "s1" deleted \(freed 10\.96\.0\.\d\)\nservice "s2" deleted/);
  t.equal((await store.list(`${p}/allocations/clusterips/`)).items.length, 4);
});

t.test('a crashed apply leaves an allocation that is reclaimed', async (t) => {
  const p = '/t-crash';
  const cidr = ['--service-cidr', '10.96.0.0/30'];
  // As if an apply had allocated and died before writing its service.
  await store.create(`${p}/allocations/clusterips/10.96.0.1`, 'default/crashed');
  await store.create(`${p}/allocations/clusterips/10.96.0.2`, 'default/crashed2');
  const r = await weftctl(p, ['apply', '-f', '-', ...cidr], await kubectl('clusterip', 'new', '--tcp=80'));
  t.equal(r.code, 0, r.stderr);
  const ip = specOf(json((await store.get(`${p}/services/default/new`))?.value ?? '{}')).clusterIP as string;
  t.equal((await store.get(`${p}/allocations/clusterips/${ip}`))?.value, 'default/new');
  t.equal((await store.list(`${p}/allocations/clusterips/`)).items.length, 2);
});

t.test(
  'apply refuses a hostile name with exit 1 and a message naming the field; the rest is applied',
  async (t) => {
    const p = '/t-hostile';
    const manifest = [
      'apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80}]}',
      'apiVersion: v1\nkind: Service\nmetadata: {name: evil}\nspec:\n  ports:\n  - name: "q\\n-I INPUT 1 -s 6.6.6.6 -j ACCEPT\\n#"\n    port: 80',
      'apiVersion: v1\nkind: Service\nmetadata: {name: "x\\e[2J"}\nspec: {ports: [{port: 80}]}',
    ].join('\n---\n');
    const r = await weftctl(p, ['apply', '-f', '-'], manifest);
    t.equal(r.code, 1);
    t.match(r.stdout, 'service/good created');
    t.match(
      r.stderr,
      /error: document 2 \(Service default\/evil\): Service \/t-hostile\/services\/default\/evil: field spec\.ports\[0\]\.name: "q\\n-I INPUT 1 -s 6\.6\.6\.6 -j ACCEPT\\n#" must be a DNS-1123 label/,
    );
    t.match(r.stderr, /document 3 \(Service "default\/x\\u001b\[2J"\): .*field metadata\.name/);
    // eslint-disable-next-line no-control-regex
    t.notOk(/[\u001b]/.test(r.stderr + r.stdout), 'no escape character reaches the terminal');
    t.same(
      (await store.list(`${p}/services/`)).items.map((kv) => kv.key),
      [`${p}/services/default/good`],
      'only the good Service is stored',
    );
  },
);

t.test('misuse exits 2, errors exit 1', async (t) => {
  const p = '/t-usage';
  const cases: [string[], number, RegExp][] = [
    [['get'], 2, /missing resource type/],
    [['get', 'deployments'], 2, /unknown resource type "deployments"/],
    [['get', 'svc', 'x', '-A'], 2, /across all namespaces/],
    [['apply'], 2, /apply needs -f FILE/],
    [['apply', '-f', '-', 'extra'], 2, /unexpected argument "extra"/],
    [['delete', 'svc'], 2, /missing NAME/],
    [['describe', 'eps', 'x'], 2, /describe shows services/],
    [['apply', '-f', join(dir, 'nope.yaml')], 1, /cannot read .*nope\.yaml: ENOENT/],
    [['apply', '-f', '-', '--service-cidr', '10.96.0.1/12'], 2, /flag --service-cidr/],
    [['describe', 'service', 'ghost'], 1, /services "ghost" not found/],
    [['get', 'eps', 'ghost'], 1, /endpointslices\.discovery\.k8s\.io "ghost" not found/],
  ];
  for (const [args, code, msg] of cases) {
    const r = await weftctl(p, args);
    t.equal(r.code, code, args.join(' '));
    t.match(r.stderr, msg, args.join(' '));
  }
  const emptyInput = await weftctl(p, ['apply', '-f', '-'], '\n');
  t.equal(emptyInput.code, 1);
  t.match(emptyInput.stderr, /no objects in stdin/);
});

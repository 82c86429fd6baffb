/**
 * The pod attachment end to end, minus processes: runPlugin with a fake delegate and a memory
 * store injected as the registry. What is written at ADD, when DEL removes it, and what a
 * failing registry does to the call.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import {
  CniErrorCodes,
  registryTarget,
  resultIps,
  runPlugin,
  type DelegateCall,
  type JsonObject,
  type PluginReply,
  type RegistryOpener,
} from '../../../src/cni/index.js';
import { storeOptionsFromFlags } from '../../../src/cli/registry-flags.js';
import { ErrorCodes, WeftError } from '../../../src/errors/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { podAttachmentKey } from '../../../src/k8s/index.js';
import { MemoryStore, type Store } from '../../../src/registry/index.js';

const SUBNET_ENV =
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
const RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:07:02', sandbox: '/run/netns/pod' }],
  ips: [{ address: '10.244.7.2/24', gateway: '10.244.7.1', interface: 0 }],
};
const ARGS = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=ctr1';
const KEY = podAttachmentKey('/weft', 'shop', 'web-0');
const RECORD = (containerId = 'ctr1', ips = ['10.244.7.2']) =>
  JSON.stringify({
    apiVersion: 'weft.dev/v1',
    kind: 'PodAttachment',
    metadata: { namespace: 'shop', name: 'web-0' },
    node: 'node7',
    containerId,
    ips,
  });

interface Fixture {
  store: MemoryStore;
  calls: DelegateCall[];
  opened: number;
  opener: RegistryOpener;
  result: JsonObject;
  conf: (registry?: JsonObject | null) => JsonObject;
  call: (command: string, opts?: { args?: string; id?: string; conf?: JsonObject }) => Promise<PluginReply>;
}

function fixture(t: Test): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-att-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'subnet.env'), SUBNET_ENV);
  const store = new MemoryStore();
  t.teardown(() => store.close());
  const f: Fixture = {
    store,
    calls: [],
    opened: 0,
    // The plugin closes the store it opened; the test keeps reading this one.
    opener: async () => {
      f.opened++;
      return new Proxy(store, {
        get: (target, prop) => {
          if (prop === 'close') return async () => undefined;
          const v = Reflect.get(target, prop) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    },
    result: RESULT,
    conf: (registry = { nodeName: 'node7' }) => ({
      cniVersion: '1.0.0',
      name: 'weft',
      type: 'weft-cni',
      subnetFile: join(dir, 'subnet.env'),
      dataDir: join(dir, 'data'),
      ...(registry ? { weftRegistry: registry } : {}),
    }),
    call: (command, opts = {}) =>
      runPlugin({
        env: {
          CNI_COMMAND: command,
          CNI_CONTAINERID: opts.id ?? 'ctr1',
          CNI_NETNS: '/run/netns/pod',
          CNI_IFNAME: 'eth0',
          CNI_PATH: '/opt/cni/bin',
          ...(opts.args !== undefined ? { CNI_ARGS: opts.args } : {}),
        },
        stdin: JSON.stringify(opts.conf ?? f.conf()),
        runDelegate: async (call) => {
          f.calls.push(structuredClone(call));
          return { stdout: call.command === 'ADD' ? JSON.stringify(f.result) : '', stderr: '' };
        },
        openRegistry: f.opener,
        hostname: () => 'Host-A',
      }),
  };
  return f;
}

const errorOf = (reply: PluginReply): { code: number; msg: string } => JSON.parse(reply.stdout);
const stored = async (store: Store, key = KEY) => (await store.get(key))?.value;

t.test('ADD writes the record with the delegate’s address; DEL removes it', async (t) => {
  const f = fixture(t);
  const add = await f.call('ADD', { args: ARGS });
  t.equal(add.exitCode, 0, add.stdout);
  t.strictSame(JSON.parse(add.stdout), RESULT, 'the result is unchanged');
  t.equal(await stored(f.store), RECORD(), 'the record, exactly as INTERFACES section 1 has it');
  const again = await f.call('ADD', { args: ARGS });
  t.equal(again.exitCode, 0, 'a repeated ADD succeeds');
  const del = await f.call('DEL', { args: ARGS });
  t.equal(del.exitCode, 0, del.stdout);
  t.equal(await stored(f.store), undefined, 'removed');
  t.same(
    f.calls.map((c) => c.command),
    ['ADD', 'ADD', 'DEL'],
  );
  const del2 = await f.call('DEL', { args: ARGS });
  t.equal(del2.exitCode, 0, 'DEL without a record succeeds (idempotent)');
});

t.test('the record takes one address per family, canonical', async (t) => {
  t.strictSame(
    resultIps({
      ips: [
        { address: '10.244.7.2/24' },
        { address: '2001:DB8:0:0::5/64' },
        { address: '10.244.7.3/24' },
        { address: 'junk' },
        'junk',
      ],
    }),
    ['10.244.7.2', '2001:db8::5'],
  );
  t.throws(() => resultIps({ ips: [] }), { code: CniErrorCodes.DELEGATE_BAD_OUTPUT });
});

t.test('a result without an address fails the ADD and releases it', async (t) => {
  const f = fixture(t);
  f.result = { cniVersion: '1.0.0', interfaces: [] };
  const add = await f.call('ADD', { args: ARGS });
  t.equal(errorOf(add).code, CniErrorCodes.DELEGATE_BAD_OUTPUT);
  t.same(
    f.calls.map((c) => c.command),
    ['ADD', 'DEL'],
  );
  t.equal(await stored(f.store), undefined);
});

t.test('DEL of an older container leaves a newer sandbox’s record (compare-and-swap)', async (t) => {
  const f = fixture(t);
  t.equal((await f.call('ADD', { args: ARGS, id: 'old' })).exitCode, 0);
  t.equal((await f.call('ADD', { args: ARGS, id: 'new' })).exitCode, 0);
  t.equal(await stored(f.store), RECORD('new'), 'the newer ADD replaced the record');
  const del = await f.call('DEL', { args: ARGS, id: 'old' });
  t.equal(del.exitCode, 0);
  t.match(del.stderr, /belongs to another container of the pod; left in place/);
  t.equal(await stored(f.store), RECORD('new'), "the new sandbox's record stays");
  t.equal((await f.call('DEL', { args: ARGS, id: 'new' })).exitCode, 0);
  t.equal(await stored(f.store), undefined);
});

t.test('a record that is not ours (unreadable) is left alone by DEL', async (t) => {
  const f = fixture(t);
  await f.store.create(KEY, 'not json');
  t.equal((await f.call('DEL', { args: ARGS })).exitCode, 0);
  t.equal(await stored(f.store), 'not json');
});

t.test(
  'without the section, or without K8S_POD_* args, nothing is recorded (flannel-compatible)',
  async (t) => {
    const f = fixture(t);
    t.equal((await f.call('ADD', { args: ARGS, conf: f.conf(null) })).exitCode, 0);
    t.equal((await f.call('ADD', { args: 'IgnoreUnknown=1;FOO=x', id: 'ctr2' })).exitCode, 0);
    t.equal((await f.call('ADD', { id: 'ctr3' })).exitCode, 0);
    t.equal((await f.call('DEL', { args: ARGS, conf: f.conf(null) })).exitCode, 0);
    t.equal((await f.call('DEL', { id: 'ctr3' })).exitCode, 0);
    t.equal(f.opened, 0, 'the registry was never opened');
    t.same((await f.store.list('/')).items, []);
    const bad = await f.call('ADD', { args: 'K8S_POD_NAME=x', conf: f.conf(null), id: 'ctr4' });
    t.equal(bad.exitCode, 0, 'CNI_ARGS are not even read without the section');
  },
);

t.test('bad CNI_ARGS are refused before anything is allocated', async (t) => {
  const f = fixture(t);
  const r = await f.call('ADD', { args: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=Web' });
  t.equal(errorOf(r).code, CniErrorCodes.INVALID_ENV);
  t.match(errorOf(r).msg, /CNI_ARGS: K8S_POD_NAME "Web" must be a DNS-1123 subdomain/);
  t.same(f.calls, [], 'the delegate never ran');
});

t.test('an unreachable registry fails ADD with TRY_AGAIN_LATER after releasing the address', async (t) => {
  const f = fixture(t);
  f.opener = async () => {
    throw new WeftError(ErrorCodes.REGISTRY_UNAVAILABLE, 'etcd: no answer in 5000 ms');
  };
  const add = await f.call('ADD', { args: ARGS });
  const e = errorOf(add);
  t.equal(e.code, CniErrorCodes.TRY_AGAIN_LATER);
  t.match(e.msg, `weftRegistry: recording ${KEY}: etcd: no answer`);
  t.same(
    f.calls.map((c) => c.command),
    ['ADD', 'DEL'],
    "the delegate's allocation was released",
  );
  f.calls.length = 0;
  const del = await f.call('DEL', { args: ARGS });
  t.equal(errorOf(del).code, CniErrorCodes.TRY_AGAIN_LATER, 'DEL fails too: the runtime retries it');
  t.same(f.calls, [], 'and releases nothing while a record may still announce the address');
});

t.test('other registry failures are REGISTRY_FAILED', async (t) => {
  const f = fixture(t);
  f.opener = async () => {
    throw new WeftError(ErrorCodes.INVALID_CONFIG, 'etcd: permission denied');
  };
  const add = await f.call('ADD', { args: ARGS });
  t.equal(errorOf(add).code, CniErrorCodes.REGISTRY_FAILED);
});

t.test('the section is checked with the registry flags’ rules, naming the field', async (t) => {
  const f = fixture(t);
  const cases: [JsonObject, RegExp][] = [
    [
      { etcdEndpoints: ['ftp://x'] },
      /field weftRegistry\.etcdEndpoints\.0: must be an http:\/\/ or https:\/\/ URL/,
    ],
    [{ etcdEndpoints: [] }, /field weftRegistry\.etcdEndpoints: must not be empty/],
    [{ registry: 'mysql://x' }, /field weftRegistry\.registry: must be "etcd" or redis:/],
    [{ etcdCertfile: '/c.pem' }, /field weftRegistry\.etcdKeyfile: is required when etcdCertfile is set/],
    [{ prefix: 'weft' }, /field weftRegistry\.prefix: must start with "\/"/],
    [{ prefix: '/weft/' }, /field weftRegistry\.prefix: must not end with "\/"/],
    [{ nodeName: 'Node_1' }, /field weftRegistry\.nodeName: "Node_1" must be a DNS-1123 subdomain/],
    [{ endpoints: ['http://x:2379'] }, /field weftRegistry: Unrecognized key: "endpoints"/],
    [{ etcdEndpoints: 'http://x:2379' }, /field weftRegistry\.etcdEndpoints: must be an array/],
  ];
  for (const [section, why] of cases) {
    const r = await f.call('ADD', { args: ARGS, conf: f.conf(section) });
    t.equal(errorOf(r).code, CniErrorCodes.INVALID_CONFIG, JSON.stringify(section));
    t.match(errorOf(r).msg, why);
  }
  t.same(f.calls, [], 'no call reached the delegate');
});

t.test('defaults: etcd on localhost, prefix /weft, the host name lowercased', async (t) => {
  t.strictSame(
    registryTarget({}, () => 'Host-A'),
    {
      flags: {
        registry: 'etcd',
        etcdEndpoints: ['http://127.0.0.1:2379'],
        etcdCafile: undefined,
        etcdCertfile: undefined,
        etcdKeyfile: undefined,
        etcdUsername: undefined,
        etcdPassword: undefined,
      },
      prefix: '/weft',
      nodeName: 'host-a',
    },
  );
  const tls = registryTarget({
    etcdEndpoints: ['https://10.0.0.1:2379', 'https://10.0.0.2:2379'],
    etcdCafile: '/etc/weft/ca.pem',
    etcdCertfile: '/etc/weft/c.pem',
    etcdKeyfile: '/etc/weft/k.pem',
    prefix: '/cluster',
    nodeName: 'n1.example',
  });
  t.match(tls, {
    flags: { etcdCafile: '/etc/weft/ca.pem', etcdKeyfile: '/etc/weft/k.pem' },
    prefix: '/cluster',
  });
  t.match(registryTarget({ registry: 'redis://10.0.0.9:6379/2', nodeName: 'n1' }).flags, {
    registry: 'redis://10.0.0.9:6379/2',
  });
  t.throws(() => registryTarget({}, () => 'bad_host'), {
    message: /weftRegistry\.nodeName: "bad_host" .* \(from the host name; set nodeName\)/,
  });
});

t.test('the record goes under the configured prefix', async (t) => {
  const f = fixture(t);
  const r = await f.call('ADD', { args: ARGS, conf: f.conf({ prefix: '/cluster', nodeName: 'node7' }) });
  t.equal(r.exitCode, 0, r.stdout);
  t.equal(await stored(f.store, podAttachmentKey('/cluster', 'shop', 'web-0')), RECORD());
  t.equal(await stored(f.store), undefined);
});

t.test('CHECK verifies the record is this container’s', async (t) => {
  const f = fixture(t);
  t.equal((await f.call('ADD', { args: ARGS })).exitCode, 0);
  const checkConf = { ...f.conf(), prevResult: RESULT };
  const ok = await f.call('CHECK', { args: ARGS, conf: checkConf });
  t.equal(ok.exitCode, 0, ok.stdout);
  const other = await f.call('CHECK', { args: ARGS, conf: checkConf, id: 'ctr9' });
  t.equal(errorOf(other).code, CniErrorCodes.REGISTRY_FAILED);
  t.match(errorOf(other).msg, `${KEY} belongs to container "ctr1", not to ctr9`);
  await f.store.delete(KEY);
  const missing = await f.call('CHECK', { args: ARGS, conf: checkConf });
  t.match(errorOf(missing).msg, `${KEY} is missing (container ctr1)`);
});

t.test(
  'the section opens the store the daemons’ flags would (TLS files, Redis URL, deadlines)',
  async (t) => {
    const log = silentLogger();
    const timeouts = { dialTimeoutMs: 5000, requestTimeoutMs: 5000 };
    const tls = registryTarget({
      etcdEndpoints: ['https://10.0.0.1:2379'],
      etcdCafile: '/ca.pem',
      etcdCertfile: '/c.pem',
      etcdKeyfile: '/k.pem',
      nodeName: 'n1',
    });
    t.match(storeOptionsFromFlags(tls.flags, log, undefined, timeouts), {
      registry: 'etcd',
      etcd: {
        endpoints: ['https://10.0.0.1:2379'],
        tls: { caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' },
        ...timeouts,
      },
    });
    const redis = registryTarget({ registry: 'redis://10.0.0.9:6379/2', nodeName: 'n1' });
    t.match(storeOptionsFromFlags(redis.flags, log, undefined, timeouts), {
      registry: 'redis',
      redis: { url: 'redis://10.0.0.9:6379/2', ...timeouts },
    });
  },
);

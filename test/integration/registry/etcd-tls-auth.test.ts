/**
 * etcd TLS (CA, client certificate and key) and username/password authentication, end to end:
 * real etcd servers (Debian's etcd 3.4) with throwaway certificates from openssl, and stores
 * opened the way weft-flanneld opens them, from its flags and FLANNELD_* environment.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ErrorCodes, isWeftError, messageOf } from '../../../src/errors/index.js';
import { openStoreFromFlags } from '../../../src/flanneld/daemon.js';
import { parseFlanneldFlags } from '../../../src/flanneld/flags.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import type { Store, WatchEvent } from '../../../src/registry/index.js';
import { generateTestCerts, issueTestCert, makeTestCa } from '../../lab/certs.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalEtcd, type EtcdServer } from '../../lab/servers.js';

t.setTimeout(60_000);
setRootLogger(silentLogger());

/** EtcdStore's default dial timeout, which openStoreFromFlags keeps. */
const DIAL_TIMEOUT_MS = 5_000;
/** How much later than the dial timeout a failed open may give up (one probe, close). */
const DIAL_SLACK_MS = 3_000;
const PREFIX = '/coreos.com/network/';

const dir = runDir(newRunId());
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const certs = await generateTestCerts(join(dir, 'pki'));
// An unrelated CA, and a client certificate it signed (valid, but not for this etcd).
const otherCa = await makeTestCa(join(dir, 'pki-other'), 'other-ca');
const otherClient = await issueTestCert(otherCa, join(dir, 'pki-other'), 'client', {
  commonName: 'weft-client',
  extendedKeyUsage: ['clientAuth'],
});

async function openFromFlags(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Store> {
  return openStoreFromFlags(parseFlanneldFlags(argv, env), silentLogger());
}

/**
 * Opening with these flags must fail with REGISTRY_UNAVAILABLE naming the endpoint, within the
 * dial timeout (a refused handshake or credential is no reason to hang).
 */
async function expectOpenFails(
  t: Test,
  what: string,
  argv: string[],
  endpoint: string,
  cause: RegExp,
): Promise<void> {
  const started = Date.now();
  let err: unknown;
  try {
    const store = await openFromFlags(argv);
    await store.close();
  } catch (e) {
    err = e;
  }
  const elapsed = Date.now() - started;
  t.ok(isWeftError(err, ErrorCodes.REGISTRY_UNAVAILABLE), `${what}: fails with REGISTRY_UNAVAILABLE`, {
    found: err,
  });
  t.match(messageOf(err), `connect to ${endpoint}`, `${what}: the error names the endpoint`);
  t.match(messageOf(err), cause, `${what}: the error gives the cause`);
  t.ok(
    elapsed < DIAL_TIMEOUT_MS + DIAL_SLACK_MS,
    `${what}: gives up within the dial timeout (${elapsed} ms)`,
  );
  t.comment(`${what}: ${messageOf(err)}`);
}

/** The first event of a watch that satisfies `until`, or undefined after `timeoutMs`. */
async function watchUntil(
  store: Store,
  fromRevision: number,
  until: (ev: WatchEvent) => boolean,
  trigger: () => Promise<unknown>,
  timeoutMs = 10_000,
): Promise<WatchEvent | undefined> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const watching = (async () => {
      for await (const ev of store.watch(PREFIX, { fromRevision, signal: ac.signal })) {
        if (until(ev)) return ev;
      }
      return undefined;
    })();
    await trigger();
    return await watching;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

/** create, get, list, keep-alive, watch and update one subnet lease under the flannel prefix. */
async function exerciseStore(t: Test, store: Store, subnet: string): Promise<void> {
  const key = `${PREFIX}subnets/${subnet}`;
  const value = JSON.stringify({ PublicIP: '192.0.2.10', BackendType: 'vxlan' });
  const created = await store.create(key, value, { ttlSeconds: 60 });
  t.equal(created.created, true, 'create: the lease is written');

  const got = await store.get(key);
  t.equal(got?.value, value, 'get: the value is read back');
  t.equal(got?.ttlBound, true, 'get: the key is bound to a TTL');

  const listed = await store.list(`${PREFIX}subnets/`);
  t.ok(
    listed.items.some((kv) => kv.key === key && kv.value === value),
    'list: the lease is under the prefix',
  );

  const ka = store.keepAlive(key, { ttlSeconds: 60, expectValue: value });
  try {
    t.equal(await ka.renew(), true, 'keepAlive: the lease is renewed');
  } finally {
    await ka.close();
  }

  const renewed = JSON.stringify({ PublicIP: '192.0.2.11', BackendType: 'vxlan' });
  const ev = await watchUntil(
    store,
    listed.revision + 1,
    (e) => e.type === 'put' && e.key === key,
    async () => {
      const res = await store.update(key, renewed, { modRevision: got?.modRevision ?? 0 });
      t.equal(res.updated, true, 'update: the compare-and-swap succeeds');
    },
  );
  t.match(ev, { type: 'put', key, value: renewed }, 'watch: the update is seen');
}

t.test('TLS with client-certificate authentication', async (t) => {
  const etcd = await startLocalEtcd(join(dir, 'etcd-tls'), 'etcd-tls', {
    tls: {
      certFile: certs.server.certFile,
      keyFile: certs.server.keyFile,
      caFile: certs.ca.certFile,
      clientCertAuth: true,
      client: certs.client,
    },
  });
  t.teardown(() => etcd.stop());
  const endpoint = etcd.endpoint;
  t.match(endpoint, /^https:\/\/127\.0\.0\.1:\d+$/, 'etcd serves clients over https');

  const tlsFlags = [
    `--etcd-endpoints=${endpoint}`,
    `--etcd-cafile=${certs.ca.certFile}`,
    `--etcd-certfile=${certs.client.certFile}`,
    `--etcd-keyfile=${certs.client.keyFile}`,
  ];

  await t.test('CA, client certificate and key from the flags', async (t) => {
    const store = await openFromFlags(tlsFlags);
    t.teardown(() => store.close());
    t.equal(store.kind, 'etcd');
    await exerciseStore(t, store, '10.5.1.0-24');
  });

  await t.test('the same files from FLANNELD_ETCD_* environment variables', async (t) => {
    const store = await openFromFlags([`--etcd-endpoints=${endpoint}`], {
      FLANNELD_ETCD_CAFILE: certs.ca.certFile,
      FLANNELD_ETCD_CERTFILE: certs.client.certFile,
      FLANNELD_ETCD_KEYFILE: certs.client.keyFile,
    });
    t.teardown(() => store.close());
    const kv = await store.get(`${PREFIX}subnets/10.5.1.0-24`);
    t.match(kv, { value: /192\.0\.2\.11/ }, 'reads what the first store wrote');
  });

  await t.test('refused without the right credentials, clearly and in time', async (t) => {
    await Promise.all([
      expectOpenFails(
        t,
        'only the CA (no client certificate)',
        [`--etcd-endpoints=${endpoint}`, `--etcd-cafile=${certs.ca.certFile}`],
        endpoint,
        /bad certificate|certificate required/,
      ),
      expectOpenFails(
        t,
        'a CA that did not sign the server certificate',
        [
          `--etcd-endpoints=${endpoint}`,
          `--etcd-cafile=${otherCa.certFile}`,
          `--etcd-certfile=${certs.client.certFile}`,
          `--etcd-keyfile=${certs.client.keyFile}`,
        ],
        endpoint,
        /unable to verify|self[- ]signed|unknown ca/i,
      ),
      expectOpenFails(
        t,
        'a client certificate from another CA',
        [
          `--etcd-endpoints=${endpoint}`,
          `--etcd-cafile=${certs.ca.certFile}`,
          `--etcd-certfile=${otherClient.certFile}`,
          `--etcd-keyfile=${otherClient.keyFile}`,
        ],
        endpoint,
        /bad certificate|unknown ca/,
      ),
      expectOpenFails(
        t,
        'plain http to the TLS port',
        [`--etcd-endpoints=${endpoint.replace('https:', 'http:')}`],
        endpoint.replace('https:', 'http:'),
        /UNAVAILABLE/,
      ),
    ]);
  });
});

/** Enables authentication: root, and a user `weft` that may read and write only under PREFIX. */
async function enableAuth(etcd: EtcdServer, rootPassword: string, weftPassword: string): Promise<void> {
  await etcd.etcdctl(['user', 'add', `root:${rootPassword}`, '--interactive=false']);
  await etcd.etcdctl(['user', 'grant-role', 'root', 'root']);
  await etcd.etcdctl(['role', 'add', 'weft-flannel']);
  await etcd.etcdctl(['role', 'grant-permission', 'weft-flannel', '--prefix=true', 'readwrite', PREFIX]);
  await etcd.etcdctl(['user', 'add', `weft:${weftPassword}`, '--interactive=false']);
  await etcd.etcdctl(['user', 'grant-role', 'weft', 'weft-flannel']);
  await etcd.etcdctl(['auth', 'enable']);
}

t.test('username and password', async (t) => {
  const etcd = await startLocalEtcd(join(dir, 'etcd-auth'), 'etcd-auth');
  t.teardown(() => etcd.stop());
  const endpoint = etcd.endpoint;
  const rootPassword = 'root-pw-2f9c';
  const weftPassword = 'weft pw:with-colon';
  await enableAuth(etcd, rootPassword, weftPassword);

  // Sanity: the server really enforces authentication now.
  const anonymous = await etcd.etcdctl(['get', `${PREFIX}config`], { allowFail: true });
  t.not(anonymous.code, 0, 'etcdctl without a user is refused');

  await t.test('--etcd-username and --etcd-password', async (t) => {
    const store = await openFromFlags([
      `--etcd-endpoints=${endpoint}`,
      '--etcd-username=weft',
      `--etcd-password=${weftPassword}`,
    ]);
    t.teardown(() => store.close());
    await exerciseStore(t, store, '10.5.2.0-24');

    // The store acts as `weft`, not as an all-powerful user: outside its prefix it is refused.
    await t.rejects(
      store.create('/outside-the-prefix/key', 'x'),
      { code: ErrorCodes.REGISTRY_UNAVAILABLE, message: /permission denied/ },
      'a write outside the granted prefix is denied',
    );

    const seen = await etcd.etcdctl(['get', '--print-value-only', `${PREFIX}subnets/10.5.2.0-24`], {
      user: `root:${rootPassword}`,
    });
    t.match(seen.stdout, /192\.0\.2\.11/, 'etcdctl as root reads what the store wrote');
  });

  await t.test('FLANNELD_ETCD_USERNAME and FLANNELD_ETCD_PASSWORD', async (t) => {
    const flags = parseFlanneldFlags([`--etcd-endpoints=${endpoint}`], {
      FLANNELD_ETCD_USERNAME: 'weft',
      FLANNELD_ETCD_PASSWORD: weftPassword,
    });
    t.equal(flags.etcdUsername, 'weft');
    t.equal(flags.etcdPassword, weftPassword);
    const store = await openStoreFromFlags(flags, silentLogger());
    t.teardown(() => store.close());
    const kv = await store.get(`${PREFIX}subnets/10.5.2.0-24`);
    t.match(kv, { value: /192\.0\.2\.11/ }, 'reads what the first store wrote');
    await exerciseStore(t, store, '10.5.3.0-24');
  });

  await t.test('refused with a wrong password or none, clearly and in time', async (t) => {
    await Promise.all([
      expectOpenFails(
        t,
        'a wrong password',
        [`--etcd-endpoints=${endpoint}`, '--etcd-username=weft', '--etcd-password=not-the-password'],
        endpoint,
        /authentication failed/,
      ),
      expectOpenFails(
        t,
        'an unknown user',
        [`--etcd-endpoints=${endpoint}`, '--etcd-username=nobody', `--etcd-password=${weftPassword}`],
        endpoint,
        /authentication failed/,
      ),
      expectOpenFails(t, 'no credentials', [`--etcd-endpoints=${endpoint}`], endpoint, /user name is empty/),
    ]);
  });
});

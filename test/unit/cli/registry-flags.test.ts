/** A registry password that would cross the network in clear text is warned about, for every program. */
import { pino } from 'pino';
import t from 'tap';
import * as registryFlags from '../../../src/cli/registry-flags.js';
import type { RegistryFlags } from '../../../src/cli/registry-flags.js';

const base: RegistryFlags = {
  registry: 'etcd',
  etcdEndpoints: ['https://10.0.0.1:2379'],
  etcdKeyfile: undefined,
  etcdCertfile: undefined,
  etcdCafile: undefined,
  etcdUsername: undefined,
  etcdPassword: undefined,
};

t.test('which flags send a password unencrypted', async (t) => {
  const warn = registryFlags.cleartextPasswordWarning;
  t.type(warn, 'function');
  t.equal(warn({ ...base, etcdUsername: 'u', etcdPassword: 's3cret' }), undefined, 'https: fine');
  t.equal(warn({ ...base, etcdEndpoints: ['http://10.0.0.1:2379'] }), undefined, 'no password: fine');
  const msg = warn({
    ...base,
    etcdEndpoints: ['https://10.0.0.1:2379', 'http://user:pw@10.0.0.2:2379'],
    etcdUsername: 'u',
    etcdPassword: 's3cret',
  });
  t.match(msg, /--etcd-password is sent unencrypted to http:\/\/10\.0\.0\.2:2379/);
  t.notMatch(msg, /s3cret|pw@/, 'no credentials in the message');
  t.match(
    warn({ ...base, registry: 'redis://:pw@10.0.0.3:6379/0' }),
    /Redis password .*redis:\/\/10\.0\.0\.3:6379/,
  );
  t.equal(warn({ ...base, registry: 'rediss://:pw@10.0.0.3:6379/0' }), undefined);
  t.equal(warn({ ...base, registry: 'redis://10.0.0.3:6379/0' }), undefined);
});

t.test(
  'opening the store from such flags logs the warning (daemons and weftctl share this path)',
  async (t) => {
    const lines: { level: number; msg: string; field?: string }[] = [];
    const logger = pino({ level: 'warn' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    const flags = {
      ...base,
      etcdEndpoints: ['http://127.0.0.1:1'],
      etcdUsername: 'u',
      etcdPassword: 's3cret',
    };
    await registryFlags.openStoreFromFlags(flags, logger).then(
      (store) => store.close(),
      () => {},
    );
    const hit = lines.find((l) => /unencrypted/.test(l.msg));
    t.ok(hit, 'warned');
    t.equal(hit?.field, '--etcd-password');
    t.notMatch(JSON.stringify(lines), /s3cret/, 'the password is never logged');
  },
);

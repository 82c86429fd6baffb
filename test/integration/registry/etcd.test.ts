/**
 * The store compliance suite against a real etcd (Debian's etcd 3.4), started for this file
 * on free ports and restarted, stopped and compacted by the suite.
 */
import { rmSync } from 'node:fs';
import { Etcd3 } from 'etcd3';
import t from 'tap';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { openStore } from '../../../src/registry/index.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalEtcd } from '../../lab/servers.js';
import { runStoreCompliance } from './compliance.js';

t.setTimeout(110_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
const etcd = await startLocalEtcd(dir);
t.teardown(async () => {
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
});

runStoreCompliance(t, {
  name: 'etcd',
  open: () => openStore({ registry: 'etcd', etcd: { endpoints: [etcd.endpoint] } }),
  restartServer: async () => {
    await etcd.stop();
    await etcd.start();
  },
  stopServer: () => etcd.stop(),
  startServer: () => etcd.start(),
  compact: async () => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      const { header } = await client.kv.range({ key: Buffer.from('/') });
      await client.kv.compact({ revision: header.revision, physical: true });
    } finally {
      client.close();
    }
  },
  // etcd keeps leases across a restart and gives them a fresh TTL when a leader is elected.
  outageOutcome: 'renewed',
  ttlSeconds: 2,
});

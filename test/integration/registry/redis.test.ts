/**
 * The store compliance suite against a real redis-server (append-only file, fsync always),
 * started for this file on a free port and restarted, stopped and trimmed by the suite.
 */
import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import t from 'tap';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { openStore } from '../../../src/registry/index.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalRedis } from '../../lab/servers.js';
import { runStoreCompliance } from './compliance.js';

t.setTimeout(110_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
const redis = await startLocalRedis(dir);
t.teardown(async () => {
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

runStoreCompliance(t, {
  name: 'redis',
  open: () => openStore(`${redis.url}/0`),
  restartServer: async () => {
    await redis.stop();
    await redis.start();
  },
  stopServer: () => redis.stop(),
  startServer: () => redis.start(),
  compact: async () => {
    // The whole change log is trimmed, as MAXLEN ~ would after enough writes.
    const client = new Redis(redis.url, { protocol: 2 });
    try {
      await client.xtrim('weft:log', 'MAXLEN', 0);
    } finally {
      client.disconnect();
    }
  },
  // Redis keeps absolute expiry times: a key whose TTL ran out while the server was down is
  // expired when it comes back, and the reaper turns that into a delete.
  outageOutcome: 'lost',
  ttlSeconds: 2,
});

/**
 * Leader election against a real redis-server, started for this file on a free port and
 * SIGSTOPped by the partition scenario.
 */
import { rmSync } from 'node:fs';
import t from 'tap';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalRedis } from '../../lab/servers.js';
import { runElectionScenarios } from './scenarios.js';

t.setTimeout(110_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
const redis = await startLocalRedis(dir);
t.teardown(async () => {
  redis.process?.signal('SIGCONT');
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

runElectionScenarios(t, {
  name: 'redis',
  store: `${redis.url}/0`,
  pause: () => redis.process?.signal('SIGSTOP'),
  resume: () => redis.process?.signal('SIGCONT'),
  // The store's reaper runs in every script and on a 0.5 s timer.
  expirySlackMs: 200,
});

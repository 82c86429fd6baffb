/**
 * Leader election against a real etcd (Debian's etcd 3.4), started for this file on free ports
 * and SIGSTOPped by the partition scenario.
 */
import { rmSync } from 'node:fs';
import t from 'tap';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { newRunId, runDir } from '../../lab/netns.js';
import { startLocalEtcd } from '../../lab/servers.js';
import { runElectionScenarios } from './scenarios.js';

t.setTimeout(110_000);
setRootLogger(silentLogger());

const dir = runDir(newRunId());
const etcd = await startLocalEtcd(dir);
t.teardown(async () => {
  etcd.process?.signal('SIGCONT');
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
});

runElectionScenarios(t, {
  name: 'etcd',
  store: { registry: 'etcd', etcd: { endpoints: [etcd.endpoint] } },
  pause: () => etcd.process?.signal('SIGSTOP'),
  resume: () => etcd.process?.signal('SIGCONT'),
  expirySlackMs: 600,
});

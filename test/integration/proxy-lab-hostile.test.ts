/**
 * Issue 12's hostile-input suite for weft-proxy in all three modes, one lab (node1 nftables,
 * node2 iptables, node3 userspace, one etcd): see test/helpers/proxy-lab-hostile.ts.
 */
import t from 'tap';
import { hostileSuite } from '../helpers/proxy-lab-hostile.js';
import { scenarioMissing } from '../helpers/proxy-lab-scenario.js';

// Budget ~2 min when the daemons behave; every wait inside has its own timeout, so a daemon that
// does not fails assertions well before this.
t.setTimeout(300_000);

const missing = ['nftables', 'iptables', 'userspace'].map(scenarioMissing).find((m) => m !== undefined);
if (missing) t.plan(0, missing);
else
  await t.test('weft-proxy under hostile registry input, in nftables, iptables and userspace mode', (t) =>
    hostileSuite(t),
  );

/**
 * weft-proxy in userspace mode on a 3-node vxlan lab: the acceptance scenario of issue 4 (see
 * test/helpers/proxy-lab-scenario.ts). One lab for the file.
 */
import t from 'tap';
import { proxyLabScenario, scenarioMissing } from '../helpers/proxy-lab-scenario.js';

t.setTimeout(300_000);

const missing = scenarioMissing('userspace');
if (missing) t.plan(0, missing);
else
  await t.test(`weft-proxy in userspace mode on a 3-node lab`, (t) =>
    proxyLabScenario(t, { mode: 'userspace', expectRelay: 'native' }),
  );

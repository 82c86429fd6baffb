/**
 * The userspace scenario again with the native addon disabled (WEFT_NATIVE=0, inherited by the
 * daemons): the Node stream relay and dgram sockets must pass the same acceptance points, and the
 * daemons must say in their log that they fell back.
 */
import t from 'tap';
import { proxyLabScenario, scenarioMissing } from '../helpers/proxy-lab-scenario.js';

t.setTimeout(300_000);
process.env.WEFT_NATIVE = '0';

const missing = scenarioMissing('userspace');
if (missing) t.plan(0, missing);
else
  await t.test('weft-proxy in userspace mode with the Node relay fallback on a 3-node lab', (t) =>
    proxyLabScenario(t, { mode: 'userspace', expectRelay: 'node' }),
  );

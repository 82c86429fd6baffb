/**
 * weft-proxy in nftables mode on a 3-node vxlan lab: the acceptance scenario of issue 4 (see
 * test/helpers/proxy-lab-scenario.ts), plus bad Services and EndpointSlices in the registry, each
 * reported with its key and field while the good services keep working. One lab for the file.
 */
import t from 'tap';
import { proxyLabScenario, scenarioMissing } from '../helpers/proxy-lab-scenario.js';

t.setTimeout(300_000);

const missing = scenarioMissing('nftables');
if (missing) t.plan(0, missing);
else
  await t.test(`weft-proxy in nftables mode on a 3-node lab`, (t) =>
    proxyLabScenario(t, { mode: 'nftables', badInput: true }),
  );

/**
 * Issue 13's core scenario on the Redis registry (weft-flanneld, weft-proxy, weft-controller and
 * weft-cni's attachments all on `--registry=redis://…`): traffic spreads over 3 labelled pods, a
 * 4th joins within 1 s, a label removed takes it out within 1 s. One lab for the file.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../lab/index.js';
import { selectorLabScenario } from '../../helpers/selector-lab-scenario.js';

t.setTimeout(240_000);

if (!existsSync(join(REPO_ROOT, 'src/controller/main.ts')))
  t.plan(0, 'weft-controller not testable yet: src/controller/main.ts missing');
else
  await t.test('selectors on Redis: the core scenario', (t) =>
    selectorLabScenario(t, { registry: 'redis', full: false }),
  );

import t from 'tap';
import { Counter, createRegistry, metricName } from '../../../src/metrics/index.js';

t.test('registries are private and names carry the weft prefix', async (t) => {
  const a = createRegistry();
  const b = createRegistry();
  new Counter({ name: metricName('weft_test_total'), help: 'x', registers: [a] });
  new Counter({ name: metricName('weft_test_total'), help: 'x', registers: [b] });
  t.match(await a.metrics(), /weft_test_total 0/);
  t.throws(() => metricName('test_total'), /must start with weft_/);
});

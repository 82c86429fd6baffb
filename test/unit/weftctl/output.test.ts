/** weftctl's tables: every cell, whatever the registry holds, reaches the terminal escaped. */
import t from 'tap';
import { formatTable } from '../../../src/weftctl/output.js';

t.test('control characters in cells are escaped, and the columns still line up', async (t) => {
  const out = formatTable({
    headers: ['name', 'type', 'age'],
    rows: [
      ['web\nfake-row  ClusterIP  1d', 'ClusterIP', '5m'],
      ['x\u001b[2J\u001b[H', 'Node\u202ePort', '1s'],
      ['plain', 'ClusterIP', '3s'],
    ],
  });
  t.notOk(
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u0009\u000b-\u001f\u007f\u202e]/.test(out),
    'no control character left but the line ends',
  );
  const lines = out.split('\n');
  t.equal(lines.length, 5, 'a header, three rows and the final newline: no forged row');
  const w = 'web\\nfake-row  ClusterIP  1d'.length;
  t.equal(lines[1], `${'web\\nfake-row  ClusterIP  1d'}  ${'ClusterIP'.padEnd(14)}  5m`);
  t.equal(lines[2], `${'x\\x1b[2J\\x1b[H'.padEnd(w)}  Node\\u202ePort  1s`);
  t.equal(lines[0]?.indexOf('TYPE'), w + 2, 'widths measured on the escaped text');
});

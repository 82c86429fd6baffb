import t from 'tap';
import { ErrorCodes, invalid, isWeftError, messageOf } from '../../../src/errors/index.js';

t.test('codes are stable and prefixed', async (t) => {
  for (const [name, code] of Object.entries(ErrorCodes)) t.equal(code, `WEFT_${name}`, name);
});

t.test('invalid() names the object and the field', async (t) => {
  const e = invalid('net-conf', 'SubnetLen', 'must be ≤ 30', ErrorCodes.INVALID_CONFIG);
  t.equal(e.message, 'net-conf: field SubnetLen: must be ≤ 30');
  t.equal(e.code, ErrorCodes.INVALID_CONFIG);
  t.same(e.details, { object: 'net-conf', field: 'SubnetLen' });
  t.ok(isWeftError(e, ErrorCodes.INVALID_CONFIG));
  t.notOk(isWeftError(e, ErrorCodes.INVALID_KEY));
  t.notOk(isWeftError(new Error('x')));
  t.same(JSON.parse(JSON.stringify(e)), {
    name: 'WeftError',
    code: 'WEFT_INVALID_CONFIG',
    message: 'net-conf: field SubnetLen: must be ≤ 30',
    object: 'net-conf',
    field: 'SubnetLen',
  });
});

t.test('messageOf handles non-errors', async (t) => {
  t.equal(messageOf(new Error('boom')), 'boom');
  t.equal(messageOf('text'), 'text');
  t.equal(messageOf(42), '42');
});

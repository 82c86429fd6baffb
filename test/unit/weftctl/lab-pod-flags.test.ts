/** `weftctl lab pod add`'s --labels and --port, checked as the API server checks labels and ports. */
import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { parseLabelsFlag, parsePortFlag } from '../../../src/weftctl/lab-control.js';

t.test('--labels', async (t) => {
  t.strictSame(parseLabelsFlag('app=web,tier=front'), { app: 'web', tier: 'front' });
  t.strictSame(parseLabelsFlag('example.com/role=db,empty='), { 'example.com/role': 'db', empty: '' });
  for (const [text, why] of [
    ['app', /"app" is not key=value/],
    ['app=a b', /value "a b" of app must/],
    ['-app=x', /key "-app"/],
    ['app=x,app=y', /key app is given twice/],
    ['a=\u001b[31m', /value "\\u001b\[31m"/],
    [Array.from({ length: 65 }, (_, i) => `k${i}=v`).join(','), /more than 64 labels/],
  ] as const) {
    t.throws(
      () => parseLabelsFlag(text),
      { code: ErrorCodes.INVALID_ARGUMENT, message: why },
      JSON.stringify(text.slice(0, 30)),
    );
  }
});

t.test('--port', async (t) => {
  t.strictSame(parsePortFlag('8080'), { containerPort: 8080 });
  t.strictSame(parsePortFlag('http:8080'), { name: 'http', containerPort: 8080 });
  t.strictSame(parsePortFlag('dns:53/udp'), { name: 'dns', containerPort: 53, protocol: 'UDP' });
  t.strictSame(parsePortFlag('53/TCP'), { containerPort: 53, protocol: 'TCP' });
  for (const [text, why] of [
    ['0', /0 is not in 1\.\.65535/],
    ['65536', /65536 is not in 1\.\.65535/],
    ['http', /"http" is not \[name:\]port/],
    ['8080/sctp', /is not \[name:\]port/],
    ['HTTP:80', /name "HTTP"/],
    ['123:80', /name "123" must contain at least one letter/],
    [':80', /name "" must not be empty/],
  ] as const) {
    t.throws(() => parsePortFlag(text), { code: ErrorCodes.INVALID_ARGUMENT, message: why }, text);
  }
});

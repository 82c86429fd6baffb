/** The lab's pure helpers: address plan, ping and Go-duration parsing, the matrix text. */
import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { Reachability, addressPlan, parseGoDurationMs, parsePing, table } from '../../lab/index.js';

t.test('addressPlan', async (t) => {
  const p = addressPlan('10.99.0.0/24', 3, 3);
  t.same(p, {
    cidr: '10.99.0.0/24',
    prefixLength: 24,
    underlay: '10.99.0.1',
    nodes: ['10.99.0.11', '10.99.0.12', '10.99.0.13'],
    etcd: ['10.99.0.101', '10.99.0.102', '10.99.0.103'],
    redis: '10.99.0.110',
  });
  t.equal(addressPlan('172.30.0.0/16', 1, 1).nodes[0], '172.30.0.11');
  t.throws(() => addressPlan('10.244.0.0/24', 3, 1), { code: ErrorCodes.LAB }, 'inside the pod network');
  t.throws(() => addressPlan('10.0.0.0/8', 3, 1), { code: ErrorCodes.LAB }, 'around the pod network');
  t.throws(() => addressPlan('10.99.0.0/25', 3, 1), { code: ErrorCodes.LAB }, 'too small');
  t.throws(() => addressPlan('10.99.0.1/24', 3, 1), { code: ErrorCodes.LAB }, 'host bits set');
  t.throws(() => addressPlan('10.99.0.0', 3, 1), { code: ErrorCodes.LAB }, 'no prefix');
});

t.test('parsePing', async (t) => {
  const ok = `PING 10.99.0.12 (10.99.0.12) 56(84) bytes of data.

--- 10.99.0.12 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 405ms
rtt min/avg/max/mdev = 0.041/0.062/0.093/0.022 ms
`;
  t.same(parsePing(ok), {
    transmitted: 3,
    received: 3,
    loss: 0,
    rtt: { minMs: 0.041, avgMs: 0.062, maxMs: 0.093, mdevMs: 0.022 },
  });
  const lost = `--- 10.99.0.250 ping statistics ---
2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1020ms
`;
  t.same(parsePing(lost), { transmitted: 2, received: 0, loss: 1 });
  t.equal(parsePing('4 packets transmitted, 3 received, 25% packet loss').loss, 0.25);
  t.throws(() => parsePing('ping: connect: Network is unreachable'), { code: ErrorCodes.LAB });
});

t.test('parseGoDurationMs', async (t) => {
  t.equal(parseGoDurationMs('4.5ms'), 4.5);
  t.equal(parseGoDurationMs('1.25s'), 1250);
  t.equal(parseGoDurationMs('500µs'), 0.5);
  t.equal(parseGoDurationMs('1m2s'), 62_000);
  t.ok(Number.isNaN(parseGoDurationMs('soon')));
});

t.test('Reachability', async (t) => {
  const stats = (received: number) => ({
    transmitted: 2,
    received,
    loss: (2 - received) / 2,
    ...(received ? { rtt: { minMs: 0.05, avgMs: 0.06, maxMs: 0.07, mdevMs: 0.01 } } : {}),
  });
  const m = new Reachability(
    ['a', 'b'],
    [
      { name: 'a', ip: '10.0.0.1' },
      { name: 'b', ip: '10.0.0.2' },
    ],
    [
      { from: 'a', to: 'b', ip: '10.0.0.2', stats: stats(2) },
      { from: 'b', to: 'a', ip: '10.0.0.1', stats: stats(0) },
    ],
  );
  t.notOk(m.allReachable);
  t.same(
    m.unreachable().map((c) => `${c.from}->${c.to}`),
    ['b->a'],
  );
  t.equal(
    m.format(),
    table([
      ['from \\ to', 'a (10.0.0.1)', 'b (10.0.0.2)'],
      ['a', '-', '0.060ms'],
      ['b', 'FAIL', '-'],
    ]),
  );
});

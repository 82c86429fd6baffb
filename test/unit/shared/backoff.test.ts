import t from 'tap';
import { Backoff, sleep } from '../../../src/backoff/index.js';

t.test('delays grow by the multiplier up to the cap', async (t) => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0 });
  t.same(
    Array.from({ length: 6 }, () => b.next()),
    [100, 200, 400, 800, 1000, 1000],
  );
  t.equal(b.attempt, 6);
  b.reset();
  t.equal(b.next(), 100, 'reset starts over');
});

t.test('jitter stays within the configured fraction', async (t) => {
  const cases: Array<[number, number]> = [
    [0, 800],
    [0.5, 1000],
    [0.9999, 1200],
  ];
  for (const [r, want] of cases) {
    const b = new Backoff({ initialMs: 1000, maxMs: 10_000, jitter: 0.2, random: () => r });
    t.equal(b.next(), want, `random=${r}`);
  }
});

t.test('jitter never exceeds maxMs', async (t) => {
  const b = new Backoff({ initialMs: 1000, maxMs: 1000, jitter: 0.5, random: () => 0.99 });
  t.equal(b.next(), 1000);
});

t.test('bad options are refused', async (t) => {
  t.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  t.throws(() => new Backoff({ initialMs: 10, maxMs: 5 }), RangeError);
  t.throws(() => new Backoff({ multiplier: 0.5 }), RangeError);
});

t.test('sleep resolves early on abort', async (t) => {
  const ac = new AbortController();
  const start = Date.now();
  setTimeout(() => ac.abort(), 20);
  await sleep(10_000, ac.signal);
  t.ok(Date.now() - start < 5_000, 'aborted well before the delay');
  await sleep(10_000, ac.signal);
  t.pass('an already-aborted signal resolves at once');
});

import t from 'tap';
import { Backoff } from '../../../src/backoff/index.js';
import { SyncRunner, type RunReason } from '../../../src/proxy/sync-runner.js';
import { FakeClock, settle } from './fake-clock.js';

function setup(opts: { min?: number; max?: number; fail?: () => boolean; slowMs?: number } = {}) {
  const clock = new FakeClock();
  const runs: { at: number; reason: RunReason }[] = [];
  let active = 0;
  let overlapped = false;
  const runner = new SyncRunner({
    clock,
    minIntervalMs: opts.min ?? 1_000,
    maxIntervalMs: opts.max ?? 30_000,
    backoff: new Backoff({ initialMs: 2_000, maxMs: 8_000, jitter: 0 }),
    fn: async (reason) => {
      active++;
      if (active > 1) overlapped = true;
      runs.push({ at: clock.now(), reason });
      if (opts.slowMs) await new Promise<void>((r) => clock.setTimeout(r, opts.slowMs as number));
      active--;
      if (opts.fail?.()) throw new Error('sync failed');
    },
  });
  const start = clock.now();
  return { clock, runs, runner, start, overlapped: () => overlapped };
}

t.test('a first request runs at once; later ones wait for the minimum interval', async (t) => {
  const { clock, runs, runner, start } = setup();
  runner.start();
  runner.run();
  await clock.advance(0);
  t.same(runs, [{ at: start, reason: 'requested' }]);
  runner.run();
  runner.run();
  runner.run();
  await clock.advance(999);
  t.equal(runs.length, 1, 'nothing before the minimum interval');
  await clock.advance(1);
  t.same(runs[1], { at: start + 1_000, reason: 'requested' }, 'the burst collapses into one run');
  await clock.advance(5_000);
  t.equal(runs.length, 2, 'no further run without a request');
  runner.run();
  await clock.advance(0);
  t.same(runs[2], { at: start + 6_000, reason: 'requested' }, 'immediate once the interval has passed');
  await runner.stop();
});

t.test('runs periodically at the maximum interval', async (t) => {
  const { clock, runs, runner, start } = setup({ max: 10_000 });
  runner.start();
  await clock.advance(25_000);
  t.same(
    runs.map((r) => [r.at - start, r.reason]),
    [
      [10_000, 'periodic'],
      [20_000, 'periodic'],
    ],
  );
  runner.run();
  await clock.advance(0);
  await clock.advance(9_999);
  t.equal(runs.length, 3, 'a requested run restarts the periodic interval');
  await clock.advance(1);
  t.same(runs.at(-1), { at: start + 35_000, reason: 'periodic' });
  await runner.stop();
});

t.test('a failed run is retried after a growing backoff, and a success resets it', async (t) => {
  let failures = 3;
  const { clock, runs, runner, start } = setup({ fail: () => failures-- > 0 });
  runner.start();
  runner.run();
  await clock.advance(20_000);
  t.same(
    runs.map((r) => [r.at - start, r.reason]),
    [
      [0, 'requested'],
      [2_000, 'retry'],
      [6_000, 'retry'],
      [14_000, 'retry'],
    ],
  );
  failures = 1;
  runner.run();
  await clock.advance(5_000);
  t.same(
    runs.slice(4).map((r) => [r.at - start, r.reason]),
    [
      [20_000, 'requested'],
      [22_000, 'retry'],
    ],
    'the backoff starts over after a success',
  );
  await runner.stop();
});

t.test('runs never overlap; a request during a run is served after it', async (t) => {
  const { clock, runs, runner, start, overlapped } = setup({ slowMs: 3_000 });
  runner.start();
  runner.run();
  await clock.advance(500);
  runner.run();
  t.ok(runner.busy);
  await clock.advance(2_500);
  t.equal(runs.length, 2, 'served once the first run ended (past the minimum interval)');
  t.equal(runs[1]?.at, start + 3_000);
  await clock.advance(10_000);
  t.notOk(overlapped());
  await runner.stop();
});

t.test('nothing runs before start or after stop', async (t) => {
  const { clock, runs, runner } = setup();
  runner.run();
  await clock.advance(60_000);
  t.equal(runs.length, 0);
  runner.start();
  await clock.advance(0);
  t.equal(runs.length, 1, 'a request made before start runs at start');
  await runner.stop();
  runner.run();
  await clock.advance(60_000);
  await settle();
  t.equal(runs.length, 1);
  t.equal(clock.pending, 0, 'no timer left');
});

t.test('rejects bad intervals', async (t) => {
  t.throws(() => new SyncRunner({ fn: async () => {}, minIntervalMs: 5, maxIntervalMs: 1 }), RangeError);
});

t.test(
  'a wall clock stepped back an hour does not delay the next sync (the real clock is monotonic)',
  async (t) => {
    const realNow = Date.now;
    t.teardown(() => {
      Date.now = realNow;
    });
    const runs: number[] = [];
    const runner = new SyncRunner({
      fn: async () => {
        runs.push(performance.now());
      },
      minIntervalMs: 50,
      maxIntervalMs: 200,
    });
    t.teardown(() => runner.stop());
    runner.start();
    runner.run();
    while (runs.length < 1) await new Promise((r) => setTimeout(r, 5));
    // An NTP step (or `date -s`) one hour backwards, right after a sync.
    const offset = 3_600_000;
    Date.now = () => realNow() - offset;
    const requested = performance.now();
    runner.run();
    const deadline = requested + 2_000;
    while (runs.length < 2 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    t.equal(runs.length, 2, 'the requested sync ran');
    t.ok((runs[1] ?? Infinity) - requested < 1_000, 'within the minimum interval, not an hour later');
    // And the periodic one keeps its period.
    const periodicDeadline = performance.now() + 2_000;
    while (runs.length < 3 && performance.now() < periodicDeadline)
      await new Promise((r) => setTimeout(r, 5));
    t.equal(runs.length, 3, 'the periodic sync ran');
  },
);

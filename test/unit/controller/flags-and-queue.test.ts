/** weft-controller's flags (defaults, environment, the election's cross-checks) and its work queue. */
import t from 'tap';
import {
  controllerHelp,
  parseControllerFlags,
  parseSecondsOrDuration,
  resolveControllerConfig,
} from '../../../src/controller/flags.js';
import { WorkQueue } from '../../../src/controller/work-queue.js';
import { isWeftError } from '../../../src/errors/index.js';

t.test('defaults as kube-controller-manager, listeners clear of weft-proxy', async (t) => {
  const flags = parseControllerFlags([], {});
  const c = resolveControllerConfig(flags, { hostname: () => 'host1', pid: 42 });
  t.equal(c.identity, 'host1_42');
  t.equal(c.nodeName, 'host1');
  t.equal(c.electionKey, '/weft/leases/weft-controller');
  t.equal(c.nodeMonitorGracePeriodMs, 40_000);
  t.equal(c.leaseDurationMs, 15_000);
  t.equal(c.renewDeadlineMs, 10_000);
  t.equal(c.retryPeriodMs, 2_000);
  t.equal(flags.maxEndpointsPerSlice, 100);
  t.equal(flags.leaderElect, true);
  t.same(c.healthz, { host: '127.0.0.1', port: 10257 });
  t.same(c.metrics, { host: '127.0.0.1', port: 10258 });
  t.match(controllerHelp(), /--node-monitor-grace-period/);
});

t.test('environment, seconds or durations, custom names', async (t) => {
  const flags = parseControllerFlags(
    ['--leader-elect-lease-duration=3s', '--leader-elect-renew-deadline', '2', '--healthz-bind-address='],
    {
      WEFT_CONTROLLER_LEADER_ELECT_RETRY_PERIOD: '500ms',
      WEFT_CONTROLLER_REGISTRY_PREFIX: '/other',
      WEFT_CONTROLLER_LEADER_ELECT_RESOURCE_NAME: 'ctl-a',
      WEFT_CONTROLLER_IDENTITY: 'me',
    },
  );
  const c = resolveControllerConfig(flags);
  t.equal(c.leaseDurationMs, 3_000);
  t.equal(c.renewDeadlineMs, 2_000);
  t.equal(c.retryPeriodMs, 500);
  t.equal(c.electionKey, '/other/leases/ctl-a');
  t.equal(c.identity, 'me');
  t.equal(c.healthz, undefined, 'empty: disabled');
  t.equal(parseSecondsOrDuration('1m30s'), 90_000);
  t.equal(parseSecondsOrDuration('2.5'), 2_500);
  t.ok(Number.isNaN(parseSecondsOrDuration('soon')));
});

t.test('bad flags are refused, naming the flag', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--max-endpoints-per-slice=0'], /--max-endpoints-per-slice/],
    [['--max-endpoints-per-slice=1001'], /--max-endpoints-per-slice/],
    [['--node-monitor-grace-period=0s'], /--node-monitor-grace-period: must be more than 0/],
    [['--leader-elect-renew-deadline=15s'], /--leader-elect-renew-deadline: must be less than/],
    [
      [
        '--leader-elect-lease-duration=500ms',
        '--leader-elect-renew-deadline=200ms',
        '--leader-elect-retry-period=100ms',
      ],
      /--leader-elect-lease-duration: must be at least 1s/,
    ],
    [['--leader-elect-retry-period=10s'], /--leader-elect-retry-period: must be less than/],
    [['--leader-elect-resource-name=a/b'], /--leader-elect-resource-name/],
    [['--identity=a\u001b[2Jb'], /--identity/],
    [['--registry-prefix=weft'], /--registry-prefix: must start with/],
    [['--status-prefix=/weft/status/'], /--status-prefix: must not end/],
    [['--healthz-bind-address=host:1'], /--healthz-bind-address/],
    [['extra'], /takes no arguments/],
  ];
  for (const [argv, msg] of cases) {
    t.throws(() => parseControllerFlags(argv, {}), msg, argv.join(' '));
    try {
      parseControllerFlags(argv, {});
    } catch (err) {
      t.ok(isWeftError(err), 'a WeftError');
    }
  }
  t.equal(parseControllerFlags(['--help', '--max-endpoints-per-slice=0'], {}).help, true, '--help wins');
});

t.test('work queue: one entry per key, never two workers on a key, earliest change kept', async (t) => {
  const q = new WorkQueue();
  q.add('a', 5);
  q.add('b', 6);
  q.add('a', 3);
  t.equal(q.depth, 2, 'deduplicated');
  const a = q.take();
  t.same(a, { key: 'a', seenAt: 3 }, 'first added first, with the earliest seenAt');
  q.add('a', 10);
  t.equal(q.depth, 2, 'queued again while processing');
  t.same(q.take(), { key: 'b', seenAt: 6 });
  t.equal(q.take(), undefined, 'a is not handed out while processed');
  q.done('a');
  t.same(q.take(), { key: 'a', seenAt: 10 }, 'after done');
  q.done('a');
  q.done('b');
  t.equal(q.depth, 0);

  let added = 0;
  q.addAfter('c', 1, 20, () => added++);
  q.addAfter('c', 0, 20, () => added++);
  t.equal(q.delayed, 1, 'one timer per key');
  await new Promise((r) => setTimeout(r, 40));
  t.equal(added, 1);
  t.same(q.take(), { key: 'c', seenAt: 0 });
  q.done('c');
  q.addAfter('d', 1, 1_000, () => added++);
  q.add('d', 2);
  t.equal(q.delayed, 0, 'an add now cancels the delayed one');
  t.same(q.take(), { key: 'd', seenAt: 1 });
  q.addAfter('e', 1, 1_000, () => added++);
  q.clear();
  t.equal(q.delayed + q.depth, 0, 'cleared');
});

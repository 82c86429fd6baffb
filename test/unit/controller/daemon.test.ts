/**
 * The weft-controller daemon in-process on a MemoryStore: two of them elect one leader, which
 * writes the slices; /healthz and /readyz; the status records name the leader; a clean stop of
 * the leader resigns and the other takes over at once; --leader-elect=false writes unelected.
 */
import t from 'tap';
import { WeftController } from '../../../src/controller/daemon.js';
import { parseControllerFlags, resolveControllerConfig } from '../../../src/controller/flags.js';
import { LeaderElector } from '../../../src/election/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import { MemoryStore, type Store } from '../../../src/registry/index.js';
import { PREFIX, endpointsOf, pod, putObject, selectorService } from '../../helpers/controller-objects.js';

async function until<T>(
  check: () => Promise<T> | T,
  what: string,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function controller(store: Store, id: string, extra: string[] = []): WeftController {
  const flags = parseControllerFlags(
    [
      `--identity=${id}`,
      `--node-name=${id}`,
      '--leader-elect-lease-duration=2s',
      '--leader-elect-renew-deadline=1s',
      '--leader-elect-retry-period=200ms',
      '--metrics-bind-address=',
      ...extra,
    ],
    {},
  );
  return new WeftController({
    // Any free port (a bind address with port 0 means "disabled" on the command line).
    config: { ...resolveControllerConfig(flags), healthz: { host: '127.0.0.1', port: 0 } },
    store,
    metrics: createRegistry(),
    logger: silentLogger(),
  });
}

async function get(port: number | undefined, path: string): Promise<number> {
  return (await fetch(`http://127.0.0.1:${port ?? 0}${path}`)).status;
}

async function statusDetail(store: Store, id: string): Promise<Record<string, string> | undefined> {
  const kv = await store.get(`${PREFIX}/status/${id}/weft-controller`);
  return kv ? (JSON.parse(kv.value) as { detail: Record<string, string> }).detail : undefined;
}

t.test('two controllers: one leads and writes, the other stands by; a clean stop hands over', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  await putObject(store, selectorService({ name: 'web', selector: { app: 'web' } }));
  await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
  const a = controller(store, 'a');
  const b = controller(store, 'b');
  t.teardown(() => Promise.all([a.stop(), b.stop()]));
  await a.start();
  await b.start();
  await until(async () => (await endpointsOf(store, 'web')).length === 1, 'the slice');
  const holder = await until(
    () => LeaderElector.holder(store, `${PREFIX}/leases/weft-controller`),
    'a leader',
  );
  const [leader, standby] = holder.identity === 'a' ? [a, b] : [b, a];
  const standbyId = holder.identity === 'a' ? 'b' : 'a';
  t.ok(leader.leader && !standby.leader, `${holder.identity} leads`);
  for (const c of [a, b]) {
    t.equal(await get(c.healthzPort, '/healthz'), 200, '/healthz');
    t.equal(await get(c.healthzPort, '/readyz'), 200, '/readyz: leader and standby both ready');
  }
  await until(
    async () => (await statusDetail(store, standbyId))?.holder === holder.identity,
    "the standby's record names the leader",
  );
  t.match(await statusDetail(store, holder.identity), { leader: 'yes', holder: holder.identity });
  t.match(await statusDetail(store, standbyId), { leader: 'no', identity: standbyId });

  await leader.stop();
  t.equal(await statusDetail(store, holder.identity), undefined, 'a stopped controller has no record');
  const started = Date.now();
  await until(() => standby.leader, 'the standby to take over');
  t.ok(Date.now() - started < 1_500, 'at once: the leader resigned, no lease to wait out');
  await putObject(store, pod({ name: 'w2', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.3' }));
  await until(async () => (await endpointsOf(store, 'web')).length === 2, 'the new leader writes');
});

t.test('--leader-elect=false writes without an election', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  await putObject(store, selectorService({ name: 'web', selector: { app: 'web' } }));
  await putObject(store, pod({ name: 'w1', labels: { app: 'web' }, node: 'n1', ip: '10.244.1.2' }));
  const c = controller(store, 'solo', ['--leader-elect=false']);
  t.teardown(() => c.stop());
  await c.start();
  await until(async () => (await endpointsOf(store, 'web')).length === 1, 'the slice');
  t.ok(c.leader);
  t.equal(await store.get(`${PREFIX}/leases/weft-controller`), undefined, 'no election key');
});

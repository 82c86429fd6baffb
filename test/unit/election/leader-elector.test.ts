/**
 * LeaderElector against the in-memory store, with short periods (lease 1 s, renew deadline
 * 0.6 s, retry 100 ms): one leader, takeover after death and after resigning, the renew
 * deadline of a leader cut off from the store, and fencing of its writes.
 */
import t from 'tap';
import { sleep } from '../../../src/backoff/index.js';
import { LeaderElector, decodeRecord, encodeRecord } from '../../../src/election/index.js';
import { ErrorCodes, WeftError } from '../../../src/errors/index.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import {
  MemoryStore,
  type CreateOptions,
  type CreateResult,
  type DeleteOptions,
  type Expectation,
  type KeepAlive,
  type KeepAliveEvent,
  type KeepAliveOptions,
  type KeyValue,
  type ListResult,
  type Store,
  type UpdateOptions,
  type UpdateResult,
  type WatchEvent,
  type WatchOptions,
} from '../../../src/registry/index.js';
import { candidate, soleLeader, until } from '../../helpers/election-fixtures.js';

t.setTimeout(60_000);
setRootLogger(silentLogger());

/**
 * A client that can be cut off from the store: while cut, every request hangs until healed and
 * then fails, as a request to an unreachable server does. Renewals go through the cut too.
 */
class CuttableStore implements Store {
  readonly kind: string;
  cut = false;
  readonly #base: Store;
  readonly #waiting = new Set<() => void>();

  constructor(base: Store) {
    this.#base = base;
    this.kind = base.kind;
  }

  heal(): void {
    this.cut = false;
    for (const w of this.#waiting) w();
    this.#waiting.clear();
  }

  async #gate(): Promise<void> {
    if (!this.cut) return;
    await new Promise<void>((resolve) => this.#waiting.add(resolve));
    throw new WeftError(ErrorCodes.REGISTRY_UNAVAILABLE, 'cut off from the store');
  }

  async get(key: string): Promise<KeyValue | undefined> {
    await this.#gate();
    return this.#base.get(key);
  }
  async timeToLive(key: string): Promise<number | undefined> {
    await this.#gate();
    return this.#base.timeToLive(key);
  }
  async list(prefix: string): Promise<ListResult> {
    await this.#gate();
    return this.#base.list(prefix);
  }
  async create(key: string, value: string, opts?: CreateOptions): Promise<CreateResult> {
    await this.#gate();
    return this.#base.create(key, value, opts);
  }
  async update(key: string, value: string, expect: Expectation, opts?: UpdateOptions): Promise<UpdateResult> {
    await this.#gate();
    return this.#base.update(key, value, expect, opts);
  }
  async delete(key: string, expect?: Expectation, opts?: DeleteOptions): Promise<boolean> {
    await this.#gate();
    return this.#base.delete(key, expect, opts);
  }
  keepAlive(key: string, opts: KeepAliveOptions): KeepAlive {
    let close: () => void = () => undefined;
    const closed = new Promise<void>((resolve) => (close = resolve));
    return {
      key,
      // Loss is reported through renew() here.
      events: (): AsyncIterable<KeepAliveEvent> => ({
        [Symbol.asyncIterator]: () => ({
          next: async (): Promise<IteratorResult<KeepAliveEvent>> => {
            await closed;
            return { done: true, value: undefined };
          },
        }),
      }),
      renew: async () => {
        await this.#gate();
        // One renewal of the base store's, through a keep-alive of its own closed at once, so
        // nothing renews behind the cut.
        const ka = this.#base.keepAlive(key, { ...opts, intervalMs: 3_600_000 });
        try {
          return await ka.renew();
        } finally {
          await ka.close();
        }
      },
      close: async () => close(),
    };
  }
  watch(prefix: string, opts: WatchOptions): AsyncIterable<WatchEvent> {
    return this.#base.watch(prefix, opts);
  }
  close(): Promise<void> {
    this.heal();
    return this.#base.close();
  }
}

let n = 0;
const newKey = (): string => `/weft/leases/test-${++n}`;

t.test('options are validated', async (t) => {
  const store = new MemoryStore();
  const base = { store, key: '/k', identity: 'a', log: silentLogger() };
  t.throws(() => new LeaderElector({ ...base, key: 'k' }), { code: ErrorCodes.INVALID_ARGUMENT });
  t.throws(() => new LeaderElector({ ...base, identity: '' }), { code: ErrorCodes.INVALID_ARGUMENT });
  t.throws(() => new LeaderElector({ ...base, identity: 'a\nb' }), { code: ErrorCodes.INVALID_ARGUMENT });
  t.throws(() => new LeaderElector({ ...base, leaseSeconds: 5, renewDeadlineSeconds: 5 }), {
    code: ErrorCodes.INVALID_ARGUMENT,
  });
  t.throws(() => new LeaderElector({ ...base, renewDeadlineSeconds: 2, retryPeriodMs: 2_000 }), {
    code: ErrorCodes.INVALID_ARGUMENT,
  });
  t.doesNotThrow(() => new LeaderElector(base), 'defaults 15 / 10 / 2000 are valid');
});

t.test('records: encoded as the contract says; anything else decodes to undefined', async (t) => {
  const r = { holder: 'node1_42', token: 7, acquiredAt: '2026-01-01T00:00:00.000Z' };
  t.equal(encodeRecord(r), '{"holder":"node1_42","token":7,"acquiredAt":"2026-01-01T00:00:00.000Z"}');
  t.same(decodeRecord(encodeRecord(r)), r);
  for (const bad of [
    'not json',
    '[]',
    'null',
    '{"holder":"","token":1,"acquiredAt":"2026-01-01T00:00:00Z"}',
    '{"holder":"a","token":-1,"acquiredAt":"2026-01-01T00:00:00Z"}',
    '{"holder":"a","token":1.5,"acquiredAt":"2026-01-01T00:00:00Z"}',
    '{"holder":"a","token":1,"acquiredAt":"yesterday"}',
    `{"holder":"${'x'.repeat(600)}","token":1,"acquiredAt":"2026-01-01T00:00:00Z"}`,
    `{"holder":"a","token":1,"acquiredAt":"2026-01-01T00:00:00Z","pad":"${'x'.repeat(5000)}"}`,
  ])
    t.equal(decodeRecord(bad), undefined, bad.slice(0, 60));
});

t.test('two candidates: exactly one leads, with a guard that fences the other', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  const key = newKey();
  const cs = [candidate(store.client(), key, 'a'), candidate(store.client(), key, 'b')];
  t.teardown(() => Promise.all(cs.map((c) => c.elector.stop())));
  for (const c of cs) c.elector.start();
  const leader = await soleLeader(cs, 3_000);
  const standby = cs.find((c) => c !== leader);
  if (!standby) throw new Error('no standby');
  // Both are given several retry periods: the standby never leads meanwhile.
  for (let i = 0; i < 15; i++) {
    t.notOk(standby.elector.isLeader() && leader.elector.isLeader(), 'never two leaders');
    await sleep(100);
  }
  t.ok(leader.elector.isLeader(), 'the leader keeps leading across renewals');
  t.equal(standby.elector.guard(), undefined, 'a standby has no guard');
  t.same(
    leader.changes.map((c) => c.leader),
    [true],
  );
  t.same(standby.changes, []);

  const guard = leader.elector.guard();
  if (!guard) throw new Error('leader without a guard');
  t.equal(guard.key, key);
  const kv = await store.get(key);
  t.equal(kv?.value, guard.value, 'the guard is the key and its value');
  t.equal(kv?.ttlBound, true, 'the election key is TTL-bound');
  const holder = await LeaderElector.holder(store, key);
  t.equal(holder?.identity, leader.name);
  t.equal(holder?.token, kv?.createRevision, 'the token is the revision of the winning create');
  t.equal(decodeRecord(kv?.value ?? '')?.token, holder?.token);

  const w = await store.create('/weft/out/1', 'x', { guard });
  t.ok(w.created, 'a write under the guard applies');
  t.equal(await LeaderElector.holder(store, '/weft/leases/nobody'), undefined, 'holder of no key');
});

t.test('stop() resigns: the standby leads at its next try, with a higher token', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  const key = newKey();
  const cs = [candidate(store.client(), key, 'a'), candidate(store.client(), key, 'b')];
  t.teardown(() => Promise.all(cs.map((c) => c.elector.stop())));
  for (const c of cs) c.elector.start();
  const first = await soleLeader(cs, 3_000);
  const oldGuard = first.elector.guard();
  const oldToken = (await LeaderElector.holder(store, key))?.token ?? 0;
  const stoppedAt = Date.now();
  await first.elector.stop();
  t.same(
    first.changes.map((c) => c.leader),
    [true, false],
    'onChange(false) on stop',
  );
  t.notOk(first.elector.isLeader());
  const second = await soleLeader(cs, 2_000);
  t.not(second, first);
  const took = Date.now() - stoppedAt;
  t.ok(took < 800, `taken over in ${took} ms, well within the 1 s lease`);
  const h = await LeaderElector.holder(store, key);
  t.ok((h?.token ?? 0) > oldToken, `the token grew (${oldToken} → ${h?.token})`);
  if (!oldGuard) throw new Error('no guard');
  await t.rejects(store.create('/weft/out/2', 'x', { guard: oldGuard }), { code: ErrorCodes.FENCED });
  await t.rejects(
    store.delete(key, undefined, { guard: oldGuard }),
    { code: ErrorCodes.FENCED },
    'the old leader cannot remove the new leader',
  );
});

t.test('a dead leader (no renewals, no resign): the standby leads within the lease', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  const key = newKey();
  const clients = [new CuttableStore(store.client()), new CuttableStore(store.client())];
  const cs = [candidate(clients[0] as Store, key, 'a'), candidate(clients[1] as Store, key, 'b')];
  t.teardown(async () => {
    for (const c of clients) c.heal();
    await Promise.all(cs.map((c) => c.elector.stop()));
  });
  for (const c of cs) c.elector.start();
  const leader = await soleLeader(cs, 3_000);
  const standby = cs.find((c) => c !== leader);
  if (!standby) throw new Error('no standby');
  // From the store's side the leader is dead: nothing it sends arrives any more.
  const diedAt = Date.now();
  (clients[cs.indexOf(leader)] as CuttableStore).cut = true;
  await until(() => standby.elector.isLeader(), 3_000, 'the standby to lead');
  const took = Date.now() - diedAt;
  t.ok(took <= 1_000 + 400, `standby leads ${took} ms after the death (lease 1 s, retry 0.1 s)`);
  t.ok(took >= 600, `not before the renew deadline could have passed (${took} ms)`);
});

t.test(
  'a leader cut off from the store stops leading at the renew deadline, before its key expires, and its late writes are fenced',
  async (t) => {
    const store = new MemoryStore();
    t.teardown(() => store.close());
    const key = newKey();
    const clients = [new CuttableStore(store.client()), new CuttableStore(store.client())];
    const cs = [candidate(clients[0] as Store, key, 'a'), candidate(clients[1] as Store, key, 'b')];
    t.teardown(async () => {
      for (const c of clients) c.heal();
      await Promise.all(cs.map((c) => c.elector.stop()));
    });
    for (const c of cs) c.elector.start();
    const leader = await soleLeader(cs, 3_000);
    const standby = cs.find((c) => c !== leader);
    const cut = clients[cs.indexOf(leader)] as CuttableStore;
    if (!standby) throw new Error('no standby');
    const guard = leader.elector.guard();
    if (!guard) throw new Error('no guard');

    const cutAt = Date.now();
    cut.cut = true;
    await until(() => !leader.elector.isLeader(), 2_000, 'the leader to step down');
    const stepped = Date.now() - cutAt;
    t.equal(leader.elector.guard(), undefined, 'no guard once past the renew deadline');
    t.same(
      leader.changes.map((c) => c.leader),
      [true, false],
      'onChange(false)',
    );
    t.ok(stepped <= 600 + 250, `stepped down ${stepped} ms after the cut (renew deadline 0.6 s)`);
    t.equal((await store.get(key))?.value, guard.value, 'its key has not expired yet: it stopped first');
    t.notOk(standby.elector.isLeader(), 'and nobody else leads yet');

    await until(() => standby.elector.isLeader(), 3_000, 'the standby to lead');
    // The cut-off leader's write, sent with its old guard, arrives after the takeover.
    cut.heal();
    await t.rejects(
      cut.create('/weft/out/late', 'x', { guard }),
      { code: ErrorCodes.FENCED },
      'a write with the old guard is fenced',
    );
    t.equal(await store.get('/weft/out/late'), undefined, 'and wrote nothing');
    // Back in touch, the old leader is a standby: the new leader keeps its term.
    await sleep(500);
    t.ok(standby.elector.isLeader(), 'the new leader keeps leading');
    t.notOk(leader.elector.isLeader(), 'the old one campaigns as a standby');
  },
);

t.test('a leader whose key is deleted or replaced steps down at its next renewal', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  const key = newKey();
  const c = candidate(store.client(), key, 'a');
  t.teardown(() => c.elector.stop());
  c.elector.start();
  await until(() => c.elector.isLeader(), 2_000, 'to lead');
  const kv = await store.get(key);
  if (!kv) throw new Error('no key');
  const replacedAt = Date.now();
  await store.update(
    key,
    encodeRecord({ holder: 'intruder', token: 1, acquiredAt: new Date().toISOString() }),
    {
      modRevision: kv.modRevision,
    },
  );
  await until(() => !c.elector.isLeader(), 1_000, 'to step down');
  t.ok(Date.now() - replacedAt < 550, 'at the next renewal, not at the deadline');
  t.equal((await LeaderElector.holder(store, key))?.identity, 'intruder', 'the other holder is left alone');
  await store.delete(key);
  await until(() => c.elector.isLeader(), 1_000, 'to lead again once the key is free');
  t.same(
    c.changes.map((x) => x.leader),
    [true, false, true],
  );
});

t.test('an invalid record in the key: nobody leads, nothing crashes; its expiry frees it', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  const key = newKey();
  await store.create(key, '\u001b[31mgarbage', { ttlSeconds: 0.5 });
  const c = candidate(store.client(), key, 'a');
  t.teardown(() => c.elector.stop());
  c.elector.start();
  t.equal(await LeaderElector.holder(store, key), undefined);
  await sleep(200);
  t.notOk(c.elector.isLeader());
  await until(() => c.elector.isLeader(), 2_000, 'to lead after the garbage expired');
});

t.test('a leader back in touch after its renew deadline frees its own stale key and wins anew', async (t) => {
  const store = new MemoryStore();
  t.teardown(() => store.close());
  const key = newKey();
  const client = new CuttableStore(store.client());
  // A lease well beyond the renew deadline: the stale key would live 2.4 s past the step-down.
  const c = candidate(client, key, 'a', { leaseSeconds: 3 });
  t.teardown(async () => {
    client.heal();
    await c.elector.stop();
  });
  c.elector.start();
  await until(() => c.elector.isLeader(), 2_000, 'to lead');
  const first = await LeaderElector.holder(store, key);
  client.cut = true;
  await until(() => !c.elector.isLeader(), 1_000, 'to step down');
  const stale = await store.get(key);
  t.equal(decodeRecord(stale?.value ?? '')?.token, first?.token, 'its key is still there, unexpired');
  client.heal();
  const healedAt = Date.now();
  await until(() => c.elector.isLeader(), 2_000, 'to lead again');
  const again = await LeaderElector.holder(store, key);
  t.ok((again?.token ?? 0) > (first?.token ?? 0), 'a new term, with a higher token');
  t.ok(Date.now() - healedAt < 600, 'without waiting for the old key to expire');
  t.same(
    c.changes.map((x) => x.leader),
    [true, false, true],
  );
});

/**
 * The one compliance suite of the store contract (src/registry/store.ts), run unchanged
 * against every backend. A harness opens stores on one server and, where the backend has a
 * server, restarts, stops and compacts it. Each test works under a prefix of its own, so a
 * test is not disturbed by what earlier ones left behind.
 */
import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import { sleep } from '../../../src/backoff/index.js';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import type { KeepAliveEvent, Store, WatchEvent } from '../../../src/registry/index.js';

export interface StoreHarness {
  name: string;
  /** A new client of the backend under test. */
  open(): Promise<Store>;
  /** Stop and start the server on the same data (a restart in the middle of a watch). */
  restartServer?(): Promise<void>;
  /** Stop the server, keeping its data; `startServer` brings it back. */
  stopServer?(): Promise<void>;
  startServer?(): Promise<void>;
  /** Make all history up to now unavailable to watches (etcd compaction, stream trim). */
  compact?(): Promise<void>;
  /**
   * What a keep-alive reports once the server is back from an outage longer than the TTL:
   * `renewed` when the server kept the key (etcd restores leases with a fresh TTL), `lost` when
   * it dropped it (Redis expires it). Required with stopServer/startServer.
   */
  outageOutcome?: 'renewed' | 'lost';
  /** TTL used by the TTL tests, in seconds. Default 2 (etcd's minimum here is about 1.5). */
  ttlSeconds?: number;
}

/** Collects a watch in the background. */
class Recorder {
  readonly events: WatchEvent[] = [];
  error: unknown;
  readonly #ac = new AbortController();
  readonly #done: Promise<void>;

  constructor(store: Store, prefix: string, fromRevision: number) {
    this.#done = (async () => {
      try {
        for await (const ev of store.watch(prefix, { fromRevision, signal: this.#ac.signal }))
          this.events.push(ev);
      } catch (err) {
        this.error = err;
      }
    })();
  }

  /** Waits until `pred` holds for the events so far. */
  async until(pred: (evs: WatchEvent[]) => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (this.error) throw new Error(`watch failed while waiting for ${what}: ${String(this.error)}`);
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}; events: ${JSON.stringify(this.events)}`,
        );
      }
      await sleep(20);
    }
  }

  /** Ends the watch; resolves once the iteration has ended. */
  async stop(): Promise<void> {
    this.#ac.abort();
    await this.#done;
  }
}

/** Collects keep-alive events in the background. */
class KeepAliveRecorder {
  readonly events: KeepAliveEvent[] = [];
  ended = false;
  readonly done: Promise<void>;

  constructor(events: AsyncIterable<KeepAliveEvent>) {
    this.done = (async () => {
      for await (const ev of events) this.events.push(ev);
      this.ended = true;
    })();
  }

  count(type: KeepAliveEvent['type']): number {
    return this.events.filter((e) => e.type === type).length;
  }

  async until(pred: (evs: KeepAliveEvent[]) => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (Date.now() > deadline) {
        const seen = this.events.map((e) => (e.type === 'error' ? `error(${e.error.message})` : e.type));
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}; keep-alive events: ${seen.join(' ')}`,
        );
      }
      await sleep(20);
    }
  }
}

const hasPut = (key: string) => (evs: WatchEvent[]) => evs.some((e) => e.type === 'put' && e.key === key);
const hasDelete = (key: string) => (evs: WatchEvent[]) =>
  evs.some((e) => e.type === 'delete' && e.key === key);
const strip = (evs: WatchEvent[]): string[] =>
  evs.map((e) => (e.type === 'resync' ? `resync@${e.revision}` : `${e.type}:${e.key}@${e.revision}`));

/** Revisions of the put and delete events, checked to rise strictly. */
function revisionsOf(t: Test, evs: WatchEvent[]): number[] {
  const revs = evs.filter((e) => e.type !== 'resync').map((e) => e.revision);
  for (let i = 1; i < revs.length; i++) {
    if (!((revs[i] ?? 0) > (revs[i - 1] ?? 0))) {
      t.fail(`events out of order or repeated at #${i}`, { events: strip(evs) });
      break;
    }
  }
  return revs;
}

export function runStoreCompliance(tap: Test, h: StoreHarness): void {
  const ttl = h.ttlSeconds ?? 2;
  const ttlMs = ttl * 1000;
  const run = randomBytes(3).toString('hex');
  let n = 0;
  const prefixFor = (what: string): string => `/compliance/${h.name}-${run}/${++n}-${what}/`;

  async function open(t: Test): Promise<Store> {
    const s = await h.open();
    t.teardown(() => s.close());
    return s;
  }

  tap.test(
    'a list larger than one gRPC message (10,000 services of a proxy)',
    { timeout: 60_000 },
    async (t) => {
      const s = await open(t);
      const p = prefixFor('large');
      // 80 × 80 KiB = 6.25 MiB: above gRPC's 4 MiB default receive limit.
      const value = 'x'.repeat(80 * 1024);
      for (let i = 0; i < 80; i += 8) {
        await Promise.all(
          Array.from({ length: 8 }, (_, j) => s.create(`${p}k${String(i + j).padStart(3, '0')}`, value)),
        );
      }
      const l = await s.list(p);
      t.equal(l.items.length, 80, 'every key listed');
      t.ok(
        l.items.every((i) => i.value.length === value.length),
        'every value whole',
      );
    },
  );

  tap.test('get, create and list, with revisions', { timeout: 15_000 }, async (t) => {
    const s = await open(t);
    const other = await open(t);
    const p = prefixFor('basic');
    t.equal(await s.get(`${p}a`), undefined, 'absent key');

    const b = await s.create(`${p}b`, 'vb');
    const a = await s.create(`${p}a`, 'va');
    if (!a.created || !b.created) throw new Error('creates on fresh keys must succeed');
    t.ok(a.revision > b.revision, 'each write gets a higher revision');

    const kv = await other.get(`${p}a`);
    t.same(kv, {
      key: `${p}a`,
      value: 'va',
      modRevision: a.revision,
      createRevision: a.revision,
      ttlBound: false,
    });

    const dup = await other.create(`${p}a`, 'other');
    t.same(dup, { created: false, current: kv }, 'create of an existing key reports the key as it is');
    t.equal((await s.get(`${p}a`))?.value, 'va', 'a losing create writes nothing');

    // A key that shares the prefix's characters but not its last "/": outside the prefix.
    const sibling = await s.create(`${p.slice(0, -1)}-sibling`, 'x');
    if (!sibling.created) throw new Error('sibling create failed');
    const l = await other.list(p);
    t.same(
      l.items.map((i) => [i.key, i.value]),
      [
        [`${p}a`, 'va'],
        [`${p}b`, 'vb'],
      ],
      'list: the prefix only, sorted by key',
    );
    t.ok(l.revision >= sibling.revision, 'list revision is the store revision, not the newest item');
    const after = await s.create(`${p}c`, 'vc');
    t.ok(after.created && after.revision > l.revision, 'a later write is above the list revision');

    const empty = await s.list(`${p}nothing/`);
    t.same(empty.items, []);
    t.ok(empty.revision >= (after.created ? after.revision : 0), 'an empty list still carries the revision');

    await t.rejects(s.get('no-slash'), { code: ErrorCodes.INVALID_KEY }, 'keys start with /');
    await t.rejects(s.list('x'), { code: ErrorCodes.INVALID_KEY }, 'prefixes start with /');
  });

  tap.test(
    'update is a compare-and-swap on modRevision, with TTL binding rules',
    { timeout: 15_000 },
    async (t) => {
      const s = await open(t);
      const other = await open(t);
      const p = prefixFor('update');
      const k = `${p}k`;
      const c = await s.create(k, 'v1');
      if (!c.created) throw new Error('create failed');

      const u = await s.update(k, 'v2', { modRevision: c.revision });
      if (!u.updated) throw new Error(`CAS with the right revision must win: ${JSON.stringify(u)}`);
      t.ok(u.revision > c.revision);
      t.same(await other.get(k), {
        key: k,
        value: 'v2',
        modRevision: u.revision,
        createRevision: c.revision,
        ttlBound: false,
      });

      const lose = await other.update(k, 'v3', { modRevision: c.revision });
      t.same(
        lose,
        {
          updated: false,
          current: {
            key: k,
            value: 'v2',
            modRevision: u.revision,
            createRevision: c.revision,
            ttlBound: false,
          },
        },
        'stale CAS loses and reports the current key',
      );
      t.equal((await s.get(k))?.value, 'v2', 'a losing CAS writes nothing');
      t.same(
        await s.update(`${p}absent`, 'x', { modRevision: u.revision }),
        { updated: false, current: undefined },
        'CAS on an absent key',
      );

      // A reservation (no TTL) stays unbound when updated without ttlSeconds.
      let mod = u.revision;
      const steps: [string, number | null | undefined, boolean][] = [
        ['reservation keeps no TTL', undefined, false],
        ['ttlSeconds binds', 60, true],
        ['absent ttlSeconds keeps the TTL', undefined, true],
        ['null unbinds', null, false],
      ];
      for (const [what, ttlSeconds, bound] of steps) {
        const r = await s.update(
          k,
          what,
          { modRevision: mod },
          ttlSeconds === undefined ? {} : { ttlSeconds },
        );
        if (!r.updated) throw new Error(`${what}: update lost`);
        mod = r.revision;
        const got = await other.get(k);
        t.same([got?.value, got?.modRevision, got?.ttlBound], [what, r.revision, bound], what);
      }
      const tc = await s.create(`${p}ttl`, 'x', { ttlSeconds: 60 });
      if (!tc.created) throw new Error('create failed');
      t.equal((await s.get(`${p}ttl`))?.ttlBound, true, 'create with ttlSeconds is TTL-bound');
      const tu = await s.update(`${p}ttl`, 'y', { modRevision: tc.revision });
      t.equal(
        tu.updated && (await s.get(`${p}ttl`))?.ttlBound,
        true,
        'update without ttlSeconds keeps it bound',
      );

      await t.rejects(
        s.update(k, 'x', { modRevision: 0 }),
        { code: ErrorCodes.INVALID_ARGUMENT },
        'modRevision must be positive',
      );
    },
  );

  tap.test('delete, with and without an expected modRevision', { timeout: 15_000 }, async (t) => {
    const s = await open(t);
    const p = prefixFor('delete');
    const k = `${p}k`;
    const c = await s.create(k, 'v1');
    if (!c.created) throw new Error('create failed');
    const u = await s.update(k, 'v2', { modRevision: c.revision });
    if (!u.updated) throw new Error('update failed');

    t.equal(await s.delete(k, { modRevision: c.revision }), false, 'stale expectation: not deleted');
    t.equal((await s.get(k))?.value, 'v2', 'key still there');
    t.equal(await s.delete(k, { modRevision: u.revision }), true, 'matching expectation: deleted');
    t.equal(await s.get(k), undefined);
    t.equal(await s.delete(k), false, 'deleting an absent key reports false');
    t.equal(await s.delete(k, { modRevision: u.revision }), false, 'and with an expectation too');

    await s.create(k, 'again', { ttlSeconds: 60 });
    t.equal(await s.delete(k), true, 'unconditional delete of a TTL-bound key');
    t.same((await s.list(p)).items, []);
  });

  tap.test(
    'guarded writes apply only while the guard key holds the value, and a fenced one writes nothing',
    { timeout: 15_000 },
    async (t) => {
      const s = await open(t);
      const other = await open(t);
      const p = prefixFor('guard');
      const g = `${p}leader`;
      const gc = await s.create(g, 'token-1', { ttlSeconds: 60 });
      if (!gc.created) throw new Error('create of the guard key failed');
      const held = { key: g, value: 'token-1' };
      const stale = { key: g, value: 'token-0' };
      const absent = { key: `${p}no-such-leader`, value: 'token-1' };
      const fenced = { code: ErrorCodes.FENCED };
      const watchFrom = gc.revision + 1;
      const rec = new Recorder(other, p, watchFrom);
      t.teardown(() => rec.stop());

      // Held: create, update and delete apply as without a guard.
      const c = await s.create(`${p}a`, 'v1', { guard: held });
      if (!c.created) throw new Error(`guarded create must win: ${JSON.stringify(c)}`);
      const u = await s.update(`${p}a`, 'v2', { modRevision: c.revision }, { guard: held });
      if (!u.updated) throw new Error(`guarded CAS must win: ${JSON.stringify(u)}`);
      t.equal((await other.get(`${p}a`))?.value, 'v2', 'guarded create and update applied');

      // Held, combined with the key's own expectations: those still decide.
      const dup = await s.create(`${p}a`, 'again', { guard: held });
      t.same(
        [dup.created, dup.created ? undefined : dup.current.value],
        [false, 'v2'],
        'guarded create of an existing key: created false',
      );
      const lose = await s.update(`${p}a`, 'v3', { modRevision: c.revision }, { guard: held });
      t.same(
        [lose.updated, lose.updated ? undefined : lose.current?.modRevision],
        [false, u.revision],
        'guarded CAS with a stale modRevision loses and reports the key',
      );
      t.equal(
        await s.delete(`${p}a`, { modRevision: c.revision }, { guard: held }),
        false,
        'guarded delete with a stale modRevision: not deleted',
      );
      t.equal((await other.get(`${p}a`))?.value, 'v2', 'nothing written by the losing writes');

      // Another value, or no guard key at all: FENCED, even where the write would otherwise win.
      for (const [what, guard] of [
        ['another value', stale],
        ['an absent guard key', absent],
      ] as const) {
        await t.rejects(s.create(`${p}b`, 'x', { guard }), fenced, `create fenced by ${what}`);
        await t.rejects(
          s.create(`${p}b`, 'x', { guard, ttlSeconds: 60 }),
          fenced,
          `TTL-bound create fenced by ${what}`,
        );
        await t.rejects(
          s.update(`${p}a`, 'x', { modRevision: u.revision }, { guard }),
          fenced,
          `update with the right modRevision fenced by ${what}`,
        );
        await t.rejects(
          s.update(`${p}a`, 'x', { modRevision: c.revision }, { guard }),
          fenced,
          `update with a stale modRevision fenced by ${what} (the guard is checked first)`,
        );
        await t.rejects(s.delete(`${p}a`, undefined, { guard }), fenced, `delete fenced by ${what}`);
        await t.rejects(
          s.delete(`${p}a`, { modRevision: u.revision }, { guard }),
          fenced,
          `delete at the right modRevision fenced by ${what}`,
        );
        await t.rejects(
          s.create(`${p}a`, 'x', { guard }),
          fenced,
          `create of an existing key fenced by ${what}`,
        );
      }
      t.equal(await other.get(`${p}b`), undefined, 'a fenced create wrote nothing');
      t.same(
        await other.get(`${p}a`),
        { key: `${p}a`, value: 'v2', modRevision: u.revision, createRevision: c.revision, ttlBound: false },
        'fenced updates and deletes wrote nothing',
      );

      // The guard key changes hands: the old holder's writes are fenced from then on.
      const handover = await other.update(g, 'token-2', { modRevision: gc.revision });
      if (!handover.updated) throw new Error('handover failed');
      await t.rejects(
        s.update(`${p}a`, 'v3', { modRevision: u.revision }, { guard: held }),
        fenced,
        'the old holder is fenced',
      );
      const next = { key: g, value: 'token-2' };
      t.equal(
        await s.delete(`${p}a`, { modRevision: u.revision }, { guard: next }),
        true,
        'the new holder deletes at the right modRevision',
      );
      t.equal(
        await s.delete(`${p}a`, undefined, { guard: next }),
        false,
        'a guarded delete of no key: false',
      );
      // A key may guard its own deletion (a leader resigning).
      t.equal(await s.delete(g, undefined, { guard: next }), true, 'the guard key deleted under itself');
      await t.rejects(
        s.create(`${p}c`, 'x', { guard: next }),
        fenced,
        'once the guard key is gone, its holder is fenced',
      );

      // The watch saw exactly the applied writes.
      const last = await s.create(`${p}end`, 'x');
      if (!last.created) throw new Error('create failed');
      await rec.until(hasPut(`${p}end`), 5_000, 'the last put');
      t.same(
        strip(rec.events),
        [
          `put:${p}a@${c.revision}`,
          `put:${p}a@${u.revision}`,
          `put:${g}@${handover.revision}`,
          `delete:${p}a@${(rec.events[3] as { revision: number } | undefined)?.revision ?? -1}`,
          `delete:${g}@${(rec.events[4] as { revision: number } | undefined)?.revision ?? -1}`,
          `put:${p}end@${last.revision}`,
        ],
        'only the writes that applied are in the change feed',
      );

      await t.rejects(
        s.create(`${p}d`, 'x', { guard: { key: 'no-slash', value: 'x' } }),
        { code: ErrorCodes.INVALID_KEY },
        'a guard key is a registry key',
      );
    },
  );

  tap.test('a TTL-bound guard key that expires fences its holder', { timeout: 20_000 }, async (t) => {
    const s = await open(t);
    const p = prefixFor('guard-ttl');
    const g = `${p}leader`;
    const gc = await s.create(g, 'me', { ttlSeconds: ttl });
    if (!gc.created) throw new Error('create of the guard key failed');
    const guard = { key: g, value: 'me' };
    const c = await s.create(`${p}a`, 'v1', { guard });
    t.ok(c.created, 'writes while the guard key lives');
    const deadline = Date.now() + ttlMs + 5_000;
    while ((await s.get(g)) !== undefined && Date.now() < deadline) await sleep(100);
    t.equal(await s.get(g), undefined, 'the guard key expired');
    await t.rejects(
      s.update(`${p}a`, 'v2', { modRevision: c.created ? c.revision : 1 }, { guard }),
      { code: ErrorCodes.FENCED },
      'fenced once it has expired',
    );
    t.equal((await s.get(`${p}a`))?.value, 'v1');
  });

  tap.test(
    'watch: puts, updates and deletes in revision order, from any revision',
    { timeout: 15_000 },
    async (t) => {
      const s = await open(t);
      const w = await open(t);
      const p = prefixFor('watch');
      const base = (await s.list(p)).revision;
      const rec = new Recorder(w, p, base + 1);
      t.teardown(() => rec.stop());

      const a = await s.create(`${p}a`, '1');
      await s.create(`${p.slice(0, -1)}-outside`, 'x');
      const b = await s.create(`${p}b`, '1', { ttlSeconds: 60 });
      if (!a.created || !b.created) throw new Error('create failed');
      const ua = await s.update(`${p}a`, '2', { modRevision: a.revision });
      if (!ua.updated) throw new Error('update failed');
      t.ok(await s.delete(`${p}b`));
      const c = await s.create(`${p}c`, '1');
      if (!c.created) throw new Error('create failed');

      await rec.until(hasPut(`${p}c`), 5_000, 'the last put');
      const dB = rec.events.find((e) => e.type === 'delete');
      const expected: WatchEvent[] = [
        { type: 'put', key: `${p}a`, value: '1', revision: a.revision, ttlBound: false },
        { type: 'put', key: `${p}b`, value: '1', revision: b.revision, ttlBound: true },
        { type: 'put', key: `${p}a`, value: '2', revision: ua.revision, ttlBound: false },
        { type: 'delete', key: `${p}b`, revision: dB?.revision ?? -1 },
        { type: 'put', key: `${p}c`, value: '1', revision: c.revision, ttlBound: false },
      ];
      t.same(rec.events, expected, 'every event once, in order, nothing from outside the prefix');
      t.ok(
        (dB?.revision ?? 0) > ua.revision && (dB?.revision ?? 0) < c.revision,
        'the delete has its own revision',
      );

      // From a past revision: history is replayed.
      const replay = new Recorder(w, p, b.revision);
      t.teardown(() => replay.stop());
      await replay.until(hasPut(`${p}c`), 5_000, 'the replayed history');
      t.same(replay.events, expected.slice(1), 'replay from a past revision');

      // Ending a watch ends its iteration.
      await rec.stop();
      await replay.stop();
      t.equal(rec.error, undefined, 'no watch error');
    },
  );

  tap.test('concurrent creates: exactly one of 20 clients wins', { timeout: 20_000 }, async (t) => {
    const stores = await Promise.all(Array.from({ length: 20 }, () => open(t)));
    const key = `${prefixFor('race')}contested`;
    const results = await Promise.all(stores.map((s, i) => s.create(key, `client-${i}`, { ttlSeconds: 60 })));
    const winners = results.flatMap((r, i) => (r.created ? [{ i, revision: r.revision }] : []));
    t.equal(winners.length, 1, 'exactly one winner');
    const win = winners[0];
    if (!win) return;
    for (const [i, r] of results.entries()) {
      if (r.created) continue;
      t.same(
        [r.current.value, r.current.modRevision],
        [`client-${win.i}`, win.revision],
        `loser ${i} sees the winner's value`,
      );
    }
    t.equal((await stores[0]?.get(key))?.value, `client-${win.i}`);
  });

  tap.test('timeToLive: seconds left for a TTL-bound key, none for a reservation or no key', async (t) => {
    const s = await open(t);
    const p = prefixFor('time-to-live');
    await s.create(`${p}bound`, 'v', { ttlSeconds: 600 });
    await s.create(`${p}reservation`, 'v');
    const left = await s.timeToLive(`${p}bound`);
    t.ok(left !== undefined && left > 590 && left <= 600, `about 600 s left (${left})`);
    t.equal(await s.timeToLive(`${p}reservation`), undefined, 'a reservation has no TTL');
    t.equal(await s.timeToLive(`${p}absent`), undefined, 'no key, no TTL');
    const kv = await s.get(`${p}bound`);
    if (!kv) throw new Error('bound key missing');
    await s.update(`${p}bound`, 'v', { modRevision: kv.modRevision }, { ttlSeconds: null });
    t.equal(await s.timeToLive(`${p}bound`), undefined, 'unbound by an update: no TTL');
  });

  tap.test('TTL expiry: gone from get and list, and a watched delete', { timeout: 20_000 }, async (t) => {
    const s = await open(t);
    // More clients connected: each expiry must still produce exactly one delete.
    const others = await Promise.all([open(t), open(t)]);
    const p = prefixFor('ttl');
    const base = (await s.list(p)).revision;
    const rec = new Recorder(others[0] ?? s, p, base + 1);
    t.teardown(() => rec.stop());

    const a = await s.create(`${p}a`, 'bound', { ttlSeconds: ttl });
    // A reservation given a TTL expires; a TTL-bound key made a reservation does not.
    const b = await s.create(`${p}b`, 'reservation');
    const c = await s.create(`${p}c`, 'unbound later', { ttlSeconds: ttl });
    if (!a.created || !b.created || !c.created) throw new Error('create failed');
    t.equal((await s.get(`${p}a`))?.ttlBound, true);
    const ub = await s.update(`${p}b`, 'reservation', { modRevision: b.revision }, { ttlSeconds: ttl });
    const uc = await s.update(`${p}c`, 'unbound later', { modRevision: c.revision }, { ttlSeconds: null });
    if (!ub.updated || !uc.updated) throw new Error('update failed');

    const started = Date.now();
    await rec.until(
      (evs) => hasDelete(`${p}a`)(evs) && hasDelete(`${p}b`)(evs),
      ttlMs + 5_000,
      'delete events of expired keys',
    );
    t.ok(Date.now() - started >= ttlMs - 1_200, `not before the TTL (${Date.now() - started} ms)`);
    t.equal(await s.get(`${p}a`), undefined, 'expired key is gone from get');
    t.equal(await s.get(`${p}b`), undefined, 'reservation given a TTL expired');
    t.same(
      (await s.list(p)).items.map((i) => [i.key, i.ttlBound]),
      [[`${p}c`, false]],
      'list holds only the key that was unbound',
    );
    await sleep(1_000);
    const dels = rec.events.filter((e) => e.type === 'delete');
    t.equal(dels.length, 2, 'one delete per expired key');
    t.ok(
      dels.every((e) => e.revision > uc.revision),
      'deletes come after the writes',
    );
    revisionsOf(t, rec.events);
  });

  tap.test(
    'keepAlive keeps a short-TTL key beyond its TTL; after close it expires',
    { timeout: 25_000 },
    async (t) => {
      const s = await open(t);
      const p = prefixFor('keepalive');
      const k = `${p}k`;
      const c = await s.create(k, 'mine', { ttlSeconds: ttl });
      if (!c.created) throw new Error('create failed');
      const rec = new Recorder(s, p, c.revision + 1);
      t.teardown(() => rec.stop());
      const ka = s.keepAlive(k, { ttlSeconds: ttl, expectValue: 'mine' });
      t.equal(ka.key, k);
      const kr = new KeepAliveRecorder(ka.events());

      await sleep(2 * ttlMs + 500);
      t.same(
        await s.get(k),
        { key: k, value: 'mine', modRevision: c.revision, createRevision: c.revision, ttlBound: true },
        'alive after twice its TTL, unchanged (renewal is not a write)',
      );
      t.ok(kr.count('renewed') >= 3, `renewed repeatedly (${kr.count('renewed')})`);
      t.equal(kr.count('lost'), 0);
      t.same(rec.events, [], 'renewals produce no watch events');
      t.equal(await ka.renew(), true, 'renew() on demand');

      await ka.close();
      await kr.done;
      t.ok(kr.ended, 'events end after close()');
      await rec.until(hasDelete(k), ttlMs + 5_000, 'expiry after the keep-alive stopped');
      t.equal(await s.get(k), undefined);
    },
  );

  tap.test(
    'keepAlive reports loss: key deleted or replaced by another client',
    { timeout: 20_000 },
    async (t) => {
      const s = await open(t);
      const other = await open(t);
      const p = prefixFor('lost');

      const k1 = `${p}deleted`;
      await s.create(k1, 'mine', { ttlSeconds: ttl });
      const ka1 = s.keepAlive(k1, { ttlSeconds: ttl, intervalMs: 200, expectValue: 'mine' });
      t.teardown(() => ka1.close());
      const r1 = new KeepAliveRecorder(ka1.events());
      await r1.until((e) => e.some((x) => x.type === 'renewed'), 5_000, 'a renewal');
      t.ok(await other.delete(k1));
      await r1.until((e) => e.some((x) => x.type === 'lost'), 5_000, 'lost after a delete');
      await r1.done;
      t.equal(r1.events.at(-1)?.type, 'lost', 'lost is the last event; the iteration ends');
      t.equal(await ka1.renew(), false, 'renew() resolves false once lost');

      const k2 = `${p}replaced`;
      const c2 = await s.create(k2, 'mine', { ttlSeconds: ttl });
      if (!c2.created) throw new Error('create failed');
      const ka2 = s.keepAlive(k2, { ttlSeconds: ttl, intervalMs: 200, expectValue: 'mine' });
      t.teardown(() => ka2.close());
      const r2 = new KeepAliveRecorder(ka2.events());
      await r2.until((e) => e.some((x) => x.type === 'renewed'), 5_000, 'a renewal');
      const u = await other.update(k2, 'theirs', { modRevision: c2.revision });
      t.ok(u.updated);
      await r2.until((e) => e.some((x) => x.type === 'lost'), 5_000, 'lost after another value was written');
      const lost = r2.events.find((e) => e.type === 'lost');
      t.match(lost, { type: 'lost', reason: /value/ }, 'the reason names the other value');

      const ka3 = s.keepAlive(`${p}never-created`, { ttlSeconds: ttl });
      t.teardown(() => ka3.close());
      const r3 = new KeepAliveRecorder(ka3.events());
      await r3.until((e) => e.some((x) => x.type === 'lost'), 5_000, 'lost for a key that does not exist');
    },
  );

  tap.test(
    'watch across a server restart: every event exactly once, in order',
    { timeout: 45_000, skip: !h.restartServer && 'no server to restart' },
    async (t) => {
      const s = await open(t);
      const w = await open(t);
      const p = prefixFor('restart');
      const base = (await s.list(p)).revision;
      const rec = new Recorder(w, p, base + 1);
      t.teardown(() => rec.stop());

      // Each write's outcome is made definite: after an error the create is repeated until it
      // answers, and a "lost" race against our own value means the first attempt was applied.
      const revisions: number[] = [];
      let failures = 0;
      async function write(i: number): Promise<void> {
        const key = `${p}k${String(i).padStart(3, '0')}`;
        for (;;) {
          try {
            const r = await s.create(key, `v${i}`);
            if (r.created) revisions.push(r.revision);
            else if (r.current.value === `v${i}`) revisions.push(r.current.modRevision);
            else throw new Error(`unexpected value for ${key}`);
            return;
          } catch (err) {
            if (!isWeftError(err, ErrorCodes.REGISTRY_UNAVAILABLE)) throw err;
            failures++;
            await sleep(100);
          }
        }
      }

      let i = 0;
      for (; i < 10; i++) await write(i);
      await rec.until((evs) => evs.length >= 10, 5_000, 'events before the restart');
      let writing = true;
      const writer = (async () => {
        while (writing) await write(i++);
      })();
      await sleep(100);
      await h.restartServer?.();
      await sleep(300);
      writing = false;
      await writer;
      const until = i + 10;
      for (; i < until; i++) await write(i);

      await rec.until((evs) => evs.length >= revisions.length, 20_000, 'every event after the restart');
      await sleep(300);
      t.equal(rec.error, undefined, 'the watch did not fail');
      t.same(
        rec.events.filter((e) => e.type === 'resync'),
        [],
        'no resync: the history was there',
      );
      t.same(
        revisionsOf(t, rec.events),
        [...revisions].sort((x, y) => x - y),
        `all ${revisions.length} writes seen once, in order`,
      );
      t.comment(`${revisions.length} writes, ${failures} attempts failed during the restart`);
    },
  );

  tap.test(
    'compaction: a watch from a compacted revision resyncs, then continues',
    { timeout: 20_000, skip: !h.compact && 'backend cannot compact' },
    async (t) => {
      const s = await open(t);
      const p = prefixFor('compact');
      const base = (await s.list(p)).revision;

      // A watcher that is behind: it has taken one event, then stops reading for a while.
      const behind = s.watch(p, { fromRevision: base + 1 })[Symbol.asyncIterator]();
      t.teardown(() => behind.return?.());
      const writes: number[] = [];
      const put = async (name: string): Promise<number> => {
        const r = await s.create(`${p}${name}`, name);
        if (!r.created) throw new Error('create failed');
        writes.push(r.revision);
        return r.revision;
      };
      await put('k0');
      const first = await behind.next();
      t.match(first.value, { type: 'put', key: `${p}k0` });
      for (let i = 1; i <= 5; i++) await put(`k${i}`);
      await h.compact?.();

      // Starting from an old revision: a resync first, then what follows.
      const rec = new Recorder(s, p, base + 1);
      t.teardown(() => rec.stop());
      await rec.until((evs) => evs.length > 0, 5_000, 'a resync');
      const resync = rec.events[0];
      t.match(resync, { type: 'resync', reason: String }, 'the first event is a resync');
      if (resync?.type !== 'resync') return;
      t.ok(resync.revision >= (writes.at(-1) ?? 0), 'its revision covers the compacted writes');
      const last = await put('after');
      await rec.until(hasPut(`${p}after`), 5_000, 'the write after the compaction');
      t.same(strip(rec.events.slice(1)), [`put:${p}after@${last}`], 'then the events after it, each once');

      // The watcher that was behind: either it still had every event, or it resyncs, and then
      // carries on without gaps or repeats.
      const seen: WatchEvent[] = [first.value as WatchEvent];
      while (!seen.some((e) => e.type === 'put' && e.key === `${p}after`)) {
        const next = await Promise.race([behind.next(), sleep(5_000).then(() => undefined)]);
        if (!next || next.done) throw new Error(`behind watcher stalled: ${JSON.stringify(strip(seen))}`);
        seen.push(next.value);
      }
      const idx = seen.findIndex((e) => e.type === 'resync');
      const revs = revisionsOf(t, seen);
      if (idx < 0) {
        t.same(revs, writes, 'the behind watcher saw every write, in order');
      } else {
        const r = seen[idx] as Extract<WatchEvent, { type: 'resync' }>;
        const before = revisionsOf(t, seen.slice(0, idx));
        const after = revisionsOf(t, seen.slice(idx + 1));
        t.same(before, writes.slice(0, before.length), 'before the resync: a prefix of the writes');
        t.same(
          after,
          writes.filter((x) => x > r.revision),
          'after the resync: every later write',
        );
      }
      t.comment(`behind watcher: ${strip(seen).join(' ')}`);
    },
  );

  tap.test(
    'keepAlive across an outage longer than the TTL',
    { timeout: 45_000, skip: !(h.stopServer && h.startServer) && 'no server to stop' },
    async (t) => {
      const outcome = h.outageOutcome;
      if (!outcome) throw new Error('harness must declare outageOutcome');
      const s = await open(t);
      const p = prefixFor('outage');
      const k = `${p}k`;
      const c = await s.create(k, 'mine', { ttlSeconds: ttl });
      if (!c.created) throw new Error('create failed');
      const rec = new Recorder(s, p, c.revision + 1);
      t.teardown(() => rec.stop());
      const ka = s.keepAlive(k, { ttlSeconds: ttl, expectValue: 'mine' });
      t.teardown(() => ka.close());
      const kr = new KeepAliveRecorder(ka.events());
      await kr.until((e) => e.some((x) => x.type === 'renewed'), 5_000, 'a renewal before the outage');

      await h.stopServer?.();
      const stoppedAt = kr.events.length;
      await sleep(2 * ttlMs);
      await h.startServer?.();
      const during = kr.events.slice(stoppedAt);
      t.ok(
        during.some((e) => e.type === 'error'),
        'errors reported during the outage',
      );
      t.ok(during.length < 10, `errors are rate-limited (${during.length} events in ${2 * ttlMs} ms)`);
      t.notOk(
        during.some((e) => e.type === 'lost'),
        'an unreachable store is not a lost key',
      );

      const isDecision = (e: KeepAliveEvent): boolean => e.type === 'renewed' || e.type === 'lost';
      await kr.until((e) => e.slice(stoppedAt).some(isDecision), 20_000, 'renewed or lost after the restart');
      const decided = kr.events.slice(stoppedAt).find(isDecision);
      t.equal(decided?.type, outcome, `after the outage the keep-alive reports ${outcome}`);
      if (outcome === 'renewed') {
        await sleep(ttlMs + 500);
        t.match(
          await s.get(k),
          { value: 'mine', modRevision: c.revision, ttlBound: true },
          'the key is still there',
        );
        t.ok(
          kr.events.slice(stoppedAt).filter((e) => e.type === 'renewed').length >= 2,
          'and renewals continue',
        );
        t.same(
          rec.events.filter((e) => e.type !== 'resync'),
          [],
          'no delete was watched',
        );
      } else {
        t.ok(kr.ended || (await kr.done.then(() => true)), 'the events end after lost');
        t.equal(await s.get(k), undefined, 'the key is gone');
        await rec.until(hasDelete(k), 10_000, 'the delete of the expired key');
      }
    },
  );
}

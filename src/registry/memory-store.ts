/**
 * An in-process Store with etcd's semantics, for unit tests of the store's users: one global
 * revision, a bounded event history (older watches resync, as after an etcd compaction) and
 * TTLs on timers. Nothing survives the process.
 */
import { componentLogger, type Logger } from '../log/index.js';
import type { Registry } from '../metrics/index.js';
import type {
  CreateOptions,
  CreateResult,
  DeleteOptions,
  Expectation,
  KeepAlive,
  KeepAliveOptions,
  KeyValue,
  ListResult,
  Store,
  UpdateOptions,
  UpdateResult,
  WatchEvent,
  WatchOptions,
  WriteGuard,
} from './store.js';
import {
  AsyncQueue,
  trackedKeepAlive,
  StoreMetrics,
  checkGuard,
  checkKey,
  checkRevision,
  checkTtl,
  closedError,
  compareKeys,
  fencedError,
  keepAliveInterval,
} from './support.js';

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Number of past events kept for watches that start in the past. A watch from before the
   * oldest kept event starts with a `resync`. Default 10 000.
   */
  historyLimit?: number;
  /** Logger; default the `registry` component logger. */
  logger?: Logger;
  /** Prometheus registry for the weft_registry_* metrics; none by default. */
  metrics?: Registry;
}

interface Entry {
  value: string;
  modRevision: number;
  createRevision: number;
  ttlMs: number | undefined;
  /** When a TTL-bound entry expires, in ms since the epoch. */
  deadline: number | undefined;
  timer: NodeJS.Timeout | undefined;
}

interface Subscriber {
  prefix: string;
  fromRevision: number;
  queue: AsyncQueue<WatchEvent>;
}

const BACKEND = 'memory';

export class MemoryStore implements Store {
  readonly kind = BACKEND;
  readonly #data = new Map<string, Entry>();
  readonly #history: WatchEvent[] = [];
  readonly #historyLimit: number;
  readonly #subscribers = new Set<Subscriber>();
  readonly #keepAlives = new Set<KeepAlive>();
  readonly #log: Logger;
  readonly #metrics: StoreMetrics;
  #revision = 0;
  /** Revisions up to this one are no longer in the history. */
  #compacted = 0;
  #closed = false;

  constructor(opts: MemoryStoreOptions = {}) {
    this.#historyLimit = Math.max(1, opts.historyLimit ?? 10_000);
    this.#log = opts.logger ?? componentLogger('registry', { backend: BACKEND });
    this.#metrics = new StoreMetrics(BACKEND, opts.metrics);
  }

  /**
   * Another client of this store's data, as a second node would be of one etcd: its `close()`
   * ends only its own watches and keep-alives.
   */
  client(): Store {
    return new MemoryClient(this);
  }

  /** The current revision. */
  get revision(): number {
    return this.#revision;
  }

  /**
   * Forget the history up to `revision` (default: all of it), as an etcd compaction does;
   * watches that start at or before it begin with a `resync`.
   */
  compact(revision = this.#revision): void {
    this.#compacted = Math.max(this.#compacted, Math.min(revision, this.#revision));
    while (this.#history.length > 0 && (this.#history[0]?.revision ?? 0) <= this.#compacted)
      this.#history.shift();
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.#op('get', () => {
      checkKey(key);
      const e = this.#data.get(key);
      return e ? toKeyValue(key, e) : undefined;
    });
  }

  timeToLive(key: string): Promise<number | undefined> {
    return this.#op('ttl', () => {
      checkKey(key);
      const e = this.#data.get(key);
      return e?.deadline === undefined ? undefined : Math.max(0, (e.deadline - Date.now()) / 1000);
    });
  }

  list(prefix: string): Promise<ListResult> {
    return this.#op('list', () => {
      checkKey(prefix, 'prefix');
      const items: KeyValue[] = [];
      for (const [key, e] of this.#data) if (key.startsWith(prefix)) items.push(toKeyValue(key, e));
      items.sort((a, b) => compareKeys(a.key, b.key));
      return { items, revision: this.#revision };
    });
  }

  create(key: string, value: string, opts: CreateOptions = {}): Promise<CreateResult> {
    return this.#op('create', () => {
      checkKey(key);
      if (opts.ttlSeconds !== undefined) checkTtl(opts.ttlSeconds);
      checkGuard(opts.guard);
      this.#checkGuard('create', key, opts.guard);
      const current = this.#data.get(key);
      if (current) return { created: false, current: toKeyValue(key, current) };
      const revision = ++this.#revision;
      const entry: Entry = {
        value,
        modRevision: revision,
        createRevision: revision,
        ttlMs: undefined,
        deadline: undefined,
        timer: undefined,
      };
      this.#data.set(key, entry);
      this.#bind(key, entry, opts.ttlSeconds);
      this.#emit({ type: 'put', key, value, revision, ttlBound: entry.ttlMs !== undefined });
      return { created: true, revision };
    });
  }

  update(key: string, value: string, expect: Expectation, opts: UpdateOptions = {}): Promise<UpdateResult> {
    return this.#op('update', () => {
      checkKey(key);
      checkRevision(expect?.modRevision, 'expect.modRevision');
      if (opts.ttlSeconds !== undefined && opts.ttlSeconds !== null) checkTtl(opts.ttlSeconds);
      checkGuard(opts.guard);
      this.#checkGuard('update', key, opts.guard);
      const entry = this.#data.get(key);
      if (!entry || entry.modRevision !== expect.modRevision) {
        return { updated: false, current: entry ? toKeyValue(key, entry) : undefined };
      }
      const revision = ++this.#revision;
      entry.value = value;
      entry.modRevision = revision;
      if (opts.ttlSeconds !== undefined) {
        this.#unbind(entry);
        this.#bind(key, entry, opts.ttlSeconds ?? undefined);
      }
      this.#emit({ type: 'put', key, value, revision, ttlBound: entry.ttlMs !== undefined });
      return { updated: true, revision };
    });
  }

  delete(key: string, expect?: Expectation, opts: DeleteOptions = {}): Promise<boolean> {
    return this.#op('delete', () => {
      checkKey(key);
      if (expect !== undefined) checkRevision(expect.modRevision, 'expect.modRevision');
      checkGuard(opts.guard);
      this.#checkGuard('delete', key, opts.guard);
      const entry = this.#data.get(key);
      if (!entry || (expect !== undefined && entry.modRevision !== expect.modRevision)) return false;
      this.#remove(key, entry);
      return true;
    });
  }

  keepAlive(key: string, opts: KeepAliveOptions): KeepAlive {
    if (this.#closed) throw closedError(BACKEND);
    checkKey(key);
    const intervalMs = keepAliveInterval(opts);
    return trackedKeepAlive(this.#keepAlives, {
      backend: BACKEND,
      key,
      intervalMs,
      logger: this.#log,
      metrics: this.#metrics,
      renewOnce: () =>
        this.#op('keepAlive', () => {
          const entry = this.#data.get(key);
          if (!entry) return { ok: false, reason: 'key is gone (expired or deleted)' };
          if (opts.expectValue !== undefined && entry.value !== opts.expectValue) {
            return { ok: false, reason: 'key holds another value' };
          }
          if (entry.ttlMs === undefined) return { ok: false, reason: 'key is no longer TTL-bound' };
          this.#unbind(entry);
          this.#bind(key, entry, opts.ttlSeconds);
          return { ok: true, ttlSeconds: opts.ttlSeconds };
        }),
    });
  }

  async *watch(prefix: string, opts: WatchOptions): AsyncIterable<WatchEvent> {
    checkKey(prefix, 'prefix');
    checkRevision(opts?.fromRevision, 'fromRevision');
    if (this.#closed) throw closedError(BACKEND);
    const queue = new AsyncQueue<WatchEvent>();
    const sub: Subscriber = { prefix, fromRevision: opts.fromRevision, queue };
    if (opts.fromRevision <= this.#compacted) {
      this.#metrics.resync();
      queue.push({
        type: 'resync',
        revision: this.#revision,
        reason: `revision ${opts.fromRevision} is no longer in the history (oldest kept: ${this.#compacted + 1})`,
      });
      sub.fromRevision = this.#revision + 1;
    }
    for (const ev of this.#history) if (matches(sub, ev)) queue.push(ev);
    // Registered in the same tick as the replay, so no event falls between the two.
    this.#subscribers.add(sub);
    const onAbort = (): void => queue.end();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) queue.end();
    try {
      for await (const ev of queue) yield ev;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      this.#subscribers.delete(sub);
    }
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const e of this.#data.values()) this.#unbind(e);
    for (const s of this.#subscribers) s.queue.end();
    this.#subscribers.clear();
    for (const ka of [...this.#keepAlives]) void ka.close();
    return Promise.resolve();
  }

  #op<T>(op: string, fn: () => T): Promise<T> {
    return this.#metrics.request(op, async () => {
      if (this.#closed) throw closedError(BACKEND);
      return fn();
    });
  }

  /** Throws FENCED unless the guard holds; in the same tick as the write, so atomic with it. */
  #checkGuard(op: string, key: string, guard: WriteGuard | undefined): void {
    if (guard !== undefined && this.#data.get(guard.key)?.value !== guard.value)
      throw fencedError(BACKEND, op, key, guard);
  }

  #bind(key: string, entry: Entry, ttlSeconds: number | undefined): void {
    if (ttlSeconds === undefined) return;
    const ttlMs = Math.max(1, Math.round(ttlSeconds * 1000));
    entry.ttlMs = ttlMs;
    entry.deadline = Date.now() + ttlMs;
    entry.timer = setTimeout(() => {
      if (this.#data.get(key) === entry) this.#remove(key, entry);
    }, ttlMs);
    entry.timer.unref();
  }

  #unbind(entry: Entry): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.ttlMs = undefined;
    entry.deadline = undefined;
  }

  #remove(key: string, entry: Entry): void {
    this.#unbind(entry);
    this.#data.delete(key);
    this.#emit({ type: 'delete', key, revision: ++this.#revision });
  }

  #emit(ev: WatchEvent): void {
    this.#history.push(ev);
    if (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.shift();
      if (dropped) this.#compacted = dropped.revision;
    }
    for (const sub of this.#subscribers) if (matches(sub, ev)) sub.queue.push(ev);
  }
}

function matches(sub: Subscriber, ev: WatchEvent): boolean {
  return ev.type !== 'resync' && ev.revision >= sub.fromRevision && ev.key.startsWith(sub.prefix);
}

function toKeyValue(key: string, e: Entry): KeyValue {
  return {
    key,
    value: e.value,
    modRevision: e.modRevision,
    createRevision: e.createRevision,
    ttlBound: e.ttlMs !== undefined,
  };
}

/** A view of a {@link MemoryStore} with a lifetime of its own. */
class MemoryClient implements Store {
  readonly kind = BACKEND;
  readonly #store: MemoryStore;
  readonly #closing = new AbortController();
  readonly #keepAlives = new Set<KeepAlive>();

  constructor(store: MemoryStore) {
    this.#store = store;
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.#live(() => this.#store.get(key));
  }

  timeToLive(key: string): Promise<number | undefined> {
    return this.#live(() => this.#store.timeToLive(key));
  }

  list(prefix: string): Promise<ListResult> {
    return this.#live(() => this.#store.list(prefix));
  }

  create(key: string, value: string, opts?: CreateOptions): Promise<CreateResult> {
    return this.#live(() => this.#store.create(key, value, opts));
  }

  update(key: string, value: string, expect: Expectation, opts?: UpdateOptions): Promise<UpdateResult> {
    return this.#live(() => this.#store.update(key, value, expect, opts));
  }

  delete(key: string, expect?: Expectation, opts?: DeleteOptions): Promise<boolean> {
    return this.#live(() => this.#store.delete(key, expect, opts));
  }

  keepAlive(key: string, opts: KeepAliveOptions): KeepAlive {
    if (this.#closing.signal.aborted) throw closedError(BACKEND);
    const ka = this.#store.keepAlive(key, opts);
    this.#keepAlives.add(ka);
    return ka;
  }

  watch(prefix: string, opts: WatchOptions): AsyncIterable<WatchEvent> {
    if (this.#closing.signal.aborted) throw closedError(BACKEND);
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.#closing.signal]) : this.#closing.signal;
    return this.#store.watch(prefix, { ...opts, signal });
  }

  async close(): Promise<void> {
    this.#closing.abort();
    for (const ka of this.#keepAlives) await ka.close();
    this.#keepAlives.clear();
  }

  #live<T>(fn: () => Promise<T>): Promise<T> {
    return this.#closing.signal.aborted ? Promise.reject(closedError(BACKEND)) : fn();
  }
}

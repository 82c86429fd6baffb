/**
 * The Store over a standalone Redis (through `ioredis`), with etcd's semantics built from Lua
 * scripts, each of which is atomic:
 *
 * - `<ns>rev`: the global revision (INCR per change);
 * - `<ns>kv:<key>`: a hash per key: v (value), m (modRevision), c (createRevision), b (1 when
 *   TTL-bound); a TTL-bound hash also carries a Redis expiry (PEXPIREAT);
 * - `<ns>idx`: a sorted set of all keys, all with score 0, listed by prefix with ZRANGEBYLEX;
 * - `<ns>ttl`: a sorted set of the TTL deadlines (ms), which the reaper scans;
 * - `<ns>log`: a Stream with one entry per revision, id `<revision>-0`, trimmed with MAXLEN ~.
 *
 * Redis expires keys silently, so the reaper turns every passed deadline into a delete (one
 * revision and one stream entry each). Every script reaps first, so no operation sees a key
 * whose deadline has passed; a timer (and, when Redis allows it, keyspace `expired`
 * notifications as a hint) reaps when nobody writes. Watches read the stream with XREAD BLOCK
 * from the last revision delivered, which survives reconnects and restarts (the server runs
 * with an append-only file); a trimmed stretch becomes a `resync`.
 *
 * Registry keys start with `/`; the namespace must not, so the two cannot collide.
 * Scripts touch keys they compute, which Redis Cluster does not allow: standalone Redis only.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { Backoff, sleep } from '../backoff/index.js';
import { monotonicMs } from '../clock/index.js';
import { ErrorCodes, WeftError, invalid, messageOf } from '../errors/index.js';
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
  trackedKeepAlive,
  StoreMetrics,
  checkGuard,
  checkKey,
  checkRevision,
  checkTtl,
  closedError,
  fencedError,
  keepAliveInterval,
  unavailable,
  type RenewOutcome,
} from './support.js';

/** Options of {@link RedisStore.open}. */
export interface RedisStoreOptions {
  /** `redis://[[user]:password@]host:port/db` or `rediss://…` for TLS. Default `redis://127.0.0.1:6379/0`. */
  url?: string;
  /** Prefix of every key the store keeps. Must not start with `/`. Default `weft:`. */
  namespace?: string;
  /**
   * Length the change log is trimmed to (approximately: `XADD … MAXLEN ~`). A watch that falls
   * further behind resyncs. Default 100 000.
   */
  streamMaxLength?: number;
  /** How long {@link RedisStore.open} waits for the server, in ms. Default 5000. */
  dialTimeoutMs?: number;
  /** Deadline of each request, in ms. Default 5000. */
  requestTimeoutMs?: number;
  /** How often expired keys are looked for when nothing else does it, in ms. Default 500. */
  reapIntervalMs?: number;
  /**
   * Turn on keyspace `expired` notifications (CONFIG SET notify-keyspace-events, adding `Ex`
   * to what is set) and reap as soon as one arrives. They are only hints: the timer reaps
   * anyway. Default true; a server that refuses CONFIG is fine.
   */
  expiryNotifications?: boolean;
  /** Logger; default the `registry` component logger. */
  logger?: Logger;
  /** Prometheus registry for the weft_registry_* metrics; none by default. */
  metrics?: Registry;
}

const BACKEND = 'redis';
/** How long one XREAD blocks; also how often a watch notices its end without a signal. */
const WATCH_BLOCK_MS = 2_000;
const WATCH_BATCH = 256;
/** A watch that loses its connection warns at most this often (its recovery is logged at info). */
const WATCH_WARN_INTERVAL_MS = 30_000;

// KEYS: rev, idx, ttl, log. ARGV[1]: prefix of the per-key hashes, ARGV[2]: MAXLEN.
const LUA_HEADER = `
local REV, IDX, TTL, LOG = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local KVP, MAXLEN = ARGV[1], ARGV[2]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function append(...)
  local rev = redis.call('INCR', REV)
  redis.call('XADD', LOG, 'MAXLEN', '~', MAXLEN, rev .. '-0', ...)
  return rev
end
local function reap(now, limit)
  local due = redis.call('ZRANGEBYSCORE', TTL, '-inf', now, 'LIMIT', 0, limit)
  for _, k in ipairs(due) do
    redis.call('ZREM', TTL, k)
    redis.call('ZREM', IDX, k)
    redis.call('DEL', KVP .. k)
    append('t', 'd', 'k', k)
  end
  return #due
end
-- A write guard (key gk must hold value gv), checked in the script that writes; '' is no guard
-- (registry keys start with "/"). HGET of an absent hash is false, never equal to gv.
local function fenced(gk, gv)
  if gk == '' then return false end
  return redis.call('HGET', KVP .. gk, 'v') ~= gv
end
`;

const SCRIPTS = {
  // ARGV[3]: key. Returns {v, m, c, b} (nils when absent).
  weftGet: `
reap(now_ms(), 64)
return redis.call('HMGET', KVP .. ARGV[3], 'v', 'm', 'c', 'b')
`,
  // ARGV[3]: prefix. Returns {revision, key, v, m, c, b, key, ...}.
  weftList: `
reap(now_ms(), 1024)
local keys = redis.call('ZRANGEBYLEX', IDX, '[' .. ARGV[3], '(' .. ARGV[3] .. '\\255')
local out = { tonumber(redis.call('GET', REV) or '0') }
for _, k in ipairs(keys) do
  local h = redis.call('HMGET', KVP .. k, 'v', 'm', 'c', 'b')
  if h[1] then
    out[#out + 1] = k
    out[#out + 1] = h[1]
    out[#out + 1] = h[2]
    out[#out + 1] = h[3]
    out[#out + 1] = h[4]
  end
end
return out
`,
  // ARGV[3]: key, [4]: value, [5]: TTL in ms (0: none), [6], [7]: guard key and value.
  // Returns {1, revision}, {0, v, m, c, b} or {-1} (fenced).
  weftCreate: `
local now = now_ms()
reap(now, 64)
if fenced(ARGV[6], ARGV[7]) then return { -1 } end
local key = ARGV[3]
local h = KVP .. key
local cur = redis.call('HMGET', h, 'v', 'm', 'c', 'b')
if cur[1] then return { 0, cur[1], cur[2], cur[3], cur[4] } end
local ttl = tonumber(ARGV[5])
local bound = '0'
if ttl > 0 then bound = '1' end
local rev = append('t', 'p', 'k', key, 'v', ARGV[4], 'b', bound)
redis.call('HSET', h, 'v', ARGV[4], 'm', rev, 'c', rev, 'b', bound)
redis.call('ZADD', IDX, 0, key)
if ttl > 0 then
  redis.call('PEXPIREAT', h, now + ttl)
  redis.call('ZADD', TTL, now + ttl, key)
end
return { 1, rev }
`,
  // ARGV[3]: key, [4]: value, [5]: expected modRevision, [6]: keep|set|unbind, [7]: TTL in ms,
  // [8], [9]: guard key and value. Returns {1, revision}, {0} (absent), {0, v, m, c, b} or {-1}
  // (fenced). HSET keeps the hash's expiry.
  weftUpdate: `
local now = now_ms()
reap(now, 64)
if fenced(ARGV[8], ARGV[9]) then return { -1 } end
local key = ARGV[3]
local h = KVP .. key
local cur = redis.call('HMGET', h, 'v', 'm', 'c', 'b')
if not cur[1] then return { 0 } end
if cur[2] ~= ARGV[5] then return { 0, cur[1], cur[2], cur[3], cur[4] } end
local mode = ARGV[6]
local bound = cur[4]
if mode == 'set' then bound = '1' elseif mode == 'unbind' then bound = '0' end
local rev = append('t', 'p', 'k', key, 'v', ARGV[4], 'b', bound)
redis.call('HSET', h, 'v', ARGV[4], 'm', rev, 'b', bound)
if mode == 'set' then
  local d = now + tonumber(ARGV[7])
  redis.call('PEXPIREAT', h, d)
  redis.call('ZADD', TTL, d, key)
elseif mode == 'unbind' then
  redis.call('PERSIST', h)
  redis.call('ZREM', TTL, key)
end
return { 1, rev }
`,
  // ARGV[3]: key, [4]: expected modRevision or '', [5], [6]: guard key and value. Returns 1 when
  // deleted, 0 when not, -1 when fenced.
  weftDelete: `
reap(now_ms(), 64)
if fenced(ARGV[5], ARGV[6]) then return -1 end
local key = ARGV[3]
local h = KVP .. key
local m = redis.call('HGET', h, 'm')
if not m then return 0 end
if ARGV[4] ~= '' and m ~= ARGV[4] then return 0 end
redis.call('DEL', h)
redis.call('ZREM', IDX, key)
redis.call('ZREM', TTL, key)
append('t', 'd', 'k', key)
return 1
`,
  // ARGV[3]: key, [4]: TTL in ms, [5]: '1' to compare the value with [6].
  weftKeepAlive: `
local now = now_ms()
reap(now, 64)
local key = ARGV[3]
local h = KVP .. key
local cur = redis.call('HMGET', h, 'v', 'b')
if not cur[1] then return 'gone' end
if ARGV[5] == '1' and cur[1] ~= ARGV[6] then return 'replaced' end
if cur[2] ~= '1' then return 'unbound' end
local d = now + tonumber(ARGV[4])
redis.call('PEXPIREAT', h, d)
redis.call('ZADD', TTL, d, key)
return 'ok'
`,
  // ARGV[3]: most keys to reap. Returns how many were reaped.
  weftReap: `
return reap(now_ms(), tonumber(ARGV[3]))
`,
} as const;

type ScriptName = keyof typeof SCRIPTS;
type Scripted = Redis & Record<ScriptName, (...args: (string | number)[]) => Promise<unknown>>;
type Fields = (string | null)[];
type XReadReply = [stream: string, entries: [id: string, fields: string[]][]][] | null;

const LOST_REASONS: Record<string, string> = {
  gone: 'key is gone (expired or deleted)',
  replaced: 'key holds another value',
  unbound: 'key is no longer TTL-bound',
};

function toKeyValue(key: string, f: Fields, offset = 0): KeyValue | undefined {
  const [v, m, c, b] = [f[offset], f[offset + 1], f[offset + 2], f[offset + 3]];
  if (v === null || v === undefined) return undefined;
  return { key, value: v, modRevision: Number(m), createRevision: Number(c), ttlBound: b === '1' };
}

export class RedisStore implements Store {
  readonly kind = BACKEND;
  readonly #opts: RedisStoreOptions;
  readonly #url: string;
  readonly #log: Logger;
  readonly #metrics: StoreMetrics;
  readonly #keys: { rev: string; idx: string; ttl: string; log: string; kv: string };
  readonly #maxLen: number;
  readonly #cmd: Scripted;
  #sub: Redis | undefined;
  readonly #watchConns = new Set<Redis>();
  readonly #keepAlives = new Set<KeepAlive>();
  readonly #inflight = new Set<(err: Error) => void>();
  #reapTimer: NodeJS.Timeout | undefined;
  #reaping = false;
  #reapAgain = false;
  #closed = false;

  private constructor(opts: RedisStoreOptions) {
    const ns = opts.namespace ?? 'weft:';
    if (!ns || ns.startsWith('/'))
      throw invalid('RedisStoreOptions', 'namespace', 'must be non-empty and not start with "/"');
    this.#opts = opts;
    this.#url = opts.url ?? 'redis://127.0.0.1:6379/0';
    this.#log = opts.logger ?? componentLogger('registry', { backend: BACKEND });
    this.#metrics = new StoreMetrics(BACKEND, opts.metrics);
    this.#keys = { rev: `${ns}rev`, idx: `${ns}idx`, ttl: `${ns}ttl`, log: `${ns}log`, kv: `${ns}kv:` };
    this.#maxLen = Math.max(1, Math.floor(opts.streamMaxLength ?? 100_000));
    this.#cmd = this.#connection('main', {
      // One attempt: a script re-sent after a reconnect may have run already, and a create
      // or a CAS run twice reports its own first run as a lost race. Callers retry.
      maxRetriesPerRequest: 1,
      autoResendUnfulfilledCommands: false,
    }) as Scripted;
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      this.#cmd.defineCommand(name, { numberOfKeys: 4, lua: LUA_HEADER + lua });
    }
    // Without re-sending, ioredis neither re-sends nor rejects what was in flight when the
    // connection dropped: it would wait for commandTimeout. Fail those requests now.
    this.#cmd.on('close', () => {
      const err = new Error('connection to redis lost; the outcome of the request is unknown');
      for (const fail of this.#inflight) fail(err);
      this.#inflight.clear();
    });
  }

  /** Connects, waiting up to `dialTimeoutMs`; rejects with REGISTRY_UNAVAILABLE otherwise. */
  static async open(opts: RedisStoreOptions = {}): Promise<RedisStore> {
    const store = new RedisStore(opts);
    const cmd = store.#cmd;
    const timeoutMs = opts.dialTimeoutMs ?? 5_000;
    let lastError: unknown;
    const onError = (err: unknown): unknown => (lastError = err);
    cmd.on('error', onError);
    // connect() gives up at the first refused connection; ioredis goes on reconnecting, so
    // wait for it to be ready instead, up to the dial timeout.
    let timer: NodeJS.Timeout | undefined;
    const ready = await Promise.race([
      new Promise<boolean>((resolve) => cmd.once('ready', () => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
      cmd.connect().then(
        () => true,
        () => new Promise<boolean>(() => undefined),
      ),
    ]);
    clearTimeout(timer);
    cmd.off('error', onError);
    if (!ready) {
      await store.close();
      throw unavailable(
        BACKEND,
        `connect to ${store.#url}`,
        lastError ?? new Error(`no answer in ${timeoutMs} ms`),
      );
    }
    store.#startReaper();
    return store;
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.#op('get', async () => {
      checkKey(key);
      return toKeyValue(key, (await this.#script('weftGet', key)) as Fields);
    });
  }

  timeToLive(key: string): Promise<number | undefined> {
    return this.#op('ttl', async () => {
      checkKey(key);
      // The deadline the store keeps (ms of the Redis clock), against the Redis clock.
      const res = await this.#cmd.multi().zscore(this.#keys.ttl, key).time().exec();
      const deadline = res?.[0]?.[1];
      const time = res?.[1]?.[1] as [string, string] | undefined;
      if (deadline === null || deadline === undefined || !time) return undefined;
      const nowMs = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
      return Math.max(0, (Number(deadline) - nowMs) / 1000);
    });
  }

  list(prefix: string): Promise<ListResult> {
    return this.#op('list', async () => {
      checkKey(prefix, 'prefix');
      const out = (await this.#script('weftList', prefix)) as [number, ...Fields];
      const items: KeyValue[] = [];
      for (let i = 1; i + 4 < out.length; i += 5) {
        const kv = toKeyValue(String(out[i]), out as Fields, i + 1);
        if (kv) items.push(kv);
      }
      return { items, revision: Number(out[0]) };
    });
  }

  create(key: string, value: string, opts: CreateOptions = {}): Promise<CreateResult> {
    return this.#op('create', async () => {
      checkKey(key);
      if (opts.ttlSeconds !== undefined) checkTtl(opts.ttlSeconds);
      const ttlMs = opts.ttlSeconds === undefined ? 0 : ttlToMs(opts.ttlSeconds);
      const guard = opts.guard;
      checkGuard(guard);
      const r = (await this.#script('weftCreate', key, value, ttlMs, ...guardArgs(guard))) as [
        number,
        ...Fields,
      ];
      if (r[0] === -1 && guard) throw fencedError(BACKEND, 'create', key, guard);
      if (r[0] === 1) return { created: true, revision: Number(r[1]) };
      const current = toKeyValue(key, r as Fields, 1);
      if (!current)
        throw new WeftError(ErrorCodes.REGISTRY_UNAVAILABLE, `redis registry: create ${key}: bad reply`);
      return { created: false, current };
    });
  }

  update(key: string, value: string, expect: Expectation, opts: UpdateOptions = {}): Promise<UpdateResult> {
    return this.#op('update', async () => {
      checkKey(key);
      checkRevision(expect?.modRevision, 'expect.modRevision');
      const ttl = opts.ttlSeconds;
      if (ttl !== undefined && ttl !== null) checkTtl(ttl);
      const mode = ttl === undefined ? 'keep' : ttl === null ? 'unbind' : 'set';
      const ttlMs = typeof ttl === 'number' ? ttlToMs(ttl) : 0;
      const guard = opts.guard;
      checkGuard(guard);
      const r = (await this.#script(
        'weftUpdate',
        key,
        value,
        String(expect.modRevision),
        mode,
        ttlMs,
        ...guardArgs(guard),
      )) as [number, ...Fields];
      if (r[0] === -1 && guard) throw fencedError(BACKEND, 'update', key, guard);
      if (r[0] === 1) return { updated: true, revision: Number(r[1]) };
      return { updated: false, current: toKeyValue(key, r as Fields, 1) };
    });
  }

  delete(key: string, expect?: Expectation, opts: DeleteOptions = {}): Promise<boolean> {
    return this.#op('delete', async () => {
      checkKey(key);
      if (expect !== undefined) checkRevision(expect.modRevision, 'expect.modRevision');
      const guard = opts.guard;
      checkGuard(guard);
      const r = await this.#script(
        'weftDelete',
        key,
        expect === undefined ? '' : String(expect.modRevision),
        ...guardArgs(guard),
      );
      if (r === -1 && guard) throw fencedError(BACKEND, 'delete', key, guard);
      return r === 1;
    });
  }

  /** Refreshes the key's expiry (PEXPIREAT and its deadline) by script, guarded by its value. */
  keepAlive(key: string, opts: KeepAliveOptions): KeepAlive {
    if (this.#closed) throw closedError(BACKEND);
    checkKey(key);
    const intervalMs = keepAliveInterval(opts);
    const ttlMs = ttlToMs(opts.ttlSeconds);
    const hasExpect = opts.expectValue !== undefined ? '1' : '0';
    const renewOnce = (): Promise<RenewOutcome> =>
      this.#op('keepAlive', async () => {
        const r = String(await this.#script('weftKeepAlive', key, ttlMs, hasExpect, opts.expectValue ?? ''));
        if (r === 'ok') return { ok: true, ttlSeconds: opts.ttlSeconds };
        return { ok: false, reason: LOST_REASONS[r] ?? r };
      });
    return trackedKeepAlive(this.#keepAlives, {
      backend: BACKEND,
      key,
      intervalMs,
      renewOnce,
      logger: this.#log,
      metrics: this.#metrics,
    });
  }

  async *watch(prefix: string, opts: WatchOptions): AsyncIterable<WatchEvent> {
    checkKey(prefix, 'prefix');
    checkRevision(opts?.fromRevision, 'fromRevision');
    if (this.#closed) throw closedError(BACKEND);
    // A connection of its own: XREAD BLOCK holds it. Commands wait for a reconnect rather
    // than fail (reads are safe to repeat), and a blocked read is given up client-side after
    // its BLOCK time, so a dead connection cannot hold the watch forever.
    const conn = this.#connection('watch', {
      commandTimeout: undefined,
      maxRetriesPerRequest: null,
      blockingTimeout: WATCH_BLOCK_MS,
    });
    this.#watchConns.add(conn);
    let stopped = false;
    const stop = (): void => {
      stopped = true;
      conn.disconnect();
    };
    opts.signal?.addEventListener('abort', stop, { once: true });
    if (opts.signal?.aborted) stop();
    // Whether the watch can still resume is checked at the start, after every reconnect and
    // whenever a read comes back empty: a trimmed log is otherwise only noticed at the next
    // write, and a counter below what was delivered means the data was lost or reset.
    let verify = true;
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    let last = opts.fromRevision - 1;
    // The highest revision known to have existed: the counter going below it is a reset,
    // whereas a watch may legitimately start beyond the current revision.
    let confirmed = 0;
    // While the server is away, a read waits in ioredis's offline queue rather than fail, so the
    // connection's own events tell of an outage: a warning once per outage (and not more often
    // than WATCH_WARN_INTERVAL_MS when the connection flaps), the rest at debug.
    let failingSince: number | undefined;
    let warned = false;
    let lastWarnAt = Number.NEGATIVE_INFINITY;
    const failing = (why: string): void => {
      if (stopped || this.#closed) return;
      const now = monotonicMs();
      if (failingSince === undefined && now - lastWarnAt >= WATCH_WARN_INTERVAL_MS) {
        lastWarnAt = now;
        warned = true;
        this.#log.warn({ err: why, prefix }, 'redis watch lost its connection; reconnecting');
      } else {
        this.#log.debug({ err: why, prefix }, 'redis watch cannot read; retrying');
      }
      failingSince ??= now;
    };
    const recovered = (): void => {
      if (failingSince === undefined) return;
      const fields = { prefix, downMs: Math.round(monotonicMs() - failingSince), next: last + 1 };
      if (warned) this.#log.info(fields, 'redis watch reconnected; resuming');
      else this.#log.debug(fields, 'redis watch reconnected; resuming');
      failingSince = undefined;
      warned = false;
    };
    conn.on('close', () => failing('connection closed'));
    conn.on('ready', () => {
      verify = true;
      recovered();
    });
    try {
      while (!stopped && !this.#closed) {
        let entries: [string, string[]][];
        try {
          if (verify) {
            verify = false;
            const { gap, current } = await this.#checkResume(conn, last, confirmed);
            recovered();
            confirmed = Math.max(confirmed, Math.min(last, current));
            if (gap) {
              this.#metrics.resync();
              this.#log.info({ prefix, from: last + 1, revision: gap.revision }, 'redis watch resyncs');
              yield gap;
              last = gap.revision;
              confirmed = gap.revision;
            }
          }
          const reply = (await conn.xread(
            'COUNT',
            WATCH_BATCH,
            'BLOCK',
            WATCH_BLOCK_MS,
            'STREAMS',
            this.#keys.log,
            `${last}-0`,
          )) as unknown as XReadReply;
          entries = reply?.[0]?.[1] ?? [];
          if (entries.length === 0) verify = true;
          backoff.reset();
          // Not on null: ioredis also answers null when it gives up on a read client-side.
          if (reply !== null) recovered();
        } catch (err) {
          if (stopped || this.#closed) break;
          verify = true;
          failing(messageOf(err));
          await sleep(backoff.next(), opts.signal);
          continue;
        }
        for (const [id, fields] of entries) {
          const revision = Number(id.slice(0, id.indexOf('-')));
          if (revision <= last) continue;
          if (revision > last + 1) {
            this.#metrics.resync();
            this.#log.info({ prefix, from: last + 1, revision }, 'redis watch resyncs: change log trimmed');
            yield {
              type: 'resync',
              revision: revision - 1,
              reason: `revisions ${last + 1}..${revision - 1} were trimmed from the change log`,
            };
          }
          last = revision;
          confirmed = revision;
          const ev = parseEntry(fields, revision);
          if (ev && ev.key.startsWith(prefix)) yield ev;
        }
      }
    } finally {
      stopped = true;
      opts.signal?.removeEventListener('abort', stop);
      this.#watchConns.delete(conn);
      conn.disconnect();
    }
  }

  /** The current revision, and a resync event when revision `last + 1` can no longer be read. */
  async #checkResume(
    conn: Redis,
    last: number,
    confirmed: number,
  ): Promise<{ current: number; gap?: Extract<WatchEvent, { type: 'resync' }> }> {
    const res = await conn.multi().get(this.#keys.rev).xrange(this.#keys.log, '-', '+', 'COUNT', 1).exec();
    if (!res) throw new Error('transaction aborted');
    for (const [err] of res) if (err) throw err;
    const current = Number(res[0]?.[1] ?? 0);
    if (current < confirmed) {
      const reason = `store revision went back from ${confirmed} to ${current} (data lost or reset)`;
      return { current, gap: { type: 'resync', revision: current, reason } };
    }
    if (current <= last) return { current };
    const head = (res[1]?.[1] as [string, string[]][] | undefined)?.[0];
    const oldest = head ? Number(head[0].slice(0, head[0].indexOf('-'))) : current + 1;
    if (oldest <= last + 1) return { current };
    const reason = `revisions ${last + 1}..${oldest - 1} were trimmed from the change log`;
    return { current, gap: { type: 'resync', revision: oldest - 1, reason } };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#reapTimer);
    for (const ka of [...this.#keepAlives]) await ka.close();
    for (const c of this.#watchConns) c.disconnect();
    this.#sub?.disconnect();
    this.#cmd.disconnect();
  }

  async #op<T>(op: string, fn: () => Promise<T>): Promise<T> {
    return this.#metrics.request(op, async () => {
      if (this.#closed) throw closedError(BACKEND);
      try {
        return await fn();
      } catch (err) {
        throw unavailable(BACKEND, op, err);
      }
    });
  }

  #script(name: ScriptName, ...args: (string | number)[]): Promise<unknown> {
    const k = this.#keys;
    return new Promise((resolve, reject) => {
      this.#inflight.add(reject);
      const run = this.#cmd[name];
      run
        .call(this.#cmd, k.rev, k.idx, k.ttl, k.log, k.kv, this.#maxLen, ...args)
        .then(resolve, reject)
        .finally(() => this.#inflight.delete(reject));
    });
  }

  #connection(role: string, overrides: RedisOptions): Redis {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    const conn = new Redis(this.#url, {
      // RESP2: the reply shapes of scripts and XREAD stay those the parsing here expects.
      protocol: 2,
      lazyConnect: true,
      connectionName: `weft-registry-${role}`,
      connectTimeout: this.#opts.dialTimeoutMs ?? 5_000,
      commandTimeout: this.#opts.requestTimeoutMs ?? 5_000,
      retryStrategy: () => backoff.next(),
      ...overrides,
    });
    conn.on('ready', () => backoff.reset());
    // Without a listener ioredis prints every connection error; reconnecting is its job.
    conn.on('error', (err: Error) => this.#log.debug({ role, err: err.message }, 'redis connection error'));
    return conn;
  }

  #startReaper(): void {
    this.#reapTimer = setInterval(() => this.#reapSoon(), this.#opts.reapIntervalMs ?? 500);
    this.#reapTimer.unref();
    if (this.#opts.expiryNotifications === false) return;
    const db = this.#cmd.options.db ?? 0;
    const sub = this.#connection('events', { commandTimeout: undefined, maxRetriesPerRequest: null });
    this.#sub = sub;
    sub.on('message', (_channel: string, key: string) => {
      if (key.startsWith(this.#keys.kv)) this.#reapSoon();
    });
    sub.subscribe(`__keyevent@${db}__:expired`).catch((err: unknown) => {
      this.#log.debug({ err: messageOf(err) }, 'no keyspace notifications; reaping on the timer only');
    });
    // A restarted server has forgotten a CONFIG SET: enable again on every connect.
    this.#cmd.on('ready', () => void this.#enableNotifications());
    void this.#enableNotifications();
  }

  async #enableNotifications(): Promise<void> {
    try {
      const reply = (await this.#cmd.config('GET', 'notify-keyspace-events')) as string[];
      const flags = reply[1] ?? '';
      const hasEvents = flags.includes('E');
      const hasExpired = flags.includes('x') || flags.includes('A');
      if (hasEvents && hasExpired) return;
      await this.#cmd.config(
        'SET',
        'notify-keyspace-events',
        `${flags}${hasEvents ? '' : 'E'}${hasExpired ? '' : 'x'}`,
      );
    } catch (err) {
      this.#log.debug(
        { err: messageOf(err) },
        'could not enable keyspace notifications; reaping on the timer only',
      );
    }
  }

  #reapSoon(): void {
    if (this.#closed) return;
    if (this.#reaping) {
      this.#reapAgain = true;
      return;
    }
    this.#reaping = true;
    this.#reapAgain = false;
    this.#script('weftReap', 256)
      .then((n) => {
        // A full batch means more may be due.
        if (Number(n) >= 256) this.#reapAgain = true;
      })
      .catch((err: unknown) => this.#log.debug({ err: messageOf(err) }, 'reap failed'))
      .finally(() => {
        this.#reaping = false;
        if (this.#reapAgain) this.#reapSoon();
      });
  }
}

/** The guard's script arguments; two empty strings for none. */
function guardArgs(guard: WriteGuard | undefined): [string, string] {
  return guard ? [guard.key, guard.value] : ['', ''];
}

function ttlToMs(ttlSeconds: number): number {
  return Math.max(1, Math.round(ttlSeconds * 1000));
}

function parseEntry(fields: string[], revision: number): Exclude<WatchEvent, { type: 'resync' }> | undefined {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
  if (f.k === undefined) return undefined;
  if (f.t === 'd') return { type: 'delete', key: f.k, revision };
  if (f.t === 'p') return { type: 'put', key: f.k, value: f.v ?? '', revision, ttlBound: f.b === '1' };
  return undefined;
}

/**
 * The Store over etcd v3 (through the `etcd3` client), in flannel's layout: a TTL-bound key is
 * attached to its own etcd lease, created with `grant; txn if create_revision(key) == 0 then
 * put(key, value, lease)`.
 */
import { readFileSync } from 'node:fs';
import {
  Etcd3,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IResponseOp,
  type Watcher,
} from 'etcd3';
import { Backoff, sleep } from '../backoff/index.js';
import { monotonicMs } from '../clock/index.js';
import { ErrorCodes, WeftError, messageOf } from '../errors/index.js';
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
  fencedError,
  keepAliveInterval,
  unavailable,
  type RenewOutcome,
} from './support.js';

/** TLS material for etcd, as files (flannel's `--etcd-cafile/-certfile/-keyfile`). */
export interface EtcdTlsOptions {
  /** CA bundle that signed the server certificate; the system roots when absent. */
  caFile?: string;
  /** Client certificate (PEM), for client-certificate authentication. */
  certFile?: string;
  /** Key of the client certificate (PEM). */
  keyFile?: string;
}

/** Options of {@link EtcdStore.open}. */
export interface EtcdStoreOptions {
  /** Client URLs of the members, e.g. `http://127.0.0.1:2379`. Default `http://127.0.0.1:2379`. */
  endpoints?: string[];
  /** TLS files; the endpoints must then be `https://` URLs. */
  tls?: EtcdTlsOptions;
  /** etcd user for password authentication. */
  username?: string;
  /** Password of {@link EtcdStoreOptions.username}. */
  password?: string;
  /** How long {@link EtcdStore.open} waits for a first answer from the cluster, in ms. Default 5000. */
  dialTimeoutMs?: number;
  /** Deadline of each request, in ms. Default 5000. */
  requestTimeoutMs?: number;
  /** Logger; default the `registry` component logger. */
  logger?: Logger;
  /** Prometheus registry for the weft_registry_* metrics; none by default. */
  metrics?: Registry;
}

const BACKEND = 'etcd';

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type Policy = NonNullable<FaultHandling['global']>;
type WatchBackoff = NonNullable<FaultHandling['watchBackoff']>;

type Call<T> = (ctx: { signal: AbortSignal }) => PromiseLike<T> | T;

/** A policy with etcd3's shape around an `execute`. */
function policy(execute: <T>(fn: Call<T>, signal: AbortSignal) => Promise<T>): Policy {
  return {
    onSuccess: () => ({ dispose: () => undefined }),
    onFailure: () => ({ dispose: () => undefined }),
    execute: <T>(fn: Call<T>, signal?: AbortSignal): Promise<T> =>
      Promise.resolve().then(() => execute(fn, signal ?? new AbortController().signal)),
  } as unknown as Policy;
}

/** How long a member whose connection failed is passed over while another one is reachable. */
const HOST_DOWN_MS = 2_000;

/** Thrown instead of calling a member that is passed over: the request was not sent. */
class HostSkipped extends Error {
  constructor(host: string) {
    super(`etcd member ${host} was unreachable moments ago; trying another`);
    this.name = 'HostSkipped';
  }
}

/**
 * The call failed before it was sent: grpc had no connection to the member (or the member was
 * passed over). Sending it to another member cannot apply it twice.
 */
const notSent = (err: unknown): boolean =>
  err instanceof HostSkipped ||
  (err instanceof GRPCUnavailableError && /No connection established/.test(err.message));

/** A failure of the member's connection, as opposed to an answer of a live member. */
const hostFailure = (err: unknown): boolean =>
  (err instanceof GRPCUnavailableError && !/etcdserver:/.test(err.message)) ||
  err instanceof GRPCDeadlineExceededError;

/**
 * Which members failed recently. etcd3 sends each request to a member picked at random and,
 * without a circuit breaker (see {@link EtcdStore}), would keep picking a dead member: with
 * one of three down, a third of all requests would fail. A member whose connection just failed
 * is passed over for {@link HOST_DOWN_MS} while another one is not known to be down; a
 * request that could not be sent is sent to the next member.
 */
class HostHealth {
  readonly #downUntil = new Map<string, number>();
  readonly #hosts: string[];

  constructor(hosts: string[]) {
    this.#hosts = hosts;
  }

  /** Tries of one request: every member once, when the earlier ones could not be reached. */
  get attempts(): number {
    return this.#hosts.length;
  }

  /**
   * etcd3's per-member policy: passes the member over (without sending) while it is known to
   * be down and another is not; records connection failures, also of streams (etcd3 reports
   * those through the same policy).
   */
  hostPolicy(host: string): Policy {
    return policy(async (fn, signal) => {
      if (this.#skip(host)) throw new HostSkipped(host);
      try {
        return await fn({ signal });
      } catch (err) {
        if (hostFailure(err)) this.#downUntil.set(host, monotonicMs() + HOST_DOWN_MS);
        throw err;
      }
    });
  }

  /** etcd3's per-request policy: one try, and more on other members only for what was not sent. */
  requestPolicy(): Policy {
    return policy(async (fn, signal) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await fn({ signal });
        } catch (err) {
          if (attempt >= this.attempts || !notSent(err) || signal.aborted) throw err;
        }
      }
    });
  }

  #skip(host: string): boolean {
    const now = monotonicMs();
    if ((this.#downUntil.get(host) ?? 0) <= now) return false;
    return this.#hosts.some((h) => h !== host && (this.#downUntil.get(h) ?? 0) <= now);
  }
}

/** etcd3's watch reconnect delays, from weft's backoff (its default grows to 30 s). */
function watchBackoff(attempt = 0): WatchBackoff {
  const b = new Backoff({ initialMs: 100, maxMs: 2_000 });
  let duration = 0;
  for (let i = 0; i < Math.min(attempt, 30); i++) duration = b.next();
  return { duration, next: () => watchBackoff(attempt + 1) } as WatchBackoff;
}

/** The exclusive end of the key range holding every key that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] ?? 0xff) < 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function toKeyValue(kv: IKeyValue): KeyValue {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    modRevision: Number(kv.mod_revision),
    createRevision: Number(kv.create_revision),
    ttlBound: kv.lease !== '0' && kv.lease !== '',
  };
}

/** The compare of a guard: etcd fails a value compare on an absent key, as the guard must. */
function guardCompare(guard: WriteGuard): ICompare {
  return { key: Buffer.from(guard.key), target: 'Value', result: 'Equal', value: Buffer.from(guard.value) };
}

/** Whether a failed txn's read of the guard key (taken in the same txn) still held the guard. */
function guardHeld(guard: WriteGuard, read: IResponseOp | undefined): boolean {
  const kv = read?.response_range?.kvs[0];
  return kv !== undefined && kv.value.toString('utf8') === guard.value;
}

/** Waits for `p` (ignoring its failure) for at most `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** A watch that loses its connection warns at most this often (the reconnect is logged at info). */
const WATCH_WARN_INTERVAL_MS = 30_000;

const isCompacted = (err: unknown): boolean => /revision has been compacted/.test(messageOf(err));

/** The largest etcd response weft accepts (a list of a whole prefix). */
export const MAX_RESPONSE_BYTES = 512 * 1024 * 1024;

export class EtcdStore implements Store {
  readonly kind = BACKEND;
  readonly #client: Etcd3;
  readonly #log: Logger;
  readonly #metrics: StoreMetrics;
  readonly #requestTimeoutMs: number;
  readonly #watches = new Set<EtcdWatch>();
  readonly #keepAlives = new Set<KeepAlive>();
  #closed = false;

  private constructor(opts: EtcdStoreOptions) {
    this.#log = opts.logger ?? componentLogger('registry', { backend: BACKEND });
    this.#metrics = new StoreMetrics(BACKEND, opts.metrics);
    this.#requestTimeoutMs = opts.requestTimeoutMs ?? 5_000;
    const tls = opts.tls;
    const hosts = opts.endpoints && opts.endpoints.length > 0 ? opts.endpoints : ['http://127.0.0.1:2379'];
    // etcd3's defaults retry non-idempotent requests (a retried create that had been applied
    // would report a lost race to its own winner) and put a 5 s circuit breaker on each member,
    // which after a restart blocks renewals for longer than a short TTL. Here a request is sent
    // once (to another member only when it could not be sent), callers get REGISTRY_UNAVAILABLE
    // to retry on, and an unreachable member is passed over for a moment (HostHealth).
    const health = new HostHealth(hosts);
    const options: IOptions = {
      hosts,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.#requestTimeoutMs }),
      faultHandling: {
        global: health.requestPolicy(),
        host: (h) => health.hostPolicy(h),
        watchBackoff: watchBackoff(),
      },
      grpcOptions: {
        // Own subchannels per channel: etcd3 recreates its channels after a failure, and a
        // shared subchannel would carry over the grown reconnect backoff of the outage.
        'grpc.use_local_subchannel_pool': 1,
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 2_000,
        // Finds a dead peer (no FIN, e.g. a partition) under a long-lived watch; etcd permits
        // pings every 5 s by default.
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        // A list is one range response: 10,000 Services and their slices are ~5 MiB, past
        // gRPC's 4 MiB default, and a failed list would be retried forever. etcd itself caps
        // values at 1.5 MiB per request, not responses.
        'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
      },
    };
    if (tls && (tls.caFile || tls.certFile || tls.keyFile)) {
      options.credentials = {
        rootCertificate: tls.caFile ? readFileSync(tls.caFile) : (null as unknown as Buffer),
        ...(tls.certFile ? { certChain: readFileSync(tls.certFile) } : {}),
        ...(tls.keyFile ? { privateKey: readFileSync(tls.keyFile) } : {}),
      };
    }
    if (opts.username !== undefined)
      options.auth = { username: opts.username, password: opts.password ?? '' };
    this.#client = new Etcd3(options);
  }

  /**
   * Connects and waits (up to `dialTimeoutMs`) until the cluster answers; rejects with
   * REGISTRY_UNAVAILABLE otherwise. etcd3's own `dialTimeout` option is not implemented.
   */
  static async open(opts: EtcdStoreOptions = {}): Promise<EtcdStore> {
    const store = new EtcdStore(opts);
    const dialMs = opts.dialTimeoutMs ?? 5_000;
    const deadline = monotonicMs() + dialMs;
    const backoff = new Backoff({ initialMs: 100, maxMs: 1_000 });
    for (;;) {
      try {
        await store.#client.kv.range(
          { key: Buffer.from('/'), count_only: true },
          // gRPC takes a wall-clock deadline: what is left of the monotonic one, from now.
          { deadline: Date.now() + Math.max(deadline - monotonicMs(), 500) },
        );
        return store;
      } catch (err) {
        // A user whose role covers only its prefix (flannel's usual RBAC) may not read '/':
        // the cluster answered and took the credentials, which is all this probe asks.
        if (err instanceof EtcdPermissionDeniedError) return store;
        if (monotonicMs() >= deadline) {
          await store.close();
          throw unavailable(
            BACKEND,
            `connect to ${(opts.endpoints ?? []).join(',') || 'default endpoint'}`,
            err,
          );
        }
        await backoff.wait();
      }
    }
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.#op('get', async () => {
      checkKey(key);
      const kv = await this.#getRaw(key);
      return kv ? toKeyValue(kv) : undefined;
    });
  }

  timeToLive(key: string): Promise<number | undefined> {
    return this.#op('ttl', async () => {
      checkKey(key);
      const kv = await this.#getRaw(key);
      if (!kv || kv.lease === '0' || kv.lease === '') return undefined;
      const res = await this.#client.leaseClient.leaseTimeToLive({ ID: kv.lease, keys: false });
      const ttl = Number(res.TTL);
      return ttl >= 0 ? ttl : undefined;
    });
  }

  list(prefix: string): Promise<ListResult> {
    return this.#op('list', async () => {
      checkKey(prefix, 'prefix');
      const p = Buffer.from(prefix);
      const res = await this.#client.kv.range({
        key: p,
        range_end: prefixEnd(p),
        sort_order: 'Ascend',
        sort_target: 'Key',
      });
      return { items: res.kvs.map(toKeyValue), revision: Number(res.header.revision) };
    });
  }

  create(key: string, value: string, opts: CreateOptions = {}): Promise<CreateResult> {
    return this.#op('create', async () => {
      checkKey(key);
      if (opts.ttlSeconds !== undefined) checkTtl(opts.ttlSeconds);
      const guard = opts.guard;
      checkGuard(guard);
      const k = Buffer.from(key);
      const lease = opts.ttlSeconds !== undefined ? await this.#grant(opts.ttlSeconds) : '0';
      const res = await this.#client.kv.txn({
        compare: [
          ...(guard ? [guardCompare(guard)] : []),
          { key: k, target: 'Create', result: 'Equal', create_revision: 0 },
        ],
        success: [{ request_put: { key: k, value: Buffer.from(value), lease } }],
        failure: [
          { request_range: { key: k } },
          ...(guard ? [{ request_range: { key: Buffer.from(guard.key) } }] : []),
        ],
      });
      if (res.succeeded) return { created: true, revision: Number(res.header.revision) };
      // Only a definite loss frees the lease: after an error the put may have been applied.
      if (lease !== '0') this.#revokeLater(lease);
      if (guard && !guardHeld(guard, res.responses[1])) throw fencedError(BACKEND, 'create', key, guard);
      const current = res.responses[0]?.response_range?.kvs[0];
      if (!current)
        throw new WeftError(
          ErrorCodes.REGISTRY_UNAVAILABLE,
          `etcd registry: create ${key}: empty failure response`,
        );
      return { created: false, current: toKeyValue(current) };
    });
  }

  update(key: string, value: string, expect: Expectation, opts: UpdateOptions = {}): Promise<UpdateResult> {
    return this.#op('update', async () => {
      checkKey(key);
      checkRevision(expect?.modRevision, 'expect.modRevision');
      const ttl = opts.ttlSeconds;
      if (ttl !== undefined && ttl !== null) checkTtl(ttl);
      const guard = opts.guard;
      checkGuard(guard);
      const k = Buffer.from(key);
      const lease = typeof ttl === 'number' ? await this.#grant(ttl) : '0';
      const res = await this.#client.kv.txn({
        compare: [
          ...(guard ? [guardCompare(guard)] : []),
          { key: k, target: 'Mod', result: 'Equal', mod_revision: expect.modRevision },
        ],
        success: [
          // The key as it was, to find the lease it leaves.
          { request_range: { key: k } },
          {
            request_put:
              ttl === undefined
                ? { key: k, value: Buffer.from(value), ignore_lease: true }
                : { key: k, value: Buffer.from(value), lease },
          },
        ],
        failure: [
          { request_range: { key: k } },
          ...(guard ? [{ request_range: { key: Buffer.from(guard.key) } }] : []),
        ],
      });
      if (res.succeeded) {
        const previous = res.responses[0]?.response_range?.kvs[0];
        if (ttl !== undefined && previous) this.#releaseLater(previous.lease);
        return { updated: true, revision: Number(res.header.revision) };
      }
      if (lease !== '0') this.#revokeLater(lease);
      if (guard && !guardHeld(guard, res.responses[1])) throw fencedError(BACKEND, 'update', key, guard);
      const current = res.responses[0]?.response_range?.kvs[0];
      return { updated: false, current: current ? toKeyValue(current) : undefined };
    });
  }

  delete(key: string, expect?: Expectation, opts: DeleteOptions = {}): Promise<boolean> {
    return this.#op('delete', async () => {
      checkKey(key);
      const guard = opts.guard;
      checkGuard(guard);
      const k = Buffer.from(key);
      if (guard !== undefined) return this.#guardedDelete(key, expect, guard);
      if (expect === undefined) {
        const res = await this.#client.kv.deleteRange({ key: k, prev_kv: true });
        const prev = res.prev_kvs[0];
        if (prev) this.#releaseLater(prev.lease);
        return Number(res.deleted) > 0;
      }
      checkRevision(expect.modRevision, 'expect.modRevision');
      const res = await this.#client.kv.txn({
        compare: [{ key: k, target: 'Mod', result: 'Equal', mod_revision: expect.modRevision }],
        success: [{ request_delete_range: { key: k, prev_kv: true } }],
        failure: [],
      });
      if (!res.succeeded) return false;
      const del = res.responses[0]?.response_delete_range;
      const prev = del?.prev_kvs[0];
      if (prev) this.#releaseLater(prev.lease);
      return Number(del?.deleted ?? 0) > 0;
    });
  }

  async #guardedDelete(key: string, expect: Expectation | undefined, guard: WriteGuard): Promise<boolean> {
    if (expect !== undefined) checkRevision(expect.modRevision, 'expect.modRevision');
    const k = Buffer.from(key);
    const res = await this.#client.kv.txn({
      compare: [
        guardCompare(guard),
        ...(expect !== undefined
          ? [{ key: k, target: 'Mod' as const, result: 'Equal' as const, mod_revision: expect.modRevision }]
          : []),
      ],
      success: [{ request_delete_range: { key: k, prev_kv: true } }],
      failure: [{ request_range: { key: Buffer.from(guard.key) } }],
    });
    if (!res.succeeded) {
      if (!guardHeld(guard, res.responses[0])) throw fencedError(BACKEND, 'delete', key, guard);
      return false;
    }
    const del = res.responses[0]?.response_delete_range;
    const prev = del?.prev_kvs[0];
    if (prev) this.#releaseLater(prev.lease);
    return Number(del?.deleted ?? 0) > 0;
  }

  /**
   * Renews the lease the key is attached to with the raw LeaseKeepAlive RPC, one request per
   * renewal, after reading the key. Why not etcd3's Lease: it can only keep alive a lease it
   * granted itself (not the lease of an existing key, e.g. after a restart of the daemon), and
   * it judges loss on the client (2×TTL without an answer) even when the server, restarted,
   * still holds the lease. Why not re-grant and CAS: every renewal would then be a write, a
   * new modRevision and a watch event for every watcher. Here the server is the judge: a
   * keep-alive answered with TTL 0 means the lease is gone.
   */
  keepAlive(key: string, opts: KeepAliveOptions): KeepAlive {
    if (this.#closed) throw closedError(BACKEND);
    checkKey(key);
    const intervalMs = keepAliveInterval(opts);
    const renewOnce = (): Promise<RenewOutcome> =>
      this.#op('keepAlive', async () => {
        const kv = await this.#getRaw(key);
        if (!kv) return { ok: false, reason: 'key is gone (expired or deleted)' };
        if (opts.expectValue !== undefined && kv.value.toString('utf8') !== opts.expectValue) {
          return { ok: false, reason: 'key holds another value' };
        }
        if (kv.lease === '0' || kv.lease === '') return { ok: false, reason: 'key is no longer TTL-bound' };
        const ttl = await this.#keepAliveOnce(kv.lease);
        if (ttl <= 0) return { ok: false, reason: `lease ${kv.lease} of the key has expired` };
        return { ok: true, ttlSeconds: ttl };
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
    const w = new EtcdWatch(this.#client, prefix, opts.fromRevision, this.#log, this.#metrics);
    this.#watches.add(w);
    const onAbort = (): void => w.queue.end();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) w.queue.end();
    try {
      w.start();
      for await (const ev of w.queue) yield ev;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      this.#watches.delete(w);
      await w.stop();
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const ka of [...this.#keepAlives]) await ka.close();
    // Watchers first: etcd3's watch manager keeps reconnecting on a closed client forever.
    await Promise.all([...this.#watches].map((w) => w.stop()));
    this.#client.close();
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

  async #getRaw(key: string): Promise<IKeyValue | undefined> {
    const res = await this.#client.kv.range({ key: Buffer.from(key) });
    return res.kvs[0];
  }

  async #grant(ttlSeconds: number): Promise<string> {
    // etcd leases have whole seconds, and the server raises a TTL below its minimum (1.5 × the
    // election timeout) to that minimum.
    const res = await this.#client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlSeconds)), ID: 0 });
    if (res.error) throw new Error(`lease grant: ${res.error}`);
    return res.ID;
  }

  #revokeLater(lease: string): void {
    this.#client.leaseClient.leaseRevoke({ ID: lease }).catch((err: unknown) => {
      this.#log.debug({ lease, err }, 'could not revoke an unused lease; it will expire');
    });
  }

  /** Revokes a lease a key has left, when no other key is attached to it. */
  #releaseLater(lease: string): void {
    if (lease === '0' || lease === '') return;
    void (async () => {
      try {
        const res = await this.#client.leaseClient.leaseTimeToLive({ ID: lease, keys: true });
        if (Number(res.TTL) > 0 && (res.keys ?? []).length === 0)
          await this.#client.leaseClient.leaseRevoke({ ID: lease });
      } catch (err) {
        this.#log.debug({ lease, err }, 'could not release an unused lease; it will expire');
      }
    })();
  }

  /** One LeaseKeepAlive round trip; resolves with the TTL the server granted (0: no such lease). */
  async #keepAliveOnce(lease: string): Promise<number> {
    const stream = await this.#client.leaseClient.leaseKeepAlive();
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.cancel();
        reject(new Error(`lease keep-alive timed out after ${this.#requestTimeoutMs} ms`));
      }, this.#requestTimeoutMs);
      stream.on('data', (res) => {
        clearTimeout(timer);
        // A half-close ends the call with status OK; cancel() would count as a failure and
        // make etcd3 reset every channel of the host, watch streams included.
        stream.end();
        resolve(Number(res.TTL));
      });
      stream.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      stream.write({ ID: lease });
    });
  }
}

/**
 * One watch: an etcd3 Watcher (which re-attaches by itself after a disconnect), with the
 * resume revision kept here. etcd3 resumes from the header revision of the last response + 1,
 * but the header of a watch's `created` response (and of catch-up batches) is the store's
 * current revision, not the last event delivered, so a disconnect during catch-up would skip
 * events; on every disconnect the resume point is reset to the revision after the last one
 * delivered, and anything at or below it is dropped.
 */
class EtcdWatch {
  readonly queue: AsyncQueue<WatchEvent>;
  readonly #client: Etcd3;
  readonly #prefix: Buffer;
  readonly #log: Logger;
  readonly #metrics: StoreMetrics;
  #next: number;
  #watcher: Watcher | undefined;
  #stopped = false;
  readonly #stopSignal = new AbortController();
  /** When the current disconnection began; undefined while connected. */
  #disconnectedAt: number | undefined;
  #lastWarnAt = Number.NEGATIVE_INFINITY;
  /** Whether the current disconnection was warned about (its end is then logged at info). */
  #warned = false;

  constructor(client: Etcd3, prefix: string, fromRevision: number, log: Logger, metrics: StoreMetrics) {
    this.#client = client;
    this.#prefix = Buffer.from(prefix);
    this.#next = fromRevision;
    this.#log = log.child({ watch: prefix });
    this.#metrics = metrics;
    this.queue = new AsyncQueue<WatchEvent>(() => void this.stop());
  }

  start(): void {
    if (this.#stopped) return;
    const w = this.#client.watch().prefix(this.#prefix).startRevision(String(this.#next)).watcher();
    this.#watcher = w;
    w.on('data', (res) => {
      if (this.#watcher !== w) return;
      let last = this.#next - 1;
      for (const ev of res.events) {
        const revision = Number(ev.kv.mod_revision);
        if (revision < this.#next) continue;
        last = Math.max(last, revision);
        const key = ev.kv.key.toString('utf8');
        if (ev.type === 'Put') {
          const ttlBound = ev.kv.lease !== '0' && ev.kv.lease !== '';
          this.queue.push({ type: 'put', key, value: ev.kv.value.toString('utf8'), revision, ttlBound });
        } else {
          this.queue.push({ type: 'delete', key, revision });
        }
      }
      this.#next = last + 1;
    });
    w.on('disconnected', (err) => {
      (w.request as { start_revision?: string }).start_revision = String(this.#next);
      if (this.#stopped) return;
      // etcd3 reports every failed reconnect attempt: warn once per outage (and not more often
      // than WATCH_WARN_INTERVAL_MS when the connection flaps), the rest at debug.
      const now = monotonicMs();
      const first = this.#disconnectedAt === undefined;
      this.#disconnectedAt ??= now;
      if (first && now - this.#lastWarnAt >= WATCH_WARN_INTERVAL_MS) {
        this.#lastWarnAt = now;
        this.#warned = true;
        this.#log.warn({ err: messageOf(err), next: this.#next }, 'etcd watch disconnected; reconnecting');
      } else {
        this.#log.debug(
          { err: messageOf(err), next: this.#next },
          'etcd watch disconnected; etcd3 reconnects',
        );
      }
    });
    w.on('connected', () => {
      const since = this.#disconnectedAt;
      if (since === undefined || this.#watcher !== w) return;
      this.#disconnectedAt = undefined;
      const warned = this.#warned;
      this.#warned = false;
      const fields = { downMs: Math.round(monotonicMs() - since), next: this.#next };
      if (warned) this.#log.info(fields, 'etcd watch reconnected; resuming');
      else this.#log.debug(fields, 'etcd watch reconnected; resuming');
    });
    w.on('error', (err) => {
      if (this.#watcher !== w) return;
      this.#watcher = undefined;
      void this.#recover(err);
    });
  }

  /** etcd canceled the watch; a compaction past the resume point becomes a `resync`. */
  async #recover(cause: Error): Promise<void> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    const range = { key: this.#prefix, range_end: prefixEnd(this.#prefix), count_only: true };
    while (!this.#stopped) {
      try {
        try {
          await this.#client.kv.range({ ...range, revision: this.#next });
        } catch (err) {
          if (!isCompacted(err)) throw err;
          const res = await this.#client.kv.range(range);
          const revision = Number(res.header.revision);
          if (this.#stopped) return;
          this.#metrics.resync();
          this.#log.info({ from: this.#next, revision }, 'etcd watch resumes after a compaction');
          this.queue.push({
            type: 'resync',
            revision,
            reason: `revision ${this.#next} has been compacted (${messageOf(cause)})`,
          });
          this.#next = revision + 1;
          this.start();
          return;
        }
        // The resume point is still readable: the cancel was for another reason
        // (permissions...), which a retry would not fix.
        this.queue.end(unavailable(BACKEND, 'watch', cause));
        return;
      } catch (err) {
        if (/future revision/.test(messageOf(err))) {
          this.queue.end(unavailable(BACKEND, 'watch', cause));
          return;
        }
        this.#log.debug({ err: messageOf(err) }, 'etcd watch recovery failed; retrying');
        await sleep(backoff.next(), this.#stopSignal.signal);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.queue.end();
    const w = this.#watcher;
    this.#watcher = undefined;
    this.#stopSignal.abort();
    // cancel() waits for etcd's answer, which never comes from a server that is down.
    if (w) await within(w.cancel(), 2_000);
  }
}

/**
 * Pieces shared by the store backends: argument checks, error wrapping, an async event queue,
 * the polling keep-alive and the small set of registry metrics. Internal to src/registry.
 */
import { Backoff, sleep } from '../backoff/index.js';
import { monotonicMs } from '../clock/index.js';
import { ErrorCodes, WeftError, invalid, isWeftError, messageOf } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { Counter, metricName, type Registry } from '../metrics/index.js';
import type { KeepAlive, KeepAliveEvent, KeepAliveOptions, WriteGuard } from './store.js';

/** Registry keys and prefixes start with `/`, which keeps them apart from backend-internal keys. */
export function checkKey(key: string, field = 'key'): void {
  if (typeof key !== 'string' || !key.startsWith('/')) {
    throw invalid(
      'registry',
      field,
      `must be a string starting with "/", got ${JSON.stringify(key)}`,
      ErrorCodes.INVALID_KEY,
    );
  }
}

/** A TTL in seconds: finite and positive. */
export function checkTtl(ttlSeconds: number, field = 'ttlSeconds'): void {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
    throw invalid('registry', field, `must be a positive number of seconds, got ${String(ttlSeconds)}`);
  }
}

/** A revision: a positive safe integer. */
export function checkRevision(revision: number, field: string): void {
  if (!Number.isSafeInteger(revision) || revision <= 0) {
    throw invalid('registry', field, `must be a positive integer, got ${String(revision)}`);
  }
}

/** A write guard, when given: a valid key and a string value. */
export function checkGuard(guard: WriteGuard | undefined): void {
  if (guard === undefined) return;
  checkKey(guard.key, 'guard.key');
  if (typeof guard.value !== 'string') throw invalid('registry', 'guard.value', 'must be a string');
}

/** The error of a write whose guard did not hold. */
export function fencedError(backend: string, op: string, key: string, guard: WriteGuard): WeftError {
  return new WeftError(
    ErrorCodes.FENCED,
    `${backend} registry: ${op} ${key} fenced: ${guard.key} no longer holds the writer's value`,
    { backend, op, key, guardKey: guard.key },
  );
}

/** The keep-alive interval: the caller's, or a third of the TTL so two renewals can fail in a row. */
export function keepAliveInterval(opts: KeepAliveOptions): number {
  checkTtl(opts.ttlSeconds, 'keepAlive.ttlSeconds');
  if (opts.intervalMs !== undefined && !(opts.intervalMs > 0)) {
    throw invalid('registry', 'keepAlive.intervalMs', 'must be positive');
  }
  return opts.intervalMs ?? Math.max(100, Math.floor((opts.ttlSeconds * 1000) / 3));
}

/** Wraps a backend failure as REGISTRY_UNAVAILABLE, keeping WeftErrors as they are. */
export function unavailable(backend: string, op: string, err: unknown): WeftError {
  if (isWeftError(err)) return err;
  return new WeftError(
    ErrorCodes.REGISTRY_UNAVAILABLE,
    `${backend} registry: ${op} failed: ${messageOf(err)}`,
    { backend, op },
    { cause: err },
  );
}

export function closedError(backend: string, what = `${backend} registry store`): WeftError {
  return new WeftError(ErrorCodes.CLOSED, `${what} is closed`, { backend });
}

/** Byte order, as etcd and Redis sort keys (UTF-16 order differs for astral characters). */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * An unbounded single-consumer queue that is also an async iterable. Producers push from
 * callbacks; `end(err)` delivers what is buffered, then the error or the end.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  readonly #items: T[] = [];
  readonly #waiters: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  #ended = false;
  #error: unknown;
  readonly #onReturn: (() => void) | undefined;

  /** `onReturn` runs when the consumer stops early (break, return) or `end()` is called. */
  constructor(onReturn?: () => void) {
    this.#onReturn = onReturn;
  }

  get ended(): boolean {
    return this.#ended;
  }

  push(item: T): void {
    if (this.#ended) return;
    const w = this.#waiters.shift();
    if (w) w.resolve({ value: item, done: false });
    else this.#items.push(item);
  }

  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    for (const w of this.#waiters.splice(0)) {
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
    this.#onReturn?.();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) return Promise.resolve({ value: this.#items.shift() as T, done: false });
    if (this.#ended) {
      if (this.#error !== undefined) {
        const err = this.#error;
        this.#error = undefined;
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.next(),
      return: () => {
        this.#items.length = 0;
        this.end();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** Outcome of one renewal attempt of a {@link PollingKeepAlive}. */
export type RenewOutcome = { ok: true; ttlSeconds: number } | { ok: false; reason: string };

export interface PollingKeepAliveOptions {
  backend: string;
  key: string;
  intervalMs: number;
  /** One renewal; throws when the store cannot be reached (the key is then not known to be lost). */
  renewOnce: () => Promise<RenewOutcome>;
  logger: Logger;
  metrics: StoreMetrics;
  onDone?: () => void;
}

/**
 * Events of an outage are reported at most this often: a renewal is retried with backoff
 * during an outage and each failure would otherwise be an event.
 */
const ERROR_EVENT_MIN_INTERVAL_MS = 5_000;

/**
 * A keep-alive driven by periodic renewals, each of which the store answers with the truth
 * about the key (present, same value, still TTL-bound); the backends differ only in
 * `renewOnce`. Failed renewals are retried with backoff, capped at the interval, so a
 * recovered store is renewed quickly rather than an interval later.
 */
/**
 * Starts a {@link PollingKeepAlive} tracked in `live` (the store closes what is left there on
 * close) that removes itself from `live` when it ends.
 */
export function trackedKeepAlive(
  live: Set<KeepAlive>,
  opts: Omit<PollingKeepAliveOptions, 'onDone'>,
): PollingKeepAlive {
  const ka: PollingKeepAlive = new PollingKeepAlive({ ...opts, onDone: () => live.delete(ka) });
  live.add(ka);
  return ka;
}

export class PollingKeepAlive implements KeepAlive {
  readonly key: string;
  readonly #opts: PollingKeepAliveOptions;
  readonly #events = new AsyncQueue<KeepAliveEvent>();
  readonly #stop = new AbortController();
  readonly #backoff: Backoff;
  #state: 'running' | 'lost' | 'closed' = 'running';
  #inflight: Promise<boolean> | undefined;
  #lastErrorEventAt = Number.NEGATIVE_INFINITY;

  constructor(opts: PollingKeepAliveOptions) {
    this.key = opts.key;
    this.#opts = opts;
    this.#backoff = new Backoff({ initialMs: 100, maxMs: Math.max(100, Math.min(opts.intervalMs, 2_000)) });
    void this.#loop();
  }

  events(): AsyncIterable<KeepAliveEvent> {
    return this.#events;
  }

  renew(): Promise<boolean> {
    if (this.#state === 'lost') return Promise.resolve(false);
    if (this.#state === 'closed')
      return Promise.reject(closedError(this.#opts.backend, `keep-alive of ${this.key}`));
    this.#inflight ??= this.#attempt().finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  close(): Promise<void> {
    if (this.#state === 'running') this.#state = 'closed';
    this.#stop.abort();
    this.#events.end();
    this.#opts.onDone?.();
    return Promise.resolve();
  }

  async #attempt(): Promise<boolean> {
    let outcome: RenewOutcome;
    try {
      outcome = await this.#opts.renewOnce();
    } catch (err) {
      const error = err instanceof Error ? err : new Error(messageOf(err));
      if (this.#state === 'running') this.#reportError(error);
      throw error;
    }
    if (this.#state !== 'running') return this.#state !== 'lost' && outcome.ok;
    if (!outcome.ok) {
      this.#state = 'lost';
      this.#opts.metrics.keepAliveLost();
      this.#opts.logger.warn({ key: this.key, reason: outcome.reason }, 'registry key lost');
      this.#events.push({ type: 'lost', reason: outcome.reason });
      this.#events.end();
      this.#stop.abort();
      this.#opts.onDone?.();
      return false;
    }
    this.#lastErrorEventAt = Number.NEGATIVE_INFINITY;
    this.#events.push({ type: 'renewed', ttlSeconds: outcome.ttlSeconds });
    return true;
  }

  #reportError(error: Error): void {
    const now = monotonicMs();
    if (now - this.#lastErrorEventAt < ERROR_EVENT_MIN_INTERVAL_MS) return;
    this.#lastErrorEventAt = now;
    this.#opts.logger.warn({ key: this.key, err: error }, 'registry key renewal failed; retrying');
    this.#events.push({ type: 'error', error });
  }

  async #loop(): Promise<void> {
    const signal = this.#stop.signal;
    while (this.#state === 'running') {
      let delay: number;
      try {
        if (!(await this.renew())) return;
        this.#backoff.reset();
        delay = this.#opts.intervalMs;
      } catch {
        delay = Math.min(this.#backoff.next(), this.#opts.intervalMs);
      }
      await sleep(delay, signal);
    }
  }
}

type Labels = 'backend' | 'op' | 'result';

/** The few registry metrics; a no-op without a registry. */
export class StoreMetrics {
  readonly #backend: string;
  readonly #requests: Counter<Labels> | undefined;
  readonly #resyncs: Counter<'backend'> | undefined;
  readonly #lost: Counter<'backend'> | undefined;

  constructor(backend: string, registry?: Registry) {
    this.#backend = backend;
    if (!registry) return;
    this.#requests = counter(
      registry,
      'weft_registry_requests_total',
      'Registry requests by operation and result',
      ['backend', 'op', 'result'],
    );
    this.#resyncs = counter(registry, 'weft_registry_watch_resyncs_total', 'Watches that had to resync', [
      'backend',
    ]);
    this.#lost = counter(registry, 'weft_registry_keepalive_lost_total', 'TTL-bound keys reported lost', [
      'backend',
    ]);
  }

  /** Runs one request, counting its outcome. */
  async request<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      const r = await fn();
      this.#requests?.inc({ backend: this.#backend, op, result: 'ok' });
      return r;
    } catch (err) {
      this.#requests?.inc({ backend: this.#backend, op, result: 'error' });
      throw err;
    }
  }

  resync(): void {
    this.#resyncs?.inc({ backend: this.#backend });
  }

  keepAliveLost(): void {
    this.#lost?.inc({ backend: this.#backend });
  }
}

// Several stores may share one registry (a daemon with two backends, tests): reuse the metric.
function counter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: L[],
): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter<L>({ name: metricName(name), help, labelNames, registers: [registry] });
}

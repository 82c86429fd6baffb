/** Shared pieces of the tracker and engine unit tests: a log recorder and a store that can fail. */
import { pino, type Logger } from 'pino';
import type { Store, WatchEvent, WatchOptions } from '../../../src/registry/index.js';

/** A logger that keeps every record (level warn and up by default). */
export function recordingLogger(level = 'warn'): { log: Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const log = pino(
    { level },
    { write: (s: string) => void records.push(JSON.parse(s) as Record<string, unknown>) },
  );
  return { log, records };
}

/** Writes a key whatever its current revision. */
export async function put(store: Store, key: string, value: unknown): Promise<void> {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  const cur = await store.get(key);
  if (!cur) {
    await store.create(key, text);
    return;
  }
  const res = await store.update(key, text, { modRevision: cur.modRevision });
  if (!res.updated) throw new Error(`lost a race writing ${key}`);
}

/** A store whose reads fail while `down` is true, as a registry outage looks to its clients. */
export class FlakyStore {
  down = false;
  readonly #inner: Store;
  readonly #watches = new Set<AbortController>();

  constructor(inner: Store) {
    this.#inner = inner;
  }

  setDown(down: boolean): void {
    this.down = down;
    if (down) for (const w of this.#watches) w.abort();
  }

  get store(): Store {
    const inner = this.#inner;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return {
      kind: 'flaky',
      get: (k) => inner.get(k),
      timeToLive: (k) => inner.timeToLive(k),
      create: (...a) => inner.create(...a),
      update: (...a) => inner.update(...a),
      delete: (...a) => inner.delete(...a),
      keepAlive: (...a) => inner.keepAlive(...a),
      close: () => Promise.resolve(),
      list: (p) => (self.down ? Promise.reject(new Error('registry unreachable')) : inner.list(p)),
      watch: (prefix: string, opts: WatchOptions) => self.#watch(prefix, opts),
    };
  }

  async *#watch(prefix: string, opts: WatchOptions): AsyncIterable<WatchEvent> {
    if (this.down) throw new Error('registry unreachable');
    const ac = new AbortController();
    const outer = opts.signal;
    const onAbort = () => ac.abort();
    outer?.addEventListener('abort', onAbort, { once: true });
    this.#watches.add(ac);
    try {
      for await (const ev of this.#inner.watch(prefix, {
        fromRevision: opts.fromRevision,
        signal: ac.signal,
      })) {
        yield ev;
      }
      if (!outer?.aborted) throw new Error('registry unreachable');
    } finally {
      this.#watches.delete(ac);
      outer?.removeEventListener('abort', onAbort);
    }
  }
}

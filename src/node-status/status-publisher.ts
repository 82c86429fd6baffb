/**
 * Keeps a daemon's status record in the registry: written at start, again whenever readiness or
 * its reason changes (checked every few seconds) and at least every `refreshMs`, bound to a TTL a
 * few refreshes long, and deleted on a clean stop. Failures to write are logged, never fatal: the
 * record is for operators, and the daemon's work must not depend on it.
 */
import { hostname } from 'node:os';
import { monotonicMs } from '../clock/index.js';
import { messageOf } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import type { Store } from '../registry/index.js';
import { statusKey, type DaemonStatus, type StatusDaemon } from './status-record.js';

/** What the daemon reports at each check. */
export interface StatusSnapshot {
  ready: boolean;
  /** Why not ready. */
  reason?: string | undefined;
  /** When the last successful sync ended, ms since the epoch. */
  lastSyncMs?: number | undefined;
  /** Facts for the status table: backend, subnet, mode. */
  detail?: Record<string, string>;
}

/** Options of {@link StatusPublisher}. */
export interface StatusPublisherOptions {
  store: Store;
  /** The status prefix, `/weft/status/`. */
  prefix: string;
  /** The node's name (the lab's node name, a proxy's --hostname-override). Default the hostname. */
  node?: string | undefined;
  daemon: StatusDaemon;
  version: string;
  /** Base URL of the daemon's health listener, if it has one. */
  health?: string | undefined;
  snapshot: () => StatusSnapshot;
  logger: Logger;
  /** Longest time between writes. Default 20 s. */
  refreshMs?: number;
  /** How often the snapshot is compared with the last written one. Default 2 s. */
  checkMs?: number;
  /** TTL of the record. Default 3 × refresh. */
  ttlSeconds?: number;
}

export class StatusPublisher {
  readonly key: string;
  readonly #o: StatusPublisherOptions;
  readonly #startedAt = new Date().toISOString();
  #timer: NodeJS.Timeout | undefined;
  #last: { ready: boolean; reason: string | undefined; at: number } | undefined;
  #writing: Promise<void> = Promise.resolve();
  #stopped = false;

  constructor(opts: StatusPublisherOptions) {
    this.#o = opts;
    this.key = statusKey(opts.prefix, opts.node ?? hostname(), opts.daemon);
  }

  /** Writes the first record and starts checking. */
  start(): void {
    this.#tick();
    this.#timer = setInterval(() => this.#tick(), this.#o.checkMs ?? 2_000);
    this.#timer.unref();
  }

  /** Writes now, whatever changed (after a readiness change the daemon wants visible at once). */
  publish(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#write());
    return this.#writing;
  }

  /** Stops and deletes the record (a stopped daemon has no status). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#writing;
    try {
      await this.#o.store.delete(this.key);
    } catch (err) {
      this.#o.logger.debug({ key: this.key, err: messageOf(err) }, 'could not delete the status record');
    }
  }

  #tick(): void {
    if (this.#stopped) return;
    const s = this.#o.snapshot();
    const last = this.#last;
    const due =
      !last ||
      last.ready !== s.ready ||
      last.reason !== s.reason ||
      monotonicMs() - last.at >= (this.#o.refreshMs ?? 20_000);
    if (due) void this.publish();
  }

  async #write(): Promise<void> {
    if (this.#stopped) return;
    const s = this.#o.snapshot();
    const now = Date.now();
    const writtenAt = monotonicMs();
    const record: DaemonStatus = {
      node: this.key.split('/').slice(-2)[0] ?? '',
      daemon: this.#o.daemon,
      version: this.#o.version,
      pid: process.pid,
      startedAt: this.#startedAt,
      updatedAt: new Date(now).toISOString(),
      ready: s.ready,
      ...(!s.ready && { reason: s.reason ?? 'not ready' }),
      ...(s.lastSyncMs !== undefined && { lastSync: new Date(s.lastSyncMs).toISOString() }),
      ...(this.#o.health && { health: this.#o.health }),
      detail: s.detail ?? {},
    };
    const value = JSON.stringify(record);
    const ttlSeconds = this.#o.ttlSeconds ?? Math.ceil((3 * (this.#o.refreshMs ?? 20_000)) / 1000);
    try {
      const { store } = this.#o;
      const current = await store.get(this.key);
      const ok = current
        ? (await store.update(this.key, value, { modRevision: current.modRevision }, { ttlSeconds })).updated
        : (await store.create(this.key, value, { ttlSeconds })).created;
      // Lost a race with another writer of the same key: the next check writes again.
      this.#last = ok ? { ready: s.ready, reason: s.reason, at: writtenAt } : undefined;
    } catch (err) {
      this.#last = undefined;
      this.#o.logger.warn({ key: this.key, err: messageOf(err) }, 'could not write the status record');
    }
  }
}

/** `http://host:port` for a listener bound to `host` (an unspecified address reads as loopback). */
export function healthUrl(host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return h.includes(':') ? `http://[${h}]:${port}` : `http://${h}:${port}`;
}

/**
 * kube-proxy's BoundedFrequencyRunner: runs one function (the sync) when asked, but never more
 * often than every `minIntervalMs`, and at least every `maxIntervalMs` (the periodic sync). A
 * burst of changes therefore costs one sync per interval, and a quiet system still re-checks its
 * rules. A failed run is retried after a growing backoff, still bounded by the minimum interval.
 * Runs never overlap: a request during a run is served after it.
 */
import { Backoff } from '../backoff/index.js';
import { monotonicMs } from '../clock/index.js';

/** The timers the runner uses; tests pass a fake clock. */
export interface RunnerClock {
  /** Monotonic milliseconds: every interval and deadline is measured on it. */
  now(): number;
  /**
   * Wall-clock milliseconds since the epoch, only for timestamps that are published or shown
   * (a metric's last-sync time, the status record). Default: `now()`, which suits fake clocks.
   */
  wallNow?(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The real clock. */
export const systemClock: RunnerClock = {
  // A one-hour NTP step backwards must not postpone the next sync by an hour.
  now: monotonicMs,
  wallNow: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Why a run happens. */
export type RunReason = 'requested' | 'periodic' | 'retry';

/** Options of {@link SyncRunner}. */
export interface SyncRunnerOptions {
  /** The work; a rejection counts as a failure and is retried. */
  fn: (reason: RunReason) => Promise<void>;
  /** Least time between the starts of two runs, ms. Default 1 000. */
  minIntervalMs?: number;
  /** Most time between the starts of two runs (the periodic run), ms. Default 30 000. */
  maxIntervalMs?: number;
  /** Retry delays after failures; default 1 s growing to `maxIntervalMs`. */
  backoff?: Backoff;
  clock?: RunnerClock;
  /** Told about a failed run (the runner itself only retries). */
  onError?: (err: unknown) => void;
}

/** A bounded-frequency runner. Nothing runs before {@link SyncRunner.start}. */
export class SyncRunner {
  readonly #fn: (reason: RunReason) => Promise<void>;
  readonly #min: number;
  readonly #max: number;
  readonly #backoff: Backoff;
  readonly #clock: RunnerClock;
  readonly #onError: ((err: unknown) => void) | undefined;
  #started = false;
  #stopped = false;
  #running: Promise<void> | undefined;
  #timer: unknown;
  /** Start time of the last run; -Infinity before the first. */
  #lastRun = -Infinity;
  /** When the periodic run is due when nothing else runs before. */
  #periodicAt = Infinity;
  #requested = false;
  #retryAt: number | undefined;

  constructor(opts: SyncRunnerOptions) {
    this.#fn = opts.fn;
    this.#min = opts.minIntervalMs ?? 1_000;
    this.#max = opts.maxIntervalMs ?? 30_000;
    if (!(this.#min >= 0) || !(this.#max >= this.#min) || !(this.#max > 0)) {
      throw new RangeError('sync runner: need 0 <= minIntervalMs <= maxIntervalMs and maxIntervalMs > 0');
    }
    this.#backoff =
      opts.backoff ?? new Backoff({ initialMs: Math.max(1, Math.min(1_000, this.#max)), maxMs: this.#max });
    this.#clock = opts.clock ?? systemClock;
    this.#onError = opts.onError;
  }

  /** Starts the periodic runs (the first one `maxIntervalMs` from now unless requested earlier). */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#periodicAt = this.#clock.now() + this.#max;
    this.#schedule();
  }

  /** Asks for a run: at once when the minimum interval has passed since the last, else when it has. */
  run(): void {
    if (this.#stopped) return;
    this.#requested = true;
    this.#schedule();
  }

  /** True while a run is in progress. */
  get busy(): boolean {
    return this.#running !== undefined;
  }

  /** Stops scheduling and waits for a run in progress to end. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clearTimer();
    await this.#running;
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** When the next run is due, and why. */
  #next(): { at: number; reason: RunReason } {
    const earliest = this.#lastRun + this.#min;
    let best: { at: number; reason: RunReason } = {
      at: Math.max(this.#periodicAt, earliest),
      reason: 'periodic',
    };
    if (this.#requested && earliest <= best.at) best = { at: earliest, reason: 'requested' };
    if (this.#retryAt !== undefined) {
      const at = Math.max(this.#retryAt, earliest);
      if (at < best.at) best = { at, reason: 'retry' };
    }
    return best;
  }

  #schedule(): void {
    if (!this.#started || this.#stopped || this.#running) return;
    this.#clearTimer();
    const { at, reason } = this.#next();
    const delay = Math.max(0, at - this.#clock.now());
    if (!Number.isFinite(delay)) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#execute(reason);
    }, delay);
  }

  #execute(reason: RunReason): void {
    if (this.#stopped || this.#running) return;
    const now = this.#clock.now();
    this.#lastRun = now;
    this.#periodicAt = now + this.#max;
    this.#requested = false;
    this.#retryAt = undefined;
    this.#running = (async () => {
      try {
        await this.#fn(reason);
        this.#backoff.reset();
      } catch (err) {
        this.#retryAt = this.#clock.now() + this.#backoff.next();
        try {
          this.#onError?.(err);
        } catch {
          // A reporting hook must not stop the runner.
        }
      } finally {
        this.#running = undefined;
        this.#schedule();
      }
    })();
  }
}

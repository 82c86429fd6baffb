/**
 * Exponential backoff with jitter, the one helper every retry loop in weft uses (modelled on
 * grpc-js's BackoffTimeout: a class that owns its state so callers only ask "how long now?").
 */

/** Options for {@link Backoff}. */
export interface BackoffOptions {
  /** First delay in milliseconds. Default 200. */
  initialMs?: number;
  /** Upper bound of any delay in milliseconds. Default 30 000. */
  maxMs?: number;
  /** Growth factor between attempts. Default 2. */
  multiplier?: number;
  /**
   * Fraction of the delay that is randomised, 0..1. Default 0.2. Jitter keeps many nodes that
   * lost the registry at the same moment from reconnecting in lock-step.
   */
  jitter?: number;
  /** Source of randomness, for deterministic tests. Default Math.random. */
  random?: () => number;
}

export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #mult: number;
  readonly #jitter: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.#initial = opts.initialMs ?? 200;
    this.#max = opts.maxMs ?? 30_000;
    this.#mult = opts.multiplier ?? 2;
    this.#jitter = Math.min(1, Math.max(0, opts.jitter ?? 0.2));
    this.#random = opts.random ?? Math.random;
    if (!(this.#initial > 0) || !(this.#max >= this.#initial) || !(this.#mult >= 1)) {
      throw new RangeError('backoff: need 0 < initialMs <= maxMs and multiplier >= 1');
    }
  }

  /** Number of delays handed out since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The next delay in milliseconds; each call grows the base delay until maxMs. */
  next(): number {
    const base = Math.min(this.#max, this.#initial * this.#mult ** this.#attempt);
    this.#attempt++;
    const spread = base * this.#jitter;
    const d = base - spread + this.#random() * 2 * spread;
    return Math.max(0, Math.min(this.#max, Math.round(d)));
  }

  /** Start over after a success. */
  reset(): void {
    this.#attempt = 0;
  }

  /** Wait for the next delay; resolves early (without throwing) when `signal` aborts. */
  wait(signal?: AbortSignal): Promise<void> {
    return sleep(this.next(), signal);
  }
}

/** Sleep `ms`, resolving early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * The controller's work queue, with client-go's workqueue semantics: a key is queued at most
 * once however often it is added, never handed to two workers at once (an add while it is being
 * processed queues it again for after), and handed out in the order first added. Its size is
 * bounded by the number of distinct keys, the Services. Each key carries the earliest time a
 * change to it was seen and not yet synced, the start of its selector-to-slice latency.
 */

/** A key handed to a worker. */
export interface WorkItem {
  key: string;
  /** Earliest change behind this work, on the monotonic clock. */
  seenAt: number;
}

export class WorkQueue {
  /** Waiting keys, in the order first added; each with its earliest seenAt. */
  readonly #dirty = new Map<string, number>();
  readonly #processing = new Set<string>();
  /** Keys added while being processed: queued again by {@link done}. */
  readonly #again = new Map<string, number>();
  readonly #delayed = new Map<string, { timer: NodeJS.Timeout; seenAt: number }>();

  /** Keys waiting (processing ones not counted). */
  get depth(): number {
    return this.#dirty.size + this.#again.size;
  }

  /** Keys being processed. */
  get processing(): number {
    return this.#processing.size;
  }

  /** Keys waiting for a delayed add. */
  get delayed(): number {
    return this.#delayed.size;
  }

  /** Queues `key` (again), keeping the earliest seenAt. */
  add(key: string, seenAt: number): void {
    const target = this.#processing.has(key) ? this.#again : this.#dirty;
    const prev = target.get(key);
    target.set(key, prev === undefined ? seenAt : Math.min(prev, seenAt));
    const d = this.#delayed.get(key);
    // Queued now: a pending delayed add would only repeat it.
    if (d) {
      clearTimeout(d.timer);
      this.#delayed.delete(key);
      target.set(key, Math.min(target.get(key) as number, d.seenAt));
    }
  }

  /** Queues `key` after `ms` (a retry), unless it is queued meanwhile; `onAdded` then runs. */
  addAfter(key: string, seenAt: number, ms: number, onAdded: () => void): void {
    const d = this.#delayed.get(key);
    if (d) {
      d.seenAt = Math.min(d.seenAt, seenAt);
      return;
    }
    const timer = setTimeout(() => {
      const entry = this.#delayed.get(key);
      this.#delayed.delete(key);
      this.add(key, entry?.seenAt ?? seenAt);
      onAdded();
    }, ms);
    timer.unref();
    this.#delayed.set(key, { timer, seenAt });
  }

  /** The next key for a worker, marked as processing; undefined when none waits. */
  take(): WorkItem | undefined {
    for (const [key, seenAt] of this.#dirty) {
      this.#dirty.delete(key);
      this.#processing.add(key);
      return { key, seenAt };
    }
    return undefined;
  }

  /** The worker is done with `key`; an add that came meanwhile queues it again. */
  done(key: string): void {
    this.#processing.delete(key);
    const again = this.#again.get(key);
    if (again !== undefined) {
      this.#again.delete(key);
      const prev = this.#dirty.get(key);
      this.#dirty.set(key, prev === undefined ? again : Math.min(prev, again));
    }
  }

  /** Drops every waiting and delayed key (those being processed finish). */
  clear(): void {
    this.#dirty.clear();
    this.#again.clear();
    for (const d of this.#delayed.values()) clearTimeout(d.timer);
    this.#delayed.clear();
  }
}

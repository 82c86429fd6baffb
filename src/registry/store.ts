/**
 * The store contract: the few operations weft needs from a registry, with etcd's semantics
 * (a global, monotonically increasing revision; per-key modification revisions; TTL-bound
 * keys). Every backend passes the one compliance suite in test/integration/registry.
 */

/** A key as stored. */
export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the last write to this key (etcd mod_revision). */
  modRevision: number;
  /** Revision that created this key (etcd create_revision). */
  createRevision: number;
  /** True when the key is bound to a TTL; false for a key that lives until deleted. */
  ttlBound: boolean;
}

/** A snapshot of a prefix. */
export interface ListResult {
  items: KeyValue[];
  /** The store revision the snapshot was taken at; watch from `revision + 1` to follow it. */
  revision: number;
}

/** A change seen by a watch. */
export type WatchEvent =
  | { type: 'put'; key: string; value: string; revision: number; ttlBound: boolean }
  | { type: 'delete'; key: string; revision: number }
  /**
   * The watch could not resume without a gap (etcd compaction, a trimmed Redis stream).
   * Consumers must re-list; the watch carries on from `revision + 1` afterwards.
   */
  | { type: 'resync'; revision: number; reason: string };

/**
 * A fence on a write: the write applies only while `key` holds exactly `value`, checked
 * atomically with the write itself. A leader passes its election key and value, so a write it
 * sends after it lost the election (a pause, a partition) cannot land.
 */
export interface WriteGuard {
  /** The key that must hold {@link WriteGuard.value} (e.g. an election key). */
  key: string;
  /** The exact value `key` must hold. */
  value: string;
}

/** Options for {@link Store.create}. */
export interface CreateOptions {
  /** Bind the key to a TTL, in seconds. Without it the key lives until deleted. */
  ttlSeconds?: number;
  /**
   * Write only while the guard holds; otherwise throw WeftError FENCED and write nothing. A
   * failed guard wins over an existing key: a fenced create never reports `created: false`.
   */
  guard?: WriteGuard;
}

/** Outcome of a create-if-absent. */
export type CreateResult = { created: true; revision: number } | { created: false; current: KeyValue };

/** The precondition of a compare-and-swap. */
export interface Expectation {
  /** The key's modRevision must equal this. */
  modRevision: number;
}

/** Options for {@link Store.update}. */
export interface UpdateOptions {
  /**
   * TTL of the key after the write, in seconds. Absent: the key keeps its current binding (a
   * TTL-bound key keeps its TTL, a reservation stays unbound). `null`: unbind.
   */
  ttlSeconds?: number | null;
  /**
   * Write only while the guard holds; otherwise throw WeftError FENCED and write nothing. The
   * guard is checked before the modRevision expectation.
   */
  guard?: WriteGuard;
}

/** Options for {@link Store.delete}. */
export interface DeleteOptions {
  /** Delete only while the guard holds; otherwise throw WeftError FENCED and delete nothing. */
  guard?: WriteGuard;
}

/** Outcome of a compare-and-swap. */
export type UpdateResult =
  { updated: true; revision: number } | { updated: false; current: KeyValue | undefined };

/** Options for {@link Store.watch}. */
export interface WatchOptions {
  /** First revision to deliver (inclusive). Typically `list().revision + 1`. */
  fromRevision: number;
  /** Ends the iteration. */
  signal?: AbortSignal;
}

/** Events of a {@link KeepAlive}. */
export type KeepAliveEvent =
  | { type: 'renewed'; ttlSeconds: number }
  /** The key or its TTL binding is gone (expired during an outage, deleted, or replaced). */
  | { type: 'lost'; reason: string }
  /** A renewal attempt failed but the key is not known to be lost (the store is unreachable). */
  | { type: 'error'; error: Error };

/** Keeps one TTL-bound key alive until closed; reports loss as an event, never silently. */
export interface KeepAlive {
  readonly key: string;
  /** Events in order; ends after `lost` or `close()`. */
  events(): AsyncIterable<KeepAliveEvent>;
  /** Renew once now; resolves false when the key is lost. */
  renew(): Promise<boolean>;
  close(): Promise<void>;
}

/** Options for {@link Store.keepAlive}. */
export interface KeepAliveOptions {
  ttlSeconds: number;
  /** How often to renew. Default a third of the TTL. */
  intervalMs?: number;
  /**
   * The value the owner wrote. A renewal that finds another value reports `lost`: someone
   * else now owns the key.
   */
  expectValue?: string;
}

/** The registry contract. */
export interface Store {
  /** Backend name, e.g. `etcd` or `redis`. */
  readonly kind: string;
  get(key: string): Promise<KeyValue | undefined>;
  /**
   * Seconds until a TTL-bound key expires unless renewed (whole seconds on etcd); undefined for a
   * key without a TTL or no key at all. For operators (`weftctl leases`), not for decisions.
   */
  timeToLive(key: string): Promise<number | undefined>;
  /** All keys under `prefix`, sorted by key, with the revision of the snapshot. */
  list(prefix: string): Promise<ListResult>;
  /** Atomic create-if-absent; exactly one of concurrent creators wins. */
  create(key: string, value: string, opts?: CreateOptions): Promise<CreateResult>;
  /** Compare-and-swap: writes only when the key's modRevision matches. */
  update(key: string, value: string, expect: Expectation, opts?: UpdateOptions): Promise<UpdateResult>;
  /** Delete, optionally only at a given modRevision. Resolves true when a key was deleted. */
  delete(key: string, expect?: Expectation, opts?: DeleteOptions): Promise<boolean>;
  /** Keep a TTL-bound key alive. */
  keepAlive(key: string, opts: KeepAliveOptions): KeepAlive;
  /**
   * Changes under `prefix` from a revision, in revision order, neither lost nor repeated across
   * disconnects; a `resync` event when that cannot be guaranteed.
   */
  watch(prefix: string, opts: WatchOptions): AsyncIterable<WatchEvent>;
  close(): Promise<void>;
}

/**
 * Follows objects in the registry (services and endpoint slices by default; pods, pod
 * attachments and nodes when asked): one list-then-watch loop per kind, re-listing when the watch
 * loses history (or when asked, see {@link ObjectTracker.relist}) and resuming after outages from
 * the last revision seen. Every stored object is parsed, and every Service checked against the
 * cluster's address policy (./service-policy.ts) when one is given; a bad one is logged with its
 * key and the field at fault, counted, and treated as absent (the object as stored is what
 * counts, so an earlier good version of that key is dropped too), while every other object keeps
 * being served. Every map holds at most what the registry holds under the tracked prefixes.
 */
import { Backoff } from '../backoff/index.js';
import { isWeftError, messageOf } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { Gauge, metricName, type Registry } from '../metrics/index.js';
import type { KeyValue, Store } from '../registry/index.js';
import { kindPrefix, parseObjectKey, type ObjectKind } from './keys.js';
import {
  parseNode,
  parsePod,
  parsePodAttachment,
  type NodeSpec,
  type PodAttachment,
  type PodSpec,
} from './pod.js';
import { parseEndpointSlice, parseService, type EndpointSliceSpec, type ServiceSpec } from './schema.js';
import {
  checkServicePolicy,
  compileServicePolicy,
  type CompiledServicePolicy,
  type ServicePolicy,
} from './service-policy.js';

/** An object the tracker could not use. */
export interface InvalidObject {
  kind: ObjectKind;
  key: string;
  /** The field at fault, e.g. `spec.ports[0].port`; empty when the whole value is bad. */
  field: string;
  message: string;
}

/** What changed, told to {@link ObjectTrackerOptions.onChange}. */
export interface ObjectChange {
  kind: ObjectKind;
  /** When the change was seen (ms since the epoch): the start of its programming latency. */
  seenAt: number;
  /** Number of keys that changed (a re-list may change many at once). */
  count: number;
}

/** The parsed object of each kind. */
export interface TrackedSpecs {
  Service: ServiceSpec;
  EndpointSlice: EndpointSliceSpec;
  Pod: PodSpec;
  PodAttachment: PodAttachment;
  Node: NodeSpec;
}

/** Any parsed object the tracker holds. */
export type TrackedObject = TrackedSpecs[ObjectKind];

/**
 * One key whose served state changed, told to {@link ObjectTrackerOptions.onObject}; a union
 * over the kinds, so that `ev.kind === 'Pod'` narrows `previous` and `current` to PodSpec.
 */
export type ObjectEvent = {
  [K in ObjectKind]: {
    kind: K;
    key: string;
    /** The object served before; undefined when absent or invalid. */
    previous: TrackedSpecs[K] | undefined;
    /** The object served now; undefined when deleted or invalid. */
    current: TrackedSpecs[K] | undefined;
    /** The modRevision of the stored value; undefined when the key is gone. */
    modRevision: number | undefined;
  };
}[ObjectKind];

/** The kinds weft-proxy follows, the default of {@link ObjectTrackerOptions.kinds}. */
export const PROXY_KINDS: readonly ObjectKind[] = ['Service', 'EndpointSlice'];

/** The default of {@link ObjectTrackerOptions.invalidMetricName}. */
export const DEFAULT_INVALID_METRIC = 'weft_proxy_invalid_objects';

/** Options of {@link ObjectTracker}. */
export interface ObjectTrackerOptions {
  store: Store;
  /** Registry prefix, e.g. `/weft`. */
  prefix: string;
  log: Logger;
  /** The kinds to follow, one list-and-watch loop each; default Service and EndpointSlice. */
  kinds?: readonly ObjectKind[];
  /** Receives the gauge of invalid objects by kind, named {@link invalidMetricName}. */
  metrics?: Registry;
  /** Name of the invalid-objects gauge; default `weft_proxy_invalid_objects`. */
  invalidMetricName?: string;
  /** Called after the tracked state changed. */
  onChange: (change: ObjectChange) => void;
  /**
   * Called for every key whose served state changed (put, delete, re-list), before the
   * {@link onChange} that reports the change.
   */
  onObject?: (ev: ObjectEvent) => void;
  /**
   * The addresses Services may claim (ClusterIPs within the service CIDRs, externalIPs and
   * LoadBalancer ingress within the allowed CIDRs). A Service breaking it is refused like an
   * invalid one. Undefined: no policy (every valid address is accepted).
   */
  servicePolicy?: ServicePolicy;
  /** Retry delays after registry errors. */
  backoff?: () => Backoff;
  now?: () => number;
}

/** The state of one kind's list-and-watch loop. */
interface Loop {
  kind: ObjectKind;
  prefix: string;
  /** Aborts the current watch or retry wait, so that a requested re-list starts now. */
  wake: AbortController;
  relistRequested: boolean;
  /** Callers of relist() waiting for a listing that starts after their request. */
  waiters: (() => void)[];
}

/** The objects of the registry, kept current. */
export class ObjectTracker {
  readonly #o: ObjectTrackerOptions;
  readonly #kinds: readonly ObjectKind[];
  readonly #objects = new Map<ObjectKind, Map<string, TrackedObject>>();
  readonly #revisions = new Map<string, number>();
  readonly #invalid = new Map<string, InvalidObject>();
  readonly #abort = new AbortController();
  readonly #gauge: Gauge<'kind'> | undefined;
  readonly #now: () => number;
  readonly #policy: CompiledServicePolicy | undefined;
  #loops: Promise<void>[] = [];
  readonly #state: Loop[] = [];
  readonly #listed = new Set<ObjectKind>();
  #onSynced: (() => void) | undefined;
  /** Resolves once every kind has been listed once. */
  readonly synced: Promise<void>;

  constructor(opts: ObjectTrackerOptions) {
    this.#o = opts;
    this.#kinds = [...new Set(opts.kinds ?? PROXY_KINDS)];
    for (const kind of this.#kinds) this.#objects.set(kind, new Map());
    this.#now = opts.now ?? Date.now;
    this.#policy = opts.servicePolicy && compileServicePolicy(opts.servicePolicy);
    this.synced = new Promise((resolve) => (this.#onSynced = resolve));
    if (opts.metrics) {
      const name = opts.invalidMetricName ?? DEFAULT_INVALID_METRIC;
      this.#gauge =
        (opts.metrics.getSingleMetric(name) as Gauge<'kind'> | undefined) ??
        new Gauge<'kind'>({
          name: metricName(name),
          help: 'Objects in the registry that failed validation and are not served, by kind.',
          labelNames: ['kind'],
          registers: [opts.metrics],
        });
      this.#updateGauge();
    }
  }

  /** The valid services. */
  services(): IterableIterator<ServiceSpec> {
    return this.#values('Service');
  }

  /** The valid endpoint slices. */
  slices(): IterableIterator<EndpointSliceSpec> {
    return this.#values('EndpointSlice');
  }

  /** The valid pods (empty unless Pod is among the tracked kinds). */
  pods(): IterableIterator<PodSpec> {
    return this.#values('Pod');
  }

  /** The valid pod attachments (empty unless PodAttachment is tracked). */
  podAttachments(): IterableIterator<PodAttachment> {
    return this.#values('PodAttachment');
  }

  /** The valid nodes (empty unless Node is tracked). */
  nodes(): IterableIterator<NodeSpec> {
    return this.#values('Node');
  }

  /** The parsed object of a key; undefined when absent, invalid or of an untracked kind. */
  get(key: string): TrackedObject | undefined {
    const parsed = parseObjectKey(this.#o.prefix, key);
    return parsed && this.#objects.get(parsed.kind)?.get(key);
  }

  /**
   * The modRevision of the value stored at a tracked key, as last seen (valid or not); undefined
   * when the key is absent. What a compare-and-swap update of that key must expect.
   */
  modRevision(key: string): number | undefined {
    return this.#revisions.get(key);
  }

  /** The objects currently skipped, by key order. */
  invalidObjects(): InvalidObject[] {
    return [...this.#invalid.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** True once every tracked kind has been listed. */
  get isSynced(): boolean {
    return this.#listed.size === this.#kinds.length;
  }

  /** Starts listing and watching; see {@link synced} for the first complete listing. */
  start(): void {
    if (this.#loops.length) return;
    for (const kind of this.#kinds) {
      const loop: Loop = {
        kind,
        prefix: kindPrefix(this.#o.prefix, kind),
        wake: new AbortController(),
        relistRequested: false,
        waiters: [],
      };
      this.#state.push(loop);
    }
    this.#loops = this.#state.map((loop) => this.#follow(loop));
  }

  /**
   * Makes every loop list its prefix again now (interrupting its watch or retry wait); resolves
   * once each has completed a listing that started after this call, so that every write made
   * before the call is in the tracked state. Resolves at once when not started, or when stopped.
   */
  relist(): Promise<void> {
    if (!this.#state.length || this.#abort.signal.aborted) return Promise.resolve();
    return Promise.all(
      this.#state.map(
        (loop) =>
          new Promise<void>((resolve) => {
            loop.waiters.push(resolve);
            loop.relistRequested = true;
            loop.wake.abort();
          }),
      ),
    ).then(() => undefined);
  }

  /** Stops watching. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.all(this.#loops);
    for (const loop of this.#state) for (const w of loop.waiters.splice(0)) w();
  }

  #values<K extends ObjectKind>(kind: K): IterableIterator<TrackedSpecs[K]> {
    const map = (this.#objects.get(kind) ?? new Map<string, TrackedObject>()) as Map<string, TrackedSpecs[K]>;
    return map.values();
  }

  async #follow(loop: Loop): Promise<void> {
    const { kind, prefix } = loop;
    const stopped = this.#abort.signal;
    const backoff = this.#o.backoff?.() ?? new Backoff({ initialMs: 500, maxMs: 10_000 });
    const log = this.#o.log;
    let fromRevision: number | undefined;
    let failures = 0;
    // The loop's signal is its wake controller's, aborted by stop() too (whichever is current).
    stopped.addEventListener('abort', () => loop.wake.abort(), { once: true });
    while (!stopped.aborted) {
      if (loop.wake.signal.aborted) loop.wake = new AbortController();
      const signal = loop.wake.signal;
      if (loop.relistRequested) fromRevision = undefined;
      try {
        if (fromRevision === undefined) {
          // The waiters of this listing: those who asked before it started.
          const waiters = loop.waiters.splice(0);
          loop.relistRequested = false;
          let listing;
          try {
            listing = await this.#o.store.list(prefix);
          } catch (err) {
            loop.waiters.unshift(...waiters);
            if (waiters.length) loop.relistRequested = true;
            throw err;
          }
          if (stopped.aborted) {
            for (const w of waiters) w();
            break;
          }
          const changed = this.#replaceAll(kind, prefix, listing.items);
          fromRevision = listing.revision + 1;
          const first = !this.#listed.has(kind);
          this.#listed.add(kind);
          if (first && this.isSynced) this.#onSynced?.();
          // The first listing is a change even when empty: the sync that follows it makes the node ready.
          if (changed > 0 || first) this.#o.onChange({ kind, seenAt: this.#now(), count: changed });
          for (const w of waiters) w();
        }
        for await (const ev of this.#o.store.watch(prefix, { fromRevision, signal })) {
          backoff.reset();
          if (failures > 0) {
            log.info({ prefix }, 'registry watch resumed');
            failures = 0;
          }
          if (ev.type === 'resync') {
            log.warn({ prefix, reason: ev.reason }, 'registry watch lost history; re-listing');
            fromRevision = undefined;
            break;
          }
          const changed =
            ev.type === 'put' ? this.#put(kind, ev.key, ev.value, ev.revision) : this.#delete(kind, ev.key);
          fromRevision = ev.revision + 1;
          if (changed) this.#o.onChange({ kind, seenAt: this.#now(), count: 1 });
          if (loop.relistRequested) break;
        }
        // A watch that ended by itself (not for a re-list) is resumed, but not in a tight loop.
        if (fromRevision !== undefined && !stopped.aborted && !loop.relistRequested)
          await backoff.wait(signal);
      } catch (err) {
        if (stopped.aborted) break;
        if (loop.relistRequested && loop.wake.signal.aborted) continue;
        failures++;
        // One line when an outage starts, then only now and then: the watch retries every few seconds.
        if (failures === 1 || failures % 10 === 0) {
          log.warn({ prefix, err: messageOf(err), failures }, 'registry unavailable; retrying');
        }
        await backoff.wait(signal).catch(() => undefined);
      }
    }
  }

  /** Replaces the state of one kind with a listing; returns the number of keys that differ. */
  #replaceAll(kind: ObjectKind, prefix: string, items: KeyValue[]): number {
    const seen = new Set<string>();
    let changed = 0;
    for (const kv of items) {
      seen.add(kv.key);
      if (this.#put(kind, kv.key, kv.value, kv.modRevision)) changed++;
    }
    const map = this.#objects.get(kind);
    for (const key of [...(map?.keys() ?? [])]) {
      if (!seen.has(key) && this.#delete(kind, key)) changed++;
    }
    for (const key of [...this.#invalid.keys()]) {
      if (key.startsWith(prefix) && !seen.has(key)) this.#delete(kind, key);
    }
    for (const key of [...this.#revisions.keys()]) {
      if (key.startsWith(prefix) && !seen.has(key)) this.#revisions.delete(key);
    }
    return changed;
  }

  /** Parses a stored value of `kind`; throws WEFT_INVALID_VALUE naming the key and field. */
  #parse(kind: ObjectKind, key: string, namespace: string, name: string, value: string): TrackedObject {
    switch (kind) {
      case 'Service': {
        const svc = parseService(key, namespace, name, value);
        if (this.#policy) checkServicePolicy(key, svc, this.#policy);
        return svc;
      }
      case 'EndpointSlice':
        return parseEndpointSlice(key, namespace, name, value);
      case 'Pod':
        return parsePod(key, namespace, name, value);
      case 'PodAttachment':
        return parsePodAttachment(key, namespace, name, value);
      case 'Node':
        return parseNode(key, name, value);
    }
  }

  /** Applies a stored value; true when the served state changed. */
  #put(kind: ObjectKind, key: string, value: string, revision: number): boolean {
    const parsed = parseObjectKey(this.#o.prefix, key);
    if (!parsed || parsed.kind !== kind) {
      this.#o.log.debug({ key }, 'ignoring key of an unknown shape');
      return false;
    }
    this.#revisions.set(key, revision);
    const map = this.#objects.get(kind) ?? new Map<string, TrackedObject>();
    const previous = map.get(key);
    let current: TrackedObject;
    try {
      current = this.#parse(kind, key, parsed.namespace, parsed.name, value);
    } catch (err) {
      const field = isWeftError(err) && typeof err.details.field === 'string' ? err.details.field : '';
      const bad: InvalidObject = { kind, key, field, message: messageOf(err) };
      const prev = this.#invalid.get(key);
      if (!prev || prev.message !== bad.message) {
        const byPolicy = isWeftError(err) && err.details.policy === true;
        this.#o.log.warn(
          { kind, key, field, err: bad.message },
          byPolicy ? `${kind} refused by the address policy; skipped` : `invalid ${kind} skipped`,
        );
      }
      this.#invalid.set(key, bad);
      this.#updateGauge();
      const changed = map.delete(key);
      if (changed) this.#tell(kind, key, previous, undefined, revision);
      return changed;
    }
    const changed = !sameJson(previous, current);
    map.set(key, current);
    this.#clearInvalid(key);
    if (changed) this.#tell(kind, key, previous, current, revision);
    return changed;
  }

  #delete(kind: ObjectKind, key: string): boolean {
    this.#clearInvalid(key, false);
    this.#revisions.delete(key);
    const map = this.#objects.get(kind);
    const previous = map?.get(key);
    const changed = map?.delete(key) ?? false;
    if (changed) this.#tell(kind, key, previous, undefined, undefined);
    return changed;
  }

  #tell(
    kind: ObjectKind,
    key: string,
    previous: TrackedObject | undefined,
    current: TrackedObject | undefined,
    modRevision: number | undefined,
  ): void {
    if (!this.#o.onObject) return;
    try {
      // The kind and the maps agree by construction: what is stored under a kind is that kind's parse.
      this.#o.onObject({ kind, key, previous, current, modRevision } as ObjectEvent);
    } catch (err) {
      // A consumer's bug must not pass for a registry outage (which would re-list in a loop).
      this.#o.log.error({ kind, key, err: messageOf(err) }, 'onObject failed; the tracker carries on');
    }
  }

  #clearInvalid(key: string, nowValid = true): void {
    const prev = this.#invalid.get(key);
    if (!prev) return;
    this.#invalid.delete(key);
    this.#updateGauge();
    if (nowValid) this.#o.log.info({ kind: prev.kind, key }, `${prev.kind} is valid again`);
  }

  #updateGauge(): void {
    if (!this.#gauge) return;
    const counts = new Map<ObjectKind, number>(this.#kinds.map((k) => [k, 0]));
    for (const bad of this.#invalid.values()) counts.set(bad.kind, (counts.get(bad.kind) ?? 0) + 1);
    for (const [kind, n] of counts) this.#gauge.set({ kind }, n);
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Follows the services and endpoint slices in the registry: one list-then-watch loop per prefix,
 * re-listing when the watch loses history and resuming after outages from the last revision seen.
 * Every stored object is parsed, and every Service checked against the cluster's address policy
 * (./service-policy.ts) when one is given; a bad one is logged with its key and the field at fault, counted,
 * and treated as absent (the object as stored is what counts, so an earlier good version of that
 * key is dropped too), while every other object keeps being served.
 */
import { Backoff } from '../backoff/index.js';
import { isWeftError, messageOf } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import { Gauge, metricName, type Registry } from '../metrics/index.js';
import type { KeyValue, Store } from '../registry/index.js';
import { parseObjectKey, servicesPrefix, sliceKeysPrefix, type ObjectKind } from './keys.js';
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

/** Options of {@link ObjectTracker}. */
export interface ObjectTrackerOptions {
  store: Store;
  /** Registry prefix, e.g. `/weft`. */
  prefix: string;
  log: Logger;
  /** Receives `weft_proxy_invalid_objects`. */
  metrics?: Registry;
  /** Called after the tracked state changed. */
  onChange: (change: ObjectChange) => void;
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

/** The services and slices of the registry, kept current. */
export class ObjectTracker {
  readonly #o: ObjectTrackerOptions;
  readonly #services = new Map<string, ServiceSpec>();
  readonly #slices = new Map<string, EndpointSliceSpec>();
  readonly #invalid = new Map<string, InvalidObject>();
  readonly #abort = new AbortController();
  readonly #gauge: Gauge<'kind'> | undefined;
  readonly #now: () => number;
  readonly #policy: CompiledServicePolicy | undefined;
  #loops: Promise<void>[] = [];
  readonly #listed = new Set<ObjectKind>();
  #onSynced: (() => void) | undefined;
  /** Resolves once both prefixes have been listed once. */
  readonly synced: Promise<void>;

  constructor(opts: ObjectTrackerOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#policy = opts.servicePolicy && compileServicePolicy(opts.servicePolicy);
    this.synced = new Promise((resolve) => (this.#onSynced = resolve));
    if (opts.metrics) {
      const name = 'weft_proxy_invalid_objects';
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
    return this.#services.values();
  }

  /** The valid endpoint slices. */
  slices(): IterableIterator<EndpointSliceSpec> {
    return this.#slices.values();
  }

  /** The objects currently skipped, by key order. */
  invalidObjects(): InvalidObject[] {
    return [...this.#invalid.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** True once both prefixes have been listed. */
  get isSynced(): boolean {
    return this.#listed.size === 2;
  }

  /** Starts listing and watching; see {@link synced} for the first complete listing. */
  start(): void {
    if (this.#loops.length) return;
    this.#loops = [
      this.#follow('Service', servicesPrefix(this.#o.prefix)),
      this.#follow('EndpointSlice', sliceKeysPrefix(this.#o.prefix)),
    ];
  }

  /** Stops watching. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.all(this.#loops);
  }

  async #follow(kind: ObjectKind, prefix: string): Promise<void> {
    const signal = this.#abort.signal;
    const backoff = this.#o.backoff?.() ?? new Backoff({ initialMs: 500, maxMs: 10_000 });
    const log = this.#o.log;
    let fromRevision: number | undefined;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (fromRevision === undefined) {
          const listing = await this.#o.store.list(prefix);
          if (signal.aborted) break;
          const changed = this.#replaceAll(kind, prefix, listing.items);
          fromRevision = listing.revision + 1;
          const first = !this.#listed.has(kind);
          this.#listed.add(kind);
          if (first && this.isSynced) this.#onSynced?.();
          // The first listing is a change even when empty: the sync that follows it makes the node ready.
          if (changed > 0 || first) this.#o.onChange({ kind, seenAt: this.#now(), count: changed });
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
          const changed = ev.type === 'put' ? this.#put(kind, ev.key, ev.value) : this.#delete(kind, ev.key);
          fromRevision = ev.revision + 1;
          if (changed) this.#o.onChange({ kind, seenAt: this.#now(), count: 1 });
        }
        // A watch that ended by itself (not for a re-list) is resumed, but not in a tight loop.
        if (fromRevision !== undefined && !signal.aborted) await backoff.wait(signal);
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        // One line when an outage starts, then only now and then: the watch retries every few seconds.
        if (failures === 1 || failures % 10 === 0) {
          log.warn({ prefix, err: messageOf(err), failures }, 'registry unavailable; retrying');
        }
        await backoff.wait(signal);
      }
    }
  }

  /** Replaces the state of one kind with a listing; returns the number of keys that differ. */
  #replaceAll(kind: ObjectKind, prefix: string, items: KeyValue[]): number {
    const seen = new Set<string>();
    let changed = 0;
    for (const kv of items) {
      seen.add(kv.key);
      if (this.#put(kind, kv.key, kv.value)) changed++;
    }
    const map = kind === 'Service' ? this.#services : this.#slices;
    for (const key of [...map.keys()]) {
      if (!seen.has(key) && this.#delete(kind, key)) changed++;
    }
    for (const key of [...this.#invalid.keys()]) {
      if (key.startsWith(prefix) && !seen.has(key)) this.#delete(kind, key);
    }
    return changed;
  }

  /** Applies a stored value; true when the served state changed. */
  #put(kind: ObjectKind, key: string, value: string): boolean {
    const parsed = parseObjectKey(this.#o.prefix, key);
    if (!parsed || parsed.kind !== kind) {
      this.#o.log.debug({ key }, 'ignoring key of an unknown shape');
      return false;
    }
    try {
      if (kind === 'Service') {
        const svc = parseService(key, parsed.namespace, parsed.name, value);
        if (this.#policy) checkServicePolicy(key, svc, this.#policy);
        const changed = !sameJson(this.#services.get(key), svc);
        this.#services.set(key, svc);
        this.#clearInvalid(key);
        return changed;
      }
      const slice = parseEndpointSlice(key, parsed.namespace, parsed.name, value);
      const changed = !sameJson(this.#slices.get(key), slice);
      this.#slices.set(key, slice);
      this.#clearInvalid(key);
      return changed;
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
      const map: Map<string, unknown> = kind === 'Service' ? this.#services : this.#slices;
      return map.delete(key);
    }
  }

  #delete(kind: ObjectKind, key: string): boolean {
    this.#clearInvalid(key, false);
    const map: Map<string, unknown> = kind === 'Service' ? this.#services : this.#slices;
    return map.delete(key);
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
    let services = 0;
    let slices = 0;
    for (const bad of this.#invalid.values()) {
      if (bad.kind === 'Service') services++;
      else slices++;
    }
    this.#gauge.set({ kind: 'Service' }, services);
    this.#gauge.set({ kind: 'EndpointSlice' }, slices);
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}

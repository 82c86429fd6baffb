/**
 * The endpointslice loop of weft-controller. Object events (from the tracker) and node
 * readiness changes (from the node lifecycle) update a few indexes and queue the Services they
 * affect, and only those: a pod's change queues the Services of its namespace whose selector
 * matched its labels before or after, a node's the Services with pods on it. Workers take
 * Services from the deduplicated queue, plan their slices (./endpoint-slices.ts, pure) and write
 * the plan with fenced writes, so that only the elected leader's writes land.
 *
 * Rules that keep the registry consistent across writers and leaders:
 * - A Service without a selector, and any slice whose managed-by label is not weft-controller,
 *   are never touched. A Service deleted, or without a selector now, loses its managed slices.
 * - A slice is created only if absent, updated only at the modRevision planned from, and deleted
 *   only at the modRevision seen; a write that loses a race queues its Service again with backoff.
 * - After writing, a Service is not planned again until the tracker shows its writes (the
 *   "expectations"): planning from a view without its own new slice would create a second one.
 * - A standby plans nothing. A new leader re-lists first (it sees every write of the leader
 *   before it), then queues every Service.
 */
import { Backoff } from '../backoff/index.js';
import { monotonicClock, type MonotonicClock } from '../clock/index.js';
import { ErrorCodes, isWeftError, messageOf } from '../errors/index.js';
import {
  ZONE_LABEL,
  effectivePod,
  podAttachmentKey,
  podKey,
  selectorMatches,
  serviceKey,
  sliceKey,
  nodeKey,
  type EffectivePod,
  type EndpointSliceSpec,
  type NodeSpec,
  type ObjectEvent,
  type ObjectKind,
  type TrackedObject,
  type PodAttachment,
  type PodSpec,
  type ServiceSpec,
} from '../k8s/index.js';
import type { Logger } from '../log/index.js';
import { Counter, Gauge, Histogram, metricName, type Registry } from '../metrics/index.js';
import type { Store, WriteGuard } from '../registry/index.js';
import {
  CONTROLLER_NAME,
  generateSliceName,
  planSlices,
  type ExistingSlice,
  type SlicePlan,
  type SliceWrite,
} from './endpoint-slices.js';
import { WorkQueue } from './work-queue.js';

/** What the loop reads from the tracker. */
export interface ControllerObjects {
  /** The parsed, valid object at `key`, or undefined. */
  get(key: string): TrackedObject | undefined;
  /** The modRevision of the stored value at a tracked key. */
  modRevision(key: string): number | undefined;
  /** Re-lists everything; resolves once every kind has been re-listed. */
  relist(): Promise<void>;
}

/** The leadership the loop writes under. */
export interface ControllerLeadership {
  isLeader(): boolean;
  /** The fence for writes; undefined when not leader or when the last renewal is too old. */
  guard(): WriteGuard | undefined;
}

/** Options of {@link SliceController}. */
export interface SliceControllerOptions {
  store: Store;
  /** Registry prefix, `/weft`. */
  prefix: string;
  objects: ControllerObjects;
  /** Undefined: no election, this controller always writes, unfenced (`--leader-elect=false`). */
  leadership?: ControllerLeadership | undefined;
  /** False for a node whose heartbeat is gone past the grace period. Default: every node ready. */
  nodeReady?: (node: string) => boolean;
  /** True for a node neither present nor within its grace (see NodeLifecycle.isUnknown). */
  nodeUnknown?: (node: string) => boolean;
  /** `--max-endpoints-per-slice`. */
  maxEndpointsPerSlice: number;
  /** Services synced at once. Default 5. */
  concurrency?: number;
  log: Logger;
  metrics?: Registry;
  /** Default the process's monotonic clock. */
  clock?: MonotonicClock;
  /** Delays of a Service's retries after a failed write. */
  backoff?: () => Backoff;
  /** Names created slices. Default {@link generateSliceName}. */
  newName?: (service: string) => string;
  /**
   * How long a Service waits for the tracker to show its own writes before it is planned anyway
   * (a watch that lost them re-lists, which shows them too). Default 10 s.
   */
  expectationTimeoutMs?: number;
}

/** A write the tracker has not shown yet. */
interface Expectation {
  /** The modRevision written (create, update), or `deleted` with the revision deleted at. */
  op: 'put' | 'deleted';
  revision: number;
  at: number;
}

/** Outcome of one write. */
type WriteOutcome = 'ok' | 'conflict' | 'fenced';

/** The kinds the loop follows. */
export const CONTROLLER_KINDS: readonly ObjectKind[] = [
  'Service',
  'EndpointSlice',
  'Pod',
  'PodAttachment',
  'Node',
];

/** How often a Service waiting for its own writes to show checks the tracker again. */
const EXPECTATION_RECHECK_MS = 100;

const serviceId = (namespace: string, name: string): string => `${namespace}/${name}`;

function splitId(id: string): [string, string] {
  const i = id.indexOf('/');
  return [id.slice(0, i), id.slice(i + 1)];
}

/** The loop's metrics. */
class LoopMetrics {
  readonly leader: Gauge;
  readonly syncs: Counter;
  readonly written: Counter<'op'>;
  readonly latency: Histogram;

  constructor(registry: Registry | undefined, depth: () => number) {
    const registers = registry ? [registry] : [];
    this.leader = new Gauge({
      name: metricName('weft_controller_leader'),
      help: '1 while this controller is the elected leader (the one that writes slices), else 0.',
      registers,
    });
    this.syncs = new Counter({
      name: metricName('weft_controller_syncs_total'),
      help: 'Services whose slices were planned (and written when they changed).',
      registers,
    });
    this.written = new Counter<'op'>({
      name: metricName('weft_controller_slices_written_total'),
      help: 'EndpointSlice writes acknowledged by the registry, by op (create, update, delete).',
      labelNames: ['op'],
      registers,
    });
    for (const op of ['create', 'update', 'delete']) this.written.inc({ op }, 0);
    new Gauge({
      name: metricName('weft_controller_queue_depth'),
      help: 'Services waiting to be synced.',
      registers,
      collect() {
        this.set(depth());
      },
    });
    this.latency = new Histogram({
      name: metricName('weft_controller_selector_to_slice_seconds'),
      help:
        'From a change seen by the controller (pod, service, node) to the slice writes it caused ' +
        'acknowledged by the registry.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
  }
}

/** The endpointslice loop; see the file comment. */
export class SliceController {
  readonly #o: SliceControllerOptions;
  readonly #clock: MonotonicClock;
  readonly #queue = new WorkQueue();
  readonly #metrics: LoopMetrics;
  readonly #concurrency: number;
  /** Per namespace, the Services with a selector: name → selector. */
  readonly #selectors = new Map<string, Map<string, Readonly<Record<string, string>>>>();
  /** Per namespace, the names of the declared (valid) pods. */
  readonly #pods = new Map<string, Set<string>>();
  /** The node of each declared pod (`ns/name`), from its spec or its attachment. */
  readonly #podNode = new Map<string, string>();
  /** Per node, its pods (`ns/name`). */
  readonly #nodePods = new Map<string, Set<string>>();
  /** Per Service (`ns/name`), the keys of the slices managed by weft-controller. */
  readonly #managed = new Map<string, Set<string>>();
  /** Per Service, its writes not yet shown by the tracker, by slice key. */
  readonly #expected = new Map<string, Map<string, Expectation>>();
  /** Services waiting for their expectations, with the seenAt to queue them with. */
  readonly #deferred = new Map<string, number>();
  readonly #retries = new Map<string, Backoff>();
  /** Leader and re-listed for this term: workers may write. */
  #active = false;
  #leader = false;
  #term = 0;
  #running = 0;
  #started = false;
  #stopped = false;
  #idleWaiters: Array<() => void> = [];
  #lastSyncAt: number | undefined;

  constructor(opts: SliceControllerOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? monotonicClock;
    this.#concurrency = Math.max(1, opts.concurrency ?? 5);
    this.#metrics = new LoopMetrics(opts.metrics, () => this.#queue.depth);
  }

  /** When the last sync of a Service ended well (ms since the epoch, for status records). */
  get lastSyncAt(): number | undefined {
    return this.#lastSyncAt;
  }

  /** Services waiting to be synced. */
  get queueDepth(): number {
    return this.#queue.depth;
  }

  /** True while this controller may write (leader, and re-listed since it became one). */
  get active(): boolean {
    return this.#active;
  }

  /** True while the workers run (started and not stopped). */
  get running(): boolean {
    return this.#started && !this.#stopped;
  }

  /** Starts the workers; nothing is written until {@link setLeader}(true). */
  start(): void {
    this.#started = true;
    if (!this.#o.leadership) void this.setLeader(true);
  }

  /** Stops taking work; resolves once the syncs in flight have ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#active = false;
    this.#queue.clear();
    if (this.#running > 0) await new Promise<void>((r) => this.#idleWaiters.push(r));
  }

  /** Resolves once no Service waits or is being synced (tests). */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((r) => this.#idleWaiters.push(r));
  }

  #isIdle(): boolean {
    return this.#running === 0 && (this.#queue.depth === 0 || !this.#active);
  }

  /**
   * Leadership changed. A new leader re-lists (so that it plans from every write made before its
   * election) and then queues every Service; a standby drops its queue.
   */
  async setLeader(leader: boolean): Promise<void> {
    this.#term++;
    const term = this.#term;
    this.#leader = leader;
    this.#active = false;
    this.#metrics.leader.set(leader ? 1 : 0);
    this.#queue.clear();
    this.#expected.clear();
    this.#deferred.clear();
    this.#retries.clear();
    if (!leader) {
      this.#o.log.info('standing by: not the leader, writing nothing');
      this.#wakeIdle();
      return;
    }
    this.#o.log.info('leading: re-listing, then syncing every Service');
    const backoff = this.#o.backoff?.() ?? new Backoff({ initialMs: 200, maxMs: 5_000 });
    for (;;) {
      try {
        await this.#o.objects.relist();
        break;
      } catch (err) {
        if (term !== this.#term || this.#stopped) return;
        this.#o.log.warn({ err: messageOf(err) }, 're-list failed; retrying');
        await backoff.wait();
      }
    }
    if (term !== this.#term || this.#stopped) return;
    this.#active = true;
    this.resyncAll();
  }

  /** Queues every Service with a selector and every Service with managed slices. */
  resyncAll(): void {
    const now = this.#clock.now();
    for (const [ns, services] of this.#selectors) {
      for (const name of services.keys()) this.#enqueue(serviceId(ns, name), now);
    }
    for (const id of this.#managed.keys()) this.#enqueue(id, now);
  }

  /** A tracked object changed (the tracker's `onObject`). */
  onObject(ev: ObjectEvent): void {
    const now = this.#clock.now();
    switch (ev.kind) {
      case 'Service':
        return this.#onService(ev.previous, ev.current, now);
      case 'Pod':
        return this.#onPod(ev.previous, ev.current, now);
      case 'PodAttachment':
        return this.#onAttachment(ev.previous, ev.current, now);
      case 'Node':
        return this.#onNode(ev.previous, ev.current, now);
      case 'EndpointSlice':
        return this.#onSlice(ev.key, ev.previous, ev.current, ev.modRevision, now);
    }
  }

  /**
   * A node's readiness changed: its pods' Services are queued. `undefined`: every node never seen
   * (the controller's start grace ended).
   */
  onNodeChange(node: string | undefined): void {
    const now = this.#clock.now();
    if (node !== undefined) return this.#enqueueNode(node, now);
    const unknown = this.#o.nodeUnknown ?? (() => true);
    for (const n of this.#nodePods.keys()) if (unknown(n)) this.#enqueueNode(n, now);
  }

  #onService(prev: ServiceSpec | undefined, cur: ServiceSpec | undefined, now: number): void {
    const spec = cur ?? prev;
    if (!spec) return;
    const id = serviceId(spec.namespace, spec.name);
    let byName = this.#selectors.get(spec.namespace);
    if (cur?.selector) {
      if (!byName) this.#selectors.set(spec.namespace, (byName = new Map()));
      byName.set(spec.name, cur.selector);
    } else if (byName) {
      byName.delete(spec.name);
      if (byName.size === 0) this.#selectors.delete(spec.namespace);
    }
    // Without a selector before or after, and no slices of ours, the Service is not ours.
    if (prev?.selector || cur?.selector || this.#managed.has(id)) this.#enqueue(id, now);
  }

  #onPod(prev: PodSpec | undefined, cur: PodSpec | undefined, now: number): void {
    const spec = cur ?? prev;
    if (!spec) return;
    const { namespace: ns, name } = spec;
    let names = this.#pods.get(ns);
    if (cur) {
      if (!names) this.#pods.set(ns, (names = new Set()));
      names.add(name);
    } else if (names) {
      names.delete(name);
      if (names.size === 0) this.#pods.delete(ns);
    }
    this.#reindexPod(ns, name, cur);
    this.#enqueueMatching(ns, [prev?.labels, cur?.labels], now);
  }

  #onAttachment(prev: PodAttachment | undefined, cur: PodAttachment | undefined, now: number): void {
    const spec = cur ?? prev;
    if (!spec) return;
    const pod = this.#o.objects.get(podKey(this.#o.prefix, spec.namespace, spec.name)) as PodSpec | undefined;
    this.#reindexPod(spec.namespace, spec.name, pod, cur ?? null);
    // An attachment without its pod declared is no endpoint: nothing to queue.
    if (pod) this.#enqueueMatching(spec.namespace, [pod.labels], now);
  }

  #onNode(prev: NodeSpec | undefined, cur: NodeSpec | undefined, now: number): void {
    const spec = cur ?? prev;
    if (!spec) return;
    if (prev?.labels[ZONE_LABEL] === cur?.labels[ZONE_LABEL]) return;
    this.#enqueueNode(spec.name, now);
  }

  #onSlice(
    key: string,
    prev: EndpointSliceSpec | undefined,
    cur: EndpointSliceSpec | undefined,
    modRevision: number | undefined,
    now: number,
  ): void {
    const owners = new Set<string>();
    for (const s of [prev, cur]) {
      if (s?.managedBy === CONTROLLER_NAME) owners.add(serviceId(s.namespace, s.serviceName));
    }
    if (prev?.managedBy === CONTROLLER_NAME) {
      const id = serviceId(prev.namespace, prev.serviceName);
      const set = this.#managed.get(id);
      set?.delete(key);
      if (set?.size === 0) this.#managed.delete(id);
    }
    if (cur?.managedBy === CONTROLLER_NAME) {
      const id = serviceId(cur.namespace, cur.serviceName);
      let set = this.#managed.get(id);
      if (!set) this.#managed.set(id, (set = new Set()));
      set.add(key);
    }
    for (const id of owners) {
      // Our own write coming back needs no sync; anyone else's change to our slice does (drift).
      if (this.#observed(id, key, cur !== undefined, modRevision)) continue;
      this.#enqueue(id, now);
    }
  }

  /**
   * Marks an expectation of `id` on `key` met by this event; true when the event was exactly our
   * own write. A Service deferred on its expectations is queued once they are all met.
   */
  #observed(id: string, key: string, present: boolean, modRevision: number | undefined): boolean {
    const expected = this.#expected.get(id);
    const e = expected?.get(key);
    if (!expected || !e) return false;
    let own = false;
    if (e.op === 'put') {
      if (present && modRevision !== undefined && modRevision < e.revision) return false;
      own = present && modRevision === e.revision;
    } else {
      if (present && modRevision !== undefined && modRevision <= e.revision) return false;
      own = !present;
    }
    expected.delete(key);
    if (expected.size === 0) {
      this.#expected.delete(id);
      const seenAt = this.#deferred.get(id);
      if (seenAt !== undefined) {
        this.#deferred.delete(id);
        this.#enqueue(id, seenAt);
      }
    }
    return own;
  }

  /**
   * Re-files a pod under its node: its spec's nodeName, else its attachment's node. The object
   * that changed is passed; the other is read from the tracker.
   */
  #reindexPod(ns: string, name: string, pod: PodSpec | undefined, attachment?: PodAttachment | null): void {
    const id = serviceId(ns, name);
    const { objects, prefix } = this.#o;
    const att =
      attachment === undefined
        ? (objects.get(podAttachmentKey(prefix, ns, name)) as PodAttachment | undefined)
        : (attachment ?? undefined);
    const node = pod ? (pod.nodeName ?? att?.node) : undefined;
    const before = this.#podNode.get(id);
    if (before === node) return;
    if (before !== undefined) {
      const set = this.#nodePods.get(before);
      set?.delete(id);
      if (set?.size === 0) this.#nodePods.delete(before);
      this.#podNode.delete(id);
    }
    if (node !== undefined) {
      this.#podNode.set(id, node);
      let set = this.#nodePods.get(node);
      if (!set) this.#nodePods.set(node, (set = new Set()));
      set.add(id);
    }
  }

  /** Queues the Services of `ns` whose selector matches any of the label sets. */
  #enqueueMatching(
    ns: string,
    labelSets: readonly (Readonly<Record<string, string>> | undefined)[],
    now: number,
  ): void {
    const services = this.#selectors.get(ns);
    if (!services) return;
    for (const [name, selector] of services) {
      if (labelSets.some((labels) => labels !== undefined && selectorMatches(selector, labels))) {
        this.#enqueue(serviceId(ns, name), now);
      }
    }
  }

  /** Queues the Services selecting pods on `node`. */
  #enqueueNode(node: string, now: number): void {
    const pods = this.#nodePods.get(node);
    if (!pods) return;
    for (const id of pods) {
      const [ns, name] = splitId(id);
      const pod = this.#o.objects.get(podKey(this.#o.prefix, ns, name)) as PodSpec | undefined;
      if (pod) this.#enqueueMatching(ns, [pod.labels], now);
    }
  }

  #enqueue(id: string, seenAt: number): void {
    if (!this.#leader || this.#stopped) return;
    if (this.#waiting(id)) return this.#defer(id, seenAt);
    this.#queue.add(id, seenAt);
    this.#pump();
  }

  /**
   * True when the tracker has not shown some of `id`'s own writes yet. Expectations the tracker
   * shows (its event may have come before the write's answer) and expired ones are dropped.
   */
  #waiting(id: string): boolean {
    const expected = this.#expected.get(id);
    if (!expected) return false;
    const now = this.#clock.now();
    const timeout = this.#o.expectationTimeoutMs ?? 10_000;
    for (const [key, e] of expected) {
      if (this.#shown(key, e)) expected.delete(key);
      else if (now - e.at >= timeout) {
        this.#o.log.warn({ service: id, key }, 'own slice write not seen in time; planning without it');
        expected.delete(key);
      }
    }
    if (expected.size > 0) return true;
    this.#expected.delete(id);
    return false;
  }

  /** Whether the tracker's view already includes the write `e` made to `key`. */
  #shown(key: string, e: Expectation): boolean {
    const rev = this.#o.objects.modRevision(key);
    return e.op === 'put' ? rev !== undefined && rev >= e.revision : rev === undefined || rev > e.revision;
  }

  /**
   * Holds `id` until its expectations are met, or they expire. The event showing the write queues
   * it at once; a write the tracker shows without an event (a rewrite parsing to the same slice)
   * is caught by checking again now and then.
   */
  #defer(id: string, seenAt: number): void {
    const prev = this.#deferred.get(id);
    this.#deferred.set(id, prev === undefined ? seenAt : Math.min(prev, seenAt));
    const recheck = Math.min(EXPECTATION_RECHECK_MS, this.#o.expectationTimeoutMs ?? 10_000);
    this.#queue.addAfter(id, seenAt, recheck, () => this.#pump());
  }

  #pump(): void {
    while (this.#active && !this.#stopped && this.#running < this.#concurrency) {
      const item = this.#queue.take();
      if (!item) break;
      this.#running++;
      const term = this.#term;
      void this.#sync(item.key, item.seenAt, term)
        .catch((err: unknown) => {
          this.#o.log.error({ service: item.key, err: messageOf(err) }, 'service sync failed');
          this.#retry(item.key, item.seenAt, term);
        })
        .finally(() => {
          this.#running--;
          this.#queue.done(item.key);
          this.#pump();
          this.#wakeIdle();
        });
    }
  }

  #wakeIdle(): void {
    if (!this.#isIdle()) return;
    for (const w of this.#idleWaiters.splice(0)) w();
  }

  /** Queues `id` again after its backoff (a lost race, an unreachable registry). */
  #retry(id: string, seenAt: number, term: number): void {
    if (term !== this.#term || !this.#leader || this.#stopped) return;
    let b = this.#retries.get(id);
    if (!b)
      this.#retries.set(id, (b = this.#o.backoff?.() ?? new Backoff({ initialMs: 100, maxMs: 10_000 })));
    this.#queue.addAfter(id, seenAt, b.next(), () => this.#pump());
  }

  /** The fence of this term's writes; `renewing` when the leader's renewal is overdue. */
  #fence(): { guard: WriteGuard | undefined } | 'standby' | 'renewing' {
    const l = this.#o.leadership;
    if (!l) return { guard: undefined };
    const guard = l.guard();
    if (guard) return { guard };
    return l.isLeader() ? 'renewing' : 'standby';
  }

  async #sync(id: string, seenAt: number, term: number): Promise<void> {
    const fence = this.#fence();
    if (fence === 'standby') return;
    if (fence === 'renewing') return this.#retry(id, seenAt, term);
    if (this.#waiting(id)) return this.#defer(id, seenAt);
    this.#deferred.delete(id);
    this.#metrics.syncs.inc();
    const plan = this.#plan(id);
    if (plan.create.length + plan.update.length + plan.delete.length === 0) {
      this.#retries.delete(id);
      this.#lastSyncAt = Date.now();
      return;
    }
    const outcome = await this.#apply(id, plan, fence.guard, term);
    if (outcome === 'ok') {
      this.#retries.delete(id);
      this.#lastSyncAt = Date.now();
      this.#metrics.latency.observe((this.#clock.now() - seenAt) / 1000);
      return;
    }
    // Fenced: the election key no longer holds this term. The elector notices at its next
    // renewal and ends the term (which drops the queue); until then the Service waits its backoff.
    if (outcome === 'fenced')
      this.#o.log.info({ service: id }, 'slice write fenced off: no longer the leader');
    this.#retry(id, seenAt, term);
  }

  /** The plan for one Service: its slices from its pods, or none when it is gone or selector-less. */
  #plan(id: string): SlicePlan {
    const [ns, name] = splitId(id);
    const { objects, prefix } = this.#o;
    const existing: ExistingSlice[] = [];
    for (const key of this.#managed.get(id) ?? []) {
      const spec = objects.get(key) as EndpointSliceSpec | undefined;
      const modRevision = objects.modRevision(key);
      if (spec && modRevision !== undefined) existing.push({ spec, modRevision });
    }
    const service = objects.get(serviceKey(prefix, ns, name)) as ServiceSpec | undefined;
    const selector = service?.selector;
    if (!service || !selector) return { create: [], update: [], delete: existing };
    const pods: EffectivePod[] = [];
    for (const podName of this.#pods.get(ns) ?? []) {
      const pod = objects.get(podKey(prefix, ns, podName)) as PodSpec | undefined;
      if (!pod || !selectorMatches(selector, pod.labels)) continue;
      const att = objects.get(podAttachmentKey(prefix, ns, podName)) as PodAttachment | undefined;
      pods.push(effectivePod(pod, att));
    }
    const nodeReady = this.#o.nodeReady ?? (() => true);
    return planSlices(
      {
        service,
        pods,
        nodeZone: (node) => (objects.get(nodeKey(prefix, node)) as NodeSpec | undefined)?.labels[ZONE_LABEL],
        nodeReady,
        maxEndpointsPerSlice: this.#o.maxEndpointsPerSlice,
      },
      existing,
      this.#o.newName ?? ((svc) => generateSliceName(svc)),
    );
  }

  /**
   * Writes a plan: creates and updates at once, then (only when all of them landed, so that no
   * endpoint is left without a slice meanwhile) the deletes.
   */
  async #apply(
    id: string,
    plan: SlicePlan,
    guard: WriteGuard | undefined,
    term: number,
  ): Promise<WriteOutcome> {
    const [ns] = splitId(id);
    const writes = [
      ...plan.create.map((w) => this.#write(id, ns, w, 'create', guard, term)),
      ...plan.update.map((w) => this.#write(id, ns, w, 'update', guard, term)),
    ];
    const first = worst(await Promise.all(writes));
    if (first !== 'ok') return first;
    const deletes = plan.delete.map((s) =>
      this.#delete(id, sliceKey(this.#o.prefix, s.spec.namespace, s.spec.name), s.modRevision, guard, term),
    );
    return worst(await Promise.all(deletes));
  }

  async #write(
    id: string,
    ns: string,
    w: SliceWrite,
    op: 'create' | 'update',
    guard: WriteGuard | undefined,
    term: number,
  ): Promise<WriteOutcome> {
    const key = sliceKey(this.#o.prefix, ns, w.name);
    const { store } = this.#o;
    try {
      let revision: number | undefined;
      if (op === 'create') {
        const r = await store.create(key, w.value, guard ? { guard } : {});
        if (r.created) revision = r.revision;
        else this.#o.log.debug({ service: id, key }, 'slice name taken; planning again');
      } else {
        const r = await store.update(
          key,
          w.value,
          { modRevision: w.modRevision ?? 0 },
          guard ? { guard } : {},
        );
        if (r.updated) revision = r.revision;
        else this.#o.log.debug({ service: id, key }, 'slice changed since planned; planning again');
      }
      if (revision === undefined) return 'conflict';
      this.#metrics.written.inc({ op });
      this.#expect(id, key, { op: 'put', revision, at: this.#clock.now() }, term);
      return 'ok';
    } catch (err) {
      return this.#writeError(id, key, err);
    }
  }

  async #delete(
    id: string,
    key: string,
    modRevision: number,
    guard: WriteGuard | undefined,
    term: number,
  ): Promise<WriteOutcome> {
    try {
      const deleted = await this.#o.store.delete(key, { modRevision }, guard ? { guard } : undefined);
      if (!deleted) {
        this.#o.log.debug({ service: id, key }, 'slice changed or gone since planned; planning again');
        return 'conflict';
      }
      this.#metrics.written.inc({ op: 'delete' });
      this.#expect(id, key, { op: 'deleted', revision: modRevision, at: this.#clock.now() }, term);
      return 'ok';
    } catch (err) {
      return this.#writeError(id, key, err);
    }
  }

  #expect(id: string, key: string, e: Expectation, term: number): void {
    // A write of an earlier term: the new term re-listed and starts without expectations.
    if (term !== this.#term || this.#shown(key, e)) return;
    let m = this.#expected.get(id);
    if (!m) this.#expected.set(id, (m = new Map()));
    m.set(key, e);
  }

  #writeError(id: string, key: string, err: unknown): WriteOutcome {
    if (isWeftError(err, ErrorCodes.FENCED)) return 'fenced';
    if (isWeftError(err, ErrorCodes.CONFLICT) || isWeftError(err, ErrorCodes.ALREADY_EXISTS))
      return 'conflict';
    this.#o.log.warn({ service: id, key, err: messageOf(err) }, 'slice write failed; retrying');
    return 'conflict';
  }
}

/** The outcome of several writes: fenced over conflict over ok. */
function worst(outcomes: readonly WriteOutcome[]): WriteOutcome {
  if (outcomes.includes('fenced')) return 'fenced';
  if (outcomes.includes('conflict')) return 'conflict';
  return 'ok';
}

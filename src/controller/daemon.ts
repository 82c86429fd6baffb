/**
 * weft-controller's imperative shell: opens the registry, runs the object tracker, the node
 * lifecycle, the leader election and the endpointslice loop, and the health, metrics and status
 * record. Decisions live in the loop (./controller.ts), the slice planner and the node presence
 * state; this file only sequences I/O.
 */
import type { Registry } from 'prom-client';
import { Backoff } from '../backoff/index.js';
import { openStoreFromFlags } from '../cli/registry-flags.js';
import { weftVersion } from '../cli/version.js';
import { LeaderElector } from '../election/index.js';
import { ErrorCodes, isWeftError, messageOf } from '../errors/index.js';
import { startHealthServer, type CheckResult, type HealthServer } from '../health/index.js';
import { ObjectTracker } from '../k8s/index.js';
import { rootLogger, type Logger } from '../log/index.js';
import { createRegistry } from '../metrics/index.js';
import { StatusPublisher, healthUrl } from '../node-status/index.js';
import type { Store } from '../registry/index.js';
import { sdNotify } from '../systemd/index.js';
import { CONTROLLER_KINDS, SliceController } from './controller.js';
import type { ControllerConfig } from './flags.js';
import { NodeLifecycle } from './node-lifecycle.js';

/** How often a standby reads who leads, for its status record. */
const HOLDER_POLL_MS = 5_000;

/** Options of {@link WeftController}. */
export interface WeftControllerOptions {
  config: ControllerConfig;
  /** Use this store instead of opening one from the flags (tests, embedding). Not closed. */
  store?: Store;
  /** Prometheus registry; default a fresh one with process metrics. */
  metrics?: Registry;
  /** Parent of the components' loggers. Default the root logger. */
  logger?: Logger;
}

/** A running weft-controller. */
export class WeftController {
  readonly #o: WeftControllerOptions;
  readonly #root: Logger;
  readonly #log: Logger;
  readonly #metrics: Registry;
  readonly #closers: Array<() => Promise<void>> = [];
  readonly #stopping = new AbortController();
  #tracker: ObjectTracker | undefined;
  #loop: SliceController | undefined;
  #lifecycle: NodeLifecycle | undefined;
  #elector: LeaderElector | undefined;
  #publisher: StatusPublisher | undefined;
  #healthz: HealthServer | undefined;
  #metricsServer: HealthServer | undefined;
  #holder: string | undefined;
  #stopped = false;

  constructor(opts: WeftControllerOptions) {
    this.#o = opts;
    this.#root = opts.logger ?? rootLogger();
    this.#log = this.#component('controller');
    this.#metrics = opts.metrics ?? createRegistry({ processMetrics: true });
  }

  #component(component: string): Logger {
    return this.#root.child({ component });
  }

  get metrics(): Registry {
    return this.#metrics;
  }

  /** Port of /healthz, when it listens. */
  get healthzPort(): number | undefined {
    return this.#healthz?.port;
  }

  /** Port of /metrics, when it listens on its own port. */
  get metricsPort(): number | undefined {
    return this.#metricsServer?.port;
  }

  /** The endpointslice loop, once started. */
  get loop(): SliceController | undefined {
    return this.#loop;
  }

  /** The object tracker, once started. */
  get tracker(): ObjectTracker | undefined {
    return this.#tracker;
  }

  /** True while this controller is the leader (always, without election). */
  get leader(): boolean {
    return this.#elector ? this.#elector.isLeader() : this.#loop?.active === true;
  }

  /**
   * Starts everything and resolves once running: the objects are being listed, the election
   * runs once they are. Throws, after closing what it opened, when a listener cannot bind.
   */
  async start(): Promise<void> {
    const { config } = this.#o;
    const { flags } = config;
    try {
      await this.#listen();
      const store = this.#o.store ?? (await this.#openStore());
      if (!store) return;
      if (!this.#o.store) this.#closers.push(() => store.close());

      const lifecycle = new NodeLifecycle({
        store,
        statusPrefix: flags.statusPrefix,
        gracePeriodMs: config.nodeMonitorGracePeriodMs,
        log: this.#component('node-lifecycle'),
        onChange: (node) => this.#loop?.onNodeChange(node),
      });
      this.#lifecycle = lifecycle;

      const tracker = new ObjectTracker({
        store,
        prefix: flags.registryPrefix,
        kinds: CONTROLLER_KINDS,
        log: this.#component('tracker'),
        metrics: this.#metrics,
        invalidMetricName: 'weft_controller_invalid_objects',
        onObject: (ev) => this.#loop?.onObject(ev),
        onChange: () => undefined,
      });
      this.#tracker = tracker;

      const elector = flags.leaderElect
        ? new LeaderElector({
            store,
            key: config.electionKey,
            identity: config.identity,
            // Registry TTLs are whole seconds (etcd leases).
            leaseSeconds: Math.max(1, Math.ceil(config.leaseDurationMs / 1000)),
            renewDeadlineSeconds: config.renewDeadlineMs / 1000,
            retryPeriodMs: config.retryPeriodMs,
            // The elector names its own component.
            log: this.#root,
            onChange: (leader) => this.#onLeadership(leader),
          })
        : undefined;
      this.#elector = elector;

      const loop = new SliceController({
        store,
        prefix: flags.registryPrefix,
        objects: tracker,
        leadership: elector,
        nodeReady: (node) => lifecycle.nodeReady(node),
        nodeUnknown: (node) => lifecycle.isUnknown(node),
        maxEndpointsPerSlice: flags.maxEndpointsPerSlice,
        concurrency: flags.concurrentServiceEndpointSyncs,
        log: this.#component('endpointslice'),
        metrics: this.#metrics,
      });
      this.#loop = loop;

      // Stopped in reverse: the election resigns first (a standby takes over at once), then the
      // loop drains, then the watches end.
      this.#closers.push(() => tracker.stop());
      this.#closers.push(() => lifecycle.stop());
      this.#closers.push(() => loop.stop());
      this.#startStatus(store);
      lifecycle.start();
      tracker.start();
      void tracker.synced.then(() => {
        if (this.#stopped) return;
        this.#log.info(
          { identity: config.identity, leaderElect: flags.leaderElect, key: config.electionKey },
          'objects listed; ready',
        );
        void sdNotify({ READY: '1', STATUS: flags.leaderElect ? 'synced; electing' : 'synced' });
        loop.start();
        if (elector) {
          elector.start();
          this.#closers.push(() => elector.stop());
        }
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async #listen(): Promise<void> {
    const { config } = this.#o;
    const sameAddress =
      config.healthz &&
      config.metrics &&
      config.healthz.host === config.metrics.host &&
      config.healthz.port === config.metrics.port &&
      config.healthz.port !== 0;
    if (config.healthz) {
      this.#healthz = await startHealthServer({
        host: config.healthz.host,
        port: config.healthz.port,
        ...(sameAddress && { registry: this.#metrics }),
        checks: {
          '/healthz': () => this.#liveness(),
          '/livez': () => ({ ok: true }),
          '/readyz': () => this.#readiness(),
        },
      });
      const s = this.#healthz;
      this.#closers.push(() => s.close());
      this.#log.info({ host: s.host, port: s.port }, 'healthz listener up');
    }
    if (config.metrics && !sameAddress) {
      this.#metricsServer = await startHealthServer({
        host: config.metrics.host,
        port: config.metrics.port,
        registry: this.#metrics,
        checks: {},
      });
      const s = this.#metricsServer;
      this.#closers.push(() => s.close());
      this.#log.info({ host: s.host, port: s.port }, 'metrics listener up');
    }
  }

  #onLeadership(leader: boolean): void {
    const { identity } = this.#o.config;
    this.#log.info({ identity, leader }, leader ? 'elected leader' : 'not the leader');
    if (leader) this.#holder = identity;
    void this.#loop?.setLeader(leader);
    void this.#publisher?.publish();
  }

  /** The record `weftctl status` lists this controller by; a standby learns who leads by polling. */
  #startStatus(store: Store): void {
    const { config } = this.#o;
    const publisher = new StatusPublisher({
      store,
      prefix: config.flags.statusPrefix,
      node: config.nodeName,
      daemon: 'weft-controller',
      version: weftVersion(),
      ...(this.#healthz && { health: healthUrl(this.#healthz.host, this.#healthz.port) }),
      logger: this.#component('status'),
      snapshot: () => {
        const r = this.#readiness();
        const leader = this.leader;
        return {
          ready: r.ok,
          reason: r.ok ? undefined : r.reason,
          lastSyncMs: this.#loop?.lastSyncAt,
          detail: {
            leader: leader ? 'yes' : 'no',
            identity: config.identity,
            ...((leader ? config.identity : this.#holder) !== undefined && {
              holder: (leader ? config.identity : this.#holder) as string,
            }),
          },
        };
      },
    });
    this.#publisher = publisher;
    publisher.start();
    this.#closers.push(() => publisher.stop());
    if (!config.flags.leaderElect) return;
    const poll = async (): Promise<void> => {
      try {
        const h = await LeaderElector.holder(store, config.electionKey);
        const holder = h?.identity;
        if (holder !== this.#holder) {
          this.#holder = holder;
          void publisher.publish();
        }
      } catch (err) {
        this.#log.debug({ err: messageOf(err) }, 'could not read the election key');
      }
    };
    void poll();
    const timer = setInterval(() => void poll(), HOLDER_POLL_MS);
    timer.unref();
    this.#closers.push(async () => clearInterval(timer));
  }

  /** The registry, waited for as weft-proxy does; undefined when stopped meanwhile. */
  async #openStore(): Promise<Store | undefined> {
    const backoff = new Backoff({ initialMs: 500, maxMs: 10_000 });
    const signal = this.#stopping.signal;
    while (!signal.aborted) {
      try {
        return await openStoreFromFlags(this.#o.config.flags, this.#component('registry'), this.#metrics);
      } catch (err) {
        if (isWeftError(err, ErrorCodes.INVALID_ARGUMENT)) throw err;
        this.#log.warn({ err: messageOf(err) }, 'registry not reachable; retrying');
        await backoff.wait(signal).catch(() => undefined);
      }
    }
    return undefined;
  }

  /** /healthz: the process and its loops run. */
  #liveness(): CheckResult {
    if (this.#stopped) return { ok: false, reason: 'stopping' };
    if (!this.#tracker) return { ok: true };
    if (this.#lifecycle && !this.#lifecycle.running) return { ok: false, reason: 'node lifecycle stopped' };
    // The loop starts once the objects are listed.
    if (this.#tracker.isSynced && this.#loop && !this.#loop.running) {
      return { ok: false, reason: 'endpointslice loop stopped' };
    }
    return { ok: true };
  }

  /** /readyz: the objects have been listed; a leader and a standby are both ready. */
  #readiness(): CheckResult {
    if (!this.#tracker?.isSynced) return { ok: false, reason: 'objects not listed yet' };
    return { ok: true };
  }

  /** Resigns the leadership, stops the loops and closes the listeners; slices stay. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopping.abort();
    for (const close of this.#closers.splice(0).reverse()) {
      try {
        await close();
      } catch (err) {
        this.#log.warn({ err: messageOf(err) }, 'error while stopping');
      }
    }
  }
}

/**
 * weft-proxy's imperative shell: opens the registry, creates one proxier per served family,
 * feeds the object tracker into the sync engine, and runs the health, metrics and
 * healthCheckNodePort listeners. Decisions live in the engine, the model and the proxiers; this
 * file only sequences I/O.
 */
import type { Registry } from 'prom-client';
import { openStoreFromFlags } from '../cli/registry-flags.js';
import { Backoff } from '../backoff/index.js';
import { ErrorCodes, isWeftError, messageOf } from '../errors/index.js';
import { execRunner, type CommandRunner } from '../exec/index.js';
import { startHealthServer, type HealthServer } from '../health/index.js';
import { rootLogger, type Logger } from '../log/index.js';
import { createRegistry } from '../metrics/index.js';
import type { Store } from '../registry/index.js';
import { weftVersion } from '../cli/version.js';
import { StatusPublisher, healthUrl, statusPrefix } from '../node-status/index.js';
import { sdNotify } from '../systemd/index.js';
import type { ProxyConfig } from './flags.js';
import { HealthCheckNodePorts } from './health-check-node-ports.js';
import type { Family } from './model/index.js';
import { ObjectTracker } from '../k8s/index.js';
import {
  PROXY_MODES,
  createProxier,
  registeredProxyModes,
  type Proxier,
  type ProxierContext,
  type ProxyMode,
} from './proxier.js';
import { SyncEngine } from './sync-engine.js';

/** Options of {@link WeftProxy}. */
export interface WeftProxyOptions {
  config: ProxyConfig;
  /** Use this store instead of opening one from the flags (tests, embedding). Not closed. */
  store?: Store;
  /** Prometheus registry; default a fresh one with process metrics. */
  metrics?: Registry;
  /** Parent of the components' loggers (each adds its `component`). Default the root logger. */
  logger?: Logger;
  /** Runs nft, iptables-restore and conntrack. Default: spawn them directly. */
  runner?: CommandRunner;
  /** How often the rules are checked for outside removal, ms. Default min(5 s, sync period). */
  integrityCheckIntervalMs?: number;
}

/** The proxier context of one family. */
export function proxierContext(
  config: ProxyConfig,
  family: Family,
  runner: CommandRunner,
  log: Logger,
): ProxierContext {
  return {
    family,
    nodeName: config.nodeName,
    clusterCidr: config.clusterCidrs.get(family),
    masqueradeAll: config.flags.masqueradeAll,
    nodePortAddresses: config.flags.nodeportAddresses,
    runner,
    log,
  };
}

/** A running weft-proxy. */
export class WeftProxy {
  readonly #o: WeftProxyOptions;
  readonly #root: Logger;
  readonly #log: Logger;
  readonly #metrics: Registry;
  readonly #closers: Array<() => Promise<void>> = [];
  #engine: SyncEngine | undefined;
  #tracker: ObjectTracker | undefined;
  #healthz: HealthServer | undefined;
  #metricsServer: HealthServer | undefined;
  #hcnp: HealthCheckNodePorts | undefined;
  #stopped = false;
  readonly #stopping = new AbortController();

  constructor(opts: WeftProxyOptions) {
    this.#o = opts;
    this.#root = opts.logger ?? rootLogger();
    this.#log = this.#component('proxy');
    this.#metrics = opts.metrics ?? createRegistry({ processMetrics: true });
  }

  #component(component: string, bindings: Record<string, unknown> = {}): Logger {
    return this.#root.child({ component, ...bindings });
  }

  /** The metrics registry. */
  get metrics(): Registry {
    return this.#metrics;
  }

  /** Port of /healthz, when it listens. */
  get healthzPort(): number | undefined {
    return this.#healthz?.port;
  }

  /** Port of /metrics, when it listens. */
  get metricsPort(): number | undefined {
    return this.#metricsServer?.port;
  }

  /** The engine, once started. */
  get engine(): SyncEngine | undefined {
    return this.#engine;
  }

  /** The object tracker, once started. */
  get tracker(): ObjectTracker | undefined {
    return this.#tracker;
  }

  /** The healthCheckNodePort servers, once started. */
  get healthCheckNodePorts(): HealthCheckNodePorts | undefined {
    return this.#hcnp;
  }

  /**
   * Starts everything and resolves once running (not yet synced: see {@link firstSync}). Throws,
   * after closing what it opened, when a listener cannot bind or a proxier cannot be created.
   */
  async start(): Promise<void> {
    const { config } = this.#o;
    const log = this.#log;
    // iptables-restore of tens of thousands of rules takes minutes on the nf_tables backend; a
    // killed restore would only be retried from scratch.
    const runner = this.#o.runner ?? execRunner({ timeoutMs: 600_000 });
    try {
      const sameAddress =
        config.healthz &&
        config.metrics &&
        config.healthz.host === config.metrics.host &&
        config.healthz.port === config.metrics.port &&
        // Port 0 asks for any free port, twice: two listeners.
        config.healthz.port !== 0;
      if (config.healthz) {
        this.#healthz = await startHealthServer({
          host: config.healthz.host,
          port: config.healthz.port,
          ...(sameAddress && { registry: this.#metrics }),
          checks: {
            '/healthz': () => this.#engine?.healthz() ?? { ok: true },
            '/livez': () => ({ ok: true }),
            '/readyz': () => this.#readiness(),
          },
        });
        const s = this.#healthz;
        this.#closers.push(() => s.close());
        log.info({ host: s.host, port: s.port }, 'healthz listener up');
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
        log.info({ host: s.host, port: s.port }, 'metrics listener up');
      }

      const store = this.#o.store ?? (await this.#openStore());
      if (!store) return;
      if (!this.#o.store) this.#closers.push(() => store.close());

      const publisher = new StatusPublisher({
        store,
        prefix: statusPrefix(config.flags.registryPrefix),
        node: config.nodeName,
        daemon: 'weft-proxy',
        version: weftVersion(),
        ...(this.#healthz && { health: healthUrl(this.#healthz.host, this.#healthz.port) }),
        logger: this.#component('status'),
        snapshot: () => {
          const r = this.#readiness();
          return {
            ready: r.ok,
            reason: r.ok ? undefined : r.reason,
            lastSyncMs: this.#engine?.lastSyncAt,
            detail: { mode: config.flags.proxyMode },
          };
        },
      });
      publisher.start();
      this.#closers.push(() => publisher.stop());

      const proxiers: Proxier[] = [];
      for (const family of config.clusterCidrs.keys()) {
        const ctx = {
          ...proxierContext(config, family, runner, this.#component('proxier', { family })),
          metrics: this.#metrics,
        };
        const p = await createProxier(config.flags.proxyMode, ctx);
        proxiers.push(p);
        this.#closers.push(() => p.close());
      }
      log.info(
        {
          mode: config.flags.proxyMode,
          node: config.nodeName,
          families: [...config.clusterCidrs.keys()],
          clusterCidrs: [...config.clusterCidrs.values()].filter(Boolean),
          clusterCidrSource: config.clusterCidrSource,
          prefix: config.flags.registryPrefix,
          servicePolicy: config.servicePolicy,
        },
        'proxiers created',
      );

      const hcnp = new HealthCheckNodePorts({
        host: config.flags.healthcheckBindAddress,
        log: this.#component('healthcheck'),
        reservedPorts: [this.#healthz?.port, this.#metricsServer?.port].filter((p) => p !== undefined),
        registry: this.#metrics,
      });
      this.#hcnp = hcnp;
      this.#closers.push(() => hcnp.close());

      const tracker = new ObjectTracker({
        store,
        prefix: config.flags.registryPrefix,
        log: this.#component('tracker'),
        metrics: this.#metrics,
        servicePolicy: config.servicePolicy,
        onChange: (change) => this.#engine?.queueChange(change),
      });
      this.#tracker = tracker;
      const engine = new SyncEngine({
        proxiers,
        source: tracker,
        nodeName: config.nodeName,
        conntrackRunner: runner,
        log: this.#component('sync'),
        metrics: this.#metrics,
        minSyncPeriodMs: config.minSyncPeriodMs,
        syncPeriodMs: config.syncPeriodMs,
        ...(this.#o.integrityCheckIntervalMs !== undefined && {
          integrityCheckIntervalMs: this.#o.integrityCheckIntervalMs,
        }),
        onSynced: (ports) => void hcnp.update(ports),
      });
      this.#engine = engine;
      // Stopped before the proxiers close (closers run in reverse order).
      this.#closers.push(() => engine.stop());
      this.#closers.push(() => tracker.stop());
      engine.start();
      tracker.start();
      void engine.firstSync.then(() => {
        if (this.#stopped) return;
        log.info({ servicePorts: engine.appliedServicePorts().length }, 'first sync done; ready');
        void sdNotify({ READY: '1', STATUS: `synced (${config.flags.proxyMode})` });
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * The registry, waited for as flannel waits for etcd: at boot etcd may come up after this
   * daemon, and failing would spend the unit's restart budget. Undefined when stopped meanwhile.
   */
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

  /** Ready once the first sync is done and while changes are applied in time (/readyz). */
  #readiness(): { ok: true } | { ok: false; reason: string } {
    const engine = this.#engine;
    if (!engine?.synced) return { ok: false, reason: 'first sync not done yet' };
    const h = engine.healthz();
    return h.ok ? { ok: true } : { ok: false, reason: h.reason ?? 'not healthy' };
  }

  /** Resolves after the first successful sync. */
  get firstSync(): Promise<void> {
    return this.#engine?.firstSync ?? Promise.reject(new Error('weft-proxy not started'));
  }

  /** Stops watching and syncing and closes the listeners; the rules stay in the kernel. */
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

/** Outcome of {@link cleanupAllModes}. */
export interface CleanupReport {
  /** `mode/family` pairs cleaned. */
  cleaned: string[];
  errors: { mode: ProxyMode; family: Family; error: string }[];
}

/**
 * Removes what every registered mode may have installed, in both families, whatever mode the
 * node ran before (kube-proxy's --cleanup). A mode that fails does not stop the others.
 */
export async function cleanupAllModes(
  config: ProxyConfig,
  runner: CommandRunner,
  log: Logger,
): Promise<CleanupReport> {
  const report: CleanupReport = { cleaned: [], errors: [] };
  const modes = PROXY_MODES.filter((m) => registeredProxyModes().includes(m));
  for (const mode of modes) {
    for (const family of [4, 6] as const) {
      try {
        const p = await createProxier(
          mode,
          proxierContext(config, family, runner, log.child({ mode, family })),
        );
        try {
          await p.cleanup();
        } finally {
          await p.close();
        }
        report.cleaned.push(`${mode}/ipv${family}`);
      } catch (err) {
        report.errors.push({ mode, family, error: messageOf(err) });
        log.warn({ mode, family, err: messageOf(err) }, 'cleanup failed');
      }
    }
  }
  return report;
}

/**
 * weft-flanneld's imperative shell: wires the registry, the lease manager, the dataplane, the
 * firewall rules, subnet.env and the health listener together, and keeps them running. All
 * decisions live in the pure parts (chooseLease, the backends' planners, the rule builders);
 * this file only sequences I/O.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Registry } from 'prom-client';
import { Backoff } from '../backoff/index.js';
import { ErrorCodes, isWeftError, messageOf } from '../errors/index.js';
import { startHealthServer, type HealthServer } from '../health/index.js';
import { Cidr, parseNetConfig, subnetsDir, type NetConfig, type SubnetKey } from '../ipam/index.js';
import { componentLogger, rootLogger, type Logger } from '../log/index.js';
import { Counter, Gauge, createRegistry, metricName } from '../metrics/index.js';
import { openNetlink, type Netlink } from '../netlink/index.js';
import { openStoreFromFlags } from '../cli/registry-flags.js';
import type { KeyValue, Store, WatchEvent } from '../registry/index.js';
import { StatusPublisher, healthUrl, type StatusSnapshot } from '../node-status/index.js';
import { sdNotify } from '../systemd/index.js';
import { weftVersion } from '../cli/version.js';
import { assertBackendAvailable, leaseAttrsOf } from './backends/index.js';
import { Dataplane } from './dataplane/index.js';
import { findExternalIface, type ExternalIface } from './external-iface.js';
import type { FlanneldFlags } from './flags.js';
import { LeaseManager, readLeaseListing, type Lease } from './lease/index.js';
import { createMasqRules, type MasqRules } from './masq-rules.js';
import { formatSubnetEnv, parseSubnetEnv, writeSubnetEnv } from './subnet-env.js';

/** Where an error of the daemon (outside the dataplane, which counts its own) happened. */
export type DaemonErrorStage = 'iface' | 'registry' | 'watch' | 'dataplane' | 'subnet-env' | 'firewall';

const DAEMON_ERROR_STAGES: readonly DaemonErrorStage[] = [
  'iface',
  'registry',
  'watch',
  'dataplane',
  'subnet-env',
  'firewall',
];

/** Why {@link Flanneld.run} returned. */
export type RunOutcome = 'stopped' | 'config-changed';

/** Options of {@link Flanneld}. */
export interface FlanneldOptions {
  flags: FlanneldFlags;
  /** Use this store instead of opening one from the flags (tests, embedding). Not closed by the daemon. */
  store?: Store;
  /**
   * Prometheus registry; default a fresh one with process metrics. Metrics already in it (from an
   * earlier run of the same process) are reused, so counters carry on across in-process restarts.
   */
  metrics?: Registry;
  /**
   * Serve /healthz, /readyz and /metrics on the flags' port for the time of {@link Flanneld.run}.
   * Default true. A supervisor that keeps one listener across in-process restarts (the command)
   * passes false and asks {@link Flanneld.ready} itself.
   */
  healthListener?: boolean;
  logger?: Logger;
  /** Interval of the dataplane's periodic full check, ms. Default 10 000. */
  resyncIntervalMs?: number;
}

// Shared with weft-proxy; re-exported here for the callers that import it from the daemon.
export { openStoreFromFlags };

/** The previous subnet.env's lease, when there is a readable one. */
export function previousSubnet(path: string, log: Logger): SubnetKey | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const env = parseSubnetEnv(readFileSync(path, 'utf8'));
    return {
      ipv4: Cidr.parse(env.subnet),
      ...(env.ipv6Subnet !== undefined && { ipv6: Cidr.parse(env.ipv6Subnet) }),
    };
  } catch (err) {
    log.warn({ path, err: messageOf(err) }, 'ignoring unreadable subnet.env');
    return undefined;
  }
}

/** The network config in a registry value: flannel's rules, and a backend this build has. */
function readNetConfig(value: string): NetConfig {
  const config = parseNetConfig(value);
  assertBackendAvailable(config.backend.type);
  return config;
}

/** A sleep that a `fire()` cuts short; a fire while nobody sleeps makes the next sleep return at once. */
class Wakeup {
  #fired = false;
  #wake: (() => void) | undefined;

  fire(): void {
    this.#fired = true;
    this.#wake?.();
  }

  /** Forget fires that came before the caller's next look at the state. */
  reset(): void {
    this.#fired = false;
  }

  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.#fired || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
  }
}

/** The metric of that name already in `registry` (an earlier run's), or a new one. */
function reuseMetric<M>(registry: Registry, name: string, make: (name: string) => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make(metricName(name));
}

/** Canonical form of a config, to tell a real change from a rewrite of the same content. */
function configFingerprint(config: NetConfig): string {
  return JSON.stringify(config, (_k, v: unknown) => (v instanceof Cidr ? v.toString() : v));
}

/** One run of the daemon, from connecting to the registry to shutdown or a config change. */
export class Flanneld {
  readonly #o: FlanneldOptions;
  readonly #flags: FlanneldFlags;
  readonly #log: Logger;
  readonly #metrics: Registry;
  readonly #abort = new AbortController();
  readonly #configChanged: Promise<void>;
  #signalConfigChanged!: () => void;
  #subnetEnvWritten = false;
  /** What the run waits for before it has a dataplane, for /readyz. */
  #phase = 'starting';
  #dataplane: Dataplane | undefined;
  #lease: Lease | undefined;
  #lastSyncMs: number | undefined;
  #health: HealthServer | undefined;
  readonly #errors: Counter<'stage'>;
  readonly #configStale: Gauge;
  readonly #lastSync: Gauge;

  constructor(opts: FlanneldOptions) {
    this.#o = opts;
    this.#flags = opts.flags;
    this.#log = opts.logger ?? componentLogger('flanneld');
    this.#metrics = opts.metrics ?? createRegistry({ processMetrics: true });
    this.#configChanged = new Promise((resolve) => (this.#signalConfigChanged = resolve));
    const registers = [this.#metrics];
    this.#errors = reuseMetric(
      this.#metrics,
      'weft_flanneld_errors_total',
      (name) =>
        new Counter<'stage'>({
          name,
          help: 'Errors of the daemon by stage.',
          labelNames: ['stage'],
          registers,
        }),
    );
    // Every series from the start, so an alert on its increase works from the first error on.
    for (const stage of DAEMON_ERROR_STAGES) this.#errors.inc({ stage }, 0);
    this.#configStale = reuseMetric(
      this.#metrics,
      'weft_flanneld_config_stale',
      (name) =>
        new Gauge({
          name,
          help: '1 when the registry holds a network config the daemon could not apply (invalid).',
          registers,
        }),
    );
    this.#lastSync = reuseMetric(
      this.#metrics,
      'weft_flanneld_last_sync_timestamp_seconds',
      (name) =>
        new Gauge({
          name,
          help: 'When the dataplane last matched the leases, in seconds since the epoch.',
          registers,
        }),
    );
  }

  /** Readiness: the dataplane is programmed and subnet.env written. */
  get ready(): boolean {
    return this.#subnetEnvWritten && (this.#dataplane?.isReady ?? false);
  }

  /** The lease held, once acquired. */
  get lease(): Lease | undefined {
    return this.#lease;
  }

  /** Port of the health listener, when one runs. */
  get healthPort(): number | undefined {
    return this.#health?.port;
  }

  /** Ask {@link run} to stop; the lease and the dataplane are kept for the next start. */
  stop(): void {
    this.#abort.abort();
  }

  /** Runs until {@link stop} or a change of the network config (the caller then starts anew). */
  async run(): Promise<RunOutcome> {
    const signal = this.#abort.signal;
    const flags = this.#flags;
    const resources: Array<() => Promise<void>> = [];
    const closeAll = async () => {
      for (const close of resources.reverse()) await close().catch(() => {});
    };
    try {
      if (flags.healthzPort > 0 && this.#o.healthListener !== false) {
        this.#health = await startHealthServer({
          host: flags.healthzIp,
          port: flags.healthzPort,
          registry: this.#metrics,
          checks: {
            '/healthz': () => ({ ok: true }),
            '/livez': () => ({ ok: true }),
            '/readyz': () => (this.ready ? { ok: true } : { ok: false, reason: this.notReadyReason }),
          },
        });
        const health = this.#health;
        resources.push(() => health.close());
        this.#log.info({ host: health.host, port: health.port }, 'health listener up');
      }

      // As flannel does, a registry that is not up yet (etcd starting at boot) is waited for, not
      // fatal: the unit would otherwise burn its restart budget before etcd answers.
      this.#phase = 'waiting for the registry';
      const store =
        this.#o.store ??
        (await this.#retry(
          'connect to the registry',
          'registry',
          () => openStoreFromFlags(flags, componentLogger('registry'), this.#metrics),
          signal,
        ));
      if (!store) return 'stopped';
      if (!this.#o.store) resources.push(() => store.close());
      if (flags.statusPrefix !== '') {
        const publisher = this.#statusPublisher(store);
        publisher.start();
        resources.push(() => publisher.stop());
      }
      const nl = await openNetlink({ logger: this.#log });
      resources.push(async () => nl.close());

      this.#phase = 'waiting for the external interface';
      const ext = await this.#retry(
        'external interface',
        'iface',
        () => findExternalIface(nl, flags),
        signal,
      );
      if (!ext) return 'stopped';
      this.#log.info(
        { iface: ext.name, ip: ext.ip, publicIp: ext.publicIp, mtu: ext.mtu },
        'using external interface',
      );

      this.#phase = 'waiting for a valid network config';
      const loaded = await this.#waitForConfig(store, signal);
      if (!loaded) return 'stopped';
      const outcome = await this.#serve(store, nl, ext, loaded.config, resources, signal);
      return outcome;
    } finally {
      await closeAll();
    }
  }

  /** The record `weftctl status` lists this daemon by. */
  #statusPublisher(store: Store): StatusPublisher {
    const flags = this.#flags;
    return new StatusPublisher({
      store,
      prefix: flags.statusPrefix,
      node: flags.nodeName,
      daemon: 'weft-flanneld',
      version: weftVersion(),
      ...(flags.healthzPort > 0 && { health: healthUrl(flags.healthzIp, flags.healthzPort) }),
      logger: componentLogger('status'),
      snapshot: (): StatusSnapshot => {
        const lease = this.#lease;
        return {
          ready: this.ready,
          reason: this.ready ? undefined : this.notReadyReason,
          lastSyncMs: this.#lastSyncMs,
          detail: lease
            ? {
                subnet: `${lease.subnets.ipv4?.toString() ?? lease.key}`,
                publicIp: lease.attrs.publicIP,
                backend: lease.attrs.backendType ?? 'udp',
              }
            : {},
        };
      },
    });
  }

  /** Why {@link ready} is false (for /readyz). */
  get notReadyReason(): string {
    if (!this.#dataplane) return this.#phase;
    if (!this.#dataplane.isReady) return 'dataplane not programmed yet';
    if (!this.#subnetEnvWritten) return 'subnet.env not written yet';
    return 'not ready';
  }

  async #serve(
    store: Store,
    nl: Netlink,
    ext: ExternalIface,
    config: NetConfig,
    resources: Array<() => Promise<void>>,
    signal: AbortSignal,
  ): Promise<RunOutcome> {
    const flags = this.#flags;
    const prefix = flags.etcdPrefix;
    const dataplane = new Dataplane({
      config,
      extIface: {
        name: ext.name,
        index: ext.index,
        ip: ext.ip,
        ...(ext.ipv6 && { ipv6: ext.ipv6 }),
        mtu: ext.mtu,
      },
      netlink: nl,
      registry: this.#metrics,
      logger: componentLogger('dataplane'),
      ...(this.#o.resyncIntervalMs !== undefined && { resyncIntervalMs: this.#o.resyncIntervalMs }),
    });
    this.#dataplane = dataplane;
    resources.push(() => dataplane.close());
    const prepared = await dataplane.start(signal);
    if (signal.aborted) return 'stopped';

    // The leases of the cluster as last seen; updated from the watch, replaced on every re-list.
    let entries = new Map<string, KeyValue>();
    const refresh = async () => {
      const own = this.#lease;
      if (!own) return;
      const { leases, skipped } = readLeaseListing([...entries.values()], prefix);
      const res = await dataplane.update({
        own,
        leases,
        unreadable: skipped.map((s) => ({ path: s.path, error: s.error })),
      });
      if (res.ok) {
        this.#lastSyncMs = Date.now();
        this.#lastSync.set(this.#lastSyncMs / 1000);
      } else this.#errors.inc({ stage: 'dataplane' });
    };

    const attrs = leaseAttrsOf(prepared, ext.publicIp, config.ipv6 ? ext.publicIpv6 : undefined);
    const previous = previousSubnet(flags.subnetFile, this.#log);
    let masq: MasqRules | undefined;
    const manager = new LeaseManager({
      store,
      config,
      attrs,
      prefix,
      ...(previous && { previous }),
      renewMarginSeconds: flags.subnetLeaseRenewMargin * 60,
      // The manager adds its own `component: lease`.
      logger: rootLogger(),
      metrics: this.#metrics,
      onChange: (lease) => {
        // A new subnet (ours was taken while we were cut off): everything that names it follows.
        this.#lease = lease;
        void this.#writeSubnetEnv(config, lease, prepared.mtu);
        if (masq) void this.#ensureMasq(masq, config, lease);
        void refresh();
      },
    });
    resources.push(() => manager.close());
    const lease = await manager.acquire({ signal });
    this.#lease = lease;
    this.#log.info({ subnet: lease.key, reservation: lease.reservation }, 'lease acquired');

    const listing = await this.#retry(
      'list leases',
      'registry',
      () => store.list(subnetsDir(prefix)),
      signal,
    );
    if (!listing) return 'stopped';
    entries = new Map(listing.items.map((kv) => [kv.key, kv]));
    await refresh();
    await this.#writeSubnetEnv(config, lease, prepared.mtu);

    if (flags.ipMasq || flags.iptablesForwardRules) {
      const rules = createMasqRules({
        firewall: flags.firewall,
        logger: this.#log.child({ component: 'masq' }),
      });
      masq = rules;
      await this.#ensureMasq(rules, config, lease);
      const every = setInterval(() => {
        const held = this.#lease;
        if (held) void this.#ensureMasq(rules, config, held);
      }, flags.iptablesResync * 1000);
      resources.push(async () => clearInterval(every));
    }

    await dataplane.ready;
    if (this.ready) {
      this.#log.info({ subnet: lease.key }, 'ready');
      void sdNotify({ READY: '1', STATUS: `leased ${lease.key}` });
    }

    // One watch over the whole prefix: the subnets feed the dataplane and the lease manager, the
    // config key is checked for changes.
    const configKey = `${prefix}/config`;
    const fingerprint = configFingerprint(config);
    // The watch starts right after the listing: starting it at the config's revision (to see a
    // change made between the config's read and the listing) would replay every lease write since
    // then into the dataplane, deleting and re-adding live nodes' entries and re-adding those of
    // nodes long gone. A change in that window is caught by checking the config once instead.
    let fromRevision = listing.revision + 1;
    const checked = await this.#retry(
      'check the network config',
      'registry',
      () => this.#checkConfig(store, configKey, fingerprint).then(() => true),
      signal,
    );
    if (!checked) return 'stopped';
    const watchAbort = new AbortController();
    const onAbort = () => watchAbort.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    resources.push(async () => {
      signal.removeEventListener('abort', onAbort);
      watchAbort.abort();
    });
    const configChanged = this.#configChanged.then(() => 'config-changed' as const);
    const watching = (async (): Promise<RunOutcome> => {
      const backoff = new Backoff();
      while (!watchAbort.signal.aborted) {
        try {
          for await (const ev of store.watch(`${prefix}/`, { fromRevision, signal: watchAbort.signal })) {
            backoff.reset();
            // fromRevision moves only after an event was handled: if handling fails (a registry
            // blip during a re-list), the watch restarts at that event and handles it again.
            if (ev.type === 'resync') {
              this.#log.warn({ reason: ev.reason }, 'registry watch lost history; re-listing');
              const again = await store.list(subnetsDir(prefix));
              entries = new Map(again.items.map((kv) => [kv.key, kv]));
              await this.#checkConfig(store, configKey, fingerprint);
              // The gap may have hidden a change of our own key; the manager re-checks it.
              await manager.handleWatchEvent(ev);
              await refresh();
              fromRevision = again.revision + 1;
              continue;
            }
            if (ev.key === configKey) {
              await this.#checkConfig(store, configKey, fingerprint);
              fromRevision = ev.revision + 1;
              continue;
            }
            if (!ev.key.startsWith(subnetsDir(prefix))) {
              fromRevision = ev.revision + 1;
              continue;
            }
            this.#applyEvent(entries, ev);
            await manager.handleWatchEvent(ev);
            await refresh();
            fromRevision = ev.revision + 1;
          }
        } catch (err) {
          if (watchAbort.signal.aborted) break;
          this.#errors.inc({ stage: 'watch' });
          this.#log.warn({ err: messageOf(err) }, 'registry watch failed; retrying');
          await backoff.wait(watchAbort.signal);
        }
      }
      return 'stopped';
    })();
    const stopped = new Promise<RunOutcome>((resolve) => {
      if (signal.aborted) resolve('stopped');
      signal.addEventListener('abort', () => resolve('stopped'), { once: true });
    });
    const outcome = await Promise.race([stopped, configChanged, watching]);
    watchAbort.abort();
    await watching.catch(() => {});
    return outcome;
  }

  #applyEvent(entries: Map<string, KeyValue>, ev: Exclude<WatchEvent, { type: 'resync' }>): void {
    if (ev.type === 'delete') {
      entries.delete(ev.key);
      return;
    }
    const prev = entries.get(ev.key);
    entries.set(ev.key, {
      key: ev.key,
      value: ev.value,
      ttlBound: ev.ttlBound,
      modRevision: ev.revision,
      createRevision: prev?.createRevision ?? ev.revision,
    });
  }

  async #checkConfig(store: Store, key: string, running: string): Promise<void> {
    const kv = await store.get(key);
    if (!kv) {
      this.#configStale.set(1);
      this.#log.error({ key }, 'network config was deleted; keeping the running config until it is back');
      return;
    }
    let next: NetConfig;
    try {
      next = readNetConfig(kv.value);
    } catch (err) {
      this.#configStale.set(1);
      this.#log.error(
        { key, field: isWeftError(err) ? err.details.field : undefined, err: messageOf(err) },
        'network config changed to an invalid value; keeping the running config',
      );
      return;
    }
    this.#configStale.set(0);
    if (configFingerprint(next) !== running) {
      this.#log.warn({ key }, 'network config changed; restarting with the new config');
      this.#signalConfigChanged();
    }
  }

  /**
   * Reads the config until there is a valid one, retrying with backoff; a write of the config key
   * (followed by a watch) cuts the wait short, so a config fixed after a long wait is taken at
   * once rather than at the end of a grown backoff.
   */
  async #waitForConfig(store: Store, signal: AbortSignal): Promise<{ config: NetConfig } | undefined> {
    const key = `${this.#flags.etcdPrefix}/config`;
    const backoff = new Backoff({ initialMs: 500, maxMs: 10_000 });
    const wake = new Wakeup();
    const watchAbort = new AbortController();
    const stopWatch = () => watchAbort.abort();
    signal.addEventListener('abort', stopWatch, { once: true });
    const watching = this.#watchKey(store, key, wake, watchAbort.signal);
    let lastComplaint = '';
    try {
      while (!signal.aborted) {
        let complaint: string;
        let details: Record<string, unknown> = { key };
        wake.reset();
        try {
          const kv = await store.get(key);
          if (kv) {
            const config = readNetConfig(kv.value);
            this.#configStale.set(0);
            return { config };
          }
          complaint = 'waiting for the network config';
        } catch (err) {
          if (isWeftError(err, ErrorCodes.INVALID_CONFIG)) {
            this.#configStale.set(1);
            complaint = 'network config is invalid; waiting for a valid one';
            details = { ...details, field: err.details.field, err: err.message };
          } else {
            this.#errors.inc({ stage: 'registry' });
            complaint = 'registry unavailable; waiting for the network config';
            details = { ...details, err: messageOf(err) };
          }
        }
        // Repeat a complaint only when it changes, or every so often, not on every retry.
        const text = complaint + JSON.stringify(details);
        if (text !== lastComplaint || backoff.attempt % 10 === 0) this.#log.warn(details, complaint);
        lastComplaint = text;
        await wake.wait(backoff.next(), signal);
      }
      return undefined;
    } finally {
      signal.removeEventListener('abort', stopWatch);
      watchAbort.abort();
      await watching;
    }
  }

  /** Calls `wake.fire()` on every change of `key` (best effort: the caller polls anyway). */
  async #watchKey(store: Store, key: string, wake: Wakeup, signal: AbortSignal): Promise<void> {
    const backoff = new Backoff({ initialMs: 500, maxMs: 10_000 });
    while (!signal.aborted) {
      try {
        const { revision } = await store.list(key);
        for await (const ev of store.watch(key, { fromRevision: revision + 1, signal })) {
          backoff.reset();
          if (ev.type === 'resync' || ev.key === key) wake.fire();
        }
      } catch (err) {
        if (signal.aborted) break;
        this.#log.debug({ key, err: messageOf(err) }, 'watch of the network config failed; polling');
      }
      await backoff.wait(signal);
    }
  }

  async #writeSubnetEnv(config: NetConfig, lease: Lease, mtu: number): Promise<void> {
    const v4 = lease.subnets.ipv4;
    if (!config.ipv4 || !v4) {
      this.#log.error('subnet.env needs an IPv4 lease; IPv6-only clusters are not supported yet');
      return;
    }
    const contents = formatSubnetEnv({
      network: config.ipv4.network.toString(),
      subnet: v4.toString(),
      ...(config.ipv6 &&
        lease.subnets.ipv6 && {
          ipv6Network: config.ipv6.network.toString(),
          ipv6Subnet: lease.subnets.ipv6.toString(),
        }),
      mtu,
      ipMasq: this.#flags.ipMasq,
    });
    try {
      await writeSubnetEnv(this.#flags.subnetFile, contents);
      this.#subnetEnvWritten = true;
      this.#log.info({ path: this.#flags.subnetFile, subnet: v4.toString(), mtu }, 'wrote subnet.env');
    } catch (err) {
      this.#errors.inc({ stage: 'subnet-env' });
      this.#log.error({ path: this.#flags.subnetFile, err: messageOf(err) }, 'cannot write subnet.env');
    }
  }

  async #ensureMasq(rules: MasqRules, config: NetConfig, lease: Lease): Promise<void> {
    const v4 = lease.subnets.ipv4;
    if (!config.ipv4 || !v4) return;
    try {
      const { repaired } = await rules.ensure({
        network: config.ipv4.network.toString(),
        subnet: v4.toString(),
        ...(config.ipv6 &&
          lease.subnets.ipv6 && {
            ipv6Network: config.ipv6.network.toString(),
            ipv6Subnet: lease.subnets.ipv6.toString(),
          }),
        masquerade: this.#flags.ipMasq,
        forward: this.#flags.iptablesForwardRules,
      });
      if (repaired) this.#log.info({ firewall: this.#flags.firewall }, 'masquerade/forward rules written');
    } catch (err) {
      this.#errors.inc({ stage: 'firewall' });
      this.#log.error({ err: messageOf(err) }, 'cannot keep the masquerade/forward rules');
    }
  }

  /** Retries `fn` with backoff until it succeeds or `signal` aborts (then undefined). */
  async #retry<T>(
    what: string,
    stage: DaemonErrorStage,
    fn: () => Promise<T>,
    signal: AbortSignal,
  ): Promise<T | undefined> {
    const backoff = new Backoff({ initialMs: 500, maxMs: 10_000 });
    while (!signal.aborted) {
      try {
        return await fn();
      } catch (err) {
        if (isWeftError(err, ErrorCodes.INVALID_ARGUMENT)) throw err;
        this.#errors.inc({ stage });
        this.#log.warn({ err: messageOf(err) }, `${what} failed; retrying`);
        await backoff.wait(signal);
      }
    }
    return undefined;
  }
}

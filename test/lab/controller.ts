/**
 * weft-controller in the lab: controller processes (compiled, from dist/, like weft-proxy) in the
 * nodes' namespaces, against the lab's etcd (or Redis), started, killed with SIGKILL or stopped with
 * SIGTERM by PID, and their /healthz, /readyz, /metrics and logs read. Several may run on one node
 * (each gets its own ports), as two controllers do in the leader-election tests.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../../src/errors/index.js';
import { waitFor, type ManagedProcess } from './exec.js';
import { REPO_ROOT, ensureBuilt, metricValue, parseMetrics } from './flanneld.js';
import type { LogRecord, MetricSample } from './flanneld.js';
import type { Lab, LabNode } from './lab.js';
import { LAB_REGISTRY_PREFIX } from './pods.js';

/** The compiled daemon. */
export const CONTROLLER_MAIN = join(REPO_ROOT, 'dist', 'src', 'controller', 'main.js');

/** The daemon's default `--healthz-bind-address` port (kube-controller-manager's). */
export const CONTROLLER_HEALTHZ_PORT = 10257;
/** The daemon's default `--metrics-bind-address` port. */
export const CONTROLLER_METRICS_PORT = 10258;

/** The gauge that is 1 while a controller leads. */
export const LEADER_METRIC = 'weft_controller_leader';

/** Options of {@link ControllerCluster.create}. */
export interface ControllerClusterOptions {
  /** Use the lab's redis-server instead of etcd (the lab must have `redis: true`). Default false. */
  redis?: boolean;
  /** `--registry-prefix`. Default `/weft`, the lab's (then not passed). */
  prefix?: string;
  /** Extra flags for every controller. */
  args?: string[];
}

/** Options of {@link ControllerCluster.start}. */
export interface StartControllerOptions {
  /** Extra flags for this one (after the cluster's). */
  args?: string[];
  /** `--identity`. Default `<node>_<n>`, unique in the cluster. */
  identity?: string;
  /**
   * Ports of /healthz+/readyz and /metrics on 127.0.0.1 in the node's namespace. Default the
   * first pair no running controller of the node uses: the daemon's (10257, 10258), then
   * 10357/10358, 10457/10458...
   */
  healthzPort?: number;
  metricsPort?: number;
}

/** One controller process. */
export interface ControllerInstance {
  /** `<node>/<name>`: the cluster's key for it. */
  readonly id: string;
  /** `weft-controller`, `weft-controller-2`...: its process and log name on the node. */
  readonly name: string;
  readonly node: LabNode;
  readonly identity: string;
  readonly healthzPort: number;
  readonly metricsPort: number;
  readonly process: ManagedProcess;
}

function controllerError(message: string, details: Record<string, unknown> = {}): WeftError {
  return new WeftError(ErrorCodes.LAB, message, details);
}

/** weft-controller processes in a lab. */
export class ControllerCluster {
  readonly lab: Lab;
  readonly prefix: string;
  /** Every controller started, running or not, by id, in start order. */
  readonly instances = new Map<string, ControllerInstance>();
  readonly #opts: ControllerClusterOptions;
  #seq = 0;

  private constructor(lab: Lab, opts: ControllerClusterOptions) {
    this.lab = lab;
    this.prefix = opts.prefix ?? LAB_REGISTRY_PREFIX;
    this.#opts = opts;
  }

  /** True when dist/ has the controller (it is written in parallel; tests skip without it). */
  static available(): boolean {
    return existsSync(CONTROLLER_MAIN);
  }

  /** Builds dist/ when needed; throws when the controller is not part of the build. */
  static async create(lab: Lab, opts: ControllerClusterOptions = {}): Promise<ControllerCluster> {
    await ensureBuilt();
    if (!ControllerCluster.available()) throw controllerError(`${CONTROLLER_MAIN} is missing: build weft`);
    if (opts.redis && !lab.redisUrl)
      throw controllerError('the lab has no redis (Lab.create({ redis: true }))');
    return new ControllerCluster(lab, opts);
  }

  /** The registry flags every controller gets. */
  registryArgs(): string[] {
    const registry = this.#opts.redis
      ? [`--registry=${this.lab.redisUrl ?? ''}`]
      : [`--etcd-endpoints=${this.lab.etcdEndpoints.join(',')}`];
    return [
      ...registry,
      ...(this.#opts.prefix !== undefined ? [`--registry-prefix=${this.#opts.prefix}`] : []),
    ];
  }

  /** The flags a controller gets (before the cluster's and its own extra ones). */
  args(c: Pick<ControllerInstance, 'node' | 'identity' | 'healthzPort' | 'metricsPort'>): string[] {
    return [
      ...this.registryArgs(),
      `--node-name=${c.node.name}`,
      `--identity=${c.identity}`,
      `--healthz-bind-address=127.0.0.1:${c.healthzPort}`,
      `--metrics-bind-address=127.0.0.1:${c.metricsPort}`,
    ];
  }

  /** Starts a controller in `node`'s namespace. */
  start(node: LabNode, opts: StartControllerOptions = {}): ControllerInstance {
    const onNode = [...this.instances.values()].filter((c) => c.node.name === node.name);
    const name = onNode.length === 0 ? 'weft-controller' : `weft-controller-${onNode.length + 1}`;
    // The first free pair on the node, so a controller started after a kill gets the default ports.
    const busy = new Set(onNode.filter((c) => c.process.running).map((c) => c.healthzPort));
    let slot = 0;
    while (busy.has(CONTROLLER_HEALTHZ_PORT + 100 * slot)) slot++;
    const healthzPort = opts.healthzPort ?? CONTROLLER_HEALTHZ_PORT + 100 * slot;
    const metricsPort = opts.metricsPort ?? CONTROLLER_METRICS_PORT + 100 * slot;
    const identity = opts.identity ?? `${node.name}_${++this.#seq}`;
    const base = { node, identity, healthzPort, metricsPort };
    // tap's hooks ride on NODE_OPTIONS; the daemon must start as it would in production.
    const p = this.lab.startProcess(
      node,
      name,
      'env',
      [
        '-u',
        'NODE_OPTIONS',
        process.execPath,
        CONTROLLER_MAIN,
        ...this.args(base),
        ...(this.#opts.args ?? []),
        ...(opts.args ?? []),
      ],
      { WEFT_LOG_LEVEL: process.env.WEFT_LOG_LEVEL ?? 'info' },
    );
    const c: ControllerInstance = { ...base, id: `${node.name}/${name}`, name, process: p };
    this.instances.set(c.id, c);
    return c;
  }

  /** A controller by id (`node1/weft-controller`); throws when there is none. */
  get(id: string): ControllerInstance {
    const c = this.instances.get(id);
    if (!c) throw controllerError(`no controller ${id}`, { known: [...this.instances.keys()] });
    return c;
  }

  /** The controllers still running. */
  running(): ControllerInstance[] {
    return [...this.instances.values()].filter((c) => c.process.running);
  }

  /** SIGKILL by PID, as a crash would; resolves once it has exited. */
  async kill9(c: ControllerInstance): Promise<void> {
    await c.process.kill();
  }

  /** SIGTERM by PID (a leader resigns), SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(c: ControllerInstance, graceMs = 10_000): Promise<void> {
    await c.process.stop(graceMs);
  }

  /** Stops every running controller. */
  async stopAll(graceMs = 10_000): Promise<void> {
    await Promise.all(this.running().map((c) => this.stop(c, graceMs)));
  }

  /** GET `http://127.0.0.1:<port><path>` in the controller's node: status and body (0 when down). */
  async http(c: ControllerInstance, port: number, path: string): Promise<{ status: number; body: string }> {
    const r = await this.lab.exec(
      c.node,
      'curl',
      ['-s', '-m', '2', '-o', '-', '-w', '\n%{http_code}', `http://127.0.0.1:${port}${path}`],
      { allowFail: true },
    );
    const cut = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(cut + 1)) || 0, body: r.stdout.slice(0, Math.max(0, cut)) };
  }

  /** `/healthz` (or another path of the health listener). */
  health(c: ControllerInstance, path = '/healthz'): Promise<{ status: number; body: string }> {
    return this.http(c, c.healthzPort, path);
  }

  /** `/readyz`. */
  ready(c: ControllerInstance): Promise<{ status: number; body: string }> {
    return this.http(c, c.healthzPort, '/readyz');
  }

  /** The samples of its /metrics (throws unless it answers 200). */
  async metrics(c: ControllerInstance): Promise<MetricSample[]> {
    const r = await this.http(c, c.metricsPort, '/metrics');
    if (r.status !== 200) throw controllerError(`weft-controller ${c.id} /metrics answered ${r.status}`);
    return parseMetrics(r.body);
  }

  /** One metric's value (labels must match), or undefined. */
  async metric(
    c: ControllerInstance,
    name: string,
    labels: Record<string, string> = {},
  ): Promise<number | undefined> {
    return metricValue(await this.metrics(c), name, labels);
  }

  /** Whether it says it leads (its leader gauge); false when it does not answer. */
  async isLeader(c: ControllerInstance): Promise<boolean> {
    if (!c.process.running) return false;
    try {
      return (await this.metric(c, LEADER_METRIC)) === 1;
    } catch {
      return false;
    }
  }

  /** The running controllers that say they lead (one, when all is well). */
  async leaders(): Promise<ControllerInstance[]> {
    const running = this.running();
    const flags = await Promise.all(running.map((c) => this.isLeader(c)));
    return running.filter((_, i) => flags[i]);
  }

  /**
   * Waits until exactly one running controller (among `among`, default all) leads; resolves with
   * it. Two leaders at any poll fail the wait at once, since that is the bug election tests look
   * for.
   */
  async waitLeader(timeoutMs = 30_000, among?: readonly ControllerInstance[]): Promise<ControllerInstance> {
    let found: ControllerInstance | undefined;
    // waitFor retries a check that throws; two leaders must end the wait at once instead.
    const twoLeaders = new AbortController();
    await waitFor(
      async () => {
        const leaders = (await this.leaders()).filter((c) => !among || among.includes(c));
        if (leaders.length > 1) {
          twoLeaders.abort(controllerError(`two leaders at once: ${leaders.map((c) => c.id).join(', ')}`));
          return false;
        }
        found = leaders[0];
        return found !== undefined;
      },
      { what: 'a weft-controller to lead', timeoutMs, intervalMs: 200, signal: twoLeaders.signal },
    );
    if (!found) throw controllerError('no leader');
    return found;
  }

  /** Waits until /readyz answers 200. A controller that exits fails the wait. */
  async waitReady(c: ControllerInstance, timeoutMs = 30_000): Promise<void> {
    const exited = new AbortController();
    void c.process.exited().then((code) =>
      exited.abort(
        controllerError(`weft-controller ${c.id} exited (code ${code}): ${tailOf(this.log(c))}`, {
          logFile: c.process.logFile,
        }),
      ),
    );
    await waitFor(async () => (await this.ready(c)).status === 200, {
      what: `weft-controller ${c.id} to be ready`,
      timeoutMs,
      intervalMs: 200,
      signal: exited.signal,
    });
  }

  /** Its log so far. */
  log(c: ControllerInstance): string {
    try {
      return readFileSync(c.process.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** Its log as pino records (other lines left out). */
  logRecords(c: ControllerInstance): LogRecord[] {
    const out: LogRecord[] = [];
    for (const line of this.log(c).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogRecord);
      } catch {
        /* a line cut short */
      }
    }
    return out;
  }
}

function tailOf(text: string, lines = 10): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

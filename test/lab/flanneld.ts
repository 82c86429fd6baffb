/**
 * weft-flanneld in the lab: a network config in the lab's registry and one daemon per node, with
 * helpers to wait for leases and readiness. The daemons run compiled (dist/), since a TypeScript
 * loader would add seconds to every start and restart; from the test sources, dist/ is rebuilt
 * first when any source is newer.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, waitFor, type ManagedProcess, type RunResult } from './exec.js';
import type { Lab, LabNode } from './lab.js';

const here = dirname(fileURLToPath(import.meta.url));
/** True when this module is tsc's output under dist/. */
const compiled = here.split('/').includes('dist');
/** The repository root, from either location of this module. */
export const REPO_ROOT = compiled ? join(here, '..', '..', '..') : join(here, '..', '..');
const MAIN = join(REPO_ROOT, 'dist', 'src', 'flanneld', 'main.js');

function newestMtime(dir: string, ext: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !entry.name.endsWith(ext)) continue;
    newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

let building: Promise<void> | undefined;

/** Makes sure dist/ holds a build of the current sources (a no-op when run compiled). */
export function ensureBuilt(): Promise<void> {
  if (compiled) return Promise.resolve();
  building ??= (async () => {
    const src = newestMtime(join(REPO_ROOT, 'src'), '.ts');
    const out = existsSync(MAIN) ? newestMtime(join(REPO_ROOT, 'dist', 'src'), '.js') : 0;
    if (out >= src) return;
    await run('npx', ['tsc', '-p', join(REPO_ROOT, 'tsconfig.build.json')], { timeoutMs: 300_000 });
  })();
  return building;
}

/** Options of {@link FlannelCluster.create}. */
export interface FlannelClusterOptions {
  /** The network config JSON written to `<prefix>/config`; default a vxlan 10.244.0.0/16. */
  config?: Record<string, unknown> | string;
  /** Use the lab's redis-server instead of etcd (the lab must have `redis: true`). */
  redis?: boolean;
  /** Registry prefix. Default flannel's. */
  prefix?: string;
  /** Extra flags for every daemon. */
  args?: string[];
  /** Start the daemons at once. Default true. */
  start?: boolean;
}

/** A daemon on one node. */
export interface FlannelDaemon {
  node: LabNode;
  process: ManagedProcess;
  /** Health listener port (inside the node's namespace, on 127.0.0.1). */
  healthPort: number;
}

export const DEFAULT_NETWORK = '10.244.0.0/16';

/** What {@link FlannelCluster.overlay} reports. */
export interface OverlayState {
  device?: { index: number; mac: string; mtu: number; up: boolean; addresses: string[] };
  routes: string[];
  neighbours: string[];
  fdb: string[];
}

/** One sample of a Prometheus text exposition. */
export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A pino log record. */
export interface LogRecord {
  level: number;
  msg: string;
  [field: string]: unknown;
}

interface IpLink {
  ifindex: number;
  address: string;
  mtu: number;
  flags?: string[];
}
interface IpAddr {
  addr_info?: { family: string; local: string; prefixlen: number }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  protocol?: string;
  flags?: string[];
}
interface IpNeigh {
  dst: string;
  lladdr?: string;
  state?: string[];
}
interface IpFdb {
  mac: string;
  dst?: string;
  state?: string;
}

/** Parses the Prometheus text format (samples only; comments are skipped). */
export function parseMetrics(text: string): MetricSample[] {
  const out: MetricSample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The sum of the samples named `name` whose labels include `labels`; undefined when none. */
export function metricValue(
  samples: readonly MetricSample[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const hits = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  return hits.length ? hits.reduce((a, s) => a + s.value, 0) : undefined;
}
const HEALTH_PORT = 9471;

/** weft-flanneld on the nodes of a lab. */
export class FlannelCluster {
  readonly lab: Lab;
  readonly prefix: string;
  readonly #opts: FlannelClusterOptions;
  readonly daemons = new Map<string, FlannelDaemon>();
  #restarts = 0;

  private constructor(lab: Lab, opts: FlannelClusterOptions) {
    this.lab = lab;
    this.#opts = opts;
    this.prefix = opts.prefix ?? '/coreos.com/network';
  }

  /** Writes the config and (unless told not to) starts a daemon on every node. */
  static async create(lab: Lab, opts: FlannelClusterOptions = {}): Promise<FlannelCluster> {
    await ensureBuilt();
    const c = new FlannelCluster(lab, opts);
    await c.putConfig(opts.config ?? { Network: DEFAULT_NETWORK, Backend: { Type: 'vxlan' } });
    if (opts.start !== false) for (const n of lab.nodes) c.start(n);
    return c;
  }

  /** The registry flags every daemon gets. */
  registryArgs(): string[] {
    if (this.#opts.redis) {
      if (!this.lab.redisUrl) throw new Error('the lab has no redis');
      return [`--registry=${this.lab.redisUrl}`, `--etcd-prefix=${this.prefix}`];
    }
    return [`--etcd-endpoints=${this.lab.etcdEndpoints.join(',')}`, `--etcd-prefix=${this.prefix}`];
  }

  /**
   * Runs one store operation from inside the first node, through weft's own store (the root
   * namespace cannot reach the lab's underlay, and Redis keys carry weft's revision
   * bookkeeping, so redis-cli cannot write them).
   */
  async #storeCall(op: 'put' | 'list', key: string, value = ''): Promise<string> {
    const registry = join(REPO_ROOT, 'dist', 'src', 'registry', 'index.js');
    const target = this.#opts.redis ? this.lab.redisUrl : this.lab.etcdEndpoints.join(',');
    if (!target) throw new Error('the lab has no redis');
    const script = `
      const { openStore } = await import(${JSON.stringify(registry)});
      const [op, target, key, value] = process.argv.slice(1);
      const store = await openStore(target);
      try {
        if (op === 'put') {
          const cur = await store.get(key);
          if (cur) await store.update(key, value, { modRevision: cur.modRevision });
          else await store.create(key, value);
        } else {
          const { items } = await store.list(key);
          process.stdout.write(JSON.stringify(items.map((i) => [i.key, i.value])));
        }
      } finally { await store.close(); }`;
    const r = await this.lab.exec(this.lab.nodes[0] as LabNode, 'env', [
      '-u',
      'NODE_OPTIONS',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
      op,
      target,
      key,
      value,
    ]);
    return r.stdout;
  }

  /** Writes a key of the registry. */
  async put(key: string, value: string): Promise<void> {
    await this.#storeCall('put', key, value);
  }

  /** Writes `<prefix>/config`. */
  putConfig(config: Record<string, unknown> | string): Promise<void> {
    return this.put(`${this.prefix}/config`, typeof config === 'string' ? config : JSON.stringify(config));
  }

  /** Every `<prefix>/subnets/` key and value. */
  async leases(): Promise<Map<string, string>> {
    const items = JSON.parse(await this.#storeCall('list', `${this.prefix}/subnets/`)) as [string, string][];
    return new Map(items);
  }

  /** Starts (or restarts) the daemon on `node`. */
  start(node: LabNode, extraArgs: string[] = []): FlannelDaemon {
    const args = [
      MAIN,
      ...this.registryArgs(),
      '--iface=eth0',
      `--node-name=${node.name}`,
      `--subnet-file=${this.lab.subnetEnvPath(node)}`,
      `--healthz-port=${HEALTH_PORT}`,
      '--healthz-ip=127.0.0.1',
      ...(this.#opts.args ?? []),
      ...extraArgs,
    ];
    const name = this.daemons.has(node.name) ? `flanneld-${++this.#restarts}` : 'flanneld';
    const env: NodeJS.ProcessEnv = { WEFT_LOG_LEVEL: process.env.WEFT_LOG_LEVEL ?? 'info' };
    // tap's process hooks ride on NODE_OPTIONS; the daemon must start as it would in production.
    const p = this.lab.startProcess(
      node,
      name,
      'env',
      ['-u', 'NODE_OPTIONS', process.execPath, ...args],
      env,
    );
    const d = { node, process: p, healthPort: HEALTH_PORT };
    this.daemons.set(node.name, d);
    return d;
  }

  /** The daemon of a node; throws when none was started. */
  daemon(node: LabNode | string): FlannelDaemon {
    const name = typeof node === 'string' ? node : node.name;
    const d = this.daemons.get(name);
    if (!d) throw new Error(`no weft-flanneld on ${name}`);
    return d;
  }

  /** GET a path of a node's health listener: status code and body. */
  async health(node: LabNode, path: string): Promise<{ status: number; body: string }> {
    const d = this.daemon(node);
    const r = await this.lab.exec(
      node,
      'curl',
      ['-s', '-m', '2', '-o', '-', '-w', '\n%{http_code}', `http://127.0.0.1:${d.healthPort}${path}`],
      { allowFail: true },
    );
    const cut = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(cut + 1)) || 0, body: r.stdout.slice(0, Math.max(0, cut)) };
  }

  /** Waits until every given node answers /readyz with 200. */
  async waitReady(nodes: readonly LabNode[] = this.lab.nodes, timeoutMs = 30_000): Promise<void> {
    await Promise.all(
      nodes.map((n) =>
        waitFor(
          async () => {
            const d = this.daemon(n);
            if (!d.process.running)
              throw new Error(`weft-flanneld on ${n.name} exited; see ${d.process.logFile}`);
            return (await this.health(n, '/readyz')).status === 200;
          },
          { what: `weft-flanneld ready on ${n.name}`, timeoutMs, intervalMs: 200 },
        ),
      ),
    );
  }

  /** The log of a node's daemon so far. */
  async log(node: LabNode): Promise<string> {
    const { readFile } = await import('node:fs/promises');
    const d = this.daemon(node);
    return readFile(d.process.logFile, 'utf8').catch(() => '');
  }

  /**
   * The overlay entries of a node as iproute2 shows them, one string per entry: routes into the
   * cluster network (`10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink`; the kernel's own
   * routes, such as cni0's, left out), permanent neighbours (`10.244.2.0 lladdr <mac>`) and
   * permanent FDB entries (`<mac> dst 10.99.0.12`) on `dev`, and the device itself when present.
   * One command, so it is cheap enough to poll; `opts.before` is a shell command run first in
   * that same command (to see the state right after breaking it, before a daemon can react).
   */
  async overlay(
    node: LabNode,
    opts: { dev?: string; network?: string; before?: string } = {},
  ): Promise<OverlayState> {
    const { dev = 'flannel.1', network = DEFAULT_NETWORK } = opts;
    const sep = '@@weft@@';
    const script = [
      ...(opts.before ? [opts.before] : []),
      `ip -j -d link show dev ${dev} 2>/dev/null || echo null`,
      `echo ${sep}`,
      `ip -j addr show dev ${dev} 2>/dev/null || echo null`,
      `echo ${sep}`,
      `ip -j route show root ${network}`,
      `echo ${sep}`,
      `ip -j neigh show dev ${dev} 2>/dev/null || echo null`,
      `echo ${sep}`,
      `bridge -j fdb show dev ${dev} 2>/dev/null || echo null`,
    ].join('; ');
    const r = await this.lab.exec(node, 'sh', ['-c', script]);
    const parts = r.stdout.split(sep).map((p) => {
      const text = p.trim();
      try {
        return text ? (JSON.parse(text) as unknown) : null;
      } catch {
        return null;
      }
    });
    const [links, addrs, routes, neighs, fdbs] = parts as [
      IpLink[] | null,
      IpAddr[] | null,
      IpRoute[] | null,
      IpNeigh[] | null,
      IpFdb[] | null,
    ];
    const link = links?.[0];
    const state: OverlayState = {
      routes: (routes ?? [])
        .filter((x) => x.protocol !== 'kernel')
        .map(
          (x) =>
            `${x.dst}${x.gateway ? ` via ${x.gateway}` : ''} dev ${x.dev}${x.flags?.includes('onlink') ? ' onlink' : ''}`,
        )
        .sort(),
      neighbours: (neighs ?? [])
        .filter((x) => x.state?.includes('PERMANENT'))
        .map((x) => `${x.dst} lladdr ${x.lladdr ?? '?'}`)
        .sort(),
      fdb: (fdbs ?? [])
        .filter((x) => x.state === 'permanent' && x.mac !== '00:00:00:00:00:00')
        .map((x) => `${x.mac} dst ${x.dst ?? '?'}`)
        .sort(),
    };
    if (link) {
      state.device = {
        index: link.ifindex,
        mac: link.address,
        mtu: link.mtu,
        up: link.flags?.includes('UP') ?? false,
        addresses: (addrs?.[0]?.addr_info ?? [])
          .filter((a) => a.family === 'inet')
          .map((a) => `${a.local}/${a.prefixlen}`)
          .sort(),
      };
    }
    return state;
  }

  /** The samples of a node's /metrics (throws unless it answers 200). */
  async metrics(node: LabNode): Promise<MetricSample[]> {
    const r = await this.health(node, '/metrics');
    if (r.status !== 200) throw new Error(`/metrics on ${node.name} answered ${r.status}: ${r.body}`);
    return parseMetrics(r.body);
  }

  /** The log of a node's daemon so far, as pino's JSON records (other lines left out). */
  async logRecords(node: LabNode): Promise<LogRecord[]> {
    const out: LogRecord[] = [];
    for (const line of (await this.log(node)).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogRecord);
      } catch {
        /* a line cut short */
      }
    }
    return out;
  }

  /**
   * Runs `weft-flanneld --cleanup` on a node (the daemon there should be stopped first) with the
   * flags a daemon there gets; resolves with its exit code and output.
   */
  async cleanup(node: LabNode): Promise<RunResult> {
    return this.lab.exec(
      node,
      'env',
      [
        '-u',
        'NODE_OPTIONS',
        process.execPath,
        MAIN,
        ...this.registryArgs(),
        '--iface=eth0',
        `--subnet-file=${this.lab.subnetEnvPath(node)}`,
        ...(this.#opts.args ?? []),
        '--cleanup',
      ],
      { allowFail: true, timeoutMs: 30_000 },
    );
  }

  /** A path relative to the repository, for messages. */
  static rel(path: string): string {
    return relative(REPO_ROOT, path);
  }
}

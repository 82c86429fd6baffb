/**
 * The contenders of the proxy benchmark behind one interface: weft's nftables, iptables and
 * userspace proxiers (through the Proxier contract), and the kube-proxy-layout nftables peer,
 * which the benchmark generates itself and loads with `nft -f -` as kube-proxy does.
 *
 * The userspace proxier runs in a worker process inside the namespace (bench/userspace-worker.ts)
 * because its listeners are sockets of the process that opens them; the worker times its own
 * syncs and reports them.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runChecked, type CommandRunner } from '../src/exec/index.js';
import { silentLogger } from '../src/log/index.js';
import type { ServicePort, ServicePortMap } from '../src/proxy/model/index.js';
import { createProxier, type Proxier, type ProxierContext, type ProxyMode } from '../src/proxy/proxier.js';
import { kubeLayoutRuleset, kubeLayoutServiceUpdate } from './kube-nft-layout.js';
import { BENCH_CLUSTER_CIDR, BENCH_NODE } from './workload.js';

/** What the proxy benchmark compares. */
export const BENCH_MODES = ['nftables', 'iptables', 'userspace', 'kube-nft'] as const;
export type BenchMode = (typeof BENCH_MODES)[number];

/** A sync timed by the contender itself (one running in another process). */
export interface SelfTimed {
  ms: number;
  /** CPU time of the process that ran the sync and of its reaped children. */
  cpuMs: number;
  /** Commands the sync ran. */
  commands: number;
}

/** One contender, programming one namespace. */
export interface Contender {
  /**
   * Why this contender cannot take `services` service ports plus `adds` one-service adds on
   * this machine (undefined: it can). Absent: no limit.
   */
  capacity?(services: number, adds: number): Promise<string | undefined>;
  /** Programs everything into an empty namespace; returns its own timing when it has one. */
  fullSync(servicePorts: ServicePortMap): Promise<SelfTimed | void>;
  /**
   * Moves from the last synced state to `servicePorts`, where only the service port `id`
   * changed, appeared or disappeared (`before` is its previous version).
   */
  partialSync(
    servicePorts: ServicePortMap,
    id: string,
    before: ServicePort | undefined,
  ): Promise<SelfTimed | void>;
  /**
   * Whether the kernel (and the contender) hold `sp`, for contenders whose rules do not name
   * endpoints; absent: the benchmark looks for the last changed endpoint in the ruleset.
   */
  verify?(sp: ServicePort): Promise<boolean>;
  close(): Promise<void>;
}

/** Where a contender runs: its namespace, and the cap of each command. */
export interface ContenderEnv {
  netns: string;
  timeoutMs: number;
}

/** A request to the userspace worker (one JSON line on its stdin). */
export type WorkerRequest =
  | { op: 'capacity'; services: number; adds: number }
  | { op: 'full'; servicePorts: ServicePort[] }
  | { op: 'partial'; id: string; servicePort: ServicePort | null }
  | { op: 'verify'; servicePort: ServicePort }
  | { op: 'close' };

/** The worker's answer to one request (one JSON line on its stdout). */
export interface WorkerReply {
  ok: boolean;
  ms?: number;
  cpuMs?: number;
  commands?: number;
  /** capacity: why the size cannot be run. */
  reason?: string;
  verified?: boolean;
  error?: string;
}

/**
 * Open files the userspace worker may use: one per listener; above the usual hard limit so that
 * 10,000 services fit with room, and far below fs.nr_open.
 */
export const USERSPACE_NOFILE = 65_536;

/**
 * Loads a weft proxier's module (which registers its factory) and creates it. Imported by path
 * at run time so the benchmark builds even while a mode is absent, and reports it as an error.
 */
async function weftProxier(mode: ProxyMode, ctx: ProxierContext): Promise<Proxier> {
  const url = new URL(`../src/proxy/${mode}/index.js`, import.meta.url).href;
  const mod = (await import(url)) as Record<string, unknown>;
  const factoryName = `create${mode[0]?.toUpperCase()}${mode.slice(1)}Proxier`;
  const factory = mod[factoryName];
  if (typeof factory === 'function') {
    return (await (factory as (c: ProxierContext) => Promise<Proxier>)(ctx)) as Proxier;
  }
  return createProxier(mode, ctx);
}

/** The proxier context of the benchmark's node. */
export function benchContext(runner: CommandRunner): ProxierContext {
  return {
    family: 4,
    nodeName: BENCH_NODE,
    clusterCidr: BENCH_CLUSTER_CIDR,
    masqueradeAll: false,
    nodePortAddresses: [],
    runner,
    log: silentLogger(),
  };
}

/** Creates the contender of `mode` writing through `runner` (which enters its namespace). */
export async function createContender(
  mode: BenchMode,
  runner: CommandRunner,
  env?: ContenderEnv,
): Promise<Contender> {
  if (mode === 'userspace') {
    if (!env) throw new Error('bench: the userspace contender needs its namespace');
    return userspaceContender(env);
  }
  if (mode === 'kube-nft') {
    const opts = { clusterCidr: BENCH_CLUSTER_CIDR };
    return {
      async fullSync(servicePorts) {
        await runChecked(runner, 'nft', ['-f', '-'], kubeLayoutRuleset(servicePorts, opts));
      },
      async partialSync(servicePorts, id, before) {
        const tx = kubeLayoutServiceUpdate(before, servicePorts.get(id), opts);
        await runChecked(runner, 'nft', ['-f', '-'], tx);
      },
      async close() {},
    };
  }
  const proxier = await weftProxier(mode, benchContext(runner));
  return {
    fullSync: (servicePorts) => proxier.sync({ servicePorts, changed: undefined }),
    partialSync: (servicePorts, id) => proxier.sync({ servicePorts, changed: new Set([id]) }),
    close: () => proxier.close(),
  };
}

let canRaiseNofile: boolean | undefined;

/**
 * `prlimit --nofile=…` ahead of the worker when this machine lets us raise the hard limit (a
 * container without CAP_SYS_RESOURCE does not; the worker then has the inherited limit, which
 * Node raises its soft limit to, and its capacity check skips sizes that do not fit).
 */
function nofilePrefix(): string[] {
  const arg = `--nofile=${USERSPACE_NOFILE}:${USERSPACE_NOFILE}`;
  canRaiseNofile ??= spawnSync('prlimit', [arg, '--', 'true'], { stdio: 'ignore' }).status === 0;
  return canRaiseNofile ? ['prlimit', arg, '--'] : [];
}

/** The userspace proxier in a worker process inside `env.netns`. */
function userspaceContender(env: ContenderEnv): Contender {
  const script = fileURLToPath(new URL('./userspace-worker.js', import.meta.url));
  const childEnv = { ...process.env };
  delete childEnv.NODE_OPTIONS;
  const child: ChildProcessWithoutNullStreams = spawn(
    'ip',
    [
      'netns',
      'exec',
      env.netns,
      ...nofilePrefix(),
      'setpriv',
      '--pdeathsig',
      'KILL',
      '--',
      process.execPath,
      script,
      '--netns',
      env.netns,
      '--timeout-ms',
      String(env.timeoutMs),
    ],
    { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv },
  );
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-2000);
  });
  const waiting: ((r: WorkerReply) => void)[] = [];
  let exited: string | undefined;
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    waiting.shift()?.(JSON.parse(line) as WorkerReply);
  });
  const onGone = (why: string): void => {
    exited = `userspace worker ${why}${stderr.trim() ? `: ${stderr.trim().slice(-500)}` : ''}`;
    for (const w of waiting.splice(0)) w({ ok: false, error: exited });
  };
  child.on('error', (err) => onGone(`failed to start (${err.message})`));
  child.on('exit', (code, signal) => onGone(`exited (${signal ?? `code ${code}`})`));
  child.stdin.on('error', () => {});

  const ask = (req: WorkerRequest): Promise<WorkerReply> => {
    if (exited) return Promise.reject(new Error(exited));
    return new Promise<WorkerReply>((resolve, reject) => {
      waiting.push((r) => (r.ok ? resolve(r) : reject(new Error(r.error ?? 'userspace worker failed'))));
      child.stdin.write(`${JSON.stringify(req)}\n`);
    });
  };
  const selfTimed = (r: WorkerReply): SelfTimed => ({
    ms: r.ms ?? 0,
    cpuMs: r.cpuMs ?? 0,
    commands: r.commands ?? 0,
  });
  return {
    async capacity(services, adds) {
      return (await ask({ op: 'capacity', services, adds })).reason;
    },
    async fullSync(servicePorts) {
      return selfTimed(await ask({ op: 'full', servicePorts: [...servicePorts.values()] }));
    },
    async partialSync(servicePorts, id) {
      return selfTimed(await ask({ op: 'partial', id, servicePort: servicePorts.get(id) ?? null }));
    },
    async verify(sp) {
      return (await ask({ op: 'verify', servicePort: sp })).verified === true;
    },
    async close() {
      if (exited) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      // A worker stuck in a sync (a timed-out case) is killed rather than waited for.
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await ask({ op: 'close' }).catch(() => {});
      await gone;
      clearTimeout(timer);
    },
  };
}

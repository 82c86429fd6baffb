/**
 * The lab: a small cluster of "nodes" built from network namespaces on one machine.
 *
 * ```
 *                       <run>-ul  (underlay namespace)
 *              br0 10.99.0.1/24 ── veth-n1 ── veth-n2 ── ... ── veth-etcd1 ── [veth-redis]
 *                                     │          │                  │              │
 *   <run>-n1  eth0 10.99.0.11   <run>-n2 eth0 .12 ...   <run>-etcd1 eth0 .101   <run>-redis .110
 * ```
 *
 * Every link is created inside a namespace of the run, never in the root namespace, and every
 * namespace name starts with the run id (`wt-<owner pid>-<rand>`), so {@link cleanupStale} can
 * remove what a crashed run left behind. Processes are started with `setpriv --pdeathsig KILL`,
 * so they die with the process that owns the lab, and stopped by PID only.
 */
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCodes, WeftError, messageOf } from '../../src/errors/index.js';
import { processAlive } from '../../src/exec/index.js';
import { dns1123LabelProblem, podKey } from '../../src/k8s/index.js';
import {
  run,
  startProcess as startManaged,
  waitFor,
  type ManagedProcess,
  type RunOptions,
  type RunResult,
} from './exec.js';
import {
  cleanupStale,
  createNetns,
  deleteNetns,
  listNetns,
  netnsName,
  newRunId,
  ownerPid,
  runDir,
} from './netns.js';
import { prepareCniBin, resolvePluginMain, WEFT_CNI_TYPE } from './cni-plugin.js';
import {
  CNI_NETWORK,
  CNI_VERSION,
  DEFAULT_POD_NAMESPACE,
  LAB_REGISTRY_PREFIX,
  POD_NAME_RE,
  podCniArgs,
  podObject,
  TCP_CLIENT_JS,
  TCP_RESPONDER_JS,
  parseAddResult,
  parseCniError,
  parseTcpClientOutput,
  type AddPodOptions,
  type AddedAddress,
  type CniCallOptions,
  type LabPod,
  type TcpRequestOptions,
  type TcpServerOptions,
} from './pods.js';
import { RedisServer, startEtcd, startEtcdCluster, type EtcdMember, type EtcdServer } from './servers.js';
import {
  DEFAULT_UNDERLAY_CIDR,
  MAX_NODES,
  Reachability,
  addressPlan,
  formatNamespaces,
  parseGoDurationMs,
  parseIpAddr,
  parsePing,
  table,
  type AddressPlan,
  type NamespaceView,
  type PingStats,
  type ReachCell,
} from './topology.js';

/** Options of {@link Lab.create}. */
export interface LabOptions {
  /** Number of nodes, 1..89. Default 3. */
  nodes?: number;
  /** Members of the etcd cluster, each in its own namespace: 1 or 3. Default 1. */
  etcdMembers?: 1 | 3;
  /**
   * etcd's `--max-request-bytes` for every member; default etcd's own (1.5 MiB). Raised by tests
   * that store an oversized object on purpose.
   */
  etcdMaxRequestBytes?: number;
  /** Also run a redis-server in its own namespace (`<run>-redis`). Default false. */
  redis?: boolean;
  /**
   * Id of the run, prefix of every namespace and of the temp dir. It must embed the owner's
   * PID (as {@link newRunId} does) so a crashed run can be told apart and cleaned up.
   * Default `newRunId()`.
   */
  runId?: string;
  /**
   * IPv4 CIDR of the underlay, a /24 or larger that does not overlap flannel's pod network
   * 10.244.0.0/16. The bridge takes host .1, nodes .11.., etcd members .101.., redis .110.
   * Default 10.99.0.0/24.
   */
  underlayCidr?: string;
  /** MTU of the bridge and of both ends of every underlay veth. Default 1500. */
  mtu?: number;
  /**
   * Keep logs when the lab is torn down (including after a failed create): they are copied,
   * without etcd data dirs, to `$WEFT_LAB_LOGS_DIR/<runId>` (default `./lab-logs/<runId>`).
   * Default: true when the environment has WEFT_LAB_KEEP_LOGS=1.
   */
  keepLogs?: boolean;
  /**
   * Called once per step of {@link Lab.create} with what the step does (for `cleanup`, what it
   * did), before the step runs; for narration. Throwing from it aborts create, which then
   * cleans up after itself.
   */
  onProgress?: (step: LabStep, message: string) => void | Promise<void>;
  /** Aborting it makes create stop at the next step, clean up and reject. */
  signal?: AbortSignal;
}

/** Steps of {@link Lab.create}, in order. */
export type LabStep = 'cleanup' | 'underlay' | 'nodes' | 'etcd' | 'redis' | 'ready';

/** Something attached to the underlay: a namespace with an `eth0` veth whose peer is on br0. */
export interface Attachment {
  /** Role in the lab: `node1`, `etcd1`, `redis`. */
  readonly name: string;
  readonly netns: string;
  /** Address on the underlay (without prefix length). */
  readonly ip: string;
  readonly prefixLength: number;
  /** The interface inside `netns`, on the underlay. */
  readonly iface: string;
  /** The veth peer of `iface`, in the underlay namespace, a port of br0. */
  readonly peer: string;
}

/**
 * A node: what a machine running the weft daemons would be. Its `name` is hostname-like
 * (`node1`, `node2`...) and is what daemons under test should use as their node name.
 * Its pods are {@link Lab.podsOn}; {@link Lab.addPod} creates them.
 */
export interface LabNode extends Attachment {
  /** Same as `name`: what `hostname` would print on a real node. */
  readonly hostname: string;
}

/** An etcd member of the lab. */
export interface LabEtcdMember extends Attachment {
  /** Client URL. */
  readonly endpoint: string;
  /** The server, to stop, kill or start it again (on the same data). */
  readonly server: EtcdServer;
}

/** The underlay: a namespace holding the bridge every attachment is plugged into. */
export interface LabUnderlay {
  readonly netns: string;
  readonly bridge: string;
  /** The bridge's own address, so the underlay namespace can reach everyone. */
  readonly ip: string;
  readonly cidr: string;
  readonly prefixLength: number;
  readonly mtu: number;
}

/**
 * Where a command runs: a node, etcd member or `redis` by name, `underlay`, a pod by its label
 * (`node1/web`), a namespace name of this run, or any object with a `netns` of this run (a
 * {@link LabPod}, a {@link LabNode}...). Never the root namespace.
 */
export type LabTarget = string | { readonly netns: string };

/** Options of {@link Lab.ping}. */
export interface PingOptions {
  /** Packets to send. Default 3. */
  count?: number;
  /** How long to wait for each reply, in seconds. Default 1. */
  timeoutS?: number;
  /** Seconds between packets. Default 0.2. */
  intervalS?: number;
}

/** A ping from one namespace of the lab. */
export interface PingResult extends PingStats {
  from: string;
  to: string;
  /** Set when ping could not run at all (no route...). */
  error?: string;
}

/** Health of one etcd endpoint as seen from one namespace. */
export interface EtcdHealth {
  endpoint: string;
  healthy: boolean;
  tookMs?: number;
  error?: string;
}

/** Options of {@link Lab.etcdctl}. */
export interface EtcdctlOptions extends Omit<RunOptions, 'netns'> {
  /** etcdctl's --command-timeout, in seconds. Default 3. */
  commandTimeoutS?: number;
}

/** Options of {@link Lab.reachability}. */
export interface ReachabilityOptions extends PingOptions {
  /** Also ping the underlay bridge and the etcd (and redis) namespaces from every node. */
  includeServers?: boolean;
}

/** What {@link Lab.teardown} did. */
export interface TeardownReport {
  namespaces: string[];
  pids: number[];
  /** Pods that were still there (`node1/web`); each got a best-effort CNI DEL first. */
  pods: string[];
  /** Where the logs were kept, when they were. */
  keptLogs?: string;
}

const UNDERLAY_ROLE = 'ul';
const BRIDGE = 'br0';
const IFACE = 'eth0';
const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;
const REDIS_PORT = 6379;
const STOP_GRACE_MS = 3_000;
const CNI_TIMEOUT_MS = 30_000;
/** Short: teardown removes the pod's namespace and the run dir whatever DEL does. */
const TEARDOWN_DEL_TIMEOUT_MS = 10_000;
const TCP_REQUEST_TIMEOUT_MS = 3_000;
/**
 * The PATH of the plugin and the TCP client, which get it and little else: the plugin as from a
 * runtime (CNI_* and PATH), the client so nothing of the test's environment changes its timing.
 */
const CHILD_PATH = process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const ETCDCTL_ENV = { ...process.env, ETCDCTL_API: '3' };

function labError(message: string, details: Record<string, unknown> = {}, cause?: unknown): WeftError {
  return new WeftError(ErrorCodes.LAB, message, details, cause === undefined ? undefined : { cause });
}

export { processAlive };

/** PIDs of live processes whose command line mentions `text` (e.g. a run id in a data dir). */
export function pidsMentioning(text: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmdline.includes(text) && processAlive(Number(entry))) found.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return found;
}

/** Where kept logs go: `$WEFT_LAB_LOGS_DIR`, else `./lab-logs` (outside tmp, so cleanupStale leaves them). */
export function keptLogsRoot(): string {
  return resolve(process.env.WEFT_LAB_LOGS_DIR ?? 'lab-logs');
}

function envKeepLogs(): boolean {
  return ['1', 'true', 'yes'].includes((process.env.WEFT_LAB_KEEP_LOGS ?? '').toLowerCase());
}

/** The last lines of every `*.log` under `dir`, for error messages. */
function logTails(dir: string, lines = 15): Record<string, string> {
  const tails: Record<string, string> = {};
  const walk = (d: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e);
      if (e.endsWith('.data')) continue;
      try {
        if (statSync(p).isDirectory()) walk(p);
        else if (e.endsWith('.log'))
          tails[p] = readFileSync(p, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        /* vanished */
      }
    }
  };
  walk(dir);
  return tails;
}

export class Lab {
  readonly runId: string;
  /** The run's temp dir: etcd data and logs, redis data, and every process log. */
  readonly dir: string;
  /** Where process logs are: `<dir>/<node or server>/<name>.log`. */
  readonly logsDir: string;
  readonly underlay: LabUnderlay;
  readonly nodes: readonly LabNode[];
  #etcdMembers: readonly LabEtcdMember[] = [];
  #redis: RedisServer | undefined;
  #redisAttachment: Attachment | undefined;
  readonly #plan: AddressPlan;
  readonly #opts: LabOptions;
  /** Every namespace this lab created (or was about to create). */
  readonly #namespaces = new Set<string>();
  /** Processes started through startProcess, plus redis; etcd's are read from the servers. */
  readonly #processes: ManagedProcess[] = [];
  readonly #pids = new Set<number>();
  /** Where each process of startProcess runs, so removing a pod can stop its processes first. */
  readonly #processNetns = new Map<ManagedProcess, string>();
  readonly #pods: LabPod[] = [];
  /**
   * Per pod: the network config and CNI_ARGS it was added with, for its DEL, and when addPod was
   * called, so `pods` lists concurrent adds in call order rather than in whichever order ADD
   * finished.
   */
  readonly #podInfo = new Map<LabPod, { conf: Record<string, unknown>; args: string; seq: number }>();
  #podSeq = 0;
  /** `node/name` of pods being added, so two adds of one name cannot race. */
  readonly #podsPending = new Set<string>();
  /** Per node, the tail of its CNI calls: they run one at a time on a node, as kubelet's do. */
  readonly #cniQueue = new Map<string, Promise<unknown>>();
  #cniPlugin: Promise<string> | undefined;
  #scripts: { responder: string; client: string } | undefined;
  #teardown: Promise<TeardownReport> | undefined;

  private constructor(runId: string, plan: AddressPlan, opts: LabOptions) {
    this.runId = runId;
    this.dir = runDir(runId);
    this.logsDir = this.dir;
    this.#plan = plan;
    this.#opts = opts;
    const mtu = opts.mtu ?? 1500;
    this.underlay = {
      netns: netnsName(runId, UNDERLAY_ROLE),
      bridge: BRIDGE,
      ip: plan.underlay,
      cidr: plan.cidr,
      prefixLength: plan.prefixLength,
      mtu,
    };
    this.nodes = plan.nodes.map((ip, i) => {
      const name = `node${i + 1}`;
      return {
        name,
        hostname: name,
        netns: netnsName(runId, `n${i + 1}`),
        ip,
        prefixLength: plan.prefixLength,
        iface: IFACE,
        peer: `veth-n${i + 1}`,
      };
    });
  }

  /**
   * Build a lab: clean up crashed runs, then create the underlay, the nodes, etcd (and redis).
   * Resolves once etcd answers health checks. When any step fails, everything created so far
   * is removed before the promise rejects (WeftError LAB, with log tails in `details.logs`).
   */
  static async create(opts: LabOptions = {}): Promise<Lab> {
    const nodes = opts.nodes ?? 3;
    const etcdMembers = opts.etcdMembers ?? 1;
    const runId = opts.runId ?? newRunId();
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) {
      throw labError(`nodes must be an integer in 1..${MAX_NODES}, got ${nodes}`, { field: 'nodes' });
    }
    if (etcdMembers !== 1 && etcdMembers !== 3) {
      throw labError(`etcdMembers must be 1 or 3, got ${String(etcdMembers)}`, { field: 'etcdMembers' });
    }
    if (ownerPid(runId) === undefined) {
      throw labError(`runId ${runId} does not have the form wt-<pid>-<rand>; use newRunId()`, {
        field: 'runId',
      });
    }
    const mtu = opts.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) {
      throw labError(`mtu must be an integer in 576..65535, got ${mtu}`, { field: 'mtu' });
    }
    const plan = addressPlan(opts.underlayCidr ?? DEFAULT_UNDERLAY_CIDR, nodes, etcdMembers);
    const lab = new Lab(runId, plan, opts);
    try {
      await lab.#build(etcdMembers);
      return lab;
    } catch (err) {
      const logs = logTails(lab.dir);
      let cleanup = '';
      try {
        const report = await lab.teardown();
        if (report.keptLogs) cleanup = `; logs kept in ${report.keptLogs}`;
      } catch (tdErr) {
        cleanup = `; clean-up failed too: ${messageOf(tdErr)}`;
      }
      throw labError(`lab ${runId}: create failed: ${messageOf(err)}${cleanup}`, { runId, logs }, err);
    }
  }

  async #step(step: LabStep, message: string): Promise<void> {
    this.#opts.signal?.throwIfAborted();
    await this.#opts.onProgress?.(step, message);
  }

  async #build(etcdMembers: number): Promise<void> {
    const ul = this.underlay;
    const removed = await cleanupStale();
    await this.#step(
      'cleanup',
      removed.length
        ? `removed leftovers of crashed runs: ${removed.join(', ')}`
        : 'no leftovers of crashed runs',
    );
    mkdirSync(this.dir, { recursive: true });

    await this.#step(
      'underlay',
      `underlay namespace ${ul.netns}: bridge ${ul.bridge} ${ul.ip}/${ul.prefixLength}, mtu ${ul.mtu}`,
    );
    await this.#netns(ul.netns);
    const ulCmd = (...args: string[]): Promise<RunResult> => run('ip', ['-n', ul.netns, ...args]);
    await ulCmd('link', 'add', ul.bridge, 'mtu', String(ul.mtu), 'type', 'bridge', 'stp_state', '0');
    await ulCmd('addr', 'add', `${ul.ip}/${ul.prefixLength}`, 'dev', ul.bridge);
    await ulCmd('link', 'set', ul.bridge, 'up');

    await this.#step('nodes', `nodes: ${this.nodes.map((n) => `${n.name} ${n.ip} [${n.netns}]`).join(', ')}`);
    await settleAll(this.nodes.map((n) => this.#attach(n, true)));

    const members: EtcdMember[] = this.#plan.etcd.map((ip, i) => ({
      name: `etcd${i + 1}`,
      host: ip,
      clientPort: ETCD_CLIENT_PORT,
      peerPort: ETCD_PEER_PORT,
      netns: netnsName(this.runId, `etcd${i + 1}`),
    }));
    await this.#step(
      'etcd',
      `etcd: ${members.map((m) => `${m.name} http://${m.host}:${m.clientPort} [${m.netns}]`).join(', ')}`,
    );
    const attachments = members.map((m, i) => ({
      name: m.name,
      netns: m.netns ?? '',
      ip: m.host,
      prefixLength: this.#plan.prefixLength,
      iface: IFACE,
      peer: `veth-etcd${i + 1}`,
    }));
    await settleAll(attachments.map((a) => this.#attach(a, false)));
    const etcdDir = join(this.dir, 'etcd');
    const first = members[0];
    const maxRequestBytes = this.#opts.etcdMaxRequestBytes;
    const sizing = maxRequestBytes !== undefined ? { maxRequestBytes } : {};
    const servers =
      etcdMembers === 1 && first
        ? [await startEtcd({ member: first, dir: etcdDir, ...sizing })]
        : await startEtcdCluster(members, etcdDir, sizing);
    this.#etcdMembers = attachments.map((a, i) => {
      const server = servers[i];
      if (!server) throw labError(`etcd member ${a.name} did not start`);
      return { ...a, endpoint: server.endpoint, server };
    });
    for (const s of servers) if (s.process?.pid) this.#pids.add(s.process.pid);

    if (this.#opts.redis) {
      const redis: Attachment = {
        name: 'redis',
        netns: netnsName(this.runId, 'redis'),
        ip: this.#plan.redis,
        prefixLength: this.#plan.prefixLength,
        iface: IFACE,
        peer: 'veth-redis',
      };
      await this.#step('redis', `redis: redis://${redis.ip}:${REDIS_PORT} [${redis.netns}]`);
      this.#redisAttachment = redis;
      await this.#attach(redis, false);
      this.#redis = new RedisServer({
        host: redis.ip,
        port: REDIS_PORT,
        netns: redis.netns,
        dir: join(this.dir, 'redis'),
      });
      // start() spawns synchronously before its first await: track the process before waiting,
      // so a redis that never answers is still stopped by the clean-up.
      const started = this.#redis.start();
      if (this.#redis.process) this.#track(this.#redis.process);
      await started;
    }
    await this.#step('ready', `lab ${this.runId} is up; logs in ${this.logsDir}`);
  }

  async #netns(name: string): Promise<void> {
    this.#namespaces.add(name);
    await createNetns(name);
  }

  /** Create `a.netns` with `eth0` on the underlay bridge and its address. */
  async #attach(a: Attachment, forwarding: boolean): Promise<void> {
    const ul = this.underlay;
    const mtu = String(ul.mtu);
    await this.#netns(a.netns);
    const ip = (ns: string, ...args: string[]): Promise<RunResult> => run('ip', ['-n', ns, ...args]);
    // Created inside the attachment's namespace; only the peer moves, into the underlay's.
    await ip(
      a.netns,
      'link',
      'add',
      a.iface,
      'mtu',
      mtu,
      'type',
      'veth',
      'peer',
      'name',
      a.peer,
      'mtu',
      mtu,
      'netns',
      ul.netns,
    );
    await ip(ul.netns, 'link', 'set', a.peer, 'master', ul.bridge);
    await ip(ul.netns, 'link', 'set', a.peer, 'up');
    await ip(a.netns, 'addr', 'add', `${a.ip}/${a.prefixLength}`, 'dev', a.iface);
    await ip(a.netns, 'link', 'set', a.iface, 'up');
    if (forwarding) await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: a.netns });
  }

  #track(p: ManagedProcess): void {
    this.#processes.push(p);
    if (p.pid) this.#pids.add(p.pid);
  }

  /** The etcd members (empty until create has started them). */
  get etcdMembers(): readonly LabEtcdMember[] {
    return this.#etcdMembers;
  }

  /** The redis-server, when the lab was created with `redis: true`. */
  get redis(): RedisServer | undefined {
    return this.#redis;
  }

  /** Where redis-server runs, when the lab was created with `redis: true`. */
  get redisAttachment(): Attachment | undefined {
    return this.#redisAttachment;
  }

  /** Client URLs of every etcd member. */
  get etcdEndpoints(): string[] {
    return this.etcdMembers.map((m) => m.endpoint);
  }

  /** The etcd servers (to stop, kill or restart a member). */
  get etcd(): EtcdServer[] {
    return this.etcdMembers.map((m) => m.server);
  }

  /** `redis://ip:port` when the lab has redis. */
  get redisUrl(): string | undefined {
    return this.redis?.url;
  }

  /** Every namespace of the run this lab knows of. */
  namespaces(): string[] {
    return [...this.#namespaces];
  }

  /** A node by name (`node1`) or namespace; throws when there is none. */
  node(name: string): LabNode {
    const n = this.nodes.find((x) => x.name === name || x.netns === name);
    if (!n) throw labError(`lab ${this.runId} has no node ${name}`, { node: name });
    return n;
  }

  /**
   * The namespace a target resolves to (a pod also by its `node1/web` label); throws for
   * anything outside this run.
   */
  netnsOf(target: LabTarget): string {
    if (typeof target !== 'string') {
      if (!target.netns.startsWith(`${this.runId}-`)) {
        throw labError(`namespace ${target.netns} is not part of lab ${this.runId}`);
      }
      return target.netns;
    }
    if (target === 'underlay' || target === UNDERLAY_ROLE) return this.underlay.netns;
    const known = this.#attachments();
    const hit = known.find((a) => a.name === target || a.netns === target);
    if (hit) return hit.netns;
    const pod = this.#pods.find((p) => podLabel(p) === target);
    if (pod) return pod.netns;
    if (target.startsWith(`${this.runId}-`) && this.#namespaces.has(target)) return target;
    throw labError(`lab ${this.runId} has no node, server or namespace ${target}`, { target });
  }

  #attachments(): Attachment[] {
    return [...this.nodes, ...this.etcdMembers, ...(this.redisAttachment ? [this.redisAttachment] : [])];
  }

  /** A display name for a namespace (node name, `underlay`, `etcd1`...). */
  #roleOf(netns: string): string {
    if (netns === this.underlay.netns) return 'underlay';
    const pod = this.#pods.find((p) => p.netns === netns);
    if (pod) return podLabel(pod);
    return this.#attachments().find((a) => a.netns === netns)?.name ?? netns;
  }

  /** Run a command to completion inside a namespace of the lab. */
  exec(
    target: LabTarget,
    cmd: string,
    args: readonly string[],
    opts: Omit<RunOptions, 'netns'> = {},
  ): Promise<RunResult> {
    return run(cmd, args, { ...opts, netns: this.netnsOf(target) });
  }

  /**
   * Start a long-running process inside a namespace of the lab; it is stopped at teardown.
   * Its output goes to `<logsDir>/<target>/<name>.log`; `env` is merged over process.env.
   */
  startProcess(
    target: LabTarget,
    name: string,
    cmd: string,
    args: readonly string[],
    env: NodeJS.ProcessEnv = {},
  ): ManagedProcess {
    if (this.#teardown) throw labError(`lab ${this.runId} is torn down`);
    const netns = this.netnsOf(target);
    const p = startManaged({
      name: `${this.#roleOf(netns)}/${name}`,
      cmd,
      args,
      netns,
      logFile: join(this.logsDir, this.#roleOf(netns), `${name}.log`),
      env: { ...process.env, ...env },
    });
    this.#track(p);
    this.#processNetns.set(p, netns);
    return p;
  }

  /** Every process this lab started that is still running (etcd, redis and startProcess's). */
  processes(): ManagedProcess[] {
    const all = [...this.#processes];
    for (const s of this.etcd) if (s.process && !all.includes(s.process)) all.push(s.process);
    return all.filter((p) => p.running);
  }

  /** PIDs of every process this lab has started, including ones that since exited. */
  pids(): number[] {
    for (const p of this.processes()) if (p.pid) this.#pids.add(p.pid);
    return [...this.#pids];
  }

  /** Every pod of the lab, in the order addPod was called. */
  get pods(): readonly LabPod[] {
    return [...this.#pods];
  }

  /** The pods on one node, in the order addPod was called. */
  podsOn(node: string | LabNode): LabPod[] {
    const n = this.#nodeOf(node);
    return this.#pods.filter((p) => p.node === n.name);
  }

  /**
   * Where a node's subnet.env belongs: `<dir>/<node>/subnet.env`. weft-cni reads it on every
   * ADD, so the daemon under test on that node is started with `--subnet-file` pointing here
   * (or a test writes it by hand). Nothing creates it for you.
   */
  subnetEnvPath(node: string | LabNode): string {
    return join(this.dir, this.#nodeOf(node).name, 'subnet.env');
  }

  /**
   * The network config weft-cni gets on a node. Every path in it is under `<dir>/<node>/`:
   * pods on different nodes must not share host-local's reservations (each node has its own
   * lease), and nothing may land in the machine's /var/lib/cni.
   */
  cniConfig(node: string | LabNode): Record<string, unknown> {
    const n = this.#nodeOf(node);
    const base = join(this.dir, n.name);
    return {
      cniVersion: CNI_VERSION,
      name: CNI_NETWORK,
      type: WEFT_CNI_TYPE,
      subnetFile: this.subnetEnvPath(n),
      dataDir: join(base, 'cni-data'),
      ipam: { dataDir: join(base, 'ipam') },
      delegate: {},
      // weft-cni records each pod's attachment where weft-proxy (and weft-controller) read.
      weftRegistry: { etcdEndpoints: this.etcdEndpoints, prefix: LAB_REGISTRY_PREFIX, nodeName: n.name },
    };
  }

  /**
   * The CNI_PATH of every node, `<dir>/cni-bin`: the reference plugins and `weft-cni`. Built
   * on first use (see cni-plugin.ts for where the plugin's code comes from), so labs without
   * pods pay nothing for it.
   */
  cniBinDir(): Promise<string> {
    this.#cniPlugin ??= (async () => {
      const main = await resolvePluginMain(join(this.dir, 'cni-build'));
      const binDir = join(this.dir, 'cni-bin');
      prepareCniBin(binDir, main);
      return binDir;
    })().catch((err: unknown) => {
      // Not cached: a retry after fixing the cause (a missing package, a syntax error) works.
      this.#cniPlugin = undefined;
      throw labError(`lab ${this.runId}: preparing weft-cni failed: ${messageOf(err)}`, {}, err);
    });
    return this.#cniPlugin;
  }

  /**
   * One weft-cni call in the node's namespace, as a runtime on that node makes it. Resolves
   * whatever the exit status: an error is CNI error JSON on stdout and a non-zero code. Calls on
   * one node run one at a time (as kubelet's do), so tests may add pods concurrently.
   */
  async cni(
    node: string | LabNode,
    command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION',
    opts: CniCallOptions,
  ): Promise<RunResult> {
    const n = this.#nodeOf(node);
    // Resolved here, so CNI_NETNS can only ever name a namespace of this run.
    const podNetns = opts.netns === undefined ? undefined : this.netnsOf(opts.netns);
    const binDir = await this.cniBinDir();
    return this.#serialOn(n.name, () =>
      run(join(binDir, WEFT_CNI_TYPE), [], {
        netns: n.netns,
        env: {
          PATH: CHILD_PATH,
          CNI_COMMAND: command,
          CNI_CONTAINERID: opts.containerId,
          CNI_NETNS: podNetns ? `/run/netns/${podNetns}` : '',
          CNI_IFNAME: opts.ifname ?? 'eth0',
          CNI_PATH: binDir,
          ...(opts.args !== undefined ? { CNI_ARGS: opts.args } : {}),
        },
        input: JSON.stringify(opts.conf ?? this.cniConfig(n)),
        allowFail: true,
        timeoutMs: opts.timeoutMs ?? CNI_TIMEOUT_MS,
      }),
    );
  }

  /** Runs `fn` after every earlier call queued under `key` has settled. */
  #serialOn<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.#cniQueue.get(key) ?? Promise.resolve()).then(fn);
    this.#cniQueue.set(
      key,
      next.catch(() => undefined),
    );
    return next;
  }

  /**
   * Add a pod to a node as a runtime would: its Pod object declared in the lab's etcd (labels,
   * `spec.nodeName`, container ports; {@link podObject}) under {@link LAB_REGISTRY_PREFIX}, a
   * namespace `<run>-n<K>-<name>`, then weft-cni ADD in the node's namespace with the node's
   * config ({@link cniConfig}) and the CNI_ARGS kubelet passes, so weft-cni records the pod's
   * attachment. The node's subnet.env ({@link subnetEnvPath}) must exist by then. When ADD fails,
   * DEL is run, the namespace removed and the Pod object withdrawn (a runtime cleans up the same
   * way), and the promise rejects with WeftError LAB whose `details` hold the CNI error (`cniCode`,
   * `cniMsg`) and the plugin's stderr.
   *
   * The Kubernetes name is `name`: pods of one name on several nodes (tests of the overlay do that)
   * share one Pod object, the last declared; removing one declares the remaining one's again.
   */
  async addPod(node: string | LabNode, name: string, opts: AddPodOptions = {}): Promise<LabPod> {
    if (this.#teardown) throw labError(`lab ${this.runId} is torn down`);
    const n = this.#nodeOf(node);
    if (!POD_NAME_RE.test(name)) {
      throw labError(`pod name ${JSON.stringify(name)} must be 1 to 32 of a-z, 0-9 and inner -`, {
        field: 'name',
      });
    }
    const namespace = opts.namespace ?? DEFAULT_POD_NAMESPACE;
    const nsProblem = dns1123LabelProblem(namespace);
    if (nsProblem)
      throw labError(`pod namespace ${JSON.stringify(namespace)} ${nsProblem}`, { field: 'namespace' });
    const label = `${n.name}/${name}`;
    if (this.#podsPending.has(label) || this.#pods.some((p) => podLabel(p) === label)) {
      throw labError(`lab ${this.runId} has a pod ${label} already`, { pod: label });
    }
    this.#podsPending.add(label);
    const seq = this.#podSeq++;
    try {
      // Before the namespace exists, so a plugin that cannot be prepared leaves nothing behind.
      await this.cniBinDir();
      const netns = netnsName(this.runId, `${n.netns.slice(this.runId.length + 1)}-${name}`);
      const ifname = opts.ifname ?? 'eth0';
      const conf = { ...this.cniConfig(n), ...opts.conf };
      const containerId = opts.containerId ?? `${this.runId}-${n.name}-${name}`;
      const call: CniCallOptions = {
        containerId,
        netns,
        ifname,
        conf,
        args: podCniArgs(namespace, name, containerId),
        timeoutMs: opts.timeoutMs,
      };
      const labels = { ...opts.labels };
      const ports = [...(opts.ports ?? [])];
      const identity = { namespace, name, node: n.name };
      await this.#putPodObject(identity, labels, ports);
      let added: AddedAddress;
      try {
        await this.#netns(netns);
        const r = await this.cni(n, 'ADD', call);
        if (r.code !== 0) throw cniCallError('ADD', label, r);
        added = parseAddResult(r.stdout);
      } catch (err) {
        await this.cni(n, 'DEL', { ...call, timeoutMs: TEARDOWN_DEL_TIMEOUT_MS }).catch(() => undefined);
        await this.#dropNetns(netns);
        await this.#withdrawPodObject(identity).catch(() => undefined);
        throw err;
      }
      const pod: LabPod = {
        name,
        namespace,
        labels,
        ports,
        node: n.name,
        netns,
        ip: added.ip,
        prefixLength: added.prefixLength,
        gateway: added.gateway,
        ifname,
        containerId: call.containerId,
        result: added.result,
      };
      this.#podInfo.set(pod, { conf, args: call.args ?? '', seq });
      this.#pods.push(pod);
      this.#pods.sort((x, y) => (this.#podInfo.get(x)?.seq ?? 0) - (this.#podInfo.get(y)?.seq ?? 0));
      return pod;
    } finally {
      this.#podsPending.delete(label);
    }
  }

  /**
   * Remove a pod as a runtime would: stop the lab's processes in it, weft-cni DEL (with its ADD
   * result as prevResult and its CNI_ARGS, so its attachment record goes), delete its namespace,
   * then its Pod object (see {@link addPod} for pods sharing a name). When DEL fails the promise
   * rejects (WeftError LAB) and the pod stays, for a retry or for teardown. Removing a pod that is
   * already gone does nothing.
   */
  async removePod(pod: LabPod): Promise<void> {
    // Throws for a pod of another lab, which "already gone" must not hide.
    this.netnsOf(pod);
    const known = this.#pods.find((p) => p.netns === pod.netns);
    if (!known) return;
    await Promise.allSettled(this.#processesIn(known.netns).map((p) => p.stop(STOP_GRACE_MS)));
    const r = await this.#delPod(known, CNI_TIMEOUT_MS);
    if (r.code !== 0) throw cniCallError('DEL', podLabel(known), r);
    await this.#dropNetns(known.netns);
    this.#pods.splice(this.#pods.indexOf(known), 1);
    this.#podInfo.delete(known);
    await this.#withdrawPodObject(known);
  }

  #delPod(pod: LabPod, timeoutMs: number, registry = true): Promise<RunResult> {
    const info = this.#podInfo.get(pod);
    const conf: Record<string, unknown> = {
      ...(info?.conf ?? this.cniConfig(pod.node)),
      prevResult: pod.result,
    };
    if (!registry) delete conf.weftRegistry;
    return this.cni(pod.node, 'DEL', {
      containerId: pod.containerId,
      netns: pod.netns,
      ifname: pod.ifname,
      conf,
      ...(info?.args ? { args: info.args } : {}),
      timeoutMs,
    });
  }

  /** The registry key of a pod's Pod object. */
  podKey(pod: { namespace: string; name: string }): string {
    return podKey(LAB_REGISTRY_PREFIX, pod.namespace, pod.name);
  }

  /** Writes a Pod object to the lab's etcd (from the underlay namespace). */
  async #putPodObject(
    pod: { namespace: string; name: string; node: string },
    labels: Readonly<Record<string, string>>,
    ports: LabPod['ports'],
  ): Promise<void> {
    const r = await this.etcdctl('underlay', ['put', this.podKey(pod)], {
      input: JSON.stringify(podObject(pod, labels, ports)),
      allowFail: true,
    });
    if (r.code !== 0) {
      throw labError(`declaring pod ${pod.namespace}/${pod.name} in etcd failed: ${r.stderr.trim()}`, {
        key: this.podKey(pod),
      });
    }
  }

  /**
   * Deletes a removed pod's Pod object, unless another pod of the lab has the same namespace and
   * name (on another node): that one's object is declared again instead.
   */
  async #withdrawPodObject(pod: { namespace: string; name: string }): Promise<void> {
    const heir = [...this.#pods].reverse().find((p) => p.namespace === pod.namespace && p.name === pod.name);
    if (heir) return this.#putPodObject(heir, heir.labels, heir.ports);
    const r = await this.etcdctl('underlay', ['del', this.podKey(pod)], { allowFail: true });
    if (r.code !== 0) {
      throw labError(`deleting pod ${pod.namespace}/${pod.name} from etcd failed: ${r.stderr.trim()}`, {
        key: this.podKey(pod),
      });
    }
  }

  async #dropNetns(netns: string): Promise<void> {
    await deleteNetns(netns);
    this.#namespaces.delete(netns);
  }

  #processesIn(netns: string): ManagedProcess[] {
    return this.#processes.filter((p) => p.running && this.#processNetns.get(p) === netns);
  }

  #nodeOf(node: string | LabNode): LabNode {
    return this.node(typeof node === 'string' ? node : node.name);
  }

  /** Run a command to completion inside a pod. */
  podExec(
    pod: LabPod,
    cmd: string,
    args: readonly string[],
    opts: Omit<RunOptions, 'netns'> = {},
  ): Promise<RunResult> {
    return this.exec(pod, cmd, args, opts);
  }

  /** The responder and client scripts, written to `<dir>/bin` on first use. */
  #labScripts(): { responder: string; client: string } {
    if (!this.#scripts) {
      const bin = join(this.dir, 'bin');
      mkdirSync(bin, { recursive: true });
      const scripts = { responder: join(bin, 'tcp-responder.mjs'), client: join(bin, 'tcp-client.mjs') };
      writeFileSync(scripts.responder, TCP_RESPONDER_JS);
      writeFileSync(scripts.client, TCP_CLIENT_JS);
      this.#scripts = scripts;
    }
    return this.#scripts;
  }

  /**
   * Start a TCP responder in a pod (or any namespace of the lab): every connection to `port`
   * is answered with one line, by default the pod's name, then closed; an HTTP request gets an
   * HTTP/1.1 200 with that line as body. Resolves once it listens. It is stopped by removePod
   * and teardown, or by its own `stop()`.
   */
  async startTcpServer(
    target: LabTarget,
    port: number,
    opts: TcpServerOptions = {},
  ): Promise<ManagedProcess> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw labError(`port must be an integer in 1..65535, got ${port}`, { field: 'port' });
    }
    const netns = this.netnsOf(target);
    const reply = opts.reply ?? this.#pods.find((p) => p.netns === netns)?.name ?? this.#roleOf(netns);
    if (/[\r\n]/.test(reply)) throw labError('reply must be a single line', { field: 'reply' });
    const name = opts.name ?? `tcp-${port}`;
    const { responder } = this.#labScripts();
    const p = this.startProcess(netns, name, 'env', [
      ...nodeWithoutHooks(),
      responder,
      String(port),
      opts.host ?? '0.0.0.0',
      reply,
      opts.includePeer ? '1' : '0',
    ]);
    // The log is appended to: only what this process writes counts, not an earlier run's line.
    const offset = fileSize(p.logFile);
    const died = new AbortController();
    void p.exited().then((code) =>
      died.abort(
        labError(`${p.name} exited (code ${code}) before listening: ${readFrom(p.logFile, offset).trim()}`, {
          logFile: p.logFile,
        }),
      ),
    );
    try {
      await waitFor(() => /^listening /m.test(readFrom(p.logFile, offset)), {
        what: `${p.name} to listen on port ${port}`,
        timeoutMs: opts.timeoutMs ?? 10_000,
        intervalMs: 20,
        signal: died.signal,
      });
    } catch (err) {
      await p.stop(STOP_GRACE_MS);
      throw err;
    }
    return p;
  }

  /**
   * Connect from a namespace of the lab to `ip:port`, send `opts.send`, half-close, and resolve
   * with everything the server sent before closing. Rejects with WeftError LAB whose
   * `details.code` is the socket error (ECONNREFUSED, EHOSTUNREACH...) or ETIMEDOUT.
   */
  async tcpRequest(from: LabTarget, ip: string, port: number, opts: TcpRequestOptions = {}): Promise<string> {
    const netns = this.netnsOf(from);
    const timeoutMs = opts.timeoutMs ?? TCP_REQUEST_TIMEOUT_MS;
    const { client } = this.#labScripts();
    const r = await run(
      'env',
      [...nodeWithoutHooks(), client, ip, String(port), String(timeoutMs), opts.send ?? 'ping\n'],
      // The client enforces timeoutMs itself; this only catches a client that hangs regardless.
      { netns, allowFail: true, timeoutMs: timeoutMs + 10_000, env: { PATH: CHILD_PATH } },
    );
    const out = parseTcpClientOutput(r.stdout, r.stderr);
    if (!out.ok) {
      throw labError(
        `tcp ${this.#roleOf(netns)} -> ${ip}:${port}: ${out.code ?? '?'}: ${out.message ?? ''}`,
        {
          from: netns,
          to: `${ip}:${port}`,
          code: out.code,
          data: out.data,
        },
      );
    }
    return out.data;
  }

  /** Ping `ip` from a namespace of the lab; never throws for an unreachable target. */
  async ping(from: LabTarget, ip: string, opts: PingOptions = {}): Promise<PingResult> {
    const count = opts.count ?? 3;
    const timeoutS = opts.timeoutS ?? 1;
    const intervalS = opts.intervalS ?? 0.2;
    // No -w: with a deadline ping keeps sending past `count` to an address that never answers.
    const worstS = count * intervalS + timeoutS;
    const netns = this.netnsOf(from);
    const r = await run(
      'ping',
      ['-n', '-q', '-c', String(count), '-i', String(intervalS), '-W', String(timeoutS), ip],
      { netns, allowFail: true, timeoutMs: Math.ceil(worstS + 5) * 1000 },
    );
    const base = { from: this.#roleOf(netns), to: ip };
    try {
      return { ...base, ...parsePing(r.stdout) };
    } catch {
      return { ...base, transmitted: 0, received: 0, loss: 1, error: (r.stderr || r.stdout).trim() };
    }
  }

  /**
   * Ping every node from every node over the underlay (all pings run at once); with
   * `includeServers`, the underlay bridge and the etcd/redis namespaces are targets too.
   */
  async reachability(opts: ReachabilityOptions = {}): Promise<Reachability> {
    const targets = this.nodes.map((n) => ({ name: n.name, ip: n.ip }));
    if (opts.includeServers) {
      targets.push({ name: 'underlay', ip: this.underlay.ip });
      for (const m of this.etcdMembers) targets.push({ name: m.name, ip: m.ip });
      if (this.redis) targets.push({ name: 'redis', ip: this.redis.host });
    }
    const pings: Promise<ReachCell>[] = [];
    for (const n of this.nodes) {
      for (const t of targets) {
        if (t.name === n.name) continue;
        pings.push(this.ping(n, t.ip, opts).then((stats) => ({ from: n.name, to: t.name, ip: t.ip, stats })));
      }
    }
    return new Reachability(
      this.nodes.map((n) => n.name),
      targets,
      await Promise.all(pings),
    );
  }

  /** Run etcdctl (API v3) against every member, from inside a namespace of the lab. */
  etcdctl(from: LabTarget, args: readonly string[], opts: EtcdctlOptions = {}): Promise<RunResult> {
    const { commandTimeoutS = 3, ...runOpts } = opts;
    return this.exec(
      from,
      'etcdctl',
      ['--endpoints', this.etcdEndpoints.join(','), `--command-timeout=${commandTimeoutS}s`, ...args],
      { env: ETCDCTL_ENV, ...runOpts },
    );
  }

  /** `etcdctl endpoint health` for every member, from inside a namespace of the lab. */
  async etcdHealth(from: LabTarget): Promise<EtcdHealth[]> {
    const r = await this.etcdctl(from, ['endpoint', 'health', '-w', 'json'], {
      allowFail: true,
      commandTimeoutS: 1,
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.stdout);
    } catch {
      parsed = undefined;
    }
    if (!Array.isArray(parsed)) {
      // No JSON at all (etcdctl could not even start): every endpoint is unhealthy.
      return this.etcdEndpoints.map((endpoint) => ({ endpoint, healthy: false, error: r.stderr.trim() }));
    }
    return (parsed as { endpoint: string; health: boolean; took?: string; error?: string }[]).map((h) => ({
      endpoint: h.endpoint,
      healthy: h.health === true,
      ...(h.took ? { tookMs: parseGoDurationMs(h.took) } : {}),
      ...(h.error ? { error: h.error } : {}),
    }));
  }

  /** The member that currently leads the etcd cluster (asked from the underlay namespace). */
  async etcdLeader(): Promise<LabEtcdMember> {
    const r = await this.etcdctl('underlay', ['endpoint', 'status', '-w', 'json'], {
      allowFail: true,
      commandTimeoutS: 1,
    });
    // member ids are 64-bit: quote them before JSON.parse rounds them.
    const json = r.stdout.replace(/"(member_id|leader|cluster_id)":(\d+)/g, '"$1":"$2"');
    let status: { Endpoint: string; Status: { header: { member_id: string }; leader: string } }[] = [];
    try {
      status = JSON.parse(json || '[]') as typeof status;
    } catch {
      /* reported below */
    }
    const leader = status.find((s) => s.Status.header.member_id === s.Status.leader);
    const member = this.etcdMembers.find((m) => m.endpoint === leader?.Endpoint);
    if (!member) throw labError(`no etcd leader found: ${r.stderr.trim() || r.stdout.trim()}`);
    return member;
  }

  /** A readable multi-line description of the lab as the kernel reports it. */
  async topology(): Promise<string> {
    const ns = [
      { role: 'underlay', netns: this.underlay.netns },
      ...this.nodes.map((n) => ({ role: n.name, netns: n.netns })),
      ...this.etcdMembers.map((m) => ({ role: m.name, netns: m.netns })),
      ...(this.redisAttachment ? [{ role: 'redis', netns: this.redisAttachment.netns }] : []),
      ...this.#pods.map((p) => ({ role: podLabel(p), netns: p.netns })),
    ];
    const views: NamespaceView[] = await Promise.all(
      ns.map(async ({ role, netns }) => {
        const links = parseIpAddr((await run('ip', ['-d', '-j', '-n', netns, 'addr', 'show'])).stdout);
        const notes: string[] = [];
        if (this.nodes.some((n) => n.netns === netns)) {
          const fwd = await run('sysctl', ['-n', 'net.ipv4.ip_forward'], { netns, allowFail: true });
          notes.push(`net.ipv4.ip_forward = ${fwd.stdout.trim() || '?'}`);
        }
        for (const m of this.etcdMembers.filter((x) => x.netns === netns)) {
          const p = m.server.process;
          notes.push(
            `etcd ${m.name}: client ${m.endpoint}, peer http://${m.ip}:${m.server.member.peerPort}, ` +
              `pid ${p?.running ? p.pid : 'not running'}, log ${p?.logFile ?? '-'}`,
          );
        }
        if (role === 'redis' && this.redis) {
          const p = this.redis.process;
          notes.push(`redis-server ${this.redis.url}, pid ${p?.running ? p.pid : 'not running'}`);
        }
        for (const p of this.#processes.filter((x) => x.running && this.#processNetns.get(x) === netns)) {
          notes.push(`process ${p.name}: pid ${p.pid}, log ${p.logFile}`);
        }
        return { role, netns, links, notes };
      }),
    );
    const header = [
      `weft lab ${this.runId}: ${this.nodes.length} node(s), ${this.etcdMembers.length} etcd member(s)` +
        (this.redis ? ', redis' : ''),
      `underlay ${this.underlay.cidr} on bridge ${this.underlay.bridge} in ${this.underlay.netns}, mtu ${this.underlay.mtu}`,
      `logs and data: ${this.logsDir}`,
      '',
    ];
    const summary = table([
      ['', 'role', 'namespace', 'address'],
      [
        '',
        'underlay',
        this.underlay.netns,
        `${this.underlay.ip}/${this.underlay.prefixLength} (${this.underlay.bridge})`,
      ],
      ...this.nodes.map((n) => ['', n.name, n.netns, `${n.ip}/${n.prefixLength} (${n.iface})`]),
      ...this.etcdMembers.map((m) => ['', m.name, m.netns, `${m.ip}/${m.prefixLength} (${m.iface})`]),
      ...(this.redisAttachment
        ? [
            [
              '',
              'redis',
              this.redisAttachment.netns,
              `${this.redisAttachment.ip}/${this.#plan.prefixLength} (${IFACE})`,
            ],
          ]
        : []),
      ...this.#pods.map((p) => ['', podLabel(p), p.netns, `${p.ip}/${p.prefixLength} (${p.ifname}, pod)`]),
    ]);
    const footer = [
      '',
      `etcd endpoints: ${this.etcdEndpoints.join(',') || '(none)'}`,
      ...(this.redis ? [`redis: ${this.redis.url}`] : []),
    ];
    return [
      ...header,
      'namespaces:',
      summary,
      '',
      'links and addresses:',
      formatNamespaces(views),
      ...footer,
    ].join('\n');
  }

  /**
   * Stop every process the lab started (SIGTERM, then SIGKILL, by PID), run weft-cni DEL for
   * every pod left (best effort), delete every namespace of the run (which kills whatever else
   * runs in them) and remove the run dir, keeping the logs first when asked to (or
   * WEFT_LAB_KEEP_LOGS=1). Idempotent. Rejects (WeftError LAB)
   * when a namespace or process of the run is still there afterwards.
   */
  teardown(opts: { keepLogs?: boolean } = {}): Promise<TeardownReport> {
    this.#teardown ??= this.#doTeardown(opts.keepLogs ?? this.#opts.keepLogs ?? envKeepLogs());
    return this.#teardown;
  }

  async #doTeardown(keepLogs: boolean): Promise<TeardownReport> {
    const problems: string[] = [];
    const pids = this.pids();
    // Daemons first, gracefully (SIGTERM, then SIGKILL), while the registry still answers; then
    // the servers, with SIGKILL: their data is thrown away, and an etcd member that is told to
    // stop tries to hand over leadership to peers that are stopping too.
    const servers = new Set([...this.etcd.map((s) => s.process), this.redis?.process]);
    const running = this.processes();
    await Promise.allSettled(running.filter((p) => !servers.has(p)).map((p) => p.stop(STOP_GRACE_MS)));

    // DEL before the namespaces go, as a runtime would, so the plugin's clean-up path runs, and
    // before etcd goes, since DEL removes the pod's attachment record first (and fails while the
    // registry is unreachable). With etcd already down (a test stopped it), DEL goes without the
    // registry rather than wait out its timeout. Best effort: deleting the namespaces and the
    // run dir below undoes whatever DEL leaves.
    const pods = [...this.#pods];
    const registryUp = this.etcd.some((e) => e.process?.running);
    await Promise.allSettled(pods.map((p) => this.#delPod(p, TEARDOWN_DEL_TIMEOUT_MS, registryUp)));
    await Promise.allSettled(running.filter((p) => servers.has(p)).map((p) => p.kill()));

    let namespaces = [...this.#namespaces];
    try {
      const listed = (await listNetns()).filter((n) => n.startsWith(`${this.runId}-`));
      namespaces = [...new Set([...namespaces, ...listed])];
    } catch (err) {
      problems.push(`listing namespaces: ${messageOf(err)}`);
    }
    const deletions = await Promise.allSettled(namespaces.map((n) => deleteNetns(n)));
    deletions.forEach((d, i) => {
      if (d.status === 'rejected') problems.push(`deleting ${namespaces[i]}: ${messageOf(d.reason)}`);
    });

    try {
      await waitFor(() => pids.every((pid) => !processAlive(pid)), {
        what: 'the lab processes to exit',
        timeoutMs: 3_000,
        intervalMs: 50,
      });
    } catch {
      problems.push(`processes still running: ${pids.filter(processAlive).join(', ')}`);
    }
    try {
      const left = (await listNetns()).filter((n) => n.startsWith(`${this.runId}-`));
      if (left.length) problems.push(`namespaces still present: ${left.join(', ')}`);
    } catch (err) {
      problems.push(`listing namespaces: ${messageOf(err)}`);
    }

    const report: TeardownReport = { namespaces, pids, pods: pods.map(podLabel) };
    try {
      if (keepLogs) report.keptLogs = this.#keepLogs();
      rmSync(this.dir, { recursive: true, force: true });
    } catch (err) {
      problems.push(`removing ${this.dir}: ${messageOf(err)}`);
    }
    if (problems.length) {
      throw labError(`lab ${this.runId}: teardown incomplete: ${problems.join('; ')}`, {
        ...report,
        problems,
      });
    }
    return report;
  }

  /** Copy the run dir, without etcd's data dirs, out of tmp; returns where. */
  #keepLogs(): string {
    const dest = join(keptLogsRoot(), this.runId);
    if (!existsSync(this.dir)) return dest;
    cpSync(this.dir, dest, { recursive: true, filter: (src) => !src.endsWith('.data') });
    return dest;
  }
}

/** Await every promise; then throw the first failure (so none is still running when we clean up). */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(ps);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** A failed weft-cni call, with the CNI error (`cniCode`, `cniMsg`) and stderr in `details`. */
function cniCallError(command: string, pod: string, r: RunResult): WeftError {
  const e = parseCniError(r.stdout);
  return labError(
    `weft-cni ${command} of pod ${pod} failed (exit ${r.code}): ` +
      (e ? `${e.msg} (CNI code ${e.code})` : r.stdout.trim() || r.stderr.trim()),
    { pod, cniCode: e?.code, cniMsg: e?.msg, cniDetails: e?.details, stdout: r.stdout, stderr: r.stderr },
  );
}

/**
 * `env` arguments that run this Node without NODE_OPTIONS. Under tap, every child's environment
 * gets a NODE_OPTIONS that loads a process-tracking hook (even when the spawn names its own
 * env), which makes each start of the small lab programs cost most of a second. env execs, so
 * a started process keeps its PID.
 */
function nodeWithoutHooks(): string[] {
  return ['-u', 'NODE_OPTIONS', process.execPath];
}

/** How a pod is shown and addressed by name: `node1/web`. */
function podLabel(pod: LabPod): string {
  return `${pod.node}/${pod.name}`;
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** The text of `path` from byte `offset` on; '' while the file does not exist. */
function readFrom(path: string, offset: number): string {
  try {
    return readFileSync(path).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

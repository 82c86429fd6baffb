/**
 * What `weftctl lab` and the lab supervisor share: the state file each running lab keeps
 * (`<state dir>/<run id>.json`), the unix socket next to it that the supervisor serves commands
 * on (HTTP), and finding a run from a command line. The lab itself (namespaces, etcd, daemons)
 * is test code (test/lab); nothing here imports it, so weftctl's other commands never load it.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../errors/index.js';
import { processAlive } from '../exec/index.js';
import { UsageError } from './command.js';

/** Where state files, sockets and supervisor logs are: `$WEFT_LAB_STATE_DIR`, else `/run/weft-lab`. */
export function labStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.WEFT_LAB_STATE_DIR || '/run/weft-lab';
}

/** The variable `lab exec` sets (and `status --lab` re-executes with) inside a lab's namespaces. */
export const LAB_RUN_ENV = 'WEFT_LAB_RUN';

/** Where a lab is in its life. */
export type LabPhase = 'starting' | 'ready' | 'failed' | 'stopping';

/** A node of a running lab. */
export interface LabNodeState {
  /** The lab's node name (`node1`): the daemons' node name. */
  name: string;
  /** The short name accepted on the command line (`n1`). */
  alias: string;
  netns: string;
  /** Underlay address. */
  ip: string;
  /** The node's lease (`10.244.1.0/24`), from its subnet.env, once weft-flanneld wrote it. */
  subnet?: string;
}

/** Something else of the lab with a namespace: the underlay, an etcd member, a pod. */
export interface LabPlaceState {
  name: string;
  netns: string;
  ip: string;
}

/** A pod added through weft-cni. */
export interface LabPodState extends LabPlaceState {
  node: string;
}

/** The state file of one lab run, written by its supervisor. */
export interface LabRunState {
  runId: string;
  supervisorPid: number;
  phase: LabPhase;
  /** What the supervisor is doing (the lab's create steps), for `lab up`'s progress. */
  step?: string;
  /** Why the lab failed (phase `failed`). */
  error?: string;
  startedAt: string;
  updatedAt: string;
  /** The supervisor's command socket. */
  socket: string;
  /** The supervisor's own log. */
  logFile: string;
  /** The run dir: every daemon's and server's log (`<dir>/<node>/<name>.log`). */
  labDir: string;
  /** Whether weft-flanneld and weft-proxy run on the nodes. */
  daemons: boolean;
  proxyMode?: string;
  underlay?: LabPlaceState;
  nodes: LabNodeState[];
  etcd: (LabPlaceState & { endpoint: string })[];
  pods: LabPodState[];
}

/** A state file as listed, with whether its supervisor still runs. */
export interface LabRunEntry {
  state: LabRunState;
  file: string;
  alive: boolean;
}

/** The paths of one run's files in the state dir. */
export function runFiles(dir: string, runId: string): { state: string; socket: string; log: string } {
  return {
    state: join(dir, `${runId}.json`),
    socket: join(dir, `${runId}.sock`),
    log: join(dir, `${runId}.log`),
  };
}

/** Writes a state file atomically (readers never see half of one). */
export function writeRunState(dir: string, state: LabRunState): void {
  const { state: file } = runFiles(dir, state.runId);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(tmp, file);
}

/** Reads a state file; undefined when it is missing or not a state file. */
export function readRunState(file: string): LabRunState | undefined {
  try {
    const s = JSON.parse(readFileSync(file, 'utf8')) as LabRunState;
    return typeof s.runId === 'string' && typeof s.supervisorPid === 'number' ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Every lab's state file in `dir`, oldest first. */
export function listRuns(dir: string): LabRunEntry[] {
  if (!existsSync(dir)) return [];
  const out: LabRunEntry[] = [];
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.json')) continue;
    const file = join(dir, f);
    const state = readRunState(file);
    if (state) out.push({ state, file, alive: processAlive(state.supervisorPid) });
  }
  return out.sort((a, b) => a.state.startedAt.localeCompare(b.state.startedAt));
}

/**
 * The run a command means: `arg` (a run id, or its unique tail such as `4f2a1c`), else the only
 * lab whose supervisor runs. None running is an error (1); several without `arg` is misuse (2).
 */
export function resolveRun(dir: string, arg: string | undefined): LabRunEntry {
  const runs = listRuns(dir);
  if (arg !== undefined) {
    const hits = runs.filter((r) => r.state.runId === arg || r.state.runId.endsWith(`-${arg}`));
    const [hit] = hits;
    if (hit && hits.length === 1) return hit;
    if (hits.length > 1)
      throw new UsageError(`run "${arg}" is ambiguous: ${hits.map((r) => r.state.runId).join(', ')}`);
    throw new WeftError(
      ErrorCodes.NOT_FOUND,
      `no lab run ${arg} in ${dir}` +
        (runs.length ? `; runs: ${runs.map((r) => r.state.runId).join(', ')}` : '; no lab is running'),
      { object: 'lab run', field: arg },
    );
  }
  const alive = runs.filter((r) => r.alive);
  const [only] = alive;
  if (only && alive.length === 1) return only;
  if (alive.length > 1) {
    throw new UsageError(
      `${alive.length} labs are running; name one: ${alive.map((r) => r.state.runId).join(', ')}`,
    );
  }
  throw new WeftError(
    ErrorCodes.NOT_FOUND,
    `no lab is running (state dir ${dir}); start one with "weftctl lab up"`,
    {
      object: 'lab run',
    },
  );
}

/** A place of a run by the name a person types: `n1`, `node1`, `underlay`, `etcd1`, `n2/web`. */
export function labPlace(state: LabRunState, name: string): { name: string; netns: string } {
  const node = (n: string) => state.nodes.find((x) => x.name === n || x.alias === n || x.netns === n);
  const hit = node(name);
  if (hit) return hit;
  if ((name === 'underlay' || name === 'ul') && state.underlay) return state.underlay;
  const member = state.etcd.find((m) => m.name === name || m.netns === name);
  if (member) return member;
  const slash = name.indexOf('/');
  if (slash > 0) {
    const n = node(name.slice(0, slash));
    const pod = n && state.pods.find((p) => p.node === n.name && p.name === name.slice(slash + 1));
    if (pod) return { name: `${pod.node}/${pod.name}`, netns: pod.netns };
  }
  const names = [
    ...state.nodes.map((n) => `${n.alias} (${n.name})`),
    'underlay',
    ...state.etcd.map((m) => m.name),
    ...state.pods.map((p) => `${p.node}/${p.name}`),
  ];
  throw new WeftError(
    ErrorCodes.NOT_FOUND,
    `lab ${state.runId} has no node, server or pod "${name}"; it has: ${names.join(', ')}`,
    {
      object: `lab ${state.runId}`,
      field: name,
    },
  );
}

/** One request to a supervisor's socket; resolves with the status and the parsed JSON body. */
export function supervisorRequest(
  socket: string,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  timeoutMs = 60_000,
): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath: socket,
        method,
        path,
        headers: payload ? { 'content-type': 'application/json' } : {},
        timeout: timeoutMs,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* not JSON: kept as text */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socket} within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      reject(
        new WeftError(
          ErrorCodes.LAB,
          `lab supervisor at ${socket}: ${err.message}`,
          { socket },
          { cause: err },
        ),
      ),
    );
    req.end(payload);
  });
}

/** The first address of a lease (`10.244.1.0/24` → `10.244.1.0`): what vxlan puts on flannel.1. */
export function overlayAddress(subnet: string): string | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(subnet.trim());
  if (!m) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const len = Number(m[5]);
  if (octets.some((o) => o > 255) || len > 32) return undefined;
  const n = octets.reduce((a, o) => a * 256 + o, 0);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (n & mask) >>> 0;
  return [24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.');
}

/**
 * `weftctl lab`: starting a lab supervisor (test/lab/supervisor.ts, run compiled from dist/) and
 * talking to it, running commands in a lab's namespaces, and removing what dead runs left. The
 * lab's own code is loaded only here and only on use, from dist/test/lab (or test/lab when
 * weftctl runs from its sources), so an installation without the lab still runs every other
 * command.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as NetnsModule from '../../test/lab/netns.js';
import { monotonicMs } from '../clock/index.js';
import { ErrorCodes, WeftError, messageOf } from '../errors/index.js';
import { processAlive } from '../exec/index.js';
import {
  dns1123LabelProblem,
  ianaSvcNameProblem,
  labelValueProblem,
  qualifiedNameProblem,
} from '../k8s/index.js';
import {
  LAB_RUN_ENV,
  labPlace,
  listRuns,
  readRunState,
  runFiles,
  supervisorRequest,
  type LabPodState,
  type LabRunEntry,
  type LabRunState,
} from './lab-state.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository (or installation) root, from dist/src/weftctl or src/weftctl. */
export const WEFT_ROOT = here.split('/').includes('dist')
  ? join(here, '..', '..', '..')
  : join(here, '..', '..');
/** The compiled supervisor program. */
export const SUPERVISOR_MAIN = join(WEFT_ROOT, 'dist', 'test', 'lab', 'supervisor.js');
/** The compiled weftctl, for re-running a command inside a lab namespace. */
export const WEFTCTL_MAIN = join(WEFT_ROOT, 'dist', 'src', 'weftctl', 'main.js');
/** weftctl and the daemons' wrappers, put first on PATH inside `lab exec`. */
export const WEFT_BIN = join(WEFT_ROOT, 'bin');

function labError(message: string, details: Record<string, unknown> = {}): WeftError {
  return new WeftError(ErrorCodes.LAB, message, details);
}

/** The lab's netns helpers, loaded on use (see the module comment). */
async function netnsHelpers(): Promise<typeof NetnsModule> {
  try {
    return await import('../../test/lab/netns.js');
  } catch (err) {
    throw labError(
      `the test lab is not part of this installation (${messageOf(err)}); run "make build" in the weft repository`,
    );
  }
}

/** The environment of a child that must start as in production: without tap's NODE_OPTIONS hooks. */
function childEnv(env: NodeJS.ProcessEnv, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env, ...extra };
  delete out.NODE_OPTIONS;
  return out;
}

/** The last `lines` lines of a file, or '' when it cannot be read. */
export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Options of {@link labUp}. */
export interface LabUpOptions {
  stateDir: string;
  nodes: number;
  etcdMembers: 1 | 3;
  daemons: boolean;
  /** Give up (and tear down) after this long. */
  timeoutMs: number;
  env: NodeJS.ProcessEnv;
  /** Called with each new step the supervisor reports. */
  progress?: (step: string) => void;
}

/**
 * Starts a supervisor in its own session (so it outlives this process and a terminal's Ctrl-C)
 * and waits until its lab is ready. On failure or timeout the supervisor is stopped by PID, the
 * run's namespaces are deleted, and the error carries the end of the supervisor's log.
 */
export async function labUp(o: LabUpOptions): Promise<LabRunState> {
  if (!existsSync(SUPERVISOR_MAIN)) {
    throw labError(`${SUPERVISOR_MAIN} is missing: build weft first ("make build")`);
  }
  mkdirSync(o.stateDir, { recursive: true });
  // Named before the run id exists (the supervisor's PID is in it); the supervisor renames it.
  const startLog = join(o.stateDir, `start-${process.pid}-${randomBytes(3).toString('hex')}.log`);
  const fd = openSync(startLog, 'a');
  const args = [
    SUPERVISOR_MAIN,
    '--state-dir',
    o.stateDir,
    '--nodes',
    String(o.nodes),
    '--etcd-members',
    String(o.etcdMembers),
    '--start-log',
    startLog,
    ...(o.daemons ? [] : ['--no-daemons']),
  ];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: childEnv(o.env, { WEFT_LOG_LEVEL: o.env.WEFT_LOG_LEVEL ?? 'info' }),
  });
  closeSync(fd);
  const pid = child.pid;
  let exited = false;
  child.on('exit', () => (exited = true));
  child.unref();
  if (pid === undefined) throw labError(`could not start ${SUPERVISOR_MAIN}: ${tail(startLog)}`);

  const deadline = monotonicMs() + o.timeoutMs;
  let lastStep = '';
  let entry: LabRunEntry | undefined;
  for (;;) {
    entry ??= listRuns(o.stateDir).find((r) => r.state.supervisorPid === pid);
    const state = entry && readRunState(entry.file);
    if (state && state.step && state.step !== lastStep) {
      lastStep = state.step;
      o.progress?.(state.step);
    }
    if (state?.phase === 'ready') return state;
    const logFile = state?.logFile ?? startLog;
    if (state?.phase === 'failed' || exited || !processAlive(pid)) {
      await waitGone(pid, 30_000);
      const why = state?.error ?? 'the supervisor exited before the lab was ready';
      const log = tail(logFile);
      await forceRemove(state?.runId, pid, o.stateDir);
      rmSync(startLog, { force: true });
      throw labError(`lab up failed: ${why}\n--- supervisor log (${logFile}):\n${log}`, { logFile });
    }
    if (monotonicMs() > deadline) {
      const log = tail(logFile);
      await forceRemove(state?.runId, pid, o.stateDir);
      rmSync(startLog, { force: true });
      throw labError(
        `lab up: not ready within ${Math.round(o.timeoutMs / 1000)} s (last step: ${lastStep || 'none'}); ` +
          `torn down\n--- supervisor log (${logFile}):\n${log}`,
        { logFile },
      );
    }
    await sleep(200);
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = monotonicMs() + timeoutMs;
  while (processAlive(pid)) {
    if (monotonicMs() > deadline) return false;
    await sleep(100);
  }
  return true;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * Ends a run whatever state it is in: SIGTERM to the supervisor (which tears its lab down),
 * SIGKILL when it does not exit in time, then every namespace and the temp dir of the run, and
 * its files in the state dir. Returns what it removed.
 */
export async function forceRemove(
  runId: string | undefined,
  pid: number,
  stateDir: string,
): Promise<string[]> {
  const removed: string[] = [];
  if (processAlive(pid)) {
    signal(pid, 'SIGTERM');
    if (!(await waitGone(pid, 60_000))) {
      signal(pid, 'SIGKILL');
      await waitGone(pid, 5_000);
    }
    removed.push(`supervisor ${pid}`);
  }
  if (!runId) return removed;
  const { listNetns, deleteNetns, runDir } = await netnsHelpers();
  for (const ns of await listNetns()) {
    if (!ns.startsWith(`${runId}-`)) continue;
    await deleteNetns(ns);
    removed.push(ns);
  }
  if (existsSync(runDir(runId))) {
    rmSync(runDir(runId), { recursive: true, force: true });
    removed.push(runDir(runId));
  }
  for (const f of Object.values(runFiles(stateDir, runId))) {
    if (existsSync(f)) {
      rmSync(f, { force: true });
      removed.push(f);
    }
  }
  return removed;
}

/** What {@link labDown} did. */
export interface LabDownReport {
  runId: string;
  /** True when the supervisor tore its lab down itself. */
  graceful: boolean;
  removed: string[];
  /** Namespaces of the run still present afterwards (should be none). */
  left: string[];
}

/** Asks a run's supervisor to tear down and waits for it; falls back to {@link forceRemove}. */
export async function labDown(run: LabRunEntry, stateDir: string): Promise<LabDownReport> {
  const { state } = run;
  let graceful = false;
  if (run.alive) {
    try {
      const r = await supervisorRequest(state.socket, 'POST', '/down', {}, 120_000);
      graceful = r.status === 200 && (await waitGone(state.supervisorPid, 30_000));
    } catch {
      /* unreachable supervisor: forced below */
    }
  }
  const removed = await forceRemove(state.runId, state.supervisorPid, stateDir);
  const { listNetns } = await netnsHelpers();
  const left = (await listNetns()).filter((n) => n.startsWith(`${state.runId}-`));
  return { runId: state.runId, graceful, removed, left };
}

/** A container port of a lab pod, as `--port [name:]port[/tcp|/udp]` gives it. */
export interface LabPodPort {
  name?: string;
  containerPort: number;
  protocol?: 'TCP' | 'UDP';
}

/** What `lab pod add` declares besides the node and name. */
export interface LabPodSpec {
  labels?: Record<string, string>;
  ports?: LabPodPort[];
  namespace?: string;
}

function argError(flag: string, message: string): WeftError {
  return new WeftError(ErrorCodes.INVALID_ARGUMENT, `flag --${flag}: ${message}`, {
    object: 'flag',
    field: `--${flag}`,
  });
}

/** At most this many labels from `--labels` (kube has no limit; a command line does not need more). */
export const MAX_LAB_POD_LABELS = 64;

/**
 * `--labels k=v,k2=v2` as kubectl run reads it, each key and value checked with the API server's
 * label rules. Throws INVALID_ARGUMENT naming the flag.
 */
export function parseLabelsFlag(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const pairs = text.split(',');
  if (pairs.length > MAX_LAB_POD_LABELS) throw argError('labels', `more than ${MAX_LAB_POD_LABELS} labels`);
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq < 0) throw argError('labels', `${JSON.stringify(pair)} is not key=value`);
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    const keyProblem = qualifiedNameProblem(key);
    if (keyProblem) throw argError('labels', `key ${JSON.stringify(key)} ${keyProblem}`);
    const valueProblem = labelValueProblem(value);
    if (valueProblem) throw argError('labels', `value ${JSON.stringify(value)} of ${key} ${valueProblem}`);
    if (Object.hasOwn(out, key)) throw argError('labels', `key ${key} is given twice`);
    out[key] = value;
  }
  return out;
}

/** One `--port [name:]port[/tcp|/udp]`; throws INVALID_ARGUMENT naming the flag. */
export function parsePortFlag(text: string): LabPodPort {
  const m = /^(?:([^:]*):)?(\d{1,5})(?:\/(tcp|udp))?$/i.exec(text);
  if (!m) throw argError('port', `${JSON.stringify(text)} is not [name:]port[/tcp|/udp]`);
  const [, name, portText, proto] = m;
  const containerPort = Number(portText);
  if (containerPort < 1 || containerPort > 65535)
    throw argError('port', `${containerPort} is not in 1..65535`);
  if (name !== undefined) {
    const problem = ianaSvcNameProblem(name);
    if (problem) throw argError('port', `name ${JSON.stringify(name)} ${problem}`);
  }
  return {
    ...(name ? { name } : {}),
    containerPort,
    ...(proto ? { protocol: proto.toUpperCase() as 'TCP' | 'UDP' } : {}),
  };
}

/** `--namespace`: a DNS-1123 label. */
export function checkPodNamespace(namespace: string): string {
  const problem = dns1123LabelProblem(namespace);
  if (problem) throw argError('namespace', `${JSON.stringify(namespace)} ${problem}`);
  return namespace;
}

function supervisorError(state: LabRunState, what: string, body: unknown): WeftError {
  const msg = (body as { error?: string } | undefined)?.error ?? JSON.stringify(body);
  return labError(`lab ${state.runId}: ${what}: ${msg}`);
}

/**
 * Adds a pod through the supervisor: its Pod object declared (labels, ports) in the lab's etcd,
 * then weft-cni ADD on the node, which records its attachment.
 */
export async function labPodAdd(
  state: LabRunState,
  node: string,
  name: string,
  spec: LabPodSpec = {},
): Promise<LabPodState> {
  const place = labPlace(state, node);
  const r = await supervisorRequest(
    state.socket,
    'POST',
    '/pods',
    { node: place.name, name, ...spec },
    90_000,
  );
  if (r.status !== 200) throw supervisorError(state, `pod add ${place.name}/${name}`, r.body);
  return r.body as LabPodState;
}

/** Removes a pod through the supervisor: weft-cni DEL, its namespace, its Pod object. */
export async function labPodDel(state: LabRunState, node: string, name: string): Promise<LabPodState> {
  const place = labPlace(state, node);
  const r = await supervisorRequest(state.socket, 'POST', '/pods/del', { node: place.name, name }, 90_000);
  if (r.status !== 200) throw supervisorError(state, `pod del ${place.name}/${name}`, r.body);
  return r.body as LabPodState;
}

/**
 * Runs `cmd` in a namespace of the lab with stdio inherited and resolves with its exit code
 * (128 + signal number when killed). weftctl and the daemons are on PATH, and weftctl finds the
 * lab's etcd and knows it is in the lab.
 */
export function labExec(
  state: LabRunState,
  target: string,
  cmd: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const place = labPlace(state, target);
  const endpoints = state.etcd.map((m) => m.endpoint).join(',');
  const vars = {
    PATH: `${WEFT_BIN}:${env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
    WEFTCTL_ETCD_ENDPOINTS: endpoints,
    [LAB_RUN_ENV]: state.runId,
  };
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', place.netns, ...cmd], {
      stdio: 'inherit',
      env: childEnv(env, vars),
    });
    child.on('error', (err) => reject(labError(`lab exec: ${err.message}`)));
    child.on('exit', (code, sig) => {
      if (code !== null) resolve(code);
      else resolve(128 + (sig ? (osSignals[sig] ?? 1) : 1));
    });
  });
}

const osSignals: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGTERM: 15,
};

/**
 * Runs weftctl (compiled) inside a namespace of the lab with `args`, told the run and its etcd,
 * and forwards its output; resolves with its exit code. `status --lab` uses it: the lab's etcd
 * is only reachable from the lab's namespaces.
 */
export function weftctlInLab(
  state: LabRunState,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  io: { stdout: (t: string) => void; stderr: (t: string) => void },
): Promise<number> {
  const netns = state.underlay?.netns ?? state.nodes[0]?.netns;
  if (!netns) throw labError(`lab ${state.runId} has no namespace yet (phase ${state.phase})`);
  const vars = {
    WEFTCTL_ETCD_ENDPOINTS: state.etcd.map((m) => m.endpoint).join(','),
    [LAB_RUN_ENV]: state.runId,
  };
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, WEFTCTL_MAIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: childEnv(env, vars),
    });
    child.stdout.on('data', (b: Buffer) => io.stdout(b.toString()));
    child.stderr.on('data', (b: Buffer) => io.stderr(b.toString()));
    child.on('error', (err) => reject(labError(`weftctl in lab ${state.runId}: ${err.message}`)));
    child.on('close', (code) => resolve(code ?? 1));
  });
}

/** What {@link labClean} removed. */
export interface LabCleanReport {
  /** Namespaces and temp dirs of dead runs (any weft run, tests' too). */
  stale: string[];
  /** State files, sockets and logs of labs whose supervisor is dead. */
  files: string[];
}

/** Removes what dead runs left: their namespaces and temp dirs, and dead labs' state files. */
export async function labClean(stateDir: string): Promise<LabCleanReport> {
  const { cleanupStale, ownerPid } = await netnsHelpers();
  const stale = await cleanupStale();
  const files: string[] = [];
  if (existsSync(stateDir)) {
    for (const f of readdirSync(stateDir)) {
      // `<run>.json|.sock|.log` by the run's owner, `start-<pid>-<rand>.log` by a `lab up`.
      const base = f.replace(/\.(json|sock|log)$/, '');
      const owner = ownerPid(base) ?? ownerPid(base.replace(/^start-/, 'wt-'));
      if (owner === undefined || processAlive(owner)) continue;
      rmSync(join(stateDir, f), { force: true });
      files.push(join(stateDir, f));
    }
  }
  return { stale, files };
}

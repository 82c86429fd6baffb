/**
 * Network namespaces owned by one run. Every name carries a run id that embeds the owner's
 * PID, `wt-<pid>-<rand>-<role>`, so a later run can tell a crashed run's leftovers (owner
 * dead) from a concurrent run's namespaces (owner alive) and remove only the former.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './exec.js';

/** Prefix of every namespace, and of every temp dir, a weft run creates. */
export const RUN_PREFIX = 'wt-';
const NAME_RE = /^wt-(\d+)-([0-9a-z]+)(?:-(.+))?$/;

/** A fresh run id owned by this process. */
export function newRunId(): string {
  return `${RUN_PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** The namespace name for one role (node1, etcd, underlay, pod...) within a run. */
export function netnsName(runId: string, role: string): string {
  return `${runId}-${role}`;
}

/** The PID that owns a run-id-bearing name, or undefined for names that are not ours. */
export function ownerPid(name: string): number | undefined {
  const m = NAME_RE.exec(name);
  return m ? Number(m[1]) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Names of all namespaces on the machine. */
export async function listNetns(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

/** Create a namespace with its loopback up. */
export async function createNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
  await run('ip', ['link', 'set', 'lo', 'up'], { netns: name });
}

/**
 * Kill every process inside `name` (by the PIDs the kernel lists for it) and delete it.
 * Deleting a namespace destroys its veth ends, so links need no separate clean-up.
 */
export async function deleteNetns(name: string): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'pids', name], { allowFail: true });
  for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await run('ip', ['netns', 'delete', name], { allowFail: true });
}

/** The temp dir of a run (logs, data dirs). */
export function runDir(runId: string): string {
  return join(tmpdir(), runId);
}

/**
 * Remove what crashed runs left behind: namespaces and temp dirs whose owner PID is dead.
 * Returns the names removed.
 */
export async function cleanupStale(): Promise<string[]> {
  const removed: string[] = [];
  for (const ns of await listNetns()) {
    const pid = ownerPid(ns);
    if (pid !== undefined && pid !== process.pid && !alive(pid)) {
      await deleteNetns(ns);
      removed.push(ns);
    }
  }
  for (const entry of readdirSync(tmpdir())) {
    const pid = ownerPid(entry);
    if (pid !== undefined && pid !== process.pid && !alive(pid)) {
      rmSync(join(tmpdir(), entry), { recursive: true, force: true });
      removed.push(join(tmpdir(), entry));
    }
  }
  return removed;
}

/** Delete every namespace of one run. */
export async function deleteRun(runId: string): Promise<void> {
  for (const ns of await listNetns()) if (ns.startsWith(`${runId}-`)) await deleteNetns(ns);
}

/**
 * Running external programs (nft, iptables-restore, conntrack): the runner contract that tests
 * replace with `ip netns exec`, the default spawn-based runner, and a queue that keeps one
 * component's read-compare-write steps from interleaving.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ErrorCodes, WeftError } from '../errors/index.js';

/** The outcome of one command. */
export interface CommandResult {
  stdout: string;
  stderr: string;
  /** Exit code; 127 when the program could not be started. */
  code: number;
}

/**
 * Runs a program to completion and reports its exit code without throwing on failure. Injected
 * so that tests can run the same code inside a network namespace (`ip netns exec`).
 */
export type CommandRunner = (cmd: string, args: readonly string[], input?: string) => Promise<CommandResult>;

/** Options for {@link execRunner}. */
export interface ExecRunnerOptions {
  /** Kill a command after this many milliseconds. Default 30 000. */
  timeoutMs?: number;
}

/**
 * The default runner: spawns the program directly (no shell). The C locale keeps messages the
 * same on every node, since they end up in errors.
 */
export function execRunner(opts: ExecRunnerOptions = {}): CommandRunner {
  return (cmd, args, input) =>
    new Promise((resolve) => {
      const child = spawn(cmd, [...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, LC_ALL: 'C' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
      child.on('error', (err) => {
        clearTimeout(timer);
        resolve({ stdout, stderr: `${stderr}${err.message}`, code: 127 });
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ stdout, stderr, code: code ?? 128 });
      });
      // A program that exits without reading its stdin closes the pipe; that is not our error.
      child.stdin.on('error', () => {});
      child.stdin.end(input ?? '');
    });
}

/** The WeftError EXEC for a failed command, with its stderr and, when given, its input. */
export function execFailed(
  cmd: string,
  args: readonly string[],
  res: CommandResult,
  input?: string,
): WeftError {
  return new WeftError(
    ErrorCodes.EXEC,
    `${[cmd, ...args].join(' ')}: exit ${res.code}: ${res.stderr.trim()}`,
    {
      cmd,
      args,
      code: res.code,
      stderr: res.stderr,
      ...(input !== undefined ? { input } : {}),
    },
  );
}

/** Runs a command and returns its stdout; throws EXEC on a non-zero exit. */
export async function runChecked(
  runner: CommandRunner,
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<string> {
  const res = await runner(cmd, args, input);
  if (res.code !== 0) throw execFailed(cmd, args, res, input);
  return res.stdout;
}

/**
 * Runs calls one at a time, so that a resync and a shutdown's cleanup never interleave their
 * read-compare-write steps.
 */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn, fn);
    this.#tail = next.catch(() => {});
    return next;
  }
}

/**
 * True while `pid` exists and is not a zombie: a process killed but not yet reaped (a lab's
 * children re-parented after a crash, a supervisor its parent still waits for) runs nothing and
 * holds nothing, so it counts as gone.
 */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the parenthesised command name, which may itself contain spaces.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

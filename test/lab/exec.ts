/**
 * Running programs for the lab and tests: one-shot commands with their output, and
 * long-running processes with their logs kept, optionally inside a network namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes, WeftError } from '../../src/errors/index.js';
import { sleep } from '../../src/backoff/index.js';

/** Result of a finished command. */
export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Options for {@link run}. */
export interface RunOptions {
  /** Run inside this network namespace (through `ip netns exec`). */
  netns?: string;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
  /** Kill the command after this many milliseconds. Default 60 000. */
  timeoutMs?: number;
  /** Text written to the command's stdin. */
  input?: string;
  env?: NodeJS.ProcessEnv;
}

/** The argv that runs `cmd args` in `netns` (or as-is without one). */
export function inNetns(netns: string | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, cmd, ...args]] : [cmd, [...args]];
}

/** Run a command to completion; throws WeftError EXEC with its stderr on failure. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, argv] = inNetns(opts.netns, cmd, args);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(
        new WeftError(ErrorCodes.EXEC, `${file}: ${err.message}`, { cmd: file, args: argv }, { cause: err }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res = { stdout, stderr, code: code ?? 128 };
      if (res.code !== 0 && !opts.allowFail) {
        const what = [file, ...argv].join(' ');
        const why = signal ? `killed by ${signal}` : `exit ${res.code}`;
        reject(
          new WeftError(ErrorCodes.EXEC, `${what}: ${why}: ${stderr.trim()}`, {
            cmd: file,
            args: argv,
            ...res,
          }),
        );
      } else resolve(res);
    });
    // A command that exits without reading its stdin closes the pipe: that EPIPE is not an error.
    child.stdin.on('error', () => {});
    if (opts.input === undefined) child.stdin.end();
    else child.stdin.end(opts.input);
  });
}

/** Options for {@link startProcess}. */
export interface ProcessOptions {
  /** Short name used in messages. */
  name: string;
  cmd: string;
  args: readonly string[];
  netns?: string;
  /** stdout and stderr are appended here. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
}

/** A long-running process, stopped by its PID only. */
export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<number | null>;
  #exitCode: number | null | undefined;

  constructor(opts: ProcessOptions) {
    this.name = opts.name;
    this.logFile = opts.logFile;
    mkdirSync(dirname(opts.logFile), { recursive: true });
    // Opened synchronously so the log file exists as soon as the process object does.
    const log = createWriteStream('', { fd: openSync(opts.logFile, 'a') });
    // setpriv --pdeathsig: if the test process dies (even by SIGKILL), the kernel kills this
    // child too, so a crashed run leaves no server behind in the root namespace.
    const [file, argv] = inNetns(opts.netns, 'setpriv', [
      '--pdeathsig',
      'KILL',
      '--',
      opts.cmd,
      ...opts.args,
    ]);
    this.#child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    this.#child.stdout?.pipe(log, { end: false });
    this.#child.stderr?.pipe(log, { end: false });
    this.#exited = new Promise((resolve) => {
      this.#child.on('exit', (code, signal) => {
        this.#exitCode = code ?? (signal ? 128 : null);
        resolve(this.#exitCode);
      });
      this.#child.on('error', (err) => {
        log.write(`spawn error: ${err.message}\n`);
        this.#exitCode = 127;
        resolve(127);
      });
    });
    void this.#exited.then(() => setTimeout(() => log.end(), 50));
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.#exitCode === undefined;
  }

  /** Resolves with the exit code once the process has exited. */
  exited(): Promise<number | null> {
    return this.#exited;
  }

  /** Send a signal to this process (by PID). */
  signal(sig: NodeJS.Signals): void {
    if (this.running && this.#child.pid) {
      try {
        process.kill(this.#child.pid, sig);
      } catch {
        /* already gone */
      }
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    // Abort the grace timer once the process is gone, so it does not hold the event loop open.
    const graceOver = new AbortController();
    const done = await Promise.race([
      this.#exited.then(() => true),
      sleep(graceMs, graceOver.signal).then(() => false),
    ]);
    graceOver.abort();
    if (!done) {
      this.signal('SIGKILL');
      await this.#exited;
    }
  }

  /** kill -9, as a crash would. */
  async kill(): Promise<void> {
    this.signal('SIGKILL');
    await this.#exited;
  }
}

/** Start a long-running process. */
export function startProcess(opts: ProcessOptions): ManagedProcess {
  return new ManagedProcess(opts);
}

/** Options for {@link waitFor}. */
export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** What is being waited for, for the timeout message. */
  what: string;
  /** Give up at once when this aborts (rejecting with its reason), e.g. when a server exits. */
  signal?: AbortSignal;
}

/** Poll `check` until it returns a truthy value (or throws no more); rejects on timeout. */
export async function waitFor<T>(check: () => Promise<T> | T, opts: WaitOptions): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: unknown;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : '';
      throw new WeftError(ErrorCodes.TIMEOUT, `timed out waiting for ${opts.what}${why}`, {
        what: opts.what,
      });
    }
    await sleep(opts.intervalMs ?? 100, opts.signal);
  }
}

/**
 * Delegation as the spec (and libcni's invoke package) defines it: the delegate is the
 * executable named by its `type` in the first CNI_PATH directory that has it, run with the
 * caller's environment and its config on stdin.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { messageOf } from '../errors/index.js';
import { CniError, CniErrorCodes } from './cni-error.js';
import type { CniCommand, Env } from './cni-env.js';
import type { DelegateConfig } from './delegate-config.js';
import { NAME_RE } from './net-conf.js';

/** One delegate call. */
export interface DelegateCall {
  /** The command to run; the delegate gets it as CNI_COMMAND. */
  command: Exclude<CniCommand, 'VERSION'>;
  /** The delegate's network config, written to its stdin; its `type` names the executable. */
  config: DelegateConfig;
  /** The environment to pass on (the caller's own CNI_* variables included). */
  env: Env;
  /** CNI_PATH, split. */
  path: readonly string[];
}

/** What a delegate printed when it succeeded. */
export interface DelegateOutput {
  /** The result JSON (ADD), or nothing. */
  stdout: string;
  /** Diagnostics, for the runtime's log. */
  stderr: string;
}

/** Runs a delegate; resolves with its output on success, throws CniError otherwise. */
export type DelegateRunner = (call: DelegateCall) => Promise<DelegateOutput>;

/** The first executable regular file named `type` in `path`, or undefined. */
export async function findPlugin(type: string, path: readonly string[]): Promise<string | undefined> {
  for (const dir of path) {
    const candidate = join(dir, type);
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      /* not in this directory */
    }
  }
  return undefined;
}

/**
 * Runs the delegate for real. A CNI error the delegate prints is passed on with its code and
 * details, its message prefixed with the delegate's type so the runtime's log says who failed.
 */
export const execDelegate: DelegateRunner = async ({ command, config, env, path }) => {
  const type = config.type;
  if (!NAME_RE.test(type)) {
    // A type with a `/` would run a program outside CNI_PATH.
    throw new CniError(
      CniErrorCodes.INVALID_CONFIG,
      `invalid delegate config: field type: ${JSON.stringify(type)} is not a plugin name`,
    );
  }
  const file = await findPlugin(type, path);
  if (!file) {
    throw new CniError(
      CniErrorCodes.DELEGATE_NOT_FOUND,
      `delegate plugin ${JSON.stringify(type)} not found in CNI_PATH (${path.join(':')})`,
    );
  }
  const { code, stdout, stderr } = await spawnWithInput(
    file,
    { ...env, CNI_COMMAND: command },
    JSON.stringify(config),
  );
  if (code === 0) return { stdout, stderr };
  throw delegateError(type, command, code, stdout, stderr);
};

function delegateError(type: string, command: string, code: number, stdout: string, stderr: string) {
  let reply: unknown;
  try {
    reply = JSON.parse(stdout);
  } catch {
    reply = undefined;
  }
  const r = reply as { code?: unknown; msg?: unknown; details?: unknown } | undefined;
  if (r && typeof r === 'object' && typeof r.code === 'number' && typeof r.msg === 'string') {
    return new CniError(r.code, `${type}: ${r.msg}`, typeof r.details === 'string' ? r.details : undefined);
  }
  const tail = (stderr.trim() || stdout.trim()).slice(-2000);
  return new CniError(
    CniErrorCodes.DELEGATE_FAILED,
    `delegate ${type} ${command} failed: exit ${code}`,
    tail || undefined,
  );
}

function spawnWithInput(
  file: string,
  env: Env,
  input: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) =>
      reject(new CniError(CniErrorCodes.DELEGATE_FAILED, `failed to run ${file}: ${messageOf(e)}`)),
    );
    child.on('close', (code, signal) =>
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
    // A delegate that exits without reading stdin closes the pipe; its exit status tells the story.
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/**
 * The CNI_* environment variables through which a runtime passes a call's parameters. Checked
 * here, with INVALID_ENV (4) naming the variable, so the delegate never sees a call the spec
 * forbids; the container id in particular becomes a file name under dataDir.
 */
import { CniError, CniErrorCodes } from './cni-error.js';
import { NAME_RE } from './net-conf.js';

/** The operations of the CNI spec. */
export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION'] as const;

/** One of {@link CNI_COMMANDS}. */
export type CniCommand = (typeof CNI_COMMANDS)[number];

/** A call's parameters; all but `command` are set for ADD, DEL and CHECK. */
export interface CniCallEnv {
  command: CniCommand;
  /** CNI_CONTAINERID. */
  containerId: string;
  /** CNI_NETNS; may be absent on DEL only (the namespace can already be gone). */
  netns: string | undefined;
  /** CNI_IFNAME. */
  ifname: string;
  /** CNI_PATH split into directories, empty entries dropped. */
  path: string[];
}

/** Environment as `process.env` gives it. */
export type Env = Readonly<Record<string, string | undefined>>;

function envError(name: string, message: string): CniError {
  return new CniError(CniErrorCodes.INVALID_ENV, `invalid environment variable ${name}: ${message}`);
}

/** CNI_COMMAND, checked. */
export function parseCommand(env: Env): CniCommand {
  const command = env.CNI_COMMAND;
  if (!command) throw envError('CNI_COMMAND', 'is required');
  if (!(CNI_COMMANDS as readonly string[]).includes(command)) {
    throw envError(
      'CNI_COMMAND',
      `unknown command ${JSON.stringify(command)} (known: ${CNI_COMMANDS.join(', ')})`,
    );
  }
  return command as CniCommand;
}

/** The spec's rule for interface names, which is also the kernel's (IFNAMSIZ, no `/`). */
function checkIfname(name: string): string | undefined {
  if (name === '.' || name === '..') return 'must not be "." or ".."';
  if (name.length > 15) return `must be at most 15 characters, got ${name.length}`;
  if (/[/:\s]/.test(name)) return 'must not contain "/", ":" or whitespace';
  return undefined;
}

/** All CNI_* variables of a call other than VERSION; throws INVALID_ENV naming the first bad one. */
export function parseCallEnv(env: Env): CniCallEnv {
  const command = parseCommand(env);
  const need = (name: string): string => {
    const value = env[name];
    if (!value) throw envError(name, 'is required');
    return value;
  };
  const containerId = need('CNI_CONTAINERID');
  if (!NAME_RE.test(containerId)) {
    throw envError(
      'CNI_CONTAINERID',
      `${JSON.stringify(containerId)} must start with a letter or digit, followed by letters, digits, _, . or -`,
    );
  }
  const netns = command === 'DEL' ? env.CNI_NETNS || undefined : need('CNI_NETNS');
  const ifname = need('CNI_IFNAME');
  const bad = checkIfname(ifname);
  if (bad) throw envError('CNI_IFNAME', `${JSON.stringify(ifname)} ${bad}`);
  const path = need('CNI_PATH').split(':').filter(Boolean);
  if (path.length === 0) throw envError('CNI_PATH', 'names no directory');
  return { command, containerId, netns, ifname, path };
}

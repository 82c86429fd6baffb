/**
 * What both firewall implementations of flannel's masquerade and forward rules share: the
 * desired configuration, its validation, the contract, and how external programs are run.
 */
import { spawn } from 'node:child_process';
import { ErrorCodes, WeftError, invalid } from '../errors/index.js';
import { type IpFamily, parseCidrField } from '../ipam/index.js';

/** The rules weft-flanneld wants on the node. */
export interface MasqConfig {
  /** The cluster network N (IPv4 CIDR, network address), e.g. `10.244.0.0/16`. */
  network: string;
  /** This node's lease S (IPv4 CIDR inside `network`), e.g. `10.244.3.0/24`. */
  subnet: string;
  /** The cluster IPv6 network; with `ipv6Subnet`, IPv6 rules are kept too. */
  ipv6Network?: string | undefined;
  /** This node's IPv6 lease inside `ipv6Network`. */
  ipv6Subnet?: string | undefined;
  /** Keep the masquerade rules (`--ip-masq`). */
  masquerade: boolean;
  /** Keep the forward accept rules (`--iptables-forward-rules`). */
  forward: boolean;
}

/** Keeps the rules of a {@link MasqConfig} in the kernel. */
export interface MasqRules {
  /**
   * Makes the kernel hold exactly the desired rules: installs what is missing, rewrites what
   * drifted (a rule deleted, reordered, changed, a jump missing or duplicated) and removes what
   * is no longer wanted. Only reads when nothing changed. `repaired` is true when it wrote.
   */
  ensure(desired: MasqConfig): Promise<{ repaired: boolean }>;
  /** Removes every rule, chain, jump and table this implementation manages. Idempotent. */
  cleanup(): Promise<void>;
}

/** The networks of one address family, in canonical text. */
export interface FamilyNets {
  family: IpFamily;
  network: string;
  subnet: string;
  /** The multicast range that must never be masqueraded. */
  multicast: string;
}

const OBJECT = 'masq-config';

/** Validates a config and returns its families (IPv4 first) in canonical text. */
export function familiesOf(cfg: MasqConfig): FamilyNets[] {
  const out = [pair(4, cfg.network, cfg.subnet, 'network', 'subnet')];
  if (cfg.ipv6Network !== undefined || cfg.ipv6Subnet !== undefined) {
    if (cfg.ipv6Network === undefined || cfg.ipv6Subnet === undefined) {
      const missing = cfg.ipv6Network === undefined ? 'ipv6Network' : 'ipv6Subnet';
      throw invalid(OBJECT, missing, 'ipv6Network and ipv6Subnet must be given together');
    }
    out.push(pair(6, cfg.ipv6Network, cfg.ipv6Subnet, 'ipv6Network', 'ipv6Subnet'));
  }
  return out;
}

function pair(family: IpFamily, networkText: string, subnetText: string, nf: string, sf: string): FamilyNets {
  // iptables and nft print the masked network; a value with host bits would never compare equal
  // to what they show and would be rewritten on every check, so host bits are refused.
  const network = parseCidrField(OBJECT, nf, networkText, { family });
  const subnet = parseCidrField(OBJECT, sf, subnetText, { family });
  if (!network.contains(subnet)) throw invalid(OBJECT, sf, `${subnetText} is not inside ${networkText}`);
  return {
    family,
    network: network.toString(),
    subnet: subnet.toString(),
    multicast: family === 4 ? '224.0.0.0/4' : 'ff00::/8',
  };
}

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

/**
 * The iptables proxier: runs the generator's output through one `iptables-restore --noflush`
 * per sync, keeps the jumps from the built-in chains in place, watches the canary chain, and
 * removes everything on cleanup. The state it keeps between syncs is the set of per-service
 * chains the last successful sync left in the nat table: a partial sync deletes what falls out
 * of it without reading the table back (iptables-save of a large nat table takes seconds).
 */
import { monotonicMs } from '../../clock/index.js';
import { ErrorCodes, WeftError } from '../../errors/index.js';
import {
  SerialQueue,
  execFailed,
  execRunner,
  type CommandResult,
  type CommandRunner,
} from '../../exec/index.js';
import type { Family, ServicePortMap } from '../model/index.js';
import type { Proxier, ProxierContext, SyncRequest } from '../proxier.js';
import {
  CANARY_CHAIN,
  EXTERNAL_SERVICES_CHAIN,
  FIREWALL_CHAIN,
  FORWARD_CHAIN,
  NODEPORTS_CHAIN,
  POSTROUTING_CHAIN,
  SERVICES_CHAIN,
  iptablesCommands,
  isOwnChainName,
  isServiceChainName,
  type IptablesCommands,
} from './chain-names.js';
import { buildRestoreInput, type IptablesRulesConfig } from './ruleset.js';

/** A jump from a built-in chain into one of ours (kube-proxy's iptablesJumpChains). */
export interface JumpRule {
  table: 'nat' | 'filter';
  /** The built-in chain. */
  from: string;
  /** Our chain. */
  to: string;
  /** The rule's match arguments, without `-A <from>`. */
  args: string[];
}

const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];

function jump(
  table: JumpRule['table'],
  from: string,
  to: string,
  comment: string,
  extra: string[] = [],
): JumpRule {
  return { table, from, to, args: [...extra, '-m', 'comment', '--comment', comment, '-j', to] };
}

/** The jumps this mode inserts at the head of the built-in chains, in kube-proxy's order. */
export const JUMP_RULES: readonly JumpRule[] = [
  jump('filter', 'INPUT', EXTERNAL_SERVICES_CHAIN, 'weft externally-visible service portals', NEW),
  jump('filter', 'FORWARD', EXTERNAL_SERVICES_CHAIN, 'weft externally-visible service portals', NEW),
  jump('filter', 'INPUT', NODEPORTS_CHAIN, 'weft health check service ports'),
  jump('filter', 'FORWARD', SERVICES_CHAIN, 'weft service portals', NEW),
  jump('filter', 'OUTPUT', SERVICES_CHAIN, 'weft service portals', NEW),
  jump('filter', 'FORWARD', FORWARD_CHAIN, 'weft forwarding rules'),
  jump('filter', 'INPUT', FIREWALL_CHAIN, 'weft load balancer firewall', NEW),
  jump('filter', 'OUTPUT', FIREWALL_CHAIN, 'weft load balancer firewall', NEW),
  jump('filter', 'FORWARD', FIREWALL_CHAIN, 'weft load balancer firewall', NEW),
  jump('nat', 'OUTPUT', SERVICES_CHAIN, 'weft service portals'),
  jump('nat', 'PREROUTING', SERVICES_CHAIN, 'weft service portals'),
  jump('nat', 'POSTROUTING', POSTROUTING_CHAIN, 'weft postrouting rules'),
];

/** A jump as `iptables -S` prints it. */
export function jumpRuleText(j: JumpRule): string {
  return ['-A', j.from, ...j.args.map((a) => (/\s/.test(a) ? `"${a}"` : a))].join(' ');
}

/** What the installed iptables supports (kube-proxy decides the same from the version). */
export interface IptablesFeatures {
  version: string;
  /** `-w` on iptables (≥ 1.4.20). */
  wait: boolean;
  /** `-w` on iptables-restore (≥ 1.6.2). */
  restoreWait: boolean;
  /** MASQUERADE `--random-fully` (≥ 1.6.2). */
  randomFully: boolean;
}

function atLeast(v: number[], min: number[]): boolean {
  for (let i = 0; i < min.length; i++) {
    const a = v[i] ?? 0;
    const b = min[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}

/** Reads the features from `iptables --version` output (`iptables v1.8.9 (nf_tables)`). */
export function parseIptablesVersion(text: string): IptablesFeatures {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(text);
  if (!m) {
    throw new WeftError(
      ErrorCodes.EXEC,
      `cannot read the iptables version from ${JSON.stringify(text.trim())}`,
    );
  }
  const v = [Number(m[1]), Number(m[2]), Number(m[3])];
  return {
    version: v.join('.'),
    wait: atLeast(v, [1, 4, 20]),
    restoreWait: atLeast(v, [1, 6, 2]),
    randomFully: atLeast(v, [1, 6, 2]),
  };
}

/** Chains (`:NAME`) and rules (`-A`) of one table in `iptables-save` output. */
export function parseSave(text: string, table: string): { chains: string[]; rules: string[] } {
  const chains: string[] = [];
  const rules: string[] = [];
  let inTable = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) inTable = line.slice(1).trim() === table;
    else if (!inTable) continue;
    else if (line.startsWith(':')) chains.push(line.slice(1).split(' ')[0] ?? '');
    else if (line.startsWith('-A ')) rules.push(line);
  }
  return { chains: chains.filter(Boolean), rules };
}

/** A restore failure, naming the input line iptables-restore rejected (the input may be megabytes). */
function restoreFailed(cmd: string, args: string[], res: CommandResult, input: string): WeftError {
  const m = /line:? (\d+)/i.exec(res.stderr);
  const n = m ? Number(m[1]) : 0;
  const line = n > 0 ? input.split('\n')[n - 1] : undefined;
  const err = execFailed(cmd, args, res);
  if (line !== undefined) {
    err.message += ` (input line ${n}: ${line})`;
    err.details['line'] = line;
  }
  return err;
}

/** Options of {@link IptablesProxier} beyond the proxier context. */
export interface IptablesProxierOptions {
  /**
   * Features to assume instead of probing `iptables --version` (tests and benchmarks on a known
   * build).
   */
  features?: IptablesFeatures;
}

/** The `iptables` mode. */
export class IptablesProxier implements Proxier {
  readonly mode = 'iptables' as const;
  readonly family: Family;
  readonly #ctx: ProxierContext;
  readonly #cmds: IptablesCommands;
  readonly #queue = new SerialQueue();
  #features: IptablesFeatures | undefined;
  /** Per-service chains in the nat table after the last successful sync; undefined forces a full sync. */
  #active: Set<string> | undefined;

  constructor(ctx: ProxierContext, opts: IptablesProxierOptions = {}) {
    this.#ctx = ctx;
    this.family = ctx.family;
    this.#cmds = iptablesCommands(ctx.family);
    this.#features = opts.features;
  }

  get #runner(): CommandRunner {
    return this.#ctx.runner;
  }

  /** Probes the installed iptables once. */
  async features(): Promise<IptablesFeatures> {
    if (this.#features) return this.#features;
    const args = ['--version'];
    const res = await this.#runner(this.#cmds.iptables, args);
    if (res.code !== 0) throw execFailed(this.#cmds.iptables, args, res);
    this.#features = parseIptablesVersion(res.stdout || res.stderr);
    this.#ctx.log.debug({ version: this.#features.version }, 'iptables features');
    return this.#features;
  }

  sync(req: SyncRequest): Promise<void> {
    return this.#queue.run(() => this.#sync(req));
  }

  async #sync(req: SyncRequest): Promise<void> {
    const f = await this.features();
    const full = req.changed === undefined || this.#active === undefined;
    const started = monotonicMs();
    const existing = full ? await this.#savedServiceChains() : (this.#active ?? new Set<string>());
    const input = buildRestoreInput(this.#ruleOptions(f), {
      servicePorts: req.servicePorts,
      changed: full ? undefined : req.changed,
      existingChains: existing,
    });
    // Until the restore is known to have succeeded, the kernel state is unknown: force a full sync.
    this.#active = undefined;
    await this.restore(input.text);
    // Jumps into our chains need the chains, which the restore has just created.
    if (full) await this.#ensureJumps(f);
    this.#active = input.activeChains;
    this.#ctx.log.debug(
      {
        full,
        servicePorts: req.servicePorts.size,
        written: input.writtenServicePorts,
        deletedChains: input.deletedChains.length,
        bytes: input.text.length,
        ms: Math.round(monotonicMs() - started),
      },
      'iptables sync',
    );
  }

  #ruleOptions(f: IptablesFeatures): IptablesRulesConfig {
    return {
      family: this.family,
      clusterCidr: this.#ctx.clusterCidr,
      masqueradeAll: this.#ctx.masqueradeAll,
      nodePortAddresses: this.#ctx.nodePortAddresses,
      randomFully: f.randomFully,
    };
  }

  async check(servicePorts: ServicePortMap): Promise<void> {
    const f = await this.features();
    const input = buildRestoreInput(this.#ruleOptions(f), {
      servicePorts,
      changed: undefined,
      existingChains: [],
    });
    const args = [...(f.restoreWait ? ['-w'] : []), '--test', '--noflush'];
    const res = await this.#runner(this.#cmds.restore, args, input.text);
    if (res.code !== 0) throw restoreFailed(this.#cmds.restore, args, res, input.text);
  }

  /** Runs one `iptables-restore --noflush` with `input`. */
  async restore(input: string): Promise<void> {
    const f = await this.features();
    const args = [...(f.restoreWait ? ['-w'] : []), '--noflush'];
    const res = await this.#runner(this.#cmds.restore, args, input);
    if (res.code !== 0) throw restoreFailed(this.#cmds.restore, args, res, input);
  }

  async #iptables(f: IptablesFeatures, args: string[]): Promise<CommandResult> {
    return this.#runner(this.#cmds.iptables, [...(f.wait ? ['-w'] : []), ...args]);
  }

  async #save(table: string): Promise<string> {
    const args = ['-t', table];
    const res = await this.#runner(this.#cmds.save, args);
    if (res.code !== 0) throw execFailed(this.#cmds.save, args, res);
    return res.stdout;
  }

  /** Per-service chains present in nat, including those of an earlier run. */
  async #savedServiceChains(): Promise<Set<string>> {
    return new Set(parseSave(await this.#save('nat'), 'nat').chains.filter(isServiceChainName));
  }

  /**
   * Inserts each missing jump at the head of its built-in chain (kube-proxy's EnsureRule Prepend).
   * Listing one chain (`-S`) is cheap, where `-C` reads the whole table: seconds for a large nat
   * table. `-C` only confirms a jump the listing did not show in the expected form.
   */
  async #ensureJumps(f: IptablesFeatures): Promise<void> {
    const listed = new Map<string, string[]>();
    for (const j of JUMP_RULES) {
      const key = `${j.table}/${j.from}`;
      let lines = listed.get(key);
      if (!lines) {
        const res = await this.#iptables(f, ['-t', j.table, '-S', j.from]);
        lines = res.code === 0 ? res.stdout.split('\n') : [];
        listed.set(key, lines);
      }
      if (lines.includes(jumpRuleText(j))) continue;
      const check = await this.#iptables(f, ['-t', j.table, '-C', j.from, ...j.args]);
      if (check.code === 0) continue;
      const args = ['-t', j.table, '-I', j.from, '1', ...j.args];
      const res = await this.#iptables(f, args);
      if (res.code !== 0) throw execFailed(this.#cmds.iptables, args, res);
    }
  }

  rulesIntact(): Promise<boolean> {
    return this.#queue.run(async () => {
      const f = await this.features();
      // The mangle canary, as kube-proxy polls: mangle is small, so listing it is cheap.
      const res = await this.#iptables(f, ['-t', 'mangle', '-S', CANARY_CHAIN]);
      return res.code === 0;
    });
  }

  cleanup(): Promise<void> {
    return this.#queue.run(async () => {
      this.#active = undefined;
      const lines: string[] = [];
      for (const table of ['nat', 'filter', 'mangle']) {
        const { chains, rules } = parseSave(await this.#save(table), table);
        const own = chains.filter(isOwnChainName);
        const ownSet = new Set(own);
        // Jumps from chains that are not ours (the built-ins) into ours.
        const jumps = rules.filter((r) => {
          const [, from] = r.split(' ');
          const to = / -j (\S+)/.exec(r)?.[1];
          return from !== undefined && !ownSet.has(from) && to !== undefined && ownSet.has(to);
        });
        if (own.length === 0 && jumps.length === 0) continue;
        lines.push(`*${table}`);
        for (const r of jumps) lines.push(`-D${r.slice(2)}`);
        for (const c of own) lines.push(`:${c} - [0:0]`);
        for (const c of own) lines.push(`-X ${c}`);
        lines.push('COMMIT');
      }
      if (lines.length > 0) await this.restore(`${lines.join('\n')}\n`);
    });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Creates the `iptables` proxier of `ctx.family`. */
export function createIptablesProxier(
  ctx: ProxierContext,
  opts: IptablesProxierOptions = {},
): Promise<Proxier> {
  return Promise.resolve(new IptablesProxier(ctx, opts));
}

/** Options of {@link netnsRunner}. */
export interface NetnsRunnerOptions {
  /** Kill a command after this many milliseconds. Default 600 000 (a 10,000-service restore). */
  timeoutMs?: number;
  /** The runner wrapped; default {@link execRunner}. */
  base?: CommandRunner;
}

/**
 * A runner whose commands run in the network namespace `netns` (`ip netns exec`), for tests and
 * the benchmark driving a proxier from the root namespace.
 */
export function netnsRunner(netns: string, opts: NetnsRunnerOptions = {}): CommandRunner {
  const base = opts.base ?? execRunner({ timeoutMs: opts.timeoutMs ?? 600_000 });
  return (cmd, args, input) => base('ip', ['netns', 'exec', netns, cmd, ...args], input);
}

/**
 * flannel's masquerade and forward rules in iptables, in flannel's own chains (FLANNEL-POSTRTG in
 * nat, FLANNEL-FWD in filter), rule for rule as flanneld writes them, comments included, so that
 * operators, runbooks and clean-up scripts written for flannel find what they expect.
 *
 * Checking reads only the four chains involved (`iptables -S <chain>`), not the whole ruleset,
 * which on a kube-proxy node in iptables mode can hold tens of thousands of rules. Repairs go
 * through `iptables-restore --noflush`, one transaction per table, so a reader never sees a chain
 * half rewritten.
 */
import type { Logger } from '../log/index.js';
import { componentLogger } from '../log/index.js';
import type { IpFamily as Family } from '../ipam/index.js';
import {
  type CommandRunner,
  type MasqConfig,
  type MasqRules,
  SerialQueue,
  execFailed,
  execRunner,
  familiesOf,
  runChecked,
} from './masq-common.js';

/** nat chain of the masquerade rules, jumped to from POSTROUTING. */
export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
/** filter chain of the forward rules, jumped to from FORWARD. */
export const FWD_CHAIN = 'FLANNEL-FWD';

// kube-proxy marks what it will masquerade itself with this bit; masquerading it here too would
// hit the double-NAT bug of some kernels.
const KUBE_PROXY_MARK = '0x4000/0x4000';
const MASQ_COMMENT = '-m comment --comment "flanneld masq"';
const FWD_COMMENT = '-m comment --comment "flanneld forward"';

/** One of weft's chains with its jump, as `iptables -S` prints them. */
export interface IptablesChain {
  family: Family;
  table: 'nat' | 'filter';
  chain: string;
  /** The built-in chain that jumps to `chain`. */
  parent: 'POSTROUTING' | 'FORWARD';
  /** The jump rule in `parent`. */
  jump: string;
  /** The chain's rules, in order. */
  rules: string[];
}

interface Slot {
  table: IptablesChain['table'];
  chain: string;
  parent: IptablesChain['parent'];
}

const SLOTS: readonly Slot[] = [
  { table: 'nat', chain: MASQ_CHAIN, parent: 'POSTROUTING' },
  { table: 'filter', chain: FWD_CHAIN, parent: 'FORWARD' },
];

/**
 * The chains `cfg` asks for, IPv4 first, each in the exact text `iptables -S` / `iptables-save`
 * prints, which is what {@link IptablesMasqRules} compares the kernel's state against.
 */
export function desiredIptablesRules(cfg: MasqConfig): IptablesChain[] {
  const out: IptablesChain[] = [];
  for (const { family, network: n, subnet: s, multicast } of familiesOf(cfg)) {
    if (cfg.masquerade) {
      const r = (spec: string) => `-A ${MASQ_CHAIN} ${spec}`;
      out.push({
        family,
        table: 'nat',
        chain: MASQ_CHAIN,
        parent: 'POSTROUTING',
        jump: `-A POSTROUTING ${MASQ_COMMENT} -j ${MASQ_CHAIN}`,
        rules: [
          r(`-m mark --mark ${KUBE_PROXY_MARK} ${MASQ_COMMENT} -j RETURN`),
          // Pod to pod inside the cluster: no NAT either way.
          r(`-s ${s} -d ${n} ${MASQ_COMMENT} -j RETURN`),
          r(`-s ${n} -d ${s} ${MASQ_COMMENT} -j RETURN`),
          // Traffic from outside to a local pod (e.g. a NodePort served here) keeps its source.
          r(`! -s ${n} -d ${s} ${MASQ_COMMENT} -j RETURN`),
          r(`-s ${n} ! -d ${multicast} ${MASQ_COMMENT} -j MASQUERADE --random-fully`),
          // The host talking to remote pods gets a source those pods can answer.
          r(`! -s ${n} -d ${n} ${MASQ_COMMENT} -j MASQUERADE --random-fully`),
        ],
      });
    }
    if (cfg.forward) {
      out.push({
        family,
        table: 'filter',
        chain: FWD_CHAIN,
        parent: 'FORWARD',
        jump: `-A FORWARD ${FWD_COMMENT} -j ${FWD_CHAIN}`,
        rules: [
          `-A ${FWD_CHAIN} -s ${n} ${FWD_COMMENT} -j ACCEPT`,
          `-A ${FWD_CHAIN} -d ${n} ${FWD_COMMENT} -j ACCEPT`,
        ],
      });
    }
  }
  return out;
}

/** The chains as `iptables-save` would show them, per family; for golden tests and logs. */
export function renderIptablesRules(chains: readonly IptablesChain[]): string {
  const out: string[] = [];
  for (const family of [4, 6] as const) {
    const mine = chains.filter((c) => c.family === family);
    if (mine.length === 0) continue;
    out.push(`# ${family === 4 ? 'iptables' : 'ip6tables'}`);
    for (const c of mine) out.push(`*${c.table}`, `:${c.chain} - [0:0]`, c.jump, ...c.rules, 'COMMIT');
  }
  return `${out.join('\n')}\n`;
}

/** What the kernel holds for one slot: the parent's rules, and the chain's (undefined: absent). */
export interface IptablesSlotState {
  parentRules: readonly string[];
  chainRules: readonly string[] | undefined;
}

/** The `iptables-restore --noflush` lines that repair one slot, and why. Empty when in order. */
export interface IptablesRepair {
  lines: string[];
  reasons: string[];
}

/**
 * Plans the repair of one table's slot from what `iptables -S` showed. `want` undefined means the
 * chain and its jumps must go. A jump that exists is left where it is: kube-proxy and others
 * also insert at the top of POSTROUTING, and moving ours back every few seconds would make the
 * daemons fight without changing what any packet meets first in practice.
 */
export function planIptablesRepair(
  slot: { chain: string; parent: string },
  want: IptablesChain | undefined,
  have: IptablesSlotState,
): IptablesRepair {
  const jumpRe = new RegExp(`\\s-j ${slot.chain}(\\s|$)`);
  const jumps = have.parentRules.filter((r) => jumpRe.test(r));
  const lines: string[] = [];
  const reasons: string[] = [];
  const del = (rule: string) => lines.push(rule.replace(/^-A /, '-D '));

  if (!want) {
    if (jumps.length === 0 && have.chainRules === undefined) return { lines, reasons };
    jumps.forEach(del);
    lines.push(`:${slot.chain} - [0:0]`, `-X ${slot.chain}`);
    reasons.push(`${slot.chain} not wanted`);
    return { lines, reasons };
  }

  let keptJump = false;
  for (const j of jumps) {
    if (j === want.jump && !keptJump) keptJump = true;
    else {
      del(j);
      reasons.push(j === want.jump ? `duplicate jump to ${slot.chain}` : `foreign jump: ${j}`);
    }
  }
  const chainOk =
    have.chainRules !== undefined &&
    have.chainRules.length === want.rules.length &&
    have.chainRules.every((r, i) => r === want.rules[i]);
  if (!chainOk) {
    lines.push(`:${slot.chain} - [0:0]`, ...want.rules);
    reasons.push(have.chainRules === undefined ? `${slot.chain} missing` : `${slot.chain} drifted`);
  }
  if (!keptJump) {
    lines.push(want.jump.replace(/^-A (\S+) /, '-I $1 1 '));
    reasons.push(`jump to ${slot.chain} missing`);
  }
  return { lines, reasons };
}

/** Options for {@link IptablesMasqRules}. */
export interface IptablesMasqOptions {
  /** Runs iptables; default {@link execRunner}. */
  runner?: CommandRunner;
  /** Logger; default the `masq` component logger. */
  logger?: Logger;
  /**
   * The iptables programs per family; `-restore` is appended for the restore program. Default
   * `iptables` and `ip6tables` (whichever backend the system's alternatives select).
   */
  commands?: { 4: string; 6: string };
}

/** {@link MasqRules} in iptables. */
export class IptablesMasqRules implements MasqRules {
  readonly #run: CommandRunner;
  readonly #log: Logger;
  readonly #cmd: { 4: string; 6: string };
  readonly #queue = new SerialQueue();
  // IPv6 is checked while wanted, and after that until its rules are known to be gone, so a node
  // that stops using IPv6 is cleaned without probing ip6tables forever on IPv4-only nodes.
  #v6Dirty = false;

  constructor(opts: IptablesMasqOptions = {}) {
    this.#run = opts.runner ?? execRunner();
    this.#log = opts.logger ?? componentLogger('masq', { firewall: 'iptables' });
    this.#cmd = opts.commands ?? { 4: 'iptables', 6: 'ip6tables' };
  }

  ensure(desired: MasqConfig): Promise<{ repaired: boolean }> {
    return this.#queue.run(async () => {
      const chains = desiredIptablesRules(desired);
      const wants6 = chains.some((c) => c.family === 6);
      if (wants6) this.#v6Dirty = true;
      let repaired = await this.#sync(4, chains);
      if (this.#v6Dirty) {
        repaired = (await this.#sync(6, chains)) || repaired;
        if (!wants6) this.#v6Dirty = false;
      }
      return { repaired };
    });
  }

  cleanup(): Promise<void> {
    return this.#queue.run(async () => {
      await this.#sync(4, []);
      try {
        await this.#sync(6, []);
      } catch (err) {
        // A node without IPv6 (or without ip6tables) has no IPv6 rules of ours to remove.
        if (this.#v6Dirty) throw err;
        this.#log.debug({ err }, 'ip6tables clean-up skipped');
      }
      this.#v6Dirty = false;
    });
  }

  /** Brings one family to `chains`; true when it wrote. */
  async #sync(family: Family, chains: readonly IptablesChain[]): Promise<boolean> {
    const plans = await Promise.all(
      SLOTS.map(async (slot) => {
        const want = chains.find((c) => c.family === family && c.table === slot.table);
        return { slot, ...planIptablesRepair(slot, want, await this.#read(family, slot)) };
      }),
    );
    const todo = plans.filter((p) => p.lines.length > 0);
    if (todo.length === 0) return false;
    const input = todo.map((p) => [`*${p.slot.table}`, ...p.lines, 'COMMIT'].join('\n')).join('\n') + '\n';
    await runChecked(this.#run, `${this.#cmd[family]}-restore`, ['-w', '--noflush'], input);
    this.#log.info(
      { family, reasons: todo.flatMap((p) => p.reasons) },
      'iptables masquerade/forward rules written',
    );
    return true;
  }

  async #read(family: Family, slot: Slot): Promise<IptablesSlotState> {
    const cmd = this.#cmd[family];
    const list = (chain: string) => this.#run(cmd, ['-w', '-t', slot.table, '-S', chain]);
    const [parent, chain] = await Promise.all([list(slot.parent), list(slot.chain)]);
    if (parent.code !== 0) throw execFailed(cmd, ['-w', '-t', slot.table, '-S', slot.parent], parent);
    // Exit 1 is iptables' answer for a chain that does not exist (its message varies by version
    // and backend: "No chain/target/match by that name", or iptables-nft's "incompatible");
    // anything else (permissions, a held lock, a missing program) is a real failure.
    if (chain.code !== 0 && chain.code !== 1) {
      throw execFailed(cmd, ['-w', '-t', slot.table, '-S', slot.chain], chain);
    }
    return {
      parentRules: rulesOf(parent.stdout, slot.parent),
      chainRules: chain.code === 0 ? rulesOf(chain.stdout, slot.chain) : undefined,
    };
  }
}

function rulesOf(listing: string, chain: string): string[] {
  return listing
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.startsWith(`-A ${chain} `));
}

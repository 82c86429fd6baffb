/**
 * flannel's masquerade and forward rules in nftables: a private table per family
 * (`table ip weft-flannel`, `table ip6 weft-flannel`) that nothing else writes to, so weft can
 * own it whole: every write replaces the table in one `nft -f -` transaction (create, delete,
 * define), and the kernel never holds a half-written rule set.
 *
 * Drift is found by comparing `nft list table` with the table's definition, which is written in
 * the very format nft lists it in. Another nft version may print the same rules differently; for
 * that case the listing read right after weft's own write is remembered and accepted too, so a
 * formatting difference costs one rewrite, not one every resync.
 */
import type { Logger } from '../log/index.js';
import { componentLogger } from '../log/index.js';
import {
  type CommandRunner,
  type MasqConfig,
  type MasqRules,
  SerialQueue,
  execRunner,
  familiesOf,
  runChecked,
} from './masq-common.js';

/** Name of weft-flanneld's tables. */
export const NFT_TABLE = 'weft-flannel';

/** nft's name of an address family. */
export type NftFamily = 'ip' | 'ip6';

/** One table, defined in the format `nft list table` prints. */
export interface NftTable {
  family: NftFamily;
  name: string;
  definition: string;
}

/**
 * The tables `cfg` asks for, IPv4 first. A family with neither masquerade nor forward rules has
 * no table. Chain priorities are the standard ones (srcnat, filter) that iptables-nft's own nat
 * and filter chains use: kube-proxy's masquerading, keyed on the mark we skip, is unaffected by
 * which of the two runs first.
 */
export function desiredNftablesRules(cfg: MasqConfig, name: string = NFT_TABLE): NftTable[] {
  const out: NftTable[] = [];
  for (const { family, network: n, subnet: s, multicast } of familiesOf(cfg)) {
    const nf: NftFamily = family === 4 ? 'ip' : 'ip6';
    const chains: { name: string; base: string; rules: string[] }[] = [];
    if (cfg.masquerade) {
      chains.push({
        name: 'postrtg',
        base: 'type nat hook postrouting priority srcnat; policy accept;',
        rules: [
          // Marked by kube-proxy, which masquerades these itself (see the iptables rules).
          'meta mark & 0x00004000 == 0x00004000 return',
          `${nf} saddr ${s} ${nf} daddr ${n} return`,
          `${nf} saddr ${n} ${nf} daddr ${s} return`,
          `${nf} saddr != ${n} ${nf} daddr ${s} return`,
          `${nf} saddr ${n} ${nf} daddr != ${multicast} masquerade fully-random`,
          `${nf} saddr != ${n} ${nf} daddr ${n} masquerade fully-random`,
        ],
      });
    }
    if (cfg.forward) {
      chains.push({
        name: 'forward',
        base: 'type filter hook forward priority filter; policy accept;',
        rules: [`${nf} saddr ${n} accept`, `${nf} daddr ${n} accept`],
      });
    }
    if (chains.length === 0) continue;
    // Tabs, blank lines between chains, the mark printed in full: nft's own listing format.
    const body = chains.map((c) =>
      [`\tchain ${c.name} {`, `\t\t${c.base}`, ...c.rules.map((r) => `\t\t${r}`), '\t}'].join('\n'),
    );
    out.push({ family: nf, name, definition: `table ${nf} ${name} {\n${body.join('\n\n')}\n}\n` });
  }
  return out;
}

/**
 * The `nft -f` transaction that replaces `tables` and removes the tables of `remove`. Declaring a
 * table before deleting it makes the delete succeed whether or not the table existed, so the
 * script is correct in any starting state.
 */
export function nftablesScript(
  tables: readonly NftTable[],
  remove: readonly NftFamily[] = [],
  name = NFT_TABLE,
): string {
  const out: string[] = [];
  const drop = (family: NftFamily, table: string) =>
    out.push(`table ${family} ${table} {\n}\ndelete table ${family} ${table}\n`);
  for (const family of remove) drop(family, name);
  for (const t of tables) {
    drop(t.family, t.name);
    out.push(t.definition);
  }
  return out.join('');
}

/** Options for {@link NftablesMasqRules}. */
export interface NftablesMasqOptions {
  /** Runs nft; default {@link execRunner}. */
  runner?: CommandRunner;
  /** Logger; default the `masq` component logger. */
  logger?: Logger;
  /** Table name. Default {@link NFT_TABLE}. */
  table?: string;
  /** The nft program. Default `nft`. */
  command?: string;
}

/** {@link MasqRules} in nftables. */
export class NftablesMasqRules implements MasqRules {
  readonly #run: CommandRunner;
  readonly #log: Logger;
  readonly #name: string;
  readonly #nft: string;
  readonly #queue = new SerialQueue();
  /** Per family: the listing nft gave right after weft wrote `definition`. */
  readonly #written = new Map<NftFamily, { definition: string; listing: string }>();

  constructor(opts: NftablesMasqOptions = {}) {
    this.#run = opts.runner ?? execRunner();
    this.#log = opts.logger ?? componentLogger('masq', { firewall: 'nftables' });
    this.#name = opts.table ?? NFT_TABLE;
    this.#nft = opts.command ?? 'nft';
  }

  ensure(desired: MasqConfig): Promise<{ repaired: boolean }> {
    return this.#queue.run(async () => {
      const want = desiredNftablesRules(desired, this.#name);
      const present = await this.#presentFamilies();
      const replace: NftTable[] = [];
      const reasons: string[] = [];
      for (const t of want) {
        if (!present.has(t.family)) {
          replace.push(t);
          reasons.push(`table ${t.family} ${t.name} missing`);
        } else if (!this.#matches(t, await this.#list(t.family))) {
          replace.push(t);
          reasons.push(`table ${t.family} ${t.name} drifted`);
        }
      }
      const remove = [...present].filter((f) => !want.some((t) => t.family === f));
      for (const f of remove) reasons.push(`table ${f} ${this.#name} not wanted`);
      if (replace.length === 0 && remove.length === 0) return { repaired: false };

      await this.#apply(nftablesScript(replace, remove, this.#name));
      for (const f of remove) this.#written.delete(f);
      for (const t of replace)
        this.#written.set(t.family, { definition: t.definition, listing: await this.#list(t.family) });
      this.#log.info({ reasons }, 'nftables masquerade/forward rules written');
      return { repaired: true };
    });
  }

  cleanup(): Promise<void> {
    return this.#queue.run(async () => {
      const present = [...(await this.#presentFamilies())];
      if (present.length > 0) await this.#apply(nftablesScript([], present, this.#name));
      this.#written.clear();
    });
  }

  #matches(t: NftTable, listing: string): boolean {
    if (listing.trimEnd() === t.definition.trimEnd()) return true;
    const w = this.#written.get(t.family);
    return w !== undefined && w.definition === t.definition && w.listing === listing;
  }

  async #presentFamilies(): Promise<Set<NftFamily>> {
    const out = await runChecked(this.#run, this.#nft, ['list', 'tables']);
    const found = new Set<NftFamily>();
    for (const line of out.split('\n')) {
      const m = /^table (ip|ip6) (\S+)$/.exec(line.trim());
      if (m && m[2] === this.#name) found.add(m[1] as NftFamily);
    }
    return found;
  }

  #list(family: NftFamily): Promise<string> {
    return runChecked(this.#run, this.#nft, ['list', 'table', family, this.#name]);
  }

  async #apply(script: string): Promise<void> {
    await runChecked(this.#run, this.#nft, ['-f', '-'], script);
  }
}

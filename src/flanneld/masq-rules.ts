/**
 * flannel's masquerade (`--ip-masq`) and forward (`--iptables-forward-rules`) rules, kept in
 * iptables or nftables (`--firewall`). N is the cluster network, S this node's lease:
 *
 *   postrouting: mark 0x4000/0x4000 → RETURN; S→N RETURN; N→S RETURN; !N→S RETURN;
 *                N→!224.0.0.0/4 MASQUERADE --random-fully; !N→N MASQUERADE --random-fully
 *   forward:     from N ACCEPT; to N ACCEPT
 *
 * The daemon calls `ensure` at start and every `--iptables-resync` seconds; it only reads when
 * the rules are in place.
 */
import type { Logger } from '../log/index.js';
import type { CommandRunner, MasqRules } from './masq-common.js';
import { IptablesMasqRules } from './masq-iptables.js';
import { NftablesMasqRules } from './masq-nftables.js';

export type {
  CommandResult,
  CommandRunner,
  ExecRunnerOptions,
  FamilyNets,
  MasqConfig,
  MasqRules,
} from './masq-common.js';
export { execRunner, familiesOf } from './masq-common.js';
export {
  FWD_CHAIN,
  IptablesMasqRules,
  MASQ_CHAIN,
  desiredIptablesRules,
  planIptablesRepair,
  renderIptablesRules,
  type IptablesChain,
  type IptablesMasqOptions,
  type IptablesRepair,
  type IptablesSlotState,
} from './masq-iptables.js';
export {
  NFT_TABLE,
  NftablesMasqRules,
  desiredNftablesRules,
  nftablesScript,
  type NftFamily,
  type NftTable,
  type NftablesMasqOptions,
} from './masq-nftables.js';

/** Options for {@link createMasqRules}. */
export interface CreateMasqRulesOptions {
  /** `--firewall`. */
  firewall: 'iptables' | 'nftables';
  /** Runs the firewall programs; default: spawn them directly. */
  runner?: CommandRunner;
  /** Logger; default the `masq` component logger. */
  logger?: Logger;
}

/** The {@link MasqRules} implementation `--firewall` selects. */
export function createMasqRules(opts: CreateMasqRulesOptions): MasqRules {
  const common = {
    ...(opts.runner ? { runner: opts.runner } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  };
  return opts.firewall === 'iptables' ? new IptablesMasqRules(common) : new NftablesMasqRules(common);
}

/**
 * weft-proxy's `iptables` mode: kube-proxy's iptables layout with `WEFT-` chains. The daemon
 * registers {@link createIptablesProxier} under the mode name; {@link buildRestoreInput} is the
 * pure generator the golden tests and the benchmark use.
 */
export {
  createIptablesProxier,
  IptablesProxier,
  JUMP_RULES,
  jumpRuleText,
  netnsRunner,
  parseIptablesVersion,
  parseSave,
  type IptablesFeatures,
  type IptablesProxierOptions,
  type JumpRule,
  type NetnsRunnerOptions,
} from './proxier.js';
export {
  buildRestoreInput,
  probability,
  type IptablesRulesConfig,
  type RestoreInput,
  type RestoreRequest,
} from './ruleset.js';
export * from './chain-names.js';

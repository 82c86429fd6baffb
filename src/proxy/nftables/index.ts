/**
 * weft-proxy's `nftables` mode (the default): a private `weft` table per family with O(1)
 * dispatch through verdict maps and endpoint choice through one shared named map, updated by
 * element-level diffs in one nft transaction per sync. Registered by the daemon in
 * src/proxy/modes.ts, not at import time.
 */
export { createNftablesProxier, renderFullSync, rulesetOptions } from './proxier.js';
export { NftRuleset, skeleton, type ElementConflict, type RulesetOptions } from './ruleset.js';
export {
  PICK_KINDS,
  buildFragment,
  pickMap,
  pickRules,
  type Element,
  type Fragment,
  type FragmentContext,
  type PickKind,
} from './fragment.js';
export { TABLE_NAME, endpointNames, nftFamily, servicePortNames, shortHash } from './names.js';
export { syntheticServicePorts, type SyntheticOptions } from './synthetic.js';

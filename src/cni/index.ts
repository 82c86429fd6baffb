/**
 * weft-cni: a flannel-compatible CNI meta-plugin. It reads the node's lease from subnet.env,
 * builds a config for the bridge plugin (host-local IPAM over the lease) and delegates ADD,
 * DEL and CHECK to it. The executable is `src/cni/main.ts` (`bin/weft-cni`); this module is
 * the library face, for tests and the lab.
 */
export { CniError, CniErrorCodes, toCniError, type CniErrorCode, type CniErrorJson } from './cni-error.js';
export {
  CNI_COMMANDS,
  parseCallEnv,
  parseCommand,
  type CniCallEnv,
  type CniCommand,
  type Env,
} from './cni-env.js';
export {
  DEFAULT_BRIDGE,
  DEFAULT_DELEGATE_TYPE,
  DEFAULT_IPAM_TYPE,
  buildDelegateConfig,
  type DelegateConfig,
} from './delegate-config.js';
export {
  loadDelegateConfig,
  removeDelegateConfig,
  saveDelegateConfig,
  savedConfigPath,
  type LoadedConfig,
} from './delegate-store.js';
export {
  execDelegate,
  findPlugin,
  type DelegateCall,
  type DelegateOutput,
  type DelegateRunner,
} from './invoke.js';
export {
  DEFAULT_DATA_DIR,
  DEFAULT_SUBNET_FILE,
  LATEST_VERSION,
  SUPPORTED_VERSIONS,
  decodeStdin,
  parseNetConf,
  type CniNetConf,
  type JsonObject,
} from './net-conf.js';
export { runPlugin, versionReply, type PluginInput, type PluginReply, type VersionReply } from './plugin.js';

/**
 * weft-cni: a flannel-compatible CNI meta-plugin. It reads the node's lease from subnet.env,
 * builds a config for the bridge plugin (host-local IPAM over the lease) and delegates ADD,
 * DEL and CHECK to it. The executable is `src/cni/main.ts` (`bin/weft-cni`); this module is
 * the library face, for tests and the lab. With a `weftRegistry` section it also records each
 * pod's attachment (attachment.ts) for pods that CNI_ARGS names (cni-args.ts).
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
  type WeftRegistryConf,
} from './net-conf.js';
export { runPlugin, versionReply, type PluginInput, type PluginReply, type VersionReply } from './plugin.js';
export { KNOWN_CNI_ARGS, MAX_CNI_ARGS, parseCniArgs, podIdentity, type PodIdentity } from './cni-args.js';
export {
  REGISTRY_DIAL_TIMEOUT_MS,
  REGISTRY_REQUEST_TIMEOUT_MS,
  attachmentJson,
  attachmentKey,
  openRegistry,
  registryTarget,
  removeAttachment,
  resultIps,
  storedContainerId,
  writeAttachment,
  type RegistryOpener,
  type RegistryTarget,
  type RemoveOutcome,
} from './attachment.js';

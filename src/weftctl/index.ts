/**
 * weftctl: the administration CLI. The program is `main.ts`; this is the face tests and other
 * tools use to run command lines in-process.
 */
export { COMMANDS } from './commands/index.js';
export {
  UsageError,
  defineCommand,
  expectArgs,
  type Command,
  type CommandContext,
  type CommandIo,
} from './command.js';
export { DAEMON_ENV_PREFIXES, GLOBAL_FLAGS, WEFTCTL_ENV_PREFIX, effectiveEnv } from './flags.js';
export {
  OUTPUT_FORMATS,
  cell,
  formatAge,
  formatData,
  formatTable,
  type OutputFormat,
  type Table,
} from './output.js';
export { runWeftctl, type RunOptions } from './run.js';

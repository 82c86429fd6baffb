/**
 * Runs one weftctl command line: parse the flags (global ones and every command's, so they may
 * stand anywhere), find the command by its words, check that each flag given applies to it, and
 * map the outcome to the exit code: 0 success, 1 an error, 2 misuse of the command line.
 */
import {
  formatHelp,
  parseFlags,
  type FlagSpec,
  type FlagTable,
  type FlagValues,
} from '../cli/flag-parser.js';
import { checkRegistryFlags, openStoreFromFlags } from '../cli/registry-flags.js';
import { ErrorCodes, isWeftError, messageOf } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/index.js';
import type { Store } from '../registry/index.js';
import {
  UsageError,
  readInputFrom,
  render,
  type Command,
  type CommandContext,
  type CommandIo,
  type GlobalFlags,
} from './command.js';
import { GLOBAL_FLAGS, WEFTCTL_ENV_PREFIX, effectiveEnv } from './flags.js';
import type { OutputFormat } from './output.js';

/** Options of {@link runWeftctl}. */
export interface RunOptions {
  /** The commands to choose from. */
  commands: readonly Command[];
  /** The version `--version` prints. */
  version: string;
  /** Logger for the registry client; silent by default so output stays the command's own. */
  logger?: Logger;
}

/** Runs `argv` (without node and script) and resolves with the exit code. */
export async function runWeftctl(argv: readonly string[], io: CommandIo, opts: RunOptions): Promise<number> {
  const dashdash = argv.indexOf('--');
  const line = dashdash < 0 ? argv : argv.slice(0, dashdash);
  const rest = dashdash < 0 ? undefined : argv.slice(dashdash + 1);
  let store: Store | undefined;
  try {
    const table = unionTable(opts.commands);
    const env = effectiveEnv(io.env);
    const parsed = parseFlags(table, line, env, { envPrefix: WEFTCTL_ENV_PREFIX });
    const global = parsed.values as unknown as GlobalFlags;
    const values = parsed.values as Record<string, unknown>;
    if (global.version) {
      io.stdout(`weftctl ${opts.version}\n`);
      return 0;
    }
    const found = findCommand(opts.commands, parsed.positionals);
    if (!found) {
      if (global.help || parsed.positionals.length === 0) {
        (global.help ? io.stdout : io.stderr)(overallHelp(opts.commands));
        return global.help ? 0 : 2;
      }
      throw new UsageError(unknownCommand(opts.commands, parsed.positionals));
    }
    const { command, args } = found;
    if (global.help) {
      io.stdout(commandHelp(command));
      return 0;
    }
    for (const [key, source] of Object.entries(parsed.sources)) {
      if (source !== 'argv' || key in GLOBAL_FLAGS || key in command.flags) continue;
      const spec = table[key] as FlagSpec;
      throw new UsageError(`flag --${spec.name} does not apply to "weftctl ${command.words.join(' ')}"`);
    }
    checkRegistryFlags(global);
    const logger = opts.logger ?? silentLogger();
    let opening: Promise<Store> | undefined;
    const wide = global.output === 'wide';
    const format: OutputFormat = wide ? 'table' : (global.output as OutputFormat);
    const ctx: CommandContext = {
      global,
      io,
      logger,
      format,
      wide,
      rest,
      store: () =>
        (opening ??= openStoreFromFlags(global, logger).then((s) => {
          store = s;
          return s;
        })),
      print: (data, tableOf) => io.stdout(render(format, data, tableOf)),
      readInput: (path) => readInputFrom(io, path),
    };
    const own = Object.fromEntries(Object.keys(command.flags).map((k) => [k, values[k]]));
    const code = await command.run(ctx, own as FlagValues<FlagTable>, args);
    return code ?? 0;
  } catch (err) {
    const misuse =
      err instanceof UsageError ||
      (isWeftError(err, ErrorCodes.INVALID_ARGUMENT) && err.details.object === 'flag');
    io.stderr(`weftctl: ${messageOf(err)}\n`);
    if (misuse) io.stderr('Run weftctl --help for the commands and flags.\n');
    return misuse ? 2 : 1;
  } finally {
    await store?.close().catch(() => undefined);
  }
}

/** The global flags and every command's, checked for two different flags of one name. */
function unionTable(commands: readonly Command[]): FlagTable {
  const table: Record<string, FlagSpec> = { ...GLOBAL_FLAGS };
  for (const c of commands) {
    for (const [key, spec] of Object.entries(c.flags)) {
      const seen = table[key];
      if (seen && seen !== spec && (seen.name !== spec.name || seen.type !== spec.type)) {
        throw new Error(`weftctl: flag key ${key} of "${c.words.join(' ')}" clashes with another flag`);
      }
      table[key] ??= spec;
    }
  }
  return table;
}

function findCommand(
  commands: readonly Command[],
  positionals: string[],
): { command: Command; args: string[] } | undefined {
  let best: Command | undefined;
  for (const c of commands) {
    if (c.words.every((w, i) => positionals[i] === w) && (!best || c.words.length > best.words.length))
      best = c;
  }
  return best && { command: best, args: positionals.slice(best.words.length) };
}

function unknownCommand(commands: readonly Command[], positionals: string[]): string {
  const first = positionals[0] ?? '';
  const group = commands.filter((c) => c.words[0] === first);
  if (group.length) {
    const subs = group.map((c) => c.words.slice(1).join(' ')).filter(Boolean);
    return `unknown command "${positionals.slice(0, 2).join(' ')}"; "${first}" takes: ${subs.join(', ')}`;
  }
  return `unknown command "${first}"; commands: ${[...new Set(commands.map((c) => c.words[0]))].join(', ')}`;
}

function usageLine(c: Command): string {
  return `weftctl ${c.words.join(' ')}${c.usage ? ` ${c.usage}` : ''}`;
}

function overallHelp(commands: readonly Command[]): string {
  const lines = commands.map((c) => [usageLine(c), c.summary] as const);
  const width = Math.max(...lines.map(([u]) => u.length));
  return (
    'weftctl: inspect and administer weft (leases, network config, services, daemons, the lab).\n\n' +
    'Usage: weftctl [flags] COMMAND [args]\n\nCommands:\n' +
    lines.map(([u, s]) => `  ${u.padEnd(width)}  ${s}`).join('\n') +
    '\n\nExit codes: 0 success, 1 error, 2 misuse of the command line.\n\n' +
    formatHelp(GLOBAL_FLAGS, { usage: 'Global flags (any command):', envPrefix: WEFTCTL_ENV_PREFIX })
      .split('\n')
      .slice(2)
      .join('\n')
      .replace(
        /^Flags:\n/,
        'Global flags (any command; registry flags also read FLANNELD_* and WEFT_PROXY_*):\n',
      )
  );
}

function commandHelp(c: Command): string {
  const own = Object.keys(c.flags).length
    ? formatHelp(c.flags, { usage: '', envPrefix: WEFTCTL_ENV_PREFIX }).split('\n').slice(2).join('\n')
    : '';
  return (
    `Usage: ${usageLine(c)} [flags]\n\n${c.summary}\n` +
    (c.description ? `\n${c.description}\n` : '') +
    (own ? `\n${own}` : '') +
    '\nGlobal flags: see weftctl --help.\n'
  );
}

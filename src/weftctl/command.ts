/**
 * The shape of a weftctl command. A command is named by its words (`lease reserve`), declares its
 * own flags (parsed together with the global ones, so they may appear anywhere on the line) and
 * gets a context that opens the registry lazily, reads files or stdin, and prints data in the
 * chosen format. Commands return an exit code or throw: a {@link UsageError} (or a flag error)
 * exits 2, anything else 1 with its message.
 */
import { readFile } from 'node:fs/promises';
import type { FlagTable, FlagValues } from '../cli/flag-parser.js';
import { ErrorCodes, WeftError } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import type { Store } from '../registry/index.js';
import type { GLOBAL_FLAGS } from './flags.js';
import { formatData, formatTable, type OutputFormat, type Table } from './output.js';

/** Misuse of the command line: unknown command, missing or extra arguments. Exits 2. */
export class UsageError extends WeftError {
  constructor(message: string) {
    super(ErrorCodes.INVALID_ARGUMENT, message, { object: 'command line' });
    this.name = 'UsageError';
  }
}

/** The values of the global flags. */
export type GlobalFlags = FlagValues<typeof GLOBAL_FLAGS>;

/** Where a command's output goes; tests capture it. */
export interface CommandIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** All of standard input, for `-f -`. */
  readStdin: () => Promise<string>;
  env: NodeJS.ProcessEnv;
}

/** What a command runs with. */
export interface CommandContext {
  global: GlobalFlags;
  io: CommandIo;
  logger: Logger;
  /** The registry the flags name, opened on first use and closed when the command ends. */
  store(): Promise<Store>;
  /** Prints `data` as JSON/YAML, or the table `table` builds from it in table mode. */
  print<D>(data: D, table: (data: D) => Table | string): void;
  /** The content of `path`, or of standard input for `-`. */
  readInput(path: string): Promise<string>;
  /** The chosen output format (`-o wide` is `table` with {@link wide} set). */
  readonly format: OutputFormat;
  /** `-o wide`: tables show their extra columns. */
  readonly wide?: boolean;
  /** The arguments after `--` on the command line (`lab exec NODE -- CMD`), if there was one. */
  readonly rest: readonly string[] | undefined;
}

/** A command: its words, flags and behaviour. */
export interface Command<F extends FlagTable = FlagTable> {
  /** The words that name it, e.g. `['lease', 'reserve']`. */
  readonly words: readonly string[];
  /** One line for the command list. */
  readonly summary: string;
  /** Arguments after the words, for the usage line: `SUBNET --public-ip IP`. */
  readonly usage?: string;
  /** More text for `weftctl COMMAND --help`. */
  readonly description?: string;
  /** The command's own flags (names must not clash with other commands' unless the same spec). */
  readonly flags: F;
  /** Run with the parsed flags and the positional arguments after the words. */
  run(ctx: CommandContext, flags: FlagValues<F>, args: string[]): Promise<number | void>;
}

/** Keeps the flag type of a command when it goes into a list of commands. */
export function defineCommand<F extends FlagTable>(command: Command<F>): Command {
  return command as unknown as Command;
}

/** The default {@link CommandContext.readInput}: a file, or stdin for `-`. */
export async function readInputFrom(io: CommandIo, path: string): Promise<string> {
  if (path === '-') return io.readStdin();
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WeftError(ErrorCodes.NOT_FOUND, `cannot read ${path}: ${code ?? String(err)}`, {
      object: 'file',
      field: path,
    });
  }
}

/** Renders `data` for {@link CommandContext.print}. */
export function render<D>(format: OutputFormat, data: D, table: (data: D) => Table | string): string {
  if (format !== 'table') return formatData(format, data);
  const t = table(data);
  return typeof t === 'string' ? t : formatTable(t);
}

/** Throws a usage error unless `args` has between `min` and `max` entries. */
export function expectArgs(args: string[], min: number, max: number, usage: string): void {
  if (args.length < min) throw new UsageError(`missing argument: ${usage}`);
  if (args.length > max) throw new UsageError(`unexpected argument "${args[max] ?? ''}": ${usage}`);
}

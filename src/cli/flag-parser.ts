/**
 * A table-driven command-line parser shared by weft's daemons and tools. Each program declares
 * its flags once (name, type, default, description, validation) and gets from that one table:
 * argv parsing, environment variables, validation errors that name the flag, typed values and
 * `--help` text. Keeping all of it in the table means a flag cannot be parsed but missing from
 * the help, or documented with a default it does not have.
 *
 * Syntax follows Go's `flag` package, which flannel uses, so existing command lines keep working:
 * `--flag=value`, `--flag value`, `-flag` as well as `--flag`, `--bool` / `--bool=false`, and
 * `--` ending the flags. A flag given on the command line wins over its environment variable,
 * which wins over the default.
 */
import { ErrorCodes, WeftError } from '../errors/index.js';

/** The value kinds a flag can have. */
export type FlagType = 'string' | 'bool' | 'int' | 'list';

/** Where a parsed value came from. */
export type FlagSource = 'default' | 'env' | 'argv';

/**
 * Checks a parsed value; returns why it is wrong (completed by the parser into
 * `flag --name: <reason>, got "<value>"`), or undefined when it is fine.
 */
export type FlagValidator<V> = (value: V) => string | undefined;

interface CommonSpec {
  /** Flag name without dashes, kebab-case: `etcd-endpoints`. */
  readonly name: string;
  /** One or more sentences for `--help`. */
  readonly description: string;
  /** Placeholder for the value in `--help` (`<url>`). Defaults to the type. */
  readonly metavar?: string | undefined;
  /** Other names (without dashes) accepted on the command line, e.g. `h` for `help`. */
  readonly aliases?: readonly string[] | undefined;
  /** Read from `<PREFIX>_<UPPER_SNAKE>` in the environment. Default true. */
  readonly env?: boolean | undefined;
  /** Never echo the value in errors or show the default in help (passwords). */
  readonly secret?: boolean | undefined;
  /**
   * When set on the command line, errors in other flags are not thrown, so `--help` and
   * `--version` work even with a broken environment.
   */
  readonly shortCircuit?: boolean | undefined;
}

/** A string flag; its value is `string`, or `string | undefined` without a default. */
export interface StringFlagSpec<V extends string | undefined = string | undefined> extends CommonSpec {
  readonly type: 'string';
  readonly default: V;
  /** The only accepted values, listed in `--help`. */
  readonly choices?: readonly string[] | undefined;
  readonly validate?: FlagValidator<string> | undefined;
}

/**
 * A boolean flag: `--x`, `--x=true`, `--x=false`. Values are case-insensitive and include Go's
 * strconv.ParseBool words (1/0, t/f), which flannel accepts, plus yes/no and on/off.
 */
export interface BoolFlagSpec extends CommonSpec {
  readonly type: 'bool';
  readonly default: boolean;
}

/** A decimal integer flag, optionally bounded (inclusive). */
export interface IntFlagSpec extends CommonSpec {
  readonly type: 'int';
  readonly default: number;
  readonly min?: number | undefined;
  readonly max?: number | undefined;
}

/**
 * A list flag. Every occurrence on the command line adds to the list (`--iface a --iface b`);
 * from the environment the value is split on commas. When given on the command line, the
 * environment value and the default are ignored rather than merged.
 */
export interface ListFlagSpec extends CommonSpec {
  readonly type: 'list';
  readonly default: readonly string[];
  /** Also split each command-line value on commas (`--etcd-endpoints=a,b`). Default false. */
  readonly commaSeparated?: boolean | undefined;
  /** Reject an empty resulting list. Default false. */
  readonly nonEmpty?: boolean | undefined;
  /** Applied to each item. */
  readonly validate?: FlagValidator<string> | undefined;
}

/** Any flag spec. */
export type FlagSpec = StringFlagSpec | BoolFlagSpec | IntFlagSpec | ListFlagSpec;

/** A program's flags, keyed by the property name the parsed value gets. */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/** The value type a spec produces. */
export type FlagValue<S extends FlagSpec> = S extends BoolFlagSpec
  ? boolean
  : S extends IntFlagSpec
    ? number
    : S extends ListFlagSpec
      ? string[]
      : S extends { readonly type: 'string'; readonly default: infer V }
        ? V
        : never;

/** Parsed values of a whole table. */
export type FlagValues<T extends FlagTable> = { -readonly [K in keyof T]: FlagValue<T[K]> };

type StringOptions = Omit<StringFlagSpec, 'type' | 'default'>;

/** A string flag with a default: its value is a `string`. */
export function stringFlag(opts: StringOptions & { default: string }): StringFlagSpec<string>;
/** A string flag without a default: its value is `string | undefined`. */
export function stringFlag(opts: StringOptions & { default?: undefined }): StringFlagSpec<string | undefined>;
export function stringFlag(opts: StringOptions & { default?: string }): StringFlagSpec {
  return { ...opts, type: 'string', default: opts.default };
}

/** A string flag limited to `choices`; its value has the union type of the choices. */
export function choiceFlag<C extends string>(
  opts: Omit<StringFlagSpec, 'type' | 'default' | 'choices'> & { choices: readonly C[]; default: C },
): StringFlagSpec<NoInfer<C>> {
  return { ...opts, type: 'string' };
}

/** A boolean flag (default false unless given). */
export function boolFlag(opts: Omit<BoolFlagSpec, 'type' | 'default'> & { default?: boolean }): BoolFlagSpec {
  return { ...opts, type: 'bool', default: opts.default ?? false };
}

/** An integer flag. */
export function intFlag(opts: Omit<IntFlagSpec, 'type'>): IntFlagSpec {
  return { ...opts, type: 'int' };
}

/** A list flag (default empty unless given). */
export function listFlag(
  opts: Omit<ListFlagSpec, 'type' | 'default'> & { default?: readonly string[] },
): ListFlagSpec {
  return { ...opts, type: 'list', default: opts.default ?? [] };
}

/**
 * Checks a table once at module load, so a typo in a table fails every test rather than one
 * user's command line: names must be kebab-case and unique (aliases included; a one-letter alias
 * may be a capital, as kubectl's `-A`), defaults must pass their own validation.
 */
export function defineFlags<T extends FlagTable>(table: T): T {
  const seen = new Set<string>();
  for (const spec of Object.values(table)) {
    for (const name of [spec.name, ...(spec.aliases ?? [])]) {
      const ok = name === spec.name ? /^[a-z0-9]+(-[a-z0-9]+)*$/ : /^([a-z0-9]+(-[a-z0-9]+)*|[A-Z])$/;
      if (!ok.test(name)) throw new Error(`flag table: bad flag name "${name}"`);
      if (seen.has(name)) throw new Error(`flag table: duplicate flag name "${name}"`);
      seen.add(name);
    }
    const problem = checkDefault(spec);
    if (problem) throw new Error(`flag table: default of --${spec.name} ${problem}`);
  }
  return table;
}

function checkDefault(spec: FlagSpec): string | undefined {
  switch (spec.type) {
    case 'string':
      if (spec.default === undefined) return undefined;
      if (spec.choices && !spec.choices.includes(spec.default)) return 'is not one of its choices';
      return spec.validate?.(spec.default);
    case 'int':
      return Number.isSafeInteger(spec.default) && inRange(spec, spec.default)
        ? undefined
        : 'is out of range';
    case 'list':
      for (const item of spec.default) {
        const why = spec.validate?.(item);
        if (why) return why;
      }
      return undefined;
    case 'bool':
      return undefined;
  }
}

/** Options for {@link parseFlags} and {@link formatHelp}. */
export interface FlagParserOptions {
  /**
   * Prefix of environment variables, without the trailing underscore (`FLANNELD`): flag
   * `--ip-masq` reads `FLANNELD_IP_MASQ`. Omit to read nothing from the environment.
   */
  envPrefix?: string;
}

/** The outcome of {@link parseFlags}. */
export interface ParsedFlags<T extends FlagTable> {
  values: FlagValues<T>;
  /** Where each value came from; for logging the effective configuration. */
  sources: { [K in keyof T]: FlagSource };
  /** Arguments that are not flags (after `--`, or not starting with `-`). */
  positionals: string[];
}

/**
 * Refuses arguments left over by a daemon that takes none, hinting at the usual cause: Go's
 * `flag` syntax takes a bool's value only as `--flag=false`, so `--flag false` leaves `false`.
 */
export function rejectPositionals(program: string, positionals: readonly string[]): void {
  const [extra] = positionals;
  if (extra === undefined) return;
  const hint = /^(true|false)$/i.test(extra) ? ' (a bool flag takes its value as --flag=false)' : '';
  throw new WeftError(
    ErrorCodes.INVALID_ARGUMENT,
    `${program} takes no arguments, got ${JSON.stringify(extra)}${hint}`,
    { object: 'argv', field: '' },
  );
}

/** The environment variable a flag reads, e.g. `FLANNELD_ETCD_ENDPOINTS`. */
export function envVarName(prefix: string, flagName: string): string {
  return `${prefix}_${flagName.toUpperCase().replace(/-/g, '_')}`;
}

/** Parses `argv` (without node and script) and `env` against `table`. */
export function parseFlags<T extends FlagTable>(
  table: T,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  opts: FlagParserOptions = {},
): ParsedFlags<T> {
  const keys = Object.keys(table) as (keyof T & string)[];
  const byName = new Map<string, keyof T & string>();
  for (const key of keys) {
    const spec = table[key] as FlagSpec;
    for (const name of [spec.name, ...(spec.aliases ?? [])]) byName.set(name, key);
  }

  const values: Record<string, unknown> = {};
  const sources: Record<string, FlagSource> = {};
  for (const key of keys) {
    const spec = table[key] as FlagSpec;
    values[key] = spec.type === 'list' ? [...spec.default] : spec.default;
    sources[key] = 'default';
  }

  // Errors are collected rather than thrown at once so that a short-circuit flag anywhere on the
  // line (`--help`) still wins over a bad value before it.
  let firstError: WeftError | undefined;
  const fail = (err: WeftError) => (firstError ??= err);
  let shortCircuit = false;

  const positionals: string[] = [];
  const listFromArgv = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const key = byName.get(name);
    if (key === undefined) {
      fail(unknownFlag(name, table));
      continue;
    }
    const spec = table[key] as FlagSpec;
    let raw: string;
    if (eq >= 0) raw = body.slice(eq + 1);
    else if (spec.type === 'bool') raw = 'true';
    else {
      const next = argv[i + 1];
      // A following `--flag` is far more likely a forgotten value than a value that starts with
      // two dashes; such a value can still be given as `--flag=--x`.
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        fail(flagError(spec, 'needs a value', undefined));
        continue;
      }
      raw = next;
      i++;
    }
    try {
      if (spec.type === 'list') {
        const items = spec.commaSeparated ? raw.split(',') : [raw];
        const acc = listFromArgv.get(key) ?? [];
        acc.push(...items);
        listFromArgv.set(key, acc);
      } else {
        values[key] = convert(spec, raw, undefined);
        sources[key] = 'argv';
        if (spec.shortCircuit && values[key] === true) shortCircuit = true;
      }
    } catch (err) {
      fail(err as WeftError);
    }
  }
  for (const [key, items] of listFromArgv) {
    try {
      values[key] = convertList(table[key] as ListFlagSpec, items, undefined);
      sources[key] = 'argv';
    } catch (err) {
      fail(err as WeftError);
    }
  }

  // As in flannel (Go's flagutil.SetFlagsFromEnv), a flag set on the command line does not look
  // at its variable at all, so a stale value there cannot fail a start that overrides it.
  if (opts.envPrefix !== undefined) {
    for (const key of keys) {
      const spec = table[key] as FlagSpec;
      if (spec.env === false || sources[key] === 'argv') continue;
      const varName = envVarName(opts.envPrefix, spec.name);
      const raw = env[varName];
      // Empty variables count as unset, as there.
      if (raw === undefined || raw === '') continue;
      try {
        values[key] =
          spec.type === 'list'
            ? convertList(spec, raw.split(','), `from ${varName}`)
            : convert(spec, raw, `from ${varName}`);
        sources[key] = 'env';
      } catch (err) {
        fail(err as WeftError);
      }
    }
  }

  if (firstError && !shortCircuit) throw firstError;
  return {
    values: values as FlagValues<T>,
    sources: sources as ParsedFlags<T>['sources'],
    positionals,
  };
}

const TRUE_WORDS = new Set(['1', 't', 'true', 'yes', 'on']);
const FALSE_WORDS = new Set(['0', 'f', 'false', 'no', 'off']);

function convert(spec: FlagSpec, raw: string, origin: string | undefined): unknown {
  switch (spec.type) {
    case 'bool': {
      const word = raw.trim().toLowerCase();
      if (TRUE_WORDS.has(word)) return true;
      if (FALSE_WORDS.has(word)) return false;
      throw flagError(spec, 'must be true or false', raw, origin);
    }
    case 'int': {
      const text = raw.trim();
      const n = /^[+-]?\d+$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(n) || !inRange(spec, n)) throw flagError(spec, intRule(spec), raw, origin);
      return n;
    }
    case 'string': {
      if (spec.choices && !spec.choices.includes(raw)) {
        throw flagError(spec, `must be one of ${spec.choices.join(', ')}`, raw, origin);
      }
      const why = spec.validate?.(raw);
      if (why) throw flagError(spec, why, raw, origin);
      return raw;
    }
    case 'list':
      return convertList(spec, [raw], origin);
  }
}

function convertList(spec: ListFlagSpec, rawItems: readonly string[], origin: string | undefined): string[] {
  // Spaces around commas are formatting, never part of an endpoint, interface or regex.
  const items = rawItems.map((s) => s.trim()).filter((s) => s !== '');
  for (const item of items) {
    const why = spec.validate?.(item);
    if (why) throw flagError(spec, why, item, origin);
  }
  if (spec.nonEmpty && items.length === 0) throw flagError(spec, 'must not be empty', undefined, origin);
  return items;
}

function inRange(spec: IntFlagSpec, n: number): boolean {
  return (spec.min === undefined || n >= spec.min) && (spec.max === undefined || n <= spec.max);
}

function intRule(spec: IntFlagSpec): string {
  if (spec.min !== undefined && spec.max !== undefined)
    return `must be an integer in ${spec.min}..${spec.max}`;
  if (spec.min !== undefined) return `must be an integer ≥ ${spec.min}`;
  if (spec.max !== undefined) return `must be an integer ≤ ${spec.max}`;
  return 'must be an integer';
}

/**
 * `flag --name: <reason>, got "<value>" (from VAR)`. The value is echoed so the operator sees
 * what the daemon saw (quoting shows stray spaces), except for secrets, and with any password in
 * a URL masked, since these messages end up in logs.
 */
function flagError(spec: FlagSpec, reason: string, raw: string | undefined, origin?: string): WeftError {
  let msg = `flag --${spec.name}: ${reason}`;
  if (raw !== undefined && !spec.secret) msg += `, got ${JSON.stringify(maskUrlPassword(raw))}`;
  if (origin) msg += ` (${origin})`;
  return new WeftError(ErrorCodes.INVALID_ARGUMENT, msg, {
    object: 'flag',
    field: `--${spec.name}`,
    ...(origin ? { origin } : {}),
  });
}

function maskUrlPassword(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*:)[^/@]*@/i, '$1***@');
}

function unknownFlag(name: string, table: FlagTable): WeftError {
  let msg = `unknown flag --${name}`;
  const near = Object.values(table)
    .map((s) => ({ name: s.name, d: editDistance(name, s.name) }))
    .filter((c) => c.d <= 2)
    .sort((a, b) => a.d - b.d)[0];
  if (near) msg += ` (did you mean --${near.name}?)`;
  return new WeftError(ErrorCodes.INVALID_ARGUMENT, msg, { object: 'flag', field: `--${name}` });
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** Options for {@link formatHelp}. */
export interface HelpOptions extends FlagParserOptions {
  /** First line, e.g. `Usage: weft-flanneld [flags]`. */
  usage: string;
  /** Paragraphs printed between the usage line and the flags. */
  intro?: string;
  /** Wrap descriptions at this column. Default 100. */
  width?: number;
}

/** `--help` text: every flag with its value placeholder, description, default and variable. */
export function formatHelp(table: FlagTable, opts: HelpOptions): string {
  const width = opts.width ?? 100;
  const out: string[] = [opts.usage, ''];
  if (opts.intro) out.push(...wrap(opts.intro, width, ''), '');
  out.push('Flags:');
  for (const spec of Object.values(table)) {
    const names = [spec.name, ...(spec.aliases ?? [])].map((n) => (n.length === 1 ? `-${n}` : `--${n}`));
    const metavar = spec.type === 'bool' ? '' : ` ${spec.metavar ?? `<${spec.type}>`}`;
    out.push(`  ${names.join(', ')}${metavar}`);
    let text = spec.description;
    if (spec.type === 'string' && spec.choices) text += ` One of: ${spec.choices.join(', ')}.`;
    if (spec.type === 'int') {
      if (spec.min !== undefined && spec.max !== undefined) text += ` Range: ${spec.min}..${spec.max}.`;
      else if (spec.min !== undefined) text += ` At least ${spec.min}.`;
      else if (spec.max !== undefined) text += ` At most ${spec.max}.`;
    }
    out.push(...wrap(text, width, '      '));
    const facts = [`default: ${describeDefault(spec)}`];
    if (opts.envPrefix !== undefined && spec.env !== false)
      facts.push(`env: ${envVarName(opts.envPrefix, spec.name)}`);
    out.push(`      [${facts.join('] [')}]`);
  }
  return `${out.join('\n')}\n`;
}

function describeDefault(spec: FlagSpec): string {
  if (spec.secret) return 'none';
  switch (spec.type) {
    case 'list':
      return spec.default.length ? spec.default.join(',') : 'none';
    case 'string':
      return spec.default === undefined ? 'none' : spec.default === '' ? '""' : spec.default;
    default:
      return String(spec.default);
  }
}

function wrap(text: string, width: number, indent: string): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(indent + line);
  return lines;
}

/**
 * `weftctl config get` and `config set -f FILE|-`: flannel's network config at
 * `<etcd-prefix>/config`. `set` validates with the same parser weft-flanneld uses, so a config
 * the daemons would reject is never written, shows the change as a diff, and writes with a
 * compare-and-swap so a concurrent change is not overwritten silently.
 */
import { boolFlag, stringFlag } from '../../cli/flag-parser.js';
import { ErrorCodes, WeftError, isWeftError } from '../../errors/index.js';
import { parseNetConfig, type NetConfig } from '../../ipam/index.js';
import { UsageError, defineCommand, expectArgs, type CommandContext } from '../command.js';
import { lineDiff } from '../text-diff.js';

/** `<etcd-prefix>/config`. */
export function configKey(etcdPrefix: string): string {
  return `${etcdPrefix.replace(/\/+$/, '')}/config`;
}

const FILE_FLAG = stringFlag({
  name: 'filename',
  aliases: ['f'],
  metavar: '<file|->',
  description: 'The file to read, or - for standard input.',
  env: false,
});

const DRY_RUN_FLAG = boolFlag({
  name: 'dry-run',
  description: 'Validate and show the diff, but write nothing.',
  env: false,
});

/** The rows of the config summary table. */
function summary(config: NetConfig): [string, string][] {
  const rows: [string, string][] = [];
  for (const [family, pool] of [
    ['IPv4', config.ipv4],
    ['IPv6', config.ipv6],
  ] as const) {
    if (!pool) continue;
    rows.push([`${family} network`, pool.network.toString()]);
    rows.push([`${family} subnet length`, `/${pool.subnetLen}`]);
    rows.push([`${family} subnets`, `${pool.subnetMin} … ${pool.subnetMax}`]);
  }
  const { type, ...options } = config.backend as { type: string } & Record<string, unknown>;
  rows.push(['Backend', type]);
  for (const [k, v] of Object.entries(options)) if (v !== undefined) rows.push([`  ${k}`, String(v)]);
  return rows;
}

/** Parses a config file's text: JSON as flannel reads it. */
function parseConfigText(text: string, source: string): { json: unknown; config: NetConfig } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new WeftError(ErrorCodes.INVALID_CONFIG, `${source}: not JSON: ${(err as Error).message}`, {
      object: source,
      field: '',
    });
  }
  try {
    return { json, config: parseNetConfig(json) };
  } catch (err) {
    if (isWeftError(err)) {
      throw new WeftError(err.code, `${source}: ${err.message}`, { ...err.details, object: source });
    }
    throw err;
  }
}

const pretty = (json: unknown) => `${JSON.stringify(json, null, 2)}\n`;

/** The stored network config and its key; NOT_FOUND naming the key when there is none. */
export async function getConfig(ctx: CommandContext) {
  const key = configKey(ctx.global.etcdPrefix);
  const kv = await (await ctx.store()).get(key);
  if (!kv) throw new WeftError(ErrorCodes.NOT_FOUND, `no network config at ${key}`, { object: key });
  return { key, kv };
}

export const configCommands = [
  defineCommand({
    words: ['config', 'get'],
    summary: "Show the network config (flannel's net-conf.json) and what it means.",
    flags: {},
    async run(ctx, _flags, args) {
      expectArgs(args, 0, 0, 'weftctl config get');
      const { key, kv } = await getConfig(ctx);
      let json: unknown;
      let config: NetConfig | undefined;
      let problem: string | undefined;
      try {
        ({ json, config } = parseConfigText(kv.value, key));
      } catch (err) {
        problem = (err as Error).message;
      }
      if (ctx.format !== 'table') {
        if (json === undefined)
          throw new WeftError(ErrorCodes.INVALID_CONFIG, problem ?? 'invalid', { object: key });
        ctx.print(json, () => '');
        if (problem) ctx.io.stderr(`weftctl: warning: ${problem}\n`);
        return problem ? 1 : 0;
      }
      ctx.io.stdout(`${key} (revision ${kv.modRevision}):\n${json === undefined ? kv.value : pretty(json)}`);
      if (!config) {
        ctx.io.stderr(`weftctl: ${problem ?? 'invalid config'}\nweft-flanneld will not start with it.\n`);
        return 1;
      }
      ctx.print(summary(config), (rows) => ({ headers: ['setting', 'value'], rows }));
      return 0;
    },
  }),
  defineCommand({
    words: ['config', 'set'],
    usage: '-f FILE|-',
    summary: 'Validate a network config, show the change as a diff and write it.',
    description:
      'The config is validated as weft-flanneld parses it; an invalid one is not written (exit 1). ' +
      'Running daemons pick a new config up and restart their dataplane in-process.',
    flags: { filename: FILE_FLAG, dryRun: DRY_RUN_FLAG },
    async run(ctx, flags, args) {
      expectArgs(args, 0, 0, 'weftctl config set -f FILE|-');
      if (flags.filename === undefined) throw new UsageError('config set needs -f FILE (or -f - for stdin)');
      const source = flags.filename === '-' ? 'stdin' : flags.filename;
      const text = await ctx.readInput(flags.filename);
      const { json } = parseConfigText(text, source);
      const store = await ctx.store();
      const key = configKey(ctx.global.etcdPrefix);
      const current = await store.get(key);
      let before = '';
      if (current) {
        try {
          before = pretty(JSON.parse(current.value));
        } catch {
          before = current.value.endsWith('\n') ? current.value : `${current.value}\n`;
        }
      }
      const diff = lineDiff(before, pretty(json));
      if (diff.length === 0) {
        ctx.io.stdout(`${key}: unchanged\n`);
        return 0;
      }
      ctx.io.stdout(
        `--- ${key}${current ? ` (revision ${current.modRevision})` : ' (none)'}\n+++ ${source}\n`,
      );
      ctx.io.stdout(`${diff.join('\n')}\n`);
      if (flags.dryRun) {
        ctx.io.stdout('dry run: nothing written\n');
        return 0;
      }
      // Written compact, as flannel's docs put it with etcdctl; flanneld reads any JSON layout.
      const value = JSON.stringify(json);
      const ok = current
        ? (await store.update(key, value, { modRevision: current.modRevision })).updated
        : (await store.create(key, value)).created;
      if (!ok) {
        throw new WeftError(
          ErrorCodes.CONFLICT,
          `${key} changed while this command ran; nothing written, run it again`,
          {
            object: key,
          },
        );
      }
      ctx.io.stdout(`${key}: ${current ? 'updated' : 'created'}\n`);
      return 0;
    },
  }),
];

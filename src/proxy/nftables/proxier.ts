/**
 * The nftables proxier: keeps the `weft` table of one family in line with the service ports,
 * one `nft -f -` transaction per sync. nft applies a transaction entirely or not at all, so a
 * failed sync leaves the previous rules in place; the model is then dropped and the next sync,
 * whatever the engine asks, rewrites the whole table.
 */
import { Cidr, parseCidrField } from '../../ipam/index.js';
import { execFailed, runChecked, SerialQueue, type CommandRunner } from '../../exec/index.js';
import { invalid, messageOf } from '../../errors/index.js';
import type { Proxier, ProxierContext, SyncRequest } from '../proxier.js';
import type { ServicePortMap } from '../model/index.js';
import { HOOK_CHAINS, NftRuleset, type ExistingObjects, type RulesetOptions } from './ruleset.js';
import { TABLE_NAME, nftFamily } from './names.js';

/**
 * The ruleset options of a proxier context. Throws WEFT_INVALID_ARGUMENT naming the flag when
 * `clusterCidr` or a `nodePortAddresses` entry is not a CIDR; NodePort CIDRs of the other family
 * are left to that family's proxier.
 */
export function rulesetOptions(
  ctx: Pick<ProxierContext, 'family' | 'clusterCidr' | 'masqueradeAll' | 'nodePortAddresses'>,
): RulesetOptions {
  const clusterCidr =
    ctx.clusterCidr === undefined
      ? undefined
      : parseCidrField('weft-proxy', 'cluster-cidr', ctx.clusterCidr, {
          family: ctx.family,
          lenient: true,
        }).toString();
  const nodePortCidrs: string[] = [];
  for (const text of ctx.nodePortAddresses) {
    let c: Cidr;
    try {
      c = Cidr.parseLenient(text);
    } catch {
      throw invalid('weft-proxy', 'nodeport-addresses', `must be a CIDR, got ${JSON.stringify(text)}`);
    }
    if (c.family === ctx.family) nodePortCidrs.push(c.toString());
  }
  return { family: ctx.family, clusterCidr, masqueradeAll: ctx.masqueradeAll, nodePortCidrs };
}

/** Renders the full-sync transaction of `ports` without touching the kernel (golden tests, bench). */
export function renderFullSync(ports: ServicePortMap, opts: RulesetOptions): string {
  return new NftRuleset(opts).renderFull(ports);
}

/** The chains whose absence means something removed weft's rules. */
const REQUIRED_CHAINS = [...HOOK_CHAINS, 'services', 'masquerading', 'mark-for-masquerade', 'reject-chain'];

/** The names of one kind of object of `table` in a listing (`nft list chains`, `-t list sets`). */
export function namesInTable(
  listing: string,
  table: string,
  kind: 'chain' | 'set' | 'map' = 'chain',
): Set<string> {
  const out = new Set<string>();
  let inTable = false;
  for (const line of listing.split('\n')) {
    const t = /^table \S+ (\S+) \{/.exec(line);
    if (t) {
      inTable = t[1] === table;
      continue;
    }
    const m = /^\s+(chain|set|map) (\S+) \{/.exec(line);
    if (m && inTable && m[1] === kind && m[2] !== undefined) out.add(m[2]);
  }
  return out;
}

/** The chain names of `table` in the output of `nft list chains <family>`. */
export function chainsOfTable(listing: string, table: string): Set<string> {
  return namesInTable(listing, table, 'chain');
}

/**
 * What weft's table holds, or undefined when there is no table. Three cheap listings: nft fetches
 * no rule and no element for them, where listing the table would fetch everything.
 */
async function listExisting(runner: CommandRunner, family: string): Promise<ExistingObjects | undefined> {
  const [chains, sets, maps] = await Promise.all([
    runChecked(runner, 'nft', ['list', 'chains', family]),
    runChecked(runner, 'nft', ['-t', 'list', 'sets', family]),
    runChecked(runner, 'nft', ['-t', 'list', 'maps', family]),
  ]);
  const existing = {
    chains: namesInTable(chains, TABLE_NAME, 'chain'),
    sets: namesInTable(sets, TABLE_NAME, 'set'),
    maps: namesInTable(maps, TABLE_NAME, 'map'),
  };
  return existing.chains.size + existing.sets.size + existing.maps.size > 0 ? existing : undefined;
}

async function nft(runner: CommandRunner, script: string): Promise<void> {
  const args = ['-f', '-'];
  const res = await runner('nft', args, script);
  // The input can be megabytes; the error keeps nft's stderr, which names the failing line.
  if (res.code !== 0) throw execFailed('nft', args, res);
}

/** Creates the nftables proxier of one family. Nothing is written until the first sync. */
export async function createNftablesProxier(ctx: ProxierContext): Promise<Proxier> {
  const opts = rulesetOptions(ctx);
  const table = `${nftFamily(ctx.family)} ${TABLE_NAME}`;
  const queue = new SerialQueue();
  // What the kernel holds, as far as weft knows; undefined forces a full sync.
  let ruleset: NftRuleset | undefined;

  const apply = async (next: NftRuleset, script: string): Promise<void> => {
    for (const c of next.conflicts) {
      ctx.log.error(
        { map: c.map, key: c.key, owner: c.owner, service: c.loser },
        `service port ${c.loser}: ${c.map} element ${c.key} is already used by ${c.owner}; ignored`,
      );
    }
    if (script === '') return;
    try {
      await nft(ctx.runner, script);
    } catch (err) {
      ruleset = undefined;
      throw err;
    }
  };

  return {
    mode: 'nftables',
    family: ctx.family,
    sync: (req: SyncRequest) =>
      queue.run(async () => {
        if (req.changed === undefined || ruleset === undefined) {
          ruleset = undefined;
          let next = new NftRuleset(opts);
          const existing = await listExisting(ctx.runner, nftFamily(ctx.family)).catch((err: unknown) => {
            ctx.log.warn({ err: messageOf(err) }, 'cannot list the nftables table; recreating it');
            return undefined;
          });
          let script = next.renderFull(req.servicePorts, existing);
          try {
            await apply(next, script);
          } catch (err) {
            if (!existing) throw err;
            // The table holds something the in-place rewrite cannot change (say a base chain
            // of another priority, left by another version): recreate it, affinity and all.
            ctx.log.warn({ err: messageOf(err) }, 'in-place full sync failed; recreating the table');
            next = new NftRuleset(opts);
            script = next.renderFull(req.servicePorts);
            await apply(next, script);
          }
          ruleset = next;
          ctx.log.debug({ servicePorts: req.servicePorts.size, bytes: script.length }, 'nftables full sync');
          return;
        }
        const current = ruleset;
        const script = current.renderPartial(req.servicePorts, req.changed);
        await apply(current, script);
        ctx.log.debug({ changed: req.changed.size, bytes: script.length }, 'nftables partial sync');
      }),
    check: async (servicePorts: ServicePortMap) => {
      // A fresh table's transaction: `nft -c` runs it against the kernel and throws it away.
      const script = new NftRuleset(opts).renderFull(servicePorts);
      const args = ['-c', '-f', '-'];
      const res = await ctx.runner('nft', args, script);
      if (res.code !== 0) throw execFailed('nft', args, res);
    },
    rulesIntact: () =>
      queue.run(async () => {
        if (ruleset === undefined) return false;
        // `list chains` reads chain headers only; listing a chain's rules makes nft read every
        // set and map first, elements included, which is slow at 10,000 services.
        const res = await ctx.runner('nft', ['list', 'chains', nftFamily(ctx.family)]);
        if (res.code !== 0) return false;
        const present = chainsOfTable(res.stdout, TABLE_NAME);
        return REQUIRED_CHAINS.every((c) => present.has(c));
      }),
    cleanup: () =>
      queue.run(async () => {
        ruleset = undefined;
        // `add` makes the delete succeed when the table is already gone.
        await nft(ctx.runner, `add table ${table}\ndelete table ${table}\n`);
      }),
    close: async () => {},
  };
}

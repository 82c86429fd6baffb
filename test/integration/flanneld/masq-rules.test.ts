/**
 * Acceptance: flannel's masquerade and forward rules installed, checked, repaired and removed by
 * both implementations in a throwaway namespace, verified with the tools operators use
 * (iptables-save, nft list). Every command runs through `ip netns exec`; the root namespace's
 * rules are compared before and after.
 */
import t, { type Test } from 'tap';
import { silentLogger } from '../../../src/log/index.js';
import {
  IptablesMasqRules,
  NftablesMasqRules,
  desiredIptablesRules,
  desiredNftablesRules,
  type CommandRunner,
  type MasqConfig,
} from '../../../src/flanneld/masq-rules.js';
import { run } from '../../lab/exec.js';
import { cleanupStale, createNetns, deleteNetns, listNetns, netnsName, newRunId } from '../../lab/netns.js';

const CFG: MasqConfig = {
  network: '10.244.0.0/16',
  subnet: '10.244.3.0/24',
  ipv6Network: 'fd00:10:244::/56',
  ipv6Subnet: 'fd00:10:244:3::/64',
  masquerade: true,
  forward: true,
};

/** The root namespace's rules, without iptables-save's timestamp comments. */
async function rootRules(): Promise<string> {
  const parts: string[] = [];
  for (const [cmd, args] of [
    ['iptables-save', []],
    ['ip6tables-save', []],
    ['nft', ['list', 'ruleset']],
  ] as const) {
    const { stdout } = await run(cmd, args);
    parts.push(`## ${cmd}\n${stdout.replace(/^#.*\n/gm, '')}`);
  }
  return parts.join('');
}

const rootBefore = await rootRules();
await cleanupStale();
const ns = netnsName(newRunId(), 'masq');
await createNetns(ns);
t.teardown(async () => {
  await deleteNetns(ns);
});

const env = { ...process.env, LC_ALL: 'C' };
const runner: CommandRunner = (cmd, args, input) =>
  run(cmd, args, { netns: ns, allowFail: true, env, ...(input !== undefined ? { input } : {}) });
const sh = async (cmd: string, ...args: string[]): Promise<string> =>
  (await run(cmd, args, { netns: ns, env })).stdout;

t.test('commands run inside the namespace', async (t) => {
  t.equal((await sh('ip', 'netns', 'identify')).trim(), ns);
});

/** The FLANNEL-related `-A` lines of one table in `<cmd>-save` output, in order. */
async function savedRules(saveCmd: string, table: string): Promise<string[]> {
  const out = await sh(saveCmd, '-t', table);
  return out.split('\n').filter((l) => l.startsWith('-A ') && l.includes('FLANNEL-'));
}

async function expectIptables(t: Test, cfg: MasqConfig | undefined, what: string): Promise<void> {
  const chains = cfg ? desiredIptablesRules(cfg) : [];
  for (const [family, saveCmd] of [
    [4, 'iptables-save'],
    [6, 'ip6tables-save'],
  ] as const) {
    for (const table of ['nat', 'filter'] as const) {
      const c = chains.find((x) => x.family === family && x.table === table);
      t.strictSame(
        await savedRules(saveCmd, table),
        c ? [c.jump, ...c.rules] : [],
        `${what}: ${saveCmd} -t ${table}`,
      );
    }
  }
}

t.test('iptables', async (t) => {
  const rules = new IptablesMasqRules({ runner, logger: silentLogger() });

  await t.test('ensure installs the rules', async (t) => {
    t.strictSame(await rules.ensure(CFG), { repaired: true });
    await expectIptables(t, CFG, 'installed');
    const nat = await sh('iptables', '-t', 'nat', '-S', 'POSTROUTING');
    t.match(nat, /^-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG$/m);
  });

  await t.test('ensure again changes nothing', async (t) => {
    t.strictSame(await rules.ensure(CFG), { repaired: false });
    await expectIptables(t, CFG, 'unchanged');
  });

  await t.test('a rule deleted by hand is repaired', async (t) => {
    await sh('iptables', '-w', '-t', 'nat', '-D', 'FLANNEL-POSTRTG', '3');
    t.equal((await savedRules('iptables-save', 'nat')).length, 6, 'rule gone');
    t.strictSame(await rules.ensure(CFG), { repaired: true });
    await expectIptables(t, CFG, 'repaired');
    t.strictSame(await rules.ensure(CFG), { repaired: false }, 'and then quiet');
  });

  await t.test('other drift is repaired', async (t) => {
    await sh(
      'iptables',
      '-w',
      '-t',
      'filter',
      '-D',
      'FORWARD',
      '-m',
      'comment',
      '--comment',
      'flanneld forward',
      '-j',
      'FLANNEL-FWD',
    );
    t.strictSame(await rules.ensure(CFG), { repaired: true }, 'missing jump');
    await expectIptables(t, CFG, 'jump back');

    await sh(
      'iptables',
      '-w',
      '-t',
      'nat',
      '-A',
      'POSTROUTING',
      '-m',
      'comment',
      '--comment',
      'flanneld masq',
      '-j',
      'FLANNEL-POSTRTG',
    );
    t.strictSame(await rules.ensure(CFG), { repaired: true }, 'duplicate jump');
    await expectIptables(t, CFG, 'one jump');

    await sh(
      'ip6tables',
      '-w',
      '-t',
      'nat',
      '-I',
      'FLANNEL-POSTRTG',
      '1',
      '-s',
      'fd00:10:244::/56',
      '-j',
      'MASQUERADE',
    );
    t.strictSame(await rules.ensure(CFG), { repaired: true }, 'foreign rule at the top of the IPv6 chain');
    await expectIptables(t, CFG, 'IPv6 order');

    await sh('iptables', '-w', '-t', 'nat', '-F', 'FLANNEL-POSTRTG');
    t.strictSame(await rules.ensure(CFG), { repaired: true }, 'flushed chain');
    await expectIptables(t, CFG, 'refilled');

    // Someone else inserting above our jump is not drift: both would otherwise insist on the top.
    await sh('iptables', '-w', '-t', 'nat', '-I', 'POSTROUTING', '1', '-d', '192.0.2.0/24', '-j', 'RETURN');
    t.strictSame(await rules.ensure(CFG), { repaired: false }, 'jump not first is left alone');
    await sh('iptables', '-w', '-t', 'nat', '-D', 'POSTROUTING', '1');
  });

  await t.test('a new lease rewrites the masquerade chain', async (t) => {
    const moved = { ...CFG, subnet: '10.244.9.0/24' };
    t.strictSame(await rules.ensure(moved), { repaired: true });
    await expectIptables(t, moved, 'new lease');
    t.strictSame(await rules.ensure(CFG), { repaired: true });
  });

  await t.test('rules no longer wanted are removed', async (t) => {
    const v4MasqOnly = { ...CFG, ipv6Network: undefined, ipv6Subnet: undefined, forward: false };
    t.strictSame(await rules.ensure(v4MasqOnly), { repaired: true });
    await expectIptables(t, v4MasqOnly, 'v4 masquerade only');
    t.strictSame(await rules.ensure(v4MasqOnly), { repaired: false });
    t.strictSame(await rules.ensure(CFG), { repaired: true });
  });

  await t.test('cleanup removes everything', async (t) => {
    await rules.cleanup();
    await expectIptables(t, undefined, 'cleaned');
    for (const save of ['iptables-save', 'ip6tables-save'])
      t.notMatch(await sh(save), /FLANNEL/, `${save}: no FLANNEL chain`);
    await rules.cleanup();
    t.pass('cleanup twice is fine');
  });
});

async function nftTables(): Promise<string[]> {
  // Sorted: nft lists tables in creation order, and a repair recreates one.
  return (await sh('nft', 'list', 'tables'))
    .split('\n')
    .filter((l) => l.includes('weft-flannel'))
    .sort();
}

async function expectNft(t: Test, cfg: MasqConfig, what: string): Promise<void> {
  const want = desiredNftablesRules(cfg);
  t.strictSame(await nftTables(), want.map((x) => `table ${x.family} ${x.name}`).sort(), `${what}: tables`);
  for (const x of want)
    t.equal(await sh('nft', 'list', 'table', x.family, x.name), x.definition, `${what}: ${x.family}`);
}

async function ruleHandle(family: string, chain: string, match: RegExp): Promise<string> {
  const listing = await sh('nft', '-a', 'list', 'chain', family, 'weft-flannel', chain);
  const line = listing.split('\n').find((l) => match.test(l));
  const handle = line && /# handle (\d+)/.exec(line)?.[1];
  if (!handle) throw new Error(`no rule ${match} in ${family} ${chain}:\n${listing}`);
  return handle;
}

t.test('nftables', async (t) => {
  const rules = new NftablesMasqRules({ runner, logger: silentLogger() });

  await t.test('ensure installs the tables, listed exactly as defined', async (t) => {
    t.strictSame(await rules.ensure(CFG), { repaired: true });
    await expectNft(t, CFG, 'installed');
  });

  await t.test('ensure again changes nothing, also from a fresh instance', async (t) => {
    t.strictSame(await rules.ensure(CFG), { repaired: false });
    const fresh = new NftablesMasqRules({ runner, logger: silentLogger() });
    t.strictSame(await fresh.ensure(CFG), { repaired: false });
  });

  await t.test('a rule deleted by hand is repaired', async (t) => {
    const handle = await ruleHandle('ip', 'postrtg', /daddr != 224\.0\.0\.0\/4 masquerade/);
    await sh('nft', 'delete', 'rule', 'ip', 'weft-flannel', 'postrtg', 'handle', handle);
    t.notMatch(await sh('nft', 'list', 'table', 'ip', 'weft-flannel'), /224\.0\.0\.0/, 'rule gone');
    t.strictSame(await rules.ensure(CFG), { repaired: true });
    await expectNft(t, CFG, 'repaired');
    t.strictSame(await rules.ensure(CFG), { repaired: false }, 'and then quiet');
  });

  await t.test('other drift is repaired', async (t) => {
    const handle = await ruleHandle('ip6', 'forward', /ip6 daddr .* accept/);
    await sh('nft', 'delete', 'rule', 'ip6', 'weft-flannel', 'forward', 'handle', handle);
    t.strictSame(await rules.ensure(CFG), { repaired: true }, 'IPv6 forward rule');
    await expectNft(t, CFG, 'IPv6 forward');

    await sh(
      'nft',
      'insert',
      'rule',
      'ip',
      'weft-flannel',
      'postrtg',
      'ip',
      'saddr',
      '10.0.0.0/8',
      'masquerade',
    );
    t.strictSame(await rules.ensure(CFG), { repaired: true }, 'foreign rule');
    await expectNft(t, CFG, 'foreign rule gone');

    await sh('nft', 'delete', 'table', 'ip', 'weft-flannel');
    t.strictSame(await rules.ensure(CFG), { repaired: true }, 'table deleted');
    await expectNft(t, CFG, 'table back');
  });

  await t.test('rules no longer wanted are removed', async (t) => {
    const v4FwdOnly = { ...CFG, ipv6Network: undefined, ipv6Subnet: undefined, masquerade: false };
    t.strictSame(await rules.ensure(v4FwdOnly), { repaired: true });
    await expectNft(t, v4FwdOnly, 'v4 forward only');
    t.strictSame(await rules.ensure(v4FwdOnly), { repaired: false });
  });

  await t.test('cleanup removes everything', async (t) => {
    t.strictSame(await rules.ensure(CFG), { repaired: true });
    await rules.cleanup();
    t.strictSame(await nftTables(), []);
    await rules.cleanup();
    t.pass('cleanup twice is fine');
  });
});

t.test('the namespace is removed and the root namespace is untouched', async (t) => {
  await deleteNetns(ns);
  t.notOk((await listNetns()).includes(ns), `${ns} removed`);
  t.equal(await rootRules(), rootBefore, 'root iptables, ip6tables and nft rules unchanged');
});

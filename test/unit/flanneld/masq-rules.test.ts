import t from 'tap';
import { ErrorCodes } from '../../../src/errors/index.js';
import { silentLogger } from '../../../src/log/index.js';
import {
  IptablesMasqRules,
  NftablesMasqRules,
  createMasqRules,
  desiredIptablesRules,
  desiredNftablesRules,
  nftablesScript,
  planIptablesRepair,
  renderIptablesRules,
  type CommandResult,
  type CommandRunner,
  type MasqConfig,
} from '../../../src/flanneld/masq-rules.js';

const V4: MasqConfig = { network: '10.244.0.0/16', subnet: '10.244.3.0/24', masquerade: true, forward: true };
const DUAL: MasqConfig = { ...V4, ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:3::/64' };

const IPT_V4 = `# iptables
*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
*filter
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
`;

const IPT_V6 = `# ip6tables
*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244:3::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
*filter
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
`;

const NFT_V4 = `table ip weft-flannel {
	chain postrtg {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return
		ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return
		ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.0.0/16 accept
		ip daddr 10.244.0.0/16 accept
	}
}
`;

const NFT_V6 = `table ip6 weft-flannel {
	chain postrtg {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip6 saddr fd00:10:244:3::/64 ip6 daddr fd00:10:244::/56 return
		ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:3::/64 return
		ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:3::/64 return
		ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random
		ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ip6 saddr fd00:10:244::/56 accept
		ip6 daddr fd00:10:244::/56 accept
	}
}
`;

t.test('iptables golden: IPv4', async (t) => {
  t.equal(renderIptablesRules(desiredIptablesRules(V4)), IPT_V4);
});

t.test('iptables golden: dual stack', async (t) => {
  t.equal(renderIptablesRules(desiredIptablesRules(DUAL)), IPT_V4 + IPT_V6);
});

t.test('iptables golden: masquerade only, forward only, neither', async (t) => {
  const masqOnly = renderIptablesRules(desiredIptablesRules({ ...V4, forward: false }));
  t.equal(masqOnly, IPT_V4.slice(0, IPT_V4.indexOf('*filter')));
  const fwdOnly = renderIptablesRules(desiredIptablesRules({ ...V4, masquerade: false }));
  t.equal(fwdOnly, `# iptables\n${IPT_V4.slice(IPT_V4.indexOf('*filter'))}`);
  t.strictSame(desiredIptablesRules({ ...DUAL, masquerade: false, forward: false }), []);
});

t.test('nftables golden: IPv4 and dual stack', async (t) => {
  t.strictSame(desiredNftablesRules(V4), [{ family: 'ip', name: 'weft-flannel', definition: NFT_V4 }]);
  t.strictSame(
    desiredNftablesRules(DUAL).map((x) => x.definition),
    [NFT_V4, NFT_V6],
  );
  t.equal(
    nftablesScript(desiredNftablesRules(DUAL)),
    'table ip weft-flannel {\n}\ndelete table ip weft-flannel\n' +
      NFT_V4 +
      'table ip6 weft-flannel {\n}\ndelete table ip6 weft-flannel\n' +
      NFT_V6,
  );
  t.equal(
    nftablesScript([], ['ip6']),
    'table ip6 weft-flannel {\n}\ndelete table ip6 weft-flannel\n',
    'removal script is idempotent create+delete',
  );
});

t.test('nftables golden: masquerade only, forward only, neither', async (t) => {
  const [masq] = desiredNftablesRules({ ...V4, forward: false });
  t.equal(masq?.definition, `${NFT_V4.slice(0, NFT_V4.indexOf('\n\n\tchain forward'))}\n}\n`);
  const [fwd] = desiredNftablesRules({ ...V4, masquerade: false });
  t.equal(fwd?.definition, `table ip weft-flannel {\n${NFT_V4.slice(NFT_V4.indexOf('\tchain forward'))}`);
  t.strictSame(desiredNftablesRules({ ...DUAL, masquerade: false, forward: false }), []);
  t.equal(desiredNftablesRules(V4, 'other')[0]?.definition.split('\n')[0], 'table ip other {');
});

t.test('networks are canonicalised and validated', async (t) => {
  const [nat] = desiredIptablesRules({ ...DUAL, ipv6Network: 'FD00:10:244:0:0::/56', forward: false }).slice(
    1,
  );
  t.match(nat?.rules[1], '-d fd00:10:244::/56 ');
  const bad: [Partial<MasqConfig>, string | RegExp][] = [
    [{ network: '10.244.0.0' }, 'masq-config: field network: must be an IPv4 CIDR, got "10.244.0.0"'],
    [
      { subnet: '10.244.3.1/24' },
      'masq-config: field subnet: 10.244.3.1/24 has host bits set (the network is 10.244.3.0/24)',
    ],
    [{ subnet: '10.9.3.0/24' }, 'masq-config: field subnet: 10.9.3.0/24 is not inside 10.244.0.0/16'],
    [{ network: 'fd00::/48', subnet: 'fd00::/64' }, /field network: must be an IPv4 CIDR/],
    [
      { ipv6Network: 'fd00::/48' },
      'masq-config: field ipv6Subnet: ipv6Network and ipv6Subnet must be given together',
    ],
    [
      { ipv6Network: 'fd00::/48', ipv6Subnet: 'fd00:1::/64' },
      /field ipv6Subnet: fd00:1::\/64 is not inside fd00::\/48/,
    ],
  ];
  for (const [patch, message] of bad) {
    t.throws(() => desiredIptablesRules({ ...V4, ...patch }), { code: ErrorCodes.INVALID_ARGUMENT, message });
    t.throws(() => desiredNftablesRules({ ...V4, ...patch }), { code: ErrorCodes.INVALID_ARGUMENT, message });
  }
});

t.test('iptables repair planning', async (t) => {
  const [nat, filter] = desiredIptablesRules(V4);
  if (!nat || !filter) throw new Error('no chains');
  const slot = { chain: 'FLANNEL-POSTRTG', parent: 'POSTROUTING' };
  const other = '-A POSTROUTING -j KUBE-POSTROUTING';
  const insertJump = '-I POSTROUTING 1 -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG';

  t.strictSame(
    planIptablesRepair(slot, nat, { parentRules: [other, nat.jump], chainRules: nat.rules }),
    { lines: [], reasons: [] },
    'in order (jump not first): nothing to do',
  );
  t.strictSame(
    planIptablesRepair(slot, nat, { parentRules: [other], chainRules: undefined }),
    {
      lines: [':FLANNEL-POSTRTG - [0:0]', ...nat.rules, insertJump],
      reasons: ['FLANNEL-POSTRTG missing', 'jump to FLANNEL-POSTRTG missing'],
    },
    'fresh install: chain, rules, jump at the top',
  );
  t.strictSame(
    planIptablesRepair(slot, nat, {
      parentRules: [nat.jump],
      chainRules: nat.rules.filter((_, i) => i !== 2),
    }),
    { lines: [':FLANNEL-POSTRTG - [0:0]', ...nat.rules], reasons: ['FLANNEL-POSTRTG drifted'] },
    'a rule missing: rewrite the chain, keep the jump',
  );
  const swapped = [...nat.rules];
  [swapped[4], swapped[5]] = [swapped[5] as string, swapped[4] as string];
  t.strictSame(
    planIptablesRepair(slot, nat, { parentRules: [nat.jump], chainRules: swapped }).reasons,
    ['FLANNEL-POSTRTG drifted'],
    'out of order: rewrite',
  );
  t.strictSame(
    planIptablesRepair(slot, nat, {
      parentRules: [nat.jump],
      chainRules: [...nat.rules, '-A FLANNEL-POSTRTG -j ACCEPT'],
    }).reasons,
    ['FLANNEL-POSTRTG drifted'],
    'an extra rule: rewrite',
  );
  t.strictSame(
    planIptablesRepair(slot, nat, { parentRules: [nat.jump], chainRules: [] }).reasons,
    ['FLANNEL-POSTRTG drifted'],
    'flushed chain: rewrite',
  );
  const foreign = '-A POSTROUTING -j FLANNEL-POSTRTG';
  t.strictSame(
    planIptablesRepair(slot, nat, {
      parentRules: [nat.jump, other, nat.jump, foreign],
      chainRules: nat.rules,
    }),
    {
      lines: [nat.jump.replace('-A', '-D'), foreign.replace('-A', '-D')],
      reasons: ['duplicate jump to FLANNEL-POSTRTG', `foreign jump: ${foreign}`],
    },
    'duplicate and foreign jumps removed, one kept',
  );
  t.strictSame(
    planIptablesRepair(slot, nat, { parentRules: [foreign], chainRules: nat.rules }).lines,
    [foreign.replace('-A', '-D'), insertJump],
    'a jump in another form is replaced by ours',
  );
  t.strictSame(
    planIptablesRepair(slot, undefined, { parentRules: [other, nat.jump], chainRules: nat.rules }),
    {
      lines: [nat.jump.replace('-A', '-D'), ':FLANNEL-POSTRTG - [0:0]', '-X FLANNEL-POSTRTG'],
      reasons: ['FLANNEL-POSTRTG not wanted'],
    },
    'not wanted: jump, rules and chain removed',
  );
  t.strictSame(
    planIptablesRepair(slot, undefined, { parentRules: [other], chainRules: undefined }),
    { lines: [], reasons: [] },
    'not wanted and absent: nothing to do',
  );
  t.strictSame(
    planIptablesRepair(slot, nat, {
      parentRules: ['-A POSTROUTING -j FLANNEL-POSTRTG-X'],
      chainRules: nat.rules,
    }).lines,
    [insertJump],
    'a jump to a chain with a longer name is not ours',
  );
});

/** A fake iptables for one family: a chain store, `-S`, and restore input replayed on it. */
function fakeIptables() {
  const chains = new Map<string, string[]>([
    ['nat/POSTROUTING', ['-A POSTROUTING -j KUBE-POSTROUTING']],
    ['filter/FORWARD', []],
  ]);
  const calls: string[] = [];
  const runner: CommandRunner = async (cmd, args, input): Promise<CommandResult> => {
    calls.push([cmd, ...args].join(' '));
    if (cmd === 'iptables') {
      const table = args[args.indexOf('-t') + 1] as string;
      const chain = args[args.indexOf('-S') + 1] as string;
      const rules = chains.get(`${table}/${chain}`);
      if (!rules) return { stdout: '', stderr: 'iptables: No chain/target/match by that name.\n', code: 1 };
      return { stdout: [`-N ${chain}`, ...rules].join('\n') + '\n', stderr: '', code: 0 };
    }
    if (cmd === 'iptables-restore') {
      let table = '';
      for (const line of (input ?? '').split('\n')) {
        let m: RegExpExecArray | null;
        if ((m = /^\*(\S+)$/.exec(line))) table = m[1] as string;
        else if ((m = /^:(\S+) /.exec(line))) chains.set(`${table}/${m[1]}`, []);
        else if ((m = /^-X (\S+)$/.exec(line))) chains.delete(`${table}/${m[1]}`);
        else if ((m = /^-A (\S+) /.exec(line))) chains.get(`${table}/${m[1]}`)?.push(line);
        else if ((m = /^-I (\S+) 1 (.*)$/.exec(line)))
          chains.get(`${table}/${m[1]}`)?.unshift(`-A ${m[1]} ${m[2]}`);
        else if ((m = /^-D (\S+) (.*)$/.exec(line))) {
          const list = chains.get(`${table}/${m[1]}`) ?? [];
          const i = list.indexOf(`-A ${m[1]} ${m[2]}`);
          if (i < 0) return { stdout: '', stderr: 'iptables-restore: line 2 failed\n', code: 1 };
          list.splice(i, 1);
        }
      }
      return { stdout: '', stderr: '', code: 0 };
    }
    return { stdout: '', stderr: `${cmd}: not found`, code: 127 };
  };
  return { chains, calls, runner };
}

t.test('IptablesMasqRules against a fake iptables', async (t) => {
  const fake = fakeIptables();
  const rules = new IptablesMasqRules({ runner: fake.runner, logger: silentLogger() });
  const [nat, filter] = desiredIptablesRules(V4);

  t.strictSame(await rules.ensure(V4), { repaired: true }, 'first ensure installs');
  t.strictSame(fake.chains.get('nat/POSTROUTING'), [nat?.jump, '-A POSTROUTING -j KUBE-POSTROUTING']);
  t.strictSame(fake.chains.get('nat/FLANNEL-POSTRTG'), nat?.rules);
  t.strictSame(fake.chains.get('filter/FLANNEL-FWD'), filter?.rules);

  fake.calls.length = 0;
  t.strictSame(await rules.ensure(V4), { repaired: false }, 'second ensure changes nothing');
  t.ok(
    fake.calls.every((c) => c.startsWith('iptables -w -t ') && c.includes(' -S ')),
    'an ensure with nothing to do only lists chains',
  );
  t.equal(fake.calls.length, 4, 'four chains listed');
  t.notOk(
    fake.calls.some((c) => c.startsWith('ip6tables')),
    'IPv6 not probed when never wanted',
  );

  fake.chains.get('nat/FLANNEL-POSTRTG')?.splice(3, 1);
  t.strictSame(await rules.ensure(V4), { repaired: true }, 'deleted rule repaired');
  t.strictSame(fake.chains.get('nat/FLANNEL-POSTRTG'), nat?.rules);

  t.strictSame(
    await rules.ensure({ ...V4, forward: false }),
    { repaired: true },
    'forward rules no longer wanted',
  );
  t.notOk(fake.chains.has('filter/FLANNEL-FWD'));
  t.strictSame(fake.chains.get('filter/FORWARD'), []);

  await rules.cleanup();
  t.notOk(fake.chains.has('nat/FLANNEL-POSTRTG'));
  t.strictSame(fake.chains.get('nat/POSTROUTING'), ['-A POSTROUTING -j KUBE-POSTROUTING']);
  t.ok(
    fake.calls.some((c) => c.startsWith('ip6tables')),
    'cleanup also looks at IPv6',
  );
});

t.test('IptablesMasqRules reports a real failure', async (t) => {
  const runner: CommandRunner = async () => ({
    stdout: '',
    stderr: 'Permission denied (you must be root)',
    code: 4,
  });
  const rules = new IptablesMasqRules({ runner, logger: silentLogger() });
  await t.rejects(rules.ensure(V4), { code: ErrorCodes.EXEC, message: /-S .*exit 4: Permission denied/ });
  await t.rejects(rules.ensure({ ...V4, subnet: 'x' }), { code: ErrorCodes.INVALID_ARGUMENT });
});

/** A fake nft that holds whole tables and, like another nft version might, lists them reformatted. */
function fakeNft(reformat: (text: string) => string = (x) => x) {
  const tables = new Map<string, string>();
  const calls: string[] = [];
  const runner: CommandRunner = async (cmd, args, input) => {
    calls.push([cmd, ...args].join(' '));
    if (args[0] === 'list' && args[1] === 'tables') {
      return { stdout: [...tables.keys()].map((k) => `table ${k}\n`).join(''), stderr: '', code: 0 };
    }
    if (args[0] === 'list' && args[1] === 'table') {
      const text = tables.get(`${args[2]} ${args[3]}`);
      return text === undefined
        ? { stdout: '', stderr: 'Error: No such file or directory', code: 1 }
        : { stdout: reformat(text), stderr: '', code: 0 };
    }
    if (args[0] === '-f') {
      // Apply the script's definitions; `delete table` lines remove.
      const script = input ?? '';
      for (const m of script.matchAll(/^delete table (\S+) (\S+)$/gm)) tables.delete(`${m[1]} ${m[2]}`);
      for (const m of script.matchAll(/^table (\S+) (\S+) \{\n(\t[\s\S]*?)^\}\n/gm)) {
        tables.set(`${m[1]} ${m[2]}`, `table ${m[1]} ${m[2]} {\n${m[3]}}\n`);
      }
      return { stdout: '', stderr: '', code: 0 };
    }
    return { stdout: '', stderr: 'bad call', code: 2 };
  };
  return { tables, calls, runner };
}

t.test('NftablesMasqRules against a fake nft', async (t) => {
  const fake = fakeNft();
  const rules = new NftablesMasqRules({ runner: fake.runner, logger: silentLogger() });
  t.strictSame(await rules.ensure(DUAL), { repaired: true });
  t.equal(fake.tables.get('ip weft-flannel'), NFT_V4);
  t.equal(fake.tables.get('ip6 weft-flannel'), NFT_V6);
  fake.calls.length = 0;
  t.strictSame(await rules.ensure(DUAL), { repaired: false });
  t.ok(
    fake.calls.every((c) => c.startsWith('nft list ')),
    'nothing written',
  );

  // A fresh instance (a restarted daemon) recognises the tables without rewriting them.
  const again = new NftablesMasqRules({ runner: fake.runner, logger: silentLogger() });
  t.strictSame(await again.ensure(DUAL), { repaired: false });

  fake.tables.set('ip weft-flannel', (fake.tables.get('ip weft-flannel') ?? '').replace(/^.*accept\n/m, ''));
  t.strictSame(await rules.ensure(DUAL), { repaired: true }, 'a deleted rule is repaired');
  t.equal(fake.tables.get('ip weft-flannel'), NFT_V4);

  t.strictSame(await rules.ensure(V4), { repaired: true }, 'IPv6 no longer wanted');
  t.notOk(fake.tables.has('ip6 weft-flannel'));

  await rules.cleanup();
  t.equal(fake.tables.size, 0);
  await rules.cleanup();
  t.equal(fake.tables.size, 0, 'cleanup is idempotent');
});

t.test('NftablesMasqRules with an nft that lists differently rewrites once, then is quiet', async (t) => {
  const fake = fakeNft((text) => text.replace(/0x00004000/g, '0x4000'));
  const rules = new NftablesMasqRules({ runner: fake.runner, logger: silentLogger() });
  t.strictSame(await rules.ensure(V4), { repaired: true });
  t.strictSame(await rules.ensure(V4), { repaired: false }, 'the listing seen after writing is accepted');
  t.strictSame(
    await rules.ensure({ ...V4, subnet: '10.244.4.0/24' }),
    { repaired: true },
    'a new lease rewrites',
  );
  t.match(fake.tables.get('ip weft-flannel'), 'ip daddr 10.244.4.0/24 return');
  t.strictSame(await rules.ensure({ ...V4, subnet: '10.244.4.0/24' }), { repaired: false });
});

t.test('createMasqRules picks the implementation', async (t) => {
  t.ok(createMasqRules({ firewall: 'iptables', logger: silentLogger() }) instanceof IptablesMasqRules);
  t.ok(createMasqRules({ firewall: 'nftables', logger: silentLogger() }) instanceof NftablesMasqRules);
});

/**
 * The iptables proxier's command sequence, with a recording runner standing in for the binaries
 * (the namespace test runs the real ones): one restore per sync, partial syncs only after a
 * successful one, jumps inserted only when missing, errors naming the rejected line, cleanup.
 */
import t from 'tap';
import type { CommandResult, CommandRunner } from '../../../src/exec/index.js';
import { createIptablesProxier, JUMP_RULES, jumpRuleText } from '../../../src/proxy/iptables/index.js';
import { goldenContext, goldenServicePorts } from '../../helpers/proxy-fixtures.js';

interface Call {
  cmd: string;
  args: string[];
  input: string | undefined;
}

/** A runner that records calls and answers through `answer` (default: success, no output). */
function recorder(answer: (c: Call) => Partial<CommandResult> | undefined = () => undefined): {
  runner: CommandRunner;
  calls: Call[];
} {
  const calls: Call[] = [];
  const runner: CommandRunner = (cmd, args, input) => {
    const c = { cmd, args: [...args], input };
    calls.push(c);
    if (cmd.endsWith('tables') && args[0] === '--version') {
      return Promise.resolve({ stdout: 'iptables v1.8.9 (nf_tables)\n', stderr: '', code: 0 });
    }
    return Promise.resolve({ stdout: '', stderr: '', code: 0, ...answer(c) });
  };
  return { runner, calls };
}

const ports = goldenServicePorts();

t.test('first sync is full even when asked for a partial one; then partial', async (t) => {
  const { runner, calls } = recorder();
  const p = await createIptablesProxier(goldenContext({ runner }));
  await p.sync({ servicePorts: ports, changed: new Set(['default/web:http']) });
  const restores = calls.filter((c) => c.cmd === 'iptables-restore');
  t.equal(restores.length, 1, 'one restore');
  t.strictSame(restores[0]?.args, ['-w', '--noflush']);
  t.match(restores[0]?.input ?? '', /\*mangle\n:WEFT-PROXY-CANARY/, 'full sync (canary written)');
  t.ok(
    calls.some((c) => c.cmd === 'iptables-save' && c.args.join(' ') === '-t nat'),
    'full sync reads the existing chains',
  );
  // The listings are empty and every -C succeeds (recorder default), so no -I.
  t.equal(calls.filter((c) => c.args.includes('-S')).length, 6, 'each built-in chain listed once');
  t.equal(calls.filter((c) => c.args.includes('-C')).length, JUMP_RULES.length, 'unlisted jumps checked');
  t.equal(calls.filter((c) => c.args.includes('-I')).length, 0, 'present jumps not inserted again');

  calls.length = 0;
  await p.sync({ servicePorts: ports, changed: new Set(['default/web:http']) });
  t.strictSame(
    calls.map((c) => c.cmd),
    ['iptables-restore'],
    'a partial sync is a single restore',
  );
  t.notMatch(calls[0]?.input ?? '', /\*mangle/);
});

t.test('jumps listed by -S are not checked again', async (t) => {
  const { runner, calls } = recorder((c) =>
    c.args.includes('-S')
      ? {
          stdout: `-P ${c.args.at(-1)} ACCEPT\n${JUMP_RULES.filter(
            (j) => j.from === c.args.at(-1) && j.table === c.args[2],
          )
            .map(jumpRuleText)
            .join('\n')}\n`,
        }
      : undefined,
  );
  const p = await createIptablesProxier(goldenContext({ runner }));
  await p.sync({ servicePorts: ports, changed: undefined });
  t.equal(calls.filter((c) => c.args.includes('-C') || c.args.includes('-I')).length, 0);
  t.equal(
    jumpRuleText(JUMP_RULES[0]!),
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "weft externally-visible service portals" -j WEFT-EXTERNAL-SERVICES',
  );
});

t.test('missing jumps are inserted at the head of their chain', async (t) => {
  const { runner, calls } = recorder((c) =>
    c.args.includes('-C') ? { code: 1, stderr: 'Bad rule' } : undefined,
  );
  const p = await createIptablesProxier(goldenContext({ runner }));
  await p.sync({ servicePorts: ports, changed: undefined });
  const inserts = calls.filter((c) => c.args.includes('-I'));
  t.equal(inserts.length, JUMP_RULES.length);
  t.strictSame(inserts.at(-1)?.args, [
    '-w',
    '-t',
    'nat',
    '-I',
    'POSTROUTING',
    '1',
    '-m',
    'comment',
    '--comment',
    'weft postrouting rules',
    '-j',
    'WEFT-POSTROUTING',
  ]);
});

t.test('a failed restore names the line and forces the next sync to be full', async (t) => {
  let fail = true;
  const { runner, calls } = recorder((c) =>
    c.cmd === 'iptables-restore' && fail
      ? { code: 2, stderr: 'iptables-restore: line 3 failed\n' }
      : undefined,
  );
  const p = await createIptablesProxier(goldenContext({ runner }));
  await t.rejects(p.sync({ servicePorts: ports, changed: undefined }), {
    code: 'WEFT_EXEC',
    message: /line 3 failed.*input line 3: :WEFT-NODEPORTS - \[0:0\]/s,
  });
  fail = false;
  calls.length = 0;
  await p.sync({ servicePorts: ports, changed: new Set(['default/web:http']) });
  t.match(
    calls.find((c) => c.cmd === 'iptables-restore')?.input ?? '',
    /\*mangle/,
    'full sync after a failure',
  );
});

t.test('family 6 uses the ip6tables programs', async (t) => {
  const { runner, calls } = recorder();
  const p = await createIptablesProxier(goldenContext({ runner, family: 6 }));
  await p.sync({ servicePorts: new Map(), changed: undefined });
  t.ok(calls.some((c) => c.cmd === 'ip6tables-restore'));
  t.ok(calls.some((c) => c.cmd === 'ip6tables-save'));
  t.notOk(calls.some((c) => c.cmd === 'iptables-restore'));
  t.match(calls.find((c) => c.cmd === 'ip6tables-restore')?.input ?? '', /! -d ::1\/128 -j WEFT-NODEPORTS/);
});

t.test('rulesIntact checks the mangle canary', async (t) => {
  let present = true;
  const { runner, calls } = recorder((c) => (c.args.includes('-S') && !present ? { code: 1 } : undefined));
  const p = await createIptablesProxier(goldenContext({ runner }));
  t.equal(await p.rulesIntact(), true);
  t.strictSame(calls.at(-1)?.args, ['-w', '-t', 'mangle', '-S', 'WEFT-PROXY-CANARY']);
  present = false;
  t.equal(await p.rulesIntact(), false);
});

t.test('cleanup deletes our jumps and chains only', async (t) => {
  const saves: Record<string, string> = {
    nat: [
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':POSTROUTING ACCEPT [0:0]',
      ':WEFT-SERVICES - [0:0]',
      ':WEFT-SEP-ABCDEFGHIJKLMNOP - [0:0]',
      ':KUBE-SERVICES - [0:0]',
      '-A PREROUTING -m comment --comment "weft service portals" -j WEFT-SERVICES',
      '-A PREROUTING -j KUBE-SERVICES',
      '-A WEFT-SERVICES -j WEFT-SEP-ABCDEFGHIJKLMNOP',
      'COMMIT',
    ].join('\n'),
    filter: '*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n',
    mangle: '*mangle\n:WEFT-PROXY-CANARY - [0:0]\nCOMMIT\n',
  };
  const { runner, calls } = recorder((c) =>
    c.cmd === 'iptables-save' ? { stdout: saves[c.args[1] ?? ''] ?? '' } : undefined,
  );
  const p = await createIptablesProxier(goldenContext({ runner }));
  await p.cleanup();
  const input = calls.find((c) => c.cmd === 'iptables-restore')?.input;
  t.equal(
    input,
    [
      '*nat',
      '-D PREROUTING -m comment --comment "weft service portals" -j WEFT-SERVICES',
      ':WEFT-SERVICES - [0:0]',
      ':WEFT-SEP-ABCDEFGHIJKLMNOP - [0:0]',
      '-X WEFT-SERVICES',
      '-X WEFT-SEP-ABCDEFGHIJKLMNOP',
      'COMMIT',
      '*mangle',
      ':WEFT-PROXY-CANARY - [0:0]',
      '-X WEFT-PROXY-CANARY',
      'COMMIT',
      '',
    ].join('\n'),
  );
  // Nothing of ours left: no restore at all.
  for (const k of Object.keys(saves)) saves[k] = `*${k}\nCOMMIT\n`;
  calls.length = 0;
  await p.cleanup();
  t.notOk(calls.some((c) => c.cmd === 'iptables-restore'));
  await p.close();
});

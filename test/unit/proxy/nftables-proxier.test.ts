/**
 * The nftables proxier's bookkeeping, with a runner that records what would reach nft (the
 * kernel side is test/integration/proxy-nftables.test.ts): full then partial syncs, a failed
 * transaction forcing the next sync to be full, the canary, cleanup.
 */
import t from 'tap';
import type { CommandResult, CommandRunner } from '../../../src/exec/index.js';
import { isWeftError } from '../../../src/errors/index.js';
import { createNftablesProxier } from '../../../src/proxy/nftables/index.js';
import { goldenContext, goldenServicePorts } from '../../helpers/proxy-fixtures.js';

interface Call {
  args: readonly string[];
  input: string | undefined;
}

function recorder(answer: (c: Call) => Partial<CommandResult> = () => ({})) {
  const calls: Call[] = [];
  const runner: CommandRunner = async (cmd, args, input) => {
    if (cmd !== 'nft') throw new Error(`unexpected ${cmd}`);
    const call = { args, input };
    calls.push(call);
    return { stdout: '', stderr: '', code: 0, ...answer(call) };
  };
  return { calls, runner };
}

const CHAINS = [
  'nat-prerouting',
  'nat-output',
  'nat-postrouting',
  'filter-prerouting-pre-dnat',
  'filter-output-pre-dnat',
  'filter-input',
  'filter-forward',
  'filter-output',
  'services',
  'masquerading',
  'mark-for-masquerade',
  'reject-chain',
];
const listing = (chains: string[]) =>
  `table ip weft {\n${chains.map((c) => `\tchain ${c} {\n\t}\n`).join('')}}\n`;

t.test('full, partial, failure, canary, cleanup', async (t) => {
  let fail = false;
  let chains = CHAINS;
  const { calls, runner } = recorder((c) =>
    c.args[0] === 'list' || c.args[0] === '-t'
      ? { stdout: c.args.includes('chains') ? listing(chains) : '' }
      : fail
        ? { code: 1, stderr: '/dev/stdin:3:1-5: Error: Could not process rule: No such file or directory' }
        : {},
  );
  const p = await createNftablesProxier(goldenContext({ runner }));
  t.equal(await p.rulesIntact(), false, 'not intact before any sync');
  t.equal(calls.length, 0, 'and nft not even asked');
  chains = [];

  const ports = goldenServicePorts();
  await p.sync({ servicePorts: ports, changed: undefined });
  chains = CHAINS;
  t.strictSame(calls.at(-1)?.args, ['-f', '-']);
  t.match(calls.at(-1)?.input, /^add table ip weft\ndelete table ip weft\n/, 'no table yet: created');
  t.strictSame(
    calls.slice(0, 3).map((c) => c.args.join(' ')),
    ['list chains ip', '-t list sets ip', '-t list maps ip'],
    'after listing what exists',
  );
  t.equal(await p.rulesIntact(), true);
  t.strictSame(calls.at(-1)?.args, ['list', 'chains', 'ip']);
  chains = CHAINS.filter((c) => c !== 'nat-output');
  t.equal(await p.rulesIntact(), false, 'a missing base chain is noticed');
  chains = CHAINS;

  const n = calls.length;
  await p.sync({ servicePorts: ports, changed: new Set(['default/web:http']) });
  t.equal(calls.length, n, 'nothing changed: nft not called');

  const web = ports.get('default/web:http');
  if (!web) throw new Error('no web');
  const after = new Map(ports).set(web.id, { ...web, endpoints: web.endpoints.slice(1) });
  fail = true;
  const err = await p.sync({ servicePorts: after, changed: new Set([web.id]) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(isWeftError(err, 'WEFT_EXEC'), 'WeftError EXEC');
  t.match((err as Error).message, /No such file or directory/, "with nft's stderr");
  t.notMatch((err as Error).message, /add element/, 'but not the whole script');
  t.equal(await p.rulesIntact(), false, 'the engine is told to resync');
  fail = false;
  await p.sync({ servicePorts: after, changed: new Set([web.id]) });
  t.match(
    calls.at(-1)?.input,
    /^add table ip weft .*\nflush table ip weft\n/,
    'the next sync is full, whatever was asked',
  );
  await p.sync({ servicePorts: ports, changed: new Set([web.id]) });
  t.notMatch(calls.at(-1)?.input, /^add table/, 'and then partial again');

  await p.cleanup();
  t.equal(calls.at(-1)?.input, 'add table ip weft\ndelete table ip weft\n');
  t.equal(await p.rulesIntact(), false);
  await p.close();
});

t.test('an in-place full sync that fails falls back to recreating the table', async (t) => {
  let attempts = 0;
  const { calls, runner } = recorder((c) => {
    if (c.args[0] === 'list' || c.args[0] === '-t') return { stdout: listing(CHAINS) };
    attempts++;
    return /flush table/.test(c.input ?? '')
      ? { code: 1, stderr: 'Error: Could not process rule: File exists' }
      : {};
  });
  const p = await createNftablesProxier(goldenContext({ runner }));
  await p.sync({ servicePorts: goldenServicePorts(), changed: undefined });
  t.equal(attempts, 2);
  t.match(calls.at(-1)?.input, /^add table ip weft\ndelete table ip weft\n/);
  t.equal(await p.rulesIntact(), true);
});

t.test('bad context is refused with the flag named', async (t) => {
  const { runner } = recorder();
  await t.rejects(
    createNftablesProxier(goldenContext({ runner, clusterCidr: '10.244.0.0' })),
    /cluster-cidr/,
  );
  await t.rejects(
    createNftablesProxier(goldenContext({ runner, nodePortAddresses: ['x/8'] })),
    /nodeport-addresses/,
  );
});

t.test('IPv6 uses table ip6 weft', async (t) => {
  const { calls, runner } = recorder();
  const p = await createNftablesProxier(
    goldenContext({ runner, family: 6, clusterCidr: 'fd00:10:244::/48' }),
  );
  await p.sync({ servicePorts: new Map(), changed: undefined });
  t.match(calls.at(-1)?.input, /^add table ip6 weft\n/);
  await p.cleanup();
  t.equal(calls.at(-1)?.input, 'add table ip6 weft\ndelete table ip6 weft\n');
});

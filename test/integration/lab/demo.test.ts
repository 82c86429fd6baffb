/**
 * `make demo`'s exit codes and signal handling, without running its whole story (that is
 * `make demo` itself): a bad option exits 2 before creating anything; a demo interrupted once
 * its lab is up exits 130 after tearing down, and so does one interrupted twice (the forced
 * path); neither leaves a namespace, process or temp dir of its run behind.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { listNetns, pidsMentioning, processAlive, runDir, waitFor } from '../../lab/index.js';

t.setTimeout(180_000);

/** The type of a subtest's `t`. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const DEMO = fileURLToPath(new URL('../../../scripts/demo.ts', import.meta.url));

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  runId: string;
  output: string;
  /** Whether the interrupt was sent (the trigger line was seen). */
  interrupted: boolean;
}

/**
 * Runs the demo from source (with this test's loader) and sends it SIGINT `signals` times once a
 * line matching `when` appears, `gapMs` apart.
 */
async function runDemo(
  args: string[],
  opts: { when?: RegExp; signals?: number; gapMs?: number } = {},
): Promise<DemoRun> {
  const child = spawn(process.execPath, [...process.execArgv, DEMO, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let runId = '';
  let interrupted = false;
  child.stderr.on('data', (b: Buffer) => (output += b.toString()));
  createInterface({ input: child.stdout }).on('line', (line) => {
    output += `${line}\n`;
    runId ||= /Run id (wt-[\w-]+):/.exec(line)?.[1] ?? '';
    if (!interrupted && opts.when?.test(line)) {
      interrupted = true;
      for (let i = 0; i < (opts.signals ?? 1); i++) {
        setTimeout(() => child.kill('SIGINT'), i * (opts.gapMs ?? 300));
      }
    }
  });
  // A demo that hangs must not hang the test: it gets two minutes, then SIGKILL.
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('exit', (c, s) => resolve([c, s])),
  );
  clearTimeout(timer);
  return { code, signal, runId, output, interrupted };
}

/** Nothing of `runId` may be left: namespaces, temp dir, processes. */
async function assertNothingLeft(t: Test, runId: string): Promise<void> {
  t.ok(runId.startsWith('wt-'), `the demo printed its run id (${runId})`);
  t.same(
    (await listNetns()).filter((n) => n.startsWith(`${runId}-`)),
    [],
    `no namespace of ${runId} is left`,
  );
  t.notOk(existsSync(runDir(runId)), `${runDir(runId)} is gone`);
  // Killed processes can take a moment to be reaped.
  const left = await waitFor(() => pidsMentioning(runId).filter(processAlive).length === 0, {
    what: `the processes of ${runId} to be gone`,
    timeoutMs: 5_000,
    intervalMs: 100,
  }).catch(() => false);
  t.ok(left, `no process mentions ${runId}: ${pidsMentioning(runId).join(', ')}`);
}

t.test('a bad option exits 2 and creates nothing', async (t) => {
  const r = await runDemo(['--nodes', '1']);
  t.equal(r.code, 2, 'exit code 2');
  t.match(r.output, /--nodes must be an integer of at least 2/, 'the error names the option');
  t.equal(r.runId, '', 'no run was started');
});

t.test('interrupted once its lab is up: tears down, exits 130', async (t) => {
  const r = await runDemo([], { when: /^\[2\/7\]/ });
  t.ok(r.interrupted, 'the demo reached step 2 and was sent SIGINT', { output: r.output });
  t.equal(r.code, 130, 'exit code 130', { output: r.output });
  t.match(
    r.output,
    /\[2\/7\] weft-flanneld, weft-proxy \(nftables mode\) and weft-controller on every node/,
    'step 2 starts the controllers beside the other daemons',
  );
  t.match(r.output, /SIGINT: stopping after the current step/, 'it says what it does');
  t.match(r.output, /\[7\/7\] Tear-down/, 'it ran the tear-down step');
  t.match(r.output, /demo interrupted .*everything it created is gone/, 'and says so at the end');
  t.notMatch(r.output, /\[3\/7\]/, 'it did not go on to the next step');
  await assertNothingLeft(t, r.runId);
});

t.test('interrupted twice: the forced path also leaves nothing, exits 130', async (t) => {
  const r = await runDemo([], { when: /^\[2\/7\]/, signals: 2, gapMs: 500 });
  t.ok(r.interrupted, 'the demo reached step 2 and was sent SIGINT twice', { output: r.output });
  t.equal(r.code, 130, 'exit code 130', { output: r.output });
  t.match(r.output, /SIGINT again: deleting the namespaces/, 'it took the forced path');
  await assertNothingLeft(t, r.runId);
});

/**
 * The executable as a runtime sees it: main.ts as a process, from a private build of just the
 * plugin (test/lab/build-plugin.ts), and the bin/weft-cni shim's own logic against a stand-in
 * dist/, so neither depends on the shared dist/ being built or fresh.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { run, type RunResult } from '../../lab/exec.js';
import { REPO_ROOT, buildPlugin } from '../../lab/build-plugin.js';

const SHIM = join(REPO_ROOT, 'bin/weft-cni');
const buildDir = mkdtempSync(join(tmpdir(), 'weft-cni-build-'));
t.teardown(() => rmSync(buildDir, { recursive: true, force: true }));
const MAIN = buildPlugin(buildDir);

function plugin(env: Record<string, string>, stdin: string): Promise<RunResult> {
  return run(process.execPath, [MAIN], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    input: stdin,
    allowFail: true,
    timeoutMs: 30_000,
  });
}

t.test('VERSION: JSON on stdout, exit 0', async (t) => {
  const r = await plugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
  t.equal(r.code, 0, r.stderr);
  t.strictSame(JSON.parse(r.stdout), {
    cniVersion: '0.4.0',
    supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'],
  });
});

t.test('an error: CNI error JSON on stdout, non-zero exit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-main-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await plugin(
    {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c1',
      CNI_NETNS: '/run/netns/none',
      CNI_IFNAME: 'eth0',
      CNI_PATH: dir,
    },
    JSON.stringify({
      cniVersion: '0.4.0',
      name: 'weft',
      type: 'weft-cni',
      subnetFile: join(dir, 'subnet.env'),
      dataDir: join(dir, 'data'),
    }),
  );
  t.not(r.code, 0);
  const e = JSON.parse(r.stdout);
  t.equal(e.code, 11);
  t.equal(e.cniVersion, '0.4.0');
  t.match(e.msg, `subnetFile ${join(dir, 'subnet.env')} does not exist`);

  const noCommand = await plugin({}, '');
  t.not(noCommand.code, 0);
  t.equal(JSON.parse(noCommand.stdout).code, 4);
  t.match(noCommand.stderr, /weft-cni/);
});

t.test('bin/weft-cni runs dist/src/cni/main.js next to its real location', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-shim-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A stand-in checkout: bin/weft-cni (the real shim) and a dist/ whose main.js echoes its inputs.
  mkdirSync(join(dir, 'repo/bin'), { recursive: true });
  mkdirSync(join(dir, 'repo/dist/src/cni'), { recursive: true });
  mkdirSync(join(dir, 'cni-bin'));
  copyFileSync(SHIM, join(dir, 'repo/bin/weft-cni'));
  writeFileSync(
    join(dir, 'repo/dist/src/cni/main.js'),
    `let stdin = '';
process.stdin.on('data', (b) => (stdin += b));
process.stdin.on('end', () => {
  console.log(JSON.stringify({ argv: process.argv.slice(2), stdin, command: process.env.CNI_COMMAND }));
  process.exitCode = 3;
});
`,
  );
  // Runtimes find the plugin by its type in a CNI_PATH directory; there it is a symlink.
  symlinkSync(join(dir, 'repo/bin/weft-cni'), join(dir, 'cni-bin/weft-cni'));
  const r = await run(join(dir, 'cni-bin/weft-cni'), ['a b', 'c'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'ADD' },
    input: '{"x":1}',
    allowFail: true,
  });
  t.equal(r.code, 3, "the plugin's exit status");
  t.strictSame(JSON.parse(r.stdout), { argv: ['a b', 'c'], stdin: '{"x":1}', command: 'ADD' });
});

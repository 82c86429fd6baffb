/**
 * Delegation for real, with shell scripts standing in for bridge: which file is run, what it
 * receives on stdin and in its environment, and how its failures come back.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { CniError, execDelegate, findPlugin, type DelegateConfig } from '../../../src/cni/index.js';

const CONFIG: DelegateConfig = {
  cniVersion: '1.0.0',
  name: 'weft',
  type: 'fake',
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.7.0/24' }]] },
};

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-invoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function script(path: string, body: string, mode = 0o755): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, mode);
}

async function expectError(
  t: Test,
  p: Promise<unknown>,
  code: number,
  msg: RegExp,
): Promise<CniError | undefined> {
  try {
    await p;
    t.fail('no error');
    return undefined;
  } catch (err) {
    t.ok(err instanceof CniError, 'a CniError');
    t.equal((err as CniError).code, code, `code ${code}`);
    t.match((err as CniError).message, msg);
    return err as CniError;
  }
}

t.test('the delegate gets the config on stdin and the environment, CNI_COMMAND set', async (t) => {
  const dir = tempDir(t);
  const bin = join(dir, 'bin');
  script(
    join(bin, 'fake'),
    `cat > "${dir}/stdin"
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $EXTRA" > "${dir}/env"
echo warning >&2
echo '{"cniVersion":"1.0.0","ips":[]}'`,
  );
  const out = await execDelegate({
    command: 'DEL',
    config: CONFIG,
    env: { PATH: '/usr/bin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0', EXTRA: 'x' },
    path: [join(dir, 'missing'), bin],
  });
  t.strictSame(out, { stdout: '{"cniVersion":"1.0.0","ips":[]}\n', stderr: 'warning\n' });
  t.equal(readFileSync(join(dir, 'stdin'), 'utf8'), JSON.stringify(CONFIG));
  t.equal(readFileSync(join(dir, 'env'), 'utf8'), 'DEL c1 eth0 x\n', 'the call names its own command');
});

t.test('lookup: the first CNI_PATH directory with an executable file wins', async (t) => {
  const dir = tempDir(t);
  script(join(dir, 'a', 'fake'), 'exit 0', 0o644);
  mkdirSync(join(dir, 'b', 'fake'), { recursive: true });
  script(join(dir, 'c', 'fake'), 'exit 0');
  script(join(dir, 'd', 'fake'), 'exit 0');
  const path = ['a', 'b', 'c', 'd'].map((d) => join(dir, d));
  t.equal(await findPlugin('fake', path), join(dir, 'c', 'fake'));
  t.equal(await findPlugin('other', path), undefined);
});

t.test('a delegate not in CNI_PATH is code 101', async (t) => {
  const dir = tempDir(t);
  await expectError(
    t,
    execDelegate({ command: 'ADD', config: CONFIG, env: {}, path: [dir] }),
    101,
    /delegate plugin "fake" not found in CNI_PATH/,
  );
});

t.test('a type that is a path is refused before any lookup', async (t) => {
  const dir = tempDir(t);
  script(join(dir, 'evil'), 'exit 0');
  await expectError(
    t,
    execDelegate({
      command: 'ADD',
      config: { ...CONFIG, type: '../evil' },
      env: {},
      path: [join(dir, 'bin')],
    }),
    7,
    /field type: "..\/evil" is not a plugin name/,
  );
});

t.test("the delegate's CNI error is passed through with its code and details", async (t) => {
  const dir = tempDir(t);
  script(
    join(dir, 'fake'),
    `echo '{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate for range 0","details":"no IP addresses available"}'
exit 1`,
  );
  const err = await expectError(
    t,
    execDelegate({ command: 'ADD', config: CONFIG, env: {}, path: [dir] }),
    11,
    /^fake: failed to allocate for range 0$/,
  );
  t.equal(err?.details, 'no IP addresses available');
});

t.test('a delegate failing without a CNI error is code 100 with its stderr', async (t) => {
  const dir = tempDir(t);
  script(join(dir, 'fake'), 'echo "panic: runtime error" >&2\nexit 2');
  const err = await expectError(
    t,
    execDelegate({ command: 'CHECK', config: CONFIG, env: {}, path: [dir] }),
    100,
    /^delegate fake CHECK failed: exit 2$/,
  );
  t.equal(err?.details, 'panic: runtime error');
});

t.test('a delegate that does not read stdin is no error by itself', async (t) => {
  const dir = tempDir(t);
  script(join(dir, 'fake'), 'exec echo "{}"');
  const big: DelegateConfig = { ...CONFIG, padding: 'x'.repeat(1 << 20) };
  const out = await execDelegate({ command: 'ADD', config: big, env: {}, path: [dir] });
  t.equal(out.stdout, '{}\n');
});

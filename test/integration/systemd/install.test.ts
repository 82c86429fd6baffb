/**
 * `make install DESTDIR=<tmp>`: the layout under the staging root, the installed commands running
 * from it (their code, production dependencies and the native addon all found inside it), the
 * installed units passing `systemd-analyze verify`, an operator's environment file surviving a
 * reinstall, PREFIX reaching the units, and nothing written outside DESTDIR.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, UNITS, isClean, unitCopies, verifyUnits } from '../../unit/systemd/unit-file.js';

t.setTimeout(900_000);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolve) => {
    // tap's hooks ride on NODE_OPTIONS; the installed commands must start as they would on a node.
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    execFile(
      cmd,
      args,
      { cwd: opts.cwd ?? REPO_ROOT, env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const COMMANDS = ['weft-flanneld', 'weft-proxy', 'weft-controller', 'weftctl', 'weft-cni'];
/** What a real install would write; none of it may appear because of a DESTDIR install. */
const REAL_PATHS = [
  '/usr/local/lib/weft',
  ...COMMANDS.map((c) => `/usr/local/bin/${c}`),
  '/opt/cni/bin/weft-cni',
  ...UNITS.map((u) => `/etc/systemd/system/${u}.service`),
  ...UNITS.map((u) => `/etc/default/${u}`),
];
const realBefore = new Map(REAL_PATHS.map((p) => [p, existsSync(p) ? lstatSync(p).mtimeMs : undefined]));

const root = mkdtempSync(join(tmpdir(), 'weft-destdir-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const lib = join(root, 'usr/local/lib/weft');
const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string })
  .version;

const install = await run('make', ['--no-print-directory', 'install', `DESTDIR=${root}`], {
  timeoutMs: 600_000,
});
t.equal(install.code, 0, 'make install succeeds', { stdout: install.stdout, stderr: install.stderr });

t.test('layout under DESTDIR', async (t) => {
  for (const c of COMMANDS) {
    const link = join(root, 'usr/local/bin', c);
    t.ok(lstatSync(link).isSymbolicLink(), `${c}: a symlink`);
    // Relative, so the staged tree works where it is and once copied to /.
    t.notOk(readlinkSync(link).startsWith('/'), `${c}: relative link`);
    t.equal(realpathSync(link), join(lib, 'bin', c), `${c}: into the library`);
  }
  t.equal(realpathSync(join(root, 'opt/cni/bin/weft-cni')), join(lib, 'bin/weft-cni'), 'CNI plugin linked');
  t.ok(existsSync(join(lib, 'dist/src/flanneld/main.js')), 'compiled code');
  t.ok(existsSync(join(lib, 'native/build/Release/weft_native.node')), 'native addon');
  t.ok(existsSync(join(lib, 'package.json')), 'package.json (the version)');
  for (const dep of ['etcd3', 'ioredis', 'netlink', 'pino', 'zod', '@grpc/grpc-js'])
    t.ok(existsSync(join(lib, 'node_modules', dep, 'package.json')), `production dependency ${dep}`);
  for (const dev of ['tap', 'typescript', 'eslint', 'prettier', 'typescript-eslint'])
    t.notOk(existsSync(join(lib, 'node_modules', dev)), `no development dependency ${dev}`);
  for (const u of UNITS) {
    const unit = readFileSync(join(root, 'etc/systemd/system', `${u}.service`), 'utf8');
    t.equal(
      unit,
      readFileSync(join(REPO_ROOT, 'systemd', `${u}.service`), 'utf8'),
      `${u}.service as shipped`,
    );
    const env = join(root, 'etc/default', u);
    t.equal(
      readFileSync(env, 'utf8'),
      readFileSync(join(REPO_ROOT, 'systemd/default', u), 'utf8'),
      `${u} env`,
    );
    // It may hold the etcd password.
    t.equal(statSync(env).mode & 0o777, 0o600, `${u} env is 0600`);
  }
});

t.test('the installed commands run from the install tree', async (t) => {
  for (const c of ['weftctl', 'weft-flanneld', 'weft-proxy', 'weft-controller']) {
    const r = await run(join(root, 'usr/local/bin', c), ['--version'], { cwd: '/' });
    t.equal(r.code, 0, `${c} --version exits 0`, { stderr: r.stderr });
    t.equal(r.stdout.trim(), `${c} ${version}`, `${c} prints its version`);
  }
  const cni = await run(
    'sh',
    ['-c', `CNI_COMMAND=VERSION ${join(root, 'opt/cni/bin/weft-cni')} </dev/null`],
    {
      cwd: '/',
    },
  );
  t.equal(cni.code, 0, 'weft-cni VERSION from CNI_BIN_DIR', { stderr: cni.stderr });
  t.match(JSON.parse(cni.stdout), { supportedVersions: Array });
  // The daemons import their registry clients at start, so --version above already loaded the
  // installed node_modules; the addon is loaded lazily, so load it explicitly from the tree.
  const script =
    `const m = await import(${JSON.stringify(join(lib, 'dist/src/native/index.js'))});` +
    'const r = m.loadNative(); console.log(r.path ?? "none: " + r.reason);';
  const addon = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: '/' });
  t.equal(addon.stdout.trim(), join(lib, 'native/build/Release/weft_native.node'), 'addon found in the tree');
});

t.test('systemd-analyze verify passes for the installed units', async (t) => {
  // ExecStart names /usr/local/bin, which verify resolves on this machine: point it at DESTDIR.
  const { dir, paths } = unitCopies(join(root, 'usr/local/bin'), { from: join(root, 'etc/systemd/system') });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await verifyUnits(paths);
  t.same(r, { code: 0, output: '' });
  // And a unit whose command was not installed fails it.
  rmSync(join(root, 'usr/local/bin/weft-proxy'));
  const missing = await verifyUnits(paths);
  t.notOk(isClean(missing), 'fails once weft-proxy is gone');
  t.match(missing.output, /weft-proxy/);
});

t.test('a second install keeps the environment files and follows PREFIX', async (t) => {
  const env = join(root, 'etc/default/weft-flanneld');
  writeFileSync(env, 'FLANNELD_IFACE=eth1\n');
  // Without rebuilding (-o build): the build was checked by the first install, and this case is
  // about the copy step only.
  const again = await run(
    'make',
    ['--no-print-directory', '-o', 'build', 'install', `DESTDIR=${root}`, 'PREFIX=/opt/weft'],
    { timeoutMs: 300_000 },
  );
  t.equal(again.code, 0, 'second install succeeds', { stderr: again.stderr });
  t.equal(readFileSync(env, 'utf8'), 'FLANNELD_IFACE=eth1\n', "the operator's file is kept");
  t.match(again.stdout, `kept ${env}`, 'and the install says so');
  for (const u of UNITS) {
    const unit = readFileSync(join(root, 'etc/systemd/system', `${u}.service`), 'utf8');
    t.match(unit, `\nExecStart=/opt/weft/bin/${u} $DAEMON_ARGS\n`, `${u}: ExecStart under PREFIX`);
  }
  const r = await run(join(root, 'opt/weft/bin/weft-flanneld'), ['--version'], { cwd: '/' });
  t.equal(r.stdout.trim(), `weft-flanneld ${version}`, 'the PREFIX tree runs', { stderr: r.stderr });
});

t.test('nothing was written outside DESTDIR', async (t) => {
  for (const p of REAL_PATHS) {
    const now = existsSync(p) ? lstatSync(p).mtimeMs : undefined;
    t.equal(now, realBefore.get(p), `${p} unchanged`);
  }
});

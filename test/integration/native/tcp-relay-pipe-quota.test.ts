/**
 * The TCP relay under the per-user pipe quota, as on a busy node: a process of an unprivileged
 * user that holds more than pipe-user-pages-soft pages of pipes (16384 by default: about 1,024
 * pipes) gets 8 KiB pipes from then on. The relay must size its pipes itself and cope with what
 * it gets; it used to assume 64 KiB and reset connections. The quota is the kernel's own, reached
 * by a child running as `nobody` that opens FIFOs: no sysctl is changed.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { run } from '../../lab/exec.js';
import { loadNative } from '../../../src/native/index.js';

const loaded = loadNative();
if (!loaded.addon) throw new Error(`the native addon must be built: ${loaded.reason}`);
const addonPath = loaded.path;

// Runs as nobody: fills the quota, then relays 2 MiB in request-sized writes to a reader that
// pauses, and prints how the connection ended.
const CHILD = `
import { openSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, connect } from 'node:net';
const [addonPath, dir, count] = process.argv.slice(2);
const held = [];
for (let i = 0; i < Number(count); i++) held.push(openSync(dir + '/f' + i, constants.O_RDWR | constants.O_NONBLOCK));
const { Relay } = createRequire(import.meta.url)(addonPath);
const ends = [];
const relay = new Relay((evs) => ends.push(...evs));
const total = 2 * 1024 * 1024;
const data = Buffer.alloc(total);
for (let i = 0; i < total; i++) data[i] = (i * 7919) >> 5;
const received = [];
const path = dir + '/slow.sock';
const closed = new Promise((resolve) => {
  const slow = createServer((s) => {
    s.on('data', (d) => received.push(d));
    s.on('end', () => s.end());
    s.on('close', () => { slow.close(); resolve(); });
    s.on('error', () => {});
    s.pause();
    let timer;
    const start = setTimeout(() => {
      timer = setInterval(() => { s.resume(); setTimeout(() => s.pause(), 3); }, 30);
    }, 150);
    s.on('close', () => { clearTimeout(start); clearInterval(timer); });
  });
  slow.listen(path);
});
const front = createServer({ pauseOnConnect: true }, (client) => {
  const up = connect(path);
  up.on('connect', () => {
    up.pause();
    relay.addTcp(1, client._handle.fd, up._handle.fd, 0);
    client.destroy();
    up.destroy();
  });
});
await new Promise((r) => front.listen(0, '127.0.0.1', r));
const c = connect(front.address().port, '127.0.0.1');
c.on('error', () => {});
await new Promise((r) => c.on('connect', r));
for (let off = 0; off < total && !c.destroyed; off += 16000) {
  if (!c.write(data.subarray(off, Math.min(total, off + 16000)))) await new Promise((r) => (c.once('drain', r), c.once('close', r)));
  await new Promise((r) => setTimeout(r, 1));
}
c.end();
c.resume();
await closed;
for (let i = 0; i < 100 && ends.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
const got = Buffer.concat(received);
process.stdout.write(JSON.stringify({ end: ends[0], bytes: got.length, intact: got.equals(data), pipes: held.length }));
relay.close();
front.close();
c.destroy();
`;

t.test('over the pipe quota, a slow reader still gets every byte and no reset', async (t) => {
  const softPages = Number(readFileSync('/proc/sys/fs/pipe-user-pages-soft', 'utf8'));
  if (!(softPages > 0)) {
    t.pass('pipe-user-pages-soft is 0 (no soft quota): nothing to test');
    return;
  }
  // Default pipes hold 16 pages: this many take the user past the soft limit, with margin.
  const fifos = Math.ceil(softPages / 16) + 64;
  const dir = mkdtempSync(join(tmpdir(), 'weft-pipe-quota-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o777);
  const names = Array.from({ length: fifos }, (_, i) => join(dir, `f${i}`));
  for (let i = 0; i < names.length; i += 500) await run('mkfifo', ['-m', '666', ...names.slice(i, i + 500)]);
  const script = join(dir, 'child.mjs');
  writeFileSync(script, CHILD, { mode: 0o644 });
  const child = spawn(process.execPath, [script, addonPath, dir, String(fifos)], {
    uid: 65534,
    gid: 65534,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  clearTimeout(timer);
  t.equal(code, 0, code === 0 ? 'the child ran as nobody' : `the child failed: ${err.slice(0, 2000)}`);
  const res = JSON.parse(out || '{}') as {
    end?: { reason: string; errno: number };
    bytes?: number;
    intact?: boolean;
    pipes?: number;
  };
  t.equal(res.pipes, fifos, `${fifos} FIFOs held: past the quota of ${softPages} pages`);
  t.equal(res.end?.reason, 'closed', `the connection ended closed (${JSON.stringify(res.end)})`);
  t.equal(res.bytes, 2 * 1024 * 1024, 'every byte arrived');
  t.equal(res.intact, true, 'in order');
});

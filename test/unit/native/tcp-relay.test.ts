import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadNative, type NativeRelay, type NativeRelayEnd } from '../../../src/native/index.js';

const loaded = loadNative();
if (!loaded.addon) throw new Error(`the native addon must be built for this test: ${loaded.reason}`);
const { Relay } = loaded.addon;

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

/**
 * A front server whose accepted sockets are handed to the relay with a fresh upstream
 * connection, the way the userspace proxier does it.
 */
async function relayFront(relay: NativeRelay, upstream: number | string, idleMs = 10_000, firstId = 1) {
  let next = firstId;
  const front = createServer({ pauseOnConnect: true }, (client) => {
    const up = typeof upstream === 'string' ? connect(upstream) : connect(upstream, '127.0.0.1');
    up.on('connect', () => {
      up.pause();
      relay.addTcp(
        next++,
        (client as unknown as { _handle: { fd: number } })._handle.fd,
        (up as unknown as { _handle: { fd: number } })._handle.fd,
        idleMs,
      );
      client.destroy();
      up.destroy();
    });
  });
  return { front, port: await listen(front) };
}

t.test('64 MiB echo with half-close arrives intact and is counted', async (t) => {
  const ends: NativeRelayEnd[] = [];
  const relay = new Relay((evs) => ends.push(...evs));
  const echo = createServer((s) => s.pipe(s));
  const { front, port } = await relayFront(relay, await listen(echo));
  const big = Buffer.alloc(64 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
  const got: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const c = connect(port, '127.0.0.1');
    c.on('data', (d: Buffer) => got.push(d));
    c.on('end', resolve);
    c.on('error', reject);
    c.end(big);
  });
  t.ok(Buffer.concat(got).equals(big), 'the echo equals what was sent');
  while (ends.length < 1) await new Promise((r) => setTimeout(r, 20));
  t.same(ends[0], { id: 1, bytesAtoB: big.length, bytesBtoA: big.length, reason: 'closed', errno: 0 });
  t.equal(relay.stats().ended, 1);
  relay.close();
  relay.close();
  echo.close();
  front.close();
});

t.test('the server speaks after the client half-closes (half-close both ways)', async (t) => {
  const relay = new Relay(() => {});
  const late = createServer({ allowHalfOpen: true }, (s: Socket) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(`got ${n}`));
  });
  const { front, port } = await relayFront(relay, await listen(late));
  const answer = await new Promise<string>((resolve, reject) => {
    const c = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let out = '';
    c.on('data', (d: Buffer) => (out += d.toString()));
    c.on('end', () => resolve(out));
    c.on('error', reject);
    c.end('hello');
  });
  t.equal(answer, 'got 5');
  relay.close();
  late.close();
  front.close();
});

t.test('a reset upstream resets the client; an idle connection is closed', async (t) => {
  const ends: NativeRelayEnd[] = [];
  const relay = new Relay((evs) => ends.push(...evs));
  const rude = createServer((s: Socket) => s.once('data', () => s.resetAndDestroy()));
  const { front, port } = await relayFront(relay, await listen(rude));
  const code = await new Promise<string>((resolve) => {
    const c = connect(port, '127.0.0.1');
    c.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    c.on('close', () => resolve('closed'));
    c.write('x');
  });
  t.equal(code, 'ECONNRESET');
  while (ends.length < 1) await new Promise((r) => setTimeout(r, 20));
  t.equal(ends[0]?.reason, 'reset');

  const silent = createServer(() => {});
  const idle = await relayFront(relay, await listen(silent), 300);
  const closedAfter = await new Promise<number>((resolve) => {
    const start = Date.now();
    const c = connect(idle.port, '127.0.0.1');
    c.on('close', () => resolve(Date.now() - start));
    c.on('error', () => {});
    c.resume();
  });
  t.ok(closedAfter >= 250, `idle close after ${closedAfter} ms`);
  while (ends.length < 2) await new Promise((r) => setTimeout(r, 20));
  t.equal(ends[1]?.reason, 'idle');
  relay.close();
  rude.close();
  silent.close();
  front.close();
  idle.front.close();
});

t.test('close() ends open connections and reports them as shutdown', async (t) => {
  const ends: NativeRelayEnd[] = [];
  const relay = new Relay((evs) => ends.push(...evs));
  const silent = createServer(() => {});
  const { front, port } = await relayFront(relay, await listen(silent));
  const c = connect(port, '127.0.0.1');
  c.on('error', () => {});
  while (relay.stats().added < 1) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
  relay.close();
  await new Promise((r) => setTimeout(r, 50));
  t.same(
    ends.map((e) => e.reason),
    ['shutdown'],
  );
  t.throws(() => relay.addTcp(9, 0, 0, 0), /closed/);
  c.destroy();
  silent.close();
  front.close();
});

t.test('pipes of one page and a slow reader: every byte arrives, no connection is reset', async (t) => {
  // One page is less than what a user over pipe-user-pages-soft gets (8 KiB): every write of
  // the relay into a pipe or a socket can come up short.
  const ends: NativeRelayEnd[] = [];
  const relay = new Relay((evs) => ends.push(...evs), { pipeSize: 4096 });
  const total = 2 * 1024 * 1024;
  const received: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    const slow = createServer((s: Socket) => {
      s.on('data', (d: Buffer) => received.push(d));
      s.on('end', () => s.end());
      // A reset ends the test too (and fails it below).
      s.on('close', () => resolve());
      s.on('error', () => {});
      // Nothing read for 150 ms, while the relay copies request-sized writes one by one: the
      // destination fills up in copy mode, where the relay used to fail. Then reads for 3 ms
      // out of every 30, so that it fills again and again.
      s.pause();
      let timer: NodeJS.Timeout | undefined;
      const start = setTimeout(() => {
        timer = setInterval(() => {
          s.resume();
          setTimeout(() => s.pause(), 3);
        }, 30);
      }, 150);
      s.on('close', () => (clearTimeout(start), clearInterval(timer)));
    });
    // A Unix stream socket towards the reader: its buffer is fixed (no TCP autotuning to grow
    // it past what the test sends), so the reader's pauses do fill it.
    const path = join(mkdtempSync(join(tmpdir(), 'weft-relay-')), 'slow.sock');
    void new Promise<void>((r) => slow.listen(path, r)).then(async () => {
      const { front, port } = await relayFront(relay, path);
      const c = connect(port, '127.0.0.1');
      c.on('error', () => {});
      const data = Buffer.alloc(total);
      for (let i = 0; i < total; i++) data[i] = (i * 7919) >> 5;
      // Request-sized writes (the relay's copy mode), then the end.
      for (let off = 0; off < total; off += 5000) {
        if (c.destroyed) break;
        if (!c.write(data.subarray(off, Math.min(total, off + 5000))))
          await new Promise((r) => (c.once('drain', r), c.once('close', r)));
        // Slower than the reader on average, so the relay catches up between pauses.
        await new Promise((r) => setTimeout(r, 1));
      }
      c.end();
      c.resume();
      await done;
      const got = Buffer.concat(received);
      t.equal(got.length, total, 'every byte arrived');
      t.ok(got.equals(data), 'in order');
      c.destroy();
      slow.close();
      front.close();
    });
  });
  await done;
  while (ends.length < 1) await new Promise((r) => setTimeout(r, 20));
  t.equal(ends[0]?.reason, 'closed', `the connection ended closed, not ${ends[0]?.reason}`);
  t.equal(ends[0]?.errno, 0);
  await new Promise((r) => setTimeout(r, 50));
  relay.close();
});

t.test('ids and idle timeouts past 32 bits are kept whole', async (t) => {
  const ends: NativeRelayEnd[] = [];
  const relay = new Relay((evs) => ends.push(...evs));
  const silent = createServer(() => {});
  // 2^32 + 300 ms is about 50 days, not 300 ms; id 2^32 + 7 is not id 7.
  const { front, port } = await relayFront(relay, await listen(silent), 2 ** 32 + 300, 2 ** 32 + 7);
  const c = connect(port, '127.0.0.1');
  c.on('error', () => {});
  while (relay.stats().added < 1) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 700));
  t.same(ends, [], 'not closed as idle after 700 ms');
  relay.close();
  await new Promise((r) => setTimeout(r, 50));
  t.same(
    ends.map((e) => [e.id, e.reason]),
    [[2 ** 32 + 7, 'shutdown']],
  );
  t.throws(() => relay.addTcp(-1, 0, 0, 0), /closed/);
  const open = new Relay(() => {});
  t.throws(() => open.addTcp(1.5, 0, 0, 0), /integers/, 'a fractional id is refused');
  t.throws(() => open.addTcp(1, 0, 0, -5), /integers/, 'a negative timeout is refused');
  open.close();
  c.destroy();
  silent.close();
  front.close();
});

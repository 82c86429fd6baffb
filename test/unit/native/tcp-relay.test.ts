import { createServer, connect, type Server, type Socket } from 'node:net';
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
async function relayFront(relay: NativeRelay, upstreamPort: number, idleMs = 10_000) {
  let next = 1;
  const front = createServer({ pauseOnConnect: true }, (client) => {
    const up = connect(upstreamPort, '127.0.0.1');
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

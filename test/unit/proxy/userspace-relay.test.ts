/**
 * The Node stream relay over loopback: a client talks through a relaying server to an upstream
 * server, as a userspace listener does. Half-close, a 64 MiB transfer under backpressure, resets
 * in both directions, the idle timeout, closing the relay, byte counters, and how loadRelay
 * picks the addon or falls back.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { loadNative, type NativeAddon } from '../../../src/native/index.js';
import {
  createNativeRelay,
  createNodeRelay,
  loadRelay,
  type PipeOptions,
  type Relay,
  type RelayStats,
} from '../../../src/proxy/userspace/index.js';

interface Harness {
  client: net.Socket;
  /** The relay's client-side socket (what the listener accepted). */
  accepted: Promise<net.Socket>;
  /** The upstream server's side of the relayed connection. */
  upstream: Promise<net.Socket>;
  stats: Promise<RelayStats>;
  close(): Promise<void>;
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

async function harness(relay: Relay, opts: PipeOptions = {}): Promise<Harness> {
  let gotUpstream!: (s: net.Socket) => void;
  const upstream = new Promise<net.Socket>((r) => (gotUpstream = r));
  const upServer = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    s.on('error', () => {});
    gotUpstream(s);
  });
  const upPort = await listen(upServer);
  let gotAccepted!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>((r) => (gotAccepted = r));
  let gotStats!: (s: RelayStats) => void;
  const stats = new Promise<RelayStats>((r) => (gotStats = r));
  const proxy = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (c) => {
    gotAccepted(c);
    const up = net.connect({ host: '127.0.0.1', port: upPort, allowHalfOpen: true });
    up.once('connect', () => void relay.pipeTcp(c, up, opts).then(gotStats));
  });
  const port = await listen(proxy);
  const client = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  client.on('error', () => {});
  await new Promise((r) => client.once('connect', r));
  return {
    client,
    accepted,
    upstream,
    stats,
    async close() {
      client.destroy();
      (await upstream).destroy();
      await Promise.all([new Promise((r) => proxy.close(r)), new Promise((r) => upServer.close(r))]);
    },
  };
}

function collect(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => s.once('end', () => resolve(Buffer.concat(chunks))));
}

const native = loadNative();
// As every native test: a missing addon is a failure (make build), not a skipped case.
if (!native.addon) throw new Error(`the native addon must be built for this test: ${native.reason}`);
const nativeAddon = native.addon;
const relays: [Relay['kind'], () => Relay][] = [
  ['node', createNodeRelay],
  ['native', () => createNativeRelay(nativeAddon)],
];

for (const [kind, create] of relays) {
  // Every relay is closed after its test: a native one holds a thread and the event loop.
  const make = () => {
    const r = create();
    t.teardown(() => r.close());
    return r;
  };
  t.test(`${kind}: half-close propagates and the other direction keeps flowing`, async (t) => {
    const relay = make();
    t.equal(relay.kind, kind);
    const h = await harness(relay);
    const up = await h.upstream;
    let upGotEnd = false;
    const upReceived: Buffer[] = [];
    up.on('data', (c: Buffer) => upReceived.push(c));
    up.on('end', () => {
      upGotEnd = true;
      // Still writable after the client's FIN: answer, then finish.
      up.write('echo:' + Buffer.concat(upReceived).toString());
      setTimeout(() => up.end(' bye'), 50);
    });
    up.resume();
    const reply = collect(h.client);
    h.client.write('hello');
    h.client.end();
    t.equal((await reply).toString(), 'echo:hello bye');
    t.ok(upGotEnd, 'upstream saw the FIN');
    const stats = await h.stats;
    t.same(stats, { bytesFromClient: 5, bytesFromUpstream: 14, end: 'closed' });
    await h.close();
  });

  t.test(`${kind}: 64 MiB arrive intact, with backpressure while upstream does not read`, async (t) => {
    const relay = make();
    const h = await harness(relay);
    const up = await h.upstream;
    const total = 64 * 1024 * 1024;
    const block = randomBytes(1024 * 1024);
    const sent = createHash('sha256');
    // What the kernel took from the client: a write's callback runs once its bytes left Node for
    // the socket. While the upstream does not read, only the socket buffers on the way (client,
    // relay and upstream, plus the relay's own small buffer or pipe) can fill; a relay that kept
    // reading the client regardless would let all 64 MiB through.
    let flushed = 0;
    // The client writes everything at once; the upstream socket stays paused for a while.
    const writing = (async () => {
      for (let i = 0; i < 64; i++) {
        const chunk = Buffer.from(block);
        chunk.writeUInt32BE(i, 0);
        sent.update(chunk);
        const ok = h.client.write(chunk, (err) => {
          if (!err) flushed += chunk.length;
        });
        if (!ok) await new Promise((r) => h.client.once('drain', r));
      }
      h.client.end();
    })();
    await new Promise((r) => setTimeout(r, 1000));
    const flushedWhileStalled = flushed;
    t.ok(
      flushedWhileStalled < total / 2,
      `the relay stopped reading the client while upstream was full (${flushedWhileStalled} bytes left the client)`,
    );
    t.ok(flushedWhileStalled > 0, 'the client did send (the measure is live)');
    const got = createHash('sha256');
    let n = 0;
    await new Promise<void>((resolve, reject) => {
      up.pipe(
        new Writable({
          write(chunk: Buffer, _enc, cb) {
            got.update(chunk);
            n += chunk.length;
            cb();
          },
          final(cb) {
            resolve();
            cb();
          },
        }),
      );
      up.on('error', reject);
    });
    await writing;
    t.equal(n, total, 'every byte arrived');
    t.equal(got.digest('hex'), sent.digest('hex'), 'in order and intact');
    up.end();
    const stats = await h.stats;
    t.same(stats, { bytesFromClient: total, bytesFromUpstream: 0, end: 'closed' });
    await h.close();
  });

  t.test(`${kind}: a reset of the upstream resets the client`, async (t) => {
    const h = await harness(make());
    const up = await h.upstream;
    up.resume();
    h.client.write('x');
    await new Promise((r) => up.once('data', r));
    const err = new Promise<NodeJS.ErrnoException>((r) => h.client.once('error', r));
    up.resetAndDestroy();
    t.equal((await err).code, 'ECONNRESET', 'client sees a reset, not a clean end');
    t.equal((await h.stats).end, 'reset');
    await h.close();
  });

  t.test(`${kind}: a reset of the client resets the upstream`, async (t) => {
    const h = await harness(make());
    const up = await h.upstream;
    up.resume();
    h.client.write('abc');
    await new Promise((r) => up.once('data', r));
    const err = new Promise<NodeJS.ErrnoException>((r) => up.once('error', r));
    h.client.resetAndDestroy();
    t.equal((await err).code, 'ECONNRESET');
    const stats = await h.stats;
    t.equal(stats.end, 'reset');
    t.equal(stats.bytesFromClient, 3);
    await h.close();
  });

  t.test(`${kind}: idle timeout closes both sides; traffic keeps it open`, async (t) => {
    const h = await harness(make(), { idleTimeoutMs: 300 });
    const up = await h.upstream;
    up.resume();
    let closedAt = 0;
    const clientEnded = new Promise((r) => h.client.once('end', r));
    h.client.on('end', () => (closedAt = Date.now()));
    const upEnded = new Promise((r) => up.once('end', r));
    const start = Date.now();
    let lastWrite = 0;
    for (let i = 0; i < 6; i++) {
      h.client.write('.');
      lastWrite = Date.now();
      await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(closedAt, 0, 'still open after 600 ms of traffic every 100 ms');
    const stats = await h.stats;
    await upEnded;
    await clientEnded;
    t.equal(stats.end, 'idle');
    t.equal(stats.bytesFromClient, 6);
    t.ok(
      closedAt >= lastWrite + 250,
      `closed (FIN) after the traffic stopped (${closedAt - start} ms after start)`,
    );
    await h.close();
  });

  t.test(`${kind}: closing the relay aborts its connections`, async (t) => {
    const relay = make();
    const h = await harness(relay);
    const up = await h.upstream;
    up.resume();
    h.client.write('x');
    await new Promise((r) => up.once('data', r));
    await relay.close();
    t.equal((await h.stats).end, 'aborted');
    // A connection handed over after close is refused at once.
    const a = new net.Socket();
    const b = new net.Socket();
    t.same(await relay.pipeTcp(a, b), { bytesFromClient: 0, bytesFromUpstream: 0, end: 'aborted' });
    await h.close();
  });
}

t.test('loadRelay: the addon when present, else the Node relay with one log line', async (t) => {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  const r = loadRelay(log, { native: () => ({ addon: undefined, reason: 'not built' }) });
  t.equal(r.kind, 'node');
  t.equal(lines.length, 1);
  t.match(lines[0], { level: 30, msg: /Node stream relay/ });

  const fake = (Relay: unknown) => () => ({ addon: { Relay } as unknown as NativeAddon, path: '/fake.node' });
  class FakeRelay {
    addTcp() {}
    stats() {}
    close() {}
  }
  lines.length = 0;
  t.equal(loadRelay(log, { native: fake(FakeRelay) }).kind, 'native', 'an addon with a Relay is used');
  t.match(lines[0]?.msg, /native splice relay/);

  for (const broken of [
    undefined,
    class {
      constructor() {
        throw new Error('no thread');
      }
    },
  ]) {
    lines.length = 0;
    t.equal(loadRelay(log, { native: fake(broken) }).kind, 'node');
    t.equal(lines.length, 1);
    t.match(lines[0], { level: 40, msg: /failed to start/ });
  }
  lines.length = 0;
  t.equal(loadRelay(log, { preferNode: true }).kind, 'node');
  t.equal(lines.length, 0, 'preferNode: no log line');
  // The default: whatever src/native finds.
  const dflt = loadRelay(log);
  t.equal(dflt.kind, native.addon ? 'native' : 'node');
  await dflt.close();
});

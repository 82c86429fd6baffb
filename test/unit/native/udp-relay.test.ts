import { createSocket, type Socket } from 'node:dgram';
import t from 'tap';
import { loadNative, type NativeUdpListenerStats } from '../../../src/native/index.js';

const loaded = loadNative();
if (!loaded.addon) throw new Error(`the native addon must be built for this test: ${loaded.reason}`);
const { UdpRelay } = loaded.addon;

/** A UDP server answering every datagram with `<name>:<payload>`. */
async function server(name: string): Promise<{ sock: Socket; port: number }> {
  const sock = createSocket('udp4');
  sock.on('message', (m, r) => sock.send(`${name}:${m.toString()}`, r.port, r.address));
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  return { sock, port: sock.address().port };
}

/** A client socket; `ask` sends and waits for one reply (or a timeout). */
async function client() {
  const sock = createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  const ask = (port: number, msg: string) =>
    new Promise<{ text: string; from: string } | undefined>((resolve) => {
      const timer = setTimeout(() => (sock.off('message', on), resolve(undefined)), 1000);
      const on = (m: Buffer, r: { address: string; port: number }) => {
        clearTimeout(timer);
        sock.off('message', on);
        resolve({ text: m.toString(), from: `${r.address}:${r.port}` });
      };
      sock.on('message', on);
      sock.send(msg, port, '127.0.0.1');
    });
  return { sock, ask };
}

t.test('flows, round-robin, replies from the service address, endpoint removal, idle expiry', async (t) => {
  const stats: NativeUdpListenerStats[][] = [];
  const relay = new UdpRelay((s) => stats.push(s));
  t.teardown(() => relay.close());
  const a = await server('a');
  const b = await server('b');
  const port = relay.addListener(1, '127.0.0.1', 0, 300);
  t.ok(port > 0, `bound port ${port}`);
  relay.setEndpoints(
    1,
    [
      ['127.0.0.1', a.port],
      ['127.0.0.1', b.port],
    ],
    0,
  );
  const c1 = await client();
  const c2 = await client();
  const r1 = await c1.ask(port, 'x');
  const r2 = await c2.ask(port, 'y');
  t.same([r1?.text, r2?.text].sort(), ['a:x', 'b:y'], 'two clients, two endpoints (round-robin)');
  t.equal(r1?.from, `127.0.0.1:${port}`, 'the reply comes from the service socket');
  const again = await c1.ask(port, 'z');
  t.equal(again?.text.slice(0, 1), r1?.text.slice(0, 1), 'a client keeps its flow');

  // The endpoint of c1's flow goes away: its next datagram opens a flow to the other one.
  const c1Endpoint = r1?.text.startsWith('a') ? a : b;
  const other = c1Endpoint === a ? 'b' : 'a';
  relay.setEndpoints(1, [['127.0.0.1', c1Endpoint === a ? b.port : a.port]], 0);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(
    (await c1.ask(port, 'w'))?.text,
    `${other}:w`,
    'after removal the flow moved to the remaining endpoint',
  );

  // Idle flows end; statistics arrive in batches.
  await new Promise((r) => setTimeout(r, 1300));
  const last = stats.at(-1)?.find((s) => s.id === 1);
  t.ok(last, 'statistics pushed');
  t.equal(last?.flowsActive, 0, 'idle flows expired');
  t.equal(last?.datagramsIn, 4);
  t.equal(last?.datagramsOut, 4);
  t.ok((last?.flowsCreated ?? 0) >= 3);

  relay.setEndpoints(1, [], 0);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(await c2.ask(port, 'v'), undefined, 'no endpoint: the datagram is dropped');
  for (const s of [a.sock, b.sock, c1.sock, c2.sock]) s.close();
});

t.test('ClientIP affinity keeps every port of one client IP on one endpoint', async (t) => {
  const relay = new UdpRelay(() => {});
  t.teardown(() => relay.close());
  const servers = await Promise.all(['a', 'b', 'c'].map(server));
  const port = relay.addListener(2, '127.0.0.1', 0, 5000);
  relay.setEndpoints(
    2,
    servers.map((s): [string, number] => ['127.0.0.1', s.port]),
    60,
  );
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const c = await client();
    seen.add((await c.ask(port, 'q'))?.text ?? 'none');
    c.sock.close();
  }
  t.equal(seen.size, 1, `one endpoint for every client port: ${[...seen].join(', ')}`);
  for (const s of servers) s.sock.close();
});

t.test('bad arguments are errors naming the call', async (t) => {
  const relay = new UdpRelay(() => {});
  t.throws(() => relay.addListener(1, 'not-an-ip', 0, 100), /bad bind address/);
  t.throws(() => relay.setEndpoints(1, [['10.0.0.1', 0]], 0), /endpoint 0 is not \[ip, port\]/);
  relay.close();
  t.throws(() => relay.addListener(1, '127.0.0.1', 0, 100), /closed/);
});

/**
 * The userspace proxier without a kernel: a recording runner stands in for nft and conntrack,
 * listeners bind on loopback, and clients connect to the listeners directly (the redirect is the
 * namespace test's business). What is written when, bind failures, SCTP, and relaying through
 * a listener to loopback endpoints.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { pino } from 'pino';
import t from 'tap';
import type { CommandRunner } from '../../../src/exec/index.js';
import { loadNative } from '../../../src/native/index.js';
import type { Endpoint, ServicePort } from '../../../src/proxy/model/index.js';
import {
  createUserspaceProxier,
  planAll,
  renderUserspaceRules,
  type UserspaceOptions,
} from '../../../src/proxy/userspace/index.js';
import { goldenContext, goldenServicePorts } from '../../helpers/proxy-fixtures.js';

interface Call {
  cmd: string;
  args: string[];
  input: string | undefined;
}

function recorder(code = (_c: Call) => 0): { runner: CommandRunner; calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    runner: async (cmd, args, input) => {
      const c = { cmd, args: [...args], input };
      calls.push(c);
      return { stdout: '', stderr: '', code: code(c) };
    },
  };
}

function capture() {
  const lines: { level: number; msg: string; servicePort?: string }[] = [];
  return { lines, log: pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s)) }) };
}

async function make(runner: CommandRunner, log = capture().log, opts: UserspaceOptions = {}) {
  const p = await createUserspaceProxier(goldenContext({ runner, log }), {
    bindAddress: '127.0.0.1',
    ...opts,
  });
  t.teardown(() => p.close());
  return p;
}

t.test('a full sync binds a listener per port and writes the rules in one transaction', async (t) => {
  const { runner, calls } = recorder();
  const { lines, log } = capture();
  const p = await make(runner, log);
  t.equal(await p.rulesIntact(), false, 'never synced: not intact');
  const ports = goldenServicePorts();
  await p.sync({ servicePorts: ports, changed: undefined });
  const nft = calls.filter((c) => c.cmd === 'nft');
  t.equal(nft.length, 1);
  t.same(nft[0]?.args, ['-f', '-']);
  const listeners = p.listenerPorts();
  const plans = planAll(ports.values());
  t.same(
    [...listeners.keys()].sort(),
    plans.map((x) => x.key),
  );
  t.equal(
    nft[0]?.input,
    renderUserspaceRules(plans, goldenContext(), (k) => listeners.get(k)),
    'the rendered table, with the bound ports',
  );
  t.ok([...listeners.values()].every((port) => port > 0));
  t.ok(
    lines.some(
      (l) => l.level === 40 && /default\/sctp:assoc: field protocol: SCTP is not supported/.test(l.msg),
    ),
    'SCTP reported with the port and field',
  );
  // The UDP port got endpoints for the first time: its conntrack entries are cleared.
  t.same(
    calls.filter((c) => c.cmd === 'conntrack').map((c) => c.args),
    [['-D', '-f', 'ipv4', '-p', 'udp', '--orig-dst', '10.96.0.53', '--orig-port-dst', '53']],
  );

  calls.length = 0;
  await p.sync({ servicePorts: ports, changed: new Set() });
  t.same(calls, [], 'a partial sync that changes nothing writes nothing');
  await p.sync({ servicePorts: ports, changed: undefined });
  t.equal(calls.filter((c) => c.cmd === 'nft').length, 1, 'a full sync always writes');
  t.equal(calls.filter((c) => c.cmd === 'conntrack').length, 0, 'no 0 -> N transition: no conntrack');
  t.same(p.listenerPorts(), listeners, 'listeners kept across syncs');

  calls.length = 0;
  t.equal(await p.rulesIntact(), true);
  t.same(calls[0]?.args, ['list', 'chain', 'ip', 'weft-userspace', 'services']);

  await p.cleanup();
  t.equal(calls.at(-1)?.input, 'add table ip weft-userspace\ndelete table ip weft-userspace\n');
  t.equal(p.listenerPorts().size, 0);
  t.equal(await p.rulesIntact(), false);
});

t.test('rulesIntact is false when nft cannot find the table; a failed write throws', async (t) => {
  let fail = false;
  const { runner } = recorder((c) => (c.args[0] === 'list' || fail ? 1 : 0));
  const p = await make(runner);
  await p.sync({ servicePorts: goldenServicePorts(), changed: undefined });
  t.equal(await p.rulesIntact(), false);
  fail = true;
  await t.rejects(p.sync({ servicePorts: goldenServicePorts(), changed: undefined }), { code: 'WEFT_EXEC' });
});

t.test('a port that cannot be bound is reported and gets no redirect; the rest is served', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => blocker.close());
  const busy = (blocker.address() as net.AddressInfo).port;
  let useBusy = true;
  const { runner, calls } = recorder();
  const { lines, log } = capture();
  const p = await make(runner, log, {
    listenerPort: (k) => (k === 'default/web:http' && useBusy ? busy : 0),
  });
  await p.sync({ servicePorts: goldenServicePorts(), changed: undefined });
  t.notOk(p.listenerPorts().has('default/web:http'));
  t.ok(
    lines.some((l) => l.level === 50 && l.servicePort === 'default/web:http' && /cannot bind/.test(l.msg)),
  );
  const text = calls.find((c) => c.cmd === 'nft')?.input ?? '';
  t.notMatch(text, '10.96.0.10');
  t.match(text, 'ip daddr 10.96.0.70 tcp dport 80 redirect to');
  useBusy = false;
  await p.sync({ servicePorts: goldenServicePorts(), changed: new Set() });
  t.ok(p.listenerPorts().has('default/web:http'), 'the next sync, even partial, retries the bind');
});

function loopbackPort(sp: ServicePort, endpoints: Endpoint[]): ServicePort {
  return { ...sp, endpoints };
}

const ep = (port: number): Endpoint => ({
  ip: '127.0.0.1',
  port,
  ready: true,
  serving: true,
  terminating: false,
  isLocal: true,
});

t.test('TCP and UDP relayed through the listeners to loopback endpoints', async (t) => {
  const tcpServer = net.createServer((s) => s.end(`tcp:${(tcpServer.address() as net.AddressInfo).port}`));
  await new Promise<void>((r) => tcpServer.listen(0, '127.0.0.1', r));
  const udpServer = dgram.createSocket('udp4');
  udpServer.on('message', (m, r) => udpServer.send(`udp:${m.toString()}`, r.port, r.address));
  await new Promise<void>((r) => udpServer.bind(0, '127.0.0.1', r));
  t.teardown(() => {
    tcpServer.close();
    udpServer.close();
  });
  const tcpPort = (tcpServer.address() as net.AddressInfo).port;
  const udpPort = udpServer.address().port;
  const golden = goldenServicePorts();
  const web = loopbackPort(golden.get('default/web:http')!, [ep(tcpPort)]);
  const dns = loopbackPort(golden.get('kube-system/dns:dns')!, [ep(udpPort)]);
  const { runner } = recorder();
  // The Node UDP path, whose counters move with every datagram; the native one is tested below.
  const p = await make(runner, capture().log, { udpIdleTimeoutMs: 200, udpRelay: 'node' });
  t.equal(p.relayKind, loadNative().addon ? 'native' : 'node');
  t.equal(p.udpRelayKind, 'node');
  await p.sync({ servicePorts: new Map([web, dns].map((s) => [s.id, s])), changed: undefined });
  const lp = p.listenerPorts();

  const body = await new Promise<string>((resolve, reject) => {
    const c = net.connect(lp.get(web.id)!, '127.0.0.1');
    let out = '';
    c.on('data', (b: Buffer) => (out += b.toString()));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
  t.equal(body, `tcp:${tcpPort}`);

  const u = dgram.createSocket('udp4');
  t.teardown(() => u.close());
  const reply = await new Promise<string>((resolve) => {
    u.once('message', (m) => resolve(m.toString()));
    u.send('q', lp.get(dns.id)!, '127.0.0.1');
  });
  t.equal(reply, 'udp:q');
  const s = p.stats();
  t.equal(s.tcpAccepted, 1);
  t.equal(s.udpFlowsCreated, 1);
  t.equal(s.bytesFromClients, 1);
  // Let the TCP relay report and the UDP flow expire.
  await new Promise((r) => setTimeout(r, 600));
  t.same(
    { ...p.stats() },
    {
      tcpAccepted: 1,
      tcpActive: 0,
      tcpDialFailures: 0,
      tcpRefused: 0,
      tcpDialRetries: 0,
      udpFlowsCreated: 1,
      udpFlowsActive: 0,
      udpFlowsEvicted: 0,
      affinityEvicted: 0,
      udpDropped: 0,
      bytesFromClients: 1,
      bytesToClients: `tcp:${tcpPort}`.length + 'udp:q'.length,
    },
  );
  // After the idle expiry the next datagram opens a new flow.
  await new Promise<string>((resolve) => {
    u.once('message', (m) => resolve(m.toString()));
    u.send('r', lp.get(dns.id)!, '127.0.0.1');
  });
  t.equal(p.stats().udpFlowsCreated, 2, 'the idle flow expired');

  // No endpoint left: a connection that still reaches the listener is reset, not held.
  await p.sync({ servicePorts: new Map([[web.id, { ...web, endpoints: [] }]]), changed: undefined });
  const code = await new Promise<string>((resolve) => {
    const c = net.connect(lp.get(web.id)!, '127.0.0.1');
    c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''));
    c.on('end', () => resolve('end'));
  });
  t.equal(code, 'ECONNRESET');
  t.equal(p.stats().tcpDialFailures, 1);
  t.notOk(p.listenerPorts().has(dns.id), 'removed port: listener closed');
  await p.close();
  await t.rejects(p.sync({ servicePorts: new Map(), changed: undefined }), /closed/);
});

t.test('UDP through the native relay: replies, flows counted, endpoint change followed', async (t) => {
  if (!loadNative().addon) {
    t.fail('the native addon must be built (make build) for this test');
    return;
  }
  const { runner } = recorder();
  const servers = await Promise.all(
    ['a', 'b'].map(async (name) => {
      const s = dgram.createSocket('udp4');
      s.on('message', (m, r) => s.send(`${name}:${m.toString()}`, r.port, r.address));
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
      t.teardown(() => s.close());
      return { name, port: s.address().port };
    }),
  );
  const golden = goldenServicePorts();
  const dns = loopbackPort(golden.get('kube-system/dns:dns')!, [ep(servers[0]!.port)]);
  const p = await make(runner, capture().log, { udpIdleTimeoutMs: 5000, udpRelay: 'native' });
  t.equal(p.udpRelayKind, 'native');
  await p.sync({ servicePorts: new Map([[dns.id, dns]]), changed: undefined });
  const port = p.listenerPorts().get(dns.id)!;
  const u = dgram.createSocket('udp4');
  t.teardown(() => u.close());
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
  const ask = (msg: string) =>
    new Promise<string>((resolve) => {
      u.once('message', (m) => resolve(m.toString()));
      u.send(msg, port, '127.0.0.1');
    });
  t.equal(await ask('q'), 'a:q');
  // The endpoint is replaced: the same client flow goes to the new one.
  const moved = { ...dns, endpoints: [ep(servers[1]!.port)] };
  await p.sync({ servicePorts: new Map([[dns.id, moved]]), changed: new Set([dns.id]) });
  t.equal(await ask('r'), 'b:r');
  await new Promise((r) => setTimeout(r, 1300));
  t.equal(p.stats().udpFlowsCreated, 2, "two flows, counted from the addon's batched statistics");
});

t.test('TCP connection cap per port: past it a connection is reset at once and counted', async (t) => {
  // An endpoint that holds every connection open.
  const held: net.Socket[] = [];
  const server = net.createServer((s) => {
    held.push(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  const web = loopbackPort(goldenServicePorts().get('default/web:http')!, [
    ep((server.address() as net.AddressInfo).port),
  ]);
  const p = await make(recorder().runner, capture().log, {
    limits: { maxTcpConnectionsPerPort: 2 },
    relay: (await import('../../../src/proxy/userspace/index.js')).createNodeRelay(),
  });
  await p.sync({ servicePorts: new Map([[web.id, web]]), changed: undefined });
  const port = p.listenerPorts().get(web.id)!;
  const open = () =>
    new Promise<{ sock: net.Socket; outcome: Promise<string> }>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      const outcome = new Promise<string>((r) => {
        sock.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
        sock.on('end', () => r('end'));
      });
      // A reset can come before 'connect' is reported.
      sock.once('connect', () => resolve({ sock, outcome }));
      sock.once('error', () => resolve({ sock, outcome }));
    });
  const a = await open();
  const b = await open();
  while (held.length < 2) await new Promise((r) => setTimeout(r, 10));
  const c = await open();
  const held3 = new Promise<string>((r) => setTimeout(() => r('still open after 3 s'), 3000).unref());
  t.equal(await Promise.race([c.outcome, held3]), 'ECONNRESET', 'the third connection is reset');
  t.equal(p.stats().tcpRefused, 1, 'and counted');
  t.equal(held.length, 2, 'no endpoint connection was opened for it');
  a.sock.destroy();
  held[0]!.destroy();
  while (p.stats().tcpActive > 1) await new Promise((r) => setTimeout(r, 10));
  await open();
  while (held.length < 3) await new Promise((r) => setTimeout(r, 10));
  t.equal(p.stats().tcpRefused, 1, 'a slot freed by a closed connection is reused');
  b.sock.destroy();
  c.sock.destroy();
});

for (const udpRelay of ['node', 'native'] as const) {
  t.test(`UDP flows capped per port (${udpRelay}): new clients evict the idlest flow`, async (t) => {
    if (udpRelay === 'native' && !loadNative().addon) {
      t.fail('the native addon must be built (make build) for this test');
      return;
    }
    const server = dgram.createSocket('udp4');
    server.on('message', (m, r) => server.send(`e:${m.toString()}`, r.port, r.address));
    await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
    t.teardown(() => server.close());
    const dns = loopbackPort(goldenServicePorts().get('kube-system/dns:dns')!, [ep(server.address().port)]);
    const p = await make(recorder().runner, capture().log, {
      udpRelay,
      udpIdleTimeoutMs: 60_000,
      limits: { maxUdpFlowsPerPort: 3 },
    });
    await p.sync({ servicePorts: new Map([[dns.id, dns]]), changed: undefined });
    const port = p.listenerPorts().get(dns.id)!;
    const clients: dgram.Socket[] = [];
    t.teardown(() => clients.forEach((c) => c.close()));
    for (let i = 0; i < 8; i++) {
      const c = dgram.createSocket('udp4');
      clients.push(c);
      await new Promise<void>((r) => c.bind(0, '127.0.0.1', r));
      const reply = await new Promise<string>((resolve) => {
        c.once('message', (m) => resolve(m.toString()));
        c.send(`q${i}`, port, '127.0.0.1');
      });
      t.equal(reply, `e:q${i}`, `client ${i} gets through`);
    }
    // The addon reports its counters once a second.
    if (udpRelay === 'native') await new Promise((r) => setTimeout(r, 1300));
    const s = p.stats();
    t.equal(s.udpFlowsCreated, 8);
    t.equal(s.udpFlowsActive, 3, 'never more flows than the cap');
    t.equal(s.udpFlowsEvicted, 5, 'each eviction counted');
  });
}

t.test('caps are fitted to the file descriptor limit', async (t) => {
  const p = await make(recorder().runner, capture().log, { fdLimit: 1024, udpRelay: 'node' });
  t.ok(p.limits.maxUdpFlows <= 384 && p.limits.maxTcpConnections <= 384, JSON.stringify(p.limits));
});

for (const udpRelay of ['node', 'native'] as const) {
  t.test(`UDP total flow cap and affinity cap (${udpRelay})`, async (t) => {
    if (udpRelay === 'native' && !loadNative().addon) {
      t.fail('the native addon must be built (make build) for this test');
      return;
    }
    const server = dgram.createSocket('udp4');
    server.on('message', (m, r) => server.send(`e:${m.toString()}`, r.port, r.address));
    await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
    t.teardown(() => server.close());
    const base = loopbackPort(goldenServicePorts().get('kube-system/dns:dns')!, [ep(server.address().port)]);
    // Two ports sharing a total of 4 flows; the second one with ClientIP affinity.
    const a = { ...base };
    const b = {
      ...base,
      id: 'kube-system/dns2:dns',
      name: 'dns2',
      clusterIP: '10.96.0.54',
      affinityTimeoutSeconds: 600,
    };
    const p = await make(recorder().runner, capture().log, {
      udpRelay,
      udpIdleTimeoutMs: 60_000,
      limits: { maxUdpFlows: 4, maxUdpFlowsPerPort: 100, maxAffinityEntries: 2 },
    });
    await p.sync({ servicePorts: new Map([a, b].map((s) => [s.id, s])), changed: undefined });
    const ports = p.listenerPorts();
    const clients: dgram.Socket[] = [];
    t.teardown(() => clients.forEach((c) => c.close()));
    const ask = async (from: string, port: number, msg: string) => {
      const c = dgram.createSocket('udp4');
      clients.push(c);
      await new Promise<void>((r) => c.bind(0, from, r));
      return new Promise<string>((resolve) => {
        c.once('message', (m) => resolve(m.toString()));
        c.send(msg, port, '127.0.0.1');
      });
    };
    for (let i = 0; i < 3; i++) t.equal(await ask('127.0.0.1', ports.get(a.id)!, `a${i}`), `e:a${i}`);
    // Five client addresses on the port with affinity: the total cap is reached on the second,
    // and b can only give up its own flows; the affinity table keeps two addresses.
    for (let i = 1; i <= 5; i++) t.equal(await ask(`127.0.0.${i}`, ports.get(b.id)!, `b${i}`), `e:b${i}`);
    if (udpRelay === 'native') await new Promise((r) => setTimeout(r, 1300));
    const s = p.stats();
    t.equal(s.udpFlowsCreated, 8);
    t.equal(s.udpFlowsActive, 4, 'the total cap holds across ports');
    t.equal(s.udpFlowsEvicted, 4, "b's flows made room for b's new clients; a's were kept");
    t.equal(s.affinityEvicted, 3, 'five addresses, two affinity entries: three evicted');
    t.equal(s.udpDropped, 0);
  });
}

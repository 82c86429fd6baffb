/**
 * The userspace proxier against a real kernel, in a throwaway namespace: three endpoint
 * addresses on a veth, TCP and UDP endpoint servers on them, and clients in the same namespace
 * reaching services through the OUTPUT redirect. Round-robin, NodePort, UDP replies from the
 * ClusterIP, refusal without endpoints, affinity, connect failover, endpoint changes, rules wiped
 * by hand, cleanup. Every kernel check reads through nft, not through weft.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { execRunner } from '../../src/exec/index.js';
import { silentLogger } from '../../src/log/index.js';
import { loadNative } from '../../src/native/index.js';
import type { Endpoint, Protocol, ServicePort } from '../../src/proxy/model/index.js';
import { createUserspaceProxier, type UserspaceProxier } from '../../src/proxy/userspace/index.js';
import { runInNetns } from '../helpers/netns-test.js';
import { run } from '../lab/exec.js';
import { createNetns, deleteNetns, netnsName, newRunId } from '../lab/netns.js';

const EPS = ['10.244.1.2', '10.244.1.3', '10.244.1.4'];
const TCP_PORT = 8080;
const UDP_PORT = 5353;

function endpoint(ip: string, port: number): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, isLocal: true };
}

function svc(
  name: string,
  clusterIP: string,
  protocol: Protocol,
  port: number,
  endpoints: Endpoint[],
  over: Partial<ServicePort> = {},
): ServicePort {
  return {
    id: `default/${name}`,
    namespace: 'default',
    name,
    portName: '',
    protocol,
    family: 4,
    clusterIP,
    port,
    nodePort: 0,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: 0,
    externalPolicyLocal: false,
    internalPolicyLocal: false,
    healthCheckNodePort: 0,
    endpoints,
    ...over,
  };
}

const tcpEps = (ips = EPS) => ips.map((ip) => endpoint(ip, TCP_PORT));
const udpEps = (ips = EPS) => ips.map((ip) => endpoint(ip, UDP_PORT));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

/** Connects, reads until the server closes; the endpoint servers answer with their address. */
function fetchTcp(host: string, port: number): Promise<string> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const s = net.connect({ host, port });
      let out = '';
      s.on('data', (b: Buffer) => (out += b.toString()));
      s.on('end', () => resolve(out));
      s.on('error', reject);
    }),
    5000,
    `tcp ${host}:${port}`,
  );
}

/** The error code of a connect that must fail. */
function tcpRefusal(host: string, port: number): Promise<string> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const s = net.connect({ host, port });
      s.on('connect', () => {
        s.destroy();
        reject(new Error(`${host}:${port} accepted the connection`));
      });
      s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    }),
    2000,
    `tcp ${host}:${port}`,
  );
}

interface UdpReply {
  text: string;
  from: string;
}

/** Sends one datagram from `sock` and waits for one reply. */
function udpAsk(sock: dgram.Socket, host: string, port: number, msg: string): Promise<UdpReply> {
  return withTimeout(
    new Promise((resolve, reject) => {
      sock.once('message', (m, r) => resolve({ text: m.toString(), from: `${r.address}:${r.port}` }));
      sock.once('error', reject);
      sock.send(msg, port, host);
    }),
    3000,
    `udp ${host}:${port}`,
  );
}

/** Every client socket, closed at the end even when an assertion failed half-way. */
const clientSockets = new Set<dgram.Socket>();

function udpSocket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  clientSockets.add(s);
  return new Promise((resolve) => s.bind(0, () => resolve(s)));
}

runInNetns(
  import.meta.url,
  async (t) => {
    // The endpoints' addresses, and a route that makes the service range routable (as a default
    // route would on a node), so that local clients' packets reach the OUTPUT hook.
    const ip = (...args: string[]) => run('ip', args);
    await ip('link', 'add', 'wu0', 'type', 'veth', 'peer', 'name', 'wu1');
    await ip('link', 'set', 'wu0', 'up');
    await ip('link', 'set', 'wu1', 'up');
    for (const a of EPS) await ip('addr', 'add', `${a}/24`, 'dev', 'wu0');
    await ip('route', 'add', '10.96.0.0/16', 'dev', 'wu0');

    const servers: (net.Server | dgram.Socket)[] = [];
    for (const a of EPS) {
      const tcp = net.createServer((s) => s.end(a));
      await new Promise<void>((r) => tcp.listen(TCP_PORT, a, r));
      const udp = dgram.createSocket('udp4');
      udp.on('message', (m, r) => udp.send(`${a}:${m.toString()}`, r.port, r.address));
      await new Promise<void>((r) => udp.bind(UDP_PORT, a, r));
      servers.push(tcp, udp);
    }
    t.teardown(() => {
      for (const s of servers) s.close();
      for (const s of clientSockets) {
        try {
          s.close();
        } catch {
          /* closed by its test */
        }
      }
    });

    const p: UserspaceProxier = await createUserspaceProxier(
      {
        family: 4,
        nodeName: 'node-1',
        clusterCidr: '10.244.0.0/16',
        masqueradeAll: false,
        nodePortAddresses: [],
        runner: execRunner(),
        log: silentLogger(),
      },
      { udpIdleTimeoutMs: 2000 },
    );
    t.teardown(() => p.close());
    const native = loadNative();
    t.equal(
      p.relayKind,
      native.addon ? 'native' : 'node',
      `relay: ${native.addon ? native.path : native.reason}`,
    );

    const web = svc('web', '10.96.0.10', 'TCP', 80, tcpEps(), { nodePort: 30080 });
    const dns = svc('dns', '10.96.0.53', 'UDP', 53, udpEps());
    const empty = svc('empty', '10.96.0.80', 'TCP', 80, []);
    const emptyUdp = svc('empty-udp', '10.96.0.81', 'UDP', 53, []);
    const sticky = svc('sticky', '10.96.0.70', 'TCP', 80, tcpEps(), { affinityTimeoutSeconds: 600 });
    // Port 8099 has no server: connects there are refused and must fail over.
    const flaky = svc('flaky', '10.96.0.20', 'TCP', 80, [
      endpoint(EPS[0]!, 8099),
      endpoint(EPS[1]!, TCP_PORT),
    ]);
    const all = new Map([web, dns, empty, emptyUdp, sticky, flaky].map((s) => [s.id, s]));
    await p.sync({ servicePorts: all, changed: undefined });

    const ports = p.listenerPorts();
    t.same([...ports.keys()].sort(), [...all.keys()].sort(), 'one listener per service port');
    const table = (await run('nft', ['list', 'table', 'ip', 'weft-userspace'])).stdout;
    t.match(table, `ip daddr 10.96.0.10 tcp dport 80 redirect to :${ports.get('default/web')}`);
    t.ok(await p.rulesIntact());

    await t.test('round-robin across three endpoints through the ClusterIP', async (t) => {
      const counts = new Map<string, number>();
      for (let i = 0; i < 30; i++) {
        const who = await fetchTcp('10.96.0.10', 80);
        counts.set(who, (counts.get(who) ?? 0) + 1);
      }
      t.same(Object.fromEntries([...counts].sort()), {
        '10.244.1.2': 10,
        '10.244.1.3': 10,
        '10.244.1.4': 10,
      });
    });

    await t.test('NodePort on a local address', async (t) => {
      t.ok(EPS.includes(await fetchTcp('10.244.1.3', 30080)));
    });

    await t.test('from another namespace: services answer, listener ports do not', async (t) => {
      // A client on another host (here another namespace behind a veth): the redirect in
      // prerouting sends its traffic to the listener on the node's address; a connection made
      // straight to that address and port, as a port scan would, must not reach the listener.
      const peer = netnsName(newRunId(), 'usp');
      await createNetns(peer);
      t.teardown(() => deleteNetns(peer));
      await ip('link', 'add', 'wg0', 'type', 'veth', 'peer', 'name', 'wg1');
      await ip('link', 'set', 'wg1', 'netns', peer);
      await ip('addr', 'add', '10.250.0.1/24', 'dev', 'wg0');
      await ip('link', 'set', 'wg0', 'up');
      const inPeer = (...args: string[]) => run('ip', args, { netns: peer });
      await inPeer('addr', 'add', '10.250.0.2/24', 'dev', 'wg1');
      await inPeer('link', 'set', 'wg1', 'up');
      await inPeer('route', 'add', '10.96.0.0/16', 'via', '10.250.0.1');
      await inPeer('route', 'add', '10.244.0.0/16', 'via', '10.250.0.1');
      /** Runs a CommonJS snippet in the peer; it prints one line. */
      const peerSays = async (script: string) =>
        (
          await run('env', ['-u', 'NODE_OPTIONS', process.execPath, '-e', script], {
            netns: peer,
            allowFail: true,
            timeoutMs: 10_000,
          })
        ).stdout.trim();
      const tcp = (host: string, port: number) =>
        peerSays(`
          const s = require('net').connect(${port}, '${host}');
          let out = '';
          const timer = setTimeout(() => { console.log('TIMEOUT'); process.exit(0); }, 1500);
          s.on('data', (d) => (out += d));
          s.on('end', () => { clearTimeout(timer); console.log('OK ' + out); });
          s.on('error', (e) => { clearTimeout(timer); console.log('ERR ' + e.code); });`);
      const udp = (host: string, port: number) =>
        peerSays(`
          const s = require('dgram').createSocket('udp4');
          const timer = setTimeout(() => { console.log('TIMEOUT'); process.exit(0); }, 1500);
          s.on('message', (m, r) => { clearTimeout(timer); console.log('OK ' + m + ' from ' + r.address); s.close(); });
          s.send('peer', ${port}, '${host}');`);
      t.match(await tcp('10.96.0.10', 80), /^OK 10\.244\.1\.\d$/, 'ClusterIP through the redirect');
      t.match(await tcp('10.250.0.1', 30080), /^OK 10\.244\.1\.\d$/, 'NodePort through the redirect');
      t.match(await udp('10.96.0.53', 53), /^OK 10\.244\.1\.\d:peer from 10\.96\.0\.53$/, 'UDP service');
      const webPort = ports.get('default/web')!;
      const dnsPort = ports.get('default/dns')!;
      t.equal(await tcp('10.250.0.1', webPort), 'TIMEOUT', 'TCP listener port: dropped');
      t.equal(await tcp('10.244.1.2', webPort), 'TIMEOUT', 'on any node address');
      t.equal(await udp('10.250.0.1', dnsPort), 'TIMEOUT', 'UDP listener port: dropped');
      // The node itself is no exception: only redirected connections reach the listeners.
      t.equal(
        await withTimeout(
          new Promise<string>((resolve) => {
            const s = net.connect({ host: '127.0.0.1', port: webPort });
            const timer = setTimeout(() => {
              s.destroy();
              resolve('TIMEOUT');
            }, 1000);
            s.on('connect', () => {
              clearTimeout(timer);
              s.destroy();
              resolve('connected');
            });
            s.on('error', () => {
              clearTimeout(timer);
              resolve('error');
            });
          }),
          3000,
          'local direct connect',
        ),
        'TIMEOUT',
        'a local direct connection is dropped too',
      );
    });

    await t.test('UDP request/reply, the reply coming from the ClusterIP', async (t) => {
      const seen = new Map<string, number>();
      for (let i = 0; i < 6; i++) {
        const s = await udpSocket();
        const r = await udpAsk(s, '10.96.0.53', 53, `q${i}`);
        t.equal(r.from, '10.96.0.53:53', 'reply source is the service address');
        const [ep, q] = r.text.split(':');
        t.equal(q, `q${i}`);
        seen.set(ep!, (seen.get(ep!) ?? 0) + 1);
        s.close();
      }
      t.same([...seen.values()], [2, 2, 2], 'one flow per client, round-robin');

      // A connected client socket drops datagrams from any other source: it must still work.
      const c = dgram.createSocket('udp4');
      clientSockets.add(c);
      await new Promise<void>((r) => c.connect(53, '10.96.0.53', r));
      const reply = await withTimeout(
        new Promise<string>((resolve) => {
          c.once('message', (m) => resolve(m.toString()));
          c.send('connected');
        }),
        3000,
        'connected udp',
      );
      t.match(reply, /:connected$/);
      c.close();
    });

    await t.test('a service without endpoints is refused at once', async (t) => {
      t.equal(await tcpRefusal('10.96.0.80', 80), 'ECONNREFUSED', 'TCP: reset');
      const c = dgram.createSocket('udp4');
      clientSockets.add(c);
      await new Promise<void>((r) => c.connect(53, '10.96.0.81', r));
      let again: NodeJS.Timeout | undefined;
      const err = await withTimeout(
        new Promise<string>((resolve) => {
          c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
          c.send('x');
          // The ICMP error surfaces on the next operation of a connected socket.
          again = setTimeout(() => c.send('y'), 100);
        }),
        2000,
        'udp refusal',
      );
      clearTimeout(again);
      t.equal(err, 'ECONNREFUSED', 'UDP: port unreachable');
      c.close();
    });

    await t.test('ClientIP affinity sends every connection to one endpoint', async (t) => {
      const got = new Set<string>();
      for (let i = 0; i < 10; i++) got.add(await fetchTcp('10.96.0.70', 80));
      t.equal(got.size, 1);
    });

    await t.test('a refused endpoint fails over to the next', async (t) => {
      const before = p.stats().tcpDialRetries;
      for (let i = 0; i < 6; i++) t.equal(await fetchTcp('10.96.0.20', 80), EPS[1]);
      // The round-robin pointer advances on retries too (as kube-proxy's did): with the dead
      // endpoint first every connection tries it first; second, all but the first one do.
      const retries = p.stats().tcpDialRetries - before;
      t.ok(retries === 5 || retries === 6, `one retry per connection through the dead endpoint (${retries})`);
    });

    await t.test('endpoint removal takes effect on the next connection and datagram', async (t) => {
      const udpClient = await udpSocket();
      const first = (await udpAsk(udpClient, '10.96.0.53', 53, 'a')).text.split(':')[0]!;
      t.equal(
        (await udpAsk(udpClient, '10.96.0.53', 53, 'b')).text.split(':')[0],
        first,
        'one flow, one endpoint',
      );

      const webPort = ports.get('default/web');
      const next = new Map(all);
      next.set(web.id, { ...web, endpoints: tcpEps([EPS[0]!, EPS[1]!]) });
      next.set(dns.id, { ...dns, endpoints: udpEps(EPS.filter((e) => e !== first)) });
      await p.sync({ servicePorts: next, changed: new Set([web.id, dns.id]) });
      t.equal(p.listenerPorts().get('default/web'), webPort, 'same listener, new endpoints');
      const got = new Set<string>();
      for (let i = 0; i < 12; i++) got.add(await fetchTcp('10.96.0.10', 80));
      t.same([...got].sort(), [EPS[0], EPS[1]]);
      const after = (await udpAsk(udpClient, '10.96.0.53', 53, 'c')).text.split(':')[0];
      t.not(after, first, 'the flow to the removed endpoint was closed; the next datagram chose again');
      udpClient.close();

      // 0 -> N: the refused services get endpoints.
      next.set(empty.id, { ...empty, endpoints: tcpEps([EPS[2]!]) });
      next.set(emptyUdp.id, { ...emptyUdp, endpoints: udpEps([EPS[2]!]) });
      // A removed service loses its listener.
      next.delete(sticky.id);
      await p.sync({ servicePorts: next, changed: new Set([empty.id, emptyUdp.id, sticky.id]) });
      t.equal(await fetchTcp('10.96.0.80', 80), EPS[2]);
      const u = await udpSocket();
      t.same(await udpAsk(u, '10.96.0.81', 53, 'z'), { text: `${EPS[2]}:z`, from: '10.96.0.81:53' });
      u.close();
      t.notOk(p.listenerPorts().has(sticky.id));
      t.equal(await tcpRefusal('127.0.0.1', ports.get(sticky.id)!), 'ECONNREFUSED', 'its port is closed');
      const text = (await run('nft', ['list', 'table', 'ip', 'weft-userspace'])).stdout;
      t.notMatch(text, '10.96.0.70');
      t.notMatch(text, '10.96.0.80 tcp dport 80 reject');
      all.clear();
      for (const [k, v] of next) all.set(k, v);
    });

    await t.test('a UDP flow seen before its service had endpoints is redirected once it has', async (t) => {
      const c = await udpSocket();
      // No rule yet: the datagram leaves through wu0 and conntrack records the flow without NAT.
      c.send('early', 53, '10.96.0.82');
      await new Promise((r) => setTimeout(r, 100));
      const ct = await run('conntrack', ['-L', '-p', 'udp', '--orig-dst', '10.96.0.82'], { allowFail: true });
      t.match(ct.stdout, 'dport=53', 'conntrack holds the un-NATed flow');
      const late = svc('late', '10.96.0.82', 'UDP', 53, udpEps([EPS[0]!]));
      all.set(late.id, late);
      await p.sync({ servicePorts: all, changed: new Set([late.id]) });
      // Same socket, same 5-tuple: without the conntrack entry deleted it would bypass the redirect.
      t.same(await udpAsk(c, '10.96.0.82', 53, 'late'), { text: `${EPS[0]}:late`, from: '10.96.0.82:53' });
      c.close();
    });

    await t.test('rules deleted by hand are detected and restored', async (t) => {
      await run('nft', ['delete', 'table', 'ip', 'weft-userspace']);
      t.equal(await p.rulesIntact(), false);
      await p.sync({ servicePorts: all, changed: undefined });
      t.equal(await p.rulesIntact(), true);
      t.ok(EPS.includes(await fetchTcp('10.96.0.10', 80)));
    });

    await t.test('IPv6: TCP and UDP through an ip6 table, replies from the ClusterIP', async (t) => {
      const eps6 = ['fd00:244::2', 'fd00:244::3'];
      for (const a of eps6) await ip('-6', 'addr', 'add', `${a}/64`, 'dev', 'wu0', 'nodad');
      await ip('-6', 'route', 'add', 'fd00:96::/64', 'dev', 'wu0');
      const extra: (net.Server | dgram.Socket)[] = [];
      for (const a of eps6) {
        const tcp = net.createServer((s) => s.end(a));
        await new Promise<void>((r) => tcp.listen(TCP_PORT, a, r));
        const udp = dgram.createSocket('udp6');
        udp.on('message', (m, r) => udp.send(`${a}/${m.toString()}`, r.port, r.address));
        await new Promise<void>((r) => udp.bind(UDP_PORT, a, r));
        extra.push(tcp, udp);
      }
      t.teardown(() => {
        for (const s of extra) s.close();
      });
      const p6 = await createUserspaceProxier({
        family: 6,
        nodeName: 'node-1',
        clusterCidr: undefined,
        masqueradeAll: false,
        nodePortAddresses: [],
        runner: execRunner(),
        log: silentLogger(),
      });
      t.teardown(() => p6.close());
      const v6 = (name: string, ip6: string, protocol: Protocol, port: number, epPort: number) =>
        svc(
          name,
          ip6,
          protocol,
          port,
          eps6.map((a) => endpoint(a, epPort)),
          { family: 6 },
        );
      const web6 = v6('web6', 'fd00:96::10', 'TCP', 80, TCP_PORT);
      const dns6 = v6('dns6', 'fd00:96::53', 'UDP', 53, UDP_PORT);
      await p6.sync({ servicePorts: new Map([web6, dns6].map((s) => [s.id, s])), changed: undefined });
      const text = (await run('nft', ['list', 'table', 'ip6', 'weft-userspace'])).stdout;
      t.match(text, 'ip6 daddr fd00:96::10 tcp dport 80 redirect to :');
      const got = new Set<string>();
      for (let i = 0; i < 4; i++) got.add(await fetchTcp('fd00:96::10', 80));
      t.same([...got].sort(), eps6);
      const u = dgram.createSocket('udp6');
      clientSockets.add(u);
      await new Promise<void>((r) => u.bind(0, r));
      const r = await udpAsk(u, 'fd00:96::53', 53, 'six');
      t.equal(r.from, 'fd00:96::53:53', 'reply source is the IPv6 service address');
      t.match(r.text, /\/six$/);
      t.ok(await p.rulesIntact(), 'the IPv4 table is untouched');
      await p6.cleanup();
      t.notMatch((await run('nft', ['list', 'tables'])).stdout, 'ip6 weft-userspace');
    });

    await t.test('the golden table loads into a kernel', async (t) => {
      const golden = fileURLToPath(new URL('../fixtures/proxy/golden/userspace.nft', import.meta.url));
      const res = await run('nft', ['-c', '-f', '-'], {
        input: readFileSync(golden, 'utf8'),
        allowFail: true,
      });
      t.equal(res.code, 0, res.stderr);
    });

    await t.test('cleanup removes the table and the listeners', async (t) => {
      const last = p.listenerPorts();
      await p.cleanup();
      const tables = (await run('nft', ['list', 'tables'])).stdout;
      t.notMatch(tables, 'weft-userspace');
      t.equal(await p.rulesIntact(), false);
      t.equal(p.listenerPorts().size, 0);
      t.equal(await tcpRefusal('127.0.0.1', last.get('default/web')!), 'ECONNREFUSED');
      await p.cleanup();
      t.pass('cleanup is idempotent');
    });
  },
  { role: 'us' },
);

/**
 * Floods against the userspace relays of the compiled weft-proxy daemon in a one-node lab (its
 * registry is the lab's etcd): 50,000 UDP source ports, then 20,000 TCP connections, from the
 * underlay namespace to the node's NodePorts. The daemon runs with a small file descriptor limit
 * (4096, through prlimit on its own process) and default caps, so the caps it derives from the
 * limit are what stands between the flood and the fds its registry session and /healthz need.
 * Afterwards (and during the TCP flood, while the connections are held): the caps held (metrics),
 * evictions and refusals were counted, /healthz answers, a Service written to the registry is
 * still programmed, and a legitimate client gets through. Each flood is bounded and stops itself.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import {
  Lab,
  PROXY_MAIN,
  ProxyCluster,
  listNetns,
  metricValue,
  run,
  runClient,
  startUdpServer,
  waitFor,
  type LabNode,
} from '../lab/index.js';
import { serviceObject, sliceObject } from '../helpers/proxy-objects.js';

t.setTimeout(240_000);

/** The daemon's RLIMIT_NOFILE: small, so that the fd budget decides the totals. */
const DAEMON_FDS = 4096;
const UDP_SOURCES = 50_000;
const TCP_CONNECTIONS = 20_000;
/** The per-port TCP cap, below the fd-derived total so that a second port keeps room. */
const TCP_PER_PORT = 200;
const UDP_PER_PORT = 1000;

const lab = await Lab.create({ nodes: 1 });
t.teardown(async () => {
  await lab.teardown();
  const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
  if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
});
const [n1] = lab.nodes as [LabNode];

/**
 * The flood client, run in the underlay namespace. `udp`: datagrams from `count` distinct source
 * ports (bound explicitly, 1000 sockets at a time, each closed after its datagram: the proxy keys
 * flows by source address and port, not by the client's socket). `tcp`: `count` connections, 500
 * in flight; each one the proxy accepts is held open until all were tried, then everything is
 * closed. Prints one JSON line of counts.
 */
const FLOOD_JS = `import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
const [mode, host, portText, countText] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);
const deadline = Date.now() + 60000;
if (mode === 'udp') {
  let sent = 0;
  let failed = 0;
  for (let base = 0; base < count && Date.now() < deadline; base += 1000) {
    const socks = [];
    for (let i = base; i < Math.min(count, base + 1000); i++) {
      const s = createSocket('udp4');
      s.on('error', () => failed++);
      socks.push(new Promise((resolve) => {
        s.bind(10000 + i, () => s.send('flood', port, host, (err) => {
          if (err) failed++; else sent++;
          s.close();
          resolve();
        }));
      }));
    }
    await Promise.all(socks);
  }
  process.stdout.write(JSON.stringify({ sent, failed }) + '\\n');
} else {
  const held = [];
  let reset = 0;
  let other = 0;
  let accepted = 0;
  let next = 0;
  const one = () => new Promise((resolve) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => { other++; s.destroy(); resolve(); }, 3000);
    s.on('error', (e) => {
      clearTimeout(timer);
      if (e.code === 'ECONNRESET') reset++; else other++;
      resolve();
    });
    s.on('connect', () => {
      // A refused connection is reset right after the handshake: wait a moment before counting.
      setTimeout(() => {
        clearTimeout(timer);
        if (!s.destroyed) { accepted++; held.push(s); }
        resolve();
      }, 300);
    });
  });
  const worker = async () => {
    while (next < count && Date.now() < deadline) { next++; await one(); }
  };
  await Promise.all(Array.from({ length: 500 }, worker));
  const stillOpen = held.filter((s) => !s.destroyed).length;
  process.stdout.write(JSON.stringify({ accepted, stillOpen, reset, other }) + '\\n');
  // Hold them while the test looks at the daemon, until told to stop (SIGTERM), 60 s at most.
  const stop = () => { for (const s of held) s.destroy(); process.exit(0); };
  process.on('SIGTERM', stop);
  setTimeout(stop, 60000);
}
`;

/** The endpoint of the TCP services: holds every connection, answers `web` on the client's FIN. */
const TCP_SERVER_JS = `import { createServer } from 'node:net';
const server = createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  s.resume();
  s.on('end', () => s.end('web\\n'));
});
server.maxConnections = 100000;
server.listen(Number(process.argv[2]), '0.0.0.0', () => console.log('listening tcp ' + process.argv[2]));
process.on('SIGTERM', () => process.exit(0));
`;

const bin = join(lab.dir, 'bin');
await run('mkdir', ['-p', bin]);
const floodJs = join(bin, 'userspace-flood.mjs');
const tcpServerJs = join(bin, 'userspace-tcp-server.mjs');
writeFileSync(floodJs, FLOOD_JS);
writeFileSync(tcpServerJs, TCP_SERVER_JS);

// Endpoints on the node itself (its underlay address), served by processes in its namespace.
const EP_TCP = 9080;
const EP_UDP = 9053;
const tcpServer = lab.startProcess(n1, 'tcp-server', 'env', [
  '-u',
  'NODE_OPTIONS',
  process.execPath,
  tcpServerJs,
  String(EP_TCP),
]);
await waitFor(() => tcpServer.running && readFileSync(tcpServer.logFile, 'utf8').includes('listening tcp'), {
  what: 'TCP endpoint server',
  timeoutMs: 10_000,
  intervalMs: 50,
});
await startUdpServer(lab, n1, EP_UDP, { reply: 'dns' });

const proxy = await ProxyCluster.create(lab, { mode: 'userspace', start: false });
const flags = [
  '--min-sync-period=100ms',
  // Flows must not expire during the flood: the caps, not the timeout, have to hold it.
  '--udp-timeout=60s',
  `--userspace-max-tcp-connections-per-port=${TCP_PER_PORT}`,
  `--userspace-max-udp-flows-per-port=${UDP_PER_PORT}`,
];
// The daemon's own fd limit, set on its process only (prlimit runs it), not system-wide.
const daemonProcess = lab.startProcess(n1, 'weft-proxy', 'prlimit', [
  `--nofile=${DAEMON_FDS}:${DAEMON_FDS}`,
  '--',
  'env',
  '-u',
  'NODE_OPTIONS',
  process.execPath,
  PROXY_MAIN,
  ...proxy.args(n1),
  ...flags,
]);
proxy.daemons.set(n1.name, { node: n1, process: daemonProcess });
t.teardown(() => proxy.close());

const services = [
  {
    name: 'flood-udp',
    clusterIP: '10.96.60.53',
    protocol: 'UDP' as const,
    port: 53,
    nodePort: 30053,
    ep: EP_UDP,
  },
  {
    name: 'flood-tcp',
    clusterIP: '10.96.60.80',
    protocol: 'TCP' as const,
    port: 80,
    nodePort: 30080,
    ep: EP_TCP,
  },
  {
    name: 'other-tcp',
    clusterIP: '10.96.60.81',
    protocol: 'TCP' as const,
    port: 80,
    nodePort: 30081,
    ep: EP_TCP,
  },
];
for (const s of services) {
  await proxy.putObject(
    serviceObject({
      name: s.name,
      clusterIP: s.clusterIP,
      type: 'NodePort',
      ports: [{ protocol: s.protocol, port: s.port, targetPort: s.ep, nodePort: s.nodePort }],
    }),
  );
}
let since = 0;
for (const s of services) {
  since = await proxy.putObject(
    sliceObject({
      service: s.name,
      endpoints: [{ ip: n1.ip, nodeName: n1.name }],
      ports: [{ protocol: s.protocol, port: s.ep }],
    }),
  );
}
await proxy.waitSynced([n1], since, 30_000);

async function metric(name: string): Promise<number> {
  return metricValue(await proxy.metrics(n1), name) ?? NaN;
}

async function limit(name: string): Promise<number> {
  return metricValue(await proxy.metrics(n1), 'weft_proxy_userspace_limit', { limit: name }) ?? NaN;
}

/** The registry session is alive: a Service written now is served within a few seconds. */
async function registryStillServes(t: Test, name: string, nodePort: number): Promise<void> {
  const at = await proxy.putObject(
    serviceObject({
      name,
      clusterIP: `10.96.61.${nodePort - 30000}`,
      type: 'NodePort',
      ports: [{ protocol: 'TCP', port: 80, targetPort: EP_TCP, nodePort }],
    }),
  );
  await proxy.putObject(
    sliceObject({
      service: name,
      endpoints: [{ ip: n1.ip, nodeName: n1.name }],
      ports: [{ protocol: 'TCP', port: EP_TCP }],
    }),
  );
  await proxy.waitSynced([n1], at, 15_000);
  const r = await runClient(lab, 'underlay', {
    proto: 'tcp',
    host: n1.ip,
    port: nodePort,
    count: 3,
    timeoutMs: 3000,
  });
  t.same(r.counts, { web: 3 }, `${name}, written after the flood started, answers`);
}

t.test('the caps follow the fd limit, with the reserve kept', async (t) => {
  const tcpTotal = await limit('maxTcpConnections');
  const udpTotal = await limit('maxUdpFlows');
  // 4096 fds, 256 reserved: 3840 usable, half each way; TCP takes 6 fds natively, 2 otherwise.
  t.ok(tcpTotal === 320 || tcpTotal === 960, `TCP total ${tcpTotal}`);
  t.equal(udpTotal, 1920);
  t.equal(await limit('maxTcpConnectionsPerPort'), TCP_PER_PORT);
  t.equal(await limit('maxUdpFlowsPerPort'), UDP_PER_PORT);
});

t.test(`${UDP_SOURCES} UDP source ports: flows capped, evictions counted, daemon healthy`, async (t) => {
  const before = await metric('weft_proxy_userspace_udp_flows_evicted_total');
  const started = Date.now();
  const r = await run(
    'env',
    ['-u', 'NODE_OPTIONS', process.execPath, floodJs, 'udp', n1.ip, '30053', String(UDP_SOURCES)],
    { netns: lab.netnsOf('underlay'), timeoutMs: 90_000 },
  );
  const report = JSON.parse(r.stdout) as { sent: number; failed: number };
  t.equal(report.sent, UDP_SOURCES, `every datagram left the client (${Date.now() - started} ms)`);
  t.equal((await proxy.health(n1)).status, 200, '/healthz answers right after the flood');
  // The native relay reports its counters once a second.
  const evicted = await waitFor(
    async () => {
      const created = await metric('weft_proxy_userspace_udp_flows_created_total');
      const ev = (await metric('weft_proxy_userspace_udp_flows_evicted_total')) - before;
      return created >= UDP_SOURCES * 0.9 && ev > 0 ? ev : undefined;
    },
    { what: 'the flood counted', timeoutMs: 15_000, intervalMs: 500 },
  );
  const active = await metric('weft_proxy_userspace_udp_flows_active');
  t.ok(active <= UDP_PER_PORT, `flows live: ${active} ≤ ${UDP_PER_PORT}`);
  t.ok(evicted >= UDP_SOURCES * 0.9 - UDP_PER_PORT, `evictions counted: ${evicted}`);
  const legit = await runClient(lab, 'underlay', {
    proto: 'udp',
    host: n1.ip,
    port: 30053,
    count: 5,
    timeoutMs: 2000,
  });
  t.same(legit.counts, { dns: 5 }, 'a legitimate client gets its answers');
  t.equal(daemonProcess.running, true, 'the daemon is up');
  await registryStillServes(t, 'after-udp', 30090);
});

t.test(`${TCP_CONNECTIONS} TCP connections: capped per port, refusals counted, daemon healthy`, async (t) => {
  const refusedBefore = await metric('weft_proxy_userspace_tcp_connections_refused_total');
  const underlay = lab.netnsOf('underlay');
  // The client holds what it got until its stdin closes: check the daemon meanwhile.
  const flood = lab.startProcess(underlay, 'tcp-flood', 'env', [
    '-u',
    'NODE_OPTIONS',
    process.execPath,
    floodJs,
    'tcp',
    n1.ip,
    '30080',
    String(TCP_CONNECTIONS),
  ]);
  const line = await waitFor(
    () => {
      if (!flood.running) throw new Error(`the flood client exited; see ${flood.logFile}`);
      return readFileSync(flood.logFile, 'utf8')
        .split('\n')
        .find((l) => l.startsWith('{'));
    },
    { what: 'the TCP flood to finish', timeoutMs: 120_000, intervalMs: 500 },
  );
  const report = JSON.parse(line) as { accepted: number; stillOpen: number; reset: number; other: number };
  t.comment(JSON.stringify(report));
  // A connection the proxy accepted only to reset it a moment later counts in both accepted and
  // reset; what is open, reset or otherwise failed adds up to every connection tried.
  t.equal(report.stillOpen + report.reset + report.other, TCP_CONNECTIONS, 'every connection was tried');
  t.ok(report.stillOpen <= TCP_PER_PORT, `held open: ${report.stillOpen} ≤ ${TCP_PER_PORT}`);
  t.ok(report.reset >= TCP_CONNECTIONS - TCP_PER_PORT - report.other, `reset: ${report.reset}`);
  const refused = (await metric('weft_proxy_userspace_tcp_connections_refused_total')) - refusedBefore;
  t.ok(refused >= report.reset, `refusals counted: ${refused}`);
  t.ok(
    (await metric('weft_proxy_userspace_tcp_connections_active')) <= TCP_PER_PORT,
    'active within the cap',
  );
  // While the flood's connections are held:
  t.equal((await proxy.health(n1)).status, 200, '/healthz answers');
  const other = await runClient(lab, 'underlay', {
    proto: 'tcp',
    host: n1.ip,
    port: 30081,
    count: 5,
    timeoutMs: 3000,
  });
  t.same(other.counts, { web: 5 }, 'a legitimate client of another port gets through');
  await registryStillServes(t, 'during-tcp', 30091);
  await flood.stop(3000);
  // Released: the flooded port serves again.
  await waitFor(
    async () => (await metric('weft_proxy_userspace_tcp_connections_active')) < TCP_PER_PORT / 2,
    { what: 'the held connections to close', timeoutMs: 15_000, intervalMs: 250 },
  );
  const legit = await runClient(lab, 'underlay', {
    proto: 'tcp',
    host: n1.ip,
    port: 30080,
    count: 5,
    timeoutMs: 3000,
  });
  t.same(legit.counts, { web: 5 }, 'a legitimate client of the flooded port gets through once it ends');
  t.equal(daemonProcess.running, true, 'the daemon is up');
});

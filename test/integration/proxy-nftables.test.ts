/**
 * The nftables proxier against a real kernel, in a throwaway namespace: the golden services are
 * loaded and changed by partial syncs; a local client reaches a ClusterIP through the OUTPUT-hook
 * DNAT and every endpoint serves it; a service without endpoints is refused at once; a failed
 * transaction changes nothing and the next sync is full; rules wiped by someone else are noticed
 * and restored; cleanup removes the table. Then a scale smoke: 10,000 services x 2 endpoints.
 */
import { connect, createServer, type Server } from 'node:net';
import type { Test } from 'tap';
import { execRunner, type CommandRunner } from '../../src/exec/index.js';
import { isWeftError } from '../../src/errors/index.js';
import { changedServicePorts, type ServicePort } from '../../src/proxy/model/index.js';
import type { Proxier } from '../../src/proxy/proxier.js';
import { createNftablesProxier, syntheticServicePorts } from '../../src/proxy/nftables/index.js';
import { goldenContext, goldenServicePorts } from '../helpers/proxy-fixtures.js';
import { runInNetns } from '../helpers/netns-test.js';
import { run } from '../lab/exec.js';

const DEV = 'wtnft0';
const WEB_EPS = ['10.244.1.2', '10.244.2.2', '10.244.3.2'];

async function sh(cmd: string, ...args: string[]): Promise<string> {
  return (await run(cmd, args)).stdout;
}

const listTable = () => sh('nft', 'list', 'table', 'ip', 'weft');

/** Connects to addr:port and returns the server's answer (the address it was reached on). */
function ask(addr: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: addr, port, timeout: 3000 });
    let data = '';
    s.on('data', (b: Buffer) => (data += b.toString()));
    s.on('end', () => resolve(data));
    s.on('timeout', () => {
      s.destroy();
      reject(Object.assign(new Error(`timeout connecting to ${addr}:${port}`), { code: 'ETIMEDOUT' }));
    });
    s.on('error', reject);
  });
}

async function askMany(addr: string, port: number, n: number): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const who = await ask(addr, port);
    seen.set(who, (seen.get(who) ?? 0) + 1);
  }
  return seen;
}

function startServer(port: number): Promise<Server> {
  const srv = createServer((sock) => sock.end(sock.localAddress ?? '?'));
  return new Promise((resolve) => srv.listen(port, '0.0.0.0', () => resolve(srv)));
}

function withoutEndpoint(ports: Map<string, ServicePort>, id: string, ip: string): Map<string, ServicePort> {
  const sp = ports.get(id);
  if (!sp) throw new Error(`no ${id}`);
  return new Map(ports).set(id, { ...sp, endpoints: sp.endpoints.filter((e) => e.ip !== ip) });
}

async function golden(t: Test): Promise<void> {
  // Endpoint addresses are local, so a local client reaches them after the OUTPUT DNAT; the
  // service range routes out of a veth so that connect() gets as far as netfilter.
  await sh('ip', 'link', 'set', 'lo', 'up');
  await sh('ip', 'link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`);
  await sh('ip', 'link', 'set', DEV, 'up');
  await sh('ip', 'link', 'set', `${DEV}p`, 'up');
  await sh('ip', 'addr', 'add', '10.244.1.1/24', 'dev', DEV);
  for (const ep of WEB_EPS) await sh('ip', 'addr', 'add', `${ep}/32`, 'dev', DEV);
  await sh('ip', 'route', 'add', '10.96.0.0/16', 'dev', DEV);
  const server = await startServer(8080);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));

  const scripts: string[] = [];
  let corruptNext = false;
  const exec = execRunner();
  const runner: CommandRunner = (cmd, args, input) => {
    if (input !== undefined) scripts.push(input);
    if (corruptNext && input !== undefined) {
      corruptNext = false;
      return exec(cmd, args, `${input}add rule ip weft no-such-chain accept\n`);
    }
    return exec(cmd, args, input);
  };
  const proxier: Proxier = await createNftablesProxier(goldenContext({ runner }));
  t.equal(proxier.mode, 'nftables');
  t.equal(await proxier.rulesIntact(), false, 'not intact before the first sync');

  const ports = goldenServicePorts();
  await proxier.sync({ servicePorts: ports, changed: undefined });
  t.equal(await proxier.rulesIntact(), true, 'intact after the full sync');
  let listing = await listTable();
  t.match(listing, /10\.96\.0\.10 \. tcp \. 80 : goto pick-cluster-ip-tcp-3/, 'ClusterIP dispatched');
  t.match(listing, /10\.96\.0\.80 \. tcp \. 80 : goto reject-chain/, 'endpoint-less ClusterIP rejected');
  t.match(listing, /tcp \. 30061 : drop/, 'Local NodePort without local endpoint dropped');
  t.match(listing, /10\.96\.0\.10 \. tcp \. 80 \. 2 : 10\.244\.3\.2 \. 8080/, 'third bucket of web');
  t.match(listing, /set affinity-\S+default\/sticky/, 'affinity sets');
  t.match(listing, /203\.0\.113\.7 \. tcp \. 80 \. 198\.51\.100\.0\/24/, 'LB source range');

  t.test('traffic: every endpoint, and refusal without endpoints', async (t) => {
    const seen = await askMany('10.96.0.10', 80, 30);
    t.strictSame(
      [...seen.keys()].sort(),
      WEB_EPS,
      `all three endpoints answered: ${JSON.stringify([...seen])}`,
    );
    const err = await ask('10.96.0.80', 80).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    t.equal(err?.code, 'ECONNREFUSED', 'refused, not left to time out');
  });

  t.test('partial sync: one endpoint of default/web removed', async (t) => {
    const after = withoutEndpoint(ports, 'default/web:http', '10.244.3.2');
    const changed = changedServicePorts(ports, after);
    scripts.length = 0;
    await proxier.sync({ servicePorts: after, changed });
    t.equal(scripts.length, 1, 'one transaction');
    t.notMatch(scripts[0] ?? '', /^add table/, 'not a full sync');
    listing = await listTable();
    t.notMatch(listing, /10\.244\.3\.2 \. 8080/, 'the endpoint is gone from the map');
    t.notMatch(listing, /10\.244\.3\.2 \. 10\.244\.3\.2/, 'and from the hairpin set');
    t.match(listing, /10\.244\.3\.5 \. 53/, 'other services untouched');
    const seen = await askMany('10.96.0.10', 80, 20);
    t.notOk(seen.has('10.244.3.2'), `removed endpoint gets no traffic: ${JSON.stringify([...seen])}`);

    // Remove a service with affinity, then bring it back.
    const noSticky = new Map(after);
    noSticky.delete('default/sticky:http');
    await proxier.sync({ servicePorts: noSticky, changed: new Set(['default/sticky:http']) });
    listing = await listTable();
    t.notMatch(listing, /sticky/, 'every chain and set of default/sticky is gone');
    await proxier.sync({ servicePorts: after, changed: new Set(['default/sticky:http']) });
    t.match(await listTable(), /set affinity-\S+default\/sticky/, 'and back');
    t.equal(await proxier.rulesIntact(), true);
  });

  t.test('a failed transaction changes nothing; the next sync is full', async (t) => {
    const before = await listTable();
    const after = withoutEndpoint(ports, 'kube-system/dns:dns', '10.244.3.5');
    corruptNext = true;
    const err = await proxier.sync({ servicePorts: after, changed: new Set(['kube-system/dns:dns']) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(isWeftError(err, 'WEFT_EXEC'), 'WeftError EXEC');
    t.match(String((err as Error).message), /no-such-chain|No such file/, "nft's stderr in the message");
    t.equal(await listTable(), before, 'kernel state unchanged');
    t.equal(await proxier.rulesIntact(), false, 'the engine is told to resync');
    scripts.length = 0;
    await proxier.sync({ servicePorts: after, changed: new Set(['kube-system/dns:dns']) });
    t.match(
      scripts[0] ?? '',
      /^add table ip weft[^\n]*\nflush table ip weft\n/,
      'the next sync rewrote the table',
    );
    const udp = await sh('nft', 'list', 'map', 'ip', 'weft', 'cluster-ip-endpoints-udp');
    t.match(udp, /10\.244\.2\.5 \. 53/);
    t.notMatch(udp, /10\.244\.3\.5/, 'and applied the change');
    await proxier.sync({ servicePorts: ports, changed: undefined });
  });

  t.test('a full sync keeps affinity and removes what is stale', async (t) => {
    const sets = await sh('nft', '-t', 'list', 'sets', 'ip');
    const affinity = /set (affinity-\S+) \{/.exec(sets)?.[1] ?? 'none';
    await sh('nft', 'add', 'element', 'ip', 'weft', affinity, '{ 192.0.2.99 }');
    await sh('nft', 'add', 'chain', 'ip', 'weft', 'stale-chain');
    await sh('nft', 'add', 'set', 'ip', 'weft', 'stale-set', '{ type ipv4_addr; }');
    await sh('nft', 'add', 'element', 'ip', 'weft', 'service-ips', '{ 10.96.9.9 . tcp . 80 : drop }');
    await proxier.sync({ servicePorts: ports, changed: undefined });
    t.match(
      await sh('nft', 'list', 'set', 'ip', 'weft', affinity),
      /192\.0\.2\.99/,
      `${affinity} remembers its client`,
    );
    const listing = await listTable();
    t.notMatch(listing, /stale-chain|stale-set/, 'objects weft does not want are deleted');
    t.notMatch(listing, /10\.96\.9\.9/, 'elements weft did not write are gone');
    t.match(listing, /10\.96\.0\.10 \. tcp \. 80 : goto pick-cluster-ip-tcp-3/);
    t.equal(await proxier.rulesIntact(), true);
    const seen = await askMany('10.96.0.10', 80, 10);
    t.ok(seen.size > 0, 'traffic flows');
  });

  t.test('drift: rules wiped by someone else are noticed and restored', async (t) => {
    for (const wipe of [
      ['delete', 'table', 'ip', 'weft'],
      ['flush', 'ruleset'],
    ]) {
      await sh('nft', ...wipe);
      t.equal(await proxier.rulesIntact(), false, `noticed: nft ${wipe.join(' ')}`);
      await proxier.sync({ servicePorts: ports, changed: undefined });
      t.equal(await proxier.rulesIntact(), true, 'restored by a full sync');
    }
    await sh('nft', 'delete', 'chain', 'ip', 'weft', 'nat-output');
    t.equal(await proxier.rulesIntact(), false, 'a missing base chain is noticed');
    await proxier.sync({ servicePorts: ports, changed: undefined });
    const seen = await askMany('10.96.0.10', 80, 10);
    t.ok(seen.size > 0, 'traffic flows again');
  });

  t.test('cleanup removes the table and is idempotent', async (t) => {
    await proxier.cleanup();
    t.notMatch(await sh('nft', 'list', 'tables'), /weft/);
    await proxier.cleanup();
    t.equal(await proxier.rulesIntact(), false);
    await proxier.close();
  });
}

async function scale(t: Test): Promise<void> {
  const proxier = await createNftablesProxier(goldenContext({ runner: execRunner({ timeoutMs: 120_000 }) }));
  const ports = syntheticServicePorts(10_000, 2);
  let t0 = performance.now();
  await proxier.sync({ servicePorts: ports, changed: undefined });
  t.comment(`full sync of 10,000 services x 2 endpoints: ${Math.round(performance.now() - t0)} ms`);
  t0 = performance.now();
  await proxier.sync({ servicePorts: ports, changed: undefined });
  t.comment(`full sync again, in place: ${Math.round(performance.now() - t0)} ms`);
  const id = 'bench/svc-5000:http';
  const sp = ports.get(id);
  if (!sp) throw new Error(`no ${id}`);
  const gone = sp.endpoints[1]?.ip ?? '';
  const after = withoutEndpoint(ports, id, gone);
  t0 = performance.now();
  await proxier.sync({ servicePorts: after, changed: new Set([id]) });
  t.comment(`one-endpoint partial sync: ${Math.round(performance.now() - t0)} ms`);
  const services = await sh('nft', 'list', 'map', 'ip', 'weft', 'service-ips');
  t.equal(services.match(/ : goto pick-cluster-ip-tcp-2/g)?.length, 9_999, '10,000 ClusterIPs dispatched');
  t.equal(services.match(/ : goto pick-cluster-ip-tcp-1/g)?.length, 1, 'one of them to its last endpoint');
  t.equal(await proxier.rulesIntact(), true);
  const chains = await sh('nft', 'list', 'chains', 'ip');
  t.ok((chains.match(/chain /g)?.length ?? 0) < 30, 'no chain per service');
  const eps = await sh('nft', 'list', 'map', 'ip', 'weft', 'cluster-ip-endpoints-tcp');
  t.notMatch(eps, new RegExp(`: ${gone.replaceAll('.', '\\.')} \\.`), 'the endpoint is gone');
  await proxier.cleanup();
}

runInNetns(
  import.meta.url,
  async (t) => {
    t.setTimeout(300_000);
    await t.test('golden services', golden);
    await t.test('scale smoke: 10,000 services x 2 endpoints', scale);
  },
  { role: 'nft' },
);

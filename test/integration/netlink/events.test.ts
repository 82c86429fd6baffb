/** Events for changes made by `ip` behind the wrapper's back, on an emitter and an async iterator. */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive } from '../../../src/exec/index.js';
import { waitFor } from '../../lab/exec.js';
import { silentLogger } from '../../../src/log/index.js';
import { openNetlink, openNetlinkEvents, type NetlinkEvent } from '../../../src/netlink/index.js';
import { runInNetns } from '../../helpers/netns-test.js';
import { ip } from './fixtures/iproute.js';

runInNetns(import.meta.url, async (t) => {
  const nl = openNetlink({ logger: silentLogger() });
  t.teardown(() => nl.close());

  /** Collects events and lets a test wait for one that matches. */
  function recorder(events: ReturnType<typeof nl.events>) {
    const seen: NetlinkEvent[] = [];
    const waiters: { pred: (e: NetlinkEvent) => boolean; resolve: (e: NetlinkEvent) => void }[] = [];
    events.on('event', (e) => {
      seen.push(e);
      for (const w of [...waiters]) {
        if (w.pred(e)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    });
    return {
      seen,
      wait(what: string, pred: (e: NetlinkEvent) => boolean, timeoutMs = 5_000): Promise<NetlinkEvent> {
        const old = seen.find(pred);
        if (old) return Promise.resolve(old);
        return new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no event: ${what}`)), timeoutMs);
          waiters.push({
            pred,
            resolve: (e) => {
              clearTimeout(timer);
              resolve(e);
            },
          });
        });
      },
    };
  }

  await t.test('link, address, route and neighbour events from ip', async (t) => {
    const events = nl.events();
    const rec = recorder(events);
    await events.ready;

    await ip('link', 'add', 'ev0', 'type', 'veth', 'peer', 'name', 'ev1');
    const linkNew = await rec.wait(
      'new link ev0',
      (e) => e.kind === 'link' && e.action === 'new' && e.link.name === 'ev0',
    );
    const ev0 = linkNew.kind === 'link' ? linkNew.link : undefined;
    t.match(ev0, { name: 'ev0', kind: 'veth', up: false });

    await ip('link', 'set', 'ev0', 'up');
    await ip('link', 'set', 'ev1', 'up');
    await rec.wait('ev0 up', (e) => e.kind === 'link' && e.link.name === 'ev0' && e.link.up);

    await ip('addr', 'add', '203.0.113.1/24', 'dev', 'ev0');
    const addr = await rec.wait('address', (e) => e.kind === 'address' && e.action === 'new');
    t.same(addr, {
      kind: 'address',
      action: 'new',
      address: { ifindex: ev0?.index, family: 'inet', address: '203.0.113.1', prefixLen: 24 },
    });

    await ip('route', 'add', '198.51.100.0/24', 'via', '203.0.113.254', 'dev', 'ev0');
    const route = await rec.wait('route', (e) => e.kind === 'route' && e.route.dst === '198.51.100.0/24');
    t.match(route, {
      kind: 'route',
      action: 'new',
      route: { dst: '198.51.100.0/24', gateway: '203.0.113.254', ifindex: ev0?.index, table: 254 },
    });

    await ip('neigh', 'add', '203.0.113.5', 'lladdr', '02:00:00:00:00:05', 'dev', 'ev0', 'nud', 'permanent');
    const neigh = await rec.wait(
      'neighbour',
      (e) => e.kind === 'neighbour' && e.neighbour.dst === '203.0.113.5',
    );
    t.match(neigh, {
      kind: 'neighbour',
      action: 'new',
      neighbour: { ifindex: ev0?.index, family: 'inet', lladdr: '02:00:00:00:00:05', state: 'permanent' },
    });

    await ip('neigh', 'del', '203.0.113.5', 'dev', 'ev0');
    await rec.wait('neighbour del', (e) => e.kind === 'neighbour' && e.action === 'del');
    await ip('route', 'del', '198.51.100.0/24');
    await rec.wait(
      'route del',
      (e) => e.kind === 'route' && e.action === 'del' && e.route.dst === '198.51.100.0/24',
    );
    await ip('addr', 'del', '203.0.113.1/24', 'dev', 'ev0');
    await rec.wait('address del', (e) => e.kind === 'address' && e.action === 'del');
    await ip('link', 'del', 'ev0');
    await rec.wait('link del', (e) => e.kind === 'link' && e.action === 'del' && e.link.name === 'ev0');
    t.notOk(
      rec.seen.some((e) => e.kind === 'resync'),
      'nothing lost',
    );
    events.close();
    t.ok(events.closed);
  });

  await t.test('FDB events, and group selection', async (t) => {
    const events = nl.events({ groups: ['neighbour'] });
    const rec = recorder(events);
    await events.ready;
    await ip('link', 'add', 'u0', 'type', 'veth', 'peer', 'name', 'u1');
    await ip(
      'link',
      'add',
      'flannel.1',
      'type',
      'vxlan',
      'id',
      '1',
      'dev',
      'u0',
      'dstport',
      '8472',
      'nolearning',
    );
    await ip('link', 'set', 'flannel.1', 'up');
    await nl.fdb.add({ dev: 'flannel.1', lladdr: '0a:58:0a:f4:02:00', dst: '192.0.2.2' });
    const fdb = await rec.wait('fdb', (e) => e.kind === 'neighbour' && e.neighbour.family === 'bridge');
    t.match(fdb, {
      kind: 'neighbour',
      action: 'new',
      neighbour: { family: 'bridge', lladdr: '0a:58:0a:f4:02:00', dst: '192.0.2.2', flags: ['self'] },
    });
    t.notOk(
      rec.seen.some((e) => e.kind === 'link'),
      'no link events without the link group',
    );
    events.close();
  });

  await t.test('async iteration, ended by close()', async (t) => {
    const events = openNetlinkEvents({ groups: ['link'], logger: silentLogger() });
    const it = events[Symbol.asyncIterator]();
    await events.ready;
    await ip('link', 'add', 'it0', 'type', 'bridge');
    let found: NetlinkEvent | undefined;
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      if (r.value.kind === 'link' && r.value.link.name === 'it0') {
        found = r.value;
        break;
      }
    }
    t.match(found, { kind: 'link', action: 'new', link: { name: 'it0', kind: 'bridge' } });

    const pending = it.next();
    events.close();
    t.same(await pending, { value: undefined, done: true }, 'a waiting next() ends on close');
    t.same(await it.next(), { value: undefined, done: true });

    // A for-await loop over a closed stream ends at once.
    let n = 0;
    for await (const _ of events) n++;
    t.equal(n, 0);
  });

  await t.test('the receive buffer passes net.core.rmem_max (SO_RCVBUFFORCE, as root)', async (t) => {
    const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
    const want = Math.min(rmemMax * 2, 1 << 30);
    const events = openNetlinkEvents({ groups: ['link'], recvBufferSize: want, logger: silentLogger() });
    t.teardown(() => events.close());
    await events.ready;
    // The kernel reports twice what was set; SO_RCVBUF alone stops at 2 x rmem_max.
    t.ok(
      (events.recvBufferGranted ?? 0) >= want * 2,
      `granted ${events.recvBufferGranted} bytes for ${want} asked (rmem_max ${rmemMax})`,
    );
  });

  await t.test('a slow iterator gets one resync instead of unbounded memory', async (t) => {
    const events = openNetlinkEvents({ groups: ['link'], maxQueued: 2, logger: silentLogger() });
    t.teardown(() => events.close());
    const it = events[Symbol.asyncIterator]();
    const rec = recorder(events);
    await events.ready;
    for (const name of ['s0', 's1', 's2', 's3']) await ip('link', 'add', name, 'type', 'bridge');
    await rec.wait('last link', (e) => e.kind === 'link' && e.link.name === 's3');
    const first = await it.next();
    t.same(first.value, { kind: 'resync', reason: 'overflow' });
    await it.return?.();
  });

  await t.test(
    'a receive-buffer overflow (ENOBUFS) becomes one resync, and the stream goes on',
    async (t) => {
      // The smallest buffer the kernel allows, and a consumer that reads nothing while ~600 link
      // notifications arrive: the socket overflows. Before the relay this aborted the process.
      const events = openNetlinkEvents({ groups: ['link'], recvBufferSize: 1, logger: silentLogger() });
      t.teardown(() => events.close());
      const rec = recorder(events);
      await events.ready;
      const relay = events.relayPid;
      // The relay is ours (we hold its PID): stop it so its own loop cannot keep up either.
      if (relay !== undefined) process.kill(relay, 'SIGSTOP');
      const batch = join(tmpdir(), `weft-nl-flood-${process.pid}.batch`);
      writeFileSync(
        batch,
        Array.from({ length: 150 }, (_, i) => `link add fl${i} type bridge\nlink del fl${i}\n`).join(''),
      );
      t.teardown(() => rmSync(batch, { force: true }));
      // Synchronous on purpose: this process's event loop is blocked during the flood.
      execFileSync('ip', ['-batch', batch]);
      if (relay !== undefined) process.kill(relay, 'SIGCONT');
      await rec.wait('resync', (e) => e.kind === 'resync' && e.reason === 'overflow', 10_000);
      t.pass('overflow reported as a resync; this process is still running');
      t.not(events.relayPid, relay, 'a new relay holds the socket');
      t.notOk(events.closed, 'the stream is still open');
      await ip('link', 'add', 'after0', 'type', 'bridge');
      await rec.wait('a change after the overflow', (e) => e.kind === 'link' && e.link.name === 'after0');
    },
  );

  await t.test('the relay does not outlive its parent', async (t) => {
    // A parent killed with SIGKILL cannot close anything: the relay must notice on its own.
    const script = `
      const { openNetlinkEvents } = await import(${JSON.stringify(new URL('../../../src/netlink/index.ts', import.meta.url).href)});
      const events = openNetlinkEvents({ groups: ['link'] });
      await events.ready;
      process.stdout.write(String(events.relayPid) + '\\n');
      setInterval(() => {}, 1000);
    `;
    const parent = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const relay = await new Promise<number>((resolve, reject) => {
      parent.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      parent.once('exit', (code) => reject(new Error(`parent exited early (${code})`)));
    });
    t.ok(processAlive(relay), `relay ${relay} runs`);
    process.kill(parent.pid as number, 'SIGKILL');
    await waitFor(() => !processAlive(relay), { what: 'the relay to exit', timeoutMs: 5_000 });
    t.pass('the relay exited with its parent');
  });
});

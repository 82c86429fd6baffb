/**
 * The daemon's memory at scale (issue 4 §9): run by bench/proxy-sync.js inside a network
 * namespace of its own (`ip netns exec <ns> node dist/bench/daemon-rss.js …`), so that etcd on
 * the namespace's loopback, the objects' loader and weft-proxy in nftables mode all meet there
 * and nothing reaches the root namespace's firewall.
 *
 * Starts etcd with a temp data dir, writes N services and their slices through the registry
 * Store (concurrently), starts weft-proxy against it, waits until the kernel holds the last
 * service and its last endpoint, then reads VmRSS and VmHWM from /proc/<pid>/status and stops
 * the daemon and etcd by PID. Prints progress lines starting with `[` and one JSON line (a
 * DaemonRss) last.
 *
 * Options: --services 10000 --endpoints 2 --run-id <id of the calling run>
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { messageOf } from '../src/errors/index.js';
import { openStore, type Store } from '../src/registry/index.js';
import { run, startProcess, waitFor, type ManagedProcess } from '../test/lab/exec.js';
import { newRunId, runDir } from '../test/lab/netns.js';
import {
  freePort,
  startLocalEtcd,
  startLocalRedis,
  type EtcdServer,
  type RedisServer,
} from '../test/lab/servers.js';
import { elapsedMs } from './harness.js';
import type { DaemonRss } from './proxy-sync-results.js';
import {
  BENCH_CLUSTER_CIDR,
  BENCH_NODE,
  clusterIpOf,
  endpointIpOf,
  storedObjects,
  type StoredObject,
} from './workload.js';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    endpoints: { type: 'string', default: '2' },
    'run-id': { type: 'string' },
    'timeout-s': { type: 'string', default: '300' },
    registry: { type: 'string', default: 'etcd' },
  },
});
const backend = values.registry === 'redis' ? 'redis' : 'etcd';
const services = Number(values.services);
const perService = Number(values.endpoints);
const timeoutMs = Number(values['timeout-s']) * 1000;
const runId = values['run-id'] ?? newRunId();

function log(msg: string): void {
  console.log(`[daemon-rss ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

/** Refuses to start a proxy that would program the root namespace. */
async function assertInNetns(): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'identify', String(process.pid)]);
  if (!stdout.trim()) throw new Error('daemon-rss must run inside a network namespace (ip netns exec)');
}

async function load(store: Store, objects: StoredObject[], concurrency = 64): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const o = objects[next++];
      if (!o) return;
      await store.create(o.key, o.value);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

/**
 * The error the daemon keeps logging when it cannot read the registry (it retries forever, so
 * waiting for the timeout would only hide the reason); undefined while there is none.
 */
function registryFailure(logFile: string): string | undefined {
  let text = '';
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n').reverse()) {
    const m = /"err":"([^"]*)","failures":(\d+)/.exec(line);
    // The daemon logs the 1st, 10th, 20th… failure: ten in a row is no passing outage.
    if (m && Number(m[2]) >= 10) return `weft-proxy cannot read the registry: ${m[1]}`;
  }
  return undefined;
}

async function main(): Promise<DaemonRss> {
  const out: DaemonRss = {
    status: 'error',
    services,
    endpointsPerService: perService,
    mode: 'nftables',
    registry: backend,
  };
  await assertInNetns();
  await run('ip', ['link', 'set', 'lo', 'up']);
  const dir = join(runDir(runId), 'daemon-rss');
  let etcd: EtcdServer | undefined;
  let redis: RedisServer | undefined;
  let daemon: ManagedProcess | undefined;
  let store: Store | undefined;
  try {
    let registryArgs: string[];
    if (backend === 'etcd') {
      etcd = await startLocalEtcd(dir);
      log(`etcd at ${etcd.endpoint}`);
      store = await openStore({ registry: 'etcd', etcd: { endpoints: [etcd.endpoint] } });
      registryArgs = ['--registry', 'etcd', '--etcd-endpoints', etcd.endpoint];
    } else {
      redis = await startLocalRedis(dir);
      log(`redis at ${redis.url}`);
      store = await openStore(redis.url);
      registryArgs = ['--registry', redis.url];
    }
    const objects: StoredObject[] = [];
    for (let i = 0; i < services; i++) objects.push(...storedObjects(i, perService));
    let s = process.hrtime.bigint();
    await load(store, objects);
    out.loadMs = Math.round(elapsedMs(s));
    log(`${objects.length} objects written in ${out.loadMs} ms`);

    const main = fileURLToPath(new URL('../src/proxy/main.js', import.meta.url));
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    s = process.hrtime.bigint();
    const metricsPort = await freePort();
    const logFile = join(dir, 'weft-proxy.log');
    daemon = startProcess({
      name: 'weft-proxy',
      cmd: process.execPath,
      args: [
        main,
        '--proxy-mode',
        'nftables',
        '--hostname-override',
        BENCH_NODE,
        '--cluster-cidr',
        BENCH_CLUSTER_CIDR,
        ...registryArgs,
        '--registry-prefix',
        '/weft',
        '--healthz-bind-address',
        `127.0.0.1:${await freePort()}`,
        '--metrics-bind-address',
        `127.0.0.1:${metricsPort}`,
      ],
      logFile,
      env,
    });
    const proc = daemon;
    // Give up at once when the daemon dies, instead of polling until the timeout.
    const died = new AbortController();
    void proc.exited().then((code) => died.abort(new Error(`weft-proxy exited (code ${code})`)));
    const lastIp = clusterIpOf(services - 1);
    const lastEp = endpointIpOf(services - 1, perService - 1, perService);
    await waitFor(
      async () => {
        const failure = registryFailure(logFile);
        if (failure) died.abort(new Error(failure));
        const r = await run('nft', ['list', 'ruleset'], { allowFail: true });
        return r.stdout.includes(lastIp) && r.stdout.includes(lastEp);
      },
      {
        what: `weft-proxy programming ${services} services`,
        timeoutMs,
        intervalMs: 500,
        signal: died.signal,
      },
    );
    out.firstSyncMs = Math.round(elapsedMs(s));
    const pid = daemon.pid;
    if (pid === undefined) throw new Error('weft-proxy has no PID');
    // Let the sync's garbage settle, as a node would see the daemon between syncs.
    await new Promise((r) => setTimeout(r, 3000));
    out.rssKiB = statusKiB(pid, 'VmRSS');
    out.peakRssKiB = statusKiB(pid, 'VmHWM');
    out.status = 'ok';
    log(`weft-proxy programmed in ${out.firstSyncMs} ms; RSS ${out.rssKiB} KiB, peak ${out.peakRssKiB} KiB`);
  } catch (err) {
    let tail = '';
    const message = messageOf(err);
    if (!message.includes('cannot read the registry')) {
      try {
        tail = readFileSync(join(dir, 'weft-proxy.log'), 'utf8').trim().split('\n').slice(-3).join(' | ');
      } catch {
        /* no log */
      }
    }
    out.note = `${message}${tail ? `; log: ${tail}` : ''}`.slice(0, 800);
    log(`error: ${out.note}`);
  } finally {
    await daemon?.stop();
    await store?.close().catch(() => {});
    await etcd?.stop();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

console.log(JSON.stringify(await main()));

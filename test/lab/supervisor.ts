/**
 * The lab supervisor: the process behind `weftctl lab up`, which owns one lab for its lifetime.
 * The lab's processes die with their owner (pdeathsig) and its namespaces carry the owner's PID
 * (so cleanupStale removes them once it is dead), so a lab that outlives `lab up` needs a
 * process of its own: this one. It creates the lab, starts weft-flanneld and weft-proxy on every
 * node, keeps the state file `<state dir>/<run>.json` current, and serves `GET /state`,
 * `POST /pods` (`{node, name, labels?, ports?, namespace?}`), `POST /pods/del` (`{node, name}`) and
 * `POST /down` on `<state dir>/<run>.sock`. SIGTERM or SIGINT tear down too.
 *
 *   node dist/test/lab/supervisor.js --state-dir DIR --nodes N --etcd-members 1|3
 *        [--no-daemons] [--start-log FILE]
 */
import { readFileSync, renameSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';
import { messageOf } from '../../src/errors/index.js';
import { overlayAddress, runFiles, writeRunState, type LabRunState } from '../../src/weftctl/lab-state.js';
import { FlannelCluster } from './flanneld.js';
import { Lab, type LabNode } from './lab.js';
import { newRunId } from './netns.js';
import type { AddPodOptions, LabContainerPort } from './pods.js';
import { ProxyCluster } from './proxy.js';

const DAEMON_READY_TIMEOUT_MS = 90_000;
const PROXY_MODE = 'nftables';

function log(msg: string): void {
  process.stdout.write(`${new Date().toISOString()} ${msg}\n`);
}

/** The lease of a node as its subnet.env tells it (`FLANNEL_SUBNET=10.244.1.1/24` → `10.244.1.0/24`). */
function leaseOf(lab: Lab, node: LabNode): string | undefined {
  try {
    const text = readFileSync(lab.subnetEnvPath(node), 'utf8');
    const m = /^FLANNEL_SUBNET=(\S+)\/(\d+)$/m.exec(text);
    const net = m && overlayAddress(`${m[1]}/${m[2]}`);
    return net && m ? `${net}/${m[2]}` : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The Pod object's fields of a `POST /pods` body, kept only when they have the right shape
 * (weftctl checked them against the API server's rules already).
 */
function podSpec(body: Record<string, unknown>): AddPodOptions {
  const out: AddPodOptions = {};
  const labels = body.labels;
  if (labels && typeof labels === 'object' && !Array.isArray(labels)) {
    const entries = Object.entries(labels).filter((e): e is [string, string] => typeof e[1] === 'string');
    out.labels = Object.fromEntries(entries);
  }
  if (Array.isArray(body.ports)) {
    out.ports = (body.ports as unknown[])
      .filter((p): p is LabContainerPort => typeof (p as LabContainerPort | null)?.containerPort === 'number')
      .map((p) => ({
        ...(typeof p.name === 'string' && p.name ? { name: p.name } : {}),
        containerPort: p.containerPort,
        ...(p.protocol === 'UDP' || p.protocol === 'TCP' ? { protocol: p.protocol } : {}),
      }));
  }
  if (typeof body.namespace === 'string') out.namespace = body.namespace;
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'state-dir': { type: 'string' },
      nodes: { type: 'string', default: '3' },
      'etcd-members': { type: 'string', default: '1' },
      'no-daemons': { type: 'boolean', default: false },
      'start-log': { type: 'string' },
    },
  });
  const dir = values['state-dir'];
  if (!dir) throw new Error('--state-dir is required');
  const runId = newRunId();
  const files = runFiles(dir, runId);
  // The log `lab up` opened for us becomes the run's (our stdout and stderr keep writing to it).
  if (values['start-log']) renameSync(values['start-log'], files.log);
  const daemons = !values['no-daemons'];
  const now = new Date().toISOString();
  const state: LabRunState = {
    runId,
    supervisorPid: process.pid,
    phase: 'starting',
    startedAt: now,
    updatedAt: now,
    socket: files.socket,
    logFile: files.log,
    labDir: '',
    daemons,
    ...(daemons ? { proxyMode: PROXY_MODE } : {}),
    nodes: [],
    etcd: [],
    pods: [],
  };
  const save = (patch: Partial<LabRunState> = {}): void => {
    Object.assign(state, patch, { updatedAt: new Date().toISOString() });
    writeRunState(dir, state);
  };
  save();
  log(`supervisor ${process.pid} for lab ${runId}`);

  let lab: Lab | undefined;
  let proxy: ProxyCluster | undefined;
  const abort = new AbortController();
  let stopping: Promise<void> | undefined;

  const describe = (l: Lab): void => {
    state.labDir = l.dir;
    state.underlay = { name: 'underlay', netns: l.underlay.netns, ip: l.underlay.ip };
    state.nodes = l.nodes.map((n, i) => ({
      name: n.name,
      alias: `n${i + 1}`,
      netns: n.netns,
      ip: n.ip,
      ...(leaseOf(l, n) ? { subnet: leaseOf(l, n) } : {}),
    }));
    state.etcd = l.etcdMembers.map((m) => ({ name: m.name, netns: m.netns, ip: m.ip, endpoint: m.endpoint }));
    state.pods = l.pods.map((p) => ({ name: p.name, node: p.node, netns: p.netns, ip: p.ip }));
  };

  const server = createServer((req, res) => void handle(req, res));
  const stop = (why: string, code: number): Promise<void> =>
    (stopping ??= (async () => {
      log(`stopping: ${why}`);
      abort.abort(new Error(why));
      if (state.phase !== 'failed') save({ phase: 'stopping', step: 'tearing down' });
      proxy?.close();
      try {
        const report = await lab?.teardown();
        if (report) {
          log(`torn down: ${report.namespaces.length} namespaces, ${report.pids.length} processes`);
        }
      } catch (err) {
        code = 1;
        log(`teardown: ${messageOf(err)}`);
      }
      // The state of a failed start stays for `lab up` to read; `lab up` or `lab clean` removes it.
      if (state.phase !== 'failed') rmSync(files.state, { force: true });
      server.close();
      rmSync(files.socket, { force: true });
      process.exitCode = code;
      // Whatever handle is still open (a client's socket) must not keep a torn-down lab's owner.
      setTimeout(() => process.exit(code), 2_000).unref();
    })());

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    try {
      let text = '';
      for await (const c of req) text += String(c);
      const body = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
      if (req.method === 'GET' && req.url === '/state') return reply(200, state);
      if (req.method === 'POST' && req.url === '/pods') {
        if (!lab || state.phase !== 'ready') return reply(409, { error: `lab ${runId} is ${state.phase}` });
        const node = state.nodes.find((n) => n.name === body.node || n.alias === body.node);
        if (!node) return reply(404, { error: `lab ${runId} has no node ${String(body.node)}` });
        const pod = await lab.addPod(node.name, String(body.name), podSpec(body));
        log(`pod ${pod.node}/${pod.name} ${pod.ip} in ${pod.netns}`);
        describe(lab);
        save();
        return reply(200, { node: pod.node, name: pod.name, netns: pod.netns, ip: pod.ip });
      }
      if (req.method === 'POST' && req.url === '/pods/del') {
        if (!lab || state.phase !== 'ready') return reply(409, { error: `lab ${runId} is ${state.phase}` });
        const node = state.nodes.find((n) => n.name === body.node || n.alias === body.node);
        const pod = node && lab.pods.find((p) => p.node === node.name && p.name === body.name);
        if (!pod)
          return reply(404, { error: `lab ${runId} has no pod ${String(body.node)}/${String(body.name)}` });
        await lab.removePod(pod);
        log(`pod ${pod.node}/${pod.name} removed`);
        describe(lab);
        save();
        return reply(200, { node: pod.node, name: pod.name, netns: pod.netns, ip: pod.ip });
      }
      if (req.method === 'POST' && req.url === '/down') {
        await stop('asked to by weftctl lab down', 0);
        return reply(200, { runId, stopped: true });
      }
      return reply(404, { error: `no ${req.method ?? ''} ${req.url ?? ''}` });
    } catch (err) {
      reply(500, { error: messageOf(err) });
    }
  }

  process.on('SIGTERM', () => void stop('SIGTERM', 0));
  process.on('SIGINT', () => void stop('SIGINT', 0));
  rmSync(files.socket, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(files.socket, resolve);
  });

  try {
    const nodes = Number(values.nodes);
    const members = Number(values['etcd-members']);
    lab = await Lab.create({
      nodes,
      etcdMembers: members as 1 | 3,
      runId,
      signal: abort.signal,
      onProgress: (step, message) => {
        log(`${step}: ${message}`);
        save({ step: message });
      },
    });
    describe(lab);
    save();
    if (daemons) {
      save({ step: 'starting weft-flanneld on every node' });
      const flannel = await FlannelCluster.create(lab);
      await flannel.waitReady(lab.nodes, DAEMON_READY_TIMEOUT_MS);
      save({ step: `starting weft-proxy (${PROXY_MODE}) on every node` });
      proxy = await ProxyCluster.create(lab, { mode: PROXY_MODE });
      await proxy.waitSynced(lab.nodes, 0, DAEMON_READY_TIMEOUT_MS);
      describe(lab);
    }
    save({ phase: 'ready', step: 'ready' });
    log(`lab ${runId} ready`);
  } catch (err) {
    if (stopping) return;
    log(`lab failed: ${messageOf(err)}`);
    const details = (err as { details?: { logs?: Record<string, string> } }).details;
    for (const [file, tail] of Object.entries(details?.logs ?? {})) log(`--- ${file}\n${tail}`);
    save({ phase: 'failed', error: messageOf(err) });
    await stop('start failed', 1);
  }
}

main().catch((err: unknown) => {
  log(`supervisor: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});

/**
 * weft-proxy in the lab: one daemon per node (compiled, from dist/, like weft-flanneld), Services
 * and EndpointSlices written to the lab's etcd with etcdctl, and the small pod-side programs the
 * proxy tests need: a UDP responder that answers with its pod's name, and a load client that makes
 * many sequential TCP or UDP requests from one process and reports who answered each.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../../src/errors/index.js';
import { run, waitFor, type ManagedProcess, type RunResult } from './exec.js';
import { DEFAULT_NETWORK, REPO_ROOT, ensureBuilt, metricValue, parseMetrics } from './flanneld.js';
import type { LogRecord, MetricSample } from './flanneld.js';
import type { Lab, LabNode, LabTarget } from './lab.js';

/** The compiled daemon every node runs. */
export const PROXY_MAIN = join(REPO_ROOT, 'dist', 'src', 'proxy', 'main.js');

/** Where each daemon's /healthz listens, inside its node's namespace. */
export const PROXY_HEALTHZ_PORT = 10256;
/** Where each daemon's /metrics listens, inside its node's namespace. */
export const PROXY_METRICS_PORT = 10249;

/** The gauge a daemon sets when a sync of its rules succeeded. */
export const LAST_SYNC_METRIC = 'weft_proxy_sync_proxy_rules_last_timestamp_seconds';

/** The gauge of registry changes a daemon has seen but not yet applied. */
export const PENDING_METRIC = 'weft_proxy_sync_proxy_rules_pending_changes';

/** Options of {@link ProxyCluster.create}. */
export interface ProxyClusterOptions {
  /** `--proxy-mode`. */
  mode: string;
  /** Extra flags for every daemon. */
  args?: string[];
  /** `--registry-prefix`. Default `/weft`, the daemon's default (then not passed). */
  prefix?: string;
  /** `--cluster-cidr`. Default flannel's network, 10.244.0.0/16. */
  clusterCidr?: string;
  /** Start the daemons at once. Default true. */
  start?: boolean;
}

/** The daemon on one node. */
export interface ProxyDaemon {
  node: LabNode;
  process: ManagedProcess;
}

function proxyError(message: string, details: Record<string, unknown> = {}): WeftError {
  return new WeftError(ErrorCodes.LAB, message, details);
}

/** weft-proxy on the nodes of a lab, and its objects in the lab's etcd. */
export class ProxyCluster {
  readonly lab: Lab;
  readonly mode: string;
  readonly prefix: string;
  readonly daemons = new Map<string, ProxyDaemon>();
  readonly #opts: ProxyClusterOptions;
  #restarts = 0;

  private constructor(lab: Lab, opts: ProxyClusterOptions) {
    this.lab = lab;
    this.mode = opts.mode;
    this.prefix = opts.prefix ?? '/weft';
    this.#opts = opts;
  }

  /** Builds dist/ when needed and (unless told not to) starts a daemon on every node. */
  static async create(lab: Lab, opts: ProxyClusterOptions): Promise<ProxyCluster> {
    await ensureBuilt();
    const c = new ProxyCluster(lab, opts);
    if (opts.start !== false) for (const n of lab.nodes) c.start(n);
    return c;
  }

  /** The flags a daemon on `node` gets (before any extra ones). */
  args(node: LabNode): string[] {
    return [
      `--proxy-mode=${this.mode}`,
      `--hostname-override=${node.name}`,
      `--cluster-cidr=${this.#opts.clusterCidr ?? DEFAULT_NETWORK}`,
      `--etcd-endpoints=${this.lab.etcdEndpoints.join(',')}`,
      ...(this.#opts.prefix !== undefined ? [`--registry-prefix=${this.#opts.prefix}`] : []),
      `--healthz-bind-address=127.0.0.1:${PROXY_HEALTHZ_PORT}`,
      `--metrics-bind-address=127.0.0.1:${PROXY_METRICS_PORT}`,
      ...(this.#opts.args ?? []),
    ];
  }

  /** Starts (or restarts) the daemon on `node`. */
  start(node: LabNode, extraArgs: string[] = []): ProxyDaemon {
    const name = this.daemons.has(node.name) ? `weft-proxy-${++this.#restarts}` : 'weft-proxy';
    const env: NodeJS.ProcessEnv = { WEFT_LOG_LEVEL: process.env.WEFT_LOG_LEVEL ?? 'info' };
    // tap's hooks ride on NODE_OPTIONS; the daemon must start as it would in production.
    const p = this.lab.startProcess(
      node,
      name,
      'env',
      ['-u', 'NODE_OPTIONS', process.execPath, PROXY_MAIN, ...this.args(node), ...extraArgs],
      env,
    );
    const d = { node, process: p };
    this.daemons.set(node.name, d);
    return d;
  }

  /** The daemon of a node; throws when none was started. */
  daemon(node: LabNode | string): ProxyDaemon {
    const name = typeof node === 'string' ? node : node.name;
    const d = this.daemons.get(name);
    if (!d) throw proxyError(`no weft-proxy on ${name}`);
    return d;
  }

  /** Stops the daemons (every one by default), leaving their rules in place. */
  async stop(nodes: readonly LabNode[] = this.lab.nodes): Promise<void> {
    await Promise.all(nodes.map((n) => this.daemons.get(n.name)?.process.stop(3_000)));
  }

  /**
   * Writes `value` at `key` from the underlay namespace, through a writer process that stays
   * connected to etcd (its JSON gateway). Resolves with the time (epoch ms) the writer took just
   * before sending the request: no later than the write, and without a process start in between,
   * so a latency measured from it is neither flattered nor inflated by the test's own overhead.
   */
  put(key: string, value: string): Promise<number> {
    return this.#write({ op: 'put', key, value });
  }

  /** Deletes `key`; resolves like {@link put}. */
  del(key: string): Promise<number> {
    return this.#write({ op: 'del', key });
  }

  #writer: RegistryWriter | undefined;

  async #write(req: { op: 'put' | 'del'; key: string; value?: string }): Promise<number> {
    this.#writer ??= new RegistryWriter(this.lab, this.lab.etcdEndpoints[0] ?? '');
    return this.#writer.send(req);
  }

  /** Stops the writer process (teardown of the lab removes it too, with the namespace). */
  close(): void {
    this.#writer?.close();
    this.#writer = undefined;
  }

  /** Stores a Kubernetes object (`value` as JSON, or raw text to store bad input). */
  putObject(obj: { key: string; value: unknown }): Promise<number> {
    return this.put(obj.key, typeof obj.value === 'string' ? obj.value : JSON.stringify(obj.value));
  }

  /** Every key under the prefix, with its value. */
  async objects(): Promise<Map<string, string>> {
    const r = await this.lab.etcdctl('underlay', ['get', '--prefix', `${this.prefix}/`, '-w', 'json']);
    const out = new Map<string, string>();
    const parsed = JSON.parse(r.stdout) as { kvs?: { key: string; value: string }[] };
    for (const kv of parsed.kvs ?? []) {
      out.set(Buffer.from(kv.key, 'base64').toString(), Buffer.from(kv.value, 'base64').toString());
    }
    return out;
  }

  /** GET `http://127.0.0.1:<port><path>` inside a node: status code and body (0 when down). */
  async http(node: LabNode, port: number, path: string): Promise<{ status: number; body: string }> {
    const r = await this.lab.exec(
      node,
      'curl',
      ['-s', '-m', '2', '-o', '-', '-w', '\n%{http_code}', `http://127.0.0.1:${port}${path}`],
      { allowFail: true },
    );
    const cut = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(cut + 1)) || 0, body: r.stdout.slice(0, Math.max(0, cut)) };
  }

  /** The daemon's `/healthz` (or another path of its health listener). */
  health(node: LabNode, path = '/healthz'): Promise<{ status: number; body: string }> {
    return this.http(node, PROXY_HEALTHZ_PORT, path);
  }

  /** The samples of a node's /metrics (throws unless it answers 200). */
  async metrics(node: LabNode): Promise<MetricSample[]> {
    const r = await this.http(node, PROXY_METRICS_PORT, '/metrics');
    if (r.status !== 200) throw proxyError(`weft-proxy /metrics on ${node.name} answered ${r.status}`);
    return parseMetrics(r.body);
  }

  /** When the daemon on `node` last synced successfully (epoch ms), or undefined. */
  async lastSyncMs(node: LabNode): Promise<number | undefined> {
    const v = metricValue(await this.metrics(node), LAST_SYNC_METRIC);
    return v === undefined || v <= 0 ? undefined : v * 1000;
  }

  /**
   * Waits until every given node's daemon has finished a sync at or after `sinceMs` (epoch ms;
   * default: any sync at all), has no change pending and answers /healthz with 200. A change the
   * daemon's watch has not delivered yet is not seen here: follow with a traffic check when it
   * matters. A daemon that exits fails the wait.
   */
  async waitSynced(
    nodes: readonly LabNode[] = this.lab.nodes,
    sinceMs = 0,
    timeoutMs = 20_000,
  ): Promise<void> {
    await Promise.all(
      nodes.map(async (n) => {
        const d = this.daemon(n);
        // A daemon that exits fails the wait at once, with the end of its log.
        const exited = new AbortController();
        void d.process
          .exited()
          .then((code) =>
            exited.abort(
              proxyError(
                `weft-proxy on ${n.name} exited (code ${code}): ${this.log(n).trimEnd().split('\n').slice(-5).join('\n')}`,
                { logFile: d.process.logFile },
              ),
            ),
          );
        await waitFor(
          async () => {
            // Throwing (rather than returning false) puts the last state seen into the timeout error.
            const samples = await this.metrics(n);
            const last = metricValue(samples, LAST_SYNC_METRIC) ?? 0;
            const pending = metricValue(samples, PENDING_METRIC) ?? 0;
            const health = await this.health(n);
            if (last <= 0 || last * 1000 < sinceMs || pending > 0 || health.status !== 200) {
              throw proxyError(
                `last sync ${last ? new Date(last * 1000).toISOString() : 'never'} (want ≥ ${new Date(sinceMs).toISOString()}), ${pending} changes pending, /healthz ${health.status} ${health.body.trim().slice(0, 200)}`,
              );
            }
            return true;
          },
          {
            what: `weft-proxy on ${n.name} to sync (mode ${this.mode})`,
            timeoutMs,
            // Each poll is two curl processes per node: keep it light on a loaded machine.
            intervalMs: 250,
            signal: exited.signal,
          },
        );
      }),
    );
  }

  /** The log of a node's daemon so far (every restart's, in order). */
  log(node: LabNode): string {
    const d = this.daemon(node);
    const dir = join(this.lab.logsDir, node.name);
    const files = ['weft-proxy', ...Array.from({ length: this.#restarts }, (_, i) => `weft-proxy-${i + 1}`)];
    let text = '';
    for (const f of files) {
      try {
        text += readFileSync(join(dir, `${f}.log`), 'utf8');
      } catch {
        /* not started on this node */
      }
    }
    return text || readFileOr(d.process.logFile);
  }

  /** The log of a node's daemon as pino records (other lines left out). */
  logRecords(node: LabNode): LogRecord[] {
    const out: LogRecord[] = [];
    for (const line of this.log(node).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogRecord);
      } catch {
        /* a line cut short */
      }
    }
    return out;
  }

  /**
   * Runs `weft-proxy --cleanup` on a node (stop its daemon first) with the flags a daemon there
   * gets; resolves with its exit code and output.
   */
  cleanup(node: LabNode): Promise<RunResult> {
    return this.lab.exec(
      node,
      'env',
      ['-u', 'NODE_OPTIONS', process.execPath, PROXY_MAIN, ...this.args(node), '--cleanup'],
      { allowFail: true, timeoutMs: 30_000 },
    );
  }

  /** What to look at when traffic goes wrong on a node: its ruleset and conntrack table. */
  async diagnose(node: LabNode): Promise<string> {
    const ct = await this.lab.exec(node, 'conntrack', ['-L'], { allowFail: true });
    const rules = await this.lab.exec(node, 'nft', ['list', 'ruleset'], { allowFail: true });
    return `# ${node.name} conntrack -L\n${ct.stdout}${ct.stderr}\n# ${node.name} nft list ruleset\n${rules.stdout}`;
  }

  /** The node's whole nftables ruleset (which shows iptables-nft rules too). */
  async ruleset(node: LabNode): Promise<string> {
    return (await this.lab.exec(node, 'nft', ['list', 'ruleset'])).stdout;
  }
}

/**
 * `node registry-writer.mjs <etcd url>`: reads JSON lines `{op, key, value}` on stdin, writes
 * through etcd's v3 JSON gateway and answers each with a JSON line `{t, error?}`, `t` being
 * Date.now() right before the request went out.
 */
export const REGISTRY_WRITER_JS = `import { createInterface } from 'node:readline';
const url = process.argv[2];
const b64 = (s) => Buffer.from(s).toString('base64');
const queue = [];
let busy = false;
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const req = queue.shift();
    const t = Date.now();
    let error;
    try {
      const path = req.op === 'put' ? '/v3/kv/put' : '/v3/kv/deleterange';
      const body = req.op === 'put' ? { key: b64(req.key), value: b64(req.value ?? '') } : { key: b64(req.key) };
      const res = await fetch(url + path, { method: 'POST', body: JSON.stringify(body) });
      const text = await res.text();
      if (!res.ok) error = res.status + ' ' + text;
    } catch (err) {
      error = String(err && err.message || err);
    }
    process.stdout.write(JSON.stringify({ t, error }) + '\\n');
  }
  busy = false;
}
createInterface({ input: process.stdin }).on('line', (line) => {
  queue.push(JSON.parse(line));
  void pump();
});
process.stdin.on('end', () => setTimeout(() => process.exit(0), 100));
`;

/** The writer process behind {@link ProxyCluster.put}: one request at a time, in order. */
class RegistryWriter {
  readonly #child: ChildProcess;
  readonly #waiting: { resolve: (t: number) => void; reject: (e: Error) => void; what: string }[] = [];
  #stderr = '';

  constructor(lab: Lab, etcdUrl: string) {
    const bin = join(lab.dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const script = join(bin, 'registry-writer.mjs');
    writeFileSync(script, REGISTRY_WRITER_JS);
    // setpriv --pdeathsig: the writer dies with the test process; deleting the underlay
    // namespace at teardown kills it too.
    this.#child = spawn(
      'ip',
      [
        'netns',
        'exec',
        lab.underlay.netns,
        'setpriv',
        '--pdeathsig',
        'KILL',
        '--',
        'env',
        '-u',
        'NODE_OPTIONS',
        process.execPath,
        script,
        etcdUrl,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.#child.stderr?.on('data', (b: Buffer) => (this.#stderr += b.toString()));
    createInterface({ input: this.#child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const w = this.#waiting.shift();
      if (!w) return;
      try {
        const r = JSON.parse(line) as { t: number; error?: string };
        if (r.error) w.reject(proxyError(`registry write ${w.what}: ${r.error}`));
        else w.resolve(r.t);
      } catch {
        w.reject(proxyError(`registry write ${w.what}: bad answer ${line}`));
      }
    });
    this.#child.on('exit', (code) => {
      for (const w of this.#waiting.splice(0)) {
        w.reject(
          proxyError(`registry writer exited (code ${code}) before ${w.what}: ${this.#stderr.trim()}`),
        );
      }
    });
    this.#child.stdin?.on('error', () => {});
    // The writer must not keep the test process alive on its own.
    this.#child.unref();
    for (const s of [this.#child.stdin, this.#child.stdout, this.#child.stderr]) {
      (s as unknown as { unref?: () => void } | null)?.unref?.();
    }
  }

  send(req: { op: 'put' | 'del'; key: string; value?: string }): Promise<number> {
    const what = `${req.op} ${req.key}`;
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) {
      return Promise.reject(proxyError(`registry writer is gone; cannot ${what}: ${this.#stderr.trim()}`));
    }
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject, what });
      this.#child.stdin?.write(`${JSON.stringify(req)}\n`);
    });
  }

  close(): void {
    this.#child.stdin?.end();
  }
}

function readFileOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

// The pod-side programs: plain JavaScript on Node's core modules, written to the run dir, so they
// run in any namespace without a loader.

/**
 * `node proxy-udp-responder.mjs <port> <reply>`: prints `listening udp <port>` once bound, then
 * answers every datagram with `<reply> <datagram>` (the client's sequence number comes back).
 */
export const UDP_RESPONDER_JS = `import { createSocket } from 'node:dgram';
const [port, reply] = process.argv.slice(2);
const sock = createSocket('udp4');
sock.on('message', (msg, rinfo) => {
  sock.send(reply + ' ' + msg.toString().trim(), rinfo.port, rinfo.address);
});
sock.on('error', (err) => {
  console.error('udp-responder: ' + err.message);
  process.exit(1);
});
sock.bind(Number(port), '0.0.0.0', () => console.log('listening udp ' + port));
process.on('SIGTERM', () => process.exit(0));
`;

/**
 * `node proxy-client.mjs '<json ClientSpec>'`: sequential requests, one at a time, for `count`
 * requests or `durationMs`, whichever is given; prints one JSON line, {@link ClientReport}.
 * TCP: connect, send `ping`, half-close, read the answer's first word. UDP: one socket (bound to
 * `srcPort` when given, so every request is one conntrack flow), `q<seq>` out, the reply with the
 * same sequence number in.
 */
export const PROXY_CLIENT_JS = `import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
const spec = JSON.parse(process.argv[2]);
const timeoutMs = spec.timeoutMs ?? 1000;
const counts = {};
const errors = {};
const log = [];
const t0 = Date.now();
function tcpOnce() {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const sock = connect({ host: spec.host, port: spec.port });
    const finish = (who) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(who);
    };
    const timer = setTimeout(() => finish('!ETIMEDOUT'), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.end('ping\\n'));
    sock.on('data', (d) => (data += d));
    sock.on('end', () => finish(data.trim().split(/\\s+/)[0] || '!EEMPTY'));
    sock.on('error', (err) => finish('!' + (err.code ?? 'ERROR')));
  });
}
let udp;
let seq = 0;
let waiting;
async function udpSocket() {
  if (udp) return udp;
  udp = createSocket({ type: 'udp4', reuseAddr: true });
  udp.on('message', (msg) => {
    const [who, tag] = msg.toString().trim().split(/\\s+/);
    if (waiting && tag === 'q' + waiting.seq) waiting.resolve(who);
  });
  udp.on('error', () => {});
  await new Promise((res) => udp.bind(spec.srcPort ?? 0, res));
  return udp;
}
async function udpOnce() {
  const s = await udpSocket();
  const mySeq = ++seq;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiting = undefined;
      resolve('!ETIMEDOUT');
    }, timeoutMs);
    waiting = {
      seq: mySeq,
      resolve: (who) => {
        clearTimeout(timer);
        waiting = undefined;
        resolve(who);
      },
    };
    s.send('q' + mySeq, spec.port, spec.host);
  });
}
const once = spec.proto === 'udp' ? udpOnce : tcpOnce;
for (let i = 0; ; i++) {
  if (spec.count !== undefined && i >= spec.count) break;
  if (spec.durationMs !== undefined && Date.now() - t0 >= spec.durationMs) break;
  if (spec.count === undefined && spec.durationMs === undefined) break;
  const start = Date.now();
  const who = await once();
  const bucket = who.startsWith('!') ? errors : counts;
  const key = who.startsWith('!') ? who.slice(1) : who;
  bucket[key] = (bucket[key] ?? 0) + 1;
  if (spec.log) log.push([start, who, Date.now() - start]);
  if (i === 0 && spec.readyFile) writeFileSync(spec.readyFile, String(start));
  if (spec.stopOn && spec.stopOn.includes(who)) break;
  if (spec.intervalMs) await new Promise((r) => setTimeout(r, spec.intervalMs));
}
if (udp) udp.close();
process.stdout.write(JSON.stringify({ counts, errors, log, elapsedMs: Date.now() - t0 }) + '\\n');
`;

/** What the load client is told to do. */
export interface ClientSpec {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  /** Number of requests. */
  count?: number;
  /** Or: keep requesting for this long. */
  durationMs?: number;
  /** Per-request timeout. Default 1 000 ms. */
  timeoutMs?: number;
  /** UDP: bind this source port (one conntrack flow across runs). */
  srcPort?: number;
  /** Pause between requests. */
  intervalMs?: number;
  /** Record every request in `log`. */
  log?: boolean;
  /**
   * Written (with the first request's start time) once the first request finished: a running
   * client can take a while to start on a loaded machine, and some tests must act mid-run.
   */
  readyFile?: string;
  /** Stop after the first request answered by one of these (or failed so, as `!CODE`). */
  stopOn?: string[];
}

/** What the load client reports. */
export interface ClientReport {
  /** Answers by responder name (a pod name). */
  counts: Record<string, number>;
  /** Failures by code (ECONNREFUSED, ETIMEDOUT...). */
  errors: Record<string, number>;
  /** With `log`: [start epoch ms, who (or `!CODE`), duration ms] per request. */
  log: [number, string, number][];
  elapsedMs: number;
}

const scriptsWritten = new Set<string>();

/** Writes the pod-side programs to `<lab dir>/bin` (once); returns their paths. */
export function proxyScripts(lab: Lab): { client: string; udpResponder: string } {
  const bin = join(lab.dir, 'bin');
  const paths = { client: join(bin, 'proxy-client.mjs'), udpResponder: join(bin, 'proxy-udp-responder.mjs') };
  if (!scriptsWritten.has(lab.dir)) {
    mkdirSync(bin, { recursive: true });
    writeFileSync(paths.client, PROXY_CLIENT_JS);
    writeFileSync(paths.udpResponder, UDP_RESPONDER_JS);
    scriptsWritten.add(lab.dir);
  }
  return paths;
}

/** Runs the load client in a namespace of the lab (a pod, a node, `underlay`). */
export async function runClient(lab: Lab, from: LabTarget, spec: ClientSpec): Promise<ClientReport> {
  const { client } = proxyScripts(lab);
  const budget =
    (spec.durationMs ?? 0) + (spec.count ?? 1) * ((spec.timeoutMs ?? 1000) + (spec.intervalMs ?? 0)) + 15_000;
  const r = await run('env', ['-u', 'NODE_OPTIONS', process.execPath, client, JSON.stringify(spec)], {
    netns: lab.netnsOf(from),
    allowFail: true,
    timeoutMs: budget,
  });
  try {
    return JSON.parse(r.stdout) as ClientReport;
  } catch {
    throw proxyError(`proxy client in ${lab.netnsOf(from)} failed (exit ${r.code}): ${r.stderr.trim()}`, {
      stdout: r.stdout,
    });
  }
}

/** Starts the UDP responder in a pod (answering with `reply`, default the pod's name). */
export async function startUdpServer(
  lab: Lab,
  target: LabTarget,
  port: number,
  opts: { reply?: string; name?: string } = {},
): Promise<ManagedProcess> {
  const { udpResponder } = proxyScripts(lab);
  const netns = lab.netnsOf(target);
  const reply = opts.reply ?? lab.pods.find((p) => p.netns === netns)?.name;
  if (!reply) throw proxyError(`startUdpServer: no reply given and ${netns} is not a pod`);
  const p = lab.startProcess(netns, opts.name ?? `udp-${port}`, 'env', [
    '-u',
    'NODE_OPTIONS',
    process.execPath,
    udpResponder,
    String(port),
    reply,
  ]);
  const offset = readFileOr(p.logFile).length;
  await waitFor(
    () => {
      if (!p.running) throw proxyError(`UDP responder in ${netns} exited; see ${p.logFile}`);
      return readFileOr(p.logFile).slice(offset).includes(`listening udp ${port}`);
    },
    { what: `UDP responder on port ${port} in ${netns}`, timeoutMs: 10_000, intervalMs: 20 },
  );
  return p;
}

/** Who answers one TCP request from `from` to `ip:port` (the responder's reply: a pod name). */
export async function whoAnswers(lab: Lab, from: LabTarget, ip: string, port: number): Promise<string> {
  return (await lab.tcpRequest(from, ip, port, { timeoutMs: 3000 })).trim();
}

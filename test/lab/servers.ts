/**
 * Real registry servers for tests and the lab: Debian's etcd and redis-server, on free ports,
 * with data in a directory of the run, optionally inside a network namespace.
 */
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../../src/errors/index.js';
import { run, startProcess, waitFor, type ManagedProcess, type RunResult } from './exec.js';

/** A port the kernel reports free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Aborts once `proc` has exited, so a wait for a server that died gives up at once. */
function exitSignal(proc: ManagedProcess | undefined, what: string): AbortSignal | undefined {
  if (!proc) return undefined;
  const ac = new AbortController();
  void proc.exited().then((code) => {
    ac.abort(new WeftError(ErrorCodes.EXEC, `${what} exited (code ${code}); see ${proc.logFile}`));
  });
  return ac.signal;
}

/** One etcd member's identity. */
export interface EtcdMember {
  name: string;
  /** Address clients and peers use. */
  host: string;
  clientPort: number;
  peerPort: number;
  netns?: string;
}

/** Options for {@link startEtcd}. */
export interface EtcdOptions {
  member: EtcdMember;
  /** Every member of the cluster (including this one); a single member when absent. */
  cluster?: EtcdMember[];
  /** Holds `<name>.data` and `<name>.log`. */
  dir: string;
  /** Wait until this member answers health checks. Default true (a lone member of a new cluster cannot). */
  waitHealthy?: boolean;
  /** Serve clients over TLS (`https://` client URLs); peers stay on plain http. */
  tls?: EtcdServerTls;
  /**
   * etcd's `--max-request-bytes` (its default is 1.5 MiB): raised by tests that must store an
   * object larger than a real API server would let through, to see what a reader does with it.
   */
  maxRequestBytes?: number;
}

/** TLS of an etcd member's client URLs. */
export interface EtcdServerTls {
  /** The server certificate (`--cert-file`); must cover the member's host. */
  certFile: string;
  /** Its key (`--key-file`). */
  keyFile: string;
  /** CA of client certificates (`--trusted-ca-file`), also what etcdctl verifies the server with. */
  caFile: string;
  /** Require a client certificate signed by `caFile` (`--client-cert-auth`). Default false. */
  clientCertAuth?: boolean;
  /**
   * Client certificate and key etcdctl presents (health checks, {@link EtcdServer.etcdctl});
   * default the server certificate, which then needs the clientAuth usage.
   */
  client?: { certFile: string; keyFile: string };
}

/** Options of {@link EtcdServer.etcdctl}. */
export interface EtcdServerCtlOptions {
  /** `name:password` (`--user`), once authentication is enabled. */
  user?: string;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
  /** Kill etcdctl after this many ms. Default 60 000. */
  timeoutMs?: number;
}

const peerUrl = (m: EtcdMember): string => `http://${m.host}:${m.peerPort}`;
const clientUrl = (m: EtcdMember, tls?: EtcdServerTls): string =>
  `${tls ? 'https' : 'http'}://${m.host}:${m.clientPort}`;

/** A running etcd member that can be stopped, killed and started again on the same data. */
export class EtcdServer {
  readonly member: EtcdMember;
  readonly #opts: EtcdOptions;
  #proc: ManagedProcess | undefined;

  constructor(opts: EtcdOptions) {
    this.#opts = opts;
    this.member = opts.member;
  }

  /** Client URL of this member. */
  get endpoint(): string {
    return clientUrl(this.member, this.#opts.tls);
  }

  get process(): ManagedProcess | undefined {
    return this.#proc;
  }

  async start(): Promise<void> {
    const { member: m, dir, tls } = this.#opts;
    const cluster = this.#opts.cluster ?? [m];
    const tlsArgs = tls
      ? [
          '--cert-file',
          tls.certFile,
          '--key-file',
          tls.keyFile,
          '--trusted-ca-file',
          tls.caFile,
          ...(tls.clientCertAuth ? ['--client-cert-auth'] : []),
        ]
      : [];
    mkdirSync(dir, { recursive: true });
    this.#proc = startProcess({
      name: `etcd ${m.name}`,
      cmd: 'etcd',
      args: [
        '--name',
        m.name,
        '--data-dir',
        join(dir, `${m.name}.data`),
        '--listen-client-urls',
        clientUrl(m, tls),
        '--advertise-client-urls',
        clientUrl(m, tls),
        ...tlsArgs,
        ...(this.#opts.maxRequestBytes !== undefined
          ? ['--max-request-bytes', String(this.#opts.maxRequestBytes)]
          : []),
        '--listen-peer-urls',
        peerUrl(m),
        '--initial-advertise-peer-urls',
        peerUrl(m),
        '--initial-cluster',
        cluster.map((c) => `${c.name}=${peerUrl(c)}`).join(','),
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        `weft-${cluster.map((c) => c.name).join('-')}`,
        // Short elections keep failover tests quick; the lab's network has sub-ms latency.
        '--heartbeat-interval',
        '100',
        '--election-timeout',
        '1000',
        '--logger',
        'zap',
      ],
      netns: m.netns,
      logFile: join(dir, `${m.name}.log`),
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
    });
    if (this.#opts.waitHealthy !== false) await this.waitHealthy();
  }

  /** Resolves once `etcdctl endpoint health` succeeds against this member. */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const exited = exitSignal(this.#proc, `etcd ${this.member.name}`);
    await waitFor(
      async () => {
        if (this.#proc && !this.#proc.running) throw new Error(`etcd exited; see ${this.#proc.logFile}`);
        const r = await this.etcdctl(['--command-timeout=1s', 'endpoint', 'health'], { allowFail: true });
        return r.code === 0;
      },
      { what: `etcd ${this.member.name} at ${this.endpoint}`, timeoutMs, intervalMs: 200, signal: exited },
    );
  }

  /** Runs `etcdctl` (API v3) against this member, with its TLS material when it has some. */
  etcdctl(args: readonly string[], opts: EtcdServerCtlOptions = {}): Promise<RunResult> {
    const tls = this.#opts.tls;
    const client = tls?.client ?? tls;
    const tlsArgs =
      tls && client ? ['--cacert', tls.caFile, '--cert', client.certFile, '--key', client.keyFile] : [];
    const userArgs = opts.user !== undefined ? ['--user', opts.user] : [];
    return run('etcdctl', ['--endpoints', this.endpoint, ...tlsArgs, ...userArgs, ...args], {
      netns: this.member.netns,
      ...(opts.allowFail !== undefined && { allowFail: opts.allowFail }),
      ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }),
      env: { ...process.env, ETCDCTL_API: '3' },
    });
  }

  async stop(): Promise<void> {
    await this.#proc?.stop();
  }

  async kill(): Promise<void> {
    await this.#proc?.kill();
  }
}

/** Start a single etcd member (or one member of `cluster`). */
export async function startEtcd(opts: EtcdOptions): Promise<EtcdServer> {
  const s = new EtcdServer(opts);
  try {
    await s.start();
  } catch (err) {
    // The caller never gets the server, so nobody else could stop it.
    await s.kill();
    throw err;
  }
  return s;
}

/** Options of {@link startLocalEtcd}. */
export interface LocalEtcdOptions {
  /** Serve clients over TLS; the server certificate must cover IP 127.0.0.1. */
  tls?: EtcdServerTls;
}

/** A single etcd on 127.0.0.1 with free ports, for store tests. */
export async function startLocalEtcd(
  dir: string,
  name = 'etcd0',
  opts: LocalEtcdOptions = {},
): Promise<EtcdServer> {
  const member = { name, host: '127.0.0.1', clientPort: await freePort(), peerPort: await freePort() };
  return startEtcd({ member, dir, ...(opts.tls && { tls: opts.tls }) });
}

/** Start a cluster; members are started together because none is healthy without a quorum. */
export async function startEtcdCluster(
  members: EtcdMember[],
  dir: string,
  opts: Pick<EtcdOptions, 'maxRequestBytes'> = {},
): Promise<EtcdServer[]> {
  const servers = members.map(
    (member) => new EtcdServer({ member, cluster: members, dir, waitHealthy: false, ...opts }),
  );
  try {
    await Promise.all(servers.map((s) => s.start()));
    await Promise.all(servers.map((s) => s.waitHealthy()));
  } catch (err) {
    // The caller never gets the servers, so nobody else could stop them.
    await Promise.all(servers.map((s) => s.kill()));
    throw err;
  }
  return servers;
}

/** Options for {@link RedisServer}. */
export interface RedisOptions {
  host?: string;
  port?: number;
  netns?: string;
  /** Holds the append-only file and the log. */
  dir: string;
}

/** A running redis-server with persistence, so a restart keeps keys and streams. */
export class RedisServer {
  readonly host: string;
  readonly port: number;
  readonly #opts: RedisOptions;
  #proc: ManagedProcess | undefined;

  constructor(opts: RedisOptions & { port: number }) {
    this.#opts = opts;
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port;
  }

  get url(): string {
    return `redis://${this.host}:${this.port}`;
  }

  get process(): ManagedProcess | undefined {
    return this.#proc;
  }

  async start(): Promise<void> {
    mkdirSync(this.#opts.dir, { recursive: true });
    this.#proc = startProcess({
      name: 'redis',
      cmd: 'redis-server',
      args: [
        '--bind',
        this.host,
        '--port',
        String(this.port),
        '--dir',
        this.#opts.dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
        '--protected-mode',
        'no',
        '--daemonize',
        'no',
      ],
      netns: this.#opts.netns,
      logFile: join(this.#opts.dir, 'redis.log'),
    });
    await waitFor(
      async () => {
        if (this.#proc && !this.#proc.running) throw new Error(`redis exited; see ${this.#proc.logFile}`);
        const r = await run('redis-cli', ['-h', this.host, '-p', String(this.port), 'ping'], {
          netns: this.#opts.netns,
          allowFail: true,
        });
        return r.stdout.trim() === 'PONG';
      },
      { what: `redis at ${this.url}`, timeoutMs: 15_000, signal: exitSignal(this.#proc, 'redis') },
    );
  }

  async stop(): Promise<void> {
    await this.#proc?.stop();
  }

  async kill(): Promise<void> {
    await this.#proc?.kill();
  }
}

/** A redis-server on 127.0.0.1 with a free port, for store tests. */
export async function startLocalRedis(dir: string): Promise<RedisServer> {
  const s = new RedisServer({ dir, port: await freePort() });
  try {
    await s.start();
  } catch (err) {
    await s.kill();
    throw err;
  }
  return s;
}

/**
 * A registry client for lab tests that works the same on etcd and Redis: one long-lived process in
 * the lab's underlay namespace (the servers are out of the root namespace's reach) that opens
 * weft's own Store (dist/src/registry) and answers JSON-line requests. Writes report the time
 * (epoch ms) taken right before the write went out, so a latency measured from it includes
 * neither a process start nor the test's own overhead; watches stream every event with its
 * revision, which is how a test counts the writes a daemon made.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../../src/errors/index.js';
import { REPO_ROOT, ensureBuilt, type Lab } from '../lab/index.js';

/** One key as listed. */
export interface AgentKeyValue {
  key: string;
  value: string;
  modRevision: number;
}

/** One watch event as the agent forwards it. */
export interface AgentWatchEvent {
  type: 'put' | 'delete' | 'resync';
  key?: string;
  value?: string;
  revision: number;
  /** When the agent received it (epoch ms). */
  at: number;
}

const AGENT_JS = (registry: string): string => `import { createInterface } from 'node:readline';
const { openStore } = await import(${JSON.stringify(registry)});
const store = await openStore(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const watches = new Map();
async function put(key, value) {
  for (let i = 0; i < 20; i++) {
    const cur = await store.get(key);
    const t = Date.now();
    const r = cur
      ? await store.update(key, value, { modRevision: cur.modRevision })
      : await store.create(key, value);
    if (r.updated || r.created) return { t, revision: r.revision };
  }
  throw new Error('put ' + key + ': lost 20 races in a row');
}
async function handle(req) {
  switch (req.op) {
    case 'put':
      return put(req.key, req.value);
    case 'del': {
      const t = Date.now();
      return { t, deleted: await store.delete(req.key) };
    }
    case 'get': {
      const kv = await store.get(req.key);
      return { kv: kv ? { key: kv.key, value: kv.value, modRevision: kv.modRevision } : null };
    }
    case 'list': {
      const r = await store.list(req.prefix);
      return {
        revision: r.revision,
        items: r.items.map((kv) => ({ key: kv.key, value: kv.value, modRevision: kv.modRevision })),
      };
    }
    case 'watch': {
      const ac = new AbortController();
      watches.set(req.id, ac);
      void (async () => {
        try {
          for await (const ev of store.watch(req.prefix, { fromRevision: req.fromRevision, signal: ac.signal })) {
            out({ watch: req.id, ev: { type: ev.type, key: ev.key, value: ev.value, revision: ev.revision, at: Date.now() } });
          }
        } catch (err) {
          if (!ac.signal.aborted) out({ watch: req.id, error: String((err && err.message) || err) });
        }
      })();
      return {};
    }
    case 'unwatch':
      watches.get(req.watch)?.abort();
      watches.delete(req.watch);
      return {};
    default:
      throw new Error('unknown op ' + req.op);
  }
}
createInterface({ input: process.stdin }).on('line', (line) => {
  const req = JSON.parse(line);
  handle(req).then(
    (r) => out({ id: req.id, ...r }),
    (err) => out({ id: req.id, error: String((err && err.message) || err) }),
  );
});
process.stdin.on('end', async () => {
  for (const ac of watches.values()) ac.abort();
  await store.close().catch(() => undefined);
  process.exit(0);
});
out({ ready: true });
`;

function agentError(message: string): WeftError {
  return new WeftError(ErrorCodes.LAB, message);
}

/** A live watch: its events so far, and a way to stop it. */
export interface AgentWatch {
  readonly events: AgentWatchEvent[];
  stop(): Promise<void>;
}

/** The agent process; {@link RegistryAgent.start} makes one. */
export class RegistryAgent {
  readonly #child: ChildProcess;
  readonly #pending = new Map<
    number,
    { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }
  >();
  readonly #watches = new Map<number, AgentWatchEvent[]>();
  #seq = 0;
  #stderr = '';
  #ready: Promise<void>;

  private constructor(lab: Lab, target: string) {
    const bin = join(lab.dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const script = join(bin, 'registry-agent.mjs');
    writeFileSync(script, AGENT_JS(join(REPO_ROOT, 'dist', 'src', 'registry', 'index.js')));
    // setpriv --pdeathsig: the agent dies with the test; deleting the namespace kills it too.
    this.#child = spawn(
      'ip',
      [
        ...['netns', 'exec', lab.underlay.netns, 'setpriv', '--pdeathsig', 'KILL', '--'],
        ...['env', '-u', 'NODE_OPTIONS', process.execPath, script, target],
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.#child.stderr?.on(
      'data',
      (b: Buffer) => (this.#stderr = (this.#stderr + b.toString()).slice(-4000)),
    );
    let ready!: () => void;
    let failed!: (e: Error) => void;
    this.#ready = new Promise<void>((res, rej) => {
      ready = res;
      failed = rej;
    });
    this.#child.on('exit', (code) => {
      const err = agentError(`registry agent exited (${String(code)}): ${this.#stderr.trim()}`);
      failed(err);
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    });
    createInterface({ input: this.#child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (msg.ready) return ready();
      if (typeof msg.watch === 'number') {
        if (msg.ev) this.#watches.get(msg.watch)?.push(msg.ev as AgentWatchEvent);
        return;
      }
      const p = this.#pending.get(msg.id as number);
      if (!p) return;
      this.#pending.delete(msg.id as number);
      if (typeof msg.error === 'string') p.reject(agentError(`registry agent: ${msg.error}`));
      else p.resolve(msg);
    });
  }

  /**
   * Starts an agent in the lab's underlay namespace. `target` is what openStore takes: the etcd
   * endpoints comma-joined, or a `redis://` URL. Resolves once the store is open.
   */
  static async start(lab: Lab, target: string): Promise<RegistryAgent> {
    await ensureBuilt();
    const a = new RegistryAgent(lab, target);
    await a.#ready;
    return a;
  }

  #call(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = ++this.#seq;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#child.stdin?.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  }

  /** Writes `value` at `key` whatever is there; resolves with the time just before the write. */
  async put(key: string, value: string | Record<string, unknown>): Promise<{ t: number; revision: number }> {
    const r = await this.#call({
      op: 'put',
      key,
      value: typeof value === 'string' ? value : JSON.stringify(value),
    });
    return { t: r.t as number, revision: r.revision as number };
  }

  /** Deletes `key`; resolves with the time just before the delete. */
  async del(key: string): Promise<number> {
    return (await this.#call({ op: 'del', key })).t as number;
  }

  async get(key: string): Promise<AgentKeyValue | undefined> {
    return ((await this.#call({ op: 'get', key })).kv as AgentKeyValue | null) ?? undefined;
  }

  async list(prefix: string): Promise<{ revision: number; items: AgentKeyValue[] }> {
    const r = await this.#call({ op: 'list', prefix });
    return { revision: r.revision as number, items: r.items as AgentKeyValue[] };
  }

  /** Follows `prefix` from `fromRevision` (default: the next write). */
  async watch(prefix: string, fromRevision?: number): Promise<AgentWatch> {
    const from = fromRevision ?? (await this.list(prefix)).revision + 1;
    const events: AgentWatchEvent[] = [];
    const id = this.#seq + 1;
    this.#watches.set(id, events);
    await this.#call({ op: 'watch', prefix, fromRevision: from });
    return {
      events,
      stop: async () => {
        await this.#call({ op: 'unwatch', watch: id });
        this.#watches.delete(id);
      },
    };
  }

  /** Ends the agent (closing stdin lets it close the store). */
  close(): void {
    this.#child.stdin?.end();
  }
}

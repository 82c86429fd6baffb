/**
 * The request socket: one rtnetlink socket with a scheduler and a deadline on every request.
 *
 * The `netlink` package keeps a single multipart-reassembly buffer per socket, so a dump's parts
 * must never interleave with any other reply: two dumps at once fail with EBUSY or "Multipart
 * message not terminated properly", and an ACK landing mid-dump truncates the dump. Dumps
 * therefore run alone; plain requests (one reply each) may overlap with each other. Requests
 * start in arrival order, so a dump is never starved by a stream of writes.
 *
 * Plain requests are also capped in number: every reply lands in the socket's receive buffer, and
 * when that overflows the kernel flags the socket with ENOBUFS, which the package's native code
 * turns into a process abort (see events.ts). A few hundred concurrent writes are enough.
 *
 * The package's `request()` waits forever by default. Each request here has a deadline; after a
 * timeout (or a dump the package failed to reassemble) the socket is replaced, once the requests
 * still on it have settled: a late reply or the rest of a dump would otherwise be read as the
 * answer to a later request, and a dump the kernel is still running makes later dumps EBUSY.
 */
import {
  Flags,
  FlagsGet,
  MessageType,
  Protocol,
  createNetlink,
  parseError,
  rt,
  type NetlinkMessage,
  type NetlinkSocket as LibSocket,
} from 'netlink';
import { componentLogger, type Logger } from '../log/index.js';
import { closedError, errnoName, netlinkError, protocolError, timeoutError } from './errors.js';

/** The part of the library socket used here; tests substitute one that never answers. */
export type Transport = Pick<LibSocket, 'request' | 'close' | 'on'>;

/** Options for {@link NetlinkSocket}. */
export interface NetlinkSocketOptions {
  /**
   * Deadline of each request in milliseconds, counted from when it is sent (time spent queued
   * behind a dump is not counted). Default 5000.
   */
  timeoutMs?: number;
  /**
   * Requests on the wire at once; more wait in the queue. Default 32, whose replies fit the
   * receive buffer many times over (a few hundred overflow it; see the module comment).
   */
  maxInFlight?: number;
  /** Default: the `netlink` component logger. */
  logger?: Logger;
  /**
   * Opens the underlying library socket. Default: an unreferenced NETLINK_ROUTE socket in the
   * namespace of this process, with a 1 MiB receive buffer (capped by net.core.rmem_max). For
   * tests that need a kernel that never answers.
   */
  openTransport?: () => Transport;
}

/** One request, as the operation modules describe it. */
export interface RequestSpec {
  /** Operation name for errors and logs, e.g. `addRoute`. */
  op: string;
  /** The object operated on, in iproute2 words, e.g. `10.244.2.0/24 via 10.244.2.0 dev flannel.1`. */
  target: string;
  /** rtnetlink message type (RTM_*). */
  type: number;
  payload: Uint8Array[];
  /** NLM_F_* modifiers (CREATE, EXCL, REPLACE...). REQUEST and ACK are always set. */
  flags?: number;
  /** A dump (NLM_F_DUMP): runs alone on the socket. */
  dump?: boolean;
  /** Overrides the socket's deadline for this request. */
  timeoutMs?: number;
}

const RECV_BUFFER = 1 << 20;

/** How often a dump the kernel flags as interrupted (NLM_F_DUMP_INTR) is retried. */
const DUMP_ATTEMPTS = 5;

interface Task {
  exclusive: boolean;
  run: () => Promise<void>;
  cancel: (err: Error) => void;
}

interface InFlight {
  fail: (err: Error) => void;
}

export class NetlinkSocket {
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #log: Logger;
  readonly #open: () => Transport;
  #transport: Transport;
  #generation = 0;
  #resetPending = false;
  #closed = false;
  #queue: Task[] = [];
  #running = 0;
  #exclusiveRunning = false;
  readonly #inFlight = new Set<InFlight>();

  constructor(opts: NetlinkSocketOptions = {}) {
    this.#timeoutMs = opts.timeoutMs ?? 5_000;
    this.#maxInFlight = Math.max(1, opts.maxInFlight ?? 32);
    this.#log = opts.logger ?? componentLogger('netlink');
    // The library types both buffer sizes as required; 0 leaves the send buffer alone.
    this.#open =
      opts.openTransport ??
      (() => createNetlink(Protocol.ROUTE, { recvBufferSize: RECV_BUFFER, sendBufferSize: 0 }));
    this.#transport = this.#openTransport();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Send one request and return the decoded reply messages (none for a plain ACK). */
  async request(spec: RequestSpec): Promise<rt.Message[]> {
    for (let attempt = 1; ; attempt++) {
      const msgs = await this.#schedule(spec);
      if (!spec.dump || !msgs.some((m) => m.flags & Flags.DUMP_INTR)) return this.#decode(spec, msgs);
      // The table changed while it was being dumped; a partial view would make a reconciler
      // add what exists or delete what is needed.
      if (attempt >= DUMP_ATTEMPTS) throw netlinkError(spec.op, spec.target, 'EINTR');
      this.#log.debug({ op: spec.op, attempt }, 'netlink dump interrupted by a concurrent change; retrying');
    }
  }

  /** Close the socket: queued and in-flight requests reject with CLOSED. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const queued = this.#queue;
    this.#queue = [];
    for (const task of queued) task.cancel(new Error('closed'));
    for (const req of [...this.#inFlight]) req.fail(new Error('closed'));
    this.#closeTransport(this.#transport);
  }

  #openTransport(): Transport {
    const transport = this.#open();
    // An 'error' event without a listener would throw from the library's native callback and
    // take the process down.
    transport.on('error', (err) => this.#log.warn({ err }, 'netlink socket error'));
    return transport;
  }

  #closeTransport(transport: Transport): void {
    try {
      transport.close();
    } catch (err) {
      this.#log.debug({ err }, 'closing netlink socket failed');
    }
  }

  #schedule(spec: RequestSpec): Promise<NetlinkMessage[]> {
    if (this.#closed) return Promise.reject(closedError(spec.op, spec.target));
    return new Promise((resolve, reject) => {
      this.#queue.push({
        exclusive: spec.dump === true,
        run: () => this.#send(spec).then(resolve, reject),
        cancel: () => reject(closedError(spec.op, spec.target)),
      });
      this.#pump();
    });
  }

  #pump(): void {
    while (!this.#closed) {
      if (this.#resetPending) {
        if (this.#running > 0) return;
        this.#closeTransport(this.#transport);
        this.#transport = this.#openTransport();
        this.#generation++;
        this.#resetPending = false;
        this.#log.warn('netlink socket replaced after a request timed out');
      }
      const head = this.#queue[0];
      if (!head || this.#exclusiveRunning || this.#running >= this.#maxInFlight) return;
      if (head.exclusive && this.#running > 0) return;
      this.#queue.shift();
      this.#running++;
      if (head.exclusive) this.#exclusiveRunning = true;
      void head.run().finally(() => {
        this.#running--;
        if (head.exclusive) this.#exclusiveRunning = false;
        this.#pump();
      });
    }
  }

  #send(spec: RequestSpec): Promise<NetlinkMessage[]> {
    const { op, target } = spec;
    const timeoutMs = spec.timeoutMs ?? this.#timeoutMs;
    const generation = this.#generation;
    return new Promise((resolve, reject) => {
      let settled = false;
      const entry: InFlight = {
        fail: () => finish(() => reject(closedError(op, target))),
      };
      const finish = (then: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#inFlight.delete(entry);
        then();
      };
      const timer = setTimeout(() => {
        finish(() => reject(timeoutError(op, target, timeoutMs)));
        if (generation === this.#generation) this.#resetPending = true;
      }, timeoutMs);
      this.#inFlight.add(entry);
      let pending: Promise<[NetlinkMessage[], unknown]>;
      try {
        pending = this.#transport.request(spec.type, spec.payload, {
          flags: (spec.flags ?? 0) | (spec.dump ? FlagsGet.DUMP : 0),
          // Errors are decoded here so the errno number survives; the library would throw
          // an Error whose only trace of it is the message text.
          checkError: false,
        });
      } catch (err) {
        finish(() => reject(this.#libraryError(op, target, err)));
        return;
      }
      pending.then(
        ([msgs]) =>
          finish(() => {
            const first = msgs[0];
            if (first?.type !== MessageType.ERROR) return resolve(msgs);
            const { errno } = parseError(first.data, first.flags);
            if (errno === 0) resolve([]);
            else reject(netlinkError(op, target, errnoName(errno)));
          }),
        (err: unknown) =>
          finish(() => {
            // A dump the library gave up on may still be running in the kernel, which answers
            // every later dump on this socket with EBUSY until the rest is read: start afresh.
            if (spec.dump && generation === this.#generation) this.#resetPending = true;
            reject(this.#libraryError(op, target, err));
          }),
      );
    });
  }

  #libraryError(op: string, target: string, err: unknown): Error {
    // sendmsg failures arrive as ErrnoException with the errno name in `code`.
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return netlinkError(op, target, code, err);
    return protocolError(op, target, err instanceof Error ? err.message : String(err), err);
  }

  #decode(spec: RequestSpec, msgs: NetlinkMessage[]): rt.Message[] {
    const out: rt.Message[] = [];
    for (const m of msgs) {
      if (m.type < 16) continue; // NOOP, ERROR (ACK), DONE, OVERRUN: control, not data
      try {
        out.push(rt.parseMessage(m.type, m.data));
      } catch (err) {
        throw protocolError(
          spec.op,
          spec.target,
          `cannot decode reply: ${err instanceof Error ? err.message : String(err)}`,
          err,
        );
      }
    }
    return out;
  }
}

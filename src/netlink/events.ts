/**
 * Kernel change notifications (links, addresses, routes, neighbours) from their own socket.
 *
 * Multicast notifications must not share the request socket: they would arrive between a dump's
 * parts and break its reassembly (see socket.ts). Anything that loses an event is delivered, in
 * order, as a `resync` event telling a reconciler to re-list.
 *
 * The socket lives in a relay child process (event-relay-child.ts), not here. With netlink 0.3.0
 * a receive-buffer overflow is fatal to the process that owns the socket: the kernel marks it with
 * ENOBUFS, libuv reports the resulting POLLERR as UV_EBADF, and the package's native poll handler
 * builds its exception with a NULL syscall name, which throws inside a libuv callback and aborts
 * (SIGABRT, "terminate called after throwing an instance of 'Napi::Error'"). No JavaScript handler
 * sees it, and the package exposes neither NETLINK_NO_ENOBUFS nor SO_RCVBUFFORCE. In the relay the
 * abort costs one small process: a new relay joins the groups, and only then is `resync` emitted,
 * so a consumer's re-list cannot miss a change made in between. A large receive buffer (capped at
 * 2 x net.core.rmem_max) still makes overflows rare.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseMessages, rt, type NetlinkMessage } from 'netlink';
import { Backoff } from '../backoff/index.js';
import { componentLogger, type Logger } from '../log/index.js';
import { decodeAddress, decodeLink, decodeNeighbour, decodeRoute, isClonedRoute } from './decode.js';
import { FRAME, FrameReader, type RelayConfig } from './event-relay-frames.js';
import type { Address, IpFamily, Link, Neighbour, Route } from './types.js';

/** What a notification is about. */
export type NetlinkEventGroup = 'link' | 'address' | 'route' | 'neighbour';

/** `new` covers both creation and change (the kernel sends RTM_NEW* for either). */
export type NetlinkEventAction = 'new' | 'del';

/** One notification, decoded to the same value objects the dumps return. */
export type NetlinkEvent =
  | { kind: 'link'; action: NetlinkEventAction; link: Link }
  | { kind: 'address'; action: NetlinkEventAction; address: Address }
  | { kind: 'route'; action: NetlinkEventAction; route: Route }
  | { kind: 'neighbour'; action: NetlinkEventAction; neighbour: Neighbour }
  /**
   * Events were lost: re-list. `overflow`: a receive buffer or a queue filled; `undecodable`: a
   * message could not be read; `restarted`: the relay process ended for another reason.
   */
  | { kind: 'resync'; reason: 'overflow' | 'undecodable' | 'restarted' };

/** Options for {@link NetlinkEvents}. */
export interface NetlinkEventsOptions {
  /** Default: all four. */
  groups?: NetlinkEventGroup[];
  /** Families of address and route notifications. Default: both. */
  families?: IpFamily[];
  /**
   * Receive buffer in bytes: SO_RCVBUFFORCE where the process has CAP_NET_ADMIN and the native
   * addon is built, else SO_RCVBUF, which the kernel caps at 2 x net.core.rmem_max. Default 4 MiB: an
   * overflow costs a relay restart and a full re-list (see the module comment), so ask for plenty.
   */
  recvBufferSize?: number;
  /**
   * Bytes of notifications the relay holds while this process does not read (a blocked event
   * loop) before it drops them and reports an overflow. Default 16 MiB.
   */
  maxPendingBytes?: number;
  /**
   * Events each async iterator may hold for a slow consumer; beyond that they are dropped and
   * replaced by one `resync`. Default 10 000.
   */
  maxQueued?: number;
  /** Keep the process alive while open. Default true, so `for await` over events does not just end. */
  ref?: boolean;
  /** Default: the `netlink` component logger. */
  logger?: Logger;
}

interface EventMap {
  event: [NetlinkEvent];
  /** The socket failed and was closed; iterators end with this error. */
  error: [Error];
  close: [];
}

const GROUPS: Record<NetlinkEventGroup, (f: IpFamily[]) => (keyof typeof rt.MulticastGroups)[]> = {
  link: () => ['LINK'],
  neighbour: () => ['NEIGH'],
  address: (f) => f.map((x) => (x === 'inet' ? 'IPV4_IFADDR' : 'IPV6_IFADDR')),
  route: (f) => f.map((x) => (x === 'inet' ? 'IPV4_ROUTE' : 'IPV6_ROUTE')),
};

const T = rt.MessageType;

/** The relay's module next to this one: `.ts` when run from the sources (tests), `.js` when built. */
const RELAY_PATH = fileURLToPath(
  new URL(`./event-relay-child${extname(fileURLToPath(import.meta.url))}`, import.meta.url),
);

/**
 * Node flags for the relay. Built (.js), none: it needs no more than plain Node. From the sources
 * (.ts, tests), the parent's module loader flags, and only those: `-e <script>` or `--inspect`
 * passed on would run the parent's script again or fight over a debugger port.
 */
function relayExecArgv(): string[] {
  if (!RELAY_PATH.endsWith('.ts')) return [];
  return process.execArgv.filter(
    (a) =>
      /^--(import|loader|experimental-loader|require|conditions)=/.test(a) || a === '--enable-source-maps',
  );
}

/** Relay starts in a row that may fail before one joins its groups. */
const MAX_START_FAILURES = 5;

/** Bytes of the relay's stderr kept for the log line about its end. */
const STDERR_TAIL = 2048;

export class NetlinkEvents extends EventEmitter<EventMap> implements AsyncIterable<NetlinkEvent> {
  /** Resolves once the groups are joined (changes made from then on are reported); rejects if they cannot be. */
  readonly ready: Promise<void>;
  readonly #log: Logger;
  readonly #maxQueued: number;
  readonly #config: RelayConfig;
  readonly #ref: boolean;
  readonly #restartBackoff = new Backoff({ initialMs: 50, maxMs: 5_000 });
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;
  #child: ChildProcess | undefined;
  #restart: NodeJS.Timeout | undefined;
  #everReady = false;
  #granted: number | undefined;
  #startFailures = 0;
  /** Why the next READY must be announced as a resync (the previous relay lost events). */
  #lostReason: 'overflow' | 'restarted' | undefined;
  #closed = false;
  #failure: Error | undefined;

  constructor(opts: NetlinkEventsOptions = {}) {
    super();
    this.#log = opts.logger ?? componentLogger('netlink');
    this.#maxQueued = opts.maxQueued ?? 10_000;
    this.#ref = opts.ref ?? true;
    const families = opts.families ?? ['inet', 'inet6'];
    const groups = new Set<number>();
    for (const g of opts.groups ?? (['link', 'address', 'route', 'neighbour'] as const)) {
      for (const name of GROUPS[g](families)) groups.add(rt.MulticastGroups[name]);
    }
    this.#config = {
      groups: [...groups],
      recvBufferSize: opts.recvBufferSize ?? 4 << 20,
      maxPendingBytes: opts.maxPendingBytes ?? 16 << 20,
    };
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Nobody has to await `ready`; a failure is also an 'error' event and ends the iterators.
    this.ready.catch(() => {});
    this.#spawn();
  }

  /** PID of the relay process holding the socket (diagnostics, tests). */
  get relayPid(): number | undefined {
    return this.#child?.pid;
  }

  /** The receive buffer the kernel granted the relay's socket, in bytes, once ready. */
  get recvBufferGranted(): number | undefined {
    return this.#granted;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stop listening; iterators end. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#restart);
    this.#stopChild();
    this.#rejectReady(this.#failure ?? new Error('netlink event stream closed before it was ready'));
    this.emit('close');
  }

  /** Events from now until {@link close}; each iterator has its own queue. */
  [Symbol.asyncIterator](): AsyncIterator<NetlinkEvent> {
    const queue: NetlinkEvent[] = [];
    let waiter:
      { resolve: (r: IteratorResult<NetlinkEvent>) => void; reject: (e: Error) => void } | undefined;
    let ended = this.#closed;
    let failure = this.#failure;
    const onEvent = (e: NetlinkEvent): void => {
      if (waiter) {
        const w = waiter;
        waiter = undefined;
        w.resolve({ value: e, done: false });
      } else if (queue.length >= this.#maxQueued) {
        queue.length = 0;
        queue.push({ kind: 'resync', reason: 'overflow' });
      } else queue.push(e);
    };
    const onClose = (): void => {
      ended = true;
      failure = this.#failure;
      detach();
      if (!waiter) return;
      const w = waiter;
      waiter = undefined;
      if (failure) {
        w.reject(failure);
        failure = undefined;
      } else w.resolve({ value: undefined, done: true });
    };
    const detach = (): void => {
      this.off('event', onEvent);
      this.off('close', onClose);
    };
    if (!ended) {
      this.on('event', onEvent);
      this.on('close', onClose);
    }
    return {
      next: () => {
        const value = queue.shift();
        if (value) return Promise.resolve({ value, done: false });
        if (ended) {
          const f = failure;
          failure = undefined;
          return f ? Promise.reject(f) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => (waiter = { resolve, reject }));
      },
      return: () => {
        ended = true;
        queue.length = 0;
        detach();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  #emitEvent(e: NetlinkEvent): void {
    if (!this.#closed) this.emit('event', e);
  }

  #spawn(): void {
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...relayExecArgv(), RELAY_PATH, JSON.stringify(this.#config)], {
        stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      this.#relayEnded(undefined, err instanceof Error ? err.message : String(err));
      return;
    }
    this.#child = child;
    const out = child.stdio[3] as Readable;
    const errOut = child.stderr as Readable;
    let stderr = '';
    let failed: string | undefined;
    let ready = false;
    const reader = new FrameReader();
    errOut.setEncoding('utf8');
    errOut.on('data', (d: string) => (stderr = (stderr + d).slice(-STDERR_TAIL)));
    out.on('data', (chunk: Buffer) => {
      if (this.#child !== child) return;
      let frames;
      try {
        frames = reader.push(chunk);
      } catch (err) {
        this.#log.error({ err }, 'netlink event relay sent garbage; restarting it');
        this.#lostReason = 'restarted';
        child.kill('SIGKILL');
        return;
      }
      for (const f of frames) {
        if (f.type === FRAME.DATA) this.#receive(f.payload);
        else if (f.type === FRAME.LOST)
          this.#lost('overflow', 'recvmsg reported ENOBUFS or this process fell behind');
        else if (f.type === FRAME.FAILED) failed = f.payload.toString('utf8');
        else if (f.type === FRAME.READY) {
          ready = true;
          this.#onReady(f.payload.length >= 4 ? f.payload.readUInt32BE(0) : undefined);
        }
      }
    });
    out.on('error', () => {});
    errOut.on('error', () => {});
    child.on('error', (err) => this.#log.debug({ err }, 'netlink event relay: process error'));
    child.on('exit', (code, signal) => {
      if (this.#child !== child) return;
      this.#child = undefined;
      if (this.#closed) return;
      if (ready) {
        // SIGABRT is the package's abort on ENOBUFS (see the module comment).
        const reason = signal === 'SIGABRT' ? 'overflow' : 'restarted';
        this.#log.warn(
          { code, signal, stderr: stderr.trim() || undefined },
          reason === 'overflow'
            ? 'netlink notifications lost: receive buffer overflow; restarting the event relay'
            : 'netlink event relay ended; restarting it',
        );
        this.#lostReason ??= reason;
        this.#startFailures = 0;
        this.#spawn();
        return;
      }
      this.#relayEnded(
        code ?? signal ?? undefined,
        failed ?? (stderr.trim() || 'exited before joining its groups'),
      );
    });
    if (!this.#ref) {
      child.unref();
      (out as Readable & { unref?: () => void }).unref?.();
      (errOut as Readable & { unref?: () => void }).unref?.();
    }
  }

  /** A relay ended before it joined its groups: retry a few times, then fail the stream. */
  #relayEnded(status: number | string | undefined, why: string): void {
    const err = new Error(`netlink event relay failed (${status ?? 'spawn'}): ${why}`);
    if (!this.#everReady || ++this.#startFailures > MAX_START_FAILURES) {
      this.#onError(err);
      return;
    }
    const delay = this.#restartBackoff.next();
    this.#log.warn({ err, delayMs: delay }, 'netlink event relay could not start; retrying');
    this.#lostReason ??= 'restarted';
    this.#restart = setTimeout(() => {
      this.#restart = undefined;
      if (!this.#closed) this.#spawn();
    }, delay);
    if (!this.#ref) this.#restart.unref();
  }

  #onReady(granted: number | undefined): void {
    this.#granted = granted;
    this.#startFailures = 0;
    this.#restartBackoff.reset();
    if (!this.#everReady) {
      this.#everReady = true;
      if (granted !== undefined && granted < this.#config.recvBufferSize) {
        this.#log.info(
          { requested: this.#config.recvBufferSize, granted },
          'netlink event socket got a smaller receive buffer than asked (raise net.core.rmem_max)',
        );
      }
      this.#resolveReady();
    }
    // Subscribed again: whatever the consumer re-lists from now on is followed by its changes.
    const reason = this.#lostReason;
    this.#lostReason = undefined;
    if (reason) this.#emitEvent({ kind: 'resync', reason });
  }

  #lost(reason: 'overflow', why: string): void {
    this.#log.warn({ why }, 'netlink notifications lost; consumers re-list');
    this.#emitEvent({ kind: 'resync', reason });
  }

  #stopChild(): void {
    const child = this.#child;
    this.#child = undefined;
    if (!child) return;
    child.stdio[3]?.destroy();
    child.stderr?.destroy();
    // By PID, the one we started; it also exits on its own once fd 3 closes.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  }

  #onError(err: Error): void {
    this.#log.error({ err }, 'netlink event stream failed');
    this.#failure = err;
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.close();
  }

  #receive(datagram: Buffer): void {
    let msgs: NetlinkMessage[];
    try {
      msgs = parseMessages(datagram);
    } catch (err) {
      this.#log.warn({ err }, 'netlink notification could not be read');
      this.#emitEvent({ kind: 'resync', reason: 'undecodable' });
      return;
    }
    for (const m of msgs) {
      let event: NetlinkEvent | undefined;
      try {
        event = decodeEvent(m);
      } catch (err) {
        this.#log.warn({ err, type: m.type }, 'netlink notification could not be decoded');
        event = { kind: 'resync', reason: 'undecodable' };
      }
      if (event) this.#emitEvent(event);
    }
  }
}

function decodeEvent(m: NetlinkMessage): NetlinkEvent | undefined {
  const action: NetlinkEventAction =
    m.type === T.DELLINK || m.type === T.DELADDR || m.type === T.DELROUTE || m.type === T.DELNEIGH
      ? 'del'
      : 'new';
  switch (m.type) {
    case T.NEWLINK:
    case T.DELLINK:
      return { kind: 'link', action, link: decodeLink(rt.parseLinkMessage(m.data)) };
    case T.NEWADDR:
    case T.DELADDR: {
      const address = decodeAddress(rt.parseAddressMessage(m.data));
      return address && { kind: 'address', action, address };
    }
    case T.NEWROUTE:
    case T.DELROUTE: {
      const msg = rt.parseRouteMessage(m.data);
      const route = isClonedRoute(msg) ? undefined : decodeRoute(msg);
      return route && { kind: 'route', action, route };
    }
    case T.NEWNEIGH:
    case T.DELNEIGH: {
      const neighbour = decodeNeighbour(rt.parseNeighborMessage(m.data));
      return neighbour && { kind: 'neighbour', action, neighbour };
    }
    default:
      return undefined;
  }
}

/** Open an event stream in this process's network namespace. */
export function openNetlinkEvents(opts: NetlinkEventsOptions = {}): NetlinkEvents {
  return new NetlinkEvents(opts);
}

/**
 * Kernel change notifications (links, addresses, routes, neighbours) from their own socket.
 *
 * Multicast notifications must not share the request socket: they would arrive between a dump's
 * parts and break its reassembly (see socket.ts). Anything that loses an event is delivered, in
 * order, as a `resync` event telling a reconciler to re-list.
 *
 * Receive-buffer overflow is fatal with netlink 0.3.0: the kernel marks the socket with ENOBUFS,
 * libuv reports the resulting POLLERR as UV_EBADF, and the package's native poll handler then
 * builds its exception with a NULL syscall name, which throws inside a libuv callback and aborts
 * the process (SIGABRT, "terminate called after throwing an instance of 'Napi::Error'"). No
 * JavaScript handler sees it, and the package exposes no NETLINK_NO_ENOBUFS. The defence here is
 * a large receive buffer (the kernel caps it at 2 x net.core.rmem_max, so raise that sysctl on
 * busy nodes) and a consumer that never blocks the event loop for long. The ENOBUFS handling
 * below is for a fixed native layer.
 */
import { EventEmitter } from 'node:events';
import { Protocol, createNetlink, rt, type NetlinkMessage, type NetlinkSocket as LibSocket } from 'netlink';
import { componentLogger, type Logger } from '../log/index.js';
import { decodeAddress, decodeLink, decodeNeighbour, decodeRoute, isClonedRoute } from './decode.js';
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
  /** Events were lost (`overflow`: a buffer filled; `undecodable`: a message could not be read): re-list. */
  | { kind: 'resync'; reason: 'overflow' | 'undecodable' };

/** Options for {@link NetlinkEvents}. */
export interface NetlinkEventsOptions {
  /** Default: all four. */
  groups?: NetlinkEventGroup[];
  /** Families of address and route notifications. Default: both. */
  families?: IpFamily[];
  /**
   * SO_RCVBUF in bytes; the kernel grants at most 2 x net.core.rmem_max. Default 4 MiB: an
   * overflow aborts the process (see the module comment), so ask for plenty.
   */
  recvBufferSize?: number;
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

export class NetlinkEvents extends EventEmitter<EventMap> implements AsyncIterable<NetlinkEvent> {
  readonly #sock: LibSocket;
  readonly #log: Logger;
  readonly #maxQueued: number;
  #closed = false;
  #failure: Error | undefined;

  constructor(opts: NetlinkEventsOptions = {}) {
    super();
    this.#log = opts.logger ?? componentLogger('netlink');
    this.#maxQueued = opts.maxQueued ?? 10_000;
    // The library types both buffer sizes as required; 0 leaves the send buffer alone.
    this.#sock = createNetlink(Protocol.ROUTE, {
      ref: opts.ref ?? true,
      recvBufferSize: opts.recvBufferSize ?? 4 << 20,
      sendBufferSize: 0,
    });
    this.#sock.on('message', (msgs) => this.#receive(msgs));
    this.#sock.on('invalid', (err) => {
      this.#log.warn({ err }, 'netlink notification could not be read');
      this.#emitEvent({ kind: 'resync', reason: 'undecodable' });
    });
    this.#sock.on('error', (err) => this.#onError(err));
    const families = opts.families ?? ['inet', 'inet6'];
    try {
      for (const g of opts.groups ?? (['link', 'address', 'route', 'neighbour'] as const)) {
        for (const name of GROUPS[g](families)) this.#sock.addMembership(rt.MulticastGroups[name]);
      }
    } catch (err) {
      this.#sock.close();
      throw err;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stop listening; iterators end. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#sock.close();
    } catch (err) {
      this.#log.debug({ err }, 'closing netlink event socket failed');
    }
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

  #onError(err: Error & { code?: string }): void {
    if (err.code === 'ENOBUFS') {
      this.#log.warn('netlink notifications lost: receive buffer overflow');
      this.#emitEvent({ kind: 'resync', reason: 'overflow' });
      return;
    }
    // The native layer closes the socket after a poll error; nothing more will arrive.
    this.#log.error({ err }, 'netlink event socket failed');
    this.#failure = err;
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.close();
  }

  #receive(msgs: NetlinkMessage[]): void {
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

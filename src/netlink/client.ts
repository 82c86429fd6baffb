/**
 * The entry point: one request socket shared by the per-concept APIs, plus event streams on
 * sockets of their own. Everything lives in the network namespace of the process that opens it
 * (Node cannot setns, so a daemon managing another namespace must run inside it).
 */
import { Addresses } from './addresses.js';
import { NetlinkEvents, type NetlinkEventsOptions } from './events.js';
import { Links } from './links.js';
import { Fdb, Neighbours } from './neighbours.js';
import { Routes } from './routes.js';
import { NetlinkSocket, type NetlinkSocketOptions } from './socket.js';

/** Options for {@link openNetlink}. */
export type NetlinkOptions = NetlinkSocketOptions;

export class Netlink {
  readonly links: Links;
  readonly addresses: Addresses;
  readonly neighbours: Neighbours;
  readonly fdb: Fdb;
  readonly routes: Routes;
  readonly #sock: NetlinkSocket;
  readonly #opts: NetlinkOptions;
  readonly #events = new Set<NetlinkEvents>();

  constructor(opts: NetlinkOptions = {}) {
    this.#opts = opts;
    this.#sock = new NetlinkSocket(opts);
    this.links = new Links(this.#sock);
    this.addresses = new Addresses(this.#sock);
    this.neighbours = new Neighbours(this.#sock);
    this.fdb = new Fdb(this.#sock);
    this.routes = new Routes(this.#sock);
  }

  get closed(): boolean {
    return this.#sock.closed;
  }

  /** A new event stream on its own socket, closed with this client unless closed before. */
  events(opts: NetlinkEventsOptions = {}): NetlinkEvents {
    const events = new NetlinkEvents({ logger: this.#opts.logger, ...opts });
    this.#events.add(events);
    events.once('close', () => this.#events.delete(events));
    return events;
  }

  /** Close the request socket and every event stream opened here. Idempotent. */
  close(): void {
    for (const e of [...this.#events]) e.close();
    this.#sock.close();
  }
}

/** Open a client in this process's network namespace. */
export function openNetlink(opts: NetlinkOptions = {}): Netlink {
  return new Netlink(opts);
}

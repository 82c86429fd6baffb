/**
 * Neighbour tables: ARP/NDP entries ({@link Neighbours}) and bridge/VXLAN forwarding-database
 * entries ({@link Fdb}). Both are RTM_*NEIGH messages; the FDB is the AF_BRIDGE family, and its
 * entries live on the device itself (NTF_SELF), which is where a VXLAN device keeps the remote
 * VTEP of each MAC.
 */
import { FlagsNew, rt } from 'netlink';
import { invalid } from '../errors/index.js';
import { decodeNeighbour } from './decode.js';
import { AF_BRIDGE, encodeIp, encodeMac, familyNumber } from './encoding.js';
import { MISSING_ERRNOS, errnoOf } from './errors.js';
import { onDevice, resolveIndex } from './link-ref.js';
import type { NetlinkSocket } from './socket.js';
import type {
  DeleteOptions,
  FdbSpec,
  IpFamily,
  LinkRef,
  Neighbour,
  NeighbourSpec,
  NeighbourState,
} from './types.js';
import { neighbourPayload } from './wire.js';

/** Options for {@link Neighbours.list}. */
export interface NeighbourListOptions {
  dev?: LinkRef;
  /** Default: both. */
  family?: IpFamily;
}

/** Options for {@link Fdb.list}. */
export interface FdbListOptions {
  dev?: LinkRef;
}

function stateOf(state: NeighbourState | undefined): rt.NeighborState {
  const s = state ?? 'permanent';
  const out: rt.NeighborState = {};
  if (s !== 'none') out[s] = true;
  return out;
}

async function dump(
  sock: NetlinkSocket,
  op: string,
  family: number,
  dev: LinkRef | undefined,
): Promise<Neighbour[]> {
  const ifindex = dev === undefined ? undefined : await resolveIndex(sock, dev, op, `dev ${dev}`);
  const msgs = await sock.request({
    op,
    target: '',
    type: rt.MessageType.GETNEIGH,
    payload: neighbourPayload({ family }),
    dump: true,
  });
  const out: Neighbour[] = [];
  for (const m of msgs) {
    if (m.kind !== 'neighbor') continue;
    const n = decodeNeighbour(m);
    if (n && (ifindex === undefined || n.ifindex === ifindex)) out.push(n);
  }
  return out;
}

async function ignoringMissing(p: Promise<void>, opts: DeleteOptions): Promise<void> {
  try {
    await p;
  } catch (err) {
    const errno = errnoOf(err);
    if (opts.ignoreMissing && errno && MISSING_ERRNOS.has(errno)) return;
    throw err;
  }
}

/** ARP (IPv4) and NDP (IPv6) entries. */
export class Neighbours {
  readonly #sock: NetlinkSocket;

  constructor(sock: NetlinkSocket) {
    this.#sock = sock;
  }

  async list(opts: NeighbourListOptions = {}): Promise<Neighbour[]> {
    const all = await dump(
      this.#sock,
      'listNeighbours',
      opts.family ? familyNumber(opts.family) : 0,
      opts.dev,
    );
    return all.filter((n) => n.family !== 'bridge');
  }

  /** Add an entry (default `nud permanent`); EEXIST when one exists for that IP. */
  add(spec: NeighbourSpec): Promise<void> {
    return this.#change('addNeighbour', rt.MessageType.NEWNEIGH, FlagsNew.CREATE | FlagsNew.EXCL, spec);
  }

  /** Add the entry, or overwrite the existing one for that IP (`ip neigh replace`). */
  replace(spec: NeighbourSpec): Promise<void> {
    return this.#change(
      'replaceNeighbour',
      rt.MessageType.NEWNEIGH,
      FlagsNew.CREATE | FlagsNew.REPLACE,
      spec,
    );
  }

  /** Delete the entry for `spec.dst`; ENOENT when there is none. */
  delete(spec: NeighbourSpec, opts: DeleteOptions = {}): Promise<void> {
    return ignoringMissing(this.#change('deleteNeighbour', rt.MessageType.DELNEIGH, 0, spec), opts);
  }

  async #change(op: string, type: number, flags: number, spec: NeighbourSpec): Promise<void> {
    const dst = encodeIp(spec.dst, 'dst');
    const deleting = type === rt.MessageType.DELNEIGH;
    if (!deleting && spec.lladdr === undefined) throw invalid('netlink neighbour', 'lladdr', 'is required');
    const attrs: rt.NeighborAttrs = { dst: dst.bytes };
    if (!deleting && spec.lladdr !== undefined) attrs.lladdr = encodeMac(spec.lladdr);
    const lladdr = deleting ? '' : ` lladdr ${spec.lladdr}`;
    return onDevice(
      this.#sock,
      spec.dev,
      op,
      (dev) => `${spec.dst}${lladdr} dev ${dev}`,
      async (ifindex, target) => {
        await this.#sock.request({
          op,
          target,
          type,
          flags,
          payload: neighbourPayload(
            { family: familyNumber(dst.family), ifindex, state: deleting ? {} : stateOf(spec.state) },
            attrs,
          ),
        });
      },
    );
  }
}

/** Forwarding-database entries on a bridge or VXLAN device (`bridge fdb ... self`). */
export class Fdb {
  readonly #sock: NetlinkSocket;

  constructor(sock: NetlinkSocket) {
    this.#sock = sock;
  }

  /** FDB entries, of one device or of all. */
  list(opts: FdbListOptions = {}): Promise<Neighbour[]> {
    return dump(this.#sock, 'listFdb', AF_BRIDGE, opts.dev);
  }

  /** Add an entry; EEXIST when the device has one for that MAC. */
  add(spec: FdbSpec): Promise<void> {
    return this.#change('addFdb', rt.MessageType.NEWNEIGH, FlagsNew.CREATE | FlagsNew.EXCL, spec);
  }

  /** Add the entry, or point the existing one for that MAC at `spec.dst`. */
  replace(spec: FdbSpec): Promise<void> {
    return this.#change('replaceFdb', rt.MessageType.NEWNEIGH, FlagsNew.CREATE | FlagsNew.REPLACE, spec);
  }

  /**
   * Delete the entry for `spec.lladdr`. On a VXLAN device, a `dst` deletes only that remote
   * of the MAC; without one, the whole entry goes.
   */
  delete(spec: FdbSpec, opts: DeleteOptions = {}): Promise<void> {
    return ignoringMissing(this.#change('deleteFdb', rt.MessageType.DELNEIGH, 0, spec), opts);
  }

  async #change(op: string, type: number, flags: number, spec: FdbSpec): Promise<void> {
    const attrs: rt.NeighborAttrs = { lladdr: encodeMac(spec.lladdr) };
    if (spec.dst !== undefined) attrs.dst = encodeIp(spec.dst, 'dst').bytes;
    const deleting = type === rt.MessageType.DELNEIGH;
    const dst = spec.dst === undefined ? '' : ` dst ${spec.dst}`;
    return onDevice(
      this.#sock,
      spec.dev,
      op,
      (dev) => `${spec.lladdr} dev ${dev}${dst}`,
      async (ifindex, target) => {
        await this.#sock.request({
          op,
          target,
          type,
          flags,
          payload: neighbourPayload(
            {
              family: AF_BRIDGE,
              ifindex,
              state: deleting ? {} : stateOf(spec.state),
              flags: { self: true },
            },
            attrs,
          ),
        });
      },
    );
  }
}

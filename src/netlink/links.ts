/** Network devices: list, get, create (vxlan, veth, bridge), change, delete. */
import { FlagsNew, ifla, rt } from 'netlink';
import { invalid } from '../errors/index.js';
import { decodeLink } from './decode.js';
import { decodeIp, encodeIp, encodeMac, encodePort } from './encoding.js';
import { MISSING_ERRNOS, errnoOf, netlinkError, protocolError } from './errors.js';
import { getLinkMessage, onDevice, resolveIndex } from './link-ref.js';
import type { NetlinkSocket } from './socket.js';
import type {
  BridgeOptions,
  DeleteOptions,
  Link,
  LinkRef,
  VethOptions,
  VxlanInfo,
  VxlanOptions,
} from './types.js';
import { flatten, linkPayload } from './wire.js';

/** The port the kernel uses when IFLA_VXLAN_PORT is absent, and flannel's default. */
export const DEFAULT_VXLAN_PORT = 8472;

const MAX_VNI = 0xffffff;

export class Links {
  readonly #sock: NetlinkSocket;

  constructor(sock: NetlinkSocket) {
    this.#sock = sock;
  }

  /** Every device in the namespace. */
  async list(): Promise<Link[]> {
    const msgs = await this.#sock.request({
      op: 'listLinks',
      target: '',
      type: rt.MessageType.GETLINK,
      payload: linkPayload({}),
      dump: true,
    });
    return msgs.filter((m): m is rt.LinkMessage => m.kind === 'link').map((m) => decode('listLinks', m));
  }

  /** One device by index or name; undefined when there is none. */
  async get(ref: LinkRef): Promise<Link | undefined> {
    try {
      const msg = await getLinkMessage(this.#sock, ref);
      return msg && decode('getLink', msg);
    } catch (err) {
      if (errnoOf(err) === 'ENODEV') return undefined;
      throw err;
    }
  }

  /** Create a VXLAN device (fails with EEXIST when the name is taken). */
  async createVxlan(opts: VxlanOptions): Promise<Link> {
    if (!Number.isInteger(opts.id) || opts.id < 0 || opts.id > MAX_VNI) {
      throw invalid('netlink vxlan', 'id', `VNI must be an integer in 0..${MAX_VNI}, got ${opts.id}`);
    }
    const target = `${opts.name} type vxlan id ${opts.id}`;
    const data: ifla.Vxlan = {
      id: opts.id,
      learning: opts.learning ? 1 : 0,
      port: encodePort(opts.port ?? DEFAULT_VXLAN_PORT),
    };
    if (opts.gbp) data.gbp = true;
    if (opts.local !== undefined) {
      const local = encodeIp(opts.local, 'local');
      if (local.family === 'inet') data.local = local.bytes;
      else data.local6 = local.bytes;
    }
    if (opts.dev !== undefined) data.link = await resolveIndex(this.#sock, opts.dev, 'createLink', target);
    const linkinfo = flatten(ifla.formatInfo({ kind: 'vxlan', data: flatten(ifla.formatVxlan(data)) }));
    return this.#create(target, opts.name, { linkinfo, mtu: opts.mtu, mac: opts.mac });
  }

  /**
   * Make `opts.name` a VXLAN device with exactly these attributes: keep a matching device (only
   * fixing its MTU), replace one that differs, create a missing one. The kernel cannot change
   * a VXLAN device's id, addresses or port in place, hence delete and create.
   */
  async ensureVxlan(opts: VxlanOptions): Promise<Link> {
    const existing = await this.get(opts.name);
    if (existing) {
      const dev =
        opts.dev === undefined
          ? undefined
          : await resolveIndex(this.#sock, opts.dev, 'ensureVxlan', opts.name);
      if (vxlanMatches(existing, opts, dev)) {
        if (opts.mtu !== undefined && existing.mtu !== opts.mtu) {
          await this.setMtu(existing.index, opts.mtu);
          return { ...existing, mtu: opts.mtu };
        }
        return existing;
      }
      await this.delete(existing.index, { ignoreMissing: true });
    }
    return this.createVxlan(opts);
  }

  /** Create a veth pair; returns both ends. */
  async createVeth(opts: VethOptions): Promise<{ link: Link; peer: Link }> {
    const peer = Buffer.concat(linkPayload({}, { ifname: opts.peer, mtu: opts.mtu }));
    const linkinfo = flatten(ifla.formatInfo({ kind: 'veth', data: flatten(ifla.formatVethInfo({ peer })) }));
    const link = await this.#create(`${opts.name} type veth peer ${opts.peer}`, opts.name, {
      linkinfo,
      mtu: opts.mtu,
    });
    const peerLink = await this.get(opts.peer);
    if (!peerLink) throw netlinkError('createLink', opts.peer, 'ENODEV');
    return { link, peer: peerLink };
  }

  /** Create a bridge. */
  async createBridge(opts: BridgeOptions): Promise<Link> {
    const linkinfo = flatten(ifla.formatInfo({ kind: 'bridge' }));
    return this.#create(`${opts.name} type bridge`, opts.name, { linkinfo, mtu: opts.mtu });
  }

  /** Set the device administratively up. */
  setUp(ref: LinkRef): Promise<void> {
    return this.#set(ref, 'up', { index: 0, flags: { up: true }, change: { up: true } }, {});
  }

  /** Set the device administratively down. */
  setDown(ref: LinkRef): Promise<void> {
    return this.#set(ref, 'down', { index: 0, flags: {}, change: { up: true } }, {});
  }

  setMtu(ref: LinkRef, mtu: number): Promise<void> {
    return this.#set(ref, `mtu ${mtu}`, { index: 0 }, { mtu });
  }

  /** Enslave the device to `master` (a bridge), or release it with `null`. */
  async setMaster(ref: LinkRef, master: LinkRef | null): Promise<void> {
    const what = master === null ? 'nomaster' : `master ${master}`;
    const index = master === null ? 0 : await resolveIndex(this.#sock, master, 'setLink', `${ref} ${what}`);
    return this.#set(ref, what, { index: 0 }, { master: index });
  }

  /** Delete the device (a veth takes its peer with it). */
  async delete(ref: LinkRef, opts: DeleteOptions = {}): Promise<void> {
    try {
      await onDevice(
        this.#sock,
        ref,
        'deleteLink',
        (dev) => dev,
        (index, target) =>
          this.#sock.request({
            op: 'deleteLink',
            target,
            type: rt.MessageType.DELLINK,
            payload: linkPayload({ index }),
          }),
      );
    } catch (err) {
      const errno = errnoOf(err);
      if (opts.ignoreMissing && errno && MISSING_ERRNOS.has(errno)) return;
      throw err;
    }
  }

  async #create(
    target: string,
    name: string,
    o: { linkinfo: Buffer; mtu?: number | undefined; mac?: string | undefined },
  ): Promise<Link> {
    const attrs: ifla.LinkAttrs = { ifname: name, linkinfo: o.linkinfo };
    if (o.mtu !== undefined) attrs.mtu = o.mtu;
    if (o.mac !== undefined) attrs.address = encodeMac(o.mac, 'mac');
    await this.#sock.request({
      op: 'createLink',
      target,
      type: rt.MessageType.NEWLINK,
      payload: linkPayload({}, attrs),
      flags: FlagsNew.CREATE | FlagsNew.EXCL,
    });
    const link = await this.get(name);
    if (!link) throw netlinkError('createLink', target, 'ENODEV');
    return link;
  }

  #set(ref: LinkRef, what: string, data: rt.Link, attrs: ifla.LinkAttrs): Promise<void> {
    return onDevice(
      this.#sock,
      ref,
      'setLink',
      (dev) => `${dev} ${what}`,
      async (index, target) => {
        await this.#sock.request({
          op: 'setLink',
          target,
          type: rt.MessageType.SETLINK,
          payload: linkPayload({ ...data, index }, attrs),
        });
      },
    );
  }
}

function decode(op: string, msg: rt.LinkMessage): Link {
  try {
    return decodeLink(msg);
  } catch (err) {
    const name = msg.attrs.ifname ?? `if${msg.data.index ?? '?'}`;
    throw protocolError(
      op,
      name,
      `cannot decode link: ${err instanceof Error ? err.message : String(err)}`,
      err,
    );
  }
}

function vxlanMatches(link: Link, o: VxlanOptions, dev: number | undefined): boolean {
  const v: VxlanInfo | undefined = link.vxlan;
  if (link.kind !== 'vxlan' || !v) return false;
  return (
    v.id === o.id &&
    v.port === (o.port ?? DEFAULT_VXLAN_PORT) &&
    v.learning === (o.learning ?? false) &&
    v.gbp === (o.gbp ?? false) &&
    (o.local === undefined || v.local === decodeIp(encodeIp(o.local, 'local').bytes)) &&
    (dev === undefined || v.dev === dev) &&
    (o.mac === undefined || link.mac === o.mac.toLowerCase())
  );
}

/** Interface addresses: list, add, replace, delete. */
import { FlagsNew, rt } from 'netlink';
import { invalid } from '../errors/index.js';
import { decodeAddress } from './decode.js';
import { encodeIp, familyNumber } from './encoding.js';
import { MISSING_ERRNOS, errnoOf } from './errors.js';
import { onDevice, resolveIndex } from './link-ref.js';
import type { NetlinkSocket } from './socket.js';
import type { Address, AddressSpec, DeleteOptions, IpFamily, LinkRef } from './types.js';
import { addressPayload } from './wire.js';

/** Options for {@link Addresses.list}. */
export interface AddressListOptions {
  /** Only this device's addresses. */
  dev?: LinkRef;
  /** Only this family. Default: both. */
  family?: IpFamily;
}

export class Addresses {
  readonly #sock: NetlinkSocket;

  constructor(sock: NetlinkSocket) {
    this.#sock = sock;
  }

  async list(opts: AddressListOptions = {}): Promise<Address[]> {
    const ifindex =
      opts.dev === undefined
        ? undefined
        : await resolveIndex(this.#sock, opts.dev, 'listAddresses', `dev ${opts.dev}`);
    const msgs = await this.#sock.request({
      op: 'listAddresses',
      target: '',
      type: rt.MessageType.GETADDR,
      payload: addressPayload({ family: opts.family ? familyNumber(opts.family) : 0 }),
      dump: true,
    });
    const out: Address[] = [];
    for (const m of msgs) {
      if (m.kind !== 'address') continue;
      const a = decodeAddress(m);
      if (a && (ifindex === undefined || a.ifindex === ifindex)) out.push(a);
    }
    return out;
  }

  /** Add an address; EEXIST when the device already has it. */
  add(spec: AddressSpec): Promise<void> {
    return this.#change('addAddress', rt.MessageType.NEWADDR, FlagsNew.CREATE | FlagsNew.EXCL, spec);
  }

  /** Add an address, or update it in place when the device already has it. */
  replace(spec: AddressSpec): Promise<void> {
    return this.#change('replaceAddress', rt.MessageType.NEWADDR, FlagsNew.CREATE | FlagsNew.REPLACE, spec);
  }

  /** Delete an address; EADDRNOTAVAIL when the device does not have it. */
  async delete(spec: AddressSpec, opts: DeleteOptions = {}): Promise<void> {
    try {
      await this.#change('deleteAddress', rt.MessageType.DELADDR, 0, spec);
    } catch (err) {
      const errno = errnoOf(err);
      if (opts.ignoreMissing && errno && MISSING_ERRNOS.has(errno)) return;
      throw err;
    }
  }

  async #change(op: string, type: number, flags: number, spec: AddressSpec): Promise<void> {
    const ip = encodeIp(spec.address, 'address');
    const max = ip.family === 'inet' ? 32 : 128;
    if (!Number.isInteger(spec.prefixLen) || spec.prefixLen < 0 || spec.prefixLen > max) {
      throw invalid('netlink address', 'prefixLen', `must be an integer in 0..${max}, got ${spec.prefixLen}`);
    }
    return onDevice(
      this.#sock,
      spec.dev,
      op,
      (dev) => `${spec.address}/${spec.prefixLen} dev ${dev}`,
      async (index, target) => {
        await this.#sock.request({
          op,
          target,
          type,
          flags,
          // IFA_LOCAL is the address itself; IFA_ADDRESS equal to it says "no peer", as iproute2 sends.
          payload: addressPayload(
            { family: familyNumber(ip.family), prefixlen: spec.prefixLen, index },
            { local: ip.bytes, address: ip.bytes },
          ),
        });
      },
    );
  }
}

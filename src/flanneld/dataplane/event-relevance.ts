/**
 * Which netlink notifications call for a reconcile. Every change weft makes comes back as a
 * notification too; answering those would double every reconcile, and a wrongly planned entry
 * would make the dataplane chase its own tail. So a notification counts only when it moves the
 * kernel away from the desired state: a desired entry deleted, an owned entry added or changed to
 * something not desired, an owned device or the external interface changed.
 */
import type { Cidr } from '../../ipam/index.js';
import type { Link, NetlinkEvent } from '../../netlink/index.js';
import type { DesiredState, FdbEntry, NeighbourEntry, RouteEntry } from '../backends/index.js';
import {
  addressKey,
  fdbKey,
  fdbMatches,
  neighbourKey,
  neighbourMatches,
  routeKey,
  routeMatches,
} from './diff-state.js';
import {
  addressEntryOf,
  fdbEntryOf,
  insideNetworks,
  isLinkLocal,
  isManagedRoute,
  neighbourEntryOf,
  parseNetworks,
  routeEntryOf,
} from './kernel-snapshot.js';

export class EventRelevance {
  readonly #names = new Map<number, string>();
  #devices = new Set<string>();
  #routeDevices = new Set<string>();
  #ext = '';
  #networks: Cidr[] = [];
  #addresses = new Set<string>();
  #neighbours = new Map<string, NeighbourEntry>();
  #fdb = new Map<string, FdbEntry>();
  #routes = new Map<string, RouteEntry>();

  /**
   * Learn the device names and the desired state of the reconcile about to apply, so the
   * notifications of its own changes are recognised.
   */
  update(
    links: readonly Link[],
    desired: DesiredState,
    extName: string,
    deviceNames: readonly string[],
  ): void {
    this.#names.clear();
    for (const l of links) this.#names.set(l.index, l.name);
    this.#devices = new Set([...desired.owned.devices, ...deviceNames]);
    this.#routeDevices = new Set(desired.owned.routeDevices);
    this.#ext = extName;
    this.#networks = parseNetworks(desired.owned.networks);
    this.#addresses = new Set(desired.addresses.map(addressKey));
    this.#neighbours = new Map(desired.neighbours.map((n) => [neighbourKey(n), n]));
    this.#fdb = new Map(desired.fdb.map((f) => [fdbKey(f), f]));
    this.#routes = new Map(desired.routes.map((r) => [routeKey(r), r]));
  }

  /** True when `ev` may have moved the kernel away from the desired state. */
  relevant(ev: NetlinkEvent): boolean {
    switch (ev.kind) {
      case 'resync':
        return true;
      case 'link': {
        const { index, name } = ev.link;
        // A device's index changes when it is recreated; keep the map current between reconciles.
        if (ev.action === 'del') this.#names.delete(index);
        else this.#names.set(index, name);
        return this.#devices.has(name) || name === this.#ext;
      }
      case 'address': {
        const dev = this.#names.get(ev.address.ifindex);
        if (dev === undefined || isLinkLocal(ev.address.address)) return false;
        // The external interface's addresses decide what is directly connected.
        if (dev === this.#ext) return true;
        if (!this.#devices.has(dev)) return false;
        const wanted = this.#addresses.has(addressKey(addressEntryOf(ev.address, dev)));
        return ev.action === 'del' ? wanted : !wanted;
      }
      case 'route': {
        const dev = this.#names.get(ev.route.ifindex);
        if (dev === undefined || !this.#routeDevices.has(dev) || !isManagedRoute(ev.route)) return false;
        if (!insideNetworks(ev.route.dst, this.#networks)) return false;
        const actual = routeEntryOf(ev.route, dev);
        const want = this.#routes.get(routeKey(actual));
        const matches = want !== undefined && routeMatches(want, actual);
        return ev.action === 'del' ? matches : !matches;
      }
      case 'neighbour': {
        const n = ev.neighbour;
        const dev = this.#names.get(n.ifindex);
        if (dev === undefined || !this.#devices.has(dev) || n.state === 'noarp') return false;
        if (n.family === 'bridge') {
          const actual = fdbEntryOf(n, dev);
          if (!actual) return false;
          const want = this.#fdb.get(fdbKey(actual));
          if (ev.action === 'del') return want !== undefined && want.dst === actual.dst;
          return want ? !fdbMatches(want, actual) : actual.state === 'permanent';
        }
        const actual = neighbourEntryOf(n, dev);
        if (!actual) return false;
        const want = this.#neighbours.get(neighbourKey(actual));
        if (ev.action === 'del') return want !== undefined;
        return want ? !neighbourMatches(want, actual) : actual.state === 'permanent';
      }
    }
  }
}

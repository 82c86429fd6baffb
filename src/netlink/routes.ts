/** Routes: list, add, replace, delete; via a gateway, on a device, or both with `onlink`. */
import { FlagsNew, rt } from 'netlink';
import { invalid } from '../errors/index.js';
import {
  PROTOCOLS,
  ROUTE_TYPES,
  RTNH_F_ONLINK,
  SCOPES,
  decodeRoute,
  enumNumber,
  isClonedRoute,
} from './decode.js';
import { encodeCidr, encodeIp, familyNumber } from './encoding.js';
import { MISSING_ERRNOS, errnoOf } from './errors.js';
import { onDevice, resolveIndex } from './link-ref.js';
import type { NetlinkSocket } from './socket.js';
import {
  MAIN_TABLE,
  type DeleteOptions,
  type IpFamily,
  type LinkRef,
  type Route,
  type RouteSpec,
} from './types.js';
import { routePayload } from './wire.js';

/** Options for {@link Routes.list}. */
export interface RouteListOptions {
  /** Default: both. */
  family?: IpFamily;
  /** A table id, or `all`. Default {@link MAIN_TABLE}, which is what `ip route` shows. */
  table?: number | 'all';
  /** Only routes out of this device. */
  dev?: LinkRef;
}

/** rtm_table is a u8; larger ids go in RTA_TABLE only, with rtm_table = RT_TABLE_UNSPEC. */
const RT_TABLE_MAX_U8 = 255;
/** On delete, scope NOWHERE means "any scope", as iproute2 sends it. */
const SCOPE_ANY = 255;

export class Routes {
  readonly #sock: NetlinkSocket;

  constructor(sock: NetlinkSocket) {
    this.#sock = sock;
  }

  async list(opts: RouteListOptions = {}): Promise<Route[]> {
    const ifindex =
      opts.dev === undefined
        ? undefined
        : await resolveIndex(this.#sock, opts.dev, 'listRoutes', `dev ${opts.dev}`);
    const table = opts.table ?? MAIN_TABLE;
    const msgs = await this.#sock.request({
      op: 'listRoutes',
      target: '',
      type: rt.MessageType.GETROUTE,
      payload: routePayload({ family: opts.family ? familyNumber(opts.family) : 0 }),
      dump: true,
    });
    const out: Route[] = [];
    for (const m of msgs) {
      if (m.kind !== 'route' || isClonedRoute(m)) continue;
      const r = decodeRoute(m);
      if (!r) continue;
      if (table !== 'all' && r.table !== table) continue;
      if (ifindex !== undefined && r.ifindex !== ifindex) continue;
      out.push(r);
    }
    return out;
  }

  /** Add a route; EEXIST when the table has one for that destination (and metric). */
  add(spec: RouteSpec): Promise<void> {
    return this.#change('addRoute', rt.MessageType.NEWROUTE, FlagsNew.CREATE | FlagsNew.EXCL, spec);
  }

  /** Add the route, or replace the one for that destination (`ip route replace`). */
  replace(spec: RouteSpec): Promise<void> {
    return this.#change('replaceRoute', rt.MessageType.NEWROUTE, FlagsNew.CREATE | FlagsNew.REPLACE, spec);
  }

  /**
   * Delete the route for `spec.dst` in its table; `gateway`, `dev` and `metric`, when given,
   * must match too. ESRCH when there is no such route.
   */
  async delete(spec: RouteSpec, opts: DeleteOptions = {}): Promise<void> {
    try {
      await this.#change('deleteRoute', rt.MessageType.DELROUTE, 0, spec);
    } catch (err) {
      const errno = errnoOf(err);
      if (opts.ignoreMissing && errno && MISSING_ERRNOS.has(errno)) return;
      throw err;
    }
  }

  async #change(op: string, type: number, flags: number, spec: RouteSpec): Promise<void> {
    const deleting = type === rt.MessageType.DELROUTE;
    const dst = encodeCidr(spec.dst, 'dst');
    const gateway = spec.gateway === undefined ? undefined : encodeIp(spec.gateway, 'gateway');
    if (gateway && gateway.family !== dst.family) {
      throw invalid('netlink route', 'gateway', `family differs from dst ${spec.dst}`);
    }
    const table = spec.table ?? MAIN_TABLE;
    const data: rt.Route = {
      family: familyNumber(dst.family),
      dstLen: dst.prefixLen,
      table: table > RT_TABLE_MAX_U8 ? 0 : table,
      protocol: deleting ? 0 : enumNumber(PROTOCOLS, spec.protocol ?? 'boot'),
      scope: deleting ? SCOPE_ANY : enumNumber(SCOPES, spec.scope ?? (gateway ? 'universe' : 'link')),
      type:
        spec.type !== undefined
          ? enumNumber(ROUTE_TYPES, spec.type)
          : deleting
            ? 0
            : ROUTE_TYPES.num.get('unicast'),
      // The library's RouteFlags has no RTNH_F_ONLINK; it passes unknown bits through.
      flags: spec.onlink ? { __unknown: RTNH_F_ONLINK } : {},
    };
    const attrs: rt.RouteAttrs = { table };
    if (dst.prefixLen > 0) attrs.dst = dst.bytes;
    if (gateway) attrs.gateway = gateway.bytes;
    if (spec.metric !== undefined) attrs.priority = spec.metric;
    const describe = (dev: string | undefined): string =>
      spec.dst +
      (spec.gateway === undefined ? '' : ` via ${spec.gateway}`) +
      (dev === undefined ? '' : ` dev ${dev}`) +
      (table === MAIN_TABLE ? '' : ` table ${table}`);
    const send = async (oif: number | undefined, target: string): Promise<void> => {
      await this.#sock.request({
        op,
        target,
        type,
        flags,
        payload: routePayload(data, oif === undefined ? attrs : { ...attrs, oif }),
      });
    };
    if (spec.dev === undefined) return send(undefined, describe(undefined));
    return onDevice(this.#sock, spec.dev, op, describe, send);
  }
}

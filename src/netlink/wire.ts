/**
 * Request payloads: a fixed header struct followed by its attributes, built with the library's
 * formatters. Nested attributes (IFLA_LINKINFO, IFLA_INFO_DATA, VETH_INFO_PEER) are typed as raw
 * Buffers by the library, so they are formatted separately and flattened with {@link flatten}.
 */
import { AttrStream, rt, type ifla, type StreamData } from 'netlink';

/** One contiguous Buffer of an attribute stream. */
export function flatten(data: StreamData): Buffer {
  const out = new AttrStream();
  out.emit(data);
  return Buffer.concat(out.bufs);
}

export function linkPayload(data: rt.Link, attrs: ifla.LinkAttrs = {}): Uint8Array[] {
  const out = new AttrStream();
  rt.formatLinkMessage({ kind: 'link', data, attrs }, out);
  return out.bufs;
}

export function addressPayload(data: rt.Address, attrs: rt.AddressAttrs = {}): Uint8Array[] {
  const out = new AttrStream();
  rt.formatAddressMessage({ kind: 'address', data, attrs }, out);
  return out.bufs;
}

export function neighbourPayload(data: rt.Neighbor, attrs: rt.NeighborAttrs = {}): Uint8Array[] {
  const out = new AttrStream();
  rt.formatNeighborMessage({ kind: 'neighbor', data, attrs }, out);
  return out.bufs;
}

export function routePayload(data: rt.Route, attrs: rt.RouteAttrs = {}): Uint8Array[] {
  const out = new AttrStream();
  rt.formatRouteMessage({ kind: 'route', data, attrs }, out);
  return out.bufs;
}

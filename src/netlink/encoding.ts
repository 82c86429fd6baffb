/**
 * Text <-> wire forms of IP addresses, prefixes and MAC addresses, local to netlink so the wire
 * format never leaks out of this folder. Address text is parsed and printed by src/ipam, so
 * every component agrees on one canonical form.
 */
import { invalid } from '../errors/index.js';
import { bigIntToIp, parseIp } from '../ipam/index.js';
import type { IpFamily } from './types.js';

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_BRIDGE = 7;

/** The kernel family number of an IP family. */
export function familyNumber(family: IpFamily): number {
  return family === 'inet' ? AF_INET : AF_INET6;
}

/** The IP family of a kernel family number, or undefined for non-IP families. */
export function familyName(n: number | undefined): IpFamily | undefined {
  if (n === AF_INET) return 'inet';
  if (n === AF_INET6) return 'inet6';
  return undefined;
}

/** An IP address in wire form. */
export interface WireIp {
  family: IpFamily;
  bytes: Buffer;
}

/** Parse an IPv4 or IPv6 address (no zone, no prefix) to network-order bytes. */
export function encodeIp(ip: string, field = 'address'): WireIp {
  let parsed: { family: 4 | 6; value: bigint };
  try {
    parsed = parseIp(ip);
  } catch {
    throw invalid('netlink', field, `not an IP address: ${JSON.stringify(ip)}`);
  }
  const size = parsed.family === 4 ? 4 : 16;
  const bytes = Buffer.alloc(size);
  let v = parsed.value;
  for (let i = size - 1; i >= 0; i--, v >>= 8n) bytes[i] = Number(v & 0xffn);
  return { family: parsed.family === 4 ? 'inet' : 'inet6', bytes };
}

/** Format network-order bytes (4 or 16) as an IP address, IPv6 in RFC 5952 form as iproute2 prints it. */
export function decodeIp(bytes: Buffer): string {
  if (bytes.length !== 4 && bytes.length !== 16) return bytes.toString('hex');
  // iproute2 prints IPv4-mapped addresses with a dotted quad; ipam's canonical form would not.
  if (
    bytes.length === 16 &&
    bytes.subarray(0, 10).every((b) => b === 0) &&
    bytes.readUInt16BE(10) === 0xffff
  ) {
    return `::ffff:${[...bytes.subarray(12)].join('.')}`;
  }
  const value = bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
  return bigIntToIp(value, bytes.length === 4 ? 4 : 6);
}

/** A prefix in wire form. */
export interface WirePrefix extends WireIp {
  prefixLen: number;
}

/** Parse `a.b.c.d/len` or `x::/len` (a bare address means a host prefix). */
export function encodeCidr(cidr: string, field = 'dst'): WirePrefix {
  const slash = cidr.indexOf('/');
  const ip = encodeIp(slash < 0 ? cidr : cidr.slice(0, slash), field);
  const max = ip.family === 'inet' ? 32 : 128;
  const lenText = slash < 0 ? String(max) : cidr.slice(slash + 1);
  const prefixLen = Number(lenText);
  if (!/^\d{1,3}$/.test(lenText) || prefixLen > max) {
    throw invalid('netlink', field, `bad prefix length in ${JSON.stringify(cidr)}`);
  }
  return { ...ip, prefixLen };
}

/** Format a destination as CIDR; a missing RTA_DST means the all-zero prefix. */
export function decodeCidr(family: IpFamily, bytes: Buffer | undefined, prefixLen: number): string {
  const addr = bytes ? decodeIp(bytes) : family === 'inet' ? '0.0.0.0' : '::';
  return `${addr}/${prefixLen}`;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Parse `aa:bb:cc:dd:ee:ff`. */
export function encodeMac(mac: string, field = 'lladdr'): Buffer {
  if (!MAC_RE.test(mac)) throw invalid('netlink', field, `not a MAC address: ${JSON.stringify(mac)}`);
  return Buffer.from(mac.replace(/:/g, ''), 'hex');
}

/** Format a hardware address of any length as lower-case colon-separated hex. */
export function decodeMac(bytes: Buffer): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A 16-bit port in network byte order, as IFLA_VXLAN_PORT wants it. */
export function encodePort(port: number, field = 'port'): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw invalid('netlink', field, `not a port number: ${port}`);
  }
  const b = Buffer.alloc(2);
  b.writeUInt16BE(port);
  return b;
}

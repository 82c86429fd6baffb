/**
 * Text <-> wire forms of IP addresses, prefixes and MAC addresses. Kept dependency-free and
 * local to netlink so the wire format never leaks out of this folder.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { invalid } from '../errors/index.js';
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
  if (isIPv4(ip)) return { family: 'inet', bytes: Buffer.from(ip.split('.').map(Number)) };
  if (isIPv6(ip) && !ip.includes('%')) return { family: 'inet6', bytes: encodeIpv6(ip) };
  throw invalid('netlink', field, `not an IP address: ${JSON.stringify(ip)}`);
}

function encodeIpv6(ip: string): Buffer {
  let text = ip;
  const tailGroups: string[] = [];
  // A trailing dotted quad (::ffff:1.2.3.4) stands for the last two groups.
  const dot = text.lastIndexOf('.');
  if (dot >= 0) {
    const colon = text.lastIndexOf(':');
    const v4 = text
      .slice(colon + 1)
      .split('.')
      .map(Number);
    tailGroups.push(
      (((v4[0] ?? 0) << 8) | (v4[1] ?? 0)).toString(16),
      (((v4[2] ?? 0) << 8) | (v4[3] ?? 0)).toString(16),
    );
    text = text.slice(0, colon + 1);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const halves = text.split('::');
  const head = halves[0] ? halves[0].split(':') : [];
  let groups: string[];
  if (halves.length === 2) {
    const tail = [...(halves[1] ? halves[1].split(':') : []), ...tailGroups];
    groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  } else {
    groups = [...head, ...tailGroups];
  }
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** Format network-order bytes (4 or 16) as an IP address, IPv6 in RFC 5952 form as iproute2 prints it. */
export function decodeIp(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join('.');
  if (bytes.length !== 16) return bytes.toString('hex');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${[...bytes.subarray(12)].join('.')}`;
  }
  // Compress the longest run of two or more zero groups (the first, on a tie).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
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

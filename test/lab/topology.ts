/**
 * Pure helpers of the lab: the underlay address plan, parsing of `ping` and `ip -j` output,
 * and the text renderings of the topology and of a reachability matrix. Nothing here runs a
 * command, so all of it can be tested without namespaces.
 */
import { ErrorCodes, WeftError } from '../../src/errors/index.js';

/** flannel's default pod network; the lab's underlay must stay clear of it. */
export const FLANNEL_DEFAULT_NETWORK = '10.244.0.0/16';

/** Default underlay of a lab. */
export const DEFAULT_UNDERLAY_CIDR = '10.99.0.0/24';

/** Host offsets inside the underlay CIDR (`.1` bridge, `.11..` nodes, `.101..` etcd, `.110` redis). */
export const HOST_OFFSET = { underlay: 1, node: 10, etcd: 100, redis: 110 } as const;

/** Most nodes a lab can have (node offsets must stay below the etcd offsets). */
export const MAX_NODES = HOST_OFFSET.etcd - HOST_OFFSET.node - 1;

/** A parsed IPv4 CIDR. */
export interface Ipv4Cidr {
  /** First address (host bits cleared), as an unsigned 32-bit number. */
  network: number;
  prefixLength: number;
}

function labError(message: string, details: Record<string, unknown> = {}): WeftError {
  return new WeftError(ErrorCodes.LAB, message, details);
}

/** Parse a dotted-quad IPv4 address to an unsigned 32-bit number. */
export function parseIpv4(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    throw labError(`not an IPv4 address: ${JSON.stringify(ip)}`, { ip });
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

/** Format an unsigned 32-bit number as a dotted quad. */
export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** Parse `a.b.c.d/len`; the host bits must be zero. */
export function parseCidr(cidr: string): Ipv4Cidr {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(cidr);
  const prefixLength = m ? Number(m[2]) : NaN;
  if (!m || !(prefixLength >= 0 && prefixLength <= 32)) {
    throw labError(`not an IPv4 CIDR: ${JSON.stringify(cidr)}`, { cidr });
  }
  const addr = parseIpv4(m[1] ?? '');
  const size = 2 ** (32 - prefixLength);
  if (addr % size !== 0) throw labError(`CIDR ${cidr} has host bits set`, { cidr });
  return { network: addr, prefixLength };
}

/** True when two CIDRs share at least one address. */
export function cidrsOverlap(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  const aEnd = a.network + 2 ** (32 - a.prefixLength);
  const bEnd = b.network + 2 ** (32 - b.prefixLength);
  return a.network < bEnd && b.network < aEnd;
}

/** The address at `offset` inside `cidr`; throws when it falls outside the usable hosts. */
export function hostAddress(cidr: Ipv4Cidr, offset: number): string {
  const size = 2 ** (32 - cidr.prefixLength);
  if (offset < 1 || offset >= size - 1) {
    throw labError(`host offset ${offset} does not fit in ${formatIpv4(cidr.network)}/${cidr.prefixLength}`, {
      offset,
    });
  }
  return formatIpv4(cidr.network + offset);
}

/** Where every member of a lab sits on the underlay. */
export interface AddressPlan {
  cidr: string;
  prefixLength: number;
  underlay: string;
  nodes: string[];
  etcd: string[];
  redis: string;
}

/**
 * The underlay addresses of a lab with `nodes` nodes and `etcdMembers` etcd members. The CIDR
 * must be a /24 or larger and must not overlap flannel's default pod network.
 */
export function addressPlan(cidrText: string, nodes: number, etcdMembers: number): AddressPlan {
  const cidr = parseCidr(cidrText);
  if (cidr.prefixLength > 24) {
    throw labError(`underlay ${cidrText} is too small: need a /24 or larger`, { cidr: cidrText });
  }
  if (cidrsOverlap(cidr, parseCidr(FLANNEL_DEFAULT_NETWORK))) {
    throw labError(`underlay ${cidrText} overlaps the pod network ${FLANNEL_DEFAULT_NETWORK}`, {
      cidr: cidrText,
    });
  }
  const range = (n: number, base: number): string[] =>
    Array.from({ length: n }, (_, i) => hostAddress(cidr, base + i + 1));
  return {
    cidr: cidrText,
    prefixLength: cidr.prefixLength,
    underlay: hostAddress(cidr, HOST_OFFSET.underlay),
    nodes: range(nodes, HOST_OFFSET.node),
    etcd: range(etcdMembers, HOST_OFFSET.etcd),
    redis: hostAddress(cidr, HOST_OFFSET.redis),
  };
}

/** Round-trip times of a ping run, in milliseconds. */
export interface PingRtt {
  minMs: number;
  avgMs: number;
  maxMs: number;
  mdevMs: number;
}

/** What one `ping` run reported. */
export interface PingStats {
  transmitted: number;
  received: number;
  /** Fraction of packets lost, 0..1. */
  loss: number;
  /** Absent when no reply came back. */
  rtt?: PingRtt;
}

/** Parse the summary of iputils `ping` (works with and without `-q`). */
export function parsePing(output: string): PingStats {
  const counts = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  if (!counts) throw labError('ping printed no summary', { output: output.slice(-500) });
  const transmitted = Number(counts[1]);
  const received = Number(counts[2]);
  const stats: PingStats = {
    transmitted,
    received,
    loss: transmitted > 0 ? (transmitted - received) / transmitted : 1,
  };
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(output);
  if (rtt) {
    stats.rtt = {
      minMs: Number(rtt[1]),
      avgMs: Number(rtt[2]),
      maxMs: Number(rtt[3]),
      mdevMs: Number(rtt[4]),
    };
  }
  return stats;
}

/** One cell of a reachability matrix. */
export interface ReachCell {
  from: string;
  to: string;
  ip: string;
  stats: PingStats;
}

/** Who can ping whom; rows are sources, columns targets (a source is not pinged from itself). */
export class Reachability {
  readonly sources: readonly string[];
  readonly targets: readonly { name: string; ip: string }[];
  readonly cells: readonly ReachCell[];

  constructor(
    sources: readonly string[],
    targets: readonly { name: string; ip: string }[],
    cells: ReachCell[],
  ) {
    this.sources = sources;
    this.targets = targets;
    this.cells = cells;
  }

  /** The cell from `from` to `to`, undefined on the diagonal. */
  get(from: string, to: string): ReachCell | undefined {
    return this.cells.find((c) => c.from === from && c.to === to);
  }

  /** Pairs where not a single reply came back. */
  unreachable(): ReachCell[] {
    return this.cells.filter((c) => c.stats.received === 0);
  }

  /** True when every pair got every reply. */
  get allReachable(): boolean {
    return this.cells.every((c) => c.stats.transmitted > 0 && c.stats.received === c.stats.transmitted);
  }

  /** A table: each cell is the average rtt in ms, `x% loss`, or `FAIL`; `-` on the diagonal. */
  format(): string {
    const cell = (from: string, to: string): string => {
      const c = this.get(from, to);
      if (!c) return '-';
      if (c.stats.received === 0) return 'FAIL';
      const rtt = c.stats.rtt ? `${c.stats.rtt.avgMs.toFixed(3)}ms` : 'ok';
      return c.stats.loss > 0 ? `${rtt} ${Math.round(c.stats.loss * 100)}%loss` : rtt;
    };
    const header = ['from \\ to', ...this.targets.map((t) => `${t.name} (${t.ip})`)];
    const rows = this.sources.map((s) => [s, ...this.targets.map((t) => cell(s, t.name))]);
    return table([header, ...rows]);
  }
}

/** Compare names with their numbers as numbers (`n2` before `n10`). */
export function byName(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** Left-aligned columns separated by two spaces. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((row) =>
      row
        .map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The fields of `ip -d -j addr show` the lab reads. */
export interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  operstate: string;
  flags?: string[];
  master?: string;
  link_index?: number;
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

/** Parse `ip -d -j addr show`. */
export function parseIpAddr(json: string): IpLink[] {
  const parsed: unknown = JSON.parse(json || '[]');
  if (!Array.isArray(parsed)) throw labError('ip -j addr did not print a list', { json: json.slice(0, 200) });
  return parsed as IpLink[];
}

/** One namespace as the topology text shows it. */
export interface NamespaceView {
  /** Role in the lab: `underlay`, `node1`, `etcd1`, `redis`... */
  role: string;
  netns: string;
  links: IpLink[];
  /** Extra lines (ip_forward, servers running there...). */
  notes: string[];
}

/**
 * A readable multi-line description of namespaces, their links (kind, state, MTU, bridge
 * membership and the veth peer, found by matching ifindex/link_index across the namespaces)
 * and IPv4 addresses.
 */
export function formatNamespaces(views: readonly NamespaceView[]): string {
  const byIndex = new Map<string, { role: string; link: IpLink }>();
  for (const v of views)
    for (const l of v.links) byIndex.set(`${v.netns}/${l.ifindex}`, { role: v.role, link: l });
  const out: string[] = [];
  for (const v of views) {
    out.push(`${v.role}  [netns ${v.netns}]`);
    const rows: string[][] = [];
    // lo, then bridges, then the rest by name (node2 before node10).
    const rank = (l: IpLink): number => (l.ifname === 'lo' ? 0 : l.linkinfo?.info_kind === 'bridge' ? 1 : 2);
    const links = [...v.links].sort((a, b) => rank(a) - rank(b) || byName(a.ifname, b.ifname));
    for (const l of links) {
      const kind = l.linkinfo?.info_kind ?? (l.ifname === 'lo' ? 'loopback' : '?');
      // lo reports operstate UNKNOWN when up; its UP flag is what matters.
      const state = l.ifname === 'lo' ? (l.flags?.includes('UP') ? 'UP' : 'DOWN') : l.operstate;
      const addrs = (l.addr_info ?? [])
        .filter((a) => a.family === 'inet')
        .map((a) => `${a.local}/${a.prefixlen}`)
        .join(' ');
      const rel: string[] = [];
      if (l.master) rel.push(`port of ${l.master}`);
      if (kind === 'veth' && l.link_index !== undefined) {
        // The peer lives in another namespace: find the interface with that index in the others.
        const peer = views
          .filter((o) => o.netns !== v.netns)
          .map((o) => byIndex.get(`${o.netns}/${l.link_index}`))
          .find((p) => p && p.link.link_index === l.ifindex);
        if (peer) rel.push(`veth peer ${peer.link.ifname} in ${peer.role}`);
      }
      if (kind === 'bridge') {
        const ports = links.filter((p) => p.master === l.ifname).map((p) => p.ifname);
        rel.push(`ports: ${ports.join(' ') || '(none)'}`);
      }
      rows.push(['   ', l.ifname, kind, state, `mtu ${l.mtu}`, addrs || '-', rel.join('; ')]);
    }
    if (rows.length) out.push(table(rows));
    for (const n of v.notes) out.push(`    ${n}`);
  }
  return out.join('\n');
}

/** Milliseconds of a Go duration string (`850µs`, `4.7ms`, `1.2s`, `1m2s`); NaN when unparsable. */
export function parseGoDurationMs(text: string): number {
  const unit: Record<string, number> = {
    h: 3_600_000,
    m: 60_000,
    s: 1000,
    ms: 1,
    us: 1e-3,
    µs: 1e-3,
    ns: 1e-6,
  };
  let total = 0;
  let rest = text.trim();
  if (!rest) return NaN;
  while (rest) {
    const m = /^([\d.]+)(h|ms|m|s|us|µs|ns)/.exec(rest);
    if (!m) return NaN;
    total += Number(m[1]) * (unit[m[2] ?? ''] ?? NaN);
    rest = rest.slice(m[0].length);
  }
  return total;
}

/**
 * `weftctl status`: every node's daemons as their status records in the registry describe them,
 * next to what each daemon's /readyz answers right now, and in a lab the overlay's reachability
 * matrix. Collecting (registry, HTTP, ping) is kept apart from judging and formatting, which are
 * pure, so the verdict and the table are tested without a cluster.
 */
import { execRunner } from '../exec/index.js';
import { hostname } from 'node:os';
import { messageOf } from '../errors/index.js';
import { NODE_DAEMONS, parseDaemonStatus, statusPrefix, type DaemonStatus } from '../node-status/index.js';
import type { Store } from '../registry/index.js';
import { terminalText } from '../escape/index.js';
import { formatAge, formatTable } from './output.js';

/** A record older than this (its TTL) is stale: its daemon stopped refreshing it. */
export const STALE_AFTER_S = 60;
/** How long a /readyz probe may take. */
export const READYZ_TIMEOUT_MS = 2_000;

/** What a daemon's /readyz answered. */
export interface ReadyzProbe {
  /**
   * `ok` 200; `failing` another HTTP status; `unreachable` no answer; `not-checked` when there is
   * nothing to ask (no health URL, or a loopback URL of another machine, which from here would
   * reach this machine's daemon instead).
   */
  state: 'ok' | 'failing' | 'unreachable' | 'not-checked';
  status?: number;
  /** The start of the body, or why it was not reached or checked. */
  note?: string;
}

/** One row of the report: a daemon on a node. */
export interface DaemonRow {
  node: string;
  daemon: string;
  key: string;
  /** No record (only reported for daemons a lab is known to run). */
  missing: boolean;
  /** The registry's view: the record says ready and is not stale. */
  ready: boolean;
  reason?: string;
  stale: boolean;
  pid?: number;
  version?: string;
  startedAt?: string;
  updatedAt?: string;
  lastSync?: string;
  health?: string;
  detail: Record<string, string>;
  readyz: ReadyzProbe;
}

/** One ping of the overlay matrix. */
export interface ReachCell {
  from: string;
  to: string;
  ip: string;
  ok: boolean;
  rttMs?: number;
  error?: string;
}

/** The overlay matrix: from every node to every other node's overlay address. */
export interface Reachability {
  nodes: { node: string; overlayIp?: string }[];
  cells: ReachCell[];
}

/** Everything `weftctl status` reports (its JSON/YAML form). */
export interface StatusReport {
  generatedAt: string;
  statusPrefix: string;
  /** The lab run, in lab mode. */
  lab?: string;
  /** True when every daemon is ready and, in a lab, every overlay path answers. */
  ready: boolean;
  /** Why not, one line each. */
  problems: string[];
  daemons: DaemonRow[];
  /** weft-controller's elected leader, as its election key names it; absent when none holds it. */
  controllerLeader?: ControllerLeader;
  /** Records that could not be read, with why. */
  invalid: { key: string; error: string }[];
  reachability?: Reachability;
}

/** The holder of weft-controller's election key. */
export interface ControllerLeader {
  identity: string;
  /** The fencing token of its term. */
  token: number;
  acquiredAt: string;
}

/** A record as listed, before probing. */
export interface ListedRecord {
  key: string;
  record: DaemonStatus;
}

/** Every status record under the registry prefix; bad ones are reported, not fatal. */
export async function readStatusRecords(
  store: Store,
  registryPrefix: string,
): Promise<{ prefix: string; records: ListedRecord[]; invalid: { key: string; error: string }[] }> {
  const prefix = statusPrefix(registryPrefix);
  const { items } = await store.list(prefix);
  const records: ListedRecord[] = [];
  const invalid: { key: string; error: string }[] = [];
  for (const kv of items) {
    try {
      records.push({ key: kv.key, record: parseDaemonStatus(kv.key, kv.value) });
    } catch (err) {
      invalid.push({ key: kv.key, error: messageOf(err) });
    }
  }
  return { prefix, records, invalid };
}

/** Options of {@link buildReport}. */
export interface BuildReportOptions {
  prefix: string;
  now: number;
  /** The probe result of each record, by key. Records without one are `not-checked`. */
  probes: ReadonlyMap<string, ReadyzProbe>;
  /**
   * Nodes that must each run every daemon of {@link NODE_DAEMONS} (a lab with daemons): a
   * missing record is then a row, and a failure. Elsewhere only records are shown, since a node
   * may run flanneld alone.
   */
  expectNodes?: readonly string[];
  /** In a lab every health listener is reachable, so an unreachable one is a failure. */
  requireReachable?: boolean;
  reachability?: Reachability;
  lab?: string;
  /** Who holds weft-controller's election key (read with LeaderElector.holder). */
  controllerLeader?: ControllerLeader;
}

/** Judges the records and probes: the report, with its verdict and the reasons for it. */
export function buildReport(
  records: readonly ListedRecord[],
  invalid: readonly { key: string; error: string }[],
  o: BuildReportOptions,
): StatusReport {
  const rows: DaemonRow[] = records.map(({ key, record: r }) => {
    const stale = o.now - Date.parse(r.updatedAt) > STALE_AFTER_S * 1000;
    return {
      node: r.node,
      daemon: r.daemon,
      key,
      missing: false,
      ready: r.ready && !stale,
      ...(r.reason !== undefined ? { reason: r.reason } : {}),
      stale,
      pid: r.pid,
      version: r.version,
      startedAt: r.startedAt,
      updatedAt: r.updatedAt,
      ...(r.lastSync !== undefined ? { lastSync: r.lastSync } : {}),
      ...(r.health !== undefined ? { health: r.health } : {}),
      detail: r.detail,
      readyz: o.probes.get(key) ?? { state: 'not-checked', note: r.health ? 'not probed' : 'no health URL' },
    };
  });
  for (const node of o.expectNodes ?? []) {
    for (const daemon of NODE_DAEMONS) {
      if (rows.some((r) => r.node === node && r.daemon === daemon)) continue;
      rows.push({
        node,
        daemon,
        key: `${o.prefix}${node}/${daemon}`,
        missing: true,
        ready: false,
        stale: false,
        detail: {},
        readyz: { state: 'not-checked', note: 'no record' },
      });
    }
  }
  rows.sort((a, b) => a.node.localeCompare(b.node) || a.daemon.localeCompare(b.daemon));

  const problems: string[] = [];
  for (const r of rows) {
    const who = `${r.node}/${r.daemon}`;
    if (r.missing) problems.push(`${who}: no status record (not running, or not reporting)`);
    else if (r.stale)
      problems.push(`${who}: record not refreshed for ${formatAge(ageS(o.now, r.updatedAt))}`);
    else if (!r.ready) problems.push(`${who}: not ready${r.reason ? `: ${r.reason}` : ''}`);
    if (r.readyz.state === 'failing') problems.push(`${who}: /readyz answered ${r.readyz.status ?? '?'}`);
    if (r.readyz.state === 'unreachable' && o.requireReachable) {
      problems.push(`${who}: /readyz unreachable${r.readyz.note ? ` (${r.readyz.note})` : ''}`);
    }
  }
  // Controllers running and none leading: no slice follows the pods until one is elected.
  const controllers = rows.filter((r) => r.daemon === 'weft-controller' && !r.missing && !r.stale);
  // A controller run with --leader-elect=false leads without an election key.
  const unelected = controllers.some((r) => r.detail.leader === 'yes');
  if (controllers.length && !o.controllerLeader && !unelected) {
    problems.push('weft-controller: no leader elected');
  }
  for (const i of invalid) problems.push(`${i.key}: unreadable record: ${i.error}`);
  if (!rows.length && !invalid.length) problems.push(`no daemon status records under ${o.prefix}`);
  for (const c of o.reachability?.cells ?? []) {
    if (!c.ok) problems.push(`overlay ${c.from} -> ${c.to} (${c.ip}): ${c.error ?? 'no reply'}`);
  }
  for (const n of o.reachability?.nodes ?? []) {
    if (!n.overlayIp) problems.push(`overlay: ${n.node} has no lease, so no overlay address to ping`);
  }
  return {
    generatedAt: new Date(o.now).toISOString(),
    statusPrefix: o.prefix,
    ...(o.lab ? { lab: o.lab } : {}),
    ready: problems.length === 0,
    problems,
    daemons: rows,
    ...(o.controllerLeader ? { controllerLeader: o.controllerLeader } : {}),
    invalid: [...invalid],
    ...(o.reachability ? { reachability: o.reachability } : {}),
  };
}

function ageS(now: number, iso: string | undefined): number {
  return iso ? (now - Date.parse(iso)) / 1000 : 0;
}

function readyCell(r: DaemonRow): string {
  if (r.missing) return 'missing';
  if (r.stale) return 'stale';
  return r.ready ? 'yes' : `no${r.reason ? `: ${r.reason}` : ''}`;
}

function readyzCell(p: ReadyzProbe): string {
  switch (p.state) {
    case 'ok':
      return '200';
    case 'failing':
      return `${p.status ?? '?'}${p.note ? ` ${p.note}` : ''}`;
    case 'unreachable':
      return 'unreachable';
    default:
      return '-';
  }
}

function detailCell(d: Record<string, string>): string {
  const e = Object.entries(d);
  return e.length ? e.map(([k, v]) => `${k}=${v}`).join(' ') : '-';
}

/** The report for people: the daemon table, the overlay matrix in a lab, and a verdict line. */
export function formatStatusReport(report: StatusReport, now: number): string {
  const out: string[] = [];
  if (report.daemons.length) {
    out.push(
      formatTable({
        headers: ['node', 'daemon', 'ready', 'readyz', 'last sync', 'updated', 'age', 'detail'],
        rows: report.daemons.map((r) => [
          r.node,
          r.daemon,
          readyCell(r),
          readyzCell(r.readyz),
          r.missing ? '-' : r.lastSync ? formatAge(ageS(now, r.lastSync)) : 'never',
          r.missing ? '-' : formatAge(ageS(now, r.updatedAt)),
          r.missing ? '-' : formatAge(ageS(now, r.startedAt)),
          detailCell(r.detail),
        ]),
      }).trimEnd(),
    );
  }
  const leader = report.controllerLeader;
  if (leader) {
    const since = Date.parse(leader.acquiredAt);
    const age = Number.isNaN(since) ? '?' : formatAge((now - since) / 1000);
    out.push(`weft-controller leader: ${terminalText(leader.identity)} (for ${age}, term ${leader.token})`);
  }
  for (const i of report.invalid) out.push(`unreadable record ${i.key}: ${i.error}`);
  if (report.reachability) {
    const { nodes, cells } = report.reachability;
    out.push('', 'overlay reachability (ping from row to column overlay address):');
    const cellOf = (from: string, to: string): string => {
      if (from === to) return '-';
      const c = cells.find((x) => x.from === from && x.to === to);
      if (!c) return '?';
      return c.ok ? `ok ${c.rttMs !== undefined ? `${c.rttMs.toFixed(2)}ms` : ''}`.trim() : 'FAIL';
    };
    out.push(
      formatTable({
        headers: ['from \\ to', ...nodes.map((n) => `${n.node} ${n.overlayIp ?? '(no lease)'}`)],
        rows: nodes.map((f) => [f.node, ...nodes.map((t) => cellOf(f.node, t.node))]),
      }).trimEnd(),
    );
  }
  out.push('');
  if (report.ready) {
    const nodes = new Set(report.daemons.map((r) => r.node)).size;
    out.push(
      `all ${report.daemons.length} daemons on ${nodes} node(s) ready` +
        (report.reachability ? ', overlay fully reachable' : ''),
    );
  } else {
    out.push(`NOT READY: ${report.problems.length} problem(s):`);
    for (const p of report.problems) out.push(`  - ${p}`);
  }
  return `${out.join('\n').replace(/^\n/, '')}\n`;
}

/** True for a health URL on a loopback address. */
export function isLoopbackUrl(url: string): boolean {
  try {
    const h = new URL(url).hostname.replace(/^\[|\]$/g, '');
    return h === 'localhost' || h === '::1' || h.startsWith('127.');
  } catch {
    return false;
  }
}

/** GET `<base>/readyz` from here, with a timeout. */
export async function probeReadyz(base: string, timeoutMs = READYZ_TIMEOUT_MS): Promise<ReadyzProbe> {
  try {
    const res = await fetch(new URL('/readyz', base), { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.text()).trim().split('\n')[0]?.slice(0, 80) ?? '';
    return res.status === 200
      ? { state: 'ok', status: 200 }
      : { state: 'failing', status: res.status, ...(body ? { note: body } : {}) };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return { state: 'unreachable', note: cause ?? messageOf(err) };
  }
}

/** GET `<base>/readyz` from inside a network namespace (a lab node's loopback), through curl. */
export async function probeReadyzIn(
  netns: string,
  base: string,
  timeoutMs = READYZ_TIMEOUT_MS,
): Promise<ReadyzProbe> {
  const url = new URL('/readyz', base).toString();
  const r = await runCmd('ip', [
    'netns',
    'exec',
    netns,
    'curl',
    '-s',
    '-m',
    String(timeoutMs / 1000),
    '-o',
    '-',
    '-w',
    '\n%{http_code}',
    url,
  ]);
  const cut = r.stdout.lastIndexOf('\n');
  const status = Number(r.stdout.slice(cut + 1)) || 0;
  const body = r.stdout.slice(0, Math.max(0, cut)).trim().split('\n')[0]?.slice(0, 80) ?? '';
  if (status === 0) return { state: 'unreachable', note: `curl exit ${r.code}` };
  return status === 200
    ? { state: 'ok', status }
    : { state: 'failing', status, ...(body ? { note: body } : {}) };
}

/**
 * Probes every record's /readyz at once. A loopback URL is asked inside `netnsOf(node)` when the
 * node has one (a lab node), from here when the node is this machine, and not at all otherwise.
 */
export async function probeAll(
  records: readonly ListedRecord[],
  netnsOf: (node: string) => string | undefined = () => undefined,
  self: string = hostname(),
): Promise<Map<string, ReadyzProbe>> {
  const out = new Map<string, ReadyzProbe>();
  await Promise.all(
    records.map(async ({ key, record: r }) => {
      if (!r.health) return;
      const netns = netnsOf(r.node);
      let probe: ReadyzProbe;
      if (netns) probe = await probeReadyzIn(netns, r.health);
      else if (isLoopbackUrl(r.health) && r.node !== self) {
        probe = { state: 'not-checked', note: `loopback of node ${r.node}` };
      } else probe = await probeReadyz(r.health);
      out.set(key, probe);
    }),
  );
  return out;
}

/** Parses `ping -q` output: received count and average round trip. */
export function parsePingSummary(text: string): { received: number; avgMs?: number } {
  const rec = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(text);
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(text);
  return { received: rec ? Number(rec[2]) : 0, ...(rtt ? { avgMs: Number(rtt[1]) } : {}) };
}

/** Pings every other node's overlay address from each node's namespace (all at once). */
export async function overlayMatrix(
  nodes: readonly { node: string; netns: string; overlayIp?: string }[],
): Promise<Reachability> {
  const jobs: Promise<ReachCell>[] = [];
  for (const f of nodes) {
    for (const t of nodes) {
      if (f.node === t.node || !t.overlayIp) continue;
      const ip = t.overlayIp;
      jobs.push(
        runCmd('ip', [
          'netns',
          'exec',
          f.netns,
          'ping',
          '-n',
          '-q',
          '-c',
          '3',
          '-i',
          '0.2',
          '-W',
          '1',
          ip,
        ]).then((r) => {
          const s = parsePingSummary(r.stdout);
          return {
            from: f.node,
            to: t.node,
            ip,
            ok: s.received > 0,
            ...(s.avgMs !== undefined ? { rttMs: s.avgMs } : {}),
            ...(s.received > 0
              ? {}
              : { error: (r.stderr.trim() || 'no reply').split('\n')[0] ?? 'no reply' }),
          };
        }),
      );
    }
  }
  return {
    nodes: nodes.map((n) => ({ node: n.node, ...(n.overlayIp ? { overlayIp: n.overlayIp } : {}) })),
    cells: await Promise.all(jobs),
  };
}

/** Programs (ip, curl, ping) run to completion, killed after 15 s. */
const runCmd = execRunner({ timeoutMs: 15_000 });

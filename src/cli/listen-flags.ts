/**
 * Values the daemons' flags share beyond the registry: Go-style durations (`500ms`, `1m30s`, as
 * kube's flags take them) and listener addresses (`ip:port`, `[v6]:port`, an IP alone, or
 * disabled). One parser, so weft-proxy and weft-controller read `--healthz-bind-address` alike.
 */
import { isIPv4, isIPv6 } from '../ipam/index.js';

/** A listener address; undefined port means disabled. */
export interface BindAddress {
  host: string;
  port: number;
}

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

/** Parses a Go-style duration (`1s`, `500ms`, `1m30s`, `0`) into milliseconds; NaN when malformed. */
export function parseDuration(text: string): number {
  const v = text.trim();
  if (v === '0') return 0;
  if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(v)) return NaN;
  let total = 0;
  for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) {
    total += Number(m[1]) * (UNIT_MS[m[2] as string] ?? NaN);
  }
  return total;
}

/** A flag validator: why `v` is not a duration, or undefined. */
export function durationProblem(v: string): string | undefined {
  return Number.isFinite(parseDuration(v)) ? undefined : 'must be a duration with a unit, e.g. 500ms, 1s, 1m';
}

/** `ip:port`, `[v6]:port` or an IP alone; undefined when disabled (port 0 or empty). */
export function parseBindAddress(text: string, defaultPort: number): BindAddress | undefined {
  const v = text.trim();
  if (v === '') return undefined;
  if (isIPv4(v) || isIPv6(v)) return { host: v, port: defaultPort };
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  if (!m) throw new Error(`bad bind address ${v}`);
  const host = (m[1] ?? m[2]) as string;
  const port = Number(m[3]);
  return port === 0 ? undefined : { host, port };
}

/** A flag validator: why `v` is not a listener address, or undefined. */
export function bindAddressProblem(v: string): string | undefined {
  const t = v.trim();
  if (t === '' || isIPv4(t) || isIPv6(t)) return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(t);
  if (!m) return 'must be ip:port, [ipv6]:port or an IP';
  const host = (m[1] ?? m[2]) as string;
  if (!(m[1] ? isIPv6(host) : isIPv4(host))) return 'must be ip:port with an IP address';
  if (Number(m[3]) > 65535) return 'must have a port in 0..65535';
  return undefined;
}

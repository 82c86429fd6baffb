/**
 * The udp forwarder's drop counters as Prometheus metrics. The addon counts on its I/O thread and
 * pushes totals about once a second; a scrape adds what moved since the previous one, so a
 * forwarder recreated from zero (a deleted device, a new config) never makes a counter go back.
 */
import { Counter, metricName, type Registry } from '../../metrics/index.js';
import type { NativeTunStats } from '../../native/index.js';

/** `reason` label of `weft_flanneld_udp_dropped_total` → the forwarder counter behind it. */
export const UDP_DROP_REASONS = {
  /** Not well-formed IPv4 (from the network). */
  malformed: 'dropMalformed',
  /** Outer source is no remote lease's public IP. */
  unknown_peer: 'dropUnknownPeer',
  /** From a lease's node, inner source outside that lease's subnet. */
  foreign_source: 'dropForeignSource',
  /** From the TUN, for a subnet no lease covers. */
  no_route: 'dropNoRoute',
  /** From the TUN, TTL ran out. */
  ttl: 'dropTtl',
  /** From the TUN, not IPv4. */
  unsupported: 'dropUnsupported',
  /** Refused by the socket. */
  send_error: 'sendErrors',
} as const satisfies Record<string, keyof NativeTunStats>;

type Source = () => NativeTunStats | undefined;

interface Feed {
  source: Source | undefined;
  last: Partial<Record<keyof NativeTunStats, number>>;
}

const feeds = new WeakMap<Registry, Feed>();

/** What moved since `last` (a value below it is a new forwarder counting from zero). */
export function counterDelta(last: number | undefined, now: number): number {
  if (last === undefined || now < last) return now;
  return now - last;
}

/**
 * Registers the udp metrics in `registry` (once per registry) and makes `source` the forwarder
 * they read; a later backend on the same registry takes over.
 */
export function feedUdpMetrics(registry: Registry, source: Source): void {
  let feed = feeds.get(registry);
  if (!feed) {
    const f: Feed = { source, last: {} };
    feed = f;
    feeds.set(registry, f);
    const take = (key: keyof NativeTunStats, s: NativeTunStats): number => {
      const d = counterDelta(f.last[key], s[key]);
      f.last[key] = s[key];
      return d;
    };
    const dropped = new Counter<'reason'>({
      name: metricName('weft_flanneld_udp_dropped_total'),
      help: 'Packets the udp backend forwarder dropped, by reason.',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        const s = f.source?.();
        for (const [reason, key] of Object.entries(UDP_DROP_REASONS))
          this.inc({ reason }, s ? take(key, s) : 0);
      },
    });
    for (const reason of Object.keys(UDP_DROP_REASONS)) dropped.inc({ reason }, 0);
    new Counter({
      name: metricName('weft_flanneld_udp_icmp_suppressed_total'),
      help: 'ICMP unreachables the udp forwarder did not send because of its rate limit (1000/s, burst 50).',
      registers: [registry],
      collect() {
        const s = f.source?.();
        this.inc(s ? take('icmpSuppressed', s) : 0);
      },
    });
  }
  feed.source = source;
  feed.last = {};
}

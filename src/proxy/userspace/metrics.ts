/**
 * The userspace mode's `weft_proxy_userspace_*` metrics, labelled by family: read from the
 * proxiers' counters when /metrics is scraped, so the data path never touches prom-client.
 */
import { Counter, Gauge, metricName, type Registry } from '../../metrics/index.js';
import type { Family } from '../model/index.js';
import type { UserspaceLimits } from './limits.js';
import type { UserspaceStats } from './listener-contract.js';

interface Source {
  stats: () => UserspaceStats;
  limits: UserspaceLimits;
}

const sources = new WeakMap<Registry, Map<Family, Source>>();

const COUNTERS: [string, string, keyof UserspaceStats][] = [
  [
    'weft_proxy_userspace_tcp_connections_refused_total',
    'TCP connections reset at once because a connection cap was reached.',
    'tcpRefused',
  ],
  [
    'weft_proxy_userspace_udp_flows_evicted_total',
    'UDP flows closed early (least recently active first) to make room under a flow cap.',
    'udpFlowsEvicted',
  ],
  [
    'weft_proxy_userspace_affinity_evictions_total',
    'ClientIP affinity entries dropped early (least recently used first) under the affinity cap.',
    'affinityEvicted',
  ],
  [
    'weft_proxy_userspace_udp_datagrams_dropped_total',
    'Client datagrams dropped: no endpoint, no room for a flow, or a failed send.',
    'udpDropped',
  ],
  ['weft_proxy_userspace_udp_flows_created_total', 'UDP flows opened.', 'udpFlowsCreated'],
  ['weft_proxy_userspace_tcp_connections_accepted_total', 'TCP connections accepted.', 'tcpAccepted'],
];

const GAUGES: [string, string, keyof UserspaceStats][] = [
  ['weft_proxy_userspace_tcp_connections_active', 'TCP connections being relayed.', 'tcpActive'],
  ['weft_proxy_userspace_udp_flows_active', 'UDP flows live.', 'udpFlowsActive'],
];

function register(registry: Registry, map: Map<Family, Source>): void {
  for (const [name, help, key] of COUNTERS) {
    new Counter<'family'>({
      name: metricName(name),
      help,
      labelNames: ['family'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [family, s] of map) this.inc({ family: String(family) }, s.stats()[key]);
      },
    });
  }
  for (const [name, help, key] of GAUGES) {
    new Gauge<'family'>({
      name: metricName(name),
      help,
      labelNames: ['family'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [family, s] of map) this.set({ family: String(family) }, s.stats()[key]);
      },
    });
  }
  new Gauge<'family' | 'limit'>({
    name: metricName('weft_proxy_userspace_limit'),
    help: 'The caps in force, after fitting them to the file descriptor limit.',
    labelNames: ['family', 'limit'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [family, s] of map)
        for (const [limit, v] of Object.entries(s.limits)) this.set({ family: String(family), limit }, v);
    },
  });
}

/** Publishes one proxier's counters; returns the function that withdraws them. */
export function publishUserspaceMetrics(
  registry: Registry,
  family: Family,
  stats: () => UserspaceStats,
  limits: UserspaceLimits,
): () => void {
  let map = sources.get(registry);
  if (!map) {
    map = new Map();
    sources.set(registry, map);
    register(registry, map);
  }
  const source = { stats, limits };
  map.set(family, source);
  return () => {
    if (map.get(family) === source) map.delete(family);
  };
}

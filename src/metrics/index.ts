/**
 * Prometheus metrics. weft keeps its own prom-client Registry rather than the global one, so a
 * test can create several components in one process without name clashes. Every metric is
 * named `weft_*`.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';

export { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Prefix of every weft metric. */
export const METRIC_PREFIX = 'weft_';

/** A fresh registry, with process metrics when asked (daemons do; tests don't). */
export function createRegistry(opts: { processMetrics?: boolean } = {}): Registry {
  const reg = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: reg, prefix: METRIC_PREFIX });
  return reg;
}

/** Throws when a metric name does not carry the weft prefix; a guard for code review misses. */
export function metricName(name: string): string {
  if (!name.startsWith(METRIC_PREFIX)) throw new Error(`metric ${name} must start with ${METRIC_PREFIX}`);
  return name;
}

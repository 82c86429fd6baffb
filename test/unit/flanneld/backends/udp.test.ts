import t from 'tap';
import { parseNetConfig } from '../../../../src/ipam/index.js';
import { createRegistry } from '../../../../src/metrics/index.js';
import type { NativeTunStats } from '../../../../src/native/index.js';
import { UDP_DEFAULT_PORT, udpPort } from '../../../../src/flanneld/backends/udp.js';
import { counterDelta, feedUdpMetrics } from '../../../../src/flanneld/backends/udp-metrics.js';

t.test('Port 0 is 8285, as flannel reads it', (t) => {
  const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'udp', Port: 0 } });
  t.equal(config.backend.type, 'udp');
  t.equal(udpPort((config.backend as { port: number }).port), UDP_DEFAULT_PORT);
  t.equal(udpPort(9000), 9000);
  t.end();
});

function stats(over: Partial<NativeTunStats>): NativeTunStats {
  const zero = {
    tunRx: 0,
    tunTx: 0,
    udpRx: 0,
    udpTx: 0,
    bytesOut: 0,
    bytesIn: 0,
    dropMalformed: 0,
    dropUnsupported: 0,
    dropNoRoute: 0,
    dropTtl: 0,
    icmpSent: 0,
    sendErrors: 0,
    dropUnknownPeer: 0,
    dropForeignSource: 0,
    icmpSuppressed: 0,
  };
  return { ...zero, ...over };
}

async function value(reg: ReturnType<typeof createRegistry>, name: string, reason?: string) {
  const m = (await reg.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values as { value: number; labels: Record<string, string> }[] | undefined)?.find(
    (x) => reason === undefined || x.labels.reason === reason,
  );
  return v?.value;
}

t.test('the forwarder counters become weft_flanneld_udp_dropped_total{reason}', async (t) => {
  const reg = createRegistry();
  let s: NativeTunStats | undefined = stats({ dropUnknownPeer: 3, dropForeignSource: 2, icmpSuppressed: 7 });
  feedUdpMetrics(reg, () => s);
  t.equal(await value(reg, 'weft_flanneld_udp_dropped_total', 'unknown_peer'), 3);
  t.equal(await value(reg, 'weft_flanneld_udp_dropped_total', 'foreign_source'), 2);
  t.equal(await value(reg, 'weft_flanneld_udp_dropped_total', 'malformed'), 0);
  t.equal(await value(reg, 'weft_flanneld_udp_icmp_suppressed_total'), 7);
  s = stats({ dropUnknownPeer: 5, dropForeignSource: 2, icmpSuppressed: 7 });
  t.equal(await value(reg, 'weft_flanneld_udp_dropped_total', 'unknown_peer'), 5);
  // A new forwarder on the same registry counts from zero; the metric only grows.
  let s2 = stats({ dropUnknownPeer: 1 });
  feedUdpMetrics(reg, () => s2);
  t.equal(await value(reg, 'weft_flanneld_udp_dropped_total', 'unknown_peer'), 6);
  s2 = stats({ dropUnknownPeer: 4 });
  t.equal(await value(reg, 'weft_flanneld_udp_dropped_total', 'unknown_peer'), 9);
  t.equal(counterDelta(undefined, 4), 4);
  t.equal(counterDelta(10, 2), 2);
  t.equal(counterDelta(2, 10), 8);
});

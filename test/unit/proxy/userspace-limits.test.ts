/**
 * The userspace caps fitted to the file descriptor limit: a reserve is always left for the
 * registry session and the daemon's listeners, and a per-port cap never exceeds its total.
 */
import t from 'tap';
import {
  DEFAULT_USERSPACE_LIMITS,
  fdReserve,
  fitToFdLimit,
  softFdLimit,
} from '../../../src/proxy/userspace/index.js';

t.test('caps fitted to RLIMIT_NOFILE leave the reserve untouched', async (t) => {
  for (const soft of [256, 1024, 4096, 65_536, 1_048_576]) {
    for (const relay of ['native', 'node'] as const) {
      const l = fitToFdLimit(DEFAULT_USERSPACE_LIMITS, soft, relay);
      const fds = l.maxTcpConnections * (relay === 'native' ? 6 : 2) + l.maxUdpFlows;
      t.ok(
        fds <= Math.max(2 + (relay === 'native' ? 4 : 0) + 1, soft - fdReserve(soft)),
        `${soft} ${relay}: ${fds} fds at the caps`,
      );
      t.ok(l.maxTcpConnectionsPerPort <= l.maxTcpConnections);
      t.ok(l.maxUdpFlowsPerPort <= l.maxUdpFlows);
      t.ok(l.maxTcpConnections >= 1 && l.maxUdpFlows >= 1);
    }
  }
  // Plenty of descriptors: the flags' values stand.
  t.same(fitToFdLimit(DEFAULT_USERSPACE_LIMITS, 1_048_576, 'native'), DEFAULT_USERSPACE_LIMITS);
  // The usual 1024: 768 usable, 384 each way.
  t.same(fitToFdLimit(DEFAULT_USERSPACE_LIMITS, 1024, 'native'), {
    maxTcpConnections: 64,
    maxTcpConnectionsPerPort: 64,
    maxUdpFlows: 384,
    maxUdpFlowsPerPort: 384,
    maxAffinityEntries: DEFAULT_USERSPACE_LIMITS.maxAffinityEntries,
  });
  t.equal(fdReserve(1_048_576), 52_428, '5 % of a large limit');
  t.equal(fitToFdLimit(DEFAULT_USERSPACE_LIMITS, Infinity, 'node').maxUdpFlows, 65_536);
});

t.test('the soft limit is read from /proc/self/limits', async (t) => {
  const limits = (soft: string) =>
    `Limit                     Soft Limit           Hard Limit           Units\nMax processes             63405                63405                processes\nMax open files            ${soft}                 524288               files\n`;
  t.equal(
    softFdLimit(() => limits('1024')),
    1024,
  );
  t.equal(
    softFdLimit(() => limits('unlimited')),
    Infinity,
  );
  t.equal(
    softFdLimit(() => 'garbage'),
    1024,
  );
  t.equal(
    softFdLimit(() => {
      throw new Error('ENOENT');
    }),
    1024,
  );
  t.ok(softFdLimit() >= 1, 'this process has one');
});

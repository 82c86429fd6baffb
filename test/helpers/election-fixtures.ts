/**
 * Pieces shared by the leader-election tests: candidates that record their changes, and a
 * poll with a deadline.
 */
import { sleep } from '../../src/backoff/index.js';
import { LeaderElector, type LeaderElectorOptions } from '../../src/election/index.js';
import { silentLogger } from '../../src/log/index.js';
import type { Store } from '../../src/registry/index.js';

/** A candidate and the onChange calls it made, with when (Date.now). */
export interface Candidate {
  name: string;
  elector: LeaderElector;
  changes: { leader: boolean; at: number }[];
}

export function candidate(
  store: Store,
  key: string,
  name: string,
  opts: Partial<LeaderElectorOptions> = {},
): Candidate {
  const changes: Candidate['changes'] = [];
  const elector = new LeaderElector({
    store,
    key,
    identity: name,
    leaseSeconds: 1,
    renewDeadlineSeconds: 0.6,
    retryPeriodMs: 100,
    log: silentLogger(),
    onChange: (leader) => changes.push({ leader, at: Date.now() }),
    ...opts,
  });
  return { name, elector, changes };
}

/** Polls `pred` every 20 ms until it holds; rejects naming `what` after `timeoutMs`. */
export async function until(
  pred: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await pred()) return Date.now() - start;
    if (Date.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** The one candidate that leads, when exactly one does. */
export async function soleLeader(cs: Candidate[], timeoutMs: number): Promise<Candidate> {
  await until(() => cs.filter((c) => c.elector.isLeader()).length === 1, timeoutMs, 'exactly one leader');
  const leader = cs.find((c) => c.elector.isLeader());
  if (!leader) throw new Error('no leader');
  return leader;
}

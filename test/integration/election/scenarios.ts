/**
 * Leader election against a real server, the same scenarios for every backend: one leader of
 * two; a leader killed with SIGKILL in a process of its own, replaced within the lease; a leader
 * cut off from the store (the server SIGSTOPped) that stops leading before its lease can expire,
 * and whose late write is fenced once the other candidate has taken over.
 * Periods are short: lease 2 s, renew deadline 1.2 s, retry 300 ms.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { sleep } from '../../../src/backoff/index.js';
import { LeaderElector } from '../../../src/election/index.js';
import { ErrorCodes } from '../../../src/errors/index.js';
import { openStore, type OpenStoreOptions, type Store } from '../../../src/registry/index.js';
import { candidate, soleLeader, until, type Candidate } from '../../helpers/election-fixtures.js';

export interface ElectionHarness {
  name: string;
  /** How to open a client of the server (JSON: a child process gets it too). */
  store: OpenStoreOptions | string;
  /** SIGSTOP / SIGCONT the server process, by its PID. */
  pause(): void;
  resume(): void;
  /** Extra time the backend may take to expire a key (etcd revokes expired leases every 0.5 s). */
  expirySlackMs: number;
}

const LEASE_S = 2;
const RENEW_S = 1.2;
const RETRY_MS = 300;
const periods = { leaseSeconds: LEASE_S, renewDeadlineSeconds: RENEW_S, retryPeriodMs: RETRY_MS };

const campaign = fileURLToPath(new URL('./fixtures/campaign.ts', import.meta.url));

export function runElectionScenarios(tap: Test, h: ElectionHarness): void {
  const run = randomBytes(3).toString('hex');
  let n = 0;
  const newKey = (): string => `/election-${h.name}-${run}/${++n}/leases/weft-controller`;

  async function open(t: Test): Promise<Store> {
    const s = await openStore(h.store);
    t.teardown(() => s.close());
    return s;
  }

  async function candidates(t: Test, key: string, names: string[]): Promise<Candidate[]> {
    const cs: Candidate[] = [];
    for (const name of names) cs.push(candidate(await open(t), key, name, periods));
    t.teardown(() => Promise.all(cs.map((c) => c.elector.stop())));
    return cs;
  }

  tap.test(
    `${h.name}: two candidates, one leader; resigning hands over at once`,
    { timeout: 30_000 },
    async (t) => {
      const key = newKey();
      const reader = await open(t);
      const cs = await candidates(t, key, ['a', 'b']);
      for (const c of cs) c.elector.start();
      const leader = await soleLeader(cs, 5_000);
      const standby = cs.find((c) => c !== leader);
      if (!standby) throw new Error('no standby');
      let both = 0;
      for (let i = 0; i < 20; i++) {
        if (leader.elector.isLeader() && standby.elector.isLeader()) both++;
        await sleep(150);
      }
      t.equal(both, 0, 'never two leaders over 3 s (ten retry periods)');
      t.ok(leader.elector.isLeader(), 'the leader keeps leading across renewals');
      const held = await LeaderElector.holder(reader, key);
      t.equal(held?.identity, leader.name, 'holder() names the leader');
      const kv = await reader.get(key);
      t.equal(kv?.ttlBound, true, 'the election key is TTL-bound');
      t.equal(held?.token, kv?.createRevision, 'the token is the revision of the winning create');

      const guard = leader.elector.guard();
      if (!guard) throw new Error('no guard');
      const w = await reader.create(`${key}-out/1`, 'x', { guard });
      t.ok(w.created, 'a write under the leader guard applies');

      const stoppedAt = Date.now();
      await leader.elector.stop();
      await until(() => standby.elector.isLeader(), 5_000, 'the standby to lead');
      const took = Date.now() - stoppedAt;
      t.ok(took < LEASE_S * 1000, `the standby leads ${took} ms after the resignation, before the lease`);
      const next = await LeaderElector.holder(reader, key);
      t.ok((next?.token ?? 0) > (held?.token ?? 0), `the token grew (${held?.token} → ${next?.token})`);
      await t.rejects(
        reader.create(`${key}-out/2`, 'x', { guard }),
        { code: ErrorCodes.FENCED },
        'the resigned leader is fenced',
      );
    },
  );

  tap.test(
    `${h.name}: a leader killed with SIGKILL is replaced within the lease`,
    { timeout: 40_000 },
    async (t) => {
      const key = newKey();
      const reader = await open(t);
      const child = spawn(
        process.execPath,
        [
          ...process.execArgv,
          campaign,
          JSON.stringify({ store: h.store, key, identity: 'doomed', ...periods }),
        ],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      );
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.on('exit', (_c, sig) => resolve(sig)),
      );
      t.teardown(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
      });
      const lines: { leader: boolean; token: number }[] = [];
      createInterface({ input: child.stdout }).on('line', (l) => {
        try {
          lines.push(JSON.parse(l) as { leader: boolean; token: number });
        } catch {
          /* not ours */
        }
      });
      await until(() => lines.some((l) => l.leader), 20_000, 'the child to lead');
      const [standby] = await candidates(t, key, ['survivor']);
      if (!standby) throw new Error('no standby');
      standby.elector.start();
      await sleep(1_000);
      t.notOk(standby.elector.isLeader(), 'the standby waits while the child leads');
      const before = await LeaderElector.holder(reader, key);
      t.equal(before?.identity, 'doomed');

      const killedAt = Date.now();
      child.kill('SIGKILL');
      t.equal(await exited, 'SIGKILL', 'the leader died of SIGKILL, without resigning');
      await until(() => standby.elector.isLeader(), 15_000, 'the standby to lead');
      const took = Date.now() - killedAt;
      const bound = LEASE_S * 1000 + RETRY_MS * 1.2 + h.expirySlackMs + 300;
      t.ok(
        took <= bound,
        `the standby leads ${took} ms after the kill (lease ${LEASE_S} s; bound ${bound} ms)`,
      );
      const after = await LeaderElector.holder(reader, key);
      t.equal(after?.identity, 'survivor');
      t.ok((after?.token ?? 0) > (before?.token ?? 0), 'with a higher token');
    },
  );

  tap.test(
    `${h.name}: a leader cut off from the store stops leading before its lease can expire; its late write is fenced`,
    { timeout: 40_000 },
    async (t) => {
      const key = newKey();
      const reader = await open(t);
      const cs = await candidates(t, key, ['a', 'b']);
      for (const c of cs) c.elector.start();
      const leader = await soleLeader(cs, 5_000);
      const standby = cs.find((c) => c !== leader);
      if (!standby) throw new Error('no standby');
      const guard = leader.elector.guard();
      if (!guard) throw new Error('no guard');
      const before = await LeaderElector.holder(reader, key);
      // The leader's own client, through which its late write goes.
      const leaderStore = await open(t);

      let paused = true;
      h.pause();
      t.teardown(() => {
        if (paused) h.resume();
      });
      const pausedAt = Date.now();
      await until(() => !leader.elector.isLeader(), LEASE_S * 1000, 'the leader to step down');
      const stepped = Date.now() - pausedAt;
      t.ok(
        stepped <= RENEW_S * 1000 + 200 && stepped < LEASE_S * 1000,
        `not leading ${stepped} ms after the cut: at the renew deadline (${RENEW_S} s), before the lease (${LEASE_S} s)`,
      );
      t.equal(leader.elector.guard(), undefined, 'no guard any more');
      t.same(
        leader.changes.map((c) => c.leader),
        [true, false],
        'onChange(false)',
      );
      t.notOk(standby.elector.isLeader(), 'the standby cannot have won yet');
      // The old leader campaigns no more (stop() makes no request while it does not lead), so
      // the other candidate takes over.
      const stopping = leader.elector.stop();

      // Past the lease, so the key has expired when the server looks again.
      await sleep(LEASE_S * 1000 + 500 - (Date.now() - pausedAt));
      h.resume();
      paused = false;
      await until(() => standby.elector.isLeader(), 15_000, 'the standby to lead');
      await stopping;
      const after = await LeaderElector.holder(reader, key);
      t.equal(after?.identity, standby.name, 'the other candidate leads');
      t.ok((after?.token ?? 0) > (before?.token ?? 0), 'with a higher token');

      await t.rejects(
        leaderStore.create(`${key}-out/late`, 'x', { guard }),
        { code: ErrorCodes.FENCED },
        'a write with the old guard is fenced',
      );
      t.equal(await reader.get(`${key}-out/late`), undefined, 'and wrote nothing');
    },
  );
}

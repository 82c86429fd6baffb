/**
 * The userspace balancer: round-robin over a shuffled list, ClientIP affinity with a TTL (on an
 * injected clock), connect failover with kube-proxy's growing timeouts, and the UDP flow table's
 * idle expiry and endpoint-removal closing.
 */
import t from 'tap';
import {
  Balancer,
  DIAL_TIMEOUTS_MS,
  dialWithFailover,
  targetKey,
  UdpFlowTable,
  type Target,
} from '../../../src/proxy/userspace/index.js';

const eps = (n: number, port = 8080): Target[] =>
  Array.from({ length: n }, (_, i) => ({ ip: `10.244.${i + 1}.2`, port }));

/** A seeded PRNG (mulberry32), so shuffles are reproducible. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('round-robin visits every endpoint evenly', async (t) => {
  const b = new Balancer({ random: seeded(1) });
  b.setTargets(eps(5));
  const counts = new Map<string, number>();
  for (let i = 0; i < 500; i++) {
    const k = targetKey(b.next(`192.0.2.${i % 7}`)!);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  t.equal(counts.size, 5, 'all five endpoints chosen');
  t.same([...counts.values()], [100, 100, 100, 100, 100], 'exactly 100 each');
  // Each window of 5 consecutive choices is a permutation of the endpoints.
  const window = Array.from({ length: 5 }, () => targetKey(b.next('c')!));
  t.equal(new Set(window).size, 5);
});

t.test('the list is shuffled, and reshuffled only when the set changes', async (t) => {
  const orders = new Set<string>();
  for (let seed = 1; seed <= 20; seed++) {
    const b = new Balancer({ random: seeded(seed) });
    b.setTargets(eps(4));
    orders.add(b.targets.map(targetKey).join(','));
  }
  t.ok(orders.size > 1, `different seeds give different orders (${orders.size} of 20)`);

  const b = new Balancer({ random: seeded(7) });
  b.setTargets(eps(4));
  const before = b.targets.map(targetKey);
  const first = targetKey(b.next('c')!);
  t.same(b.setTargets([...eps(4)].reverse()), [], 'same set in another order: nothing removed');
  t.same(b.targets.map(targetKey), before, 'same set keeps the order');
  t.not(targetKey(b.next('c')!), first, 'and the round-robin position');
  const removed = b.setTargets(eps(3));
  t.same(removed, ['10.244.4.2:8080'], 'removed endpoint reported');
  t.equal(b.targets.length, 3);
  t.same(b.setTargets([]), eps(3).map(targetKey).sort(), 'all removed');
  t.equal(b.next('c'), undefined, 'no endpoint: undefined');
  b.setTargets([
    { ip: 'fd00::1', port: 53 },
    { ip: 'fd00::1', port: 53 },
  ]);
  t.same(b.targets.map(targetKey), ['[fd00::1]:53'], 'duplicates collapse; IPv6 key in brackets');
});

t.test('ClientIP affinity sticks, expires, and follows endpoint removal', async (t) => {
  let now = 1_000_000;
  const b = new Balancer({ affinityTimeoutSeconds: 10, now: () => now, random: seeded(3) });
  b.setTargets(eps(3));
  const a = targetKey(b.next('192.0.2.1')!);
  const c = targetKey(b.next('192.0.2.2')!);
  t.not(a, c, 'two clients get different endpoints (round-robin)');
  for (let i = 0; i < 20; i++) {
    now += 5_000; // each use refreshes the entry, so it never gets 10 s old
    t.equal(targetKey(b.next('192.0.2.1')!), a);
  }
  t.equal(b.affinityCount, 2);
  now += 10_001;
  t.equal(b.sweep(), 2, 'both entries older than 10 s swept');
  t.equal(b.affinityCount, 0);

  // Expiry without a sweep: the next choice is round-robin again.
  const first = targetKey(b.next('192.0.2.9')!);
  now += 10_001;
  const picks = new Set([
    first,
    ...Array.from({ length: 3 }, () => ((now += 10_001), targetKey(b.next('192.0.2.9')!))),
  ]);
  t.equal(picks.size, 3, 'after each expiry the client moves on: all three endpoints seen');

  // A retry after a failed connect ignores the affinity and records the new choice.
  const stuck = targetKey(b.next('192.0.2.5')!);
  const moved = targetKey(b.next('192.0.2.5', true)!);
  t.not(moved, stuck);
  t.equal(targetKey(b.next('192.0.2.5')!), moved, 'the retry became the affinity');

  // Removing the endpoint of an affinity drops the entry.
  b.setTargets(b.targets.filter((x) => targetKey(x) !== moved));
  t.not(targetKey(b.next('192.0.2.5')!), moved);

  b.setAffinityTimeout(0);
  t.equal(b.affinityCount, 0, 'turning affinity off clears it');
  const x = targetKey(b.next('192.0.2.5')!);
  t.not(targetKey(b.next('192.0.2.5')!), x, 'no affinity: plain round-robin');
});

t.test('failover: next endpoint each time, timeouts 250, 500, 1000, 2000 ms', async (t) => {
  t.same(DIAL_TIMEOUTS_MS, [250, 500, 1000, 2000]);
  const b = new Balancer({ random: seeded(5) });
  b.setTargets(eps(3));
  const order = b.targets.map(targetKey);
  const calls: [string, number][] = [];
  const dead = new Set([order[0], order[1]]);
  const res = await dialWithFailover(b, '192.0.2.1', async (target, timeout) => {
    calls.push([targetKey(target), timeout]);
    if (dead.has(targetKey(target))) throw new Error(`refused ${targetKey(target)}`);
    return `conn-${targetKey(target)}`;
  });
  t.same(calls, [
    [order[0], 250],
    [order[1], 500],
    [order[2], 1000],
  ]);
  t.same(res, { conn: `conn-${order[2]}`, target: b.targets[2], failures: 2 });

  // Everything dead: four attempts, round-robin wrapping, then the last error.
  calls.length = 0;
  await t.rejects(
    dialWithFailover(b, '192.0.2.1', async (target, timeout) => {
      calls.push([targetKey(target), timeout]);
      throw new Error(`refused ${targetKey(target)}`);
    }),
    { message: /^refused / },
  );
  t.same(
    calls.map((c) => c[1]),
    [250, 500, 1000, 2000],
  );
  t.same(
    calls.map((c) => c[0]),
    [order[0], order[1], order[2], order[0]],
  );

  // With affinity, the first attempt goes to the client's endpoint, retries move on.
  const s = new Balancer({ affinityTimeoutSeconds: 60, random: seeded(5) });
  s.setTargets(eps(3));
  const mine = targetKey(s.next('192.0.2.7')!);
  const seen: string[] = [];
  await dialWithFailover(s, '192.0.2.7', async (target) => {
    seen.push(targetKey(target));
    if (seen.length === 1) throw new Error('down');
    return 1;
  });
  t.equal(seen[0], mine);
  t.not(seen[1], mine);
  t.equal(targetKey(s.next('192.0.2.7')!), seen[1], 'affinity moved to the endpoint that answered');

  await t.rejects(
    dialWithFailover(new Balancer(), 'c', async () => 1),
    { message: 'no endpoints' },
  );
});

t.test('UDP flow table: idle expiry, touch, endpoint removal', async (t) => {
  let now = 0;
  const closed: string[] = [];
  const flows = new UdpFlowTable<string>({
    idleTimeoutMs: 1000,
    now: () => now,
    onClose: (f) => closed.push(`${f.client}->${f.upstream}`),
  });
  const f1 = flows.add('192.0.2.1:5000', '10.244.1.2:53', 'sock1');
  flows.add('192.0.2.2:5000', '10.244.2.2:53', 'sock2');
  flows.add('192.0.2.3:5000', '10.244.1.2:53', 'sock3');
  t.equal(flows.size, 3);

  now = 600;
  t.equal(flows.get('192.0.2.1:5000'), f1, 'a datagram keeps a flow alive');
  now = 900;
  flows.touch(f1);
  now = 1_200;
  t.equal(flows.expire(), 2, 'two idle flows expire');
  t.same(closed.sort(), ['192.0.2.2:5000->sock2', '192.0.2.3:5000->sock3']);
  t.equal(flows.size, 1);
  now = 1_800;
  t.equal(flows.expire(), 0, 'the touched one is 900 ms idle: kept');
  now = 1_901;
  t.equal(flows.get('192.0.2.1:5000'), undefined, 'found expired on lookup');
  t.equal(flows.size, 0);

  closed.length = 0;
  flows.add('192.0.2.1:5000', '10.244.1.2:53', 'a');
  flows.add('192.0.2.2:5000', '10.244.2.2:53', 'b');
  flows.add('192.0.2.3:5000', '10.244.1.2:53', 'c');
  t.equal(flows.closeTargets(['10.244.1.2:53']), 2, 'flows to a removed endpoint closed');
  t.same(closed.sort(), ['192.0.2.1:5000->a', '192.0.2.3:5000->c']);
  const b = flows.get('192.0.2.2:5000')!;
  const b2 = flows.add('192.0.2.2:5000', '10.244.3.2:53', 'b2');
  t.same(closed.at(-1), '192.0.2.2:5000->b', 'replacing a flow closes the old one');
  flows.delete(b);
  t.equal(flows.size, 1, 'deleting a replaced flow object leaves the new one');
  flows.delete(b2);
  flows.add('x:1', 'y:2', 'z');
  flows.clear();
  t.equal(flows.size, 0);
  t.equal(closed.at(-1), 'x:1->z');
});

t.test('affinity entries are capped: the least recently used one goes, counted', async (t) => {
  let now = 0;
  let evicted = 0;
  const b = new Balancer({
    affinityTimeoutSeconds: 10_800,
    maxAffinityEntries: 3,
    onAffinityEvicted: () => evicted++,
    now: () => now,
    random: seeded(1),
  });
  b.setTargets(eps(2));
  const first = targetKey(b.next('192.0.2.1')!);
  b.next('192.0.2.2');
  b.next('192.0.2.3');
  now += 1;
  t.equal(targetKey(b.next('192.0.2.1')!), first, 'a use makes .1 the most recent');
  // A flood of forged sources: the table never grows past the cap.
  for (let i = 0; i < 10_000; i++) b.next(`198.51.${i >> 8}.${i & 255}`);
  t.equal(b.affinityCount, 3, 'never more than the cap');
  t.equal(evicted, 10_000, 'every entry dropped to make room is counted');
  // Unused entries go first: a client in between keeps its endpoint while others churn.
  now += 1;
  const kept = targetKey(b.next('192.0.2.50')!);
  for (let i = 0; i < 2; i++) b.next(`203.0.113.${i}`);
  t.equal(targetKey(b.next('192.0.2.50')!), kept, 'the most recent entries survive');
  t.equal(b.sweep(), 0, 'nothing expired after 2 ms');
});

t.test('affinity and flow ages use the monotonic clock, not the wall clock', async (t) => {
  const realNow = Date.now;
  t.teardown(() => (Date.now = realNow));
  // The wall clock, stubbed before anything reads it (a default clock may be captured at creation).
  let wall = realNow();
  Date.now = () => wall;
  const b = new Balancer({ affinityTimeoutSeconds: 10, random: seeded(5) });
  b.setTargets(eps(3));
  const flows = new UdpFlowTable<string>({ idleTimeoutMs: 60_000, onClose: () => {} });
  const a = targetKey(b.next('192.0.2.1')!);
  flows.add('192.0.2.1:1', a, 'sock');
  // An NTP step of one hour forward: neither the affinity nor the flow has aged.
  wall += 3_600_000;
  t.equal(targetKey(b.next('192.0.2.1')!), a, 'affinity kept across a wall-clock step');
  t.equal(b.sweep(), 0);
  t.equal(flows.expire(), 0, 'flow kept across a wall-clock step');
  t.ok(flows.get('192.0.2.1:1'));
});

t.test('UDP flow table: per-table cap and shared budget, oldest idle evicted first', async (t) => {
  let now = 0;
  const closed: string[] = [];
  const evicted: string[] = [];
  const budget = { max: 5, used: 0 };
  const opts = (name: string) => ({
    idleTimeoutMs: 1000,
    maxFlows: 3,
    budget,
    now: () => now,
    onClose: (f: { client: string }) => closed.push(`${name}:${f.client}`),
    onEvicted: (f: { client: string }) => evicted.push(`${name}:${f.client}`),
  });
  const a = new UdpFlowTable<string>(opts('a'));
  const b = new UdpFlowTable<string>(opts('b'));
  for (const c of ['c1', 'c2', 'c3']) {
    t.ok(a.makeRoom());
    a.add(c, 't', c);
    now++;
  }
  // c1 is the oldest but was just active: c2 is the one idle the longest.
  a.get('c1');
  t.ok(a.makeRoom(), 'a full table makes room');
  a.add('c4', 't', 'c4');
  t.same(evicted, ['a:c2'], 'the flow idle the longest is evicted');
  t.equal(a.size, 3);
  t.equal(budget.used, 3);
  for (const c of ['d1', 'd2']) {
    t.ok(b.makeRoom());
    b.add(c, 't', c);
  }
  t.equal(budget.used, 5, 'the budget counts both tables');
  // The shared budget is full: b gives up its own oldest flow, never a's.
  t.ok(b.makeRoom());
  b.add('d3', 't', 'd3');
  t.same(evicted, ['a:c2', 'b:d1']);
  t.equal(a.size, 3);
  const c = new UdpFlowTable<string>(opts('c'));
  t.notOk(c.makeRoom(), 'an empty table cannot take from others: the datagram is dropped');
  a.clear();
  b.clear();
  t.equal(budget.used, 0, 'closing returns the budget');
  // 50,000 forged source ports against one table: the cap holds.
  for (let i = 0; i < 50_000; i++) {
    if (a.makeRoom()) a.add(`198.51.100.1:${i}`, 't', 's');
  }
  t.equal(a.size, 3);
  t.equal(budget.used, 3);
});

/**
 * The one compliance suite of the backend contract (src/flanneld/backends/backend.ts), run
 * unchanged against every backend's planner: deterministic and pure, own lease excluded, bad
 * leases skipped with a reason without costing the others anything, a removed lease removes
 * exactly its entries, and everything planned lies inside what the backend declares it owns
 * (otherwise the reconciler could never remove it again).
 */
import type { Test } from 'tap';
import type {
  Backend,
  DesiredState,
  NodeLease,
  PlanInput,
  Underlay,
} from '../../../../src/flanneld/backends/index.js';
import {
  describeEntry,
  diffState,
  type ActualState,
  type KindedEntry,
} from '../../../../src/flanneld/dataplane/index.js';
import { Cidr, type NetConfig } from '../../../../src/ipam/index.js';

export interface BackendHarness {
  name: string;
  backend: Backend;
  config: NetConfig;
  underlay: Underlay;
  own: NodeLease;
  /** At least three leases this backend programs. */
  remotes: NodeLease[];
  /** Leases this backend must skip, each for a different reason. */
  bad: NodeLease[];
  /** False for a backend that programs nothing (alloc). */
  programsRemotes: boolean;
}

/** Objects that are not leases at all, as a broken caller or a corrupt listing could pass them. */
const GARBAGE: unknown[] = [
  null,
  undefined,
  42,
  'lease',
  {},
  { key: 7 },
  { key: '' },
  { key: '10.244.66.0-24' },
  { key: '10.244.67.0-24', subnets: null, attrs: { publicIP: '192.0.2.67' } },
  { key: '10.244.68.0-24', subnets: { ipv4: 'not a cidr' }, attrs: { publicIP: '192.0.2.68' } },
  { key: '10.244.69.0-24', subnets: { ipv4: Cidr.parse('10.244.69.0/24') }, attrs: null },
  { key: '10.244.70.0-24', subnets: { ipv4: Cidr.parse('10.244.70.0/24') }, attrs: { publicIP: 12 } },
  {
    key: '10.244.71.0-24',
    subnets: { ipv4: Cidr.parse('10.244.71.0/24') },
    get attrs(): never {
      throw new Error('a getter that throws');
    },
  },
];

function entries(d: DesiredState): KindedEntry[] {
  return [
    ...d.addresses.map((entry): KindedEntry => ({ kind: 'address', entry })),
    ...d.neighbours.map((entry): KindedEntry => ({ kind: 'neighbour', entry })),
    ...d.fdb.map((entry): KindedEntry => ({ kind: 'fdb', entry })),
    ...d.routes.map((entry): KindedEntry => ({ kind: 'route', entry })),
  ];
}

function entryTexts(d: DesiredState): string[] {
  return entries(d)
    .map((e) => `${e.kind} ${describeEntry(e)}`)
    .sort();
}

/** The kernel after a perfect reconcile of `d`. */
function asActual(d: DesiredState): ActualState {
  return {
    addresses: d.addresses,
    neighbours: d.neighbours.map((n) => ({ ...n, state: 'permanent' })),
    fdb: d.fdb.map((f) => ({ ...f, state: 'permanent' })),
    routes: d.routes,
  };
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
  }
  return v;
}

/** Where a lease shows up in entries: its subnet, its network address, its PublicIP. */
function mentions(text: string, lease: NodeLease): boolean {
  const s = lease.subnets.ipv4 ?? lease.subnets.ipv6;
  return (
    (s !== undefined && (text.includes(` ${s.network} `) || text.includes(`${s}`))) ||
    text.includes(` ${lease.attrs.publicIP} `) ||
    text.endsWith(` ${lease.attrs.publicIP}`)
  );
}

export function runBackendCompliance(t: Test, h: BackendHarness): void {
  const input = (leases: readonly unknown[], own: unknown = h.own): PlanInput => ({
    config: h.config,
    underlay: h.underlay,
    own: own as NodeLease,
    leases: leases as NodeLease[],
  });
  const plan = (leases: readonly unknown[], own?: unknown): DesiredState =>
    h.backend.plan(input(leases, own));
  const all = [h.own, ...h.remotes];

  t.test(`${h.name}: the plan is deterministic and ignores lease order`, async (t) => {
    const base = plan(all);
    t.same(plan(all), base, 'same input, same plan');
    t.same(plan([...all].reverse()), base, 'reversed');
    const rotated = [...all.slice(2), ...all.slice(0, 2)];
    t.same(plan(rotated), base, 'rotated');
    const withBad = [...h.bad, ...all];
    t.same(plan(withBad), plan([...withBad].reverse()), 'with bad leases too');
  });

  t.test(`${h.name}: the plan does not modify its input`, async (t) => {
    const frozen = deepFreeze(input([...all, ...h.bad]));
    const before = JSON.stringify(frozen);
    t.doesNotThrow(() => h.backend.plan(frozen));
    t.equal(JSON.stringify(frozen), before);
  });

  t.test(`${h.name}: the own lease is never programmed as a remote`, async (t) => {
    const withOwn = plan(all);
    const withoutOwn = plan(h.remotes);
    t.same(withOwn, withoutOwn, 'listing the own lease changes nothing');
    t.notOk(withOwn.programmed.includes(h.own.key));
    t.notOk(
      withOwn.skipped.some((s) => s.key === h.own.key),
      'and it is not reported as skipped',
    );
    const own = h.own.subnets.ipv4 ?? h.own.subnets.ipv6;
    t.notOk(
      withOwn.routes.some((r) => own && Cidr.parse(r.dst).overlaps(own)),
      'no route into the own subnet',
    );
  });

  t.test(`${h.name}: every valid remote is programmed`, async (t) => {
    const d = plan(all);
    t.same(d.skipped, [], 'nothing skipped');
    if (!h.programsRemotes) {
      t.same(entryTexts(d), [], 'nothing planned');
      t.same(d.programmed, []);
      return;
    }
    t.same(d.programmed, h.remotes.map((r) => r.key).sort());
    for (const r of h.remotes) {
      const subnet = String(r.subnets.ipv4 ?? r.subnets.ipv6);
      t.ok(
        d.routes.some((x) => x.dst === subnet),
        `a route to ${subnet}`,
      );
    }
  });

  t.test(`${h.name}: bad leases are skipped with reasons, the others still programmed`, async (t) => {
    const good = plan(all);
    const mixed = plan([...h.bad.slice(0, 2), ...all, ...h.bad.slice(2)]);
    t.same(entryTexts(mixed), entryTexts(good), 'the same entries as without them');
    t.same(mixed.programmed, good.programmed);
    if (!h.programsRemotes) return;
    for (const b of h.bad) {
      const skip = mixed.skipped.find((s) => s.key === b.key);
      t.ok(skip, `${b.key} skipped`);
      t.match(skip?.reason, /\S{3}/, `${b.key}: ${skip?.reason}`);
    }
  });

  t.test(`${h.name}: garbage never throws and costs nothing`, async (t) => {
    const good = plan(all);
    let d: DesiredState | undefined;
    t.doesNotThrow(() => (d = plan([...GARBAGE, ...all])));
    t.same(d && entryTexts(d), entryTexts(good));
    for (const [i, own] of [undefined, null, {}, { key: h.own.key }, GARBAGE[12]].entries()) {
      let e: DesiredState | undefined;
      t.doesNotThrow(() => (e = plan(h.remotes, own)), `garbage own lease #${i}`);
      if (h.programsRemotes)
        t.same(e?.programmed, good.programmed, 'remotes programmed without a usable own lease');
    }
  });

  t.test(`${h.name}: removing a lease removes exactly its entries; adding one only adds`, async (t) => {
    const full = plan(all);
    for (const r of h.remotes) {
      const less = plan(all.filter((l) => l !== r));
      const ops = diffState(less, asActual(full));
      t.ok(
        ops.every((op) => op.action === 'delete'),
        `removing ${r.key}: deletes only`,
      );
      if (h.programsRemotes) t.ok(ops.length > 0, `removing ${r.key}: something to delete`);
      for (const op of ops)
        t.ok(mentions(`${op.kind} ${describeEntry(op)}`, r), `${describeEntry(op)} is ${r.key}'s`);
      const back = diffState(full, asActual(less));
      t.ok(
        back.every((op) => op.action === 'create'),
        `adding ${r.key} back: creates only`,
      );
      t.equal(back.length, ops.length, 'as many as were removed');
    }
    t.same(diffState(full, asActual(full)), [], 'a converged kernel needs nothing');
  });

  t.test(`${h.name}: everything planned lies inside what the backend owns`, async (t) => {
    const d = plan([...all, ...h.bad]);
    const devices = new Set(d.owned.devices);
    const routeDevices = new Set(d.owned.routeDevices);
    const networks = d.owned.networks.map((n) => Cidr.parse(n));
    for (const e of [...d.addresses, ...d.neighbours, ...d.fdb]) {
      t.ok(devices.has(e.dev), `${JSON.stringify(e)} on an owned device`);
    }
    for (const r of d.routes) {
      t.ok(routeDevices.has(r.dev), `${r.dst} out of an owned route device`);
      t.ok(
        networks.some((n) => n.contains(Cidr.parse(r.dst))),
        `${r.dst} inside a cluster network`,
      );
    }
    if (h.programsRemotes) {
      t.ok(d.owned.networks.length > 0, 'declares the cluster networks');
      t.ok(routeDevices.size > 0, 'declares its route devices');
    }
  });

  t.test(`${h.name}: a cluster of one plans no remote entries`, async (t) => {
    const d = plan([h.own]);
    t.same(d.neighbours, []);
    t.same(d.fdb, []);
    t.same(d.routes, []);
    t.same(d.skipped, []);
    t.same(d.programmed, []);
  });
}

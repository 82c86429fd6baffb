/**
 * The difference between the desired and the actual kernel state, as an ordered list of
 * operations. Pure. Deletes come first, in reverse creation order (route, FDB, neighbour,
 * address), so no route is ever left pointing at a neighbour that is gone; creates follow in
 * flannel's order (address, neighbour, FDB, route), so a route only appears once the entries it
 * relies on are in place.
 */
import type { AddressEntry, DesiredState, FdbEntry, NeighbourEntry, RouteEntry } from '../backends/index.js';

/** What weft owns of the kernel state, as dumped (see `actualStateOf`). */
export interface ActualState {
  readonly addresses: readonly AddressEntry[];
  /** With `state`. */
  readonly neighbours: readonly NeighbourEntry[];
  /** With `state`; several entries may share a MAC (one per remote). */
  readonly fdb: readonly FdbEntry[];
  readonly routes: readonly RouteEntry[];
}

/** `create` and `update` both write with replace semantics; `update` says something was there. */
export type OpAction = 'create' | 'update' | 'delete';

export type EntryKind = 'address' | 'neighbour' | 'fdb' | 'route';

/** An entry with its kind. */
export type KindedEntry =
  | { readonly kind: 'address'; readonly entry: AddressEntry }
  | { readonly kind: 'neighbour'; readonly entry: NeighbourEntry }
  | { readonly kind: 'fdb'; readonly entry: FdbEntry }
  | { readonly kind: 'route'; readonly entry: RouteEntry };

/** One change to apply. Deletes carry the dumped entry, so they name exactly what to remove. */
export type DataplaneOp = KindedEntry & { readonly action: OpAction };

/** Identity of an address: there is nothing to update, only to add or remove. */
export const addressKey = (a: AddressEntry): string => `${a.dev} ${a.address}/${a.prefixLen}`;
/** Identity of a neighbour: the kernel keeps one per device and IP. */
export const neighbourKey = (n: NeighbourEntry): string => `${n.dev} ${n.dst}`;
/** Identity of an FDB entry: one MAC per device (the kernel may hold several remotes for it). */
export const fdbKey = (f: FdbEntry): string => `${f.dev} ${f.lladdr}`;
/** Identity of a route: its destination in the main table. */
export const routeKey = (r: RouteEntry): string => r.dst;

export function neighbourMatches(desired: NeighbourEntry, actual: NeighbourEntry): boolean {
  return actual.lladdr === desired.lladdr && actual.state === 'permanent';
}

export function fdbMatches(desired: FdbEntry, actual: FdbEntry): boolean {
  return actual.dst === desired.dst && actual.state === 'permanent';
}

/** The metric is not compared: the kernel picks one for IPv6 routes, and weft never sets it. */
export function routeMatches(desired: RouteEntry, actual: RouteEntry): boolean {
  return actual.dev === desired.dev && actual.gateway === desired.gateway && actual.onlink === desired.onlink;
}

/**
 * Entries learned by the kernel (a failed ARP probe, a MAC learned with Learning on) are not
 * weft's to delete: only permanent ones are, as only permanent ones are ever programmed.
 */
function deletable(e: { readonly state?: string }): boolean {
  return e.state === 'permanent';
}

/** The entry in iproute2 words, e.g. `10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink`. */
export function describeEntry(op: KindedEntry): string {
  switch (op.kind) {
    case 'address':
      return `${op.entry.address}/${op.entry.prefixLen} dev ${op.entry.dev}`;
    case 'neighbour':
      return `${op.entry.dst}${op.entry.lladdr ? ` lladdr ${op.entry.lladdr}` : ''} dev ${op.entry.dev}`;
    case 'fdb':
      return `${op.entry.lladdr}${op.entry.dst ? ` dst ${op.entry.dst}` : ''} dev ${op.entry.dev}`;
    case 'route': {
      const r = op.entry;
      return `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`;
    }
  }
}

/** The operation as a log line: `create neighbour 10.244.2.0 lladdr … dev flannel.1`. */
export function describeOp(op: DataplaneOp): string {
  return `${op.action} ${op.kind} ${describeEntry(op)}`;
}

/** A stable key of an entry's whole value: two entries with the same key are the same entry. */
export function entryKey(op: KindedEntry): string {
  return `${op.kind} ${describeEntry(op)}`;
}

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = m.get(k);
    if (list) list.push(item);
    else m.set(k, [item]);
  }
  return m;
}

function uniqueBy<T>(items: readonly T[], key: (t: T) => string): T[] {
  const seen = new Set<string>();
  return items.filter((i) => {
    const k = key(i);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function sortedBy<T>(items: T[], key: (t: T) => string): T[] {
  return items.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });
}

/**
 * Converge a set of same-identity dumped entries on one desired entry: keep a match and delete
 * the rest; with no match, rewrite a lone entry in place (replace is atomic, so traffic never
 * sees a gap) or clear several and create afresh.
 */
function converge<T>(
  desired: T,
  present: readonly T[],
  matches: (d: T, a: T) => boolean,
  mayDelete: (a: T) => boolean,
): { action?: 'create' | 'update'; deletes: T[] } {
  const match = present.find((a) => matches(desired, a));
  if (match) return { deletes: present.filter((a) => a !== match && mayDelete(a)) };
  if (present.length === 0) return { action: 'create', deletes: [] };
  if (present.length === 1) return { action: 'update', deletes: [] };
  return { action: 'create', deletes: present.filter(mayDelete) };
}

/**
 * The operations that turn `actual` into `desired`. `actual` must already be scoped to what weft
 * owns (`actualStateOf` does that); everything in it that is not desired is deleted, except
 * non-permanent neighbours and FDB entries, which the kernel manages.
 */
export function diffState(desired: DesiredState, actual: ActualState): DataplaneOp[] {
  const del = { route: [] as RouteEntry[], fdb: [] as FdbEntry[], neighbour: [] as NeighbourEntry[] };
  const creates: DataplaneOp[] = [];

  const wantAddresses = uniqueBy(desired.addresses, addressKey);
  const haveAddresses = new Set(actual.addresses.map(addressKey));
  const wantAddressKeys = new Set(wantAddresses.map(addressKey));
  const addressDeletes = uniqueBy(
    actual.addresses.filter((a) => !wantAddressKeys.has(addressKey(a))),
    addressKey,
  );
  for (const a of wantAddresses) {
    if (!haveAddresses.has(addressKey(a))) creates.push({ action: 'create', kind: 'address', entry: a });
  }

  const wantNeighbours = uniqueBy(desired.neighbours, neighbourKey);
  const haveNeighbours = groupBy(actual.neighbours, neighbourKey);
  for (const n of wantNeighbours) {
    const r = converge(n, haveNeighbours.get(neighbourKey(n)) ?? [], neighbourMatches, deletable);
    del.neighbour.push(...r.deletes);
    if (r.action) creates.push({ action: r.action, kind: 'neighbour', entry: n });
  }
  const wantNeighbourKeys = new Set(wantNeighbours.map(neighbourKey));
  del.neighbour.push(
    ...actual.neighbours.filter((n) => !wantNeighbourKeys.has(neighbourKey(n)) && deletable(n)),
  );

  const wantFdb = uniqueBy(desired.fdb, fdbKey);
  const haveFdb = groupBy(actual.fdb, fdbKey);
  for (const f of wantFdb) {
    const r = converge(f, haveFdb.get(fdbKey(f)) ?? [], fdbMatches, deletable);
    del.fdb.push(...r.deletes);
    if (r.action) creates.push({ action: r.action, kind: 'fdb', entry: f });
  }
  const wantFdbKeys = new Set(wantFdb.map(fdbKey));
  del.fdb.push(...actual.fdb.filter((f) => !wantFdbKeys.has(fdbKey(f)) && deletable(f)));

  const wantRoutes = uniqueBy(desired.routes, routeKey);
  const haveRoutes = groupBy(actual.routes, routeKey);
  for (const r of wantRoutes) {
    const c = converge(r, haveRoutes.get(routeKey(r)) ?? [], routeMatches, () => true);
    del.route.push(...c.deletes);
    if (c.action) creates.push({ action: c.action, kind: 'route', entry: r });
  }
  const wantRouteKeys = new Set(wantRoutes.map(routeKey));
  del.route.push(...actual.routes.filter((r) => !wantRouteKeys.has(routeKey(r))));

  const order: Record<EntryKind, number> = { address: 0, neighbour: 1, fdb: 2, route: 3 };
  const byKey = (op: DataplaneOp): string => entryKey(op);
  return [
    ...sortedBy(
      uniqueBy(
        del.route.map((entry): DataplaneOp => ({ action: 'delete', kind: 'route', entry })),
        byKey,
      ),
      byKey,
    ),
    ...sortedBy(
      uniqueBy(
        del.fdb.map((entry): DataplaneOp => ({ action: 'delete', kind: 'fdb', entry })),
        byKey,
      ),
      byKey,
    ),
    ...sortedBy(
      uniqueBy(
        del.neighbour.map((entry): DataplaneOp => ({ action: 'delete', kind: 'neighbour', entry })),
        byKey,
      ),
      byKey,
    ),
    ...sortedBy(
      addressDeletes.map((entry): DataplaneOp => ({ action: 'delete', kind: 'address', entry })),
      byKey,
    ),
    // Stable sort: within a kind, the planner's order (by lease key) is kept.
    ...creates.sort((a, b) => order[a.kind] - order[b.kind]),
  ];
}

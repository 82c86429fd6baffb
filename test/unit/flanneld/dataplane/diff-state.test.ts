/** diffState: table tests of what is created, updated and deleted, and in which order. */
import t from 'tap';
import {
  emptyDesiredState,
  type DesiredState,
  type FdbEntry,
  type NeighbourEntry,
  type RouteEntry,
} from '../../../../src/flanneld/backends/index.js';
import { describeOp, diffState, type ActualState } from '../../../../src/flanneld/dataplane/index.js';

const DEV = 'flannel.1';
const MAC2 = '0a:58:0a:f4:02:00';
const MAC3 = '0a:58:0a:f4:03:00';

const addr = { dev: DEV, address: '10.244.1.0', prefixLen: 32 };
const neigh = (n: number, lladdr = `0a:58:0a:f4:0${n}:00`): NeighbourEntry => ({
  dev: DEV,
  dst: `10.244.${n}.0`,
  lladdr,
});
const fdb = (n: number, dst = `192.0.2.${n}`): FdbEntry => ({
  dev: DEV,
  lladdr: `0a:58:0a:f4:0${n}:00`,
  dst,
});
const route = (n: number, over: Partial<RouteEntry> = {}): RouteEntry => ({
  dst: `10.244.${n}.0/24`,
  gateway: `10.244.${n}.0`,
  dev: DEV,
  onlink: true,
  ...over,
});
const permanent = <T extends object>(e: T): T & { state: string } => ({ ...e, state: 'permanent' });

function desired(over: Partial<DesiredState> = {}): DesiredState {
  return {
    ...emptyDesiredState(),
    owned: { devices: [DEV], routeDevices: [DEV, 'eth0'], networks: ['10.244.0.0/16'] },
    ...over,
  };
}
function actual(over: Partial<ActualState> = {}): ActualState {
  return { addresses: [], neighbours: [], fdb: [], routes: [], ...over };
}
const two = desired({
  addresses: [addr],
  neighbours: [neigh(2), neigh(3)],
  fdb: [fdb(2), fdb(3)],
  routes: [route(2), route(3)],
});
const converged = actual({
  addresses: [addr],
  neighbours: [permanent(neigh(2)), permanent(neigh(3))],
  fdb: [permanent(fdb(2)), permanent(fdb(3))],
  routes: [route(2), route(3)],
});
const ops = (d: DesiredState, a: ActualState): string[] => diffState(d, a).map(describeOp);

t.test('nothing wanted, nothing there', async (t) => {
  t.same(diffState(desired(), actual()), []);
});

t.test('an empty kernel: creates in flannel order, per kind in the planner order', async (t) => {
  t.same(ops(two, actual()), [
    'create address 10.244.1.0/32 dev flannel.1',
    `create neighbour 10.244.2.0 lladdr ${MAC2} dev flannel.1`,
    `create neighbour 10.244.3.0 lladdr ${MAC3} dev flannel.1`,
    `create fdb ${MAC2} dst 192.0.2.2 dev flannel.1`,
    `create fdb ${MAC3} dst 192.0.2.3 dev flannel.1`,
    'create route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
    'create route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink',
  ]);
});

t.test('a converged kernel needs nothing, whatever its order and metrics', async (t) => {
  t.same(diffState(two, converged), []);
  const shuffled = actual({
    addresses: converged.addresses,
    neighbours: [...converged.neighbours].reverse(),
    fdb: [...converged.fdb].reverse(),
    routes: [route(3, { metric: 1024 }), route(2)],
  });
  t.same(diffState(two, shuffled), []);
});

t.test('a lease gone: its entries deleted in reverse order (route, FDB, neighbour)', async (t) => {
  const one = desired({ addresses: [addr], neighbours: [neigh(2)], fdb: [fdb(2)], routes: [route(2)] });
  t.same(ops(one, converged), [
    'delete route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink',
    `delete fdb ${MAC3} dst 192.0.2.3 dev flannel.1`,
    `delete neighbour 10.244.3.0 lladdr ${MAC3} dev flannel.1`,
  ]);
});

t.test('deletes come before creates; an old own address goes last', async (t) => {
  const d = desired({ addresses: [addr], neighbours: [neigh(2)], fdb: [fdb(2)], routes: [route(2)] });
  const a = actual({
    addresses: [{ dev: DEV, address: '10.244.8.0', prefixLen: 32 }],
    neighbours: [permanent(neigh(9))],
    fdb: [permanent(fdb(9))],
    routes: [route(9)],
  });
  t.same(ops(d, a), [
    'delete route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink',
    'delete fdb 0a:58:0a:f4:09:00 dst 192.0.2.9 dev flannel.1',
    'delete neighbour 10.244.9.0 lladdr 0a:58:0a:f4:09:00 dev flannel.1',
    'delete address 10.244.8.0/32 dev flannel.1',
    'create address 10.244.1.0/32 dev flannel.1',
    `create neighbour 10.244.2.0 lladdr ${MAC2} dev flannel.1`,
    `create fdb ${MAC2} dst 192.0.2.2 dev flannel.1`,
    'create route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
  ]);
});

t.test('neighbours', async (t) => {
  const d = desired({ neighbours: [neigh(2)] });
  const cases: [string, NeighbourEntry[], string[]][] = [
    [
      'other lladdr: updated in place',
      [permanent(neigh(2, MAC3))],
      [`update neighbour 10.244.2.0 lladdr ${MAC2} dev flannel.1`],
    ],
    [
      'not permanent: made permanent',
      [{ ...neigh(2), state: 'stale' }],
      [`update neighbour 10.244.2.0 lladdr ${MAC2} dev flannel.1`],
    ],
    [
      'failed without lladdr',
      [{ dev: DEV, dst: '10.244.2.0', state: 'failed' }],
      [`update neighbour 10.244.2.0 lladdr ${MAC2} dev flannel.1`],
    ],
    [
      'an undesired kernel-learned entry is left alone',
      [permanent(neigh(2)), { ...neigh(7), state: 'reachable' }],
      [],
    ],
    [
      'an undesired permanent entry is deleted',
      [permanent(neigh(2)), permanent(neigh(7))],
      ['delete neighbour 10.244.7.0 lladdr 0a:58:0a:f4:07:00 dev flannel.1'],
    ],
  ];
  for (const [name, have, want] of cases) t.same(ops(d, actual({ neighbours: have })), want, name);
});

t.test('FDB entries', async (t) => {
  const d = desired({ fdb: [fdb(2)] });
  const cases: [string, FdbEntry[], string[]][] = [
    [
      'moved to another VTEP: updated in place',
      [permanent(fdb(2, '192.0.2.99'))],
      [`update fdb ${MAC2} dst 192.0.2.2 dev flannel.1`],
    ],
    [
      'learned: made permanent',
      [{ ...fdb(2), state: 'reachable' }],
      [`update fdb ${MAC2} dst 192.0.2.2 dev flannel.1`],
    ],
    [
      'an extra remote for the MAC is deleted',
      [permanent(fdb(2)), permanent(fdb(2, '192.0.2.99'))],
      [`delete fdb ${MAC2} dst 192.0.2.99 dev flannel.1`],
    ],
    [
      'several wrong remotes: cleared, then created',
      [permanent(fdb(2, '192.0.2.98')), permanent(fdb(2, '192.0.2.99'))],
      [
        `delete fdb ${MAC2} dst 192.0.2.98 dev flannel.1`,
        `delete fdb ${MAC2} dst 192.0.2.99 dev flannel.1`,
        `create fdb ${MAC2} dst 192.0.2.2 dev flannel.1`,
      ],
    ],
    ["an undesired learned MAC is the kernel's", [permanent(fdb(2)), { ...fdb(7), state: 'stale' }], []],
    [
      'an undesired permanent MAC is deleted',
      [permanent(fdb(2)), permanent(fdb(7))],
      ['delete fdb 0a:58:0a:f4:07:00 dst 192.0.2.7 dev flannel.1'],
    ],
  ];
  for (const [name, have, want] of cases) t.same(ops(d, actual({ fdb: have })), want, name);
});

t.test('routes', async (t) => {
  const d = desired({ routes: [route(2)] });
  const direct = route(2, { gateway: '192.0.2.2', dev: 'eth0', onlink: false });
  const cases: [string, RouteEntry[], string[]][] = [
    [
      'via the underlay now (DirectRouting turned off): replaced in place',
      [direct],
      ['update route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink'],
    ],
    [
      'without onlink',
      [route(2, { onlink: false })],
      ['update route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink'],
    ],
    [
      'a duplicate with another metric is deleted',
      [route(2), { ...direct, metric: 100 }],
      ['delete route 10.244.2.0/24 via 192.0.2.2 dev eth0'],
    ],
    [
      'two wrong ones: cleared, then created',
      [direct, route(2, { gateway: '10.244.2.1' })],
      [
        'delete route 10.244.2.0/24 via 10.244.2.1 dev flannel.1 onlink',
        'delete route 10.244.2.0/24 via 192.0.2.2 dev eth0',
        'create route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
      ],
    ],
    [
      'an undesired route is deleted',
      [route(2), route(9)],
      ['delete route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink'],
    ],
  ];
  for (const [name, have, want] of cases) t.same(ops(d, actual({ routes: have })), want, name);
  const del = diffState(d, actual({ routes: [route(2), { ...direct, dst: '10.244.9.0/24', metric: 100 }] }));
  t.match(
    del,
    [{ action: 'delete', kind: 'route', entry: { metric: 100 } }],
    'a delete names the metric it found',
  );
});

t.test('duplicates in the desired state are planned once', async (t) => {
  const d = desired({
    neighbours: [neigh(2), neigh(2)],
    fdb: [fdb(2), fdb(2)],
    routes: [route(2), route(2)],
    addresses: [addr, addr],
  });
  t.equal(diffState(d, actual()).length, 4);
});

t.test('diffState is pure', async (t) => {
  const before = JSON.stringify([two, converged]);
  diffState(two, actual({ routes: [route(9)] }));
  diffState(desired(), converged);
  t.equal(JSON.stringify([two, converged]), before);
});

import fc from 'fast-check';
import t from 'tap';
import {
  CONTROLLER_NAME,
  generateSliceName,
  planSlices,
  type ExistingSlice,
  type SliceInputs,
  type SlicePlan,
} from '../../../src/controller/index.js';
import {
  MANAGED_BY_LABEL,
  SERVICE_NAME_LABEL,
  dns1123SubdomainProblem,
  parseEndpointSlice,
  sliceKey,
  type EffectivePod,
  type EndpointSliceSpec,
  type PodContainerPort,
  type ServicePortSpec,
  type ServiceSpec,
} from '../../../src/k8s/index.js';

function service(over: Partial<ServiceSpec> = {}): ServiceSpec {
  return {
    namespace: 'default',
    name: 'web',
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.10'],
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 0 }],
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: 0,
    selector: { app: 'web' },
    ...over,
  };
}

function v4(i: number): string {
  return `10.244.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

function pod(i: number, over: Partial<EffectivePod> = {}): EffectivePod {
  return {
    namespace: 'default',
    name: `web-${i}`,
    labels: { app: 'web' },
    nodeName: `node${i % 3}`,
    ports: [],
    ips: [v4(i)],
    ready: true,
    terminating: false,
    ...over,
  };
}

function pods(n: number, from = 0): EffectivePod[] {
  return Array.from({ length: n }, (_, i) => pod(from + i));
}

function inputs(ps: readonly EffectivePod[], over: Partial<SliceInputs> = {}): SliceInputs {
  return {
    service: service(),
    pods: ps,
    nodeZone: () => undefined,
    nodeReady: () => true,
    maxEndpointsPerSlice: 100,
    ...over,
  };
}

/** A deterministic newName: web-00001, web-00002, ... */
function namer(): (svc: string) => string {
  let n = 0;
  return (svc) => `${svc}-${String(++n).padStart(5, '0')}`;
}

let revision = 1;

/** Parses a written slice as weft-proxy would; fails the test when it does not pass. */
function parsed(svc: ServiceSpec, name: string, value: string): EndpointSliceSpec {
  return parseEndpointSlice(sliceKey('/weft', svc.namespace, name), svc.namespace, name, value);
}

/** The slices after the plan's writes, as the registry would hold them. */
function apply(svc: ServiceSpec, existing: readonly ExistingSlice[], plan: SlicePlan): ExistingSlice[] {
  const byName = new Map(existing.map((s) => [s.spec.name, s]));
  for (const d of plan.delete) {
    if (!byName.delete(d.spec.name)) throw new Error(`delete of absent ${d.spec.name}`);
  }
  for (const w of plan.update) {
    const cur = byName.get(w.name);
    if (!cur) throw new Error(`update of absent ${w.name}`);
    if (w.modRevision !== cur.modRevision) throw new Error(`stale modRevision for ${w.name}`);
    byName.set(w.name, { spec: parsed(svc, w.name, w.value), modRevision: ++revision });
  }
  for (const w of plan.create) {
    if (byName.has(w.name)) throw new Error(`create of present ${w.name}`);
    if (w.modRevision !== undefined) throw new Error('a create carries no modRevision');
    byName.set(w.name, { spec: parsed(svc, w.name, w.value), modRevision: ++revision });
  }
  return [...byName.values()];
}

function writes(plan: SlicePlan): number {
  return plan.create.length + plan.update.length + plan.delete.length;
}

function addresses(slices: readonly ExistingSlice[]): string[] {
  return slices.flatMap((s) => s.spec.endpoints.flatMap((e) => e.addresses)).sort();
}

/** Plans from nothing and applies. */
function fresh(inp: SliceInputs, newName = namer()): ExistingSlice[] {
  return apply(inp.service, [], planSlices(inp, [], newName));
}

t.test('250 pods give 3 slices of at most 100, labelled, valid, and re-planning writes nothing', (t) => {
  const inp = inputs(pods(250));
  const plan = planSlices(inp, [], namer());
  t.equal(plan.create.length, 3);
  t.same(plan.update, []);
  t.same(plan.delete, []);
  const slices = apply(inp.service, [], plan);
  t.same(
    slices.map((s) => s.spec.endpoints.length).sort((a, b) => a - b),
    [50, 100, 100],
  );
  t.equal(new Set(addresses(slices)).size, 250);
  for (const w of plan.create) {
    const v = JSON.parse(w.value) as {
      apiVersion: string;
      kind: string;
      metadata: { name: string; namespace: string; labels: Record<string, string> };
      addressType: string;
      ports: unknown;
      endpoints: { targetRef: unknown }[];
    };
    t.equal(v.apiVersion, 'discovery.k8s.io/v1');
    t.equal(v.kind, 'EndpointSlice');
    t.same(v.metadata, {
      name: w.name,
      namespace: 'default',
      labels: { [SERVICE_NAME_LABEL]: 'web', [MANAGED_BY_LABEL]: CONTROLLER_NAME },
    });
    t.equal(v.addressType, 'IPv4');
    t.same(v.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }]);
    t.match(v.endpoints[0]?.targetRef, { kind: 'Pod', namespace: 'default', name: /^web-\d+$/ });
  }
  const spec = slices[0]?.spec;
  t.equal(spec?.managedBy, CONTROLLER_NAME);
  t.equal(spec?.serviceName, 'web');
  t.same(planSlices(inp, slices, namer()), { create: [], update: [], delete: [] });
  // The order pods come in does not matter.
  t.same(planSlices(inputs([...pods(250)].reverse()), slices, namer()), {
    create: [],
    update: [],
    delete: [],
  });
  t.end();
});

t.test('one pod added rewrites exactly one slice: the one with room', (t) => {
  const before = fresh(inputs(pods(250)));
  const plan = planSlices(inputs(pods(251)), before, namer());
  t.equal(writes(plan), 1);
  t.equal(plan.update.length, 1, 'the half-full slice takes it');
  const half = before.find((s) => s.spec.endpoints.length === 50);
  t.equal(plan.update[0]?.name, half?.spec.name);
  t.equal(plan.update[0]?.modRevision, half?.modRevision);
  const after = apply(service(), before, plan);
  t.equal(new Set(addresses(after)).size, 251);

  // With every slice full, the new pod gets a new slice and nothing else is written.
  const full = fresh(inputs(pods(200)));
  const plan2 = planSlices(inputs(pods(201)), full, namer());
  t.equal(plan2.create.length, 1);
  t.equal(writes(plan2), 1);
  t.end();
});

t.test('one pod removed rewrites exactly one slice', (t) => {
  const before = fresh(inputs(pods(250)));
  const ps = pods(250).filter((p) => p.name !== 'web-7');
  const plan = planSlices(inputs(ps), before, namer());
  t.equal(writes(plan), 1);
  t.equal(plan.update.length, 1);
  const after = apply(service(), before, plan);
  t.notOk(addresses(after).includes(v4(7)));
  t.equal(addresses(after).length, 249);
  t.end();
});

t.test('a changed pod rewrites only its slice, and new pods fill that slice first', (t) => {
  const before = fresh(inputs(pods(250)));
  const ps = pods(250).map((p) => (p.name === 'web-3' ? { ...p, ready: false } : p));
  const plan = planSlices(inputs(ps), before, namer());
  t.equal(writes(plan), 1);
  // web-3's slice is full; a new pod joins the half-full one (kube: a full slice has no room).
  const plan2 = planSlices(inputs([...ps, pod(250)]), before, namer());
  t.equal(writes(plan2), 2);
  // Remove one from a full slice and add one: the slice being rewritten takes the new pod.
  const holder = before.find((s) => s.spec.endpoints.some((e) => e.addresses[0] === v4(3)));
  const ps3 = [...pods(250).filter((p) => p.name !== 'web-3'), pod(250)];
  const plan3 = planSlices(inputs(ps3), before, namer());
  t.equal(writes(plan3), 1);
  t.equal(plan3.update[0]?.name, holder?.spec.name);
  t.end();
});

t.test('the last pod gone deletes the slice; no pods, no slices', (t) => {
  const before = fresh(inputs(pods(3)));
  t.equal(before.length, 1);
  const plan = planSlices(inputs([]), before, namer());
  t.same(plan.create, []);
  t.same(plan.update, []);
  t.same(
    plan.delete.map((s) => s.spec.name),
    before.map((s) => s.spec.name),
  );
  t.same(planSlices(inputs([]), [], namer()), { create: [], update: [], delete: [] });
  t.end();
});

t.test('a named targetPort mapping to 8080 on some pods and 9090 on others gives two port groups', (t) => {
  const named: ServicePortSpec[] = [
    { name: 'http', protocol: 'TCP', port: 80, targetPort: 'web', nodePort: 0 },
  ];
  const port = (
    containerPort: number,
    protocol: PodContainerPort['protocol'] = 'TCP',
  ): PodContainerPort[] => [
    { name: 'metrics', containerPort: 9100, protocol: 'TCP' },
    { name: 'web', containerPort, protocol },
  ];
  const ps = [
    pod(0, { ports: port(8080) }),
    pod(1, { ports: port(9090) }),
    pod(2, { ports: port(8080) }),
    // Same name, other protocol: not this port's (kube's FindPort matches both).
    pod(3, { ports: port(7070, 'UDP') }),
    // No port of that name at all.
    pod(4, { ports: [] }),
  ];
  const svc = service({ ports: named });
  const slices = fresh(inputs(ps, { service: svc }));
  const byPorts = new Map(slices.map((s) => [JSON.stringify(s.spec.ports), addresses([s])]));
  t.same(
    [...byPorts.keys()].sort(),
    [
      JSON.stringify([]),
      JSON.stringify([{ name: 'http', protocol: 'TCP', port: 8080 }]),
      JSON.stringify([{ name: 'http', protocol: 'TCP', port: 9090 }]),
    ].sort(),
  );
  t.same(byPorts.get(JSON.stringify([{ name: 'http', protocol: 'TCP', port: 8080 }])), [v4(0), v4(2)]);
  t.same(byPorts.get(JSON.stringify([{ name: 'http', protocol: 'TCP', port: 9090 }])), [v4(1)]);
  t.same(byPorts.get(JSON.stringify([])), [v4(3), v4(4)], 'pods lacking the port: an endpoint without it');
  t.same(planSlices(inputs(ps, { service: svc }), slices, namer()), { create: [], update: [], delete: [] });

  // A pod lacking one of two named ports keeps the other.
  const two: ServicePortSpec[] = [
    { name: 'http', protocol: 'TCP', port: 80, targetPort: 'web', nodePort: 0 },
    { name: 'metrics', protocol: 'TCP', port: 9100, targetPort: 'metrics', nodePort: 0 },
    { name: 'plain', protocol: 'UDP', port: 53, targetPort: undefined, nodePort: 0 },
  ];
  const s2 = fresh(
    inputs([pod(0, { ports: port(8080) }), pod(1, { ports: [] })], { service: service({ ports: two }) }),
  );
  const ports = s2.map((s) => s.spec.ports).sort((a, b) => (a?.length ?? 0) - (b?.length ?? 0));
  t.same(ports, [
    [{ name: 'plain', protocol: 'UDP', port: 53 }],
    [
      { name: 'http', protocol: 'TCP', port: 8080 },
      { name: 'metrics', protocol: 'TCP', port: 9100 },
      { name: 'plain', protocol: 'UDP', port: 53 },
    ],
  ]);
  t.end();
});

t.test(
  'a port mapping no longer wanted: its slice is rewritten for the new mapping, not deleted and created',
  (t) => {
    const before = fresh(inputs(pods(5)));
    const svc = service({
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8081, nodePort: 0 }],
    });
    const plan = planSlices(inputs(pods(5), { service: svc }), before, namer());
    t.same(plan.create, []);
    t.same(plan.delete, []);
    t.equal(plan.update.length, 1);
    t.equal(plan.update[0]?.name, before[0]?.spec.name);
    t.same(parsed(svc, plan.update[0]?.name ?? '', plan.update[0]?.value ?? '').ports, [
      { name: 'http', protocol: 'TCP', port: 8081 },
    ]);
    t.end();
  },
);

t.test('conditions: ready, not ready, terminating, node not ready; nodeName and zone', (t) => {
  const ps = [
    pod(0),
    pod(1, { ready: false }),
    pod(2, { terminating: true }),
    pod(3, { ready: false, terminating: true }),
    pod(4, { nodeName: 'down' }),
    pod(5, { nodeName: undefined }),
    pod(6, { ips: [] }),
  ];
  const slices = fresh(
    inputs(ps, {
      nodeReady: (n) => n !== 'down',
      nodeZone: (n) => (n === 'node0' ? 'zone-a' : n === 'node1' ? '' : undefined),
    }),
  );
  const eps = new Map(slices[0]?.spec.endpoints.map((e) => [e.addresses[0], e]));
  t.equal(eps.size, 6, 'a pod without an address is no endpoint');
  const cond = (i: number) => {
    const e = eps.get(v4(i));
    return [e?.ready, e?.serving, e?.terminating];
  };
  t.same(cond(0), [true, true, false]);
  t.same(cond(1), [false, false, false]);
  t.same(cond(2), [false, true, true], 'terminating stays an endpoint: serving, not ready');
  t.same(cond(3), [false, false, true]);
  t.same(cond(4), [false, false, false], 'node not ready');
  t.same(cond(5), [true, true, false]);
  t.equal(eps.get(v4(0))?.zone, 'zone-a');
  t.equal(eps.get(v4(0))?.nodeName, 'node0');
  t.equal(eps.get(v4(1))?.zone, undefined, 'an empty zone label is no zone');
  t.equal(eps.get(v4(4))?.nodeName, 'down');
  t.equal(eps.get(v4(5))?.nodeName, undefined);

  // The node coming back rewrites the slice; so does a zone appearing.
  const back = planSlices(
    inputs(ps, { nodeZone: (n) => (n === 'node0' ? 'zone-a' : undefined) }),
    slices,
    namer(),
  );
  t.equal(back.update.length, 1);
  const zoned = planSlices(
    inputs(ps, { nodeReady: (n) => n !== 'down', nodeZone: (n) => (n === 'node0' ? 'zone-b' : undefined) }),
    slices,
    namer(),
  );
  t.equal(zoned.update.length, 1);
  t.end();
});

t.test('two pods with one address give one endpoint, the readier one', (t) => {
  const slices = fresh(inputs([pod(0, { name: 'a-old', terminating: true }), pod(0, { name: 'b-new' })]));
  t.equal(slices[0]?.spec.endpoints.length, 1);
  t.same(slices[0]?.spec.endpoints[0]?.terminating, false);
  t.end();
});

t.test('dual-stack: one slice set per family of the ClusterIPs; headless is IPv4', (t) => {
  const ds = (i: number) => pod(i, { ips: [v4(i), `fd00:10:244::${(i + 1).toString(16)}`] });
  const ps = [ds(0), ds(1), pod(2), pod(3, { ips: ['fd00:10:244::ff'] })];
  const svc = service({ clusterIPs: ['fd00:96::a', '10.96.0.10'] });
  const plan = planSlices(inputs(ps, { service: svc }), [], namer());
  const slices = apply(svc, [], plan);
  const byType = new Map(slices.map((s) => [s.spec.addressType, addresses([s])]));
  t.same([...byType.keys()].sort(), ['IPv4', 'IPv6']);
  t.same(byType.get('IPv4'), [v4(0), v4(1), v4(2)]);
  t.same(byType.get('IPv6'), ['fd00:10:244::1', 'fd00:10:244::2', 'fd00:10:244::ff']);
  t.same(planSlices(inputs(ps, { service: svc }), slices, namer()), { create: [], update: [], delete: [] });

  // Single-stack IPv6 service: the IPv4 slice goes (its name reused for nothing: other family).
  const v6 = service({ clusterIPs: ['fd00:96::a'] });
  const plan6 = planSlices(inputs(ps, { service: v6 }), slices, namer());
  t.same(plan6.create, []);
  t.same(plan6.update, []);
  t.same(
    plan6.delete.map((s) => s.spec.addressType),
    ['IPv4'],
  );

  const headless = fresh(inputs(ps, { service: service({ clusterIPs: [] }) }));
  t.same(
    headless.map((s) => s.spec.addressType),
    ['IPv4'],
  );
  t.same(
    planSlices(inputs(ps, { service: service({ type: 'ExternalName', clusterIPs: [] }) }), headless, namer())
      .delete.length,
    1,
  );
  t.end();
});

t.test('maxEndpointsPerSlice is respected, and lowering it splits full slices', (t) => {
  const slices = fresh(inputs(pods(25), { maxEndpointsPerSlice: 10 }));
  t.same(
    slices.map((s) => s.spec.endpoints.length).sort((a, b) => a - b),
    [5, 10, 10],
  );
  const lowered = apply(
    service(),
    slices,
    planSlices(inputs(pods(25), { maxEndpointsPerSlice: 4 }), slices, namer()),
  );
  t.ok(lowered.every((s) => s.spec.endpoints.length <= 4));
  t.equal(new Set(addresses(lowered)).size, 25);
  t.equal(addresses(lowered).length, 25);
  for (const bad of [0, 1001, 1.5, Number.NaN]) {
    t.throws(() => planSlices(inputs(pods(1), { maxEndpointsPerSlice: bad }), [], namer()), {
      code: 'WEFT_INVALID_ARGUMENT',
    });
  }
  t.end();
});

t.test('names: newName is asked again for a taken name; kube-like generated names', (t) => {
  const before = fresh(inputs(pods(1)));
  let calls = 0;
  const plan = planSlices(inputs(pods(101)), before, () =>
    ++calls === 1 ? (before[0]?.spec.name ?? '') : 'web-fresh',
  );
  t.same(
    plan.create.map((w) => w.name),
    ['web-fresh'],
  );
  t.throws(() => planSlices(inputs(pods(101)), before, () => before[0]?.spec.name ?? ''), {
    code: 'WEFT_INVALID_ARGUMENT',
  });

  const name = generateSliceName('web');
  t.match(name, /^web-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
  t.equal(
    generateSliceName('web', () => 0),
    'web-bbbbb',
  );
  t.equal(
    generateSliceName('web', () => 0.999999),
    'web-99999',
  );
  t.equal(
    generateSliceName('web', () => 1),
    'web-99999',
    'a random of 1 stays in the alphabet',
  );
  const long = 'a'.repeat(63);
  const ln = generateSliceName(long);
  t.equal(ln.length, 63);
  t.equal(dns1123SubdomainProblem(ln), undefined);
  t.ok(ln.startsWith('a'.repeat(58)));
  const edge = generateSliceName('a'.repeat(57));
  t.match(edge, new RegExp(`^a{57}-[a-z0-9]{5}$`));
  t.end();
});

t.test('existing slices with duplicates, strangers and stale content converge in one plan', (t) => {
  const svc = service();
  const base = fresh(inputs(pods(10)));
  const first = base[0] as ExistingSlice;
  const dup: ExistingSlice = {
    spec: { ...first.spec, name: 'web-dup' },
    modRevision: 99,
  };
  const wrongLabel: ExistingSlice = {
    spec: { ...first.spec, name: 'web-label', managedBy: 'someone' },
    modRevision: 98,
  };
  const existing = [first, dup, wrongLabel];
  const plan = planSlices(inputs(pods(10)), existing, namer());
  const after = apply(svc, existing, plan);
  t.same(addresses(after), [...addresses([first])].sort());
  t.same(planSlices(inputs(pods(10)), after, namer()), { create: [], update: [], delete: [] });
  t.end();
});

t.test('a slice whose labels are not the ones weft-controller writes is rewritten with them', (t) => {
  const [only] = fresh(inputs(pods(3)));
  const stale = {
    ...(only as ExistingSlice),
    spec: { ...(only as ExistingSlice).spec, managedBy: 'someone' },
  };
  const plan = planSlices(inputs(pods(3)), [stale], namer());
  t.equal(writes(plan), 1);
  t.equal(plan.update[0]?.name, stale.spec.name);
  t.equal(parsed(service(), stale.spec.name, plan.update[0]?.value ?? '').managedBy, CONTROLLER_NAME);
  t.end();
});

t.test('endpoints are written in numeric address order, so equal content is equal text', (t) => {
  const ips = [
    '10.244.0.10',
    '10.244.0.9',
    '10.244.1.1',
    '10.3.0.1',
    'fd00::10',
    'fd00::9',
    'fd00:1::',
    '::ffff:a00:1',
  ];
  const ps = ips.map((ip, i) => pod(i, { ips: [ip] }));
  const svc = service({ clusterIPs: ['10.96.0.10', 'fd00:96::a'] });
  const plan = planSlices(inputs(ps, { service: svc }), [], namer());
  const written = plan.create.map((w) =>
    (JSON.parse(w.value) as { endpoints: { addresses: string[] }[] }).endpoints.map((e) => e.addresses[0]),
  );
  t.same(written, [
    ['10.3.0.1', '10.244.0.9', '10.244.0.10', '10.244.1.1'],
    ['::ffff:a00:1', 'fd00::9', 'fd00::10', 'fd00:1::'],
  ]);
  const again = planSlices(inputs([...ps].reverse(), { service: svc }), [], namer());
  t.same(
    again.create.map((w) => w.value),
    plan.create.map((w) => w.value),
  );
  t.end();
});

t.test('property: applying a plan yields exactly the desired endpoints, once each, within the limit', (t) => {
  const podArb = fc.record({
    i: fc.integer({ min: 0, max: 60 }),
    ready: fc.boolean(),
    terminating: fc.boolean(),
    node: fc.integer({ min: 0, max: 3 }),
    port: fc.constantFrom(undefined, 8080, 9090),
    v6: fc.boolean(),
  });
  const stateArb = fc.record({
    pods: fc.array(podArb, { maxLength: 60 }),
    max: fc.integer({ min: 1, max: 12 }),
    dual: fc.boolean(),
  });
  const garbageArb = fc.array(
    fc.record({
      addrs: fc.array(fc.integer({ min: 0, max: 60 }), { maxLength: 20 }),
      v6: fc.boolean(),
      ready: fc.boolean(),
      ports: fc.constantFrom(
        undefined,
        [],
        [{ name: 'dns', protocol: 'UDP' as const, port: 53 }],
        [
          { name: 'dns', protocol: 'UDP' as const, port: 53 },
          { name: 'http', protocol: 'TCP' as const, port: 8080 },
        ],
      ),
    }),
    { maxLength: 4 },
  );
  const toPods = (st: {
    pods: {
      i: number;
      ready: boolean;
      terminating: boolean;
      node: number;
      port: number | undefined;
      v6: boolean;
    }[];
  }) =>
    st.pods.map((p) =>
      pod(p.i, {
        name: `p-${p.i}-${p.node}`,
        ready: p.ready,
        terminating: p.terminating,
        nodeName: `node${p.node}`,
        ports: p.port === undefined ? [] : [{ name: 'web', containerPort: p.port, protocol: 'TCP' }],
        ips: p.v6 ? [v4(p.i), `fd00::${(p.i + 1).toString(16)}`] : [v4(p.i)],
      }),
    );
  const svcOf = (dual: boolean) =>
    service({
      clusterIPs: dual ? ['10.96.0.10', 'fd00:96::a'] : ['10.96.0.10'],
      ports: [
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 'web', nodePort: 0 },
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: undefined, nodePort: 0 },
      ],
    });
  fc.assert(
    fc.property(
      fc.array(stateArb, { minLength: 1, maxLength: 5 }),
      fc.boolean(),
      garbageArb,
      (states, down, garbage) => {
        // Whatever was left in the registry (duplicates, odd ports, overfull slices) is the start.
        let existing: ExistingSlice[] = garbage.map((g, k) => ({
          spec: {
            namespace: 'default',
            name: `web-g${k}`,
            serviceName: 'web',
            managedBy: CONTROLLER_NAME,
            addressType: g.v6 ? 'IPv6' : 'IPv4',
            endpoints: g.addrs.map((i) => ({
              addresses: [g.v6 ? `fd00::${(i + 1).toString(16)}` : v4(i)],
              ready: g.ready,
              serving: g.ready,
              terminating: false,
              nodeName: 'node0',
              zone: undefined,
            })),
            ports: g.ports === undefined ? undefined : g.ports.map((p) => ({ ...p })),
          },
          modRevision: k + 1,
        }));
        let n = 0;
        const newName = (s: string) => `${s}-${(++n).toString(36)}`;
        for (const st of states) {
          const svc = svcOf(st.dual);
          const inp = inputs(toPods(st), {
            service: svc,
            maxEndpointsPerSlice: st.max,
            nodeReady: (node) => !(down && node === 'node1'),
          });
          const plan = planSlices(inp, existing, newName);
          existing = apply(svc, existing, plan);
          for (const s of existing) {
            if (s.spec.endpoints.length > st.max) return false;
            if (s.spec.endpoints.length === 0) return false;
          }
          for (const type of ['IPv4', 'IPv6'] as const) {
            const family = type === 'IPv4' ? 4 : 6;
            const got = existing
              .filter((s) => s.spec.addressType === type)
              .flatMap((s) => s.spec.endpoints.map((e) => e.addresses[0]));
            const want =
              type === 'IPv6' && !st.dual
                ? []
                : [
                    ...new Set(
                      inp.pods.flatMap((p) => p.ips.filter((a) => a.includes(':') === (family === 6))),
                    ),
                  ];
            if (got.length !== new Set(got).size) return false;
            if (JSON.stringify([...got].sort()) !== JSON.stringify(want.sort())) return false;
          }
          // Planning the reached state again writes nothing.
          if (
            planSlices(inp, existing, newName).update.length +
              planSlices(inp, existing, newName).create.length !==
            0
          )
            return false;
          if (planSlices(inp, existing, newName).delete.length !== 0) return false;
        }
        return true;
      },
    ),
    { numRuns: 200 },
  );
  t.pass('200 runs of up to 5 successive states');
  t.end();
});

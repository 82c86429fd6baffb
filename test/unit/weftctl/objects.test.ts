/**
 * Manifest reading and the API-server-like filling in of `weftctl apply`, on the in-process
 * store: documents and Lists, errors naming the document and field, namespaces, ClusterIP and
 * nodePort allocation, re-apply keeping what was given, immutability, the proxy's own validation,
 * and a failed write giving back what it took.
 */
import t from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import { ServiceAllocator, allocationKey } from '../../../src/ipam/index.js';
import { setRootLogger, silentLogger } from '../../../src/log/index.js';
import { parseService } from '../../../src/proxy/model/index.js';
import { MemoryStore, type Store } from '../../../src/registry/index.js';
import { canonicalJson, parseManifests, type ManifestObject } from '../../../src/weftctl/manifest.js';
import {
  allocatedValues,
  applyObject,
  deleteObject,
  serviceOwnerHolds,
} from '../../../src/weftctl/object-store.js';

setRootLogger(silentLogger());

/** What `kubectl create service nodeport np --tcp=80:8080,443:8443 --dry-run=client -o yaml` prints. */
const KUBECTL_NODEPORT = `apiVersion: v1
kind: Service
metadata:
  creationTimestamp: null
  labels:
    app: np
  name: np
spec:
  ports:
  - name: 80-8080
    port: 80
    protocol: TCP
    targetPort: 8080
  - name: 443-8443
    port: 443
    protocol: TCP
    targetPort: 8443
  selector:
    app: np
  type: NodePort
status:
  loadBalancer: {}
`;

const SLICE = {
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: 'np-1', labels: { 'kubernetes.io/service-name': 'np' } },
  addressType: 'IPv4',
  endpoints: [{ addresses: ['10.244.1.5'], nodeName: 'n1' }],
  ports: [{ name: '80-8080', port: 8080, protocol: 'TCP' }],
};

function svc(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: { ports: [{ port: 80, targetPort: 8080 }], ...spec },
  };
}

function one(text: string, namespace?: string): ManifestObject {
  const { objects, errors } = parseManifests(text, { namespace });
  if (errors.length) throw errors[0]?.error;
  const o = objects[0];
  if (!o) throw new Error('no object');
  return o;
}

function setup(): {
  store: MemoryStore;
  alloc: ServiceAllocator;
  apply: (m: ManifestObject) => ReturnType<typeof applyObject>;
} {
  const store = new MemoryStore();
  const alloc = new ServiceAllocator({
    store,
    registryPrefix: '/weft',
    serviceCidrs: ['10.96.0.0/28'],
    nodePortRange: '30000-30009',
    ownerHolds: serviceOwnerHolds(store, '/weft'),
    reclaimGraceMs: 5,
  });
  return { store, alloc, apply: (m) => applyObject(store, alloc, '/weft', m) };
}

t.test('parseManifests: YAML documents, JSON, Lists, empty documents', async (t) => {
  const text = `---\n${KUBECTL_NODEPORT}---\n${JSON.stringify(SLICE)}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- ${JSON.stringify(svc('a'))}\n- ${JSON.stringify(svc('b'))}\n`;
  const { objects, errors } = parseManifests(text);
  t.same(errors, []);
  t.same(
    objects.map((o) => [o.source, o.kind, o.namespace, o.name]),
    [
      ['document 1 (Service default/np)', 'Service', 'default', 'np'],
      ['document 2 (EndpointSlice default/np-1)', 'EndpointSlice', 'default', 'np-1'],
      ['document 4 item 0 (Service default/a)', 'Service', 'default', 'a'],
      ['document 4 item 1 (Service default/b)', 'Service', 'default', 'b'],
    ],
  );
  t.equal(
    (objects[0]?.object.metadata as Record<string, unknown>).namespace,
    'default',
    'namespace filled in',
  );
  t.same(parseManifests(JSON.stringify(svc('x')), { namespace: 'prod' }).objects[0]?.namespace, 'prod');
});

t.test('parseManifests: each bad document is an error naming it and the field', async (t) => {
  const text = [
    'kind: Deployment\napiVersion: apps/v1\nmetadata: {name: d}',
    'kind: Service\napiVersion: v2\nmetadata: {name: s}',
    'kind: Service\napiVersion: v1\nmetadata: {generateName: s-}',
    'kind: Service\napiVersion: v1\nmetadata: {name: ok}\nspec: {ports: [{port: 80}]}',
    '- just\n- a list',
    'kind: Service\napiVersion: v1\nmetadata: {name: ns, namespace: other}',
    'key: [unclosed',
  ].join('\n---\n');
  const { objects, errors } = parseManifests(text, { namespace: 'default', input: 'web.yaml' });
  t.same(
    objects.map((o) => o.name),
    ['ok'],
  );
  const msgs = errors.map((e) => e.error.message);
  t.match(msgs, [
    /^web\.yaml: document 1: field kind: "Deployment" is not supported/,
    /^web\.yaml: document 2: field apiVersion: must be v1 for a Service, got "v2"/,
    /^web\.yaml: document 3: field metadata\.name: is required \(generateName is not supported\)/,
    /^web\.yaml: document 5: is not an object \(got a list\)/,
    /^web\.yaml: document 6 \(Service ns\): field metadata\.namespace: "other" does not match the namespace "default" of -n/,
    /^web\.yaml: document 7: not valid JSON or YAML/,
  ]);
  t.ok(errors.every((e) => isWeftError(e.error, ErrorCodes.INVALID_VALUE)));
});

t.test("apply fills in what kubectl's manifest leaves out, and the proxy parses it", async (t) => {
  const { store, apply } = setup();
  const r = await apply(one(KUBECTL_NODEPORT));
  t.equal(r.outcome, 'created');
  t.equal(r.key, '/weft/services/default/np');
  const stored = JSON.parse((await store.get(r.key))?.value ?? '{}') as Record<string, unknown>;
  const spec = parseService(r.key, 'default', 'np', JSON.stringify(stored));
  t.equal(spec.clusterIPs.length, 1);
  t.match(spec.clusterIPs[0], /^10\.96\.0\.([1-9]|1[0-4])$/);
  const ports = spec.ports.map((p) => p.nodePort);
  t.ok(ports.every((p) => p >= 30000 && p <= 30009));
  t.equal(new Set(ports).size, 2, 'two different node ports');
  const meta = stored.metadata as Record<string, unknown>;
  t.equal(meta.namespace, 'default');
  t.match(meta.creationTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.same((stored.spec as Record<string, unknown>).ipFamilies, ['IPv4']);
  for (const p of ports) {
    t.equal((await store.get(allocationKey('/weft', 'nodeports', p)))?.value, 'default/np');
  }
  t.equal(
    (await store.get(allocationKey('/weft', 'clusterips', spec.clusterIPs[0] ?? '')))?.value,
    'default/np',
  );

  const again = await apply(one(KUBECTL_NODEPORT));
  t.equal(again.outcome, 'unchanged', 'the same manifest again changes nothing');
  const changed = await apply(one(KUBECTL_NODEPORT.replace('app: np\n  name', 'app: np2\n  name')));
  t.equal(changed.outcome, 'configured');
  t.same(
    allocatedValues(changed.object),
    allocatedValues(stored),
    're-apply keeps the ClusterIP and node ports',
  );
  t.equal((changed.object.metadata as Record<string, unknown>).creationTimestamp, meta.creationTimestamp);
});

t.test('requested values, headless, ExternalName, LoadBalancer health check port', async (t) => {
  const { apply } = setup();
  const a = await apply(one(JSON.stringify(svc('a', { clusterIP: '10.96.0.9' }))));
  t.equal(a.object.spec && (a.object.spec as Record<string, unknown>).clusterIP, '10.96.0.9');
  const taken = await apply(one(JSON.stringify(svc('b', { clusterIP: '10.96.0.9' })))).catch(
    (e: unknown) => e,
  );
  t.ok(isWeftError(taken, ErrorCodes.ALREADY_EXISTS));
  t.match((taken as Error).message, /10\.96\.0\.9 is already allocated to default\/a/);
  const out = await apply(one(JSON.stringify(svc('b', { clusterIP: '10.100.0.1' })))).catch(
    (e: unknown) => e,
  );
  t.match(
    (out as Error).message,
    /spec\.clusterIP: 10\.100\.0\.1 is not in the service CIDR 10\.96\.0\.0\/28/,
  );
  const imm = await apply(one(JSON.stringify(svc('a', { clusterIP: '10.96.0.8' })))).catch((e: unknown) => e);
  t.match((imm as Error).message, /spec\.clusterIP: is immutable/);

  const hl = await apply(one(JSON.stringify(svc('hl', { clusterIP: 'None' }))));
  t.same((hl.object.spec as Record<string, unknown>).clusterIPs, ['None']);
  const en = await apply(
    one(JSON.stringify({ ...svc('en'), spec: { type: 'ExternalName', externalName: 'example.com' } })),
  );
  t.same(allocatedValues(en.object), { clusterips: [], nodeports: [] });

  const lb = await apply(
    one(
      JSON.stringify(
        svc('lb', {
          type: 'LoadBalancer',
          externalTrafficPolicy: 'Local',
          ports: [{ port: 80, nodePort: 30005 }],
        }),
      ),
    ),
  );
  const lbSpec = lb.object.spec as { ports: { nodePort: number }[]; healthCheckNodePort: number };
  t.equal(lbSpec.ports[0]?.nodePort, 30005, 'requested node port honoured');
  t.ok(lbSpec.healthCheckNodePort >= 30000 && lbSpec.healthCheckNodePort !== 30005);
  const np = await apply(
    one(JSON.stringify(svc('np', { type: 'NodePort', ports: [{ port: 80, nodePort: 30005 }] }))),
  ).catch((e: unknown) => e);
  t.match((np as Error).message, /spec\.ports\[0\]\.nodePort: 30005 is already allocated to default\/lb/);
});

t.test('invalid objects are refused by the proxy parser before anything is allocated', async (t) => {
  const { store, apply } = setup();
  const bad = await apply(one(JSON.stringify(svc('bad', { ports: [{ port: 70000 }] })))).catch(
    (e: unknown) => e,
  );
  t.ok(isWeftError(bad, ErrorCodes.INVALID_VALUE));
  t.match((bad as Error).message, /Service \/weft\/services\/default\/bad: field spec\.ports\[0\]\.port/);
  t.same((await store.list('/weft/')).items, [], 'nothing allocated, nothing stored');
  const slice = await apply(
    one(JSON.stringify({ ...SLICE, endpoints: [{ addresses: ['10.244.999.1'] }] })),
  ).catch((e: unknown) => e);
  t.match(
    (slice as Error).message,
    /EndpointSlice \/weft\/endpointslices\/default\/np-1: field endpoints\[0\]\.addresses\[0\]/,
  );
  const good = await apply(one(JSON.stringify(SLICE)));
  t.equal(good.outcome, 'created');
  t.equal((await apply(one(JSON.stringify(SLICE)))).outcome, 'unchanged');
});

t.test(
  'hostile names in a manifest are refused by the same validation, before anything is stored',
  async (t) => {
    const { store, apply } = setup();
    const INJECTION = 'q\n-I INPUT 1 -s 6.6.6.6 -j ACCEPT\n#';
    const cases: [string, Record<string, unknown>, RegExp][] = [
      [
        'port name',
        svc('web', { ports: [{ name: INJECTION, port: 80 }] }),
        /field spec\.ports\[0\]\.name: "q\\n-I INPUT/,
      ],
      ['service name', svc('a.b'), /field metadata\.name: "a\.b" \(from the key\) must be a DNS-1035 label/],
      ['service name with a newline', svc('web\nx'), /field metadata\.name: "web\\nx" \(from the key\)/],
      [
        'namespace',
        { ...svc('web'), metadata: { name: 'web', namespace: 'a_b' } },
        /field metadata\.namespace: "a_b" \(from the key\)/,
      ],
      [
        'slice name',
        { ...SLICE, metadata: { ...SLICE.metadata, name: 'Np_1' } },
        /field metadata\.name: "Np_1"/,
      ],
      [
        'slice port name',
        { ...SLICE, ports: [{ name: 'a;b', port: 8080, protocol: 'TCP' }] },
        /field ports\[0\]\.name: "a;b"/,
      ],
      [
        'nodeName',
        { ...SLICE, endpoints: [{ addresses: ['10.244.1.5'], nodeName: 'n1\u001b[2J' }] },
        /field endpoints\[0\]\.nodeName: "n1\\u001b\[2J"/,
      ],
    ];
    for (const [name, obj, msg] of cases) {
      const err = await apply(one(JSON.stringify(obj))).catch((e: unknown) => e);
      t.ok(isWeftError(err, ErrorCodes.INVALID_VALUE), name);
      t.match((err as Error).message, msg, name);
    }
    t.same((await store.list('/weft/')).items, [], 'nothing allocated, nothing stored');
  },
);

t.test('a failed write gives back what it allocated', async (t) => {
  const { store, alloc } = setup();
  // The service write loses (as to a concurrent writer); everything else reaches the store.
  const failing: Store = {
    kind: store.kind,
    get: (k) => store.get(k),
    timeToLive: (k) => store.timeToLive(k),
    list: (p) => store.list(p),
    create: (key, value, o) =>
      key.startsWith('/weft/services/')
        ? Promise.resolve({
            created: false,
            current: { key, value, modRevision: 1, createRevision: 1, ttlBound: false },
          })
        : store.create(key, value, o),
    update: (k, v, e, o) => store.update(k, v, e, o),
    delete: (k, e) => store.delete(k, e),
    keepAlive: (k, o) => store.keepAlive(k, o),
    watch: (p, o) => store.watch(p, o),
    close: () => store.close(),
  };
  const err = await applyObject(
    failing,
    alloc,
    '/weft',
    one(JSON.stringify(svc('w', { type: 'NodePort' }))),
  ).catch((e: unknown) => e);
  t.ok(isWeftError(err, ErrorCodes.CONFLICT), String(err));
  t.same((await store.list('/weft/allocations/')).items, [], 'ClusterIP and node port released');
});

t.test('an allocation lost while the apply stalled is reported after the write', async (t) => {
  const { store, alloc } = setup();
  // Between allocating and writing, a reclaimer takes the ClusterIP for a crashed apply's.
  const stalling: Store = {
    kind: store.kind,
    get: (k) => store.get(k),
    timeToLive: (k) => store.timeToLive(k),
    list: (p) => store.list(p),
    update: (k, v, e, o) => store.update(k, v, e, o),
    delete: (k, e) => store.delete(k, e),
    keepAlive: (k, o) => store.keepAlive(k, o),
    watch: (p, o) => store.watch(p, o),
    close: () => store.close(),
    create: async (key, value) => {
      if (key.startsWith('/weft/services/')) {
        const ip = (JSON.parse(value) as { spec: { clusterIP: string } }).spec.clusterIP;
        const akey = allocationKey('/weft', 'clusterips', ip);
        const kv = await store.get(akey);
        if (kv) await store.delete(akey, { modRevision: kv.modRevision });
        await store.create(akey, 'default/thief');
      }
      return store.create(key, value);
    },
  };
  const err = await applyObject(stalling, alloc, '/weft', one(JSON.stringify(svc('slow')))).catch(
    (e: unknown) => e,
  );
  t.ok(isWeftError(err, ErrorCodes.CONFLICT), String(err));
  t.match((err as Error).message, /allocation now belongs to default\/thief/);
});

t.test('an allocation failing half-way gives back what was taken before it', async (t) => {
  const store = new MemoryStore();
  const alloc = new ServiceAllocator({
    store,
    registryPrefix: '/weft',
    serviceCidrs: ['10.96.0.0/28'],
    nodePortRange: '30000-30000',
  });
  const two = svc('two', {
    type: 'NodePort',
    ports: [
      { name: 'a', port: 80 },
      { name: 'b', port: 81 },
    ],
  });
  const err = await applyObject(store, alloc, '/weft', one(JSON.stringify(two))).catch((e: unknown) => e);
  t.ok(isWeftError(err, ErrorCodes.RANGE_EXHAUSTED), String(err));
  t.match((err as Error).message, /node-port range 30000-30000 is exhausted/);
  t.same((await store.list('/weft/')).items, [], 'the ClusterIP and the first node port were released');
});

t.test('delete removes the object and frees its allocations; a crashed apply is reclaimed', async (t) => {
  const { store, alloc, apply } = setup();
  const r = await apply(one(JSON.stringify(svc('w', { type: 'NodePort' }))));
  const d = await deleteObject(store, alloc, '/weft', 'Service', 'default', 'w');
  t.same(d.freed.map((f) => f.kind).sort(), ['clusterips', 'nodeports']);
  t.same((await store.list('/weft/')).items, []);
  const missing = await deleteObject(store, alloc, '/weft', 'Service', 'default', 'w').catch(
    (e: unknown) => e,
  );
  t.ok(isWeftError(missing, ErrorCodes.NOT_FOUND));
  t.match((missing as Error).message, /services "w" not found in namespace default/);
  t.ok(r.outcome);

  // Fill the /28 (14 addresses) with allocations whose owners never stored a service.
  for (let i = 1; i <= 14; i++)
    await store.create(allocationKey('/weft', 'clusterips', `10.96.0.${i}`), `default/ghost${i}`);
  const after = await apply(one(JSON.stringify(svc('late'))));
  t.equal(after.outcome, 'created', 'a leaked address was reclaimed');
});

t.test('canonicalJson ignores key order', async (t) => {
  t.equal(
    canonicalJson({ b: 1, a: { d: [1, { y: 1, x: 2 }], c: 2 } }),
    canonicalJson({ a: { c: 2, d: [1, { x: 2, y: 1 }] }, b: 1 }),
  );
});

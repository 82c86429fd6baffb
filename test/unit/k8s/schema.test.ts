import t, { type Test } from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import { parseEndpointSlice, parseObjectKey, parseService } from '../../../src/k8s/index.js';

const KEY = '/weft/services/default/web';
const SKEY = '/weft/endpointslices/default/web-1';

function svc(spec: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'default' },
    spec,
    ...extra,
  });
}

function slice(
  body: Record<string, unknown>,
  labels: Record<string, string> = { 'kubernetes.io/service-name': 'web' },
) {
  return JSON.stringify({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: 'default', labels },
    addressType: 'IPv4',
    ...body,
  });
}

/** Asserts that parsing throws INVALID_VALUE naming the key and the field. */
function rejects(t: Test, fn: () => unknown, key: string, field: string) {
  try {
    fn();
    t.fail(`expected an error for ${field}`);
  } catch (err) {
    t.ok(isWeftError(err, ErrorCodes.INVALID_VALUE), 'INVALID_VALUE');
    const e = err as Error & { details: { field: string; object: string } };
    t.equal(e.details.object, key);
    t.equal(e.details.field, field);
    t.match(e.message, key);
    if (field) t.match(e.message, `field ${field}`);
  }
}

t.test('defaults of a minimal ClusterIP service', async (t) => {
  const s = parseService(KEY, 'default', 'web', svc({ clusterIP: '10.96.0.10', ports: [{ port: 80 }] }));
  t.same(s, {
    namespace: 'default',
    name: 'web',
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.10'],
    ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: undefined, nodePort: 0 }],
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: 0,
    selector: undefined,
  });
});

t.test('what kubectl create service prints is accepted (nulls, creationTimestamp, status)', async (t) => {
  const text = JSON.stringify({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { creationTimestamp: null, labels: { app: 'web' }, name: 'web' },
    spec: {
      ports: [{ name: '80-8080', port: 80, protocol: 'TCP', targetPort: 8080 }],
      selector: { app: 'web' },
      type: 'ClusterIP',
      clusterIP: '10.96.0.9',
    },
    status: { loadBalancer: {} },
  });
  const s = parseService(KEY, 'default', 'web', text);
  t.equal(s.ports[0]?.targetPort, 8080);
  t.same(s.clusterIPs, ['10.96.0.9']);
});

t.test('affinity, LB ingress, source ranges and IPv6 are normalised', async (t) => {
  const s = parseService(
    KEY,
    'default',
    'web',
    svc(
      {
        type: 'LoadBalancer',
        clusterIPs: ['10.96.0.10', 'fd00:0:0::10'],
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
        sessionAffinity: 'ClientIP',
        loadBalancerSourceRanges: ['198.51.100.7/24'],
      },
      { status: { loadBalancer: { ingress: [{ ip: '203.0.113.7' }, { hostname: 'lb.example' }] } } },
    ),
  );
  t.same(s.clusterIPs, ['10.96.0.10', 'fd00::10']);
  t.equal(s.affinityTimeoutSeconds, 10_800, 'kube default timeout');
  t.same(s.loadBalancerIPs, ['203.0.113.7']);
  t.same(s.loadBalancerSourceRanges, ['198.51.100.0/24']);
});

t.test(
  'source ranges inside another one are dropped (they would overlap in an nft interval set)',
  async (t) => {
    const s = parseService(
      '/weft/services/default/web',
      'default',
      'web',
      svc({
        type: 'LoadBalancer',
        clusterIPs: ['10.96.0.10'],
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
        loadBalancerSourceRanges: [
          '198.51.100.0/26',
          '::/0',
          '198.51.100.0/24',
          '13d:af5d::/64',
          '198.51.100.7/24',
          '10.0.0.0/8',
        ],
      }),
    );
    t.same(s.loadBalancerSourceRanges, ['::/0', '198.51.100.0/24', '10.0.0.0/8']);
  },
);

t.test('headless and ExternalName services have no ClusterIP', async (t) => {
  t.same(
    parseService(KEY, 'default', 'web', svc({ clusterIP: 'None', ports: [{ port: 80 }] })).clusterIPs,
    [],
  );
  t.same(
    parseService(KEY, 'default', 'web', svc({ type: 'ExternalName', externalName: 'x.example' })).clusterIPs,
    [],
  );
});

t.test('bad services name the key and the field', async (t) => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['bad cluster IP', { clusterIP: '10.96.0.300', ports: [{ port: 80 }] }, 'spec.clusterIP'],
    ['port out of range', { clusterIP: '10.96.0.1', ports: [{ port: 70000 }] }, 'spec.ports[0].port'],
    [
      'unknown protocol',
      { clusterIP: '10.96.0.1', ports: [{ port: 53, protocol: 'ICMP' }] },
      'spec.ports[0].protocol',
    ],
    [
      'bad external IP',
      { clusterIP: '10.96.0.1', ports: [{ port: 80 }], externalIPs: ['nope'] },
      'spec.externalIPs[0]',
    ],
    [
      'unnamed port among several',
      { clusterIP: '10.96.0.1', ports: [{ port: 80 }, { name: 'b', port: 81 }] },
      'spec.ports[0].name',
    ],
    [
      'duplicate port',
      {
        clusterIP: '10.96.0.1',
        ports: [
          { name: 'a', port: 80 },
          { name: 'a', port: 80 },
        ],
      },
      'spec.ports[1]',
    ],
    [
      'nodePort on ClusterIP',
      { clusterIP: '10.96.0.1', ports: [{ port: 80, nodePort: 30001 }] },
      'spec.ports[0].nodePort',
    ],
    [
      'bad policy',
      { clusterIP: '10.96.0.1', ports: [{ port: 80 }], externalTrafficPolicy: 'Nearest' },
      'spec.externalTrafficPolicy',
    ],
    [
      'bad source range',
      { clusterIP: '10.96.0.1', ports: [{ port: 80 }], loadBalancerSourceRanges: ['1.2.3/99'] },
      'spec.loadBalancerSourceRanges[0]',
    ],
    [
      'two v4 cluster IPs',
      { clusterIPs: ['10.96.0.1', '10.96.0.2'], ports: [{ port: 80 }] },
      'spec.clusterIPs',
    ],
  ];
  for (const [name, spec, field] of cases)
    t.test(name, async (t) => rejects(t, () => parseService(KEY, 'default', 'web', svc(spec)), KEY, field));
  t.test('not JSON', async (t) => rejects(t, () => parseService(KEY, 'default', 'web', '{'), KEY, ''));
  t.test('metadata disagrees with the key', async (t) =>
    rejects(
      t,
      () => parseService(KEY, 'default', 'other', svc({ clusterIP: '10.96.0.1', ports: [{ port: 80 }] })),
      KEY,
      'metadata.name',
    ),
  );
});

t.test('slices: kube condition defaults and canonical addresses', async (t) => {
  const s = parseEndpointSlice(
    SKEY,
    'default',
    'web-1',
    slice({
      endpoints: [
        { addresses: ['10.244.1.2'], nodeName: 'n1' },
        { addresses: ['10.244.1.3'], conditions: { ready: false } },
        { addresses: ['10.244.1.4'], conditions: { ready: false, serving: true, terminating: true } },
      ],
      ports: [{ name: 'http', port: 8080 }],
    }),
  );
  t.equal(s.serviceName, 'web');
  t.same(
    s.endpoints.map((e) => [e.ready, e.serving, e.terminating]),
    [
      [true, true, false],
      [false, false, false],
      [false, true, true],
    ],
  );
  t.same(s.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }]);
  t.equal(s.endpoints[0]?.nodeName, 'n1');
});

t.test('bad slices name the key and the field', async (t) => {
  t.test('missing service label', async (t) =>
    rejects(
      t,
      () => parseEndpointSlice(SKEY, 'default', 'web-1', slice({ endpoints: [] }, {})),
      SKEY,
      'metadata.labels.kubernetes.io/service-name',
    ),
  );
  t.test('address of the wrong family', async (t) =>
    rejects(
      t,
      () => parseEndpointSlice(SKEY, 'default', 'web-1', slice({ endpoints: [{ addresses: ['fd00::1'] }] })),
      SKEY,
      'endpoints[0].addresses[0]',
    ),
  );
  t.test('garbage address', async (t) =>
    rejects(
      t,
      () => parseEndpointSlice(SKEY, 'default', 'web-1', slice({ endpoints: [{ addresses: ['10.1.2'] }] })),
      SKEY,
      'endpoints[0].addresses[0]',
    ),
  );
  t.test('port out of range', async (t) =>
    rejects(
      t,
      () =>
        parseEndpointSlice(
          SKEY,
          'default',
          'web-1',
          slice({ endpoints: [], ports: [{ name: 'a', port: 0 }] }),
        ),
      SKEY,
      'ports[0].port',
    ),
  );
  t.test('unknown protocol', async (t) =>
    rejects(
      t,
      () =>
        parseEndpointSlice(
          SKEY,
          'default',
          'web-1',
          slice({ endpoints: [], ports: [{ name: 'a', port: 1, protocol: 'GRE' }] }),
        ),
      SKEY,
      'ports[0].protocol',
    ),
  );
});

t.test('object keys', async (t) => {
  t.same(parseObjectKey('/weft', '/weft/services/default/web'), {
    kind: 'Service',
    namespace: 'default',
    name: 'web',
  });
  t.same(parseObjectKey('/weft/', '/weft/endpointslices/ns/s-1'), {
    kind: 'EndpointSlice',
    namespace: 'ns',
    name: 's-1',
  });
  t.equal(parseObjectKey('/weft', '/weft/services/default'), undefined);
  t.equal(parseObjectKey('/weft', '/weft/services/a/b/c'), undefined);
  t.equal(parseObjectKey('/weft', '/other/services/a/b'), undefined);
});

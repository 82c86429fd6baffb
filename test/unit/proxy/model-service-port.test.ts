import t from 'tap';
import {
  buildServicePorts,
  changedServicePorts,
  selectEndpoints,
  type Endpoint,
  type EndpointSliceSpec,
  type ServicePort,
  type ServiceSpec,
} from '../../../src/proxy/model/index.js';
import { goldenServicePorts } from '../../helpers/proxy-fixtures.js';

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
    selector: undefined,
    ...over,
  };
}

function slice(
  name: string,
  ips: [string, string?][],
  over: Partial<EndpointSliceSpec> = {},
): EndpointSliceSpec {
  return {
    namespace: 'default',
    name,
    serviceName: 'web',
    managedBy: undefined,
    addressType: 'IPv4',
    endpoints: ips.map(([ip, node]) => ({
      addresses: [ip],
      ready: true,
      serving: true,
      terminating: false,
      nodeName: node,
      zone: undefined,
    })),
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    ...over,
  };
}

const build = (svcs: ServiceSpec[], slices: EndpointSliceSpec[], family: 4 | 6 = 4) =>
  buildServicePorts(svcs, slices, { family, nodeName: 'n1' });

t.test('endpoints from several slices are joined, deduplicated and sorted', async (t) => {
  const m = build(
    [service()],
    [slice('b', [['10.244.2.2'], ['10.244.1.2', 'n1']]), slice('a', [['10.244.2.2']])],
  );
  const sp = m.get('default/web:http');
  t.ok(sp);
  t.same(
    sp?.endpoints.map((e) => `${e.ip}:${e.port}:${e.isLocal}`),
    ['10.244.1.2:8080:true', '10.244.2.2:8080:false'],
  );
});

t.test(
  'a slice port is matched by name and protocol; without slice ports the targetPort is used',
  async (t) => {
    const other = slice('a', [['10.244.2.2']], { ports: [{ name: 'metrics', protocol: 'TCP', port: 9090 }] });
    t.same(
      build([service()], [other]).get('default/web:http')?.endpoints,
      [],
      'no port of that name: no endpoint',
    );
    const bare = slice('a', [['10.244.2.2']], { ports: undefined });
    t.equal(build([service()], [bare]).get('default/web:http')?.endpoints[0]?.port, 8080);
    const named = service({
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'web', nodePort: 0 }],
    });
    t.same(
      build([named], [bare]).get('default/web:http')?.endpoints,
      [],
      'a named targetPort needs slice ports',
    );
  },
);

t.test('families: a v4 slice never feeds a v6 port and the reverse', async (t) => {
  const dual = service({ clusterIPs: ['10.96.0.10', 'fd00::10'], externalIPs: ['192.0.2.1', '2001:db8::1'] });
  const v6slice = slice('b', [['fd00:244::2']], { addressType: 'IPv6' });
  const v4 = build([dual], [slice('a', [['10.244.2.2']]), v6slice], 4).get('default/web:http');
  const v6 = build([dual], [slice('a', [['10.244.2.2']]), v6slice], 6).get('default/web:http');
  t.same(
    v4?.endpoints.map((e) => e.ip),
    ['10.244.2.2'],
  );
  t.same(v4?.externalIPs, ['192.0.2.1']);
  t.equal(v6?.clusterIP, 'fd00::10');
  t.same(
    v6?.endpoints.map((e) => e.ip),
    ['fd00:244::2'],
  );
  t.same(v6?.externalIPs, ['2001:db8::1']);
  t.equal(build([service()], [], 6).size, 0, 'single-stack v4 has no v6 ports');
});

function ep(ip: string, over: Partial<Endpoint> = {}): Endpoint {
  return { ip, port: 80, ready: true, serving: true, terminating: false, isLocal: false, ...over };
}

function port(endpoints: Endpoint[], over: Partial<ServicePort> = {}): ServicePort {
  const sp = build([service()], []).get('default/web:http');
  if (!sp) throw new Error('fixture');
  return { ...sp, endpoints, ...over };
}

t.test('selection: ready first, serving+terminating only when none is ready', async (t) => {
  const terminating = ep('10.0.0.2', { ready: false, serving: true, terminating: true });
  const notServing = ep('10.0.0.3', { ready: false, serving: false, terminating: true });
  t.same(
    selectEndpoints(port([ep('10.0.0.1'), terminating])).cluster.map((e) => e.ip),
    ['10.0.0.1'],
  );
  t.same(
    selectEndpoints(port([terminating, notServing])).cluster.map((e) => e.ip),
    ['10.0.0.2'],
  );
  t.same(selectEndpoints(port([ep('10.0.0.4', { ready: false, serving: false })])).cluster, []);
});

t.test('selection: traffic policies', async (t) => {
  const eps = [ep('10.0.0.1', { isLocal: true }), ep('10.0.0.2')];
  const ext = selectEndpoints(port(eps, { externalPolicyLocal: true }));
  t.same(
    ext.internal.map((e) => e.ip),
    ['10.0.0.1', '10.0.0.2'],
    'ClusterIP traffic still goes everywhere',
  );
  t.same(
    ext.external.map((e) => e.ip),
    ['10.0.0.1'],
  );
  t.ok(ext.hasLocal);
  const int = selectEndpoints(port([ep('10.0.0.2')], { internalPolicyLocal: true }));
  t.same(int.internal, [], 'no local endpoint: internal traffic has nowhere to go');
  t.notOk(int.hasLocal);
});

t.test('externalTrafficPolicy Local only counts for externally reachable services', async (t) => {
  const m = build([service({ externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 })], []);
  t.equal(m.get('default/web:http')?.externalPolicyLocal, false);
  t.equal(m.get('default/web:http')?.healthCheckNodePort, 0);
});

t.test('changed ports: added, removed and modified', async (t) => {
  const before = goldenServicePorts();
  const after = new Map(before);
  const web = after.get('default/web:http');
  if (!web) throw new Error('fixture');
  after.set(web.id, { ...web, endpoints: web.endpoints.slice(1) });
  after.delete('default/empty:http');
  const extra = { ...web, id: 'default/new:http', name: 'new' };
  after.set(extra.id, extra);
  t.same([...changedServicePorts(before, after)].sort(), [
    'default/empty:http',
    'default/new:http',
    'default/web:http',
  ]);
  t.equal(
    changedServicePorts(before, goldenServicePorts()).size,
    0,
    'a rebuild of the same objects changes nothing',
  );
});

t.test('golden fixture selection as node-1 sees it', async (t) => {
  const got = [...goldenServicePorts().values()].map((sp) => {
    const s = selectEndpoints(sp);
    return `${sp.id} ${sp.protocol} int=${s.internal.map((e) => e.ip).join(',')} ext=${s.external.map((e) => e.ip).join(',')}`;
  });
  t.same(got, [
    'default/web:http TCP int=10.244.1.2,10.244.2.2,10.244.3.2 ext=10.244.1.2,10.244.2.2,10.244.3.2',
    'kube-system/dns:dns UDP int=10.244.2.5,10.244.3.5 ext=10.244.2.5,10.244.3.5',
    'kube-system/dns:dns-tcp TCP int=10.244.2.5,10.244.3.5 ext=10.244.2.5,10.244.3.5',
    'default/nodeport TCP int=10.244.2.3 ext=10.244.2.3',
    'default/extip:https TCP int=10.244.2.4 ext=10.244.2.4',
    'default/lb:http TCP int=10.244.3.6 ext=10.244.3.6',
    'default/local:http TCP int=10.244.1.7,10.244.2.7 ext=10.244.1.7',
    'default/local-remote:http TCP int= ext=',
    'default/sticky:http TCP int=10.244.2.8,10.244.3.8 ext=10.244.2.8,10.244.3.8',
    'default/empty:http TCP int= ext=',
    'default/draining:http TCP int=10.244.2.10 ext=10.244.2.10',
    'default/sctp:assoc SCTP int=10.244.3.11 ext=10.244.3.11',
  ]);
});

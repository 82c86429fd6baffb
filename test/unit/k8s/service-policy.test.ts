/**
 * The Service address policy: ClusterIPs inside --service-cidr, externalIPs only inside
 * --allowed-external-cidrs (none by default), LoadBalancer ingress inside
 * --allowed-loadbalancer-cidrs when set; and the tracker refusing, logging and counting a Service
 * that breaks it while serving the rest.
 */
import t from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import {
  ObjectTracker,
  checkServicePolicy,
  compileServicePolicy,
  parseService,
  type ServicePolicy,
} from '../../../src/k8s/index.js';
import { createRegistry } from '../../../src/metrics/index.js';
import { MemoryStore } from '../../../src/registry/index.js';
import { serviceObject } from '../../helpers/proxy-objects.js';
import { put, recordingLogger } from './tracker-helpers.js';

const KEY = '/weft/services/default/web';
const DEFAULT_POLICY: ServicePolicy = {
  serviceCidrs: ['10.96.0.0/12'],
  allowedExternalCidrs: [],
  allowedLoadBalancerCidrs: [],
};

function spec(extra: Record<string, unknown> = {}, status?: unknown) {
  return parseService(
    KEY,
    'default',
    'web',
    JSON.stringify({
      metadata: { name: 'web' },
      spec: { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }], ...extra },
      ...(status !== undefined && { status }),
    }),
  );
}

const lb = (ip: string) =>
  [
    { type: 'LoadBalancer', ports: [{ name: 'http', port: 80, nodePort: 30080 }] },
    { loadBalancer: { ingress: [{ ip }] } },
  ] as const;

t.test('what each policy accepts and refuses', async (t) => {
  const cases: [string, Partial<ServicePolicy>, ReturnType<typeof spec>, string | undefined][] = [
    ['ClusterIP inside the default range', {}, spec(), undefined],
    ['ClusterIP outside', {}, spec({ clusterIP: '10.0.0.1' }), 'spec.clusterIPs[0]'],
    ['etcd’s own address as ClusterIP', {}, spec({ clusterIP: '192.168.1.10' }), 'spec.clusterIPs[0]'],
    ['IPv6 ClusterIP without an IPv6 range', {}, spec({ clusterIP: 'fd00:96::10' }), 'spec.clusterIPs[0]'],
    [
      'dual-stack ranges',
      { serviceCidrs: ['10.96.0.0/12', 'fd00:96::/112'] },
      spec({ clusterIPs: ['10.96.0.10', 'fd00:96::10'] }),
      undefined,
    ],
    [
      'second family outside',
      { serviceCidrs: ['10.96.0.0/12', 'fd00:96::/112'] },
      spec({ clusterIPs: ['10.96.0.10', 'fd00:97::10'] }),
      'spec.clusterIPs[1]',
    ],
    ['headless', {}, spec({ clusterIP: 'None' }), undefined],
    ['externalIPs refused by default', {}, spec({ externalIPs: ['192.0.2.10'] }), 'spec.externalIPs[0]'],
    [
      'externalIP inside the allowed CIDRs',
      { allowedExternalCidrs: ['192.0.2.0/24'] },
      spec({ externalIPs: ['192.0.2.10'] }),
      undefined,
    ],
    [
      'externalIP outside the allowed CIDRs',
      { allowedExternalCidrs: ['192.0.2.0/24'] },
      spec({ externalIPs: ['192.0.2.10', '198.51.100.1'] }),
      'spec.externalIPs[1]',
    ],
    ['LB ingress anywhere by default', {}, spec(...lb('203.0.113.7')), undefined],
    [
      'LB ingress inside the allowed CIDRs',
      { allowedLoadBalancerCidrs: ['203.0.113.0/24'] },
      spec(...lb('203.0.113.7')),
      undefined,
    ],
    [
      'LB ingress outside the allowed CIDRs',
      { allowedLoadBalancerCidrs: ['203.0.113.0/24'] },
      spec(...lb('198.51.100.7')),
      'status.loadBalancer.ingress',
    ],
  ];
  for (const [name, p, svc, field] of cases) {
    t.test(name, async (t) => {
      const policy = compileServicePolicy({ ...DEFAULT_POLICY, ...p });
      if (field === undefined) {
        t.doesNotThrow(() => checkServicePolicy(KEY, svc, policy));
        return;
      }
      try {
        checkServicePolicy(KEY, svc, policy);
        t.fail('accepted');
      } catch (err) {
        t.ok(isWeftError(err, ErrorCodes.INVALID_VALUE));
        const e = err as Error & { details: Record<string, unknown> };
        t.equal(e.details.object, KEY);
        t.equal(e.details.field, field);
        t.match(e.message, `Service ${KEY}: field ${field}: `);
      }
    });
  }
});

t.test(
  'the tracker refuses a Service that breaks the policy, logs and counts it, serves the rest',
  async (t) => {
    const store = new MemoryStore();
    const web = serviceObject({ name: 'web', clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] });
    const rogue = serviceObject({
      name: 'rogue',
      clusterIP: '10.96.0.21',
      ports: [{ name: 'http', port: 80 }],
    });
    (rogue.value.spec as Record<string, unknown>).externalIPs = ['192.0.2.10'];
    const outside = serviceObject({
      name: 'etcd',
      clusterIP: '192.168.1.10',
      ports: [{ name: 'c', port: 2379 }],
    });
    await put(store, web.key, web.value);
    await put(store, rogue.key, rogue.value);
    await put(store, outside.key, outside.value);
    const { log, records } = recordingLogger('info');
    const metrics = createRegistry();
    const tracker = new ObjectTracker({
      store,
      prefix: '/weft',
      log,
      metrics,
      servicePolicy: DEFAULT_POLICY,
      onChange: () => undefined,
    });
    t.teardown(() => tracker.stop());
    tracker.start();
    await tracker.synced;
    t.same(
      [...tracker.services()].map((s) => s.name),
      ['web'],
    );
    t.match(tracker.invalidObjects(), [
      { key: outside.key, field: 'spec.clusterIPs[0]' },
      { key: rogue.key, field: 'spec.externalIPs[0]' },
    ]);
    const gauge = await metrics.getSingleMetric('weft_proxy_invalid_objects')?.get();
    t.equal(gauge?.values.find((v) => v.labels.kind === 'Service')?.value, 2);
    const warned = records.filter((r) => r.level === 40);
    t.equal(warned.length, 2, 'one line per refused Service');
    t.match(
      warned.sort((x, y) => String(x.key).localeCompare(String(y.key))),
      [
        { key: outside.key, field: 'spec.clusterIPs[0]', msg: /refused by the address policy/ },
        { key: rogue.key, field: 'spec.externalIPs[0]', msg: /refused by the address policy/ },
      ],
    );

    // Without a policy (weftctl's tracker-less reads, tests), every valid address is served.
    const open = new ObjectTracker({ store, prefix: '/weft', log, onChange: () => undefined });
    t.teardown(() => open.stop());
    open.start();
    await open.synced;
    t.equal([...open.services()].length, 3);
  },
);

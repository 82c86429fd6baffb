import t from 'tap';
import type { CommandRunner } from '../../../src/exec/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { clearStaleConntrack, conntrackCleanupArgs, isNothingDeleted } from '../../../src/proxy/conntrack.js';
import type { ServicePort } from '../../../src/proxy/model/index.js';
import { servicePortsOf, type EndpointDef, type ServiceDef } from '../../helpers/proxy-objects.js';

const node = 'node-1';
const dns: ServiceDef = {
  namespace: 'kube-system',
  name: 'dns',
  clusterIP: '10.96.0.10',
  ports: [{ name: 'dns', protocol: 'UDP', port: 53 }],
};
const dnsNodePort: ServiceDef = {
  ...dns,
  type: 'NodePort',
  ports: [{ name: 'dns', protocol: 'UDP', port: 53, nodePort: 30053 }],
};
const web: ServiceDef = { name: 'web', clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] };

function ports(svcs: ServiceDef[], eps: Record<string, EndpointDef[]>): Map<string, ServicePort> {
  const slices = svcs.map((s) => ({
    namespace: s.namespace ?? 'default',
    service: s.name,
    endpoints: eps[s.name] ?? [],
    ports: s.ports.map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port + 1000 })),
  }));
  return servicePortsOf(svcs, slices, { nodeName: node });
}

const withExternal = (sp: Map<string, ServicePort>, ext: string[]) => {
  for (const v of sp.values()) v.externalIPs = ext;
  return sp;
};

const cases: {
  name: string;
  before: Map<string, ServicePort>;
  after: Map<string, ServicePort>;
  want: string[];
}[] = [
  {
    name: 'endpoint removed: its flows to the ClusterIP',
    before: ports([dns], { dns: [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }] }),
    after: ports([dns], { dns: [{ ip: '10.244.2.2' }] }),
    want: ['-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2'],
  },
  {
    name: 'endpoint removed from a NodePort service with an external IP',
    before: withExternal(ports([dnsNodePort], { dns: [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }] }), [
      '192.0.2.10',
    ]),
    after: withExternal(ports([dnsNodePort], { dns: [{ ip: '10.244.2.2' }] }), ['192.0.2.10']),
    want: [
      '-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2',
      '-D -p udp --orig-dst 192.0.2.10 --dst-nat 10.244.1.2',
      '-D -p udp --orig-port-dst 30053 --dst-nat 10.244.1.2',
    ],
  },
  {
    name: 'endpoint no longer ready counts as removed',
    before: ports([dns], { dns: [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }] }),
    after: ports([dns], { dns: [{ ip: '10.244.1.2', ready: false }, { ip: '10.244.2.2' }] }),
    want: ['-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2'],
  },
  {
    name: 'zero to some endpoints: every entry of the service addresses',
    before: ports([dnsNodePort], {}),
    after: ports([dnsNodePort], { dns: [{ ip: '10.244.1.2' }] }),
    want: ['-D -p udp --orig-dst 10.96.0.10', '-D -p udp --orig-port-dst 30053'],
  },
  {
    name: 'a new UDP service with endpoints is a zero-to-some change',
    before: new Map(),
    after: ports([dns], { dns: [{ ip: '10.244.1.2' }] }),
    want: ['-D -p udp --orig-dst 10.96.0.10'],
  },
  {
    name: 'service removed: every endpoint it had',
    before: ports([dns], { dns: [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }] }),
    after: new Map(),
    want: [
      '-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2',
      '-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.2.2',
    ],
  },
  {
    name: 'endpoint added to a service that had some: nothing',
    before: ports([dns], { dns: [{ ip: '10.244.1.2' }] }),
    after: ports([dns], { dns: [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }] }),
    want: [],
  },
  {
    name: 'TCP services: nothing',
    before: ports([web], { web: [{ ip: '10.244.1.2' }, { ip: '10.244.2.2' }] }),
    after: ports([web], {}),
    want: [],
  },
  {
    name: 'unchanged: nothing',
    before: ports([dns, web], { dns: [{ ip: '10.244.1.2' }] }),
    after: ports([dns, web], { dns: [{ ip: '10.244.1.2' }] }),
    want: [],
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    t.same(
      conntrackCleanupArgs(c.before, c.after).map((a) => a.join(' ')),
      c.want,
    );
  });
}

t.test('IPv6 service ports carry -f ipv6', async (t) => {
  const before = ports([dns], { dns: [{ ip: '10.244.1.2' }] });
  const after = new Map<string, ServicePort>();
  for (const [id, sp] of before) {
    before.set(id, {
      ...sp,
      family: 6,
      clusterIP: 'fd00::10',
      endpoints: sp.endpoints.map((e) => ({ ...e, ip: 'fd01::2' })),
    });
  }
  t.same(conntrackCleanupArgs(before, after), [
    ['-f', 'ipv6', '-D', '-p', 'udp', '--orig-dst', 'fd00::10', '--dst-nat', 'fd01::2'],
  ]);
});

t.test('ids limit the comparison to a partial sync', async (t) => {
  const before = ports([dns], { dns: [{ ip: '10.244.1.2' }] });
  t.same(conntrackCleanupArgs(before, new Map(), ['default/other']), []);
  t.equal(conntrackCleanupArgs(before, new Map(), ['kube-system/dns:dns']).length, 1);
});

t.test('"0 flow entries" is not a failure; other exits are counted', async (t) => {
  t.ok(isNothingDeleted(1, 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n'));
  t.notOk(isNothingDeleted(1, 'conntrack: Operation failed: invalid parameters'));
  const calls: string[][] = [];
  const runner: CommandRunner = async (cmd, args) => {
    calls.push([cmd, ...args]);
    if (args.includes('10.0.0.1'))
      return { code: 1, stdout: '', stderr: '0 flow entries have been deleted.' };
    if (args.includes('10.0.0.2'))
      return { code: 0, stdout: '', stderr: '1 flow entries have been deleted.' };
    return { code: 2, stdout: '', stderr: 'Operation not permitted' };
  };
  const failed = await clearStaleConntrack(
    runner,
    [
      ['-D', '--orig-dst', '10.0.0.1'],
      ['-D', '--orig-dst', '10.0.0.2'],
      ['-D', '--orig-dst', '10.0.0.3'],
    ],
    silentLogger(),
  );
  t.equal(failed, 1);
  t.same(calls[0], ['conntrack', '-D', '--orig-dst', '10.0.0.1']);
  t.equal(calls.length, 3, 'a failure does not stop the others');
});

/**
 * Property: every Service and EndpointSlice, however hostile its names, ports and addresses, is
 * either refused by validation (src/k8s) or rendered by every proxier into a ruleset the kernel's
 * checkers accept (`nft -c -f -` for nftables and userspace, `iptables-restore --test` and
 * `ip6tables-restore --test` for iptables) and that holds nothing but weft's own rules. The
 * renderers are checked regardless of how strict validation is: whatever validation lets through
 * must be safe to render.
 *
 * Objects are rendered in batches of 20 (one script per batch and checker; 160 objects in all) in
 * a throwaway network namespace, where the nft scripts are also applied to see which tables they
 * leave. WEFT_PROPERTY_SEED=<n> replays a run (fast-check prints the seed of a failure).
 */
import fc from 'fast-check';
import t from 'tap';
import { silentLogger } from '../../src/log/index.js';
import { createIptablesProxier } from '../../src/proxy/iptables/index.js';
import { buildRestoreInput } from '../../src/proxy/iptables/index.js';
import {
  parseEndpointSlice,
  parseService,
  planServicePorts,
  unrenderableField,
  type EndpointSliceSpec,
  type Family,
  type ServicePort,
  type ServiceSpec,
} from '../../src/proxy/model/index.js';
import { renderFullSync, rulesetOptions } from '../../src/proxy/nftables/index.js';
import type { Proxier, ProxierContext } from '../../src/proxy/proxier.js';
import { planAll, renderUserspaceRules } from '../../src/proxy/userspace/index.js';
import { netnsRunner } from '../helpers/proxy-compliance.js';
import { cleanupStale, createNetns, deleteNetns, listNetns, netnsName, newRunId } from '../lab/netns.js';

const HOSTILE = [
  'q\n-I INPUT 1 -s 6.6.6.6 -j ACCEPT\n#',
  'a"; flush ruleset; "',
  'x } ; add rule ip filter input accept ; {',
  '$var',
  '@set',
  "it's",
  'a b',
  'web\r\nCOMMIT',
  '日本',
  '\u202eevil',
  'x\\y',
  '-j ACCEPT',
  '#',
  '',
];

const label = fc.stringMatching(/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/);
// Weights: validation now refuses most hostile and special values, and a case reaches the renderers
// only when every one of its fields is valid; the valid arbitraries dominate so that a run still
// renders well over 50 service ports, while each hostile form keeps turning up.
const name = fc.oneof(
  { arbitrary: label, weight: 24 },
  { arbitrary: fc.constantFrom(...HOSTILE), weight: 3 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 80 }), weight: 2 },
  { arbitrary: fc.constantFrom('n'.repeat(63), `long-${'s'.repeat(58)}`), weight: 2 },
  { arbitrary: fc.string({ minLength: 64, maxLength: 300 }), weight: 1 },
);
const portName = fc.oneof(
  { arbitrary: fc.stringMatching(/^[a-z]([-a-z0-9]{0,13}[a-z0-9])?$/), weight: 24 },
  { arbitrary: fc.constantFrom(...HOSTILE), weight: 3 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 70 }), weight: 1 },
);
const portNumber = fc.oneof(
  { arbitrary: fc.integer({ min: 1, max: 65_535 }), weight: 30 },
  { arbitrary: fc.constantFrom<unknown>(0, 65_536, -1, 1.5, 1e12, '80', null), weight: 1 },
);
const v4 = fc.ipV4();
const v6 = fc.ipV6();
// Unicast addresses validation accepts (no loopback, link-local, multicast or unspecified).
const unicast4 = fc
  .tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 }))
  .filter(([a, b]) => a !== 127 && !(a === 169 && b === 254))
  .map((o) => o.join('.'));
const unicast6 = fc
  .tuple(fc.nat(0xffff), fc.nat(0xffff))
  .map(([a, b]) => `2001:db8::${a.toString(16)}:${b.toString(16)}`);
const address = fc.oneof(
  { arbitrary: unicast4, weight: 16 },
  { arbitrary: unicast6, weight: 12 },
  { arbitrary: v4, weight: 2 },
  { arbitrary: v6, weight: 2 },
  {
    arbitrary: fc.constantFrom(
      '1.2.3.4; drop',
      '1.2.3.4 } ; flush ruleset',
      'fe80::1%eth0',
      '::ffff:1.2.3.4',
      '0.0.0.0',
      '255.255.255.255',
      '::',
      ' 1.2.3.4',
      '01.2.3.4',
      '1.2.3.4\n-A INPUT -j ACCEPT',
    ),
    weight: 1,
  },
);
const cidr = fc.oneof(
  v4.map((a) => `${a}/24`),
  v6.map((a) => `${a}/64`),
  fc.constantFrom('0.0.0.0/0', '::/0', '10.0.0.0/8;x', '1.2.3.4/33', '10.0.0.0/8 drop'),
);

/** One case: a Service and its slice, as stored JSON, with the names its key would give. */
const caseArb = fc
  .record({
    namespace: name,
    name,
    sliceName: name,
    withMetadata: fc.boolean(),
    type: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer'),
    clusterIP: address,
    ports: fc.array(
      fc.record({
        name: portName,
        protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'),
        port: portNumber,
        nodePort: fc.oneof(fc.constant(0), portNumber),
        slicePort: portNumber,
      }),
      { minLength: 1, maxLength: 3 },
    ),
    externalIPs: fc.array(address, { maxLength: 2 }),
    ingress: fc.array(address, { maxLength: 2 }),
    ranges: fc.array(cidr, { maxLength: 2 }),
    affinity: fc.option(fc.integer({ min: 1, max: 86_400 })),
    externalTrafficPolicy: fc.constantFrom('Cluster', 'Local'),
    internalTrafficPolicy: fc.constantFrom('Cluster', 'Local'),
    healthCheckNodePort: fc.oneof(fc.constant(0), portNumber),
    addressType: fc.constantFrom('IPv4', 'IPv6'),
    endpoints: fc.array(fc.record({ ip: address, local: fc.boolean(), ready: fc.boolean() }), {
      maxLength: 4,
    }),
  })
  .map((c) => {
    const meta = (n: string) => (c.withMetadata ? { metadata: { namespace: c.namespace, name: n } } : {});
    const service = {
      apiVersion: 'v1',
      kind: 'Service',
      ...meta(c.name),
      spec: {
        type: c.type,
        clusterIP: c.clusterIP,
        ports: c.ports.map((p) => ({
          name: p.name,
          protocol: p.protocol,
          port: p.port,
          ...(c.type !== 'ClusterIP' ? { nodePort: p.nodePort } : {}),
        })),
        externalIPs: c.externalIPs,
        loadBalancerSourceRanges: c.ranges,
        externalTrafficPolicy: c.externalTrafficPolicy,
        internalTrafficPolicy: c.internalTrafficPolicy,
        ...(c.type === 'LoadBalancer' && c.externalTrafficPolicy === 'Local'
          ? { healthCheckNodePort: c.healthCheckNodePort }
          : {}),
        ...(c.affinity !== null
          ? {
              sessionAffinity: 'ClientIP',
              sessionAffinityConfig: { clientIP: { timeoutSeconds: c.affinity } },
            }
          : {}),
      },
      status: { loadBalancer: { ingress: c.ingress.map((ip) => ({ ip })) } },
    };
    const slice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        ...(c.withMetadata ? { namespace: c.namespace, name: c.sliceName } : {}),
        labels: { 'kubernetes.io/service-name': c.name },
      },
      addressType: c.addressType,
      endpoints: c.endpoints.map((e) => ({
        addresses: [e.ip],
        conditions: { ready: e.ready, serving: true, terminating: !e.ready },
        nodeName: e.local ? 'node-1' : 'node-2',
      })),
      ports: c.ports.map((p) => ({ name: p.name, protocol: p.protocol, port: p.slicePort })),
    };
    return { namespace: c.namespace, name: c.name, sliceName: c.sliceName, service, slice };
  });
type Case = typeof caseArb extends fc.Arbitrary<infer C> ? C : never;

const stats = { cases: 0, services: 0, slices: 0, servicePorts: 0, unrenderable: 0 };

/** What validation lets through of a batch. */
function admit(batch: Case[]): { services: ServiceSpec[]; slices: EndpointSliceSpec[] } {
  const services: ServiceSpec[] = [];
  const slices: EndpointSliceSpec[] = [];
  for (const c of batch) {
    stats.cases++;
    const key = `/weft/services/${c.namespace}/${c.name}`;
    try {
      services.push(parseService(key, c.namespace, c.name, JSON.stringify(c.service)));
      stats.services++;
    } catch {
      // Refused at the door: one of the two allowed outcomes.
    }
    try {
      slices.push(
        parseEndpointSlice(
          `/weft/endpointslices/${c.namespace}/${c.sliceName}`,
          c.namespace,
          c.sliceName,
          JSON.stringify(c.slice),
        ),
      );
      stats.slices++;
    } catch {
      // As above.
    }
  }
  return { services, slices };
}

/** The service ports the sync engine would hand to the proxiers of `family`. */
function servicePortsOf(
  objs: { services: ServiceSpec[]; slices: EndpointSliceSpec[] },
  family: Family,
): Map<string, ServicePort> {
  const { servicePorts } = planServicePorts(objs.services, objs.slices, { family, nodeName: 'node-1' });
  for (const [id, sp] of servicePorts) {
    if (unrenderableField(sp)) {
      stats.unrenderable++;
      servicePorts.delete(id);
    }
  }
  stats.servicePorts += servicePorts.size;
  return servicePorts;
}

const IPTABLES_LINE =
  /^(\*(nat|filter|mangle)|COMMIT|:WEFT-[A-Z0-9-]+ - \[0:0\]|-A WEFT-[A-Z0-9-]+ .*|-X WEFT-\S+|)$/;

t.test('every object is refused by validation or rendered into rules the kernel accepts', async (t) => {
  await cleanupStale();
  const ns = netnsName(newRunId(), 'prop');
  await createNetns(ns);
  t.teardown(async () => {
    await deleteNetns(ns);
  });
  const runner = netnsRunner(ns);
  const sh = async (cmd: string, args: string[], input?: string): Promise<string> => {
    const r = await runner(cmd, args, input);
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const ctxOf = (family: Family): ProxierContext => ({
    family,
    nodeName: 'node-1',
    clusterCidr: family === 4 ? '10.244.0.0/16' : 'fd00:10:244::/48',
    masqueradeAll: false,
    nodePortAddresses: [],
    runner,
    log: silentLogger(),
  });
  const iptables = new Map<Family, Proxier>();
  for (const family of [4, 6] as const) iptables.set(family, await createIptablesProxier(ctxOf(family)));

  const started = Date.now();
  await fc.assert(
    fc.asyncProperty(fc.array(caseArb, { minLength: 20, maxLength: 20 }), async (batch) => {
      const objs = admit(batch);
      // One script per checker for both families and both nft modes: a few commands per batch.
      const nftScripts: string[] = [];
      for (const family of [4, 6] as const) {
        const ports = servicePortsOf(objs, family);
        const ctx = ctxOf(family);
        // nftables mode's full ruleset, and the userspace mode's (listener ports stand in).
        nftScripts.push(renderFullSync(ports, rulesetOptions(ctx)));
        nftScripts.push(renderUserspaceRules(planAll(ports.values()), ctx, () => 40_000));
        // iptables: the checker (ip6tables-restore for IPv6), through the proxier's own check.
        await iptables.get(family)!.check!(ports);
        const payload = buildRestoreInput(
          {
            family,
            clusterCidr: ctx.clusterCidr,
            masqueradeAll: false,
            nodePortAddresses: [],
            randomFully: true,
          },
          { servicePorts: ports, changed: undefined, existingChains: [] },
        ).text;
        // A line iptables-restore would take but is not one of weft's is an injected rule.
        const foreign = payload.split('\n').find((l) => !IPTABLES_LINE.test(l));
        if (foreign !== undefined)
          throw new Error(`iptables payload line not weft's: ${JSON.stringify(foreign)}`);
      }
      const script = nftScripts.join('');
      await sh('nft', ['-c', '-f', '-'], script);
      // Applied, the scripts leave weft's tables and nothing else.
      await sh('nft', ['-f', '-'], script);
      const tables = (await sh('nft', ['list', 'tables'])).trim().split('\n').sort();
      await sh('nft', ['flush', 'ruleset']);
      const want = ['table ip weft', 'table ip weft-userspace', 'table ip6 weft', 'table ip6 weft-userspace'];
      if (JSON.stringify(tables) !== JSON.stringify(want))
        throw new Error(`tables left: ${tables.join(', ')}`);
    }),
    { numRuns: 8, seed: Number(process.env.WEFT_PROPERTY_SEED ?? Date.now() % 2 ** 31), endOnFailure: true },
  );
  t.pass(
    `${stats.cases} cases: ${stats.services} services and ${stats.slices} slices passed validation, ` +
      `${stats.servicePorts} service ports rendered, ${stats.unrenderable} left out as unrenderable, ` +
      `in ${Date.now() - started} ms`,
  );
  t.ok(stats.servicePorts > 50, 'enough service ports reached the renderers to mean something');
  await deleteNetns(ns);
  t.notOk((await listNetns()).includes(ns), `namespace ${ns} removed`);
});

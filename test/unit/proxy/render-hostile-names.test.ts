/**
 * Every renderer escapes or hashes a registry name where it writes it, whatever validation let
 * through: a port name with a newline is no extra iptables rule, a namespace with `;` or braces
 * is no nft syntax, and Kubernetes' longest valid names fit nft's comment and name limits.
 * (test/integration/proxy-rulesets-property.test.ts has the kernel's checkers judge the output.)
 */
import t from 'tap';
import { buildRestoreInput } from '../../../src/proxy/iptables/index.js';
import type { ServicePort } from '../../../src/proxy/model/index.js';
import { renderFullSync, rulesetOptions } from '../../../src/proxy/nftables/index.js';
import { planAll, renderUserspaceRules } from '../../../src/proxy/userspace/index.js';
import { goldenContext } from '../../helpers/proxy-fixtures.js';

function servicePort(
  namespace: string,
  name: string,
  portName: string,
  over: Partial<ServicePort> = {},
): ServicePort {
  return {
    id: `${namespace}/${name}${portName ? `:${portName}` : ''}`,
    namespace,
    name,
    portName,
    protocol: 'TCP',
    family: 4,
    clusterIP: '10.96.0.10',
    port: 80,
    nodePort: 30080,
    externalIPs: ['192.0.2.10'],
    loadBalancerIPs: ['203.0.113.7'],
    loadBalancerSourceRanges: ['198.51.100.0/24'],
    affinityTimeoutSeconds: 0,
    externalPolicyLocal: false,
    internalPolicyLocal: false,
    healthCheckNodePort: 0,
    endpoints: [
      { ip: '10.244.1.2', port: 8080, ready: true, serving: true, terminating: false, isLocal: true },
      { ip: '10.244.2.2', port: 8080, ready: true, serving: true, terminating: false, isLocal: false },
    ],
    ...over,
  };
}

const INJECTION = 'q\n-I INPUT 1 -s 6.6.6.6 -j ACCEPT\n#';
const LONG = { ns: 'n'.repeat(63), name: 's'.repeat(63), port: 'p'.repeat(63) };

function hostilePorts(): Map<string, ServicePort> {
  const list = [
    servicePort('default', 'web', INJECTION),
    servicePort('a"; flush ruleset; "', 'x } ; add rule ip filter input accept ; {', 'p', {
      clusterIP: '10.96.0.11',
      affinityTimeoutSeconds: 60,
      externalPolicyLocal: true,
    }),
    servicePort('$var', '@set', "\\ ' ` \u202e 日本", {
      clusterIP: '10.96.0.12',
      affinityTimeoutSeconds: 30,
    }),
    servicePort(LONG.ns, LONG.name, LONG.port, { clusterIP: '10.96.0.13', affinityTimeoutSeconds: 10 }),
  ];
  return new Map(list.map((sp) => [sp.id, sp]));
}

t.test('iptables: a newline in a port name makes no rule of its own', async (t) => {
  const ctx = goldenContext();
  const text = buildRestoreInput(
    {
      family: 4,
      clusterCidr: ctx.clusterCidr,
      masqueradeAll: false,
      nodePortAddresses: [],
      randomFully: true,
    },
    { servicePorts: hostilePorts(), changed: undefined, existingChains: [] },
  ).text;
  for (const line of text.split('\n')) {
    t.match(
      line,
      /^(\*(nat|filter|mangle)|COMMIT|:WEFT-[A-Z0-9-]+ - \[0:0\]|-A WEFT-[A-Z0-9-]+ .*|-X WEFT-\S+|)$/,
      line,
    );
  }
  t.notMatch(text, /^-I /m, 'no -I line');
  t.notMatch(text, /6\.6\.6\.6 -j ACCEPT\n/, 'the injected rule is not a line');
  for (const m of text.matchAll(/--comment ("[^"]*"|\S+)/g)) {
    t.ok(Buffer.byteLength(m[1]!.replace(/^"|"$/g, '')) <= 255, 'comment within iptables limit');
  }
});

t.test('nftables: chain and set names are identifiers of bounded length', async (t) => {
  const opts = rulesetOptions(goldenContext());
  const script = renderFullSync(hostilePorts(), opts);
  const names = [...script.matchAll(/^add (?:chain|set|rule) ip weft (\S+)/gm)].map((m) => m[1]!);
  t.ok(names.length > 20, `${names.length} names`);
  for (const n of names) {
    t.match(n, /^[A-Za-z][A-Za-z0-9/_.-]*$/, n);
    t.ok(Buffer.byteLength(n) <= 255, `${n.length} bytes`);
  }
  t.notMatch(script, /flush ruleset/, 'no injected command');
  t.notMatch(script, /\$var|@set[^-]/, 'no nft variable or set reference from a name');
  t.match(script, `service-`, 'the readable part is kept where it is safe');
  t.match(script, /service-[A-Z2-7]{8}-n{63}\/s{63}\/tcp\/p+_[0-9a-f]{8} /, 'long names kept readable');
});

t.test('userspace: comments are escaped and fit nft 128 bytes for the longest valid names', async (t) => {
  const sp = servicePort(LONG.ns, LONG.name, 'http-port-name1');
  const ports = new Map([...hostilePorts(), [sp.id, sp]]);
  const plans = planAll(ports.values());
  const text = renderUserspaceRules(plans, goldenContext(), () => 40000);
  const comments = [...text.matchAll(/comment "([^"]*)"/g)].map((m) => m[1]!);
  t.ok(comments.length > 8);
  for (const c of comments) {
    t.ok(Buffer.byteLength(c) <= 128, `${c.length} bytes: ${c}`);
    t.match(c, /^[A-Za-z0-9 ._:/\-+=,()<>[\]~']*$/, c);
  }
  // The same ports under plain names render the same lines but for the comments.
  const plain = new Map(
    [...ports.values()].map((p, i) => {
      const q = {
        ...p,
        namespace: `ns-${i}`,
        name: `svc-${i}`,
        portName: `p-${i}`,
        id: `ns-${i}/svc-${i}:p-${i}`,
      };
      return [q.id, q];
    }),
  );
  const plainText = renderUserspaceRules(planAll(plain.values()), goldenContext(), () => 40000);
  const shape = (s: string) =>
    s
      .split('\n')
      .map((l) => l.replace(/comment "[^"]*"/, 'comment'))
      .sort();
  t.same(shape(text), shape(plainText), 'hostile names change nothing but the comments');
});

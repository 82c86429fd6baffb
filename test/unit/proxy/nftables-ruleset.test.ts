/**
 * The nftables generator: golden files of the full-sync transaction for the shared golden
 * services and of the partial sync after one endpoint of default/web left (WEFT_UPDATE_GOLDEN=1
 * rewrites them, so a change shows up as a reviewed diff), and table tests of what each kind of
 * service port contributes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { isWeftError } from '../../../src/errors/index.js';
import { changedServicePorts, type ServicePort } from '../../../src/proxy/model/index.js';
import {
  NftRuleset,
  buildFragment,
  pickRules,
  renderFullSync,
  rulesetOptions,
  syntheticServicePorts,
  type Fragment,
  type RulesetOptions,
} from '../../../src/proxy/nftables/index.js';
import { chainsOfTable } from '../../../src/proxy/nftables/proxier.js';
import { goldenContext, goldenServicePorts } from '../../helpers/proxy-fixtures.js';

function compareGolden(tt: Test, name: string, actual: string): void {
  const file = fileURLToPath(new URL(`../../fixtures/proxy/golden/${name}`, import.meta.url));
  if (process.env['WEFT_UPDATE_GOLDEN'] === '1') writeFileSync(file, actual);
  tt.equal(actual, readFileSync(file, 'utf8'), `${name} matches (WEFT_UPDATE_GOLDEN=1 rewrites it)`);
}

const opts = (over: Partial<RulesetOptions> = {}): RulesetOptions => ({
  ...rulesetOptions(goldenContext()),
  ...over,
});

function port(id: string, ports = goldenServicePorts()): ServicePort {
  const sp = ports.get(id);
  if (!sp) throw new Error(`golden fixture has no ${id}`);
  return sp;
}

function fragmentOf(sp: ServicePort, o = opts()): Fragment {
  let next = 0;
  return buildFragment(sp, o, { allocate: (n) => ((next += n), next - n) }).fragment;
}

const elementsOf = (f: Fragment, map: string) =>
  f.elements.filter((e) => e.map === map).map((e) => (e.value ? `${e.key} : ${e.value}` : e.key));
const rulesOf = (f: Fragment) => [...f.chains.values()].flat();

/** The golden ports after the endpoint 10.244.3.2 of default/web left. */
function withoutWebEndpoint(ports: Map<string, ServicePort>): Map<string, ServicePort> {
  const after = new Map(ports);
  const web = port('default/web:http', ports);
  after.set(web.id, { ...web, endpoints: web.endpoints.filter((e) => e.ip !== '10.244.3.2') });
  return after;
}

t.test('golden: full sync', async (t) => {
  const text = renderFullSync(goldenServicePorts(), opts());
  compareGolden(t, 'nftables.nft', text);
  t.match(
    text,
    /^add table ip weft\ndelete table ip weft\n/,
    'the table is recreated in the same transaction',
  );
  t.notMatch(text, /vmap \{/, 'no anonymous verdict map');
});

t.test('golden: partial sync, one endpoint of default/web removed', async (t) => {
  const before = goldenServicePorts();
  const rs = new NftRuleset(opts());
  rs.renderFull(before);
  const after = withoutWebEndpoint(before);
  const changed = changedServicePorts(before, after);
  t.strictSame([...changed], ['default/web:http']);
  const text = rs.renderPartial(after, changed);
  compareGolden(t, 'nftables-partial.nft', text);
  t.match(
    text,
    /delete element ip weft cluster-ip-endpoints-tcp \{\n\t10\.96\.0\.10 \. tcp \. 80 \. 2\n\}/,
    'the last bucket deleted',
  );
  t.notMatch(text, /add element ip weft cluster-ip-endpoints-tcp/, 'buckets 0 and 1 keep their endpoints');
  t.match(
    text,
    /flush chain ip weft pick-cluster-ip-tcp-3\ndelete chain ip weft pick-cluster-ip-tcp-3/,
    'unused pick chain removed',
  );
  t.match(
    text,
    /delete element ip weft hairpin \{\n\t10\.244\.3\.2 \. 10\.244\.3\.2\n\}/,
    'hairpin pair removed',
  );
  t.match(text, /10\.96\.0\.10 \. tcp \. 80 : goto pick-cluster-ip-tcp-2/, 'the ClusterIP now picks among 2');
  t.notMatch(text, /default\/dns|kube-system/, 'other services untouched');
  t.equal(rs.renderPartial(after, changed), '', 'the same change again writes nothing');
});

t.test('full sync in place: keeps wanted affinity sets, deletes what is stale', async (t) => {
  const ports = goldenServicePorts();
  const fresh = new NftRuleset(opts());
  const created = fresh.renderFull(ports);
  const affinity = [...created.matchAll(/^add set ip weft (affinity-\S+)/gm)].map((m) => m[1] ?? '');
  t.equal(affinity.length, 2);
  const existing = {
    chains: new Set(['nat-prerouting', 'pick-cluster-ip-tcp-9', 'service-OLD-default/gone/tcp/http']),
    sets: new Set(['hairpin', ...affinity, 'affinity-OLD-default/gone/tcp/http__10.244.9.9/80']),
    maps: new Set(['service-ips', 'ip-endpoints']),
  };
  const text = new NftRuleset(opts()).renderFull(ports, existing);
  t.match(text, /^add table ip weft \{[^\n]*\}\nflush table ip weft\n/, 'rules flushed, the table kept');
  t.notMatch(text, /delete table/);
  t.match(
    text,
    /add map ip weft service-ips \{[^\n]*\}\nflush map ip weft service-ips\n/,
    'maps emptied and refilled',
  );
  t.match(text, /flush set ip weft hairpin\n/);
  for (const name of affinity)
    t.notMatch(text, new RegExp(`(flush|delete) set ip weft ${name.replaceAll('/', '\\/')}`));
  t.match(text, /delete chain ip weft pick-cluster-ip-tcp-9\n/);
  t.match(text, /delete chain ip weft service-OLD-default\/gone\/tcp\/http\n/);
  t.notMatch(text, /delete chain ip weft nat-prerouting/);
  t.match(text, /delete set ip weft affinity-OLD-default\/gone/);
  t.match(text, /delete map ip weft ip-endpoints\n/);
  t.ok(
    text.indexOf('delete chain') < text.indexOf('add element ip weft service-ips'),
    'stale objects go first',
  );
  const sticky = port('default/sticky:http', ports);
  const longer = new NftRuleset(opts()).renderFull(
    new Map(ports).set(sticky.id, { ...sticky, affinityTimeoutSeconds: 60 }),
    existing,
  );
  for (const name of affinity)
    t.match(longer, new RegExp(`delete set ip weft ${name.replaceAll('/', '\\/')}\n`));
  t.match(
    longer,
    /add set ip weft affinity-\S+ \{ type ipv4_addr; flags dynamic,timeout; timeout 60s; \}/,
    'a new timeout is a new set',
  );
});

t.test('no endpoints: ClusterIP rejected, nothing dispatched', async (t) => {
  const f = fragmentOf(port('default/empty:http'));
  t.strictSame(elementsOf(f, 'no-endpoint-services'), ['10.96.0.80 . tcp . 80 : goto reject-chain']);
  t.strictSame(elementsOf(f, 'service-ips'), []);
  t.equal(f.chains.size, 0);
});

t.test('Local policies without a local endpoint: drop, and pods short-circuit', async (t) => {
  const f = fragmentOf(port('default/local-remote:http'));
  t.strictSame(
    elementsOf(f, 'no-endpoint-services'),
    ['10.96.0.61 . tcp . 80 : drop'],
    'ClusterIP (itp Local) dropped',
  );
  t.strictSame(
    elementsOf(f, 'no-endpoint-nodeports'),
    ['tcp . 30061 : drop'],
    'NodePort (etp Local) dropped',
  );
  t.strictSame(elementsOf(f, 'service-ips'), [], 'ClusterIP not dispatched');
  const np = [...f.chains].find(([n]) => n.startsWith('nodeport-'))?.[1] ?? [];
  t.strictSame(np, [
    'ip saddr 10.244.0.0/16 goto pick-nodeport-cluster-tcp-1',
    'fib saddr type local jump mark-for-masquerade',
    'fib saddr type local goto pick-nodeport-cluster-tcp-1',
  ]);
  t.strictSame(elementsOf(f, 'nodeport-cluster-endpoints-tcp'), ['tcp . 30061 . 0 : 10.244.2.9 . 80']);
  t.strictSame([...f.picks.keys()], ['pick-nodeport-cluster-tcp-1']);
});

t.test('Local policy with a local endpoint: outside traffic keeps its source', async (t) => {
  const f = fragmentOf(port('default/local:http'));
  const np = [...f.chains].find(([n]) => n.startsWith('nodeport-'))?.[1] ?? [];
  t.notOk(np.includes('jump mark-for-masquerade'), 'no unconditional masquerade');
  t.equal(np.at(-1), 'goto pick-nodeport-local-tcp-1', 'outside traffic: local endpoints');
  t.strictSame(
    elementsOf(f, 'nodeport-endpoints-tcp'),
    ['tcp . 30060 . 0 : 10.244.1.7 . 80'],
    'the local one',
  );
  t.strictSame(elementsOf(f, 'nodeport-cluster-endpoints-tcp'), [
    'tcp . 30060 . 0 : 10.244.1.7 . 80',
    'tcp . 30060 . 1 : 10.244.2.7 . 80',
  ]);
  t.strictSame(elementsOf(f, 'no-endpoint-nodeports'), []);
  t.strictSame(
    new NftRuleset(opts()).renderFull(new Map()).match(/pick-nodeport-local/g),
    null,
    'pick chains only exist while used',
  );
  t.notOk(
    pickRules(opts(), 'nodeport-local', 'tcp', 1).includes('jump mark-for-masquerade'),
    'the local pick keeps the source',
  );
});

t.test('Cluster policy external traffic is masqueraded, in a shared chain', async (t) => {
  const f = fragmentOf(port('default/nodeport'));
  t.equal(f.chains.size, 0, 'no chain of its own');
  t.strictSame(elementsOf(f, 'service-nodeports'), ['tcp . 30080 : goto pick-nodeport-tcp-1']);
  t.strictSame(f.picks.get('pick-nodeport-tcp-1'), [
    'jump mark-for-masquerade',
    'meta l4proto tcp dnat to meta l4proto . th dport . numgen random mod 1 map @nodeport-endpoints-tcp',
  ]);
  const lb = fragmentOf(port('default/lb:http'));
  t.ok(elementsOf(lb, 'service-ips').includes('203.0.113.7 . tcp . 80 : goto pick-external-ip-tcp-1'));
  t.strictSame(elementsOf(lb, 'external-ip-endpoints-tcp'), ['203.0.113.7 . tcp . 80 . 0 : 10.244.3.6 . 80']);
});

t.test('ClientIP affinity: a set per endpoint, checked before the random choice', async (t) => {
  const f = fragmentOf(port('default/sticky:http'));
  t.strictSame([...f.affinitySets.values()], [600, 600]);
  const svc = f.chains.get([...f.chains.keys()].find((n) => n.startsWith('service-')) ?? '') ?? [];
  t.match(svc[1], /^ip saddr @affinity-\S+ goto endpoint-/);
  t.equal(svc.at(-1), 'numgen random mod 2 offset 0 vmap @endpoint-chains');
  t.ok(
    rulesOf(f).some((r) => /^update @affinity-\S+ \{ ip saddr \}$/.test(r)),
    'endpoint chains refresh affinity',
  );
  t.equal(elementsOf(f, 'endpoint-chains').length, 2);
});

t.test('LoadBalancer source ranges: only the ranges may reach the LB IP', async (t) => {
  const f = fragmentOf(port('default/lb:http'));
  t.strictSame(elementsOf(f, 'firewall-ips'), ['203.0.113.7 . tcp . 80']);
  t.strictSame(elementsOf(f, 'firewall-allow'), ['203.0.113.7 . tcp . 80 . 198.51.100.0/24']);
  t.ok(elementsOf(f, 'service-ips').includes('203.0.113.7 . tcp . 80 : goto pick-external-ip-tcp-1'));
  const withHostBits = { ...port('default/lb:http'), loadBalancerSourceRanges: ['198.51.100.7/24'] };
  t.strictSame(elementsOf(fragmentOf(withHostBits), 'firewall-allow'), [
    '203.0.113.7 . tcp . 80 . 198.51.100.0/24',
  ]);
});

t.test('terminating endpoints, SCTP, UDP', async (t) => {
  t.strictSame(elementsOf(fragmentOf(port('default/draining:http')), 'cluster-ip-endpoints-tcp'), [
    '10.96.0.85 . tcp . 80 . 0 : 10.244.2.10 . 80',
  ]);
  const sctp = fragmentOf(port('default/sctp:assoc'));
  t.strictSame(elementsOf(sctp, 'cluster-ip-endpoints-sctp'), [
    '10.96.0.90 . sctp . 9000 . 0 : 10.244.3.11 . 9000',
  ]);
  t.match(sctp.picks.get('pick-cluster-ip-sctp-1')?.at(-1), /^meta l4proto sctp dnat to /);
  t.strictSame(elementsOf(fragmentOf(port('kube-system/dns:dns')), 'cluster-ip-endpoints-udp'), [
    '10.96.0.53 . udp . 53 . 0 : 10.244.2.5 . 53',
    '10.96.0.53 . udp . 53 . 1 : 10.244.3.5 . 53',
  ]);
});

t.test('masquerade options', async (t) => {
  const rules = (o: RulesetOptions) => pickRules(o, 'cluster-ip', 'tcp', 3);
  t.equal(rules(opts())[0], 'ip saddr != 10.244.0.0/16 jump mark-for-masquerade');
  t.equal(rules(opts({ masqueradeAll: true }))[0], 'jump mark-for-masquerade');
  t.equal(rules(opts({ clusterCidr: undefined })).length, 1, 'no masquerade rule without a cluster CIDR');
  const sticky = fragmentOf(port('default/sticky:http'), opts({ masqueradeAll: true }));
  t.ok(rulesOf(sticky).includes('ip daddr 10.96.0.70 jump mark-for-masquerade'), 'affinity chains too');
});

t.test('context validation and NodePort addresses', async (t) => {
  const bad = (over: object) => () => rulesetOptions({ ...goldenContext(), ...over });
  t.throws(bad({ clusterCidr: 'fd00::/64' }), /cluster-cidr/);
  t.throws(bad({ nodePortAddresses: ['nope'] }), /nodeport-addresses/);
  try {
    bad({ nodePortAddresses: ['nope'] })();
  } catch (err) {
    t.ok(isWeftError(err), 'a WeftError');
  }
  const o = rulesetOptions({ ...goldenContext(), nodePortAddresses: ['192.168.1.7/24', 'fd00::/64'] });
  t.strictSame(o.nodePortCidrs, ['192.168.1.0/24'], 'host bits cleared, the other family left out');
  const text = renderFullSync(new Map(), o);
  t.match(text, /add element ip weft nodeport-cidrs \{ 192\.168\.1\.0\/24 \}/);
  t.match(text, /ip daddr @nodeport-cidrs meta l4proto \. th dport vmap @service-nodeports/);
});

t.test('IPv6', async (t) => {
  const sp: ServicePort = {
    ...port('default/web:http'),
    family: 6,
    clusterIP: 'fd00:96::10',
    endpoints: port('default/web:http').endpoints.map((e, i) => ({ ...e, ip: `fd00:244::${i + 2}` })),
  };
  const o = opts({ family: 6, clusterCidr: 'fd00:244::/48' });
  const text = renderFullSync(new Map([[sp.id, sp]]), o);
  t.match(text, /add table ip6 weft/);
  t.match(text, /fd00:96::10 \. tcp \. 80 \. 0 : fd00:244::2 \. 8080/);
  t.match(text, /ip6 saddr != fd00:244::\/48 jump mark-for-masquerade/);
  t.match(text, /ip6 daddr != ::1/);
});

t.test('partial syncs: remove, add back, conflicting keys', async (t) => {
  const ports = goldenServicePorts();
  const rs = new NftRuleset(opts());
  rs.renderFull(ports);
  const gone = new Map(ports);
  gone.delete('default/sticky:http');
  const del = rs.renderPartial(gone, ['default/sticky:http']);
  t.match(del, /flush chain ip weft service-\S+default\/sticky/);
  t.match(del, /delete chain ip weft endpoint-\S+default\/sticky/);
  t.match(del, /delete set ip weft affinity-/);
  t.ok(
    del.indexOf('delete element ip weft service-ips') < del.indexOf('delete chain'),
    'elements that refer to a chain go before the chain',
  );
  const add = rs.renderPartial(ports, ['default/sticky:http']);
  t.match(add, /add set ip weft affinity-/);
  t.ok(
    add.indexOf('add chain') < add.indexOf('add element ip weft service-ips'),
    'chains before their elements',
  );

  // A second service claiming web's ClusterIP:port: web keeps it; when web goes, the other gets it.
  const web = port('default/web:http');
  const twin: ServicePort = {
    ...web,
    id: 'default/twin:http',
    name: 'twin',
    endpoints: web.endpoints.slice(0, 1).map((e) => ({ ...e, ip: '10.244.9.9' })),
  };
  const both = new Map(ports).set(twin.id, twin);
  rs.renderPartial(both, [twin.id]);
  t.strictSame(
    rs.conflicts.filter((c) => c.map === 'service-ips').map((c) => [c.key, c.owner, c.loser]),
    [['10.96.0.10 . tcp . 80', 'default/web:http', 'default/twin:http']],
  );
  const noWeb = new Map(both);
  noWeb.delete('default/web:http');
  const handover = rs.renderPartial(noWeb, ['default/web:http']);
  t.match(
    handover,
    /add element ip weft service-ips \{\n\t10\.96\.0\.10 \. tcp \. 80 : goto pick-cluster-ip-tcp-1\n/,
  );

  // The shared pick chain disappears with its last user.
  const onlyTwo = new Map(
    [...noWeb].filter(([, sp]) => sp.endpoints.length !== 2 || sp.affinityTimeoutSeconds > 0),
  );
  const removed = [...noWeb.keys()].filter((id) => !onlyTwo.has(id));
  t.match(
    rs.renderPartial(onlyTwo, removed),
    /flush chain ip weft pick-cluster-ip-udp-2\ndelete chain ip weft pick-cluster-ip-udp-2/,
  );
});

t.test('affinity timeout change recreates the sets after their rules', async (t) => {
  const ports = goldenServicePorts();
  const rs = new NftRuleset(opts());
  rs.renderFull(ports);
  const sticky = port('default/sticky:http', ports);
  const next = new Map(ports).set(sticky.id, { ...sticky, affinityTimeoutSeconds: 60 });
  const text = rs.renderPartial(next, [sticky.id]);
  const flush = text.indexOf('flush chain');
  const del = text.indexOf('delete set');
  t.ok(flush >= 0 && del > flush, 'chains flushed before the set is deleted');
  t.match(text, /timeout 60s/);
});

t.test('synthetic services for the benchmark', async (t) => {
  const ports = syntheticServicePorts(300, 10);
  t.equal(ports.size, 300);
  const ips = new Set([...ports.values()].flatMap((sp) => sp.endpoints.map((e) => e.ip)));
  t.equal(ips.size, 3000, 'every endpoint distinct');
  const text = renderFullSync(ports, opts());
  t.equal(
    text.match(/^add chain ip weft /gm)?.length,
    16,
    'the skeleton and one shared pick chain, for 300 services',
  );
  t.throws(() => syntheticServicePorts(70_000, 1), RangeError);
});

t.test('chainsOfTable reads nft list chains', async (t) => {
  const listing = [
    'table ip other {',
    '\tchain services {',
    '\t}',
    '}',
    'table ip weft {',
    '\tchain nat-prerouting {',
    '\t\ttype nat hook prerouting priority dstnat; policy accept;',
    '\t}',
    '\tchain services {',
    '\t}',
    '}',
  ].join('\n');
  t.strictSame([...chainsOfTable(listing, 'weft')], ['nat-prerouting', 'services']);
});

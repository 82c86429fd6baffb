/**
 * Golden test of the userspace mode's nftables table for the shared golden services, with
 * listener ports fixed by key order so the text is deterministic. WEFT_UPDATE_GOLDEN=1 rewrites
 * the file (review the diff).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  EXTERNAL_SUFFIX,
  planAll,
  planListeners,
  renderCleanup,
  renderUserspaceRules,
} from '../../../src/proxy/userspace/index.js';
import { goldenContext, goldenServicePorts } from '../../helpers/proxy-fixtures.js';

const GOLDEN = fileURLToPath(new URL('../../fixtures/proxy/golden/userspace.nft', import.meta.url));

function fixedPorts(keys: string[]): (key: string) => number | undefined {
  const m = new Map(keys.map((k, i) => [k, 40000 + i]));
  return (k) => m.get(k);
}

function render(): string {
  const plans = planAll(goldenServicePorts().values());
  const ctx = goldenContext();
  return renderUserspaceRules(plans, ctx, fixedPorts(plans.map((p) => p.key)));
}

t.test('golden table for the golden services', async (t) => {
  const text = render();
  if (process.env.WEFT_UPDATE_GOLDEN === '1') writeFileSync(GOLDEN, text);
  t.equal(text, readFileSync(GOLDEN, 'utf8'), 'matches test/fixtures/proxy/golden/userspace.nft');
  t.equal(render(), text, 'rendering is deterministic');
});

t.test('what the golden table says, rule by rule', async (t) => {
  const text = render();
  const lines = text.split('\n').map((l) => l.trim());
  const has = (s: string) => t.ok(lines.includes(s), s);
  const plans = planAll(goldenServicePorts().values());
  const port = (key: string) => 40000 + plans.findIndex((p) => p.key === key);

  // ClusterIP with targetPort remap: the listener takes the service port; the remap is the
  // balancer's business.
  has(`ip daddr 10.96.0.10 tcp dport 80 redirect to :${port('default/web:http')} comment "default/web:http"`);
  // One port number over two protocols: two listeners.
  has(
    `ip daddr 10.96.0.53 udp dport 53 redirect to :${port('kube-system/dns:dns')} comment "kube-system/dns:dns"`,
  );
  has(
    `ip daddr 10.96.0.53 tcp dport 53 redirect to :${port('kube-system/dns:dns-tcp')} comment "kube-system/dns:dns-tcp"`,
  );
  // NodePort on every local address.
  has(
    `fib daddr type local tcp dport 30080 redirect to :${port('default/nodeport')} comment "default/nodeport"`,
  );
  // externalIP and LB IP, and the LB source ranges checked before NAT.
  has(
    `ip daddr 192.0.2.10 tcp dport 443 redirect to :${port('default/extip:https')} comment "default/extip:https"`,
  );
  has(`ip daddr 203.0.113.7 tcp dport 80 redirect to :${port('default/lb:http')} comment "default/lb:http"`);
  has('ip daddr 203.0.113.7 tcp dport 80 ip saddr != { 198.51.100.0/24 } drop comment "default/lb:http"');
  // No endpoints: rejected with a reset; terminating-but-serving endpoints are still used.
  has('ip daddr 10.96.0.80 tcp dport 80 reject with tcp reset comment "default/empty:http"');
  has(
    `ip daddr 10.96.0.85 tcp dport 80 redirect to :${port('default/draining:http')} comment "default/draining:http"`,
  );
  // Local external policy with a Cluster internal one: two listeners with different endpoints.
  const local = plans.filter((p) => p.servicePort.id === 'default/local:http');
  t.same(
    local.map((p) => [p.key, p.kind, p.endpoints.map((e) => e.ip)]),
    [
      ['default/local:http', 'internal', ['10.244.1.7', '10.244.2.7']],
      [`default/local:http${EXTERNAL_SUFFIX}`, 'external', ['10.244.1.7']],
    ],
  );
  has(
    `ip daddr 10.96.0.60 tcp dport 80 redirect to :${port('default/local:http')} comment "default/local:http"`,
  );
  has(
    `fib daddr type local tcp dport 30060 redirect to :${port('default/local:http@external')} comment "default/local:http external"`,
  );
  // Local policies everywhere and no local endpoint: dropped (as kube-proxy), not rejected.
  has('ip daddr 10.96.0.61 tcp dport 80 drop comment "default/local-remote:http"');
  has('fib daddr type local tcp dport 30061 drop comment "default/local-remote:http"');
  // SCTP has no listener, hence no rule; headless has no service port at all.
  t.notMatch(text, /sctp|10\.96\.0\.90/);
  t.same(planListeners(goldenServicePorts().get('default/sctp:assoc')!), []);
});

t.test('NodePort addresses, IPv6, unbound listeners', async (t) => {
  const sp = goldenServicePorts().get('default/nodeport')!;
  const text = renderUserspaceRules(
    planListeners(sp),
    { family: 4, nodePortAddresses: ['192.168.0.0/16', 'fd00::/8'] },
    () => 41000,
  );
  t.match(text, 'ip daddr { 192.168.0.0/16 } fib daddr type local tcp dport 30080 redirect to :41000');
  t.notMatch(text, 'fd00');

  const v6 = {
    ...sp,
    family: 6 as const,
    clusterIP: 'fd00:96::30',
    endpoints: sp.endpoints.map((e) => ({ ...e, ip: 'fd00:244::3' })),
  };
  const text6 = renderUserspaceRules(planListeners(v6), { family: 6, nodePortAddresses: [] }, () => 41001);
  t.match(text6, 'add table ip6 weft-userspace');
  t.match(text6, 'ip6 daddr fd00:96::30 tcp dport 80 redirect to :41001');
  const empty6 = { ...v6, endpoints: [] };
  t.match(
    renderUserspaceRules(planListeners(empty6), { family: 6, nodePortAddresses: [] }, () => 1),
    'ip6 daddr fd00:96::30 tcp dport 80 reject with tcp reset',
  );

  const unbound = renderUserspaceRules(
    planListeners(sp),
    { family: 4, nodePortAddresses: [] },
    () => undefined,
  );
  t.notMatch(unbound, 'redirect to', 'a listener that could not bind gets no redirect');
  t.equal(renderCleanup(4), 'add table ip weft-userspace\ndelete table ip weft-userspace\n');
});

t.test('only redirected traffic reaches a listener port', async (t) => {
  const text = render();
  const plans = planAll(goldenServicePorts().values());
  const ports = (proto: 'TCP' | 'UDP') =>
    plans
      .map((p, i) => [p.protocol, 40000 + i] as const)
      .filter(([p]) => p === proto)
      .map(([, n]) => n)
      .join(', ');
  const lines = text.split('\n').map((l) => l.trim());
  // Every bound listener port, empty ones included (they are bound too), per protocol.
  t.ok(lines.includes(`ct status ! dnat tcp dport { ${ports('TCP')} } drop`), 'TCP listener ports guarded');
  t.ok(lines.includes(`ct status ! dnat udp dport { ${ports('UDP')} } drop`), 'UDP listener ports guarded');
  const input = text.slice(text.indexOf('chain filter-input'), text.indexOf('chain filter-forward'));
  t.match(input, 'ct state new jump listeners', 'judged in the input hook, on new connections');
  // No listener bound: no guard rule (an empty set is a syntax error).
  const sp = goldenServicePorts().get('default/nodeport')!;
  const unbound = renderUserspaceRules(
    planListeners(sp),
    { family: 4, nodePortAddresses: [] },
    () => undefined,
  );
  t.notMatch(unbound, 'ct status ! dnat');
});

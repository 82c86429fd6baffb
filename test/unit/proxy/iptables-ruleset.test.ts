/**
 * Table tests of the iptables generator: kube-proxy's chain naming, probabilities, affinity,
 * reject/drop for missing endpoints, masquerade choices, NodePort addresses, IPv6 and stale
 * chain deletion.
 */
import t from 'tap';
import {
  base32,
  buildRestoreInput,
  endpointChainName,
  MAX_CHAIN_NAME,
  parseIptablesVersion,
  parseSave,
  portProtoHash,
  probability,
  servicePortChains,
  type IptablesRulesConfig,
} from '../../../src/proxy/iptables/index.js';
import type { Endpoint, ServicePort } from '../../../src/proxy/model/index.js';

function ep(ip: string, port: number, over: Partial<Endpoint> = {}): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, isLocal: false, ...over };
}

function port(over: Partial<ServicePort> = {}): ServicePort {
  return {
    id: 'ns1/svc1:p80',
    namespace: 'ns1',
    name: 'svc1',
    portName: 'p80',
    protocol: 'TCP',
    family: 4,
    clusterIP: '172.30.0.41',
    port: 80,
    nodePort: 0,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: 0,
    externalPolicyLocal: false,
    internalPolicyLocal: false,
    healthCheckNodePort: 0,
    endpoints: [ep('10.180.0.1', 80)],
    ...over,
  };
}

const CFG: IptablesRulesConfig = {
  family: 4,
  clusterCidr: '10.0.0.0/8',
  masqueradeAll: false,
  nodePortAddresses: [],
  randomFully: true,
};

function render(ports: ServicePort[], cfg: Partial<IptablesRulesConfig> = {}): string[] {
  const out = buildRestoreInput(
    { ...CFG, ...cfg },
    { servicePorts: new Map(ports.map((p) => [p.id, p])), changed: undefined, existingChains: [] },
  );
  return out.text.split('\n');
}

/** The lines of one table. */
function table(lines: string[], name: string): string[] {
  const start = lines.indexOf(`*${name}`);
  const end = lines.indexOf('COMMIT', start);
  return lines.slice(start + 1, end);
}

t.test('chain names: kube-proxy hash', async (t) => {
  // RFC 4648 test vectors for the encoding itself.
  t.equal(base32(Buffer.from('f')), 'MY======');
  t.equal(base32(Buffer.from('foobar')), 'MZXW6YTBOI======');
  // kube-proxy's own unit tests name ns1/svc1:p80 (TCP) KUBE-SVC-XPGD46QRK7WJZT7O and its endpoint
  // 10.180.0.1:80 KUBE-SEP-SXIVWICOYRO3J4NJ.
  t.equal(portProtoHash('ns1/svc1:p80', 'tcp'), 'XPGD46QRK7WJZT7O');
  t.equal(portProtoHash('ns1/svc1:p80', 'TCP'), 'XPGD46QRK7WJZT7O', 'protocol lower-cased');
  t.equal(endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.1:80'), 'WEFT-SEP-SXIVWICOYRO3J4NJ');
  t.strictSame(servicePortChains({ id: 'ns1/svc1:p80', protocol: 'TCP' }), {
    svc: 'WEFT-SVC-XPGD46QRK7WJZT7O',
    svl: 'WEFT-SVL-XPGD46QRK7WJZT7O',
    ext: 'WEFT-EXT-XPGD46QRK7WJZT7O',
    fw: 'WEFT-FW-XPGD46QRK7WJZT7O',
  });
  t.not(portProtoHash('ns1/svc1:p80', 'udp'), portProtoHash('ns1/svc1:p80', 'tcp'), 'protocol is hashed');
  const long = `${'n'.repeat(63)}/${'s'.repeat(63)}:${'p'.repeat(15)}`;
  for (const c of Object.values(servicePortChains({ id: long, protocol: 'SCTP' }))) {
    t.ok(c.length <= MAX_CHAIN_NAME, `${c} fits iptables' limit`);
  }
  t.ok(endpointChainName(long, 'sctp', '[fd00::1]:80').length <= MAX_CHAIN_NAME);
});

t.test('probabilities: 1/(N-i) with 10 decimals, none on the last rule', async (t) => {
  t.equal(probability(3), '0.3333333333');
  t.equal(probability(2), '0.5000000000');
  t.equal(probability(4), '0.2500000000');
  t.equal(probability(7), '0.1428571429');
  const eps = ['10.180.0.1', '10.180.0.2', '10.180.0.3', '10.180.0.4'].map((ip) => ep(ip, 80));
  const lines = table(render([port({ endpoints: eps })]), 'nat').filter((l) => l.includes(' -> '));
  t.strictSame(
    lines.map((l) => / --probability (\S+)/.exec(l)?.[1] ?? 'none'),
    ['0.2500000000', '0.3333333333', '0.5000000000', 'none'],
  );
});

t.test('ClientIP affinity: recent checks ahead of the random rules, set in the DNAT rule', async (t) => {
  const eps = [ep('10.180.0.1', 80), ep('10.180.0.2', 80)];
  const nat = table(render([port({ endpoints: eps, affinityTimeoutSeconds: 10800 })]), 'nat');
  const svc = nat.filter((l) => l.startsWith('-A WEFT-SVC-XPGD46QRK7WJZT7O ') && l.includes(' -> '));
  const sep1 = endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.1:80');
  const sep2 = endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.2:80');
  t.strictSame(
    svc.map((l) => l.replace(/ -m comment --comment "[^"]*"/, '')),
    [
      `-A WEFT-SVC-XPGD46QRK7WJZT7O -m recent --name ${sep1} --rcheck --seconds 10800 --reap -j ${sep1}`,
      `-A WEFT-SVC-XPGD46QRK7WJZT7O -m recent --name ${sep2} --rcheck --seconds 10800 --reap -j ${sep2}`,
      `-A WEFT-SVC-XPGD46QRK7WJZT7O -m statistic --mode random --probability 0.5000000000 -j ${sep1}`,
      `-A WEFT-SVC-XPGD46QRK7WJZT7O -j ${sep2}`,
    ],
  );
  t.ok(
    nat.includes(
      `-A ${sep1} -m comment --comment ns1/svc1:p80 -m recent --name ${sep1} --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80`,
    ),
  );
  t.ok(
    nat.includes(`-A ${sep1} -m comment --comment ns1/svc1:p80 -s 10.180.0.1/32 -j WEFT-MARK-MASQ`),
    'hairpin',
  );
  const none = table(render([port({ endpoints: eps })]), 'nat');
  t.notOk(
    none.some((l) => l.includes('recent')),
    'no recent match without affinity',
  );
});

t.test('no endpoints: REJECT for every address, no nat rules', async (t) => {
  const lines = render([
    port({
      endpoints: [],
      nodePort: 30080,
      externalIPs: ['192.0.2.10'],
      loadBalancerIPs: ['203.0.113.7'],
      loadBalancerSourceRanges: ['198.51.100.0/24'],
    }),
  ]);
  const nat = table(lines, 'nat');
  t.notOk(
    nat.some((l) => l.includes('ns1/svc1')),
    'no nat rule mentions the service',
  );
  t.strictSame(
    table(lines, 'filter').filter((l) => l.includes('ns1/svc1')),
    [
      '-A WEFT-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT',
      '-A WEFT-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 192.0.2.10 --dport 80 -j REJECT',
      '-A WEFT-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 203.0.113.7 --dport 80 -j REJECT',
      '-A WEFT-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT',
    ],
  );
});

t.test('terminating endpoints only: serving ones are used; none serving is no endpoints', async (t) => {
  const serving = render([port({ endpoints: [ep('10.180.0.1', 80, { ready: false, terminating: true })] })]);
  t.ok(table(serving, 'nat').some((l) => l.includes('DNAT --to-destination 10.180.0.1:80')));
  const dead = render([
    port({ endpoints: [ep('10.180.0.1', 80, { ready: false, serving: false, terminating: true })] }),
  ]);
  t.ok(table(dead, 'filter').some((l) => l.endsWith('-j REJECT')));
});

t.test('Local policies without local endpoints: DROP, with the short-circuit kept', async (t) => {
  const lines = render([
    port({
      nodePort: 30080,
      externalIPs: ['192.0.2.10'],
      externalPolicyLocal: true,
      internalPolicyLocal: true,
      healthCheckNodePort: 32000,
      endpoints: [ep('10.180.0.1', 80)],
    }),
  ]);
  const filter = table(lines, 'filter').filter((l) => l.includes('ns1/svc1'));
  t.strictSame(filter, [
    '-A WEFT-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j DROP',
    '-A WEFT-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp -p tcp -d 192.0.2.10 --dport 80 -j DROP',
    '-A WEFT-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP',
    '-A WEFT-NODEPORTS -m comment --comment "ns1/svc1:p80 health check node port" -m tcp -p tcp --dport 32000 -j ACCEPT',
  ]);
  const nat = table(lines, 'nat');
  t.notOk(
    nat.some((l) => l.includes('cluster IP') && l.startsWith('-A WEFT-SERVICES')),
    'ClusterIP not captured',
  );
  t.ok(
    nat.some((l) => l.startsWith('-A WEFT-EXT-XPGD46QRK7WJZT7O') && l.includes('-s 10.0.0.0/8 -j WEFT-SVC-')),
    'pods still reach external addresses through the cluster chain',
  );
  t.notOk(
    nat.some((l) => l === '-A WEFT-EXT-XPGD46QRK7WJZT7O -j WEFT-SVL-XPGD46QRK7WJZT7O'),
    'no fall-through to an empty local chain',
  );
  t.notOk(
    nat.some((l) => l.startsWith(':WEFT-SVL-')),
    'no SVL chain',
  );

  const local = render([
    port({
      nodePort: 30080,
      externalPolicyLocal: true,
      internalPolicyLocal: true,
      endpoints: [ep('10.180.0.1', 80), ep('10.180.0.2', 80, { isLocal: true })],
    }),
  ]);
  const natL = table(local, 'nat');
  t.ok(natL.includes('-A WEFT-EXT-XPGD46QRK7WJZT7O -j WEFT-SVL-XPGD46QRK7WJZT7O'), 'external → local chain');
  t.ok(
    natL.some(
      (l) =>
        l.startsWith('-A WEFT-SERVICES') &&
        l.includes('cluster IP') &&
        l.endsWith('-j WEFT-SVL-XPGD46QRK7WJZT7O'),
    ),
    'ClusterIP → local chain',
  );
  t.equal(
    natL.filter((l) => l.startsWith('-A WEFT-SVL-') && l.includes(' -> ')).length,
    1,
    'one local endpoint',
  );
  t.equal(
    natL.filter((l) => l.startsWith('-A WEFT-SVC-') && l.includes(' -> ')).length,
    2,
    'cluster chain has both',
  );
  t.strictSame(
    table(local, 'filter').filter((l) => l.includes('ns1/svc1')),
    [],
    'nothing dropped',
  );
});

t.test('masquerade: off-cluster sources, --masquerade-all, none without a cluster CIDR', async (t) => {
  const rule = (cfg: Partial<IptablesRulesConfig>) =>
    table(render([port()], cfg), 'nat').filter(
      (l) => l.startsWith('-A WEFT-SVC-') && l.endsWith('-j WEFT-MARK-MASQ'),
    );
  t.strictSame(rule({}), [
    '-A WEFT-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j WEFT-MARK-MASQ',
  ]);
  t.strictSame(rule({ masqueradeAll: true }), [
    '-A WEFT-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j WEFT-MARK-MASQ',
  ]);
  t.strictSame(rule({ clusterCidr: undefined }), []);
  const noRandom = render([port()], { randomFully: false });
  t.ok(
    noRandom.some((l) => l.endsWith('-j MASQUERADE')),
    'plain MASQUERADE when --random-fully is missing',
  );
  const ext = table(render([port({ nodePort: 30080 })]), 'nat');
  t.ok(
    ext.some(
      (l) =>
        l.startsWith('-A WEFT-EXT-XPGD46QRK7WJZT7O') &&
        l.includes('masquerade traffic') &&
        l.endsWith('-j WEFT-MARK-MASQ'),
    ),
    'Cluster-policy external traffic is masqueraded',
  );
});

t.test('load balancer source ranges: FW chain and filter drop', async (t) => {
  const lines = render([
    port({ loadBalancerIPs: ['203.0.113.7'], loadBalancerSourceRanges: ['198.51.100.0/24', '192.0.2.0/24'] }),
  ]);
  const nat = table(lines, 'nat');
  t.ok(nat.some((l) => l.includes('loadbalancer IP') && l.endsWith('-j WEFT-FW-XPGD46QRK7WJZT7O')));
  t.equal(
    nat.filter((l) => l.startsWith('-A WEFT-FW-') && l.endsWith('-j WEFT-EXT-XPGD46QRK7WJZT7O')).length,
    2,
  );
  t.ok(
    table(lines, 'filter').some(
      (l) => l.startsWith('-A WEFT-PROXY-FIREWALL') && l.includes('-d 203.0.113.7') && l.endsWith('-j DROP'),
    ),
  );
  const open = render([port({ loadBalancerIPs: ['203.0.113.7'] })]);
  t.notOk(
    open.some((l) => l.includes('WEFT-FW-')),
    'no FW chain without source ranges',
  );
});

t.test('NodePort addresses: LOCAL by default, per CIDR when set, by family', async (t) => {
  const last = (lines: string[]) =>
    table(lines, 'nat').filter((l) => l.startsWith('-A WEFT-SERVICES') && l.endsWith('-j WEFT-NODEPORTS'));
  t.equal(last(render([port()])).length, 1);
  t.match(last(render([port()]))[0], /-m addrtype --dst-type LOCAL ! -d 127\.0\.0\.0\/8 -j WEFT-NODEPORTS$/);
  const per = last(render([port()], { nodePortAddresses: ['192.168.1.0/24', '10.1.0.0/16', 'fd00::/64'] }));
  t.equal(per.length, 2, 'IPv6 CIDR ignored in the IPv4 ruleset');
  t.match(per[0], /-d 192\.168\.1\.0\/24 -m addrtype --dst-type LOCAL -j WEFT-NODEPORTS$/);
  const nat = table(render([port()]), 'nat').filter((l) => l.startsWith('-A WEFT-SERVICES'));
  t.match(nat[nat.length - 1], /WEFT-NODEPORTS$/, 'NodePort jump is the last rule of WEFT-SERVICES');
});

t.test('IPv6 and SCTP/UDP', async (t) => {
  const lines = render(
    [
      port({
        family: 6,
        protocol: 'SCTP',
        clusterIP: 'fd00:96::10',
        endpoints: [ep('fd00:244::2', 9000)],
      }),
    ],
    { family: 6, clusterCidr: 'fd00:244::/56' },
  );
  const nat = table(lines, 'nat');
  const sep = endpointChainName('ns1/svc1:p80', 'sctp', '[fd00:244::2]:9000');
  t.ok(nat.includes(`-A ${sep} -m comment --comment ns1/svc1:p80 -s fd00:244::2/128 -j WEFT-MARK-MASQ`));
  t.ok(
    nat.includes(
      `-A ${sep} -m comment --comment ns1/svc1:p80 -m sctp -p sctp -j DNAT --to-destination [fd00:244::2]:9000`,
    ),
  );
  t.ok(nat.some((l) => l.endsWith('! -d ::1/128 -j WEFT-NODEPORTS')));
  const udp = table(render([port({ protocol: 'UDP' })]), 'nat');
  t.ok(udp.some((l) => l.includes('-m udp -p udp -d 172.30.0.41 --dport 80')));
});

t.test('stale chains: only weft per-service chains are deleted', async (t) => {
  const sp = port();
  const ports = new Map([[sp.id, sp]]);
  const stale = endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.9:80');
  const out = buildRestoreInput(CFG, {
    servicePorts: ports,
    changed: undefined,
    existingChains: [
      stale,
      'WEFT-SERVICES',
      'KUBE-SVC-XPGD46QRK7WJZT7O',
      'FLANNEL-POSTRTG',
      'WEFT-SVC-XPGD46QRK7WJZT7O',
    ],
  });
  t.strictSame(out.deletedChains, [stale]);
  t.ok(out.text.includes(`\n-X ${stale}\n`));
  t.notOk(out.text.includes('-X WEFT-SVC-XPGD46QRK7WJZT7O'), 'the active chain is kept');
  const gone = buildRestoreInput(CFG, {
    servicePorts: new Map(),
    changed: new Set([sp.id]),
    existingChains: out.activeChains,
  });
  t.strictSame(gone.deletedChains, [...out.activeChains].sort(), 'a removed service loses all its chains');
  t.notOk(gone.text.includes('-A WEFT-SVC-'));
});

t.test('iptables version and save parsing', async (t) => {
  t.strictSame(parseIptablesVersion('iptables v1.8.9 (nf_tables)\n'), {
    version: '1.8.9',
    wait: true,
    restoreWait: true,
    randomFully: true,
  });
  t.strictSame(parseIptablesVersion('iptables v1.6.1'), {
    version: '1.6.1',
    wait: true,
    restoreWait: false,
    randomFully: false,
  });
  t.equal(parseIptablesVersion('iptables v1.4.19').wait, false);
  t.throws(() => parseIptablesVersion('garbage'), /cannot read the iptables version/);
  const save = [
    '# Generated by iptables-save',
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':WEFT-SERVICES - [0:0]',
    '-A PREROUTING -m comment --comment "weft service portals" -j WEFT-SERVICES',
    'COMMIT',
    '*filter',
    ':INPUT ACCEPT [0:0]',
    'COMMIT',
  ].join('\n');
  t.strictSame(parseSave(save, 'nat'), {
    chains: ['PREROUTING', 'WEFT-SERVICES'],
    rules: ['-A PREROUTING -m comment --comment "weft service portals" -j WEFT-SERVICES'],
  });
  t.strictSame(parseSave(save, 'filter'), { chains: ['INPUT'], rules: [] });
});

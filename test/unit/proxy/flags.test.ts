import t from 'tap';
import { isWeftError } from '../../../src/errors/index.js';
import {
  PROXY_FLAGS,
  clusterCidrsOfSubnetEnv,
  parseBindAddress,
  parseDuration,
  parseProxyFlags,
  proxyHelp,
  resolveProxyConfig,
} from '../../../src/proxy/flags.js';

const noFile = { readFile: () => undefined, hostname: () => 'host-a' };

t.test('defaults', async (t) => {
  const f = parseProxyFlags([], {});
  t.match(f, {
    proxyMode: 'nftables',
    hostnameOverride: undefined,
    clusterCidr: [],
    subnetFile: '/run/flannel/subnet.env',
    masqueradeAll: false,
    nodeportAddresses: [],
    minSyncPeriod: '1s',
    syncPeriod: '30s',
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    healthcheckBindAddress: '127.0.0.1',
    udpTimeout: '1s',
    etcdEndpoints: ['http://127.0.0.1:2379'],
    registry: 'etcd',
    registryPrefix: '/weft',
    cleanup: false,
    logLevel: 'info',
  });
  const c = resolveProxyConfig(f, noFile);
  t.equal(c.nodeName, 'host-a');
  t.same([...c.clusterCidrs], [[4, undefined]], 'IPv4 only, no cluster CIDR');
  t.equal(c.clusterCidrSource, 'none');
  t.equal(c.minSyncPeriodMs, 1_000);
  t.equal(c.syncPeriodMs, 30_000);
  t.equal(c.udpTimeoutMs, 1_000);
  t.same(c.healthz, { host: '127.0.0.1', port: 10256 });
  t.same(c.metrics, { host: '127.0.0.1', port: 10249 });
});

t.test('command line and environment', async (t) => {
  const f = parseProxyFlags(
    [
      '--proxy-mode=iptables',
      '--hostname-override',
      'node-7',
      '--cluster-cidr=10.244.0.0/16,fd00:10:244::/56',
      '--masquerade-all',
      '--nodeport-addresses',
      '192.168.0.0/16',
      '--min-sync-period=500ms',
      '--sync-period=1m',
      '--healthz-bind-address=[::1]:9000',
      '--metrics-bind-address=0.0.0.0:0',
    ],
    { WEFT_PROXY_PROXY_MODE: 'userspace', WEFT_PROXY_UDP_TIMEOUT: '2s', WEFT_PROXY_REGISTRY_PREFIX: '/k' },
  );
  t.equal(f.proxyMode, 'iptables', 'the command line wins over the environment');
  t.equal(f.udpTimeout, '2s');
  t.equal(f.registryPrefix, '/k');
  const c = resolveProxyConfig(f, noFile);
  t.equal(c.nodeName, 'node-7');
  t.same(
    [...c.clusterCidrs],
    [
      [4, '10.244.0.0/16'],
      [6, 'fd00:10:244::/56'],
    ],
  );
  t.equal(c.clusterCidrSource, 'flag');
  t.equal(c.minSyncPeriodMs, 500);
  t.equal(c.syncPeriodMs, 60_000);
  t.same(c.healthz, { host: '::1', port: 9000 });
  t.equal(c.metrics, undefined, 'port 0 disables');
});

t.test('cluster CIDRs default to the flannel networks of subnet.env', async (t) => {
  const env = [
    'FLANNEL_NETWORK=10.244.0.0/16',
    'FLANNEL_SUBNET=10.244.3.1/24',
    'FLANNEL_IPV6_NETWORK=fd00:10:244::/56',
    'FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64',
    'FLANNEL_MTU=1450',
  ].join('\n');
  const f = parseProxyFlags(['--subnet-file=/x/subnet.env'], {});
  let read = '';
  const c = resolveProxyConfig(f, {
    readFile: (p) => {
      read = p;
      return env;
    },
    hostname: () => 'h',
  });
  t.equal(read, '/x/subnet.env');
  t.same(
    [...c.clusterCidrs.entries()],
    [
      [4, '10.244.0.0/16'],
      [6, 'fd00:10:244::/56'],
    ],
  );
  t.equal(c.clusterCidrSource, 'subnet-file');
  const flagWins = resolveProxyConfig(parseProxyFlags(['--cluster-cidr=10.1.0.0/16'], {}), {
    readFile: () => env,
    hostname: () => 'h',
  });
  t.same([...flagWins.clusterCidrs], [[4, '10.1.0.0/16']]);
  t.throws(() => clusterCidrsOfSubnetEnv('/x', 'FLANNEL_NETWORK=10.0.0.0/99\n'), {
    message: /\/x: field FLANNEL_NETWORK/,
  });
});

const bad: [string[], Record<string, string>, string, RegExp][] = [
  [['--proxy-mode=ipvs'], {}, 'proxy-mode', /must be one of nftables, iptables, userspace/],
  [[], { WEFT_PROXY_PROXY_MODE: 'ipvs' }, 'proxy-mode', /WEFT_PROXY_PROXY_MODE/],
  [['--cluster-cidr=10.244.0.0'], {}, 'cluster-cidr', /must be a CIDR/],
  [['--cluster-cidr=10.0.0.0/8,10.1.0.0/16'], {}, 'cluster-cidr', /at most one CIDR per IP family/],
  [['--nodeport-addresses=eth0'], {}, 'nodeport-addresses', /must be a CIDR/],
  [['--min-sync-period=1'], {}, 'min-sync-period', /must be a duration with a unit/],
  [['--sync-period=0'], {}, 'sync-period', /must be more than 0/],
  [['--min-sync-period=1m', '--sync-period=30s'], {}, 'min-sync-period', /must not exceed --sync-period/],
  [['--healthz-bind-address=localhost:10256'], {}, 'healthz-bind-address', /with an IP address/],
  [['--metrics-bind-address=127.0.0.1:99999'], {}, 'metrics-bind-address', /port in 0..65535/],
  [['--healthcheck-bind-address=any'], {}, 'healthcheck-bind-address', /must be an IP address/],
  [['--registry-prefix=weft'], {}, 'registry-prefix', /must start with "\/"/],
  [['--registry=mysql://x'], {}, 'registry', /must be "etcd" or redis/],
  [['--etcd-endpoints=ftp://x'], {}, 'etcd-endpoints', /http/],
  [['--etcd-keyfile=/k'], {}, 'etcd-certfile', /required when --etcd-keyfile is set/],
  [['--log-level=loud'], {}, 'log-level', /must be one of/],
  [['--proxy-mod=iptables'], {}, 'proxy-mod', /did you mean --proxy-mode/],
  [['extra'], {}, '', /takes no arguments/],
];
for (const [argv, env, field, msg] of bad) {
  t.test(`rejects ${[...argv, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)].join(' ')}`, async (t) => {
    try {
      parseProxyFlags(argv, env);
      t.fail('accepted');
    } catch (err) {
      t.ok(isWeftError(err), 'a WeftError');
      if (!isWeftError(err)) return;
      t.equal(err.code, 'WEFT_INVALID_ARGUMENT');
      if (field) t.equal(err.details.field, `--${field}`, 'names the flag');
      t.match(err.message, msg);
    }
  });
}

t.test('--help works despite bad flags and lists every flag with its default and variable', async (t) => {
  t.equal(parseProxyFlags(['--proxy-mode=x', '--help'], {}).help, true);
  t.equal(parseProxyFlags(['-h'], {}).help, true);
  const help = proxyHelp();
  t.match(help, /^Usage: weft-proxy \[flags\]\n/);
  for (const spec of Object.values(PROXY_FLAGS)) {
    t.match(help, new RegExp(`\\n {2}--${spec.name}[ ,\\n]`), `--${spec.name} listed`);
  }
  t.match(help, /--proxy-mode <mode>\n[^]*?\[default: nftables\] \[env: WEFT_PROXY_PROXY_MODE\]/);
  t.match(help, /--healthz-bind-address <ip:port>\n[^]*?\[default: 127\.0\.0\.1:10256\]/);
  t.notOk(
    help.split('\n').some((l) => l.length > 100),
    'no line longer than 100 columns',
  );
});

t.test('durations and bind addresses', async (t) => {
  t.equal(parseDuration('1s'), 1_000);
  t.equal(parseDuration('500ms'), 500);
  t.equal(parseDuration('1m30s'), 90_000);
  t.equal(parseDuration('1.5h'), 5_400_000);
  t.equal(parseDuration('0'), 0);
  t.ok(Number.isNaN(parseDuration('5')));
  t.ok(Number.isNaN(parseDuration('1 s')));
  t.same(parseBindAddress('10.0.0.1', 80), { host: '10.0.0.1', port: 80 });
  t.same(parseBindAddress('[fd00::1]:81', 80), { host: 'fd00::1', port: 81 });
  t.equal(parseBindAddress('', 80), undefined);
  t.equal(parseBindAddress('127.0.0.1:0', 80), undefined);
});

t.test('the Service address policy flags', async (t) => {
  const defaults = resolveProxyConfig(parseProxyFlags([], {}), noFile).servicePolicy;
  t.same(
    defaults,
    { serviceCidrs: ['10.96.0.0/12'], allowedExternalCidrs: [], allowedLoadBalancerCidrs: [] },
    'ClusterIPs from the kube default range, no externalIPs, LoadBalancer ingress anywhere',
  );
  const set = resolveProxyConfig(
    parseProxyFlags(
      [
        '--service-cidr=10.96.0.0/16,fd00:96::/112',
        '--allowed-external-cidrs=192.0.2.0/24,2001:db8::/64',
        '--allowed-loadbalancer-cidrs',
        '203.0.113.0/24',
      ],
      { WEFT_PROXY_ALLOWED_LOADBALANCER_CIDRS: '198.51.100.0/24' },
    ),
    noFile,
  ).servicePolicy;
  t.same(set, {
    serviceCidrs: ['10.96.0.0/16', 'fd00:96::/112'],
    allowedExternalCidrs: ['192.0.2.0/24', '2001:db8::/64'],
    allowedLoadBalancerCidrs: ['203.0.113.0/24'],
  });
  const env = resolveProxyConfig(
    parseProxyFlags([], { WEFT_PROXY_ALLOWED_EXTERNAL_CIDRS: '192.0.2.0/24' }),
    noFile,
  ).servicePolicy;
  t.same(env.allowedExternalCidrs, ['192.0.2.0/24'], 'from the environment');
  for (const bad of [
    ['--service-cidr=10.96.0.0/12,10.0.0.0/8'],
    ['--service-cidr=nope'],
    ['--allowed-external-cidrs=1.2.3/99'],
    ['--allowed-loadbalancer-cidrs=x'],
  ]) {
    t.throws(() => parseProxyFlags(bad, {}), { code: 'WEFT_INVALID_ARGUMENT' }, bad.join(' '));
  }
  t.match(proxyHelp(), /--allowed-external-cidrs/);
  t.match(proxyHelp(), /--allowed-loadbalancer-cidrs/);
  t.match(proxyHelp(), /--service-cidr <cidr,...>/);
});

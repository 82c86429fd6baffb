import t from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import {
  boolFlag,
  defineFlags,
  envVarName,
  intFlag,
  listFlag,
  parseFlags,
  stringFlag,
} from '../../../src/cli/flag-parser.js';
import {
  FLANNELD_FLAGS,
  type FlanneldFlags,
  flanneldHelp,
  parseFlanneldFlags,
} from '../../../src/flanneld/flags.js';

const DEFAULTS: FlanneldFlags = {
  etcdEndpoints: ['http://127.0.0.1:2379'],
  etcdPrefix: '/coreos.com/network',
  etcdKeyfile: undefined,
  etcdCertfile: undefined,
  etcdCafile: undefined,
  etcdUsername: undefined,
  etcdPassword: undefined,
  iface: [],
  ifaceRegex: [],
  ifaceCanReach: undefined,
  publicIp: undefined,
  publicIpv6: undefined,
  subnetFile: '/run/flannel/subnet.env',
  subnetLeaseRenewMargin: 60,
  ipMasq: false,
  healthzIp: '127.0.0.1',
  healthzPort: 0,
  nodeName: undefined,
  statusPrefix: '/weft/status',
  iptablesResync: 5,
  iptablesForwardRules: true,
  registry: 'etcd',
  firewall: 'iptables',
  cleanup: false,
  logLevel: 'info',
  help: false,
  version: false,
};

t.test('defaults, with no argv and no environment', async (t) => {
  t.strictSame(parseFlanneldFlags([], {}), DEFAULTS);
});

t.test('a default list is copied, not shared', async (t) => {
  const a = parseFlanneldFlags([], {});
  a.etcdEndpoints.push('http://x:1');
  t.strictSame(parseFlanneldFlags([], {}).etcdEndpoints, ['http://127.0.0.1:2379']);
});

t.test('argv forms', async (t) => {
  const cases: [string[], Partial<FlanneldFlags>][] = [
    [
      ['--etcd-endpoints=http://a:2379,https://b:2379'],
      { etcdEndpoints: ['http://a:2379', 'https://b:2379'] },
    ],
    [['--etcd-endpoints', 'http://a:2379'], { etcdEndpoints: ['http://a:2379'] }],
    [
      ['--etcd-endpoints=http://a:1', '--etcd-endpoints', 'http://b:2'],
      { etcdEndpoints: ['http://a:1', 'http://b:2'] },
    ],
    [['--etcd-endpoints=http://a:1, http://b:2,'], { etcdEndpoints: ['http://a:1', 'http://b:2'] }],
    [['--etcd-prefix=/a', '--etcd-prefix', '/b'], { etcdPrefix: '/b' }],
    [
      ['--etcd-certfile=/c.pem', '--etcd-keyfile', '/k.pem', '--etcd-cafile=/ca.pem'],
      { etcdCertfile: '/c.pem', etcdKeyfile: '/k.pem', etcdCafile: '/ca.pem' },
    ],
    [['--etcd-username=u', '--etcd-password=p=w'], { etcdUsername: 'u', etcdPassword: 'p=w' }],
    [['--iface', 'eth0', '--iface=10.0.0.1'], { iface: ['eth0', '10.0.0.1'] }],
    // One --iface value is one candidate, as in flannel; only the environment splits on commas.
    [['--iface=eth0,eth1'], { iface: ['eth0,eth1'] }],
    [['--iface-regex=^eth[0-9]{1,2}$', '--iface-regex', '^en'], { ifaceRegex: ['^eth[0-9]{1,2}$', '^en'] }],
    [['--iface-can-reach=192.0.2.1'], { ifaceCanReach: '192.0.2.1' }],
    [
      ['--public-ip', '192.0.2.7', '--public-ipv6=2001:db8::7'],
      { publicIp: '192.0.2.7', publicIpv6: '2001:db8::7' },
    ],
    [['--subnet-file=/tmp/s.env'], { subnetFile: '/tmp/s.env' }],
    [['--subnet-lease-renew-margin', '1'], { subnetLeaseRenewMargin: 1 }],
    [['--subnet-lease-renew-margin=1439'], { subnetLeaseRenewMargin: 1439 }],
    [['--ip-masq'], { ipMasq: true }],
    [['--ip-masq=true'], { ipMasq: true }],
    [['--ip-masq=false'], { ipMasq: false }],
    [['-ip-masq'], { ipMasq: true }],
    [['--ip-masq=1', '--cleanup=T'], { ipMasq: true, cleanup: true }],
    [['--iptables-forward-rules=false'], { iptablesForwardRules: false }],
    [['--healthz-ip=::1', '--healthz-port', '8471'], { healthzIp: '::1', healthzPort: 8471 }],
    [['--iptables-resync=30'], { iptablesResync: 30 }],
    [['--registry=redis://10.0.0.5:6379/2'], { registry: 'redis://10.0.0.5:6379/2' }],
    [['--registry', 'redis://redis.local'], { registry: 'redis://redis.local' }],
    [['--firewall', 'nftables'], { firewall: 'nftables' }],
    [['--log-level=debug'], { logLevel: 'debug' }],
    [['--cleanup'], { cleanup: true }],
    [['-h'], { help: true }],
    [['--help'], { help: true }],
    [['--version'], { version: true }],
  ];
  for (const [argv, want] of cases) {
    t.strictSame(parseFlanneldFlags(argv, {}), { ...DEFAULTS, ...want }, argv.join(' '));
  }
});

t.test('environment forms', async (t) => {
  const cases: [NodeJS.ProcessEnv, Partial<FlanneldFlags>][] = [
    [
      { FLANNELD_ETCD_ENDPOINTS: 'http://a:2379,http://b:2379' },
      { etcdEndpoints: ['http://a:2379', 'http://b:2379'] },
    ],
    [{ FLANNELD_ETCD_PREFIX: '/my/net' }, { etcdPrefix: '/my/net' }],
    [{ FLANNELD_ETCD_PASSWORD: 's3cret' }, { etcdPassword: 's3cret' }],
    [{ FLANNELD_IFACE: 'eth0,eth1' }, { iface: ['eth0', 'eth1'] }],
    [{ FLANNELD_IFACE_REGEX: '^eth,^en' }, { ifaceRegex: ['^eth', '^en'] }],
    [{ FLANNELD_PUBLIC_IP: '192.0.2.9' }, { publicIp: '192.0.2.9' }],
    [{ FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '30' }, { subnetLeaseRenewMargin: 30 }],
    [{ FLANNELD_IP_MASQ: 'true' }, { ipMasq: true }],
    [{ FLANNELD_IP_MASQ: 'FALSE' }, { ipMasq: false }],
    [{ FLANNELD_IPTABLES_FORWARD_RULES: 'false' }, { iptablesForwardRules: false }],
    [{ FLANNELD_HEALTHZ_PORT: '8471' }, { healthzPort: 8471 }],
    [
      { FLANNELD_FIREWALL: 'nftables', FLANNELD_REGISTRY: 'redis://r:6379' },
      { firewall: 'nftables', registry: 'redis://r:6379' },
    ],
    [
      { FLANNELD_LOG_LEVEL: 'warn', FLANNELD_CLEANUP: '1' },
      { logLevel: 'warn', cleanup: true },
    ],
    // Empty variables are unset ones, as in flannel (Go's flagutil.SetFlagsFromEnv).
    [{ FLANNELD_ETCD_ENDPOINTS: '', FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '' }, {}],
    // --help and --version are command-line only; other prefixes are not ours.
    [{ FLANNELD_HELP: 'true', FLANNELD_VERSION: 'true', FLANNEL_IP_MASQ: 'true', IP_MASQ: 'true' }, {}],
  ];
  for (const [env, want] of cases) {
    t.strictSame(parseFlanneldFlags([], env), { ...DEFAULTS, ...want }, JSON.stringify(env));
  }
});

t.test('argv wins over env, env over defaults', async (t) => {
  const env = {
    FLANNELD_IFACE: 'eth0,eth1',
    FLANNELD_IP_MASQ: 'true',
    FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '30',
    FLANNELD_ETCD_ENDPOINTS: 'http://env:2379',
    FLANNELD_ETCD_PREFIX: '/env',
  };
  t.strictSame(
    parseFlanneldFlags(['--iface=eth9', '--ip-masq=false', '--subnet-lease-renew-margin=10'], env),
    {
      ...DEFAULTS,
      iface: ['eth9'],
      ipMasq: false,
      subnetLeaseRenewMargin: 10,
      etcdEndpoints: ['http://env:2379'],
      etcdPrefix: '/env',
    },
  );
  // As in flannel, a variable whose flag is on the command line is not read, not even validated.
  t.equal(
    parseFlanneldFlags(['--subnet-lease-renew-margin=10'], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: 'x' })
      .subnetLeaseRenewMargin,
    10,
  );
});

/** [argv, env, flag named, exact message or pattern]. */
const INVALID: [string[], NodeJS.ProcessEnv, string, string | RegExp][] = [
  [
    ['--subnet-lease-renew-margin=0'],
    {},
    'subnet-lease-renew-margin',
    'flag --subnet-lease-renew-margin: must be an integer in 1..1439, got "0"',
  ],
  [
    ['--subnet-lease-renew-margin', '1440'],
    {},
    'subnet-lease-renew-margin',
    'flag --subnet-lease-renew-margin: must be an integer in 1..1439, got "1440"',
  ],
  [
    ['--subnet-lease-renew-margin=1.5'],
    {},
    'subnet-lease-renew-margin',
    /must be an integer in 1\.\.1439, got "1\.5"$/,
  ],
  [
    [],
    { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: 'abc' },
    'subnet-lease-renew-margin',
    'flag --subnet-lease-renew-margin: must be an integer in 1..1439, got "abc" (from FLANNELD_SUBNET_LEASE_RENEW_MARGIN)',
  ],
  [
    ['--etcd-endpoints=127.0.0.1:2379'],
    {},
    'etcd-endpoints',
    'flag --etcd-endpoints: must be an http:// or https:// URL, got "127.0.0.1:2379"',
  ],
  [['--etcd-endpoints='], {}, 'etcd-endpoints', 'flag --etcd-endpoints: must not be empty'],
  [
    [],
    { FLANNELD_ETCD_ENDPOINTS: 'http://a:1,ftp://b' },
    'etcd-endpoints',
    /got "ftp:\/\/b" \(from FLANNELD_ETCD_ENDPOINTS\)$/,
  ],
  [
    ['--etcd-prefix=coreos.com/network'],
    {},
    'etcd-prefix',
    'flag --etcd-prefix: must start with "/", got "coreos.com/network"',
  ],
  [['--etcd-prefix=/coreos.com/network/'], {}, 'etcd-prefix', /must not end with "\/"/],
  [['--etcd-keyfile='], {}, 'etcd-keyfile', 'flag --etcd-keyfile: must not be empty, got ""'],
  [
    ['--etcd-certfile=/c.pem'],
    {},
    'etcd-keyfile',
    'flag --etcd-keyfile: required when --etcd-certfile is set',
  ],
  [
    ['--etcd-keyfile=/k.pem'],
    {},
    'etcd-certfile',
    'flag --etcd-certfile: required when --etcd-keyfile is set',
  ],
  [['--etcd-cafile', ''], {}, 'etcd-cafile', /must not be empty/],
  [['--etcd-username= '], {}, 'etcd-username', /must not be empty/],
  [['--etcd-password'], {}, 'etcd-password', 'flag --etcd-password: needs a value'],
  [['--iface', '--ip-masq'], {}, 'iface', 'flag --iface: needs a value'],
  [
    ['--iface-regex=eth(['],
    {},
    'iface-regex',
    /^flag --iface-regex: must be a valid regular expression .*, got "eth\(\["$/,
  ],
  [
    ['--iface-can-reach=example.com'],
    {},
    'iface-can-reach',
    'flag --iface-can-reach: must be an IP address, got "example.com"',
  ],
  [
    ['--public-ip=2001:db8::1'],
    {},
    'public-ip',
    'flag --public-ip: must be an IPv4 address, got "2001:db8::1"',
  ],
  [
    [],
    { FLANNELD_PUBLIC_IPV6: '192.0.2.1' },
    'public-ipv6',
    /must be an IPv6 address, got "192\.0\.2\.1" \(from FLANNELD_PUBLIC_IPV6\)$/,
  ],
  [['--subnet-file='], {}, 'subnet-file', /must not be empty/],
  [['--ip-masq=maybe'], {}, 'ip-masq', 'flag --ip-masq: must be true or false, got "maybe"'],
  [[], { FLANNELD_IP_MASQ: 'yes please' }, 'ip-masq', /must be true or false/],
  [['--node-name=a/b'], {}, 'node-name', 'flag --node-name: must be a non-empty name without "/", got "a/b"'],
  [
    ['--status-prefix=weft'],
    {},
    'status-prefix',
    'flag --status-prefix: must start with "/" (or be empty), got "weft"',
  ],
  [['--healthz-ip=localhost'], {}, 'healthz-ip', 'flag --healthz-ip: must be an IP address, got "localhost"'],
  [
    ['--healthz-port=65536'],
    {},
    'healthz-port',
    'flag --healthz-port: must be an integer in 0..65535, got "65536"',
  ],
  [['--iptables-resync=0'], {}, 'iptables-resync', 'flag --iptables-resync: must be an integer ≥ 1, got "0"'],
  [['--iptables-forward-rules=nope'], {}, 'iptables-forward-rules', /must be true or false/],
  [
    ['--registry=consul'],
    {},
    'registry',
    'flag --registry: must be "etcd" or redis://host[:port][/db], got "consul"',
  ],
  [
    ['--registry=redis://h:6379/x'],
    {},
    'registry',
    /with db a non-negative integer, got "redis:\/\/h:6379\/x"$/,
  ],
  [['--firewall=ipfw'], {}, 'firewall', 'flag --firewall: must be one of iptables, nftables, got "ipfw"'],
  [['--cleanup=later'], {}, 'cleanup', /must be true or false/],
  [
    ['--log-level=loud'],
    {},
    'log-level',
    /must be one of trace, debug, info, warn, error, fatal, silent, got "loud"/,
  ],
  [['--help=please'], {}, 'help', /must be true or false/],
];

t.test('every validation error is INVALID_ARGUMENT and names its flag', async (t) => {
  const covered = new Set<string>();
  for (const [argv, env, flag, message] of INVALID) {
    covered.add(flag);
    const what = `${argv.join(' ')} ${JSON.stringify(env)}`;
    let caught: unknown;
    try {
      parseFlanneldFlags(argv, env);
    } catch (err) {
      caught = err;
    }
    if (!isWeftError(caught, ErrorCodes.INVALID_ARGUMENT)) {
      t.fail(`${what}: expected INVALID_ARGUMENT, got ${String(caught)}`);
      continue;
    }
    t.ok(
      caught.message.startsWith(`flag --${flag}: `),
      `${what}: message names --${flag}: ${caught.message}`,
    );
    t.equal(caught.details.field, `--${flag}`, `${what}: details.field`);
    if (typeof message === 'string') t.equal(caught.message, message, what);
    else t.match(caught.message, message, what);
  }
  // --version takes a bool; `--version=1` is valid, `--version=x` is not.
  t.throws(() => parseFlanneldFlags(['--version=x'], {}), {
    message: /^flag --version: must be true or false/,
  });
  covered.add('version');
  const all = Object.values(FLANNELD_FLAGS).map((s) => s.name);
  t.strictSame(
    all.filter((n) => !covered.has(n)),
    [],
    'every flag has an invalid case',
  );
});

t.test('unknown flags and arguments are named', async (t) => {
  t.throws(() => parseFlanneldFlags(['--bogus'], {}), {
    code: ErrorCodes.INVALID_ARGUMENT,
    message: 'unknown flag --bogus',
  });
  t.throws(() => parseFlanneldFlags(['--ifac=eth0'], {}), {
    message: 'unknown flag --ifac (did you mean --iface?)',
  });
  t.throws(() => parseFlanneldFlags(['--kube-subnet-mgr'], {}), {
    message: /^unknown flag --kube-subnet-mgr/,
  });
  t.throws(() => parseFlanneldFlags(['--ip-masq', 'false'], {}), {
    message: 'weft-flanneld takes no arguments, got "false" (a bool flag takes its value as --flag=false)',
  });
  t.throws(() => parseFlanneldFlags(['--', '--ip-masq'], {}), {
    message: /takes no arguments, got "--ip-masq"/,
  });
});

t.test('secrets are not echoed', async (t) => {
  const err = t.throws(() =>
    parseFlanneldFlags(['--registry=redis://:hunter2@h:6379/x'], {}),
  ) as unknown as Error;
  t.notMatch(err.message, /hunter2/);
  t.match(err.message, /redis:\/\/:\*\*\*@h:6379\/x/);
  t.notMatch(flanneldHelp(), /s3cret/);
});

t.test('--help and --version work despite other errors', async (t) => {
  const env = { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '0' };
  t.equal(parseFlanneldFlags(['--help'], env).help, true);
  t.equal(parseFlanneldFlags(['--bogus', '--version'], env).version, true);
  t.throws(() => parseFlanneldFlags([], env));
});

t.test('help lists every flag with its default and variable', async (t) => {
  const help = flanneldHelp();
  t.match(help, /^Usage: weft-flanneld \[flags\]\n/);
  const blocks = help.split(/\n(?= {2}-)/).slice(1);
  const byFlag = new Map(blocks.map((b) => [/^ {2}(-\S+?),?(?: |$)/m.exec(b)?.[1], b]));
  const expected: Record<string, [string, string | undefined]> = {
    'etcd-endpoints': ['http://127.0.0.1:2379', 'FLANNELD_ETCD_ENDPOINTS'],
    'etcd-prefix': ['/coreos.com/network', 'FLANNELD_ETCD_PREFIX'],
    'etcd-keyfile': ['none', 'FLANNELD_ETCD_KEYFILE'],
    'etcd-certfile': ['none', 'FLANNELD_ETCD_CERTFILE'],
    'etcd-cafile': ['none', 'FLANNELD_ETCD_CAFILE'],
    'etcd-username': ['none', 'FLANNELD_ETCD_USERNAME'],
    'etcd-password': ['none', 'FLANNELD_ETCD_PASSWORD'],
    iface: ['none', 'FLANNELD_IFACE'],
    'iface-regex': ['none', 'FLANNELD_IFACE_REGEX'],
    'iface-can-reach': ['none', 'FLANNELD_IFACE_CAN_REACH'],
    'public-ip': ['none', 'FLANNELD_PUBLIC_IP'],
    'public-ipv6': ['none', 'FLANNELD_PUBLIC_IPV6'],
    'subnet-file': ['/run/flannel/subnet.env', 'FLANNELD_SUBNET_FILE'],
    'subnet-lease-renew-margin': ['60', 'FLANNELD_SUBNET_LEASE_RENEW_MARGIN'],
    'ip-masq': ['false', 'FLANNELD_IP_MASQ'],
    'healthz-ip': ['127.0.0.1', 'FLANNELD_HEALTHZ_IP'],
    'healthz-port': ['0', 'FLANNELD_HEALTHZ_PORT'],
    'node-name': ['none', 'FLANNELD_NODE_NAME'],
    'status-prefix': ['/weft/status', 'FLANNELD_STATUS_PREFIX'],
    'iptables-resync': ['5', 'FLANNELD_IPTABLES_RESYNC'],
    'iptables-forward-rules': ['true', 'FLANNELD_IPTABLES_FORWARD_RULES'],
    registry: ['etcd', 'FLANNELD_REGISTRY'],
    firewall: ['iptables', 'FLANNELD_FIREWALL'],
    cleanup: ['false', 'FLANNELD_CLEANUP'],
    'log-level': ['info', 'FLANNELD_LOG_LEVEL'],
    help: ['false', undefined],
    version: ['false', undefined],
  };
  t.strictSame(
    Object.keys(expected).sort(),
    Object.values(FLANNELD_FLAGS)
      .map((s) => s.name)
      .sort(),
  );
  for (const [name, [def, env]] of Object.entries(expected)) {
    const block = byFlag.get(`--${name}`);
    if (!block) {
      t.fail(`--${name} missing from help`);
      continue;
    }
    const facts = env ? `[default: ${def}] [env: ${env}]` : `[default: ${def}]`;
    t.ok(block.trimEnd().endsWith(facts), `--${name}: ${facts}`);
  }
  t.match(byFlag.get('--help'), /^ {2}--help, -h\n/);
  t.match(byFlag.get('--subnet-lease-renew-margin'), /Range: 1\.\.1439\./);
  t.match(byFlag.get('--firewall'), /One\s+of: iptables, nftables\./);
  t.notOk(
    help.split('\n').some((l) => l.length > 100),
    'no line longer than 100 columns',
  );
});

t.test('generic parser: table checks and other programs', async (t) => {
  t.throws(
    () =>
      defineFlags({
        a: boolFlag({ name: 'x', description: '' }),
        b: boolFlag({ name: 'x', description: '' }),
      }),
    /duplicate flag name "x"/,
  );
  t.throws(() => defineFlags({ a: boolFlag({ name: 'Bad_Name', description: '' }) }), /bad flag name/);
  t.throws(() => defineFlags({ a: boolFlag({ name: 'A', description: '' }) }), /bad flag name "A"/);
  t.throws(
    () => defineFlags({ a: boolFlag({ name: 'all', aliases: ['AB'], description: '' }) }),
    /bad flag name "AB"/,
  );
  t.ok(
    defineFlags({ a: boolFlag({ name: 'all', aliases: ['A'], description: '' }) }),
    'a capital one-letter alias',
  );
  t.throws(
    () => defineFlags({ a: intFlag({ name: 'n', description: '', default: 0, min: 1 }) }),
    /default of --n/,
  );
  t.throws(
    () => defineFlags({ a: stringFlag({ name: 's', description: '', default: '', validate: () => 'no' }) }),
    /default of --s no/,
  );
  const table = defineFlags({
    names: listFlag({ name: 'name', description: 'names', nonEmpty: false }),
    count: intFlag({ name: 'count', description: 'n', default: 1 }),
    label: stringFlag({ name: 'label', description: 'l' }),
  });
  t.equal(envVarName('WEFT_PROXY', 'cluster-cidr'), 'WEFT_PROXY_CLUSTER_CIDR');
  const r = parseFlags(
    table,
    ['--name=a', 'pos', '--count', '-3', '--', '--name=b'],
    { X_COUNT: '7', X_LABEL: 'e' },
    { envPrefix: 'X' },
  );
  t.strictSame(r.values, { names: ['a'], count: -3, label: 'e' });
  t.strictSame(r.sources, { names: 'argv', count: 'argv', label: 'env' });
  t.strictSame(r.positionals, ['pos', '--name=b']);
  // Without an env prefix, nothing is read from the environment.
  t.strictSame(parseFlags(table, [], { X_COUNT: '7' }).values, { names: [], count: 1, label: undefined });
});

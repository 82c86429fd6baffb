/** The API server's name rules, value by value: what each rule accepts and refuses, lengths at the edge. */
import t from 'tap';
import {
  dns1035LabelProblem,
  dns1123LabelProblem,
  dns1123SubdomainProblem,
  ianaSvcNameProblem,
  labelValueProblem,
  qualifiedNameProblem,
  specialAddressProblem,
} from '../../../src/k8s/index.js';

const INJECTION = 'q\n-I INPUT 1 -s 6.6.6.6 -j ACCEPT\n#';
const a = (n: number) => 'a'.repeat(n);
const subdomain253 = `${a(63)}.${a(63)}.${a(63)}.${a(61)}`;

const rules: [string, (v: string) => string | undefined, string[], string[]][] = [
  [
    'DNS-1123 label',
    dns1123LabelProblem,
    ['a', '0', 'kube-system', '9abc', a(63)],
    ['', a(64), 'A', 'a.b', '-a', 'a-', 'a_b', 'a b', 'a;b', INJECTION, 'é', 'a\u202e'],
  ],
  [
    'DNS-1035 label',
    dns1035LabelProblem,
    ['a', 'web', 'a-1', a(63)],
    ['', '1a', a(64), 'Web', 'a.b', 'a-', INJECTION],
  ],
  [
    'DNS-1123 subdomain',
    dns1123SubdomainProblem,
    ['a', 'web-abc12', 'node-1.example.com', '0.1', subdomain253],
    ['', `${subdomain253}a`, 'a..b', '.a', 'a.', 'A.b', 'a_b', 'a/b', INJECTION],
  ],
  [
    'IANA_SVC_NAME',
    ianaSvcNameProblem,
    ['http', 'h2c', 'a-b', 'x'.repeat(15), '80-http'],
    ['', 'x'.repeat(16), '8080', 'a--b', '-a', 'a-', 'HTTP', 'a_b', 'a.b', INJECTION],
  ],
  [
    'qualified name',
    qualifiedNameProblem,
    ['app', 'kubernetes.io/service-name', 'A_b.c-D', `${subdomain253}/${a(63)}`, 'Z'],
    ['', '/a', 'a/', 'a/b/c', 'Example.com/a', `p/${a(64)}`, '_a', 'a_', 'a b', INJECTION],
  ],
  [
    'label value',
    labelValueProblem,
    ['', 'web', 'v1.2_3-x', 'Z', a(63)],
    [a(64), '-a', 'a-', 'a b', 'a/b', 'a:b', INJECTION, 'é'],
  ],
];

for (const [rule, problem, good, bad] of rules) {
  t.test(rule, async (t) => {
    for (const v of good) t.equal(problem(v), undefined, `accepts ${JSON.stringify(v)} (${v.length})`);
    for (const v of bad) t.type(problem(v), 'string', `refuses ${JSON.stringify(v)}`);
  });
}

t.test('addresses no Service may claim', async (t) => {
  const special = [
    '0.0.0.0',
    '127.0.0.1',
    '127.255.0.9',
    '169.254.169.254',
    '224.0.0.1',
    '239.1.2.3',
    '255.255.255.255',
    '::',
    '::1',
    'fe80::1',
    'ff02::1',
    '::ffff:127.0.0.1',
    '::ffff:169.254.169.254',
  ];
  for (const ip of special) t.type(specialAddressProblem(ip), 'string', `${ip} refused`);
  for (const ip of ['10.0.0.1', '192.0.2.10', '203.0.113.7', '2001:db8::1', 'fd00::10', '::ffff:10.0.0.1'])
    t.equal(specialAddressProblem(ip), undefined, `${ip} accepted`);
});

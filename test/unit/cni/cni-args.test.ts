/** CNI_ARGS as libcni reads it, and the pod identity weft-cni takes from it. */
import t from 'tap';
import { CniErrorCodes, parseCniArgs, podIdentity } from '../../../src/cni/index.js';

const KUBELET =
  'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1';

t.test("kubelet's CNI_ARGS give the pod", async (t) => {
  t.strictSame(podIdentity(parseCniArgs(KUBELET)), { namespace: 'default', name: 'web-0' });
  t.strictSame(
    podIdentity(parseCniArgs('K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns.x-1')),
    { namespace: 'kube-system', name: 'coredns.x-1' },
    'known keys need no IgnoreUnknown; a name may be a DNS subdomain',
  );
});

t.test('no pod: absent, empty, or no K8S_POD_* keys', async (t) => {
  t.equal(podIdentity(parseCniArgs(undefined)), undefined);
  t.equal(podIdentity(parseCniArgs('')), undefined);
  t.equal(podIdentity(parseCniArgs('IgnoreUnknown=true;FOO=bar')), undefined);
});

t.test('malformed CNI_ARGS are refused naming CNI_ARGS', async (t) => {
  for (const [args, why] of [
    ['K8S_POD_NAME', /invalid pair "K8S_POD_NAME"/],
    ['K8S_POD_NAME=a=b', /invalid pair/],
    ['K8S_POD_NAME=a;', /invalid pair ""/],
    ['FOO=bar', /unknown key "FOO"/],
    ['IgnoreUnknown=0;FOO=bar', /unknown key "FOO"/],
    ['IgnoreUnknown=maybe', /IgnoreUnknown: "maybe" is not a boolean/],
    ['K8S_POD_NAME=a;K8S_POD_NAME=b', /"K8S_POD_NAME" is given twice/],
    [Array.from({ length: 65 }, (_, i) => `K${i}=v`).join(';'), /more than 64 pairs/],
  ] as const) {
    t.throws(
      () => parseCniArgs(args),
      { code: CniErrorCodes.INVALID_ENV, message: /^invalid environment variable CNI_ARGS: / },
      `refused: ${args.slice(0, 40)}`,
    );
    t.throws(() => parseCniArgs(args), { message: why });
  }
  t.ok(parseCniArgs('IgnoreUnknown=TRUE;X=y').has('X'), 'IgnoreUnknown is case-insensitive');
});

t.test('bad pod names are refused naming the variable', async (t) => {
  const cases: [string, RegExp][] = [
    ['K8S_POD_NAMESPACE=Default;K8S_POD_NAME=web', /K8S_POD_NAMESPACE "Default" must be a DNS-1123 label/],
    ['K8S_POD_NAMESPACE=a.b;K8S_POD_NAME=web', /K8S_POD_NAMESPACE "a.b" must be a DNS-1123 label/],
    [`K8S_POD_NAMESPACE=${'a'.repeat(64)};K8S_POD_NAME=web`, /K8S_POD_NAMESPACE .* no more than 63/],
    ['K8S_POD_NAMESPACE=default;K8S_POD_NAME=web_1', /K8S_POD_NAME "web_1" must be a DNS-1123 subdomain/],
    ['K8S_POD_NAMESPACE=default;K8S_POD_NAME=../x', /K8S_POD_NAME "..\/x"/],
    ['K8S_POD_NAMESPACE=default;K8S_POD_NAME=a\u001b[31m', /K8S_POD_NAME "a\\u001b\[31m"/],
    ['K8S_POD_NAMESPACE=default;K8S_POD_NAME=', /K8S_POD_NAME "" must not be empty/],
    [
      `K8S_POD_NAMESPACE=default;K8S_POD_NAME=${'a'.repeat(300)}`,
      /K8S_POD_NAME "a{100}…" must be no more than 253/,
    ],
    ['K8S_POD_NAME=web', /K8S_POD_NAMESPACE is required with K8S_POD_NAME/],
    ['K8S_POD_NAMESPACE=default', /K8S_POD_NAME is required with K8S_POD_NAMESPACE/],
  ];
  for (const [args, why] of cases) {
    t.throws(
      () => podIdentity(parseCniArgs(args)),
      { code: CniErrorCodes.INVALID_ENV, message: why },
      args.slice(0, 60),
    );
  }
});

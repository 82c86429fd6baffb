/**
 * Pods, Nodes and pod attachments at the door: kubectl's own `run` output parses, what a real
 * API server returns (status, conditions, podIPs, deletionTimestamp) is read, and hostile input
 * (names, labels, 10,000 labels, broken JSON, oversized text, bad addresses) is refused with an
 * error naming the key and the field.
 */
import { readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import {
  MAX_LABELS,
  MAX_OBJECT_BYTES,
  effectivePod,
  nodeKey,
  parseNode,
  parsePod,
  parsePodAttachment,
  podAttachmentKey,
  podAttachmentObject,
  podKey,
  type PodAttachment,
  type PodSpec,
} from '../../../src/k8s/index.js';
import { parseManifests } from '../../../src/weftctl/manifest.js';

const fixture = (name: string) =>
  readFileSync(new URL(`../../fixtures/k8s/${name}`, import.meta.url), 'utf8');

/** The object of a kubectl fixture, through weftctl's manifest reader (YAML → JSON). */
function manifest(name: string): { namespace: string; name: string; object: Record<string, unknown> } {
  const { objects, errors } = parseManifests(fixture(name));
  if (errors.length) throw errors[0]?.error;
  const o = objects[0];
  if (!o) throw new Error('no object');
  return o;
}

const KEY = podKey('/weft', 'default', 'web');

function pod(over: Record<string, unknown> = {}, spec: Record<string, unknown> = {}, status?: unknown) {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'default', labels: { app: 'web' }, ...over },
    spec: { containers: [{ name: 'web', image: 'nginx', ports: [{ containerPort: 8080 }] }], ...spec },
    ...(status === undefined ? {} : { status }),
  });
}

function rejects(t: Test, fn: () => unknown, key: string, field: string, message?: RegExp): void {
  try {
    fn();
    t.fail(`expected an error for ${field}`);
  } catch (err) {
    t.ok(isWeftError(err, ErrorCodes.INVALID_VALUE), `INVALID_VALUE: ${String(err)}`);
    const e = err as Error & { details: { field: string; object: string } };
    t.equal(e.details.object, key, 'names the key');
    t.equal(e.details.field, field, `names the field (${e.message})`);
    if (message) t.match(e.message, message);
    t.notMatch(e.message, /\n/, 'one line');
  }
}

t.test('kubectl run output parses', async (t) => {
  const web = manifest('kubectl-run-web.yaml');
  const p = parsePod(
    podKey('/weft', web.namespace, web.name),
    web.namespace,
    web.name,
    JSON.stringify(web.object),
  );
  t.same(p, {
    namespace: 'default',
    name: 'web',
    labels: { app: 'web' },
    nodeName: undefined,
    ports: [{ name: '', containerPort: 8080, protocol: 'TCP' }],
    podIPs: [],
    ready: undefined,
    terminating: false,
    hostNetwork: false,
  });
  const db = manifest('kubectl-run-db-prod.yaml');
  t.equal(db.namespace, 'prod');
  const d = parsePod(podKey('/weft', 'prod', 'db'), 'prod', 'db', JSON.stringify(db.object));
  t.same(d.labels, { app: 'db', tier: 'backend' });
  t.same(d.ports, [{ name: '', containerPort: 5432, protocol: 'TCP' }]);
  const bare = parsePod(
    podKey('/weft', 'default', 'bare'),
    'default',
    'bare',
    fixture('kubectl-run-bare.json'),
  );
  t.same(bare.labels, { run: 'bare' });
  t.same(bare.ports, []);
});

t.test('what an API server returns: status, conditions, podIPs, deletion, hostNetwork', async (t) => {
  const status = {
    phase: 'Running',
    podIP: '10.244.1.5',
    podIPs: [{ ip: '10.244.1.5' }, { ip: 'fd00:0:0:0::5' }],
    conditions: [
      { type: 'Initialized', status: 'True' },
      { type: 'Ready', status: 'False', lastTransitionTime: '2026-01-01T00:00:00Z' },
    ],
    containerStatuses: [{ name: 'web', ready: false }],
  };
  const p = parsePod(
    KEY,
    'default',
    'web',
    pod(
      { deletionTimestamp: '2026-01-01T00:00:30Z', deletionGracePeriodSeconds: 30, uid: 'x' },
      {
        nodeName: 'node1',
        hostNetwork: true,
        containers: [
          {
            name: 'a',
            image: 'i',
            ports: [
              { name: 'http', containerPort: 80 },
              { containerPort: 53, protocol: 'UDP' },
            ],
          },
          { name: 'b', image: 'i', ports: [{ name: 'metrics', containerPort: 9090, protocol: 'SCTP' }] },
        ],
      },
      status,
    ),
  );
  t.same(p.podIPs, ['10.244.1.5', 'fd00::5'], 'canonical');
  t.equal(p.ready, false);
  t.equal(p.terminating, true);
  t.equal(p.hostNetwork, true);
  t.equal(p.nodeName, 'node1');
  t.same(p.ports, [
    { name: 'http', containerPort: 80, protocol: 'TCP' },
    { name: '', containerPort: 53, protocol: 'UDP' },
    { name: 'metrics', containerPort: 9090, protocol: 'SCTP' },
  ]);
  const ready = parsePod(
    KEY,
    'default',
    'web',
    pod({}, {}, { podIP: '10.244.1.5', conditions: [{ type: 'Ready', status: 'True' }] }),
  );
  t.equal(ready.ready, true);
  t.same(ready.podIPs, ['10.244.1.5'], 'podIP alone');
  const unknown = parsePod(
    KEY,
    'default',
    'web',
    pod({}, {}, { conditions: [{ type: 'Ready', status: 'Unknown' }] }),
  );
  t.equal(unknown.ready, false);
  t.equal(parsePod(KEY, 'default', 'web', pod({}, { nodeName: '' }, { podIP: '' })).nodeName, undefined);
  t.same(
    parsePod(KEY, 'default', 'web', JSON.stringify({ metadata: { labels: { a: 'b' } } })).ports,
    [],
    'no spec',
  );
});

t.test('hostile and broken pods are refused naming key and field', async (t) => {
  rejects(t, () => parsePod(KEY, 'default', 'web', '{"metadata": '), KEY, '', /not JSON/);
  rejects(t, () => parsePod(KEY, 'default', 'web', '[]'), KEY, '');
  const bigKey = podKey('/weft', 'default', 'big');
  rejects(
    t,
    () => parsePod(bigKey, 'default', 'big', ' '.repeat(MAX_OBJECT_BYTES + 1)),
    bigKey,
    '',
    /larger than/,
  );
  const badName = podKey('/weft', 'default', 'Web_1');
  rejects(
    t,
    () => parsePod(badName, 'default', 'Web_1', '{}'),
    badName,
    'metadata.name',
    /DNS-1123 subdomain/,
  );
  const badNs = podKey('/weft', 'a.b', 'web');
  rejects(t, () => parsePod(badNs, 'a.b', 'web', '{}'), badNs, 'metadata.namespace');
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ name: 'other' })),
    KEY,
    'metadata.name',
    /does not match/,
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ labels: { 'a\nb': 'c' } })),
    KEY,
    'metadata.labels',
    /key "a\\nb"/,
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ labels: { app: 'x;rm -rf' } })),
    KEY,
    'metadata.labels.app',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ labels: { app: 'a'.repeat(64) } })),
    KEY,
    'metadata.labels.app',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ annotations: { 'bad key': 'x' } })),
    KEY,
    'metadata.annotations',
  );
  rejects(t, () => parsePod(KEY, 'default', 'web', pod({ labels: 'app=web' })), KEY, 'metadata.labels');
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ deletionTimestamp: 'soon' })),
    KEY,
    'metadata.deletionTimestamp',
  );
  const port = (p: Record<string, unknown>, more: Record<string, unknown>[] = []) =>
    pod({}, { containers: [{ name: 'c', ports: [p, ...more] }] });
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', port({ containerPort: 0 })),
    KEY,
    'spec.containers[0].ports[0].containerPort',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', port({ containerPort: 65536 })),
    KEY,
    'spec.containers[0].ports[0].containerPort',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', port({ containerPort: 80, protocol: 'ICMP' })),
    KEY,
    'spec.containers[0].ports[0].protocol',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', port({ containerPort: 80, name: 'HTTP' })),
    KEY,
    'spec.containers[0].ports[0].name',
    /IANA_SVC_NAME/,
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', port({ containerPort: 80, name: 'a-very-long-port-name' })),
    KEY,
    'spec.containers[0].ports[0].name',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', port({ containerPort: 80, name: '8080' })),
    KEY,
    'spec.containers[0].ports[0].name',
    /at least one letter/,
  );
  rejects(
    t,
    () =>
      parsePod(
        KEY,
        'default',
        'web',
        pod(
          {},
          {
            containers: [
              { name: 'a', ports: [{ name: 'http', containerPort: 80 }] },
              { name: 'b', ports: [{ name: 'http', containerPort: 81 }] },
            ],
          },
        ),
      ),
    KEY,
    'spec.containers[1].ports[0].name',
    /duplicate name "http" in the pod/,
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({}, { containers: [{ name: 'A' }] })),
    KEY,
    'spec.containers[0].name',
  );
  rejects(t, () => parsePod(KEY, 'default', 'web', pod({}, { nodeName: 'node_1' })), KEY, 'spec.nodeName');
  rejects(t, () => parsePod(KEY, 'default', 'web', pod({}, { hostNetwork: 'yes' })), KEY, 'spec.hostNetwork');
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({}, {}, { podIP: '10.244.1.300' })),
    KEY,
    'status.podIP',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({}, {}, { podIP: '127.0.0.1' })),
    KEY,
    'status.podIP[0]',
    /loopback/,
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({}, {}, { podIP: '10.0.0.1', podIPs: [{ ip: '10.0.0.2' }] })),
    KEY,
    'status.podIPs[0].ip',
    /must equal status.podIP/,
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({}, {}, { podIPs: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }] })),
    KEY,
    'status.podIPs',
    /one family/,
  );
  rejects(
    t,
    () =>
      parsePod(
        KEY,
        'default',
        'web',
        pod({}, {}, { podIPs: [{ ip: '10.0.0.1' }, { ip: 'fd00::1' }, { ip: 'fd00::2' }] }),
      ),
    KEY,
    'status.podIPs',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({}, {}, { podIPs: [{ ip: 'fe80::1%eth0' }] })),
    KEY,
    'status.podIPs[0].ip',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({}, {}, { conditions: [{ type: 'Ready', status: 'Yes' }] })),
    KEY,
    'status.conditions[0].status',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', JSON.stringify({ apiVersion: 'v2', kind: 'Pod' })),
    KEY,
    'apiVersion',
  );
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', JSON.stringify({ apiVersion: 'v1', kind: 'Service' })),
    KEY,
    'kind',
  );
});

t.test('a pod with 10,000 labels is refused with a clear error naming the field', async (t) => {
  const labels: Record<string, string> = {};
  for (let i = 0; i < 10_000; i++) labels[`l${i}`] = 'v';
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ labels })),
    KEY,
    'metadata.labels',
    /10000 entries, more than weft's limit of 1000/,
  );
  const few: Record<string, string> = {};
  for (let i = 0; i < MAX_LABELS; i++) few[`l${i}`] = 'v';
  t.equal(
    Object.keys(parsePod(KEY, 'default', 'web', pod({ labels: few })).labels).length,
    MAX_LABELS,
    'the limit itself passes',
  );
  // Fewer but longer labels: the byte cap.
  const long: Record<string, string> = {};
  for (let i = 0; i < 600; i++) long[`example.com/${'k'.repeat(50)}${i}`] = 'v'.repeat(63);
  rejects(
    t,
    () => parsePod(KEY, 'default', 'web', pod({ labels: long })),
    KEY,
    'metadata.labels',
    /more than weft's limit of 65536/,
  );
});

t.test('nodes', async (t) => {
  const key = nodeKey('/weft', 'node1');
  t.same(
    parseNode(
      key,
      'node1',
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: 'node1', labels: { 'topology.kubernetes.io/zone': 'z1' } },
      }),
    ),
    {
      name: 'node1',
      labels: { 'topology.kubernetes.io/zone': 'z1' },
    },
  );
  t.same(parseNode(key, 'node1', '{}'), { name: 'node1', labels: {} });
  rejects(t, () => parseNode(key, 'node1', '{"metadata":{"name":"node2"}}'), key, 'metadata.name');
  rejects(
    t,
    () => parseNode(key, 'node1', '{"metadata":{"labels":{"topology.kubernetes.io/zone":"z 1"}}}'),
    key,
    'metadata.labels.topology.kubernetes.io/zone',
  );
  const bad = nodeKey('/weft', 'Node1');
  rejects(t, () => parseNode(bad, 'Node1', '{}'), bad, 'metadata.name');
  rejects(t, () => parseNode(key, 'node1', 'nope'), key, '', /not JSON/);
});

t.test('pod attachments: the shape weft-cni writes', async (t) => {
  const key = podAttachmentKey('/weft', 'default', 'web');
  const a: PodAttachment = {
    namespace: 'default',
    name: 'web',
    node: 'node1',
    containerId: 'abc123',
    ips: ['10.244.1.5'],
  };
  const text = JSON.stringify(podAttachmentObject(a));
  t.same(JSON.parse(text), {
    apiVersion: 'weft.dev/v1',
    kind: 'PodAttachment',
    metadata: { namespace: 'default', name: 'web' },
    node: 'node1',
    containerId: 'abc123',
    ips: ['10.244.1.5'],
  });
  t.same(parsePodAttachment(key, 'default', 'web', text), a);
  const obj = (over: Record<string, unknown>) => JSON.stringify({ ...podAttachmentObject(a), ...over });
  t.same(parsePodAttachment(key, 'default', 'web', obj({ ips: ['10.244.1.5', 'FD00::0005'] })).ips, [
    '10.244.1.5',
    'fd00::5',
  ]);
  rejects(t, () => parsePodAttachment(key, 'default', 'web', obj({ ips: [] })), key, 'ips');
  rejects(
    t,
    () => parsePodAttachment(key, 'default', 'web', obj({ ips: ['10.0.0.1', '10.0.0.2'] })),
    key,
    'ips',
    /one family/,
  );
  rejects(
    t,
    () => parsePodAttachment(key, 'default', 'web', obj({ ips: ['169.254.1.1'] })),
    key,
    'ips[0]',
    /link-local/,
  );
  rejects(t, () => parsePodAttachment(key, 'default', 'web', obj({ node: 'a b' })), key, 'node');
  rejects(
    t,
    () => parsePodAttachment(key, 'default', 'web', obj({ containerId: '../x' })),
    key,
    'containerId',
  );
  rejects(
    t,
    () => parsePodAttachment(key, 'default', 'web', obj({ containerId: 'a'.repeat(257) })),
    key,
    'containerId',
  );
  rejects(t, () => parsePodAttachment(key, 'default', 'web', obj({ kind: 'Pod' })), key, 'kind');
  rejects(
    t,
    () => parsePodAttachment(key, 'default', 'web', obj({ metadata: { namespace: 'other', name: 'web' } })),
    key,
    'metadata.namespace',
  );
});

t.test('effectivePod: the pod status first, else the attachment; ready only with an address', async (t) => {
  const base: PodSpec = {
    namespace: 'default',
    name: 'web',
    labels: { app: 'web' },
    nodeName: undefined,
    ports: [],
    podIPs: [],
    ready: undefined,
    terminating: false,
    hostNetwork: false,
  };
  const att: PodAttachment = {
    namespace: 'default',
    name: 'web',
    node: 'n2',
    containerId: 'c',
    ips: ['10.244.2.9'],
  };
  t.match(effectivePod(base, undefined), { ips: [], ready: false, nodeName: undefined });
  t.match(effectivePod(base, att), { ips: ['10.244.2.9'], ready: true, nodeName: 'n2' });
  t.match(effectivePod({ ...base, ready: false }, att), { ready: false });
  t.match(effectivePod({ ...base, nodeName: 'n1', podIPs: ['10.244.1.1'], terminating: true }, att), {
    ips: ['10.244.1.1'],
    nodeName: 'n1',
    ready: true,
    terminating: true,
  });
});

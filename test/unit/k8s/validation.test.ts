/**
 * Hostile input at the door: every name field held to the API server's rule (the registry key's
 * namespace and name included, with or without metadata), the API's list limits, and the size
 * limit checked before the text is parsed. Valid names of maximum length pass.
 */
import t, { type Test } from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import {
  MAX_OBJECT_BYTES,
  parseEndpointSlice,
  parseService,
  serviceKey,
  sliceKey,
} from '../../../src/k8s/index.js';

const INJECTION = 'q\n-I INPUT 1 -s 6.6.6.6 -j ACCEPT\n#';
const a = (n: number) => 'a'.repeat(n);
const NS63 = `n${a(62)}`;
const SVC63 = `s${a(62)}`;
const SLICE253 = `${a(63)}.${a(63)}.${a(63)}.${a(61)}`;

/** Asserts INVALID_VALUE naming the key and the field, with the key and field in the message. */
function rejects(t: Test, fn: () => unknown, key: string, field: string, message?: RegExp) {
  try {
    fn();
    t.fail(`expected an error for ${field}`);
  } catch (err) {
    t.ok(isWeftError(err, ErrorCodes.INVALID_VALUE), `INVALID_VALUE: ${String(err)}`);
    const e = err as Error & { details: { field: string; object: string } };
    t.equal(e.details.object, key, 'names the key');
    t.equal(e.details.field, field, 'names the field');
    if (field) t.ok(e.message.includes(`field ${field}:`), `message names the field: ${e.message}`);
    // eslint-disable-next-line no-control-regex
    t.notOk(/[\n\r\u001b]/.test(e.message), 'the message has no raw control characters');
    if (message) t.match(e.message, message);
  }
}

const service = (spec: Record<string, unknown>, metadata?: Record<string, unknown>, extra = {}) =>
  JSON.stringify({ apiVersion: 'v1', kind: 'Service', ...(metadata && { metadata }), spec, ...extra });
const basic = { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] };

t.test('valid names of maximum length are accepted, with and without metadata', async (t) => {
  const key = serviceKey('/weft', NS63, SVC63);
  for (const meta of [undefined, { namespace: NS63, name: SVC63 }]) {
    const s = parseService(
      key,
      NS63,
      SVC63,
      service(
        {
          clusterIP: '10.96.0.10',
          ports: [
            { name: `p${a(62)}`, port: 80, targetPort: `t${a(14)}` },
            { name: 'b', port: 81, targetPort: 'a-1' },
          ],
          selector: { [`${SLICE253}/${a(63)}`]: a(63) },
        },
        meta && {
          ...meta,
          labels: { 'kubernetes.io/name': 'x', app: '' },
          annotations: { 'Example.COM/Note': 'anything at all\n goes in a value' },
        },
      ),
    );
    t.equal(s.namespace, NS63);
    t.equal(s.name, SVC63);
    t.equal(s.ports[0]?.name, `p${a(62)}`);
  }
  const skey = sliceKey('/weft', NS63, SLICE253);
  const sl = parseEndpointSlice(
    skey,
    NS63,
    SLICE253,
    JSON.stringify({
      metadata: { name: SLICE253, labels: { 'kubernetes.io/service-name': SVC63 } },
      addressType: 'IPv4',
      endpoints: [
        {
          addresses: ['10.244.1.2'],
          nodeName: SLICE253,
          zone: 'eu-west-1a',
          hostname: a(63),
        },
      ],
      ports: [{ name: `p${a(62)}`, port: 8080 }],
    }),
  );
  t.equal(sl.name, SLICE253);
  t.equal(sl.endpoints[0]?.nodeName, SLICE253);
});

t.test('hostile and invalid Service names are refused with key and field', async (t) => {
  const key = serviceKey('/weft', 'default', 'web');
  const cases: [string, Record<string, unknown>, string][] = [
    ['injection in a port name', { ...basic, ports: [{ name: INJECTION, port: 80 }] }, 'spec.ports[0].name'],
    ['";" in a port name', { ...basic, ports: [{ name: 'a;b', port: 80 }] }, 'spec.ports[0].name'],
    ['space in a port name', { ...basic, ports: [{ name: 'a b', port: 80 }] }, 'spec.ports[0].name'],
    ['upper case port name', { ...basic, ports: [{ name: 'Http', port: 80 }] }, 'spec.ports[0].name'],
    ['64-character port name', { ...basic, ports: [{ name: a(64), port: 80 }] }, 'spec.ports[0].name'],
    [
      'injection in a named targetPort',
      { ...basic, ports: [{ name: 'h', port: 80, targetPort: INJECTION }] },
      'spec.ports[0].targetPort',
    ],
    [
      '16-character named targetPort',
      { ...basic, ports: [{ name: 'h', port: 80, targetPort: a(16) }] },
      'spec.ports[0].targetPort',
    ],
    [
      'digits-only named targetPort',
      { ...basic, ports: [{ name: 'h', port: 80, targetPort: '8080' }] },
      'spec.ports[0].targetPort',
    ],
    [
      'one name for two protocols',
      {
        ...basic,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP' },
          { name: 'dns', port: 53, protocol: 'TCP' },
        ],
      },
      'spec.ports[1].name',
    ],
    ['bad selector key', { ...basic, selector: { 'a b': 'x' } }, 'spec.selector'],
    ['bad selector value', { ...basic, selector: { app: INJECTION } }, 'spec.selector.app'],
    ['loopback externalIP', { ...basic, externalIPs: ['127.0.0.1'] }, 'spec.externalIPs[0]'],
    ['link-local externalIP', { ...basic, externalIPs: ['169.254.169.254'] }, 'spec.externalIPs[0]'],
    ['multicast externalIP', { ...basic, externalIPs: ['192.0.2.1', '239.0.0.1'] }, 'spec.externalIPs[1]'],
    ['unspecified externalIP', { ...basic, externalIPs: ['::'] }, 'spec.externalIPs[0]'],
    ['scoped cluster IP', { ...basic, clusterIP: 'fe80::1%eth0' }, 'spec.clusterIP'],
    ['bad externalName', { type: 'ExternalName', externalName: 'a\nb.example' }, 'spec.externalName'],
    [
      '101 ports',
      { ...basic, ports: Array.from({ length: 101 }, (_, i) => ({ name: `p${i}`, port: i + 1 })) },
      'spec.ports',
    ],
    [
      '101 externalIPs',
      { ...basic, externalIPs: Array.from({ length: 101 }, (_, i) => `192.0.2.${i}`) },
      'spec.externalIPs',
    ],
  ];
  for (const [name, spec, field] of cases)
    t.test(name, async (t) =>
      rejects(t, () => parseService(key, 'default', 'web', service(spec, { name: 'web' })), key, field),
    );

  t.test('LB ingress on loopback', async (t) =>
    rejects(
      t,
      () =>
        parseService(
          key,
          'default',
          'web',
          service({ ...basic, type: 'LoadBalancer' }, undefined, {
            status: { loadBalancer: { ingress: [{ ip: '127.0.0.1' }] } },
          }),
        ),
      key,
      'status.loadBalancer.ingress[0].ip',
    ),
  );
  t.test('LB ingress hostname', async (t) =>
    rejects(
      t,
      () =>
        parseService(
          key,
          'default',
          'web',
          service({ ...basic, type: 'LoadBalancer' }, undefined, {
            status: { loadBalancer: { ingress: [{ hostname: 'lb\u001b[2J.example' }] } },
          }),
        ),
      key,
      'status.loadBalancer.ingress[0].hostname',
    ),
  );
  const meta: [string, Record<string, unknown>, string][] = [
    ['label key', { labels: { [INJECTION]: 'x' } }, 'metadata.labels'],
    ['label value', { labels: { app: 'a b' } }, 'metadata.labels.app'],
    ['64-character label value', { labels: { app: a(64) } }, 'metadata.labels.app'],
    ['annotation key', { annotations: { 'a/b/c': 'x' } }, 'metadata.annotations'],
    ['annotations over 256 KiB', { annotations: { a: a(200_000), b: a(70_000) } }, 'metadata.annotations'],
  ];
  for (const [name, m, field] of meta)
    t.test(name, async (t) =>
      rejects(
        t,
        () => parseService(key, 'default', 'web', service(basic, { name: 'web', ...m })),
        key,
        field,
      ),
    );
});

t.test('the key’s namespace and name are held to the rules even without metadata', async (t) => {
  const cases: [string, string, string][] = [
    ['default', INJECTION, 'metadata.name'],
    [INJECTION, 'web', 'metadata.namespace'],
    ['default', 'Web', 'metadata.name'],
    ['default', '1web', 'metadata.name'],
    ['default', 'a.b', 'metadata.name'],
    ['default', `s${a(63)}`, 'metadata.name'],
    [`n${a(63)}`, 'web', 'metadata.namespace'],
    ['a.b', 'web', 'metadata.namespace'],
    ['default', 'web;', 'metadata.name'],
  ];
  for (const [ns, name, field] of cases) {
    const key = serviceKey('/weft', ns, name);
    t.test(`${JSON.stringify(ns)}/${JSON.stringify(name)}`, async (t) =>
      rejects(t, () => parseService(key, ns, name, service(basic)), key, field, /from the key/),
    );
  }
  const key = sliceKey('/weft', 'default', 'A_b');
  t.test('slice name', async (t) =>
    rejects(
      t,
      () =>
        parseEndpointSlice(
          key,
          'default',
          'A_b',
          JSON.stringify({ addressType: 'IPv4', endpoints: [], metadata: {} }),
        ),
      key,
      'metadata.name',
    ),
  );
  const long = `${SLICE253}a`;
  const lkey = sliceKey('/weft', 'default', long);
  t.test('254-character slice name', async (t) =>
    rejects(
      t,
      () => parseEndpointSlice(lkey, 'default', long, JSON.stringify({ addressType: 'IPv4', metadata: {} })),
      lkey,
      'metadata.name',
    ),
  );
});

const SKEY = sliceKey('/weft', 'default', 'web-1');
const slice = (body: Record<string, unknown>, labels: Record<string, string> = {}) =>
  JSON.stringify({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-1', labels: { 'kubernetes.io/service-name': 'web', ...labels } },
    addressType: 'IPv4',
    ...body,
  });
const ep = (extra: Record<string, unknown> = {}) => ({ addresses: ['10.244.1.2'], ...extra });

t.test('hostile and over-limit EndpointSlices are refused with key and field', async (t) => {
  const cases: [string, string, string][] = [
    [
      'injection in a port name',
      slice({ endpoints: [ep()], ports: [{ name: INJECTION, port: 1 }] }),
      'ports[0].name',
    ],
    ['";" in a port name', slice({ endpoints: [], ports: [{ name: 'a;b', port: 1 }] }), 'ports[0].name'],
    [
      'duplicate port names',
      slice({
        endpoints: [],
        ports: [
          { name: 'a', port: 1 },
          { name: 'a', port: 2, protocol: 'UDP' },
        ],
      }),
      'ports[1].name',
    ],
    ['nodeName', slice({ endpoints: [ep({ nodeName: INJECTION })] }), 'endpoints[0].nodeName'],
    ['nodeName with "_"', slice({ endpoints: [ep({ nodeName: 'node_1' })] }), 'endpoints[0].nodeName'],
    ['zone', slice({ endpoints: [ep({ zone: 'eu west' })] }), 'endpoints[0].zone'],
    ['hostname', slice({ endpoints: [ep({ hostname: 'a.b' })] }), 'endpoints[0].hostname'],
    [
      'loopback endpoint',
      slice({ endpoints: [ep({ addresses: ['127.0.0.1'] })] }),
      'endpoints[0].addresses[0]',
    ],
    [
      'link-local endpoint',
      slice({ endpoints: [ep({ addresses: ['169.254.169.254'] })] }),
      'endpoints[0].addresses[0]',
    ],
    [
      'bad FQDN address',
      slice({ addressType: 'FQDN', endpoints: [ep({ addresses: ['a b.example'] })] }),
      'endpoints[0].addresses[0]',
    ],
    ['no address', slice({ endpoints: [ep({ addresses: [] })] }), 'endpoints[0].addresses'],
    [
      '101 addresses',
      slice({ endpoints: [ep({ addresses: Array.from({ length: 101 }, (_, i) => `10.244.0.${i}`) })] }),
      'endpoints[0].addresses',
    ],
    ['1001 endpoints', slice({ endpoints: Array.from({ length: 1001 }, () => ep()) }), 'endpoints'],
    [
      '101 ports',
      slice({
        endpoints: [],
        ports: Array.from({ length: 101 }, (_, i) => ({ name: `p${i}`, port: i + 1 })),
      }),
      'ports',
    ],
    [
      'service-name label value',
      slice({ endpoints: [] }, { 'kubernetes.io/service-name': INJECTION }),
      'metadata.labels.kubernetes.io/service-name',
    ],
  ];
  for (const [name, text, field] of cases)
    t.test(name, async (t) =>
      rejects(t, () => parseEndpointSlice(SKEY, 'default', 'web-1', text), SKEY, field),
    );

  t.test('the API maxima are accepted', async (t) => {
    const s = parseEndpointSlice(
      SKEY,
      'default',
      'web-1',
      slice({
        endpoints: Array.from({ length: 1000 }, (_, i) =>
          ep({
            addresses: i
              ? [`10.244.${i >> 8}.${i & 255}`]
              : Array.from({ length: 100 }, (_, j) => `10.245.0.${j}`),
          }),
        ),
        ports: Array.from({ length: 100 }, (_, i) => ({ name: `p${i}`, port: i + 1 })),
      }),
    );
    t.equal(s.endpoints.length, 1000);
    t.equal(s.ports?.length, 100);
  });
});

t.test('a 1,000-port × 1,000-endpoint slice is refused cheaply', async (t) => {
  const text = slice({
    endpoints: Array.from({ length: 1000 }, (_, i) => ep({ addresses: [`10.244.${i >> 8}.${i & 255}`] })),
    ports: Array.from({ length: 1000 }, (_, i) => ({ name: `p${i}`, port: i + 1 })),
  });
  const t0 = performance.now();
  rejects(t, () => parseEndpointSlice(SKEY, 'default', 'web-1', text), SKEY, 'ports', /at most 100/);
  const ms = performance.now() - t0;
  t.ok(ms < 500, `refused in ${ms.toFixed(1)} ms`);
});

t.test('an oversize object is refused before it is parsed', async (t) => {
  const key = serviceKey('/weft', 'default', 'web');
  // Not JSON at all: the size, not the parser, must be what refuses it.
  const big = `{${' '.repeat(MAX_OBJECT_BYTES)}`;
  rejects(t, () => parseService(key, 'default', 'web', big), key, '', /larger than 1572864 bytes/);
  rejects(t, () => parseEndpointSlice(SKEY, 'default', 'web-1', big), SKEY, '', /larger than/);
  // Multi-byte characters count in bytes: under the limit in characters, over it in UTF-8.
  const wide = service(basic, { name: 'web', annotations: { a: 'é'.repeat(MAX_OBJECT_BYTES / 2) } });
  rejects(t, () => parseService(key, 'default', 'web', wide), key, '', /larger than/);
  // Just under the limit parses (and then fails only where it should: the annotation total).
  const under = service(basic, { name: 'web', annotations: { a: a(MAX_OBJECT_BYTES - 200) } });
  rejects(t, () => parseService(key, 'default', 'web', under), key, 'metadata.annotations', /262144/);
});

t.test('messages show a hostile key quoted, never raw', async (t) => {
  const key = serviceKey('/weft', 'default', 'x\u001b[2J');
  try {
    parseService(key, 'default', 'x\u001b[2J', service(basic));
    t.fail('accepted');
  } catch (err) {
    t.match(
      (err as Error).message,
      /^Service "\/weft\/services\/default\/x\\u001b\[2J": field metadata\.name/,
    );
  }
});

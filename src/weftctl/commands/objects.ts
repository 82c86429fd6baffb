/**
 * weftctl's object commands, in kubectl's manner: `apply -f`, `get`, `delete`, `describe` and
 * `label` for the Services, EndpointSlices, Pods and Nodes of the registry. `apply` does what an
 * API server would (see ../object-store.ts); the others read and delete the stored objects, a
 * Service together with its ClusterIP and nodePort allocations, a Pod gracefully (see
 * ../pod-store.ts).
 */
import type { FlagValues } from '../../cli/flag-parser.js';
import { boolFlag, defineFlags, intFlag, stringFlag } from '../../cli/flag-parser.js';
import { serviceCidrFlag, serviceCidrs } from '../../cli/service-cidr-flag.js';
import { isWeftError, messageOf } from '../../errors/index.js';
import { terminalText } from '../../escape/index.js';
import {
  DEFAULT_NODE_PORT_RANGE,
  DEFAULT_SERVICE_CIDR,
  ServiceAllocator,
  parsePortRange,
} from '../../ipam/index.js';
import {
  MANAGED_BY_LABEL,
  SERVICE_NAME_LABEL,
  displayName,
  kindPrefix,
  labelSelectorMatches,
  parseEndpointSlice,
  parseLabelSelector,
  type EndpointSliceSpec,
  type LabelSelector,
} from '../../k8s/index.js';
import type { KeyValue, Store } from '../../registry/index.js';
import { UsageError, defineCommand, expectArgs, type Command, type CommandContext } from '../command.js';
import {
  DEFAULT_NAMESPACE,
  isRecord,
  parseManifests,
  type ManifestObject,
  type ObjectKind,
} from '../manifest.js';
import {
  KIND_RESOURCE,
  applyObject,
  deleteObject,
  notFound,
  objectKey,
  serviceOwnerHolds,
  type ApplyResult,
} from '../object-store.js';
import { cell, formatAge, formatTable, type Table } from '../output.js';
import {
  finishPodDeletion,
  labelObject,
  parseLabelArgs,
  requestPodDeletion,
  type PodDeletion,
} from '../pod-store.js';
import { describePod, nodeTable, podAttachmentsOf, podTable, type StoredObject } from './pods.js';

const filename = stringFlag({
  name: 'filename',
  aliases: ['f'],
  metavar: '<file>',
  description: 'A JSON or YAML manifest (several documents, or a List); - reads standard input.',
  env: false,
});
const namespace = stringFlag({
  name: 'namespace',
  aliases: ['n'],
  metavar: '<name>',
  description: `The namespace of the objects (default "${DEFAULT_NAMESPACE}").`,
  env: false,
  validate: (v) => (/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(v) ? undefined : 'must be a lowercase DNS label'),
});
const allNamespaces = boolFlag({
  name: 'all-namespaces',
  aliases: ['A'],
  description: 'List the objects of every namespace.',
  env: false,
});
const serviceCidr = serviceCidrFlag(
  "ClusterIPs are allocated from here (kube-apiserver's --service-cluster-ip-range).",
);
const serviceNodePortRange = stringFlag({
  name: 'service-node-port-range',
  metavar: '<min>-<max>',
  description: "nodePorts are allocated from here (kube-apiserver's flag of the same name).",
  default: DEFAULT_NODE_PORT_RANGE,
  validate: (v) => {
    try {
      parsePortRange(v);
      return undefined;
    } catch (err) {
      return messageOf(err);
    }
  },
});

const selector = stringFlag({
  name: 'selector',
  aliases: ['l'],
  metavar: '<selector>',
  description:
    "Only objects whose labels match, in kubectl's syntax: a=b, a!=b, a in (x,y), a notin (x), a, !a.",
  env: false,
  validate: (v) => {
    try {
      parseLabelSelector(v);
      return undefined;
    } catch (err) {
      return messageOf(err);
    }
  },
});
const gracePeriodFlag = intFlag({
  name: 'grace-period',
  metavar: '<seconds>',
  description:
    "Seconds a pod is terminating before it is removed; negative: the pod's terminationGracePeriodSeconds (default 30); 0 needs --force.",
  default: -1,
  min: -1,
  env: false,
});
const force = boolFlag({
  name: 'force',
  description: 'Remove pods at once, without a grace period (with --grace-period=0 or none).',
  env: false,
});
const overwrite = boolFlag({
  name: 'overwrite',
  description: 'Let `label` replace a label that already has another value.',
  env: false,
});

const APPLY_FLAGS = defineFlags({ filename, namespace, serviceCidr, serviceNodePortRange });
const GET_FLAGS = defineFlags({ namespace, allNamespaces, selector });
const DELETE_FLAGS = defineFlags({ filename, namespace, gracePeriodFlag, force });
const DESCRIBE_FLAGS = defineFlags({ namespace });
const LABEL_FLAGS = defineFlags({ namespace, overwrite });

/** The resource names `get`, `delete` and `describe` accept, as kubectl spells them. */
const KIND_ALIASES: Record<string, ObjectKind> = {
  service: 'Service',
  services: 'Service',
  svc: 'Service',
  endpointslice: 'EndpointSlice',
  endpointslices: 'EndpointSlice',
  eps: 'EndpointSlice',
  'endpointslice.discovery.k8s.io': 'EndpointSlice',
  'endpointslices.discovery.k8s.io': 'EndpointSlice',
  pod: 'Pod',
  pods: 'Pod',
  po: 'Pod',
  node: 'Node',
  nodes: 'Node',
  no: 'Node',
};

function kindOf(word: string | undefined, usage: string): ObjectKind {
  const kind =
    word === undefined || !Object.prototype.hasOwnProperty.call(KIND_ALIASES, word.toLowerCase())
      ? undefined
      : KIND_ALIASES[word.toLowerCase()];
  if (!kind) {
    throw new UsageError(
      `${word === undefined ? 'missing resource type' : `unknown resource type "${terminalText(word)}"`}: ${usage} (types: services/svc, endpointslices/eps, pods/po, nodes/no)`,
    );
  }
  return kind;
}

function allocatorFor(
  store: Store,
  ctx: CommandContext,
  flags: { serviceCidr?: string; serviceNodePortRange?: string },
): ServiceAllocator {
  const prefix = ctx.global.registryPrefix;
  return new ServiceAllocator({
    store,
    registryPrefix: prefix,
    serviceCidrs: serviceCidrs(flags.serviceCidr ?? DEFAULT_SERVICE_CIDR),
    nodePortRange: flags.serviceNodePortRange ?? DEFAULT_NODE_PORT_RANGE,
    ownerHolds: serviceOwnerHolds(store, prefix),
  });
}

const apply = defineCommand({
  words: ['apply'],
  summary: 'Create or update Services, EndpointSlices, Pods and Nodes from a manifest (kubectl apply).',
  usage: '-f FILE|-',
  description:
    'Reads JSON or YAML (several documents, or a List), e.g. what `kubectl create service ... ' +
    '--dry-run=client -o yaml` or `kubectl run NAME --image=I --labels=a=b --port=P --dry-run=client ' +
    '-o yaml` prints. Fills in the namespace, a ClusterIP from --service-cidr and ' +
    'nodePorts from --service-node-port-range, as an API server would; a re-applied Service keeps ' +
    'them. Each object is validated as weft-proxy reads it; a bad one is reported and skipped, the ' +
    'others are applied, and the exit code is 1.',
  flags: APPLY_FLAGS,
  async run(ctx, flags: FlagValues<typeof APPLY_FLAGS>, args) {
    expectArgs(args, 0, 0, 'weftctl apply -f FILE|-');
    if (flags.filename === undefined)
      throw new UsageError('apply needs -f FILE (or -f - for standard input)');
    const text = await ctx.readInput(flags.filename);
    const { objects, errors } = parseManifests(text, {
      namespace: flags.namespace,
      input: flags.filename === '-' ? 'stdin' : flags.filename,
    });
    let failed = errors.length > 0;
    for (const e of errors) ctx.io.stderr(`error: ${e.error.message}\n`);
    if (!objects.length) {
      if (!errors.length)
        ctx.io.stderr(`error: no objects in ${flags.filename === '-' ? 'stdin' : flags.filename}\n`);
      return 1;
    }
    const store = await ctx.store();
    const allocator = allocatorFor(store, ctx, flags);
    const applied: ApplyResult[] = [];
    for (const m of objects) {
      try {
        const r = await applyObject(store, allocator, ctx.global.registryPrefix, m);
        applied.push(r);
        if (ctx.format === 'table') ctx.io.stdout(`${KIND_RESOURCE[m.kind]}/${m.name} ${r.outcome}\n`);
      } catch (err) {
        failed = true;
        ctx.io.stderr(`error: ${m.source}: ${messageOf(err)}\n`);
      }
    }
    if (ctx.format !== 'table') ctx.print(asList(applied.map((r) => r.object)), () => '');
    return failed ? 1 : 0;
  },
});

/** Reads the objects of a kind; unreadable ones are reported on stderr and counted. */
async function readObjects(
  ctx: CommandContext,
  kind: ObjectKind,
  scope: { namespace?: string; names?: readonly string[] },
): Promise<{ items: StoredObject[]; problems: number }> {
  const store = await ctx.store();
  const prefix = ctx.global.registryPrefix;
  const base = kindPrefix(prefix, kind);
  const clusterScoped = kind === 'Node';
  let kvs: KeyValue[];
  let problems = 0;
  if (scope.names?.length) {
    kvs = [];
    for (const name of scope.names) {
      const ns = scope.namespace ?? DEFAULT_NAMESPACE;
      const key = objectKey(prefix, kind, ns, name);
      const kv = name.includes('/') ? undefined : await store.get(key);
      if (kv) kvs.push(kv);
      else {
        problems++;
        ctx.io.stderr(`error: ${terminalText(notFound(kind, ns, name, key).message)}\n`);
      }
    }
  } else {
    kvs = (
      await store.list(scope.namespace === undefined || clusterScoped ? base : `${base}${scope.namespace}/`)
    ).items;
  }
  const items: StoredObject[] = [];
  for (const kv of kvs) {
    const parts = kv.key.slice(base.length).split('/');
    const [ns, name] = clusterScoped ? ['', parts[0]] : parts;
    if (ns === undefined || !name || parts.length !== (clusterScoped ? 1 : 2) || (!clusterScoped && !ns))
      continue;
    try {
      const v: unknown = JSON.parse(kv.value);
      if (!isRecord(v)) throw new Error('not a JSON object');
      items.push({ key: kv.key, namespace: ns, name, object: v });
    } catch (err) {
      problems++;
      ctx.io.stderr(
        `error: ${kind} ${displayName(kv.key)}: stored value is not a JSON object: ${messageOf(err)}\n`,
      );
    }
  }
  return { items, problems };
}

function asList(items: Record<string, unknown>[]): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'List', items };
}

function age(obj: Record<string, unknown>, now: number): string {
  const ts = isRecord(obj.metadata) ? obj.metadata.creationTimestamp : undefined;
  const t = typeof ts === 'string' ? Date.parse(ts) : NaN;
  return Number.isNaN(t) ? '<unknown>' : formatAge((now - t) / 1000);
}

function spec(obj: Record<string, unknown>): Record<string, unknown> {
  return isRecord(obj.spec) ? obj.spec : {};
}

function records(v: unknown): Record<string, unknown>[] {
  return Array.isArray(v) ? v.filter(isRecord) : [];
}

/** kubectl's PORT(S) cell: `80/TCP`, `80:30080/TCP`. */
function servicePorts(obj: Record<string, unknown>): string {
  const ports = records(spec(obj).ports).map((p) => {
    const node = typeof p.nodePort === 'number' && p.nodePort > 0 ? `:${p.nodePort}` : '';
    return `${String(p.port)}${node}/${typeof p.protocol === 'string' ? p.protocol : 'TCP'}`;
  });
  return cell(ports);
}

function clusterIpCell(obj: Record<string, unknown>): string {
  const s = spec(obj);
  if (s.type === 'ExternalName') return '<none>';
  return cell(s.clusterIP);
}

/** kubectl's EXTERNAL-IP cell. */
function externalIpCell(obj: Record<string, unknown>): string {
  const s = spec(obj);
  if (s.type === 'ExternalName') return cell(s.externalName);
  const status = isRecord(obj.status) && isRecord(obj.status.loadBalancer) ? obj.status.loadBalancer : {};
  const ips = [
    ...records(status.ingress).map((i) => i.ip ?? i.hostname),
    ...(Array.isArray(s.externalIPs) ? (s.externalIPs as unknown[]) : []),
  ].filter((v): v is string => typeof v === 'string');
  if (ips.length) return ips.join(',');
  return s.type === 'LoadBalancer' ? '<pending>' : '<none>';
}

function serviceTable(items: StoredObject[], withNamespace: boolean, now: number): Table {
  return {
    headers: [
      ...(withNamespace ? ['namespace'] : []),
      'name',
      'type',
      'cluster-ip',
      'external-ip',
      'port(s)',
      'age',
    ],
    rows: items.map((o) => [
      ...(withNamespace ? [o.namespace] : []),
      o.name,
      cell(spec(o.object).type ?? 'ClusterIP'),
      clusterIpCell(o.object),
      externalIpCell(o.object),
      servicePorts(o.object),
      age(o.object, now),
    ]),
  };
}

function sliceTable(items: StoredObject[], withNamespace: boolean, now: number, wide: boolean): Table {
  return {
    headers: [
      ...(withNamespace ? ['namespace'] : []),
      'name',
      'addresstype',
      'ports',
      'endpoints',
      'age',
      ...(wide ? ['service', 'managed-by'] : []),
    ],
    rows: items.map((o) => {
      const ports = records(o.object.ports).map((p) => String(p.port ?? '<unset>'));
      const addrs = records(o.object.endpoints).flatMap((e) =>
        Array.isArray(e.addresses) ? (e.addresses as unknown[]).map(String) : [],
      );
      const shown =
        addrs.length > 3 ? `${addrs.slice(0, 3).join(',')} + ${addrs.length - 3} more...` : cell(addrs);
      return [
        ...(withNamespace ? [o.namespace] : []),
        o.name,
        cell(o.object.addressType),
        cell(ports),
        shown,
        age(o.object, now),
        ...(wide
          ? [cell(labelsOf(o.object)[SERVICE_NAME_LABEL]), cell(labelsOf(o.object)[MANAGED_BY_LABEL])]
          : []),
      ];
    }),
  };
}

/** An object's labels as stored (strings only). */
function labelsOf(obj: Record<string, unknown>): Record<string, string> {
  const labels = isRecord(obj.metadata) && isRecord(obj.metadata.labels) ? obj.metadata.labels : {};
  return Object.fromEntries(
    Object.entries(labels).filter((e): e is [string, string] => typeof e[1] === 'string'),
  );
}

function matching(items: StoredObject[], sel: LabelSelector | undefined): StoredObject[] {
  return sel ? items.filter((o) => labelSelectorMatches(sel, labelsOf(o.object))) : items;
}

const get = defineCommand({
  words: ['get'],
  summary: 'List Services, EndpointSlices, Pods or Nodes (kubectl get).',
  usage: 'services|svc|endpointslices|eps|pods|po|nodes|no [NAME...] [-n NS | -A] [-l SELECTOR] [-o wide]',
  description:
    "-o wide adds columns: for pods the IP and node (from the pod's status, else from the " +
    'attachment weft-cni recorded), for endpoint slices the service and the managed-by label.',
  flags: GET_FLAGS,
  async run(ctx, flags: FlagValues<typeof GET_FLAGS>, args) {
    const usage = 'weftctl get services|endpointslices|pods|nodes [NAME...] [-n NS | -A] [-l SELECTOR]';
    const kind = kindOf(args[0], usage);
    const names = args.slice(1);
    if (flags.allNamespaces && (names.length || flags.namespace !== undefined)) {
      throw new UsageError(
        names.length
          ? 'an object cannot be retrieved by name across all namespaces (-A); name a namespace with -n'
          : '-A and -n exclude each other',
      );
    }
    const ns = flags.allNamespaces ? undefined : (flags.namespace ?? DEFAULT_NAMESPACE);
    const sel = flags.selector === undefined ? undefined : parseLabelSelector(flags.selector);
    const read = await readObjects(ctx, kind, {
      ...(ns !== undefined ? { namespace: ns } : {}),
      names,
    });
    const { problems } = read;
    const items = matching(read.items, sel);
    const now = Date.now();
    if (ctx.format === 'table' && !items.length) {
      if (!problems)
        ctx.io.stderr(`No resources found${ns && kind !== 'Node' ? ` in ${ns} namespace` : ''}.\n`);
      return problems ? 1 : 0;
    }
    const data = names.length === 1 && items[0] ? items[0].object : asList(items.map((o) => o.object));
    const withNs = ns === undefined && kind !== 'Node';
    const wide = ctx.wide === true;
    let table: Table;
    if (kind === 'Service') table = serviceTable(items, withNs, now);
    else if (kind === 'EndpointSlice') table = sliceTable(items, withNs, now, wide);
    else if (kind === 'Node') table = nodeTable(items, now);
    else {
      const attachments = ctx.format === 'table' ? await podAttachmentsOf(ctx, ns) : new Map();
      table = podTable(items, attachments, { withNamespace: withNs, now, wide });
    }
    ctx.print(data, () => formatTable(table));
    return problems ? 1 : 0;
  },
});

const del = defineCommand({
  words: ['delete'],
  summary:
    'Delete Services (freeing their ClusterIPs and nodePorts), EndpointSlices, Pods (gracefully) or Nodes (kubectl delete).',
  usage: 'service|endpointslice|pod|node NAME... [-n NS] [--grace-period=N] [--force] | -f FILE|-',
  description:
    'A pod is first marked terminating (metadata.deletionTimestamp and deletionGracePeriodSeconds, ' +
    'so its endpoints turn terminating), then removed once the grace period is over: --grace-period, ' +
    "else the pod's terminationGracePeriodSeconds, else 30 s; weftctl waits that long. --force " +
    '(with --grace-period=0 or none) removes it at once.',
  flags: DELETE_FLAGS,
  async run(ctx, flags: FlagValues<typeof DELETE_FLAGS>, args) {
    const usage =
      'weftctl delete service|endpointslice|pod|node NAME... [-n NS] [--grace-period=N] [--force], or weftctl delete -f FILE|-';
    if (flags.force && flags.gracePeriodFlag > 0)
      throw new UsageError('--force and --grace-period greater than 0 cannot be specified together');
    let targets: { kind: ObjectKind; namespace: string; name: string; source?: string }[];
    let failed = false;
    if (flags.filename !== undefined) {
      expectArgs(args, 0, 0, usage);
      const { objects, errors } = parseManifests(await ctx.readInput(flags.filename), {
        namespace: flags.namespace,
        input: flags.filename === '-' ? 'stdin' : flags.filename,
      });
      for (const e of errors) ctx.io.stderr(`error: ${e.error.message}\n`);
      failed = errors.length > 0;
      targets = objects.map((m: ManifestObject) => ({ kind: m.kind, namespace: m.namespace, name: m.name }));
    } else {
      const kind = kindOf(args[0], usage);
      if (args.length < 2) throw new UsageError(`missing NAME: ${usage}`);
      const ns = flags.namespace ?? DEFAULT_NAMESPACE;
      targets = args.slice(1).map((name) => ({ kind, namespace: ns, name }));
    }
    const store = await ctx.store();
    const allocator = allocatorFor(store, ctx, {});
    const pending: PodDeletion[] = [];
    for (const t of targets) {
      try {
        if (t.kind === 'Pod') {
          const d = await requestPodDeletion(store, ctx.global.registryPrefix, t.namespace, t.name, {
            gracePeriodSeconds: flags.gracePeriodFlag,
            force: flags.force,
          });
          if (d.graceSeconds === 0)
            ctx.io.stdout(`pod "${terminalText(t.name)}" ${flags.force ? 'force ' : ''}deleted\n`);
          else pending.push(d);
          continue;
        }
        const r = await deleteObject(
          store,
          allocator,
          ctx.global.registryPrefix,
          t.kind,
          t.namespace,
          t.name,
        );
        const freed = r.freed.length ? ` (freed ${r.freed.map((f) => f.value).join(', ')})` : '';
        ctx.io.stdout(`${KIND_RESOURCE[t.kind]} "${terminalText(t.name)}" deleted${freed}\n`);
      } catch (err) {
        failed = true;
        ctx.io.stderr(`error: ${terminalText(messageOf(err))}\n`);
        if (!isWeftError(err)) throw err;
      }
    }
    // Every pod is marked first, then the command waits once for the longest grace period.
    for (const d of pending) {
      ctx.io.stderr(`pod "${terminalText(d.name)}" terminating; removing it in ${d.graceSeconds}s\n`);
    }
    for (const d of [...pending].sort((a, b) => a.deadline - b.deadline)) {
      try {
        const removed = await finishPodDeletion(store, d);
        ctx.io.stdout(
          removed
            ? `pod "${terminalText(d.name)}" deleted\n`
            : `pod "${terminalText(d.name)}" was already gone or created again; left as it is\n`,
        );
      } catch (err) {
        failed = true;
        ctx.io.stderr(`error: ${terminalText(messageOf(err))}\n`);
        if (!isWeftError(err)) throw err;
      }
    }
    return failed ? 1 : 0;
  },
});

const label = defineCommand({
  words: ['label'],
  summary: 'Add, change or remove labels of a Pod or Node (kubectl label).',
  usage: 'pod|node NAME KEY=VALUE... KEY-... [-n NS] [--overwrite]',
  description:
    'KEY=VALUE sets a label, KEY- removes one. A label that already has another value is ' +
    'replaced only with --overwrite. The pod is validated as apply validates it and written by ' +
    'compare-and-swap.',
  flags: LABEL_FLAGS,
  async run(ctx, flags: FlagValues<typeof LABEL_FLAGS>, args) {
    const usage = 'weftctl label pod|node NAME KEY=VALUE... KEY-... [-n NS] [--overwrite]';
    const kind = kindOf(args[0], usage);
    if (kind !== 'Pod' && kind !== 'Node') throw new UsageError(`label changes pods and nodes: ${usage}`);
    const name = args[1];
    if (name === undefined) throw new UsageError(`missing NAME: ${usage}`);
    if (args.length < 3) throw new UsageError(`at least one label update is required: ${usage}`);
    let changes;
    try {
      changes = parseLabelArgs(args.slice(2));
    } catch (err) {
      throw new UsageError(messageOf(err));
    }
    const store = await ctx.store();
    const ns = kind === 'Node' ? '' : (flags.namespace ?? DEFAULT_NAMESPACE);
    const r = await labelObject(store, ctx.global.registryPrefix, kind, ns, name, changes, flags.overwrite);
    for (const k of r.missing) ctx.io.stderr(`label "${terminalText(k)}" not found.\n`);
    ctx.io.stdout(`${KIND_RESOURCE[kind]}/${terminalText(name)} ${r.changed ? 'labeled' : 'not labeled'}\n`);
    return 0;
  },
});

/** One endpoint row of `describe service`. */
interface EndpointRow {
  slice: string;
  address: string;
  ports: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string | undefined;
  zone: string | undefined;
}

async function endpointsOf(
  ctx: CommandContext,
  namespace: string,
  service: string,
): Promise<{ rows: EndpointRow[]; slices: Record<string, unknown>[]; problems: string[] }> {
  const { items } = await readObjects(ctx, 'EndpointSlice', { namespace });
  const rows: EndpointRow[] = [];
  const slices: Record<string, unknown>[] = [];
  const problems: string[] = [];
  for (const o of items) {
    const labels = isRecord(o.object.metadata) ? o.object.metadata.labels : undefined;
    if (!isRecord(labels) || labels[SERVICE_NAME_LABEL] !== service) continue;
    slices.push(o.object);
    let s: EndpointSliceSpec;
    try {
      s = parseEndpointSlice(o.key, o.namespace, o.name, JSON.stringify(o.object));
    } catch (err) {
      problems.push(messageOf(err));
      continue;
    }
    const ports = s.ports?.length
      ? s.ports.map((p) => `${p.name ? `${p.name}=` : ''}${p.port}/${p.protocol}`).join(',')
      : '<all>';
    for (const e of s.endpoints) {
      for (const address of e.addresses) {
        rows.push({ slice: s.name, address, ports, ...e });
      }
    }
  }
  return { rows, slices, problems };
}

function describeService(o: StoredObject, eps: Awaited<ReturnType<typeof endpointsOf>>): string {
  const s = spec(o.object);
  const meta = isRecord(o.object.metadata) ? o.object.metadata : {};
  const kv = (v: unknown) =>
    isRecord(v) && Object.keys(v).length
      ? Object.entries(v)
          .map(([k, x]) => `${k}=${String(x)}`)
          .join(',')
      : '<none>';
  const lines: [string, string][] = [
    ['Name', o.name],
    ['Namespace', o.namespace],
    ['Labels', kv(meta.labels)],
    ['Selector', kv(s.selector)],
    ['Type', cell(s.type ?? 'ClusterIP')],
    ['IP Family Policy', cell(s.ipFamilyPolicy)],
    ['IP Families', cell(s.ipFamilies)],
    ['IP', clusterIpCell(o.object)],
    ['IPs', cell(s.clusterIPs)],
  ];
  if (externalIpCell(o.object) !== '<none>') lines.push(['External IPs', externalIpCell(o.object)]);
  const ready = eps.rows.filter((r) => r.ready);
  for (const p of records(s.ports)) {
    const proto = typeof p.protocol === 'string' ? p.protocol : 'TCP';
    const name = typeof p.name === 'string' && p.name ? p.name : '<unset>';
    lines.push(['Port', `${name}  ${String(p.port)}/${proto}`]);
    lines.push(['TargetPort', `${String(p.targetPort ?? p.port)}/${proto}`]);
    if (typeof p.nodePort === 'number' && p.nodePort > 0)
      lines.push(['NodePort', `${name}  ${p.nodePort}/${proto}`]);
    lines.push(['Endpoints', cell(ready.map((r) => r.address))]);
  }
  lines.push(['Session Affinity', cell(s.sessionAffinity ?? 'None')]);
  if (s.externalTrafficPolicy) lines.push(['External Traffic Policy', cell(s.externalTrafficPolicy)]);
  if (s.internalTrafficPolicy) lines.push(['Internal Traffic Policy', cell(s.internalTrafficPolicy)]);
  if (typeof s.healthCheckNodePort === 'number' && s.healthCheckNodePort > 0)
    lines.push(['HealthCheck NodePort', String(s.healthCheckNodePort)]);
  lines.push(['Created', cell(meta.creationTimestamp)]);
  const width = Math.max(...lines.map(([k]) => k.length)) + 2;
  // The values come from the registry: escaped as the tables' cells are.
  let out = lines.map(([k, v]) => `${`${k}:`.padEnd(width)}${terminalText(v)}`).join('\n') + '\n';
  out += `\nEndpoint slices (label ${SERVICE_NAME_LABEL}=${terminalText(o.name)}): ${eps.slices.length}\n`;
  if (eps.rows.length) {
    out += formatTable({
      headers: ['slice', 'address', 'ports', 'ready', 'serving', 'terminating', 'node', 'zone'],
      rows: eps.rows.map((r) => [
        r.slice,
        r.address,
        r.ports,
        String(r.ready),
        String(r.serving),
        String(r.terminating),
        cell(r.nodeName),
        cell(r.zone),
      ]),
    });
  } else out += '  <no endpoints>\n';
  for (const p of eps.problems) out += `warning: ${terminalText(p)}\n`;
  return out;
}

const describe = defineCommand({
  words: ['describe'],
  summary:
    'Show a Service and its endpoints from the EndpointSlices, or a Pod with its address and attachment (kubectl describe).',
  usage: 'service|pod NAME... [-n NS]',
  flags: DESCRIBE_FLAGS,
  async run(ctx, flags: FlagValues<typeof DESCRIBE_FLAGS>, args) {
    const usage = 'weftctl describe service|pod [NAME...] [-n NS]';
    const kind = kindOf(args[0], usage);
    if (kind !== 'Service' && kind !== 'Pod')
      throw new UsageError(`describe shows services and pods: ${usage}`);
    const ns = flags.namespace ?? DEFAULT_NAMESPACE;
    if (kind === 'Pod') {
      const { items, problems } = await readObjects(ctx, kind, { namespace: ns, names: args.slice(1) });
      if (!items.length && !problems) {
        ctx.io.stderr(`No resources found in ${ns} namespace.\n`);
        return 0;
      }
      const attachments = await podAttachmentsOf(ctx, ns);
      ctx.print(items.length === 1 ? items[0]?.object : items.map((o) => o.object), () =>
        items.map((o) => describePod(o, attachments.get(`${o.namespace}/${o.name}`), Date.now())).join('\n'),
      );
      return problems ? 1 : 0;
    }
    const { items, problems } = await readObjects(ctx, kind, { namespace: ns, names: args.slice(1) });
    if (!items.length && !problems) {
      ctx.io.stderr(`No resources found in ${ns} namespace.\n`);
      return 0;
    }
    const described: { o: StoredObject; eps: Awaited<ReturnType<typeof endpointsOf>> }[] = [];
    for (const o of items) described.push({ o, eps: await endpointsOf(ctx, ns, o.name) });
    const data = described.map(({ o, eps }) => ({
      service: o.object,
      endpoints: eps.rows,
      endpointSlices: eps.slices,
    }));
    ctx.print(data.length === 1 ? data[0] : data, () =>
      described.map(({ o, eps }) => describeService(o, eps)).join('\n'),
    );
    return problems ? 1 : 0;
  },
});

export const objectCommands: Command[] = [apply, get, del, describe, label];

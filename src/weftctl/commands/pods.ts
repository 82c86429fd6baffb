/**
 * How weftctl shows pods and nodes: `get pods` (with `-o wide`: the IP and node, from the pod's
 * status, else from the attachment weft-cni recorded), `describe pod`, `get nodes`. Stored
 * objects are read as they are; a pod that fails validation is still listed, marked invalid,
 * with the reason (every cell and line escaped for the terminal).
 */
import { messageOf } from '../../errors/index.js';
import { terminalText } from '../../escape/index.js';
import {
  ZONE_LABEL,
  effectivePod,
  kindPrefix,
  parsePod,
  parsePodAttachment,
  type EffectivePod,
  type PodAttachment,
  type PodSpec,
} from '../../k8s/index.js';
import type { CommandContext } from '../command.js';
import { isRecord } from '../manifest.js';
import { cell, formatAge, formatTable, type Table } from '../output.js';

/** A stored object read back. */
export interface StoredObject {
  key: string;
  /** '' for a Node. */
  namespace: string;
  name: string;
  object: Record<string, unknown>;
}

/** The valid pod attachments of a namespace (all of them for undefined), by `ns/name`. */
export async function podAttachmentsOf(
  ctx: CommandContext,
  namespace: string | undefined,
): Promise<Map<string, PodAttachment>> {
  const store = await ctx.store();
  const base = kindPrefix(ctx.global.registryPrefix, 'PodAttachment');
  const { items } = await store.list(namespace === undefined ? base : `${base}${namespace}/`);
  const out = new Map<string, PodAttachment>();
  for (const kv of items) {
    const parts = kv.key.slice(base.length).split('/');
    const [ns, name] = parts;
    if (parts.length !== 2 || !ns || !name) continue;
    try {
      out.set(`${ns}/${name}`, parsePodAttachment(kv.key, ns, name, kv.value));
    } catch {
      // An invalid record gives no address, as the controller sees it.
    }
  }
  return out;
}

/** A stored pod parsed, or the reason it is not valid. */
function parsed(o: StoredObject): { pod: PodSpec } | { error: string } {
  try {
    return { pod: parsePod(o.key, o.namespace, o.name, JSON.stringify(o.object)) };
  } catch (err) {
    return { error: messageOf(err) };
  }
}

function status(p: EffectivePod): string {
  if (p.terminating) return 'Terminating';
  return p.ips.length ? 'Running' : 'Pending';
}

function age(obj: Record<string, unknown>, now: number): string {
  const ts = isRecord(obj.metadata) ? obj.metadata.creationTimestamp : undefined;
  const t = typeof ts === 'string' ? Date.parse(ts) : NaN;
  return Number.isNaN(t) ? '<unknown>' : formatAge((now - t) / 1000);
}

/** kubectl's `get pods` table: NAME READY STATUS AGE, and with wide IP and NODE. */
export function podTable(
  items: readonly StoredObject[],
  attachments: ReadonlyMap<string, PodAttachment>,
  opts: { withNamespace: boolean; now: number; wide: boolean },
): Table {
  return {
    headers: [
      ...(opts.withNamespace ? ['namespace'] : []),
      'name',
      'ready',
      'status',
      'age',
      ...(opts.wide ? ['ip', 'node'] : []),
    ],
    rows: items.map((o) => {
      const r = parsed(o);
      const lead = [...(opts.withNamespace ? [o.namespace] : []), o.name];
      if ('error' in r) {
        return [
          ...lead,
          '<invalid>',
          'Invalid',
          age(o.object, opts.now),
          ...(opts.wide ? ['<none>', '<none>'] : []),
        ];
      }
      const p = effectivePod(r.pod, attachments.get(`${o.namespace}/${o.name}`));
      return [
        ...lead,
        p.ready ? '1/1' : '0/1',
        status(p),
        age(o.object, opts.now),
        ...(opts.wide ? [cell(p.ips), cell(p.nodeName)] : []),
      ];
    }),
  };
}

/** `get nodes`: NAME ZONE AGE. */
export function nodeTable(items: readonly StoredObject[], now: number): Table {
  return {
    headers: ['name', 'zone', 'age'],
    rows: items.map((o) => {
      const labels =
        isRecord(o.object.metadata) && isRecord(o.object.metadata.labels) ? o.object.metadata.labels : {};
      return [o.name, cell(labels[ZONE_LABEL]), age(o.object, now)];
    }),
  };
}

/** `describe pod`: what the pod declares, its address and where it came from, its state. */
export function describePod(o: StoredObject, attachment: PodAttachment | undefined, now: number): string {
  const meta = isRecord(o.object.metadata) ? o.object.metadata : {};
  const r = parsed(o);
  const kv = (v: Readonly<Record<string, unknown>>) =>
    Object.keys(v).length
      ? Object.entries(v)
          .map(([k, x]) => `${k}=${String(x)}`)
          .join(',')
      : '<none>';
  const lines: [string, string][] = [
    ['Name', o.name],
    ['Namespace', o.namespace],
  ];
  let ports = '';
  if ('error' in r) {
    lines.push(['Status', 'Invalid']);
    lines.push(['Problem', r.error]);
  } else {
    const p = effectivePod(r.pod, attachment);
    const fromStatus = r.pod.podIPs.length > 0;
    lines.push(
      ['Node', cell(p.nodeName)],
      ['Labels', kv(r.pod.labels)],
      ['Status', status(p)],
      ['IP', cell(p.ips[0])],
      ['IPs', cell(p.ips)],
      ['Address from', p.ips.length ? (fromStatus ? 'pod status' : 'attachment (weft-cni)') : '<none>'],
      [
        'Ready',
        `${p.ready}${r.pod.ready === undefined && p.ips.length ? ' (no Ready condition: attached counts as ready)' : ''}`,
      ],
      ['Host network', String(r.pod.hostNetwork)],
    );
    if (p.terminating) {
      lines.push([
        'Terminating',
        `since deletion was requested; removed at ${cell(meta.deletionTimestamp)} (grace ${cell(meta.deletionGracePeriodSeconds)}s)`,
      ]);
    }
    lines.push([
      'Attachment',
      attachment
        ? `node ${attachment.node}, container ${attachment.containerId}, ${attachment.ips.join(',')}`
        : '<none>',
    ]);
    if (r.pod.ports.length) {
      ports = formatTable({
        headers: ['port', 'name', 'protocol'],
        rows: r.pod.ports.map((x) => [String(x.containerPort), cell(x.name), x.protocol]),
      });
    }
  }
  const created = typeof meta.creationTimestamp === 'string' ? Date.parse(meta.creationTimestamp) : NaN;
  lines.push([
    'Created',
    Number.isNaN(created)
      ? '<unknown>'
      : `${cell(meta.creationTimestamp)} (${formatAge((now - created) / 1000)} ago)`,
  ]);
  const width = Math.max(...lines.map(([k]) => k.length)) + 2;
  // The values come from the registry: escaped as the tables' cells are.
  let out = lines.map(([k, v]) => `${`${k}:`.padEnd(width)}${terminalText(v)}`).join('\n') + '\n';
  if (ports) out += `\nContainer ports:\n${ports}`;
  return out;
}

/** weftctl's status command: every node's daemons, and in a lab the overlay matrix. */
import { boolFlag, defineFlags } from '../../cli/flag-parser.js';
import { LeaderElector } from '../../election/index.js';
import { messageOf } from '../../errors/index.js';
import { UsageError, defineCommand, expectArgs, type Command } from '../command.js';
import { weftctlInLab } from '../lab-control.js';
import { LAB_RUN_ENV, labStateDir, overlayAddress, resolveRun, type LabRunState } from '../lab-state.js';
import {
  buildReport,
  formatStatusReport,
  overlayMatrix,
  probeAll,
  readStatusRecords,
  type ListedRecord,
  type Reachability,
} from '../status-report.js';

const STATUS_FLAGS = defineFlags({
  statusLab: boolFlag({
    name: 'lab',
    description:
      'Report on a lab started by "weftctl lab up" (the only one running, or RUN): its etcd, ' +
      "/readyz from inside each node, and the overlay's reachability matrix. Implied inside a lab " +
      '(weftctl lab exec).',
    env: false,
  }),
});

/** The name the records use for a lab node: its alias (`n1`) when they use it, else `node1`. */
function recordName(lab: LabRunState, records: readonly ListedRecord[], i: number): string {
  const n = lab.nodes[i];
  if (!n) return '';
  return records.some((r) => r.record.node === n.alias) ? n.alias : n.name;
}

/** Each lab node's overlay address: its flanneld record's subnet, else the lease the lab saw. */
async function labMatrix(lab: LabRunState, records: readonly ListedRecord[]): Promise<Reachability> {
  const nodes = lab.nodes.map((n, i) => {
    const rec = records.find(
      (r) => r.record.daemon === 'weft-flanneld' && (r.record.node === n.name || r.record.node === n.alias),
    );
    const subnet = rec?.record.detail.subnet ?? n.subnet;
    const overlayIp = subnet ? overlayAddress(subnet) : undefined;
    return { node: recordName(lab, records, i), netns: n.netns, ...(overlayIp ? { overlayIp } : {}) };
  });
  return overlayMatrix(nodes);
}

const status = defineCommand({
  words: ['status'],
  summary: "Every node's daemons: ready, last sync and live /readyz (and a lab's overlay matrix).",
  usage: '[--lab [RUN]]',
  description:
    'Reads the status records the daemons keep under <registry-prefix>/status/ (TTL-bound: a\n' +
    "stopped daemon has none) and asks each record's health URL for /readyz (2 s timeout).\n" +
    'READY is the registry\'s view (a record not refreshed for 60 s is "stale"); READYZ is the\n' +
    'live answer ("-" when not asked: a loopback URL of another machine). Exit 0 when every\n' +
    'daemon is ready, 1 otherwise; the last line says why. With --lab (or inside a lab), both\n' +
    "daemons must run on every node, and each node pings every other node's overlay address\n" +
    "(its lease's first address, on flannel.1). The weft-controller leader is named from its\n" +
    'election key (<registry-prefix>/leases/weft-controller).',
  flags: STATUS_FLAGS,
  async run(ctx, flags, args) {
    expectArgs(args, 0, 1, '[--lab [RUN]]');
    const envRun = ctx.io.env[LAB_RUN_ENV] || undefined;
    let lab: LabRunState | undefined;
    if (flags.statusLab || envRun) {
      const entry = resolveRun(labStateDir(ctx.io.env), args[0] ?? envRun);
      if (entry.state.runId !== envRun) {
        // The lab's etcd and health listeners are only reachable from its namespaces.
        return weftctlInLab(
          entry.state,
          [
            'status',
            '-o',
            ctx.format,
            '--registry-prefix',
            ctx.global.registryPrefix,
            '--etcd-prefix',
            ctx.global.etcdPrefix,
          ],
          ctx.io.env,
          ctx.io,
        );
      }
      lab = entry.state;
    } else if (args.length) {
      throw new UsageError(`unexpected argument "${args[0] ?? ''}": a RUN goes with --lab`);
    }
    const store = await ctx.store();
    const { prefix, records, invalid } = await readStatusRecords(store, ctx.global.registryPrefix);
    const netnsOf = (node: string) => lab?.nodes.find((n) => n.name === node || n.alias === node)?.netns;
    // weft-controller's default election key (its --leader-elect-resource-name).
    const electionKey = `${ctx.global.registryPrefix.replace(/\/+$/, '')}/leases/weft-controller`;
    const [probes, reachability, controllerLeader] = await Promise.all([
      probeAll(records, netnsOf),
      lab ? labMatrix(lab, records) : Promise.resolve(undefined),
      LeaderElector.holder(store, electionKey).catch((err: unknown) => {
        invalid.push({ key: electionKey, error: messageOf(err) });
        return undefined;
      }),
    ]);
    const now = Date.now();
    const report = buildReport(records, invalid, {
      prefix,
      now,
      probes,
      ...(lab?.daemons ? { expectNodes: lab.nodes.map((_, i) => recordName(lab, records, i)) } : {}),
      requireReachable: lab !== undefined,
      ...(reachability ? { reachability } : {}),
      ...(lab ? { lab: lab.runId } : {}),
      ...(controllerLeader ? { controllerLeader } : {}),
    });
    ctx.print(report, (r) => formatStatusReport(r, now));
    return report.ready ? 0 : 1;
  },
});

export const statusCommands: Command[] = [status];

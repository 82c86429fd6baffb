/** weftctl's lab commands: the test lab (test/lab) as a tool for people. */
import { boolFlag, choiceFlag, defineFlags, intFlag, listFlag, stringFlag } from '../../cli/flag-parser.js';
import { UsageError, defineCommand, expectArgs, type Command } from '../command.js';
import {
  labClean,
  labDown,
  labExec,
  labPodAdd,
  labPodDel,
  labUp,
  parseLabelsFlag,
  parsePortFlag,
} from '../lab-control.js';
import { LAB_RUN_ENV, labStateDir, listRuns, resolveRun, type LabRunState } from '../lab-state.js';
import { formatAge, formatTable } from '../output.js';

const UP_TIMEOUT_MS = 300_000;

const UP_FLAGS = defineFlags({
  labNodes: intFlag({
    name: 'nodes',
    description: 'Number of nodes (namespaces n1..nN on one underlay bridge).',
    default: 3,
    min: 1,
    max: 20,
    env: false,
  }),
  labEtcdMembers: choiceFlag({
    name: 'etcd-members',
    description: 'Members of the etcd cluster, each in its own namespace.',
    choices: ['1', '3'],
    default: '1',
    env: false,
  }),
  labNoDaemons: boolFlag({
    name: 'no-daemons',
    description: 'Only the namespaces and etcd: start neither weft-flanneld nor weft-proxy.',
    env: false,
  }),
});

const RUN_FLAGS = defineFlags({
  labRun: stringFlag({
    name: 'run',
    metavar: '<run>',
    description: 'The lab (run id or its last part); needed only when several labs run.',
    env: false,
  }),
});

const POD_ADD_FLAGS = defineFlags({
  ...RUN_FLAGS,
  labPodLabels: stringFlag({
    name: 'labels',
    metavar: '<k=v,...>',
    description: "Labels of the pod's Pod object, comma-separated, as kubectl run takes them.",
    env: false,
  }),
  labPodPorts: listFlag({
    name: 'port',
    metavar: '<[name:]port[/udp]>',
    description: 'A container port of the pod (repeatable); a name lets a Service target it by name.',
    env: false,
  }),
});

const USAGE_RUN = 'Several labs may run at once; with exactly one, RUN may be left out.';

/** The lab a command means: `--run`/RUN, else the one we are inside, else the only one running. */
function pickRun(env: NodeJS.ProcessEnv, arg: string | undefined) {
  return resolveRun(labStateDir(env), arg ?? (env[LAB_RUN_ENV] || undefined));
}

function summary(s: LabRunState): string {
  const nodes = formatTable({
    headers: ['node', 'alias', 'ip', 'lease', 'namespace'],
    rows: s.nodes.map((n) => [n.name, n.alias, n.ip, n.subnet ?? '-', n.netns]),
  });
  const endpoints = s.etcd.map((m) => m.endpoint).join(',');
  const first = s.nodes[0]?.alias ?? 'n1';
  return (
    `lab ${s.runId} is up (supervisor pid ${s.supervisorPid})\n\n${nodes}\n` +
    `etcd:      ${endpoints}\n` +
    `daemons:   ${s.daemons ? `weft-flanneld (vxlan) and weft-proxy (${s.proxyMode ?? '?'}) on every node` : 'none (--no-daemons)'}\n` +
    `logs:      ${s.labDir} (supervisor: ${s.logFile})\n\n` +
    'try:\n' +
    `  weftctl lab exec ${first} -- weftctl leases\n` +
    `  weftctl lab exec ${first} -- ip -br addr\n` +
    `  weftctl lab pod add ${first} web\n` +
    '  weftctl status --lab\n' +
    '  weftctl lab down\n'
  );
}

const up = defineCommand({
  words: ['lab', 'up'],
  summary: 'Start a lab: nodes in namespaces, etcd, weft-flanneld and weft-proxy; it keeps running.',
  usage: '[--nodes N] [--etcd-members 1|3] [--no-daemons]',
  description:
    'A supervisor process owns the lab until "weftctl lab down"; its state and socket are in\n' +
    '$WEFT_LAB_STATE_DIR (default /run/weft-lab). Needs root. Waits until every daemon is ready\n' +
    "(or prints the end of the supervisor's log and exits 1).",
  flags: UP_FLAGS,
  async run(ctx, flags, args) {
    expectArgs(args, 0, 0, '[--nodes N] [--etcd-members 1|3] [--no-daemons]');
    const state = await labUp({
      stateDir: labStateDir(ctx.io.env),
      nodes: flags.labNodes,
      etcdMembers: flags.labEtcdMembers === '3' ? 3 : 1,
      daemons: !flags.labNoDaemons,
      timeoutMs: UP_TIMEOUT_MS,
      env: ctx.io.env,
      progress: (step) => ctx.io.stderr(`lab: ${step}\n`),
    });
    ctx.print(state, summary);
  },
});

const down = defineCommand({
  words: ['lab', 'down'],
  summary: 'Tear a lab down: stop its processes, delete its namespaces, end its supervisor.',
  usage: '[RUN]',
  description: USAGE_RUN,
  flags: {},
  async run(ctx, _flags, args) {
    expectArgs(args, 0, 1, '[RUN]');
    const run = pickRun(ctx.io.env, args[0]);
    const report = await labDown(run, labStateDir(ctx.io.env));
    ctx.print(
      report,
      (r) =>
        [
          `lab ${r.runId} ${r.graceful ? 'torn down by its supervisor' : 'removed (supervisor forced)'}`,
          ...r.removed.map((x) => `  removed ${x}`),
          ...(r.left.length ? [`namespaces still present: ${r.left.join(', ')}`] : []),
        ].join('\n') + '\n',
    );
    return report.left.length ? 1 : 0;
  },
});

const labStatus = defineCommand({
  words: ['lab', 'status'],
  summary: 'List labs: run, phase, supervisor, nodes, pods, age.',
  flags: {},
  async run(ctx, _flags, args) {
    expectArgs(args, 0, 0, '');
    const dir = labStateDir(ctx.io.env);
    const now = Date.now();
    const runs = listRuns(dir).map((r) => ({ ...r.state, supervisorAlive: r.alive }));
    ctx.print(runs, (rs) =>
      rs.length
        ? formatTable({
            headers: ['run', 'phase', 'supervisor', 'nodes', 'pods', 'etcd', 'age'],
            rows: rs.map((r) => [
              r.runId,
              r.supervisorAlive ? r.phase : `${r.phase} (dead: weftctl lab clean)`,
              `${r.supervisorPid}${r.supervisorAlive ? '' : ' dead'}`,
              r.nodes.map((n) => n.alias).join(',') || '-',
              r.pods.map((p) => `${p.node}/${p.name}`).join(',') || '-',
              r.etcd.map((m) => m.endpoint).join(',') || '-',
              formatAge((now - Date.parse(r.startedAt)) / 1000),
            ]),
          })
        : `no labs (state dir ${dir})\n`,
    );
  },
});

const clean = defineCommand({
  words: ['lab', 'clean'],
  summary: 'Remove what dead runs left: namespaces, temp dirs, state files.',
  flags: {},
  async run(ctx, _flags, args) {
    expectArgs(args, 0, 0, '');
    const report = await labClean(labStateDir(ctx.io.env));
    ctx.print(report, (r) => {
      const all = [...r.stale, ...r.files];
      return all.length ? `${all.map((x) => `removed ${x}`).join('\n')}\n` : 'nothing to clean\n';
    });
  },
});

const exec = defineCommand({
  words: ['lab', 'exec'],
  summary: "Run a command in a node's (or server's, pod's) namespace; exits with its code.",
  usage: 'NODE -- CMD [ARGS...]',
  description:
    'NODE is n1 or node1, underlay, etcd1, or a pod as n1/web. Inside, weftctl and the weft\n' +
    "programs are on PATH, WEFTCTL_ETCD_ENDPOINTS names the lab's etcd and WEFT_LAB_RUN the\n" +
    `run, so "weftctl leases" and "weftctl status" just work. ${USAGE_RUN.replace('RUN', '--run')}`,
  flags: RUN_FLAGS,
  async run(ctx, flags, args) {
    expectArgs(args, 1, 1, 'NODE -- CMD [ARGS...]');
    if (!ctx.rest?.length) throw new UsageError('missing command: weftctl lab exec NODE -- CMD [ARGS...]');
    const run = pickRun(ctx.io.env, flags.labRun);
    return labExec(run.state, args[0] as string, ctx.rest, ctx.io.env);
  },
});

const podAdd = defineCommand({
  words: ['lab', 'pod', 'add'],
  summary: 'Add a pod to a node: declare its Pod object, wire it through weft-cni, print its address.',
  usage: 'NODE NAME [--labels k=v,k2=v2] [--port [name:]port]...',
  description:
    "The Pod object (labels, node, container ports; namespace default) goes to the lab's etcd and\n" +
    'weft-cni records the address it got, so Services that select its labels reach it. The pod\n' +
    `gets its own namespace; reach it with "weftctl lab exec NODE/NAME -- ...". ${USAGE_RUN.replace('RUN', '--run')}`,
  flags: POD_ADD_FLAGS,
  async run(ctx, flags, args) {
    expectArgs(args, 2, 2, 'NODE NAME');
    const labels = flags.labPodLabels !== undefined ? parseLabelsFlag(flags.labPodLabels) : undefined;
    const ports = flags.labPodPorts.map(parsePortFlag);
    const run = pickRun(ctx.io.env, flags.labRun);
    const pod = await labPodAdd(run.state, args[0] as string, args[1] as string, {
      ...(labels && { labels }),
      ...(ports.length && { ports }),
    });
    ctx.print(pod, (p) => `pod ${p.node}/${p.name}: ${p.ip} (namespace ${p.netns})\n`);
  },
});

const podDel = defineCommand({
  words: ['lab', 'pod', 'del'],
  summary: 'Remove a pod: weft-cni DEL, its namespace and its Pod object.',
  usage: 'NODE NAME',
  description: USAGE_RUN.replace('RUN', '--run'),
  flags: RUN_FLAGS,
  async run(ctx, flags, args) {
    expectArgs(args, 2, 2, 'NODE NAME');
    const run = pickRun(ctx.io.env, flags.labRun);
    const pod = await labPodDel(run.state, args[0] as string, args[1] as string);
    ctx.print(pod, (p) => `pod ${p.node}/${p.name} removed\n`);
  },
});

export const labCommands: Command[] = [up, down, labStatus, clean, exec, podAdd, podDel];

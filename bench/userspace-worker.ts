/**
 * The userspace contender of the proxy benchmark, run by proxiers.ts as its own process inside
 * the benchmark's namespace (`ip netns exec <ns> prlimit --nofile … node userspace-worker.js`).
 * The userspace proxier opens one listening socket per service port in the namespace of the
 * process that runs it, so it cannot run in the benchmark's own process (that would bind
 * thousands of ports in the root namespace); its nftables rules still go through `ip netns exec`
 * like every other contender's, so the figures compare.
 *
 * One JSON request per stdin line, one JSON reply per stdout line:
 * - `{op: 'capacity', services}` → `{ok, reason?}`: whether the open-file limit and the ephemeral
 *   port range hold that many listeners (plus the one-service adds);
 * - `{op: 'full', servicePorts}` → `{ok, ms, cpuMs, commands}`: a full sync, timed here;
 * - `{op: 'partial', id, servicePort}` → the same for a partial sync of `id` (null removes it);
 * - `{op: 'verify', servicePort}` → `{ok, verified}`: the service port has a listener and its
 *   redirect rule is in the kernel;
 * - `{op: 'close'}` closes the proxier and exits.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { messageOf } from '../src/errors/index.js';
import type { ServicePort } from '../src/proxy/model/index.js';
import { createUserspaceProxier } from '../src/proxy/userspace/index.js';
import { countingRunner, cpuTimeMs, elapsedMs, netnsRunner } from './harness.js';
import { benchContext, type WorkerReply, type WorkerRequest } from './proxiers.js';

/** Open files the worker needs besides its listeners (stdio, epoll, the relay's threads…). */
export const USERSPACE_FD_MARGIN = 256;

/** The soft open-file limit of this process (from /proc/self/limits), or undefined. */
export function openFileLimit(limits = readFileSync('/proc/self/limits', 'utf8')): number | undefined {
  const m = /^Max open files\s+(\S+)/m.exec(limits);
  if (!m?.[1]) return undefined;
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

/**
 * Why `listeners` listening sockets cannot be opened here, or undefined when they can: each
 * needs a file descriptor and an ephemeral port of the namespace.
 */
export function capacityProblem(
  listeners: number,
  fdLimit: number | undefined,
  portRange: [number, number],
): string | undefined {
  const needFds = listeners + USERSPACE_FD_MARGIN;
  if (fdLimit !== undefined && fdLimit < needFds) {
    return `needs ${needFds} open files (one listening socket per service port), the limit is ${fdLimit}`;
  }
  const ports = portRange[1] - portRange[0] + 1;
  if (ports < listeners) {
    return `needs ${listeners} ephemeral ports (one listener per service port), the range ${portRange[0]}–${portRange[1]} has ${ports}`;
  }
  return undefined;
}

function portRange(): [number, number] {
  const [lo = 32768, hi = 60999] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
    .trim()
    .split(/\s+/)
    .map(Number);
  return [lo, hi];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { netns: { type: 'string' }, 'timeout-ms': { type: 'string', default: '180000' } },
  });
  if (!values.netns) throw new Error('userspace-worker: --netns is required');
  const counter = countingRunner(netnsRunner(values.netns, Number(values['timeout-ms'])));
  const proxier = await createUserspaceProxier(benchContext(counter.runner));
  const state = new Map<string, ServicePort>();
  const reply = (r: WorkerReply): void => {
    process.stdout.write(`${JSON.stringify(r)}\n`);
  };
  const timedSync = async (changed: Set<string> | undefined): Promise<void> => {
    counter.calls = 0;
    const start = process.hrtime.bigint();
    const cpu = cpuTimeMs();
    await proxier.sync({ servicePorts: state, changed });
    reply({ ok: true, ms: elapsedMs(start), cpuMs: cpuTimeMs() - cpu, commands: counter.calls });
  };

  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.trim() === '') continue;
    let req: WorkerRequest;
    try {
      req = JSON.parse(line) as WorkerRequest;
    } catch (err) {
      reply({ ok: false, error: `bad request: ${messageOf(err)}` });
      continue;
    }
    try {
      switch (req.op) {
        case 'capacity': {
          const reason = capacityProblem(req.services + req.adds, openFileLimit(), portRange());
          reply({ ok: true, ...(reason && { reason }) });
          break;
        }
        case 'full':
          state.clear();
          for (const sp of req.servicePorts) state.set(sp.id, sp);
          await timedSync(undefined);
          break;
        case 'partial':
          if (req.servicePort) state.set(req.id, req.servicePort);
          else state.delete(req.id);
          await timedSync(new Set([req.id]));
          break;
        case 'verify': {
          const sp = req.servicePort;
          const port = proxier.listenerPorts().get(sp.id);
          const res = await counter.runner('nft', ['list', 'table', 'ip', 'weft-userspace']);
          const verified =
            port !== undefined &&
            res.code === 0 &&
            res.stdout.includes(`ip daddr ${sp.clusterIP} tcp dport ${sp.port} redirect to :${port}`);
          reply({ ok: true, verified });
          break;
        }
        case 'close':
          await proxier.close();
          reply({ ok: true });
          process.exit(0);
      }
    } catch (err) {
      reply({ ok: false, error: messageOf(err).slice(0, 500) });
    }
  }
  await proxier.close();
}

// Run as a script; imported (tests) only for its helpers.
if (process.argv[1]?.endsWith('userspace-worker.js')) {
  main().catch((err: unknown) => {
    process.stderr.write(`userspace-worker: ${messageOf(err)}\n`);
    process.exit(1);
  });
}

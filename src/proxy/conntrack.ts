/**
 * Stale UDP conntrack entries. UDP has no connection end, so a flow DNATed to an endpoint that is
 * gone keeps going there (black-holed) for as long as the client keeps sending, and a flow that
 * hit a service while it had no endpoints keeps its "rejected" entry. As kube-proxy does, after
 * a successful sync the entries of removed endpoints, and those of services that went from no
 * endpoints to some, are deleted. TCP and SCTP need none of this: their flows end and retry.
 */
import { messageOf } from '../errors/index.js';
import type { CommandRunner } from '../exec/index.js';
import type { Logger } from '../log/index.js';
import { selectEndpoints, type ServicePort, type ServicePortMap } from './model/index.js';

/**
 * The `conntrack` argument lists that clear the stale UDP entries between two states of one
 * family's service ports. `ids` limits the comparison (a partial sync's changed ids); undefined
 * compares every id of both maps. Pure; the order is stable (by id, then address).
 */
export function conntrackCleanupArgs(
  before: ServicePortMap,
  after: ServicePortMap,
  ids?: Iterable<string>,
): string[][] {
  const all = [...new Set(ids ?? [...before.keys(), ...after.keys()])].sort();
  const out: string[][] = [];
  const seen = new Set<string>();
  const add = (args: string[]) => {
    const k = args.join(' ');
    if (seen.has(k)) return;
    seen.add(k);
    out.push(args);
  };
  for (const id of all) {
    const old = before.get(id);
    const cur = after.get(id);
    const oldUdp = old?.protocol === 'UDP' ? old : undefined;
    const curUdp = cur?.protocol === 'UDP' ? cur : undefined;
    if (!oldUdp && !curUdp) continue;
    const oldEps = oldUdp ? usableIps(oldUdp) : new Set<string>();
    const curEps = curUdp ? usableIps(curUdp) : new Set<string>();

    // Flows DNATed to an endpoint that is no longer used: from every address the service had.
    if (oldUdp) {
      const fam = familyArgs(oldUdp);
      for (const ep of [...oldEps].sort()) {
        if (curEps.has(ep)) continue;
        for (const ip of serviceIps(oldUdp)) {
          add([...fam, '-D', '-p', 'udp', '--orig-dst', ip, '--dst-nat', ep]);
        }
        if (oldUdp.nodePort > 0) {
          add([...fam, '-D', '-p', 'udp', '--orig-port-dst', String(oldUdp.nodePort), '--dst-nat', ep]);
        }
      }
    }

    // No endpoints before, some now: entries made while the traffic was rejected must go.
    if (curUdp && oldEps.size === 0 && curEps.size > 0) {
      const fam = familyArgs(curUdp);
      for (const ip of serviceIps(curUdp)) add([...fam, '-D', '-p', 'udp', '--orig-dst', ip]);
      if (curUdp.nodePort > 0) {
        add([...fam, '-D', '-p', 'udp', '--orig-port-dst', String(curUdp.nodePort)]);
      }
    }
  }
  return out;
}

/** The endpoint addresses traffic may be sent to (any policy): what entries can point at. */
function usableIps(sp: ServicePort): Set<string> {
  return new Set(selectEndpoints(sp).cluster.map((e) => e.ip));
}

function serviceIps(sp: ServicePort): string[] {
  return [...new Set([sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs])];
}

function familyArgs(sp: ServicePort): string[] {
  return sp.family === 6 ? ['-f', 'ipv6'] : [];
}

/** True when `conntrack -D` failed only because nothing matched (exit 1, "0 flow entries"). */
export function isNothingDeleted(code: number, stderr: string): boolean {
  return code === 1 && /0 flow entries/.test(stderr);
}

/**
 * Runs the deletions. Failures are logged and counted, never thrown: a stale entry costs one
 * client a retry, while a failed sync would hold back every other change.
 * Resolves the number of failed commands.
 */
export async function clearStaleConntrack(
  runner: CommandRunner,
  argsList: readonly string[][],
  log: Logger,
): Promise<number> {
  let failed = 0;
  for (const args of argsList) {
    try {
      const res = await runner('conntrack', args);
      if (res.code === 0 || isNothingDeleted(res.code, res.stderr)) continue;
      failed++;
      log.warn({ args, code: res.code, stderr: res.stderr.trim() }, 'conntrack cleanup failed');
    } catch (err) {
      failed++;
      log.warn({ args, err: messageOf(err) }, 'conntrack cleanup failed');
    }
  }
  return failed;
}

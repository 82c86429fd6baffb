/**
 * The assertion every overlay lab test makes after it broke something: two pods still talk,
 * over ICMP and over TCP (to the responder `lab.startTcpServer(pod, 8080)` started).
 */
import type { Test } from 'tap';
import type { Lab, LabPod } from '../lab/index.js';

/** Port the lab tests start their pod responders on. */
export const RESPONDER_PORT = 8080;

/** Asserts that `from` pings `to` (3 of 3) and gets `to`'s name back over TCP. */
export async function assertPodsTalk(
  t: Test,
  lab: Lab,
  from: LabPod,
  to: LabPod,
  what: string,
): Promise<void> {
  const ping = await lab.exec(from, 'ping', ['-n', '-c', '3', '-i', '0.1', '-W', '1', to.ip], {
    allowFail: true,
  });
  t.match(
    ping.stdout,
    /\b3 received\b/,
    `${what}: ${from.node}/${from.name} pings ${to.node}/${to.name} (${to.ip})`,
    {
      output: ping.stdout,
    },
  );
  const reply = await lab
    .tcpRequest(from, to.ip, RESPONDER_PORT, { timeoutMs: 3000 })
    .catch((err: unknown) => `error: ${String(err)}`);
  t.equal(reply.trim(), to.name, `${what}: ${from.node} → ${to.node} over TCP`);
}

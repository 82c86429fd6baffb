/**
 * sd_notify for Type=notify units. Node has no AF_UNIX datagram sockets, so the message goes
 * through systemd's own `systemd-notify` with MAINPID naming the daemon; the unit sets
 * NotifyAccess=all so systemd accepts it from the helper process.
 */
import { execFile } from 'node:child_process';

/** Options for {@link sdNotify}. */
export interface NotifyOptions {
  /** Environment to read NOTIFY_SOCKET from. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** PID to report as the main PID. Default process.pid. */
  pid?: number;
}

/**
 * Sends `state` lines (e.g. `READY=1`, `STATUS=...`) to systemd. Resolves false without doing
 * anything when NOTIFY_SOCKET is unset (not run by systemd), and false when sending failed.
 */
export function sdNotify(state: Record<string, string>, opts: NotifyOptions = {}): Promise<boolean> {
  const env = opts.env ?? process.env;
  if (!env.NOTIFY_SOCKET) return Promise.resolve(false);
  const args = [`--pid=${opts.pid ?? process.pid}`, ...Object.entries(state).map(([k, v]) => `${k}=${v}`)];
  return new Promise((resolve) => {
    execFile('systemd-notify', args, { env, timeout: 5_000 }, (err) => resolve(!err));
  });
}

/**
 * Run a test file inside a throwaway network namespace.
 *
 * A netlink socket talks to the namespace of the process that opened it, and Node cannot
 * setns(2). So the file runs twice: the outer process (started by tap) creates a namespace and
 * re-executes the same file under `ip netns exec`, with the same Node flags (tap's TypeScript
 * loader is in `process.execArgv`); tap reads the child's TAP output as a subtest. The inner
 * process, told its namespace by WEFT_TEST_NETNS, first proves it is really inside it, then runs
 * the body. The outer process deletes the namespace and checks it is gone.
 *
 *   runInNetns(import.meta.url, async (t) => { ...assertions that change kernel state... });
 */
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { run } from '../lab/exec.js';
import { cleanupStale, createNetns, deleteNetns, listNetns, netnsName, newRunId } from '../lab/netns.js';

/** Set in the inner process to the namespace it runs in. */
export const NETNS_ENV = 'WEFT_TEST_NETNS';

/** The test object the body receives. */
export type NetnsTest = Test;

/** Options for {@link runInNetns}. */
export interface RunInNetnsOptions {
  /** Role part of the namespace name (`wt-<pid>-<rand>-<role>`). Default `nl`. */
  role?: string;
}

/**
 * In the outer process: create a namespace, run this file inside it as a subtest, delete the
 * namespace. In the inner process: run `body` (and only there: it may change kernel state).
 */
export function runInNetns(
  fileUrl: string,
  body: (t: NetnsTest, ns: string) => Promise<void> | void,
  opts: RunInNetnsOptions = {},
): void {
  const inner = process.env[NETNS_ENV];
  if (inner) {
    t.test(`inside namespace ${inner}`, async (t) => {
      await assertInNetns(inner);
      await body(t, inner);
    });
    return;
  }
  const file = fileURLToPath(fileUrl);
  t.test(`${basename(file)} in a throwaway namespace`, async (t) => {
    await cleanupStale();
    const ns = netnsName(newRunId(), opts.role ?? 'nl');
    await createNetns(ns);
    t.teardown(() => deleteNetns(ns));
    try {
      // setpriv --pdeathsig: if this process dies, the kernel kills the child, and a later
      // cleanupStale() removes the namespace (its name carries our, by then dead, PID).
      await t.spawn(
        'ip',
        [
          'netns',
          'exec',
          ns,
          'setpriv',
          '--pdeathsig',
          'KILL',
          '--',
          process.execPath,
          ...process.execArgv,
          file,
        ],
        { env: { ...process.env, [NETNS_ENV]: ns } },
        `${basename(file)} inside ${ns}`,
      );
    } finally {
      await deleteNetns(ns);
    }
    t.notOk((await listNetns()).includes(ns), `namespace ${ns} removed`);
  });
}

/**
 * Refuse to run a body that changes kernel state anywhere but in the named namespace (a broken
 * re-exec would otherwise program the root namespace).
 */
async function assertInNetns(ns: string): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'identify', String(process.pid)]);
  const actual = stdout.trim();
  if (actual !== ns) {
    throw new Error(`refusing to run: ${NETNS_ENV}=${ns} but this process is in namespace "${actual}"`);
  }
}

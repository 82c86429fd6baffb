/**
 * Runs the Proxier compliance suite once per mode, each in a fresh network namespace.
 *
 * A userspace proxier's listeners live in the process that creates it, and Node cannot setns(2),
 * so (as in netns-test.ts) the file re-executes itself under `ip netns exec`, once per mode, with
 * the mode in WEFT_PROXIER_MODE; the inner process checks it really is inside its namespace before
 * it touches the kernel. A mode whose module is not there yet is skipped with a message.
 */
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import type { CommandRunner } from '../../src/exec/index.js';
import type { ProxierFactory, ProxyMode } from '../../src/proxy/proxier.js';
import { run } from '../lab/exec.js';
import { cleanupStale, createNetns, deleteNetns, listNetns, netnsName, newRunId } from '../lab/netns.js';

/** Set in the inner process to its namespace. */
export const COMPLIANCE_NETNS_ENV = 'WEFT_TEST_NETNS';
/** Set in the inner process to the mode under test. */
export const COMPLIANCE_MODE_ENV = 'WEFT_PROXIER_MODE';

const SRC_PROXY = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'proxy');

/** How each mode's module is found and how its rules are wiped "by someone else". */
export interface ModeInfo {
  mode: ProxyMode;
  /** The module's folder under src/proxy. */
  dir: string;
  /** The factory's export name. */
  factory: string;
  /** Shell commands that wipe this mode's kernel state, as an admin or another tool might. */
  wipe: string[][];
}

/** The three modes. */
export const MODES: readonly ModeInfo[] = [
  {
    mode: 'nftables',
    dir: 'nftables',
    factory: 'createNftablesProxier',
    wipe: [['nft', 'flush', 'ruleset']],
  },
  {
    mode: 'iptables',
    dir: 'iptables',
    factory: 'createIptablesProxier',
    wipe: ['mangle', 'nat', 'filter'].flatMap((table) => [
      ['iptables', '-t', table, '-F'],
      ['iptables', '-t', table, '-X'],
    ]),
  },
  {
    mode: 'userspace',
    dir: 'userspace',
    factory: 'createUserspaceProxier',
    wipe: [['nft', 'flush', 'ruleset']],
  },
];

/** True when the mode's module exists in the sources. */
export function modeAvailable(info: ModeInfo): boolean {
  return (
    existsSync(join(SRC_PROXY, info.dir, 'index.ts')) || existsSync(join(SRC_PROXY, info.dir, 'index.js'))
  );
}

/** Imports the mode's factory (a variable path, so this compiles before the module exists). */
export async function loadFactory(info: ModeInfo): Promise<ProxierFactory> {
  const path = join(SRC_PROXY, info.dir, 'index.js');
  const mod = (await import(path)) as Record<string, unknown>;
  const f = mod[info.factory];
  if (typeof f !== 'function') throw new Error(`${path} does not export ${info.factory}`);
  return f as ProxierFactory;
}

/** A CommandRunner that runs every command inside `ns` through `ip netns exec`. */
export function netnsRunner(ns: string): CommandRunner {
  return async (cmd, args, input) => {
    const r = await run('ip', ['netns', 'exec', ns, cmd, ...args], {
      allowFail: true,
      timeoutMs: 30_000,
      env: { ...process.env, LC_ALL: 'C' },
      ...(input !== undefined ? { input } : {}),
    });
    return r;
  };
}

/**
 * Outer process: per mode, a namespace and this file re-run inside it. Inner process: `body` for
 * the mode it was started for.
 */
export function runPerMode(
  fileUrl: string,
  body: (t: Test, info: ModeInfo, ns: string) => Promise<void>,
): void {
  const inner = process.env[COMPLIANCE_NETNS_ENV];
  const innerMode = process.env[COMPLIANCE_MODE_ENV];
  if (inner && innerMode) {
    const info = MODES.find((m) => m.mode === innerMode);
    if (!info) throw new Error(`unknown ${COMPLIANCE_MODE_ENV}=${innerMode}`);
    t.test(`${info.mode} proxier inside ${inner}`, async (t) => {
      const { stdout } = await run('ip', ['netns', 'identify', String(process.pid)]);
      if (stdout.trim() !== inner) {
        throw new Error(`refusing to run: expected namespace ${inner}, in "${stdout.trim()}"`);
      }
      await body(t, info, inner);
    });
    return;
  }
  const file = fileURLToPath(fileUrl);
  // Three modes, each a child process that loads TypeScript afresh: on a busy machine that alone
  // can pass the default 120 s.
  t.setTimeout(300_000);
  t.before(() => cleanupStale());
  for (const info of MODES) {
    const only = process.env.WEFT_PROXIER_ONLY?.split(',');
    const skip = !modeAvailable(info)
      ? `src/proxy/${info.dir}/index.ts does not exist yet: ${info.mode} mode not testable`
      : only && !only.includes(info.mode)
        ? `WEFT_PROXIER_ONLY=${only.join(',')}`
        : false;
    t.test(`${info.mode} proxier compliance`, { skip }, async (t) => {
      const ns = netnsName(newRunId(), `pc-${info.mode.slice(0, 4)}`);
      await createNetns(ns);
      try {
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
          { env: { ...process.env, [COMPLIANCE_NETNS_ENV]: ns, [COMPLIANCE_MODE_ENV]: info.mode } },
          `${basename(file)} (${info.mode}) inside ${ns}`,
        );
      } finally {
        await deleteNetns(ns);
      }
      t.notOk((await listNetns()).includes(ns), `namespace ${ns} removed`);
    });
  }
}

/**
 * A process that owns a lab is SIGKILLed; its servers must die with it (setpriv --pdeathsig)
 * and the next cleanupStale() must remove its namespaces and temp dir.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { cleanupStale, listNetns, pidsMentioning, processAlive, runDir, waitFor } from '../../lab/index.js';

t.setTimeout(60_000);

/** The type of a subtest's `t`. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const fixture = fileURLToPath(new URL('./fixtures/crash-child.ts', import.meta.url));

interface ChildEvent {
  event: 'run' | 'step' | 'up';
  runId?: string;
  pid?: number;
  step?: string;
  dir?: string;
  pids?: number[];
  namespaces?: string[];
}

/**
 * Start the fixture (with this test's own loader) and SIGKILL it as soon as `killWhen` holds
 * for one of its events. Resolves with what it reported before dying.
 */
async function crashChild(
  killWhen: (e: ChildEvent, runId: string) => boolean,
): Promise<{ runId: string; events: ChildEvent[]; signal: NodeJS.Signals | null }> {
  const child = spawn(process.execPath, [...process.execArgv, fixture], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
  const events: ChildEvent[] = [];
  let runId = '';
  const killed = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`fixture never reached the kill point; events: ${JSON.stringify(events)}`));
    }, 30_000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      let e: ChildEvent;
      try {
        e = JSON.parse(line) as ChildEvent;
      } catch {
        return; // not one of ours
      }
      events.push(e);
      if (e.event === 'run' && e.runId) runId = e.runId;
      if (runId && killWhen(e, runId)) {
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve();
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  await killed;
  const signal = await exited;
  return { runId, events, signal };
}

async function namespacesOf(runId: string): Promise<string[]> {
  return (await listNetns()).filter((n) => n.startsWith(`${runId}-`));
}

/** The checks after a crash: processes died with the owner; cleanupStale removes the rest. */
async function assertCleanedAfterCrash(t: Test, runId: string, pids: number[]): Promise<void> {
  t.ok(runId.startsWith('wt-'), `fixture reported its run id ${runId}`);
  // What the crash left behind, looked at first thing after the owner died.
  const left = await namespacesOf(runId);
  const dirLeft = existsSync(runDir(runId));
  // pdeathsig: the kernel kills the servers when their parent dies, before any clean-up ran.
  await waitFor(() => pids.every((p) => !processAlive(p)), {
    what: 'the crashed run processes to die',
    timeoutMs: 5_000,
  }).catch(() => undefined);
  t.same(
    pids.filter(processAlive),
    [],
    `processes of the crashed run (${pids.join(', ')}) died with their owner`,
  );
  t.same(pidsMentioning(runId), [], 'no process mentions the crashed run id');
  t.ok(left.length > 0, `the crash left namespaces behind (${left.join(', ')})`);
  t.ok(dirLeft, 'the crash left its temp dir behind');

  const removed = await cleanupStale();
  for (const ns of left) t.ok(removed.includes(ns), `cleanupStale removed ${ns}`);
  t.ok(removed.includes(runDir(runId)), `cleanupStale removed ${runDir(runId)}`);
  t.same(await namespacesOf(runId), [], 'ip netns list has nothing of the crashed run');
  t.notOk(existsSync(runDir(runId)), 'the temp dir is gone');
  t.same(pidsMentioning(runId), [], 'no process of the crashed run is left');
}

t.test('a lab whose owner is SIGKILLed once it is up', async (t) => {
  const { runId, events, signal } = await crashChild((e) => e.event === 'up');
  t.equal(signal, 'SIGKILL', 'the fixture was killed');
  const up = events.find((e) => e.event === 'up');
  t.ok(up, 'the fixture brought its lab up before being killed');
  const pids = up?.pids ?? [];
  t.ok(pids.length >= 2, `it reported the PIDs it started (etcd and a process on node1): ${pids.join(', ')}`);
  t.ok((up?.namespaces ?? []).length >= 4, 'it reported its namespaces');
  await assertCleanedAfterCrash(t, runId, pids);
});

t.test('a lab whose owner is SIGKILLed half-way through Lab.create', async (t) => {
  // Kill as soon as etcd has been spawned but create has not finished: namespaces, links and a
  // starting server all exist, nothing has been torn down.
  let etcdPids: number[] = [];
  const { runId, events, signal } = await crashChild((e, runId) => {
    if (e.event === 'up') return true; // too late to be half-way, but stop anyway
    if (e.event !== 'step' || e.step !== 'etcd') return false;
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      etcdPids = pidsMentioning(`${runId}/etcd`);
      if (etcdPids.length) return true;
    }
    return true;
  });
  t.equal(signal, 'SIGKILL', 'the fixture was killed');
  t.notOk(
    events.some((e) => e.event === 'up'),
    'it was killed before Lab.create finished',
  );
  t.ok(etcdPids.length > 0, `etcd was running when it was killed (${etcdPids.join(', ')})`);
  await assertCleanedAfterCrash(t, runId, etcdPids);
});

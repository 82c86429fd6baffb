/**
 * READY=1 from each real daemon (weft-flanneld, weft-proxy, weft-controller), as systemd would receive it: NOTIFY_SOCKET names a Unix
 * datagram socket this test owns, the daemon is started through its command wrapper (bin/) with
 * its configuration in the environment (the variables of systemd/default/*), under the unit's
 * NoNewPrivileges and capability bounding set, in a lab node's namespace against the lab's etcd.
 *
 * Checked: READY=1 arrives once the daemon is ready, with MAINPID naming the daemon, and only
 * then (subnet.env and the masquerade rules exist for weft-flanneld; the Service's rules for
 * weft-proxy; the objects listed for weft-controller, which has no capability at all); it comes from the systemd-notify helper's PID, not the daemon's, which is why the
 * units set NotifyAccess=all; and without a reachable etcd no READY=1 comes at all.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { sleep } from '../../../src/backoff/index.js';
import { FlannelCluster, Lab, ProxyCluster, listNetns, waitFor, type LabNode } from '../../lab/index.js';
import { serviceObject, sliceObject } from '../../helpers/proxy-objects.js';
import { REPO_ROOT, readUnit, setprivBoundingSet, type UnitName } from '../../unit/systemd/unit-file.js';

t.setTimeout(240_000);

/** One datagram on the notify socket, with the sender's PID from its credentials. */
interface Notification {
  pid: number | null;
  fields: Map<string, string>;
  /** When the test received it (ms since the epoch). */
  at: number;
}

// Node cannot bind AF_UNIX datagram sockets; python3 can (as in test/unit/shared/sd-notify.test.ts).
// SO_PASSCRED gives each datagram's sender PID. The control buffer only fits the credentials: the
// fd systemd-notify passes with BARRIER=1 is closed by the kernel on receipt, which is what lets
// systemd-notify's barrier complete (systemd closes it too).
const RECEIVER = `
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", data[:12])[0]
    print(json.dumps({"pid": pid, "msg": msg.decode("utf-8", "replace")}), flush=True)
`;

/** A notify socket and what arrived on it. */
class NotifySocket {
  readonly path: string;
  readonly received: Notification[] = [];
  readonly #dir: string;
  readonly #child;
  #bound = false;

  constructor() {
    this.#dir = mkdtempSync(join(tmpdir(), 'weft-ready-'));
    this.path = join(this.#dir, 'notify');
    this.#child = spawn('python3', ['-c', RECEIVER, this.path], { stdio: ['ignore', 'pipe', 'inherit'] });
    createInterface({ input: this.#child.stdout }).on('line', (line) => {
      const m = JSON.parse(line) as { bound?: boolean; pid?: number | null; msg?: string };
      if (m.bound) this.#bound = true;
      if (m.msg === undefined) return;
      const fields = new Map<string, string>();
      for (const l of m.msg.split('\n')) {
        const eq = l.indexOf('=');
        if (eq > 0) fields.set(l.slice(0, eq), l.slice(eq + 1));
      }
      this.received.push({ pid: m.pid ?? null, fields, at: Date.now() });
    });
  }

  async ready(): Promise<void> {
    await waitFor(() => this.#bound && existsSync(this.path), {
      what: 'notify socket bound',
      timeoutMs: 15_000,
    });
  }

  /** The first READY=1 so far. */
  get readyMessage(): Notification | undefined {
    return this.received.find((n) => n.fields.get('READY') === '1');
  }

  close(): void {
    if (this.#child.pid && this.#child.exitCode === null) this.#child.kill('SIGKILL');
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

const lab = await Lab.create({ nodes: 1 });
t.teardown(async () => {
  await lab.teardown();
  const left = (await listNetns()).filter((n) => n.startsWith(`${lab.runId}-`));
  if (left.length) throw new Error(`namespaces left behind: ${left.join(', ')}`);
});
const node = lab.nodes[0] as LabNode;
// The network config in etcd; the daemons are started by this test, not by the cluster helpers.
await FlannelCluster.create(lab, { start: false });
const proxy = await ProxyCluster.create(lab, { mode: 'nftables', start: false });
t.teardown(() => proxy.close());

/**
 * Starts `daemon` in the node as its unit would: the wrapper, NoNewPrivileges and the unit's
 * capability bounding set (which every program it runs inherits), `env` as from its environment
 * file, and NOTIFY_SOCKET. Every exec in the chain (ip netns exec, setpriv, env, the wrapper)
 * replaces the process, so the PID is the daemon's, as MainPID would be.
 */
function startDaemon(daemon: UnitName, name: string, env: Record<string, string>, notify: NotifySocket) {
  return lab.startProcess(
    node,
    name,
    'setpriv',
    [
      '--no-new-privs',
      `--bounding-set=${setprivBoundingSet(readUnit(daemon))}`,
      '--',
      'env',
      '-u',
      'NODE_OPTIONS',
      join(REPO_ROOT, 'bin', daemon),
    ],
    { ...env, NOTIFY_SOCKET: notify.path },
  );
}

/** How long a daemon without its registry is watched for a premature READY=1. */
const NOT_READY_WATCH_MS = 6_000;
/** An etcd nobody listens on, inside the node. */
const NO_ETCD = 'http://127.0.0.1:1';

async function expectNoReady(t: Test, daemon: UnitName, env: Record<string, string>): Promise<void> {
  const notify = new NotifySocket();
  t.teardown(() => notify.close());
  await notify.ready();
  const started = Date.now();
  const p = startDaemon(daemon, `${daemon}-no-etcd`, env, notify);
  // Until it has visibly tried etcd and failed (a connect attempt takes ~5 s to give up), and at
  // least NOT_READY_WATCH_MS: waiting for the registry, not stuck on something else.
  const log = await waitFor(
    () => {
      if (!p.running) throw new Error(`${daemon} exited; see ${p.logFile}`);
      const text = readFileSync(p.logFile, 'utf8');
      return /retry/i.test(text) ? text : undefined;
    },
    { what: `${daemon} retrying the registry`, timeoutMs: 45_000, intervalMs: 200 },
  );
  await sleep(Math.max(0, started + NOT_READY_WATCH_MS - Date.now()));
  t.ok(p.running, `${daemon} keeps waiting for etcd (log: ${p.logFile})`);
  t.match(log, /127\.0\.0\.1:1\b/, `${daemon} names the registry it cannot reach`);
  t.equal(notify.readyMessage, undefined, `no READY=1 in ${NOT_READY_WATCH_MS} ms without etcd`);
  await p.stop();
  t.equal(notify.readyMessage, undefined, 'nor while stopping');
}

const subnetFile = lab.subnetEnvPath(node);

t.test('weft-flanneld without etcd sends no READY=1', async (t) => {
  await expectNoReady(t, 'weft-flanneld', {
    FLANNELD_ETCD_ENDPOINTS: NO_ETCD,
    FLANNELD_IFACE: 'eth0',
    FLANNELD_SUBNET_FILE: join(lab.dir, 'never', 'subnet.env'),
  });
  t.notOk(existsSync(join(lab.dir, 'never', 'subnet.env')), 'and writes no subnet.env');
});

t.test('weft-flanneld sends READY=1 once leased, with subnet.env and rules in place', async (t) => {
  const notify = new NotifySocket();
  t.teardown(() => notify.close());
  await notify.ready();
  let subnetEnvAtReady: boolean | undefined;
  const p = startDaemon(
    'weft-flanneld',
    'flanneld',
    {
      FLANNELD_ETCD_ENDPOINTS: lab.etcdEndpoints.join(','),
      FLANNELD_IFACE: 'eth0',
      FLANNELD_SUBNET_FILE: subnetFile,
      FLANNELD_IP_MASQ: 'true',
    },
    notify,
  );
  t.teardown(() => p.stop());
  const ready = await waitFor(
    () => {
      if (!p.running) throw new Error(`weft-flanneld exited; see ${p.logFile}`);
      const r = notify.readyMessage;
      // Looked at the moment READY=1 is seen, not later.
      if (r) subnetEnvAtReady ??= existsSync(subnetFile);
      return r;
    },
    { what: 'READY=1 from weft-flanneld', timeoutMs: 60_000, intervalMs: 20 },
  );
  t.equal(ready.fields.get('MAINPID'), String(p.pid), 'MAINPID is the daemon');
  t.match(ready.fields.get('STATUS') ?? '', /^leased \d+\.\d+\.\d+\.\d+-\d+$/, 'STATUS names the lease');
  // systemd-notify cannot put the daemon's PID in the credentials without CAP_SYS_ADMIN (outside
  // the bounding set), so the datagram is the helper's: NotifyAccess=main would drop it.
  t.ok(ready.pid !== null && ready.pid !== p.pid, `sent by the helper (pid ${ready.pid}), not the daemon`);
  t.equal(subnetEnvAtReady, true, 'subnet.env was written before READY=1');
  const env = readFileSync(subnetFile, 'utf8');
  const lease = (ready.fields.get('STATUS') ?? '').replace(/^leased /, '').replace('-', '/');
  t.match(env, `FLANNEL_SUBNET=${lease.replace(/\.0\//, '.1/')}`, 'subnet.env holds the lease');
  // The masquerade rules come from iptables-restore, run by the daemon under the bounding set.
  const rules = await lab.exec(node, 'iptables', ['-w', '-t', 'nat', '-S', 'FLANNEL-POSTRTG']);
  t.match(rules.stdout, /MASQUERADE/, 'iptables masquerade rules installed by the bounded daemon');
  t.equal(notify.received.filter((n) => n.fields.get('READY') === '1').length, 1, 'READY=1 once');
  await p.stop();
  t.equal(p.running, false);
});

const SERVICE = serviceObject({
  name: 'ready-check',
  clusterIP: '10.96.0.77',
  ports: [{ port: 80, targetPort: 8080 }],
});
const SLICE = sliceObject({
  service: 'ready-check',
  endpoints: [{ ip: '10.244.9.5', nodeName: 'elsewhere' }],
  ports: [{ port: 8080 }],
});

t.test('weft-proxy without etcd sends no READY=1', async (t) => {
  await expectNoReady(t, 'weft-proxy', {
    WEFT_PROXY_ETCD_ENDPOINTS: NO_ETCD,
    WEFT_PROXY_HOSTNAME_OVERRIDE: node.name,
    WEFT_PROXY_CLUSTER_CIDR: '10.244.0.0/16',
  });
  const rules = await lab.exec(node, 'nft', ['list', 'ruleset']);
  t.notMatch(rules.stdout, '10.96.0.77', 'and programs nothing');
});

t.test('weft-proxy sends READY=1 after its first sync, its rules in place', async (t) => {
  await proxy.putObject(SERVICE);
  await proxy.putObject(SLICE);
  const notify = new NotifySocket();
  t.teardown(() => notify.close());
  await notify.ready();
  let rulesAtReady: string | undefined;
  const p = startDaemon(
    'weft-proxy',
    'proxy',
    {
      WEFT_PROXY_ETCD_ENDPOINTS: lab.etcdEndpoints.join(','),
      WEFT_PROXY_HOSTNAME_OVERRIDE: node.name,
      // The cluster CIDR from weft-flanneld's subnet.env, as on a node where the proxy's unit
      // starts after weft-flanneld's READY=1.
      WEFT_PROXY_SUBNET_FILE: subnetFile,
    },
    notify,
  );
  t.teardown(() => p.stop());
  const ready = await waitFor(
    async () => {
      if (!p.running) throw new Error(`weft-proxy exited; see ${p.logFile}`);
      const r = notify.readyMessage;
      if (r) rulesAtReady ??= (await lab.exec(node, 'nft', ['list', 'ruleset'])).stdout;
      return r;
    },
    { what: 'READY=1 from weft-proxy', timeoutMs: 60_000, intervalMs: 20 },
  );
  t.equal(ready.fields.get('MAINPID'), String(p.pid), 'MAINPID is the daemon');
  t.equal(ready.fields.get('STATUS'), 'synced (nftables)');
  t.ok(ready.pid !== null && ready.pid !== p.pid, 'sent by the systemd-notify helper');
  t.match(rulesAtReady ?? '', '10.96.0.77', "the Service's rules were in the kernel at READY=1");
  const log = readFileSync(p.logFile, 'utf8');
  t.match(log, /"clusterCidrs":\["10\.244\.0\.0\/16"\]/, 'the cluster CIDR came from subnet.env');
  await p.stop();
});

t.test('weft-controller without etcd sends no READY=1', async (t) => {
  await expectNoReady(t, 'weft-controller', { WEFT_CONTROLLER_ETCD_ENDPOINTS: NO_ETCD });
});

t.test('weft-controller sends READY=1 once the objects are listed, without a capability', async (t) => {
  const notify = new NotifySocket();
  t.teardown(() => notify.close());
  await notify.ready();
  const p = startDaemon(
    'weft-controller',
    'controller',
    {
      WEFT_CONTROLLER_ETCD_ENDPOINTS: lab.etcdEndpoints.join(','),
      WEFT_CONTROLLER_NODE_NAME: node.name,
    },
    notify,
  );
  t.teardown(() => p.stop());
  const ready = await waitFor(
    () => {
      if (!p.running) throw new Error(`weft-controller exited; see ${p.logFile}`);
      return notify.readyMessage;
    },
    { what: 'READY=1 from weft-controller', timeoutMs: 60_000, intervalMs: 20 },
  );
  t.equal(ready.fields.get('MAINPID'), String(p.pid), 'MAINPID is the daemon');
  t.equal(ready.fields.get('STATUS'), 'synced; electing');
  t.ok(ready.pid !== null && ready.pid !== p.pid, 'sent by the systemd-notify helper');
  const capBnd = readFileSync(`/proc/${p.pid}/status`, 'utf8').match(/^CapBnd:\s*(\w+)$/m)?.[1];
  t.equal(capBnd, '0000000000000000', 'an empty bounding set');
  t.match(readFileSync(p.logFile, 'utf8'), /objects listed; ready/);
  await p.stop();
});

/**
 * One reconcile of the dataplane: read the kernel, make sure the backend's devices are there (a
 * deleted or altered device is recreated through the backend's `prepare`), plan, diff against
 * what weft owns, and apply only the difference. A failed entry does not stop the others; it is
 * reported and retried by the caller. What was planned and applied is remembered, so an entry
 * that was in place and had to be restored is counted as a repair.
 */
import { ErrorCodes, WeftError, messageOf } from '../../errors/index.js';
import type { NetConfig } from '../../ipam/index.js';
import type { Logger } from '../../log/index.js';
import type { Link, Netlink } from '../../netlink/index.js';
import type {
  Backend,
  DesiredState,
  ExternalInterface,
  NodeLease,
  PlanInput,
  PreparedBackend,
  PreparedDevice,
} from '../backends/index.js';
import type { DataplaneErrorStage, RepairKind } from './dataplane-metrics.js';
import { describeOp, diffState, entryKey, type DataplaneOp } from './diff-state.js';
import { actualStateOf, readKernelSnapshot, underlayOf, type KernelSnapshot } from './kernel-snapshot.js';

/** A registry entry under the subnets prefix that could not be read as a lease (the lease module's `SkippedLease` fits). */
export interface UnreadableLease {
  readonly path: string;
  readonly error: { readonly message: string };
}

/** The leases to program. */
export interface DataplaneInput {
  /** This node's lease; never programmed as a remote. */
  readonly own: NodeLease;
  /** The cluster's leases, in any order; the own one may be among them. */
  readonly leases: readonly NodeLease[];
  /** Entries that are not readable leases (garbage JSON, malformed key): reported, never programmed. */
  readonly unreadable?: readonly UnreadableLease[];
}

/** An entry the kernel refused. */
export interface OpFailure {
  readonly op: DataplaneOp;
  readonly error: Error;
}

/** What one reconcile did. */
export interface ReconcileOutcome {
  /** Entries created that were not in place before (new leases, or the first run). */
  readonly added: number;
  /** Entries deleted (leases gone, including nodes that left while the daemon was down). */
  readonly removed: number;
  /** Entries rewritten because their lease changed. */
  readonly updated: number;
  /** Devices recreated and entries restored that weft had programmed and found missing or altered. */
  readonly repaired: number;
  readonly repairs: Readonly<Partial<Record<RepairKind, number>>>;
  readonly desired: DesiredState;
  readonly failures: readonly OpFailure[];
  /** The backend's `sync` failed. */
  readonly syncError?: Error;
}

/** A reconcile that could not run to the apply stage; `stage` says where it stopped. */
export class ReconcileStageError extends Error {
  readonly stage: DataplaneErrorStage;

  constructor(stage: DataplaneErrorStage, cause: unknown) {
    super(messageOf(cause), { cause });
    this.name = 'ReconcileStageError';
    this.stage = stage;
  }
}

/** Options of {@link Reconciler}. */
export interface ReconcilerOptions {
  /** Client in the node's namespace: dumps and changes go through it. */
  readonly netlink: Netlink;
  /** Prepares the devices and plans the desired state. */
  readonly backend: Backend;
  /** The network config the plans are made for. */
  readonly config: NetConfig;
  /** The underlay interface; looked up by name on every run. */
  readonly extIface: ExternalInterface;
  readonly logger: Logger;
  /** Called with the result of every `prepare` after the first (a device was recreated). */
  readonly onPrepared?: (prepared: PreparedBackend) => void;
}

/** A hook the dataplane uses to learn each plan before it is applied (to recognise its own events). */
export type PlannedHook = (snapshot: KernelSnapshot, desired: DesiredState) => void;

export class Reconciler {
  readonly #o: ReconcilerOptions;
  #prepared: PreparedBackend | undefined;
  /** Entry keys programmed by the last reconcile. */
  #previous = new Set<string>();

  constructor(opts: ReconcilerOptions) {
    this.#o = opts;
  }

  /** The backend's last `prepare` result. */
  get prepared(): PreparedBackend | undefined {
    return this.#prepared;
  }

  /** Run the backend's `prepare` (create or adopt its devices). */
  async prepare(): Promise<PreparedBackend> {
    const before = this.#prepared;
    const prepared = await this.#o.backend.prepare();
    this.#prepared = prepared;
    if (before) {
      const was = JSON.stringify([before.backendData, before.backendV6Data]);
      const now = JSON.stringify([prepared.backendData, prepared.backendV6Data]);
      if (was !== now) {
        this.#o.logger.error(
          { was: JSON.parse(was) as unknown, now: JSON.parse(now) as unknown },
          'backend data changed on re-prepare; the lease must be rewritten',
        );
      }
      this.#o.onPrepared?.(prepared);
    }
    return prepared;
  }

  /**
   * One reconcile. Throws {@link ReconcileStageError} when the kernel cannot be read, the devices
   * cannot be made or the plan fails; failures of single entries are returned instead.
   */
  async run(input: DataplaneInput, onPlanned?: PlannedHook): Promise<ReconcileOutcome> {
    const { logger } = this.#o;
    const repairs: Partial<Record<RepairKind, number>> = {};
    const count = (kind: RepairKind, n = 1): void => {
      repairs[kind] = (repairs[kind] ?? 0) + n;
    };

    if (!this.#prepared) await stage('prepare', () => this.prepare());
    let snapshot = await stage('read', () => readKernelSnapshot(this.#o.netlink));
    const drift = this.#deviceDrift(snapshot);
    if (drift.some((d) => d.problem !== 'down')) {
      for (const d of drift)
        logger.warn({ device: d.device.name, problem: d.problem }, 'device drifted; recreating');
      await stage('prepare', () => this.prepare());
      snapshot = await stage('read', () => readKernelSnapshot(this.#o.netlink));
      const still = this.#deviceDrift(snapshot).filter((d) => d.problem !== 'down');
      if (still.length > 0) {
        throw new ReconcileStageError(
          'prepare',
          new WeftError(
            ErrorCodes.NETLINK,
            `devices still wrong after prepare: ${still.map((d) => `${d.device.name} ${d.problem}`).join('; ')}`,
          ),
        );
      }
      count('device', drift.length);
    } else {
      for (const d of drift) {
        logger.warn({ device: d.device.name }, 'device is down; setting it up');
        const link = d.link;
        if (link) await stage('prepare', () => this.#o.netlink.links.setUp(link.index));
        count('device');
      }
    }

    const ext = snapshot.links.find((l) => l.name === this.#o.extIface.name);
    if (!ext) {
      throw new ReconcileStageError(
        'read',
        new WeftError(ErrorCodes.NETLINK, `external interface ${this.#o.extIface.name} not found`, {
          iface: this.#o.extIface.name,
        }),
      );
    }
    const networks = [this.#o.config.ipv4?.network, this.#o.config.ipv6?.network]
      .filter((n) => n !== undefined)
      .map(String);
    const planInput: PlanInput = {
      config: this.#o.config,
      underlay: underlayOf(snapshot, ext, networks),
      own: input.own,
      leases: input.leases,
    };
    const desired = await stage('plan', () => Promise.resolve(this.#o.backend.plan(planInput)));
    onPlanned?.(snapshot, desired);

    const ops = diffState(desired, actualStateOf(snapshot, desired.owned));
    const indexes = new Map(snapshot.links.map((l) => [l.name, l.index]));
    const failures: OpFailure[] = [];
    const failedKeys = new Set<string>();
    let added = 0;
    let removed = 0;
    let updated = 0;
    let repairedEntries = 0;
    for (const op of ops) {
      try {
        await this.#apply(op, indexes);
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        failures.push({ op, error });
        failedKeys.add(entryKey(op));
        logger.warn({ err: error, op: describeOp(op) }, `could not ${describeOp(op)}`);
        continue;
      }
      if (op.action === 'delete') {
        removed++;
        logger.info({ op: describeOp(op) }, describeOp(op));
      } else if (this.#previous.has(entryKey(op))) {
        repairedEntries++;
        count(op.kind);
        logger.info({ op: describeOp(op) }, `repaired: ${describeOp(op)}`);
      } else {
        if (op.action === 'create') added++;
        else updated++;
        logger.debug({ op: describeOp(op) }, describeOp(op));
      }
    }
    this.#previous = new Set(
      [
        ...desired.addresses.map((entry) => entryKey({ kind: 'address', entry })),
        ...desired.neighbours.map((entry) => entryKey({ kind: 'neighbour', entry })),
        ...desired.fdb.map((entry) => entryKey({ kind: 'fdb', entry })),
        ...desired.routes.map((entry) => entryKey({ kind: 'route', entry })),
      ].filter((k) => !failedKeys.has(k)),
    );

    let syncError: Error | undefined;
    if (this.#o.backend.sync) {
      try {
        await this.#o.backend.sync(planInput, desired);
      } catch (err) {
        syncError = err instanceof Error ? err : new Error(String(err));
        logger.warn({ err: syncError }, 'backend sync failed');
      }
    }
    const repaired = repairedEntries + (repairs.device ?? 0);
    return {
      added,
      removed,
      updated,
      repaired,
      repairs,
      desired,
      failures,
      ...(syncError && { syncError }),
    };
  }

  #deviceDrift(snapshot: KernelSnapshot): { device: PreparedDevice; link?: Link; problem: string }[] {
    const out: { device: PreparedDevice; link?: Link; problem: string }[] = [];
    for (const device of this.#prepared?.devices ?? []) {
      const link = snapshot.links.find((l) => l.name === device.name);
      let problem: string | undefined;
      if (!link) problem = 'missing';
      else if (link.kind !== device.kind) problem = `is a ${link.kind ?? 'plain'} device, not ${device.kind}`;
      else if (device.mac !== undefined && link.mac !== device.mac)
        problem = `has MAC ${link.mac}, not ${device.mac}`;
      else if (link.mtu !== device.mtu) problem = `has MTU ${link.mtu}, not ${device.mtu}`;
      else if (!link.up) problem = 'down';
      if (problem !== undefined) out.push({ device, ...(link && { link }), problem });
    }
    return out;
  }

  /** Devices by index from this run's dump: saves a name lookup per entry. */
  async #apply(op: DataplaneOp, indexes: ReadonlyMap<string, number>): Promise<void> {
    const nl = this.#o.netlink;
    const dev = indexes.get(op.entry.dev) ?? op.entry.dev;
    const del = op.action === 'delete';
    switch (op.kind) {
      case 'address': {
        const spec = { dev, address: op.entry.address, prefixLen: op.entry.prefixLen };
        return del ? nl.addresses.delete(spec, { ignoreMissing: true }) : nl.addresses.replace(spec);
      }
      case 'neighbour': {
        const e = op.entry;
        if (del) return nl.neighbours.delete({ dev, dst: e.dst }, { ignoreMissing: true });
        return nl.neighbours.replace({
          dev,
          dst: e.dst,
          ...(e.lladdr !== undefined && { lladdr: e.lladdr }),
        });
      }
      case 'fdb': {
        const e = op.entry;
        const spec = { dev, lladdr: e.lladdr, ...(e.dst !== undefined && { dst: e.dst }) };
        return del ? nl.fdb.delete(spec, { ignoreMissing: true }) : nl.fdb.replace(spec);
      }
      case 'route': {
        const e = op.entry;
        const spec = {
          dst: e.dst,
          dev,
          ...(e.gateway !== undefined && { gateway: e.gateway }),
          ...(e.onlink && { onlink: true }),
        };
        if (del) {
          return nl.routes.delete(
            { ...spec, ...(e.metric !== undefined && { metric: e.metric }) },
            { ignoreMissing: true },
          );
        }
        return nl.routes.replace(spec);
      }
    }
  }
}

async function stage<T>(name: DataplaneErrorStage, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw err instanceof ReconcileStageError ? err : new ReconcileStageError(name, err);
  }
}

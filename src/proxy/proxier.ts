/**
 * The proxier contract. A proxier turns the service ports of one IP family into load-balancing
 * in the kernel (nftables, iptables) or in user space. The sync engine decides when to sync and
 * which ports changed; a proxier only knows how to write them. Every implementation passes the
 * one compliance suite in test/integration/proxier-compliance.
 */
import { invalid } from '../errors/index.js';
import type { CommandRunner } from '../exec/index.js';
import type { Logger } from '../log/index.js';
import type { Registry } from '../metrics/index.js';
import type { Family, ServicePortMap } from './model/index.js';

/** The proxy modes, default first. */
export const PROXY_MODES = ['nftables', 'iptables', 'userspace'] as const;
export type ProxyMode = (typeof PROXY_MODES)[number];

/** kube-proxy's masquerade mark bit (flanneld's masquerade rules skip packets carrying it). */
export const MASQUERADE_MARK = 0x4000;

/** What a proxier is told about its node. */
export interface ProxierContext {
  family: Family;
  /** This node's name; decides which endpoints are local. */
  nodeName: string;
  /**
   * The cluster network of this family (`--cluster-cidr`). Traffic to a service from outside it
   * is masqueraded. Undefined: only `masqueradeAll`, hairpin and Cluster-policy external traffic
   * are masqueraded, as in kube-proxy without `--cluster-cidr`.
   */
  clusterCidr: string | undefined;
  /** Masquerade all traffic to services (`--masquerade-all`). */
  masqueradeAll: boolean;
  /**
   * CIDRs selecting the node addresses that accept NodePorts (`--nodeport-addresses`). Empty means
   * every local address.
   */
  nodePortAddresses: string[];
  /** Runs nft, iptables-restore and friends; tests pass one that enters a namespace. */
  runner: CommandRunner;
  log: Logger;
  /** Where a mode publishes metrics of its own (the userspace relay's); none when undefined. */
  metrics?: Registry;
}

/** One sync: the whole desired state, and what changed since the previous sync. */
export interface SyncRequest {
  servicePorts: ServicePortMap;
  /**
   * Ids of the service ports added, changed or removed since the last successful sync.
   * Undefined asks for a full sync: rewrite everything and remove whatever is stale.
   */
  changed: ReadonlySet<string> | undefined;
}

/** Programs one family's service ports. */
export interface Proxier {
  readonly mode: ProxyMode;
  readonly family: Family;
  /**
   * Makes the kernel (or the listeners) match `req.servicePorts`. A partial sync touches only
   * the changed ports (and shared structures that index them). Throws on failure; the engine
   * then retries with a full sync.
   */
  sync(req: SyncRequest): Promise<void>;
  /**
   * Asks the kernel's checker (`nft -c`, `iptables-restore --test`) whether it would accept the
   * full ruleset of `servicePorts`, changing nothing; rejects with the checker's error when not.
   * The engine uses it after a failed sync to find the service ports that make the kernel refuse
   * the rest, so that one bad object never stops rule programming for every Service. A proxier
   * without it cannot isolate such an object.
   */
  check?(servicePorts: ServicePortMap): Promise<void>;
  /**
   * False when something other than weft removed or flushed its rules (kube-proxy's canary);
   * the engine then runs a full sync.
   */
  rulesIntact(): Promise<boolean>;
  /** Removes every rule, chain, table, set and listener this mode manages. Idempotent. */
  cleanup(): Promise<void>;
  /** Stops listeners and timers; leaves the kernel state in place. */
  close(): Promise<void>;
}

/** Creates a proxier for one family. */
export type ProxierFactory = (ctx: ProxierContext) => Promise<Proxier>;

const factories = new Map<ProxyMode, ProxierFactory>();

/** Registers the factory of a mode, replacing any earlier one. */
export function registerProxier(mode: ProxyMode, factory: ProxierFactory): void {
  factories.set(mode, factory);
}

/** The modes with a registered factory. */
export function registeredProxyModes(): ProxyMode[] {
  return PROXY_MODES.filter((m) => factories.has(m));
}

/** Creates the proxier of `mode`; throws WEFT_INVALID_ARGUMENT when none is registered. */
export async function createProxier(mode: ProxyMode, ctx: ProxierContext): Promise<Proxier> {
  const f = factories.get(mode);
  if (!f) {
    throw invalid(
      'weft-proxy',
      'proxy-mode',
      `mode ${mode} is not available (have: ${registeredProxyModes().join(', ')})`,
    );
  }
  return f(ctx);
}

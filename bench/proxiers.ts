/**
 * The contenders of the proxy benchmark behind one interface: weft's nftables and iptables
 * proxiers (through the Proxier contract), and the kube-proxy-layout nftables peer, which the
 * benchmark generates itself and loads with `nft -f -` as kube-proxy does.
 */
import { runChecked, type CommandRunner } from '../src/exec/index.js';
import { silentLogger } from '../src/log/index.js';
import type { ServicePort, ServicePortMap } from '../src/proxy/model/index.js';
import { createProxier, type Proxier, type ProxierContext, type ProxyMode } from '../src/proxy/proxier.js';
import { kubeLayoutRuleset, kubeLayoutServiceUpdate } from './kube-nft-layout.js';
import { BENCH_CLUSTER_CIDR, BENCH_NODE } from './workload.js';

/** What the proxy benchmark compares. */
export const BENCH_MODES = ['nftables', 'iptables', 'kube-nft'] as const;
export type BenchMode = (typeof BENCH_MODES)[number];

/** One contender, programming one namespace. */
export interface Contender {
  /** Programs everything into an empty namespace. */
  fullSync(servicePorts: ServicePortMap): Promise<void>;
  /**
   * Moves from the last synced state to `servicePorts`, where only the service port `id`
   * changed, appeared or disappeared (`before` is its previous version).
   */
  partialSync(servicePorts: ServicePortMap, id: string, before: ServicePort | undefined): Promise<void>;
  close(): Promise<void>;
}

/**
 * Loads a weft proxier's module (which registers its factory) and creates it. Imported by path
 * at run time so the benchmark builds even while a mode is absent, and reports it as an error.
 */
async function weftProxier(mode: ProxyMode, ctx: ProxierContext): Promise<Proxier> {
  const url = new URL(`../src/proxy/${mode}/index.js`, import.meta.url).href;
  const mod = (await import(url)) as Record<string, unknown>;
  const factoryName = `create${mode[0]?.toUpperCase()}${mode.slice(1)}Proxier`;
  const factory = mod[factoryName];
  if (typeof factory === 'function') {
    return (await (factory as (c: ProxierContext) => Promise<Proxier>)(ctx)) as Proxier;
  }
  return createProxier(mode, ctx);
}

/** The proxier context of the benchmark's node. */
export function benchContext(runner: CommandRunner): ProxierContext {
  return {
    family: 4,
    nodeName: BENCH_NODE,
    clusterCidr: BENCH_CLUSTER_CIDR,
    masqueradeAll: false,
    nodePortAddresses: [],
    runner,
    log: silentLogger(),
  };
}

/** Creates the contender of `mode` writing through `runner` (which enters its namespace). */
export async function createContender(mode: BenchMode, runner: CommandRunner): Promise<Contender> {
  if (mode === 'kube-nft') {
    const opts = { clusterCidr: BENCH_CLUSTER_CIDR };
    return {
      async fullSync(servicePorts) {
        await runChecked(runner, 'nft', ['-f', '-'], kubeLayoutRuleset(servicePorts, opts));
      },
      async partialSync(servicePorts, id, before) {
        const tx = kubeLayoutServiceUpdate(before, servicePorts.get(id), opts);
        await runChecked(runner, 'nft', ['-f', '-'], tx);
      },
      async close() {},
    };
  }
  const proxier = await weftProxier(mode, benchContext(runner));
  return {
    fullSync: (servicePorts) => proxier.sync({ servicePorts, changed: undefined }),
    partialSync: (servicePorts, id) => proxier.sync({ servicePorts, changed: new Set([id]) }),
    close: () => proxier.close(),
  };
}

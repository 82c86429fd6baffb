/**
 * `--cleanup`: remove from the node everything weft-flanneld installs (overlay devices and their
 * entries, direct routes into the cluster network, masquerade/forward rules in both firewalls,
 * subnet.env). The lease in the registry is kept: it belongs to the cluster, and an operator
 * releases it with the registry's tools (or lets its TTL run out).
 */
import { rm } from 'node:fs/promises';
import { messageOf } from '../errors/index.js';
import { Cidr, parseNetConfig, type NetConfig } from '../ipam/index.js';
import type { Logger } from '../log/index.js';
import type { Netlink } from '../netlink/index.js';
import type { Store } from '../registry/index.js';
import { createMasqRules } from './masq-rules.js';

/** Names of the devices weft-flanneld creates: `flannel.<VNI>`, `flannel-v6.<VNI>`, `flannel0`. */
export const OWNED_DEVICE = /^(flannel\.\d+|flannel-v6\.\d+|flannel0)$/;

/** What {@link cleanupNode} removed, for the log and tests. */
export interface CleanupReport {
  devices: string[];
  routes: string[];
  firewalls: string[];
  files: string[];
  errors: string[];
}

/** Options of {@link cleanupNode}. */
export interface CleanupOptions {
  netlink: Netlink;
  /** Where to read the network config, to find direct routes into it; optional. */
  store?: Store;
  prefix: string;
  subnetFile: string;
  logger: Logger;
}

export async function cleanupNode(opts: CleanupOptions): Promise<CleanupReport> {
  const report: CleanupReport = { devices: [], routes: [], firewalls: [], files: [], errors: [] };
  const nl = opts.netlink;
  const step = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      report.errors.push(`${what}: ${messageOf(err)}`);
    }
  };

  let config: NetConfig | undefined;
  if (opts.store) {
    await step('read network config', async () => {
      const kv = await opts.store?.get(`${opts.prefix}/config`);
      if (kv) config = parseNetConfig(kv.value);
    });
  }

  await step('delete devices', async () => {
    for (const link of await nl.links.list()) {
      if (!OWNED_DEVICE.test(link.name)) continue;
      await nl.links.delete(link.index, { ignoreMissing: true });
      report.devices.push(link.name);
    }
  });

  // host-gw and DirectRouting routes go over the external interface, so they outlive the
  // devices; without the config we cannot tell them from the operator's, and leave them.
  const networks = [config?.ipv4?.network, config?.ipv6?.network].filter((n): n is Cidr => n !== undefined);
  if (networks.length > 0) {
    await step('delete routes', async () => {
      for (const r of await nl.routes.list()) {
        if (r.type !== 'unicast' || !r.gateway) continue;
        let dst: Cidr;
        try {
          dst = Cidr.parseLenient(r.dst);
        } catch {
          continue;
        }
        if (!networks.some((n) => n.contains(dst))) continue;
        await nl.routes.delete({ dst: r.dst, gateway: r.gateway, dev: r.ifindex }, { ignoreMissing: true });
        report.routes.push(`${r.dst} via ${r.gateway}`);
      }
    });
  }

  for (const firewall of ['iptables', 'nftables'] as const) {
    await step(`${firewall} rules`, async () => {
      await createMasqRules({ firewall, logger: opts.logger }).cleanup();
      report.firewalls.push(firewall);
    });
  }

  await step('subnet.env', async () => {
    await rm(opts.subnetFile, { force: true });
    report.files.push(opts.subnetFile);
  });
  return report;
}

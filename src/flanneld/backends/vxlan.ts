/**
 * The vxlan backend, flannel's default dataplane. Per family one device `flannel.<VNI>` (IPv6:
 * `flannel-v6.<VNI>`) with this node's subnet address on it, and per remote lease a neighbour
 * (subnet address → VTEP MAC), an FDB entry (VTEP MAC → PublicIP) and an onlink route (subnet via
 * subnet address); with DirectRouting, a remote on a directly connected network gets a plain
 * route via its PublicIP over the underlay instead.
 */
import { ErrorCodes, WeftError, invalid, messageOf } from '../../errors/index.js';
import type { VxlanBackend } from '../../ipam/index.js';
import { DEFAULT_VXLAN_PORT } from '../../netlink/index.js';
import type { Backend, BackendContext, PlanInput, PreparedBackend, PreparedDevice } from './backend.js';
import {
  sortSkips,
  type AddressEntry,
  type DesiredState,
  type FdbEntry,
  type LeaseSkip,
  type NeighbourEntry,
  type RouteEntry,
} from './desired-state.js';
import { clusterFamilies, selectRemoteLeases } from './remote-leases.js';
import { isDirectlyConnected } from './underlay.js';
import { deriveVtepMac, parseVxlanBackendData, unicastMac, vxlanBackendData } from './vtep-mac.js';

/** Bytes of VXLAN encapsulation (outer IP, UDP, VXLAN and Ethernet headers) per underlay family. */
export const VXLAN_OVERHEAD: Readonly<Record<4 | 6, number>> = { 4: 50, 6: 70 };

/** flannel's device name: `flannel.<VNI>`, or `flannel-v6.<VNI>` for IPv6. */
export function vxlanDeviceName(vni: number, family: 4 | 6): string {
  return family === 4 ? `flannel.${vni}` : `flannel-v6.${vni}`;
}

function vxlanConfig(input: { config: PlanInput['config'] }): VxlanBackend {
  const backend = input.config.backend;
  if (backend.type !== 'vxlan') {
    throw invalid('vxlan backend', 'config.backend.type', `is ${JSON.stringify(backend.type)}, not "vxlan"`);
  }
  return backend;
}

/** The desired state of the vxlan backend; pure (see {@link Backend.plan}). */
export function planVxlan(input: PlanInput): DesiredState {
  const backend = vxlanConfig(input);
  const families = clusterFamilies(input.config);
  const dual = families.length > 1;
  const selection = selectRemoteLeases(input, { backendType: 'vxlan', backendName: 'vxlan' });
  const skipped: LeaseSkip[] = [...selection.skipped];
  const devices = families.map((f) => vxlanDeviceName(backend.vni, f.family));

  const addresses: AddressEntry[] = [];
  for (const { family } of families) {
    const own = selection.own[family];
    if (own) {
      addresses.push({
        dev: vxlanDeviceName(backend.vni, family),
        address: own.network,
        prefixLen: own.bits,
      });
    }
  }

  const neighbours: NeighbourEntry[] = [];
  const fdb: FdbEntry[] = [];
  const routes: RouteEntry[] = [];
  const programmed = new Set<string>();
  // One FDB entry per MAC and device: two nodes publishing one MAC would make it flap between them.
  const macOwners = new Map<string, { key: string; publicIP: string }>();
  for (const remote of selection.remotes) {
    const { key, family, subnet, publicIP } = remote;
    try {
      const dev = vxlanDeviceName(backend.vni, family);
      if (backend.directRouting && isDirectlyConnected(publicIP, input.underlay)) {
        routes.push({ dst: subnet.toString(), gateway: publicIP, dev: input.underlay.dev, onlink: false });
        programmed.add(key);
        continue;
      }
      const data = parseVxlanBackendData(remote.backendData);
      if (data.vni !== undefined && data.vni !== backend.vni) {
        throw new Error(`BackendData.VNI ${data.vni} differs from this cluster's VNI ${backend.vni}`);
      }
      const macKey = `${dev} ${data.vtepMac}`;
      const owner = macOwners.get(macKey);
      if (owner && owner.publicIP !== publicIP) {
        throw new Error(
          `VtepMAC ${data.vtepMac} is already used by lease ${owner.key} (PublicIP ${owner.publicIP})`,
        );
      }
      neighbours.push({ dev, dst: subnet.network, lladdr: data.vtepMac });
      if (!owner) {
        fdb.push({ dev, lladdr: data.vtepMac, dst: publicIP });
        macOwners.set(macKey, { key, publicIP });
      }
      routes.push({ dst: subnet.toString(), gateway: subnet.network, dev, onlink: true });
      programmed.add(key);
    } catch (err) {
      skipped.push({ key, ...(dual && { family }), reason: messageOf(err) });
    }
  }

  return {
    addresses,
    neighbours,
    fdb,
    routes,
    owned: {
      devices,
      routeDevices: [...devices, input.underlay.dev],
      networks: families.map((f) => f.network.toString()),
    },
    skipped: sortSkips(skipped),
    programmed: [...programmed].sort(),
  };
}

/**
 * The vxlan backend over the kernel. The device MAC is published in the lease, so it must not
 * change while the node lives: the first `prepare` adopts the MAC of an existing device (one left
 * by an earlier run, or by flannel) or else derives one from the tunnel source IP and VNI, and
 * every later `prepare` (after the device was deleted) recreates the device with that MAC.
 */
export class VxlanBackendImpl implements Backend {
  readonly type = 'vxlan';
  readonly #ctx: BackendContext;
  readonly #macs = new Map<4 | 6, string>();

  constructor(ctx: BackendContext) {
    vxlanConfig(ctx);
    this.#ctx = ctx;
  }

  plan(input: PlanInput): DesiredState {
    return planVxlan(input);
  }

  async prepare(): Promise<PreparedBackend> {
    const { config, extIface, netlink, logger } = this.#ctx;
    const backend = vxlanConfig(this.#ctx);
    const devices: PreparedDevice[] = [];
    const data: Partial<Record<4 | 6, { VNI: number; VtepMAC: string }>> = {};
    for (const { family } of clusterFamilies(config)) {
      const name = vxlanDeviceName(backend.vni, family);
      const local = family === 4 ? extIface.ip : extIface.ipv6;
      if (local === undefined) {
        throw new WeftError(
          ErrorCodes.INVALID_CONFIG,
          `vxlan backend: IPv${family} is enabled but the external interface ${extIface.name} has no IPv${family} address`,
          { field: family === 4 ? 'ip' : 'ipv6', iface: extIface.name },
        );
      }
      const mtu = backend.mtu ?? extIface.mtu - VXLAN_OVERHEAD[family];
      let mac = this.#macs.get(family);
      let origin = 'kept';
      if (mac === undefined) {
        const existing = await netlink.links.get(name);
        const adopted = existing?.kind === 'vxlan' ? unicastMac(existing.mac) : undefined;
        mac = adopted ?? deriveVtepMac(`${local}/${backend.vni}`);
        origin = adopted ? 'adopted from the existing device' : 'derived';
      }
      const link = await netlink.links.ensureVxlan({
        name,
        id: backend.vni,
        local,
        dev: extIface.name,
        port: backend.port || DEFAULT_VXLAN_PORT,
        learning: backend.learning,
        gbp: backend.gbp,
        mtu,
        mac,
      });
      if (!link.up) await netlink.links.setUp(link.index);
      const actualMac = unicastMac(link.mac) ?? mac;
      if (actualMac !== mac)
        logger.warn({ device: name, asked: mac, got: actualMac }, 'vxlan device MAC differs');
      this.#macs.set(family, actualMac);
      devices.push({ name, kind: 'vxlan', mtu, mac: actualMac });
      data[family] = vxlanBackendData(backend.vni, actualMac);
      logger.info({ device: name, index: link.index, mac: actualMac, mtu, origin }, 'vxlan device ready');
    }
    return {
      backendType: 'vxlan',
      ...(data[4] && { backendData: data[4] }),
      ...(data[6] && { backendV6Data: data[6] }),
      mtu: Math.min(...devices.map((d) => d.mtu)),
      devices,
    };
  }
}

/** The factory registered as `vxlan`. */
export function createVxlanBackend(ctx: BackendContext): Backend {
  return new VxlanBackendImpl(ctx);
}

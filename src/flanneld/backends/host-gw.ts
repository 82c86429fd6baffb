/**
 * The host-gw backend: a route per remote lease, `<subnet> via <PublicIP> dev <external iface>`,
 * and no device of its own. It needs every node on one L2 network; a remote that is not directly
 * reachable is refused (skipped with a reason naming the lease and its PublicIP) instead of getting
 * a route the kernel would send to the default gateway.
 */
import { invalid } from '../../errors/index.js';
import type { Backend, BackendContext, PlanInput, PreparedBackend } from './backend.js';
import { sortSkips, type DesiredState, type LeaseSkip, type RouteEntry } from './desired-state.js';
import { clusterFamilies, selectRemoteLeases } from './remote-leases.js';
import { isDirectlyConnected } from './underlay.js';

/** The desired state of the host-gw backend; pure (see {@link Backend.plan}). */
export function planHostGw(input: PlanInput): DesiredState {
  if (input.config.backend.type !== 'host-gw') {
    throw invalid(
      'host-gw backend',
      'config.backend.type',
      `is ${JSON.stringify(input.config.backend.type)}`,
    );
  }
  const families = clusterFamilies(input.config);
  const dual = families.length > 1;
  const selection = selectRemoteLeases(input, { backendType: 'host-gw', backendName: 'host-gw' });
  const skipped: LeaseSkip[] = [...selection.skipped];
  const routes: RouteEntry[] = [];
  const programmed = new Set<string>();
  const dev = input.underlay.dev;
  for (const { key, family, subnet, publicIP } of selection.remotes) {
    if (!isDirectlyConnected(publicIP, input.underlay)) {
      skipped.push({
        key,
        ...(dual && { family }),
        reason:
          `PublicIP ${publicIP} is not on a network directly connected to ${dev}; ` +
          `host-gw needs every node on one L2 network, so no route to ${subnet} is installed`,
      });
      continue;
    }
    routes.push({ dst: subnet.toString(), gateway: publicIP, dev, onlink: false });
    programmed.add(key);
  }
  return {
    addresses: [],
    neighbours: [],
    fdb: [],
    routes,
    owned: { devices: [], routeDevices: [dev], networks: families.map((f) => f.network.toString()) },
    skipped: sortSkips(skipped),
    programmed: [...programmed].sort(),
  };
}

/** The factory registered as `host-gw`. */
export function createHostGwBackend(ctx: BackendContext): Backend {
  return {
    type: 'host-gw',
    prepare: (): Promise<PreparedBackend> =>
      Promise.resolve({ backendType: 'host-gw', mtu: ctx.extIface.mtu, devices: [] }),
    plan: planHostGw,
  };
}

/**
 * The config weft-cni hands to the plugin that does the real work (bridge by default), built
 * from the network config and subnet.env exactly as flannel's CNI plugin builds it, so a node
 * switched from flannel to weft gets the same bridge, addresses and routes. Pure: no I/O.
 */
import type { SubnetEnv } from '../flanneld/subnet-env.js';
import { Cidr } from '../ipam/index.js';
import type { CniNetConf, JsonObject } from './net-conf.js';

/** The delegate plugin used unless `delegate.type` names another. */
export const DEFAULT_DELEGATE_TYPE = 'bridge';

/** The bridge device unless `delegate.bridge` names another (the name kubelet and flannel use). */
export const DEFAULT_BRIDGE = 'cni0';

/** The IPAM plugin unless `ipam.type` names another. */
export const DEFAULT_IPAM_TYPE = 'host-local';

/** A delegate config: a CNI network config for the delegate plugin. */
export interface DelegateConfig extends JsonObject {
  cniVersion: string;
  name: string;
  type: string;
  ipam: JsonObject;
}

/**
 * The delegate's config. Fields of `conf.delegate` win over the generated ones, except `name`
 * and `cniVersion` (the network's) and `ipam` (built from the lease). For bridge the defaults
 * are the ones kube-flannel ships: the bridge is every pod's default gateway, hairpin on.
 *
 * - `ipMasq` is the inverse of FLANNEL_IPMASQ: when the daemon masquerades, the bridge must not
 *   add a second set of rules; when it does not, pods still need their traffic masqueraded.
 * - `mtu` is FLANNEL_MTU, the overlay's MTU, so pod packets fit in the tunnel.
 * - `ipam.ranges` is the lease (and the IPv6 lease), always: a pod address outside the node's
 *   lease would be routed to another node. Overrides of the range (`ranges`, and host-local's
 *   older `subnet`/`rangeStart`/`rangeEnd`/`gateway`) are dropped for the same reason.
 * - `ipam.routes` are the configured ones followed by the cluster networks, via the bridge.
 */
export function buildDelegateConfig(conf: CniNetConf, env: SubnetEnv): DelegateConfig {
  const type = typeof conf.delegate.type === 'string' ? conf.delegate.type : DEFAULT_DELEGATE_TYPE;
  const generated: JsonObject = {
    ...(type === 'bridge'
      ? { bridge: DEFAULT_BRIDGE, isGateway: true, isDefaultGateway: true, hairpinMode: true }
      : {}),
    ipMasq: !env.ipMasq,
    mtu: env.mtu,
  };
  const config: DelegateConfig = {
    cniVersion: conf.cniVersion,
    name: conf.name,
    type,
    ...generated,
    ...withoutKeys(conf.delegate, ['cniVersion', 'name', 'type', 'ipam']),
    ipam: buildIpam(conf.ipam, env),
  };
  if (conf.runtimeConfig) config.runtimeConfig = conf.runtimeConfig;
  return config;
}

/**
 * host-local's pre-`ranges` form of a range. host-local prepends such a range to `ranges`, so
 * passing one on (as flannel does) could hand out addresses outside the lease.
 */
const LEGACY_RANGE_KEYS = ['subnet', 'rangeStart', 'rangeEnd', 'gateway'] as const;

function buildIpam(overrides: JsonObject | undefined, env: SubnetEnv): JsonObject {
  const ranges: JsonObject[][] = [[{ subnet: env.subnet }]];
  if (env.ipv6Subnet !== undefined) ranges.push([{ subnet: env.ipv6Subnet }]);
  const routes: unknown[] = Array.isArray(overrides?.routes) ? [...overrides.routes] : [];
  routes.push({ dst: env.network, gw: gatewayOf(env.subnet) });
  if (env.ipv6Network !== undefined && env.ipv6Subnet !== undefined) {
    routes.push({ dst: env.ipv6Network, gw: gatewayOf(env.ipv6Subnet) });
  }
  return {
    type: DEFAULT_IPAM_TYPE,
    ...withoutKeys(overrides ?? {}, ['ranges', 'routes', ...LEGACY_RANGE_KEYS]),
    ranges,
    routes,
  };
}

/**
 * The gateway host-local gives pods of a lease (its first host, the bridge's address). flannel
 * leaves `gw` out of the cluster-network route, which yields the same kernel route, but the
 * bridge plugin before v1.3.0 (Debian 12 ships 1.1.1) then fails every CHECK with "Expected
 * Route ... GW:<nil> not found" (containernetworking/plugins#886). Naming it makes CHECK work.
 */
function gatewayOf(lease: string): string {
  return Cidr.parse(lease).firstHost;
}

function withoutKeys(obj: JsonObject, keys: readonly string[]): JsonObject {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));
}

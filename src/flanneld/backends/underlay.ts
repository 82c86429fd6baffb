/** Direct reachability over the underlay, as host-gw and DirectRouting need it. */
import { Cidr } from '../../ipam/index.js';
import type { Underlay } from './backend.js';

/**
 * True when `ip` lies in a network directly connected on the external interface, so a route
 * `via <ip> dev <iface>` needs no router. flannel asks the kernel (`ip route get` without a
 * gateway); the reconciler reads the same facts before planning so the planner stays pure.
 */
export function isDirectlyConnected(ip: string, underlay: Underlay): boolean {
  return underlay.connected.some((text) => {
    try {
      return Cidr.parseLenient(text).contains(ip);
    } catch {
      return false;
    }
  });
}

/**
 * Which addresses a Service may claim on this cluster: the part of admission that depends on
 * configuration. Anyone who can write a Service to the registry could otherwise point a
 * ClusterIP, an externalIP or a LoadBalancer ingress address at any address (etcd's own, another
 * tenant's; the CVE-2020-8554 pattern) and have every node capture its traffic. A Service that
 * breaks the policy is refused whole, as an admission plugin refuses it, and named with the field
 * at fault like an invalid one.
 */
import { ErrorCodes, WeftError } from '../errors/index.js';
import { Cidr } from '../ipam/index.js';
import type { ServiceSpec } from './schema.js';

/** The configuration a Service's addresses are checked against. */
export interface ServicePolicy {
  /**
   * Where ClusterIPs come from (kube-apiserver's `--service-cluster-ip-range`, weft-proxy's
   * `--service-cidr`); at most one per family. A ClusterIP outside them, or of a family none
   * covers, is refused.
   */
  serviceCidrs: readonly string[];
  /**
   * Where externalIPs may lie (`--allowed-external-cidrs`). Empty: no externalIPs at all, as with
   * the API server's DenyServiceExternalIPs admission plugin.
   */
  allowedExternalCidrs: readonly string[];
  /**
   * Where LoadBalancer ingress addresses may lie (`--allowed-loadbalancer-cidrs`). Empty: any
   * address (the special ones are refused by validation whatever the policy).
   */
  allowedLoadBalancerCidrs: readonly string[];
}

/** A {@link ServicePolicy} with its CIDRs parsed, ready to check many Services. */
export interface CompiledServicePolicy {
  readonly serviceCidrs: readonly Cidr[];
  readonly allowedExternalCidrs: readonly Cidr[];
  readonly allowedLoadBalancerCidrs: readonly Cidr[];
}

/** Parses the policy's CIDRs (host bits cleared); throws on a malformed one. */
export function compileServicePolicy(policy: ServicePolicy): CompiledServicePolicy {
  const parse = (list: readonly string[]) => list.map((c) => Cidr.parseLenient(c.trim()));
  return {
    serviceCidrs: parse(policy.serviceCidrs),
    allowedExternalCidrs: parse(policy.allowedExternalCidrs),
    allowedLoadBalancerCidrs: parse(policy.allowedLoadBalancerCidrs),
  };
}

/**
 * Checks a validated Service against the policy; throws WEFT_INVALID_VALUE naming `key` and the
 * field (`spec.clusterIPs[0]`, `spec.externalIPs[1]`, `status.loadBalancer.ingress`) otherwise.
 */
export function checkServicePolicy(key: string, svc: ServiceSpec, policy: CompiledServicePolicy): void {
  const list = (cidrs: readonly Cidr[]) => cidrs.map(String).join(',');
  svc.clusterIPs.forEach((ip, i) => {
    if (!policy.serviceCidrs.some((c) => c.contains(ip))) {
      throw refused(
        key,
        `spec.clusterIPs[${i}]`,
        `${ip} is not in --service-cidr (${list(policy.serviceCidrs) || 'none'})`,
      );
    }
  });
  svc.externalIPs.forEach((ip, i) => {
    if (!policy.allowedExternalCidrs.length) {
      throw refused(
        key,
        `spec.externalIPs[${i}]`,
        `${ip}: externalIPs are refused (--allowed-external-cidrs is empty)`,
      );
    }
    if (!policy.allowedExternalCidrs.some((c) => c.contains(ip))) {
      throw refused(
        key,
        `spec.externalIPs[${i}]`,
        `${ip} is not in --allowed-external-cidrs (${list(policy.allowedExternalCidrs)})`,
      );
    }
  });
  if (policy.allowedLoadBalancerCidrs.length) {
    for (const ip of svc.loadBalancerIPs) {
      if (!policy.allowedLoadBalancerCidrs.some((c) => c.contains(ip))) {
        throw refused(
          key,
          'status.loadBalancer.ingress',
          `${ip} is not in --allowed-loadbalancer-cidrs (${list(policy.allowedLoadBalancerCidrs)})`,
        );
      }
    }
  }
}

function refused(key: string, field: string, message: string): WeftError {
  return new WeftError(ErrorCodes.INVALID_VALUE, `Service ${key}: field ${field}: ${message}`, {
    object: key,
    kind: 'Service',
    field,
    policy: true,
  });
}

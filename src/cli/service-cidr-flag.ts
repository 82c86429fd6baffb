/**
 * `--service-cidr`, the range ClusterIPs come from (kube-apiserver's
 * `--service-cluster-ip-range`): weftctl allocates from it and weft-proxy refuses ClusterIPs
 * outside it, so both read it with one definition (name, default, validation) and a cluster
 * configures both with the same value.
 */
import { messageOf } from '../errors/index.js';
import { Cidr, DEFAULT_SERVICE_CIDR } from '../ipam/index.js';
import { stringFlag } from './flag-parser.js';

/** `--service-cidr` with `description` saying what this program does with it. */
export function serviceCidrFlag(description: string) {
  return stringFlag({
    name: 'service-cidr',
    metavar: '<cidr,...>',
    description: `${description} At most one CIDR per family.`,
    default: DEFAULT_SERVICE_CIDR,
    validate: serviceCidrProblem,
  });
}

/** The CIDRs of a `--service-cidr` value. */
export function serviceCidrs(value: string): string[] {
  return value.split(',').map((c) => c.trim());
}

function serviceCidrProblem(v: string): string | undefined {
  try {
    const cidrs = serviceCidrs(v).map((c) => Cidr.parse(c));
    return new Set(cidrs.map((c) => c.family)).size === cidrs.length ? undefined : 'one CIDR per family';
  } catch (err) {
    return messageOf(err);
  }
}

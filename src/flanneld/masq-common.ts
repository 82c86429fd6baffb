/**
 * What both firewall implementations of flannel's masquerade and forward rules share: the
 * desired configuration, its validation, the contract, and how external programs are run.
 */
import { invalid } from '../errors/index.js';
import { type IpFamily, parseCidrField } from '../ipam/index.js';

/** The rules weft-flanneld wants on the node. */
export interface MasqConfig {
  /** The cluster network N (IPv4 CIDR, network address), e.g. `10.244.0.0/16`. */
  network: string;
  /** This node's lease S (IPv4 CIDR inside `network`), e.g. `10.244.3.0/24`. */
  subnet: string;
  /** The cluster IPv6 network; with `ipv6Subnet`, IPv6 rules are kept too. */
  ipv6Network?: string | undefined;
  /** This node's IPv6 lease inside `ipv6Network`. */
  ipv6Subnet?: string | undefined;
  /** Keep the masquerade rules (`--ip-masq`). */
  masquerade: boolean;
  /** Keep the forward accept rules (`--iptables-forward-rules`). */
  forward: boolean;
}

/** Keeps the rules of a {@link MasqConfig} in the kernel. */
export interface MasqRules {
  /**
   * Makes the kernel hold exactly the desired rules: installs what is missing, rewrites what
   * drifted (a rule deleted, reordered, changed, a jump missing or duplicated) and removes what
   * is no longer wanted. Only reads when nothing changed. `repaired` is true when it wrote.
   */
  ensure(desired: MasqConfig): Promise<{ repaired: boolean }>;
  /** Removes every rule, chain, jump and table this implementation manages. Idempotent. */
  cleanup(): Promise<void>;
}

/** The networks of one address family, in canonical text. */
export interface FamilyNets {
  family: IpFamily;
  network: string;
  subnet: string;
  /** The multicast range that must never be masqueraded. */
  multicast: string;
}

const OBJECT = 'masq-config';

/** Validates a config and returns its families (IPv4 first) in canonical text. */
export function familiesOf(cfg: MasqConfig): FamilyNets[] {
  const out = [pair(4, cfg.network, cfg.subnet, 'network', 'subnet')];
  if (cfg.ipv6Network !== undefined || cfg.ipv6Subnet !== undefined) {
    if (cfg.ipv6Network === undefined || cfg.ipv6Subnet === undefined) {
      const missing = cfg.ipv6Network === undefined ? 'ipv6Network' : 'ipv6Subnet';
      throw invalid(OBJECT, missing, 'ipv6Network and ipv6Subnet must be given together');
    }
    out.push(pair(6, cfg.ipv6Network, cfg.ipv6Subnet, 'ipv6Network', 'ipv6Subnet'));
  }
  return out;
}

function pair(family: IpFamily, networkText: string, subnetText: string, nf: string, sf: string): FamilyNets {
  // iptables and nft print the masked network; a value with host bits would never compare equal
  // to what they show and would be rewritten on every check, so host bits are refused.
  const network = parseCidrField(OBJECT, nf, networkText, { family });
  const subnet = parseCidrField(OBJECT, sf, subnetText, { family });
  if (!network.contains(subnet)) throw invalid(OBJECT, sf, `${subnetText} is not inside ${networkText}`);
  return {
    family,
    network: network.toString(),
    subnet: subnet.toString(),
    multicast: family === 4 ? '224.0.0.0/4' : 'ff00::/8',
  };
}

export {
  type CommandResult,
  type CommandRunner,
  type ExecRunnerOptions,
  SerialQueue,
  execFailed,
  execRunner,
  runChecked,
} from '../exec/index.js';

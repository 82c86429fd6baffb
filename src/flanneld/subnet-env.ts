/**
 * subnet.env, the file through which flannel hands the node's network to CNI (the flannel CNI
 * plugin sources it). weft writes it byte for byte as flannel does, since the plugin and
 * operators' scripts read it:
 *
 *   FLANNEL_NETWORK=10.244.0.0/16
 *   FLANNEL_SUBNET=10.244.3.1/24
 *   FLANNEL_IPV6_NETWORK=fd00:10:244::/56     (only with IPv6)
 *   FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64   (only with IPv6)
 *   FLANNEL_MTU=1450
 *   FLANNEL_IPMASQ=false
 */
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { removeStaleTempFiles, tempFileName } from '../atomic-file/index.js';
import { invalid } from '../errors/index.js';
import { type Cidr, type IpFamily, parseCidrField } from '../ipam/index.js';

/** What subnet.env says. */
export interface SubnetEnv {
  /** The cluster network (IPv4), e.g. `10.244.0.0/16`. */
  network: string;
  /**
   * This node's lease (IPv4), as the lease's network, e.g. `10.244.3.0/24`. The file holds its
   * first host (`10.244.3.1/24`); {@link parseSubnetEnv} gives the lease back.
   */
  subnet: string;
  /** The cluster IPv6 network; set exactly when IPv6 is enabled. */
  ipv6Network?: string | undefined;
  /** This node's IPv6 lease, as its network; set together with `ipv6Network`. */
  ipv6Subnet?: string | undefined;
  /** MTU for pod interfaces (the overlay device's MTU). */
  mtu: number;
  /** Whether weft-flanneld masquerades (`--ip-masq`); CNI then leaves masquerading alone. */
  ipMasq: boolean;
}

const OBJECT = 'subnet.env';

/** The file's text, exactly as flanneld writes it. Throws INVALID_ARGUMENT naming the field. */
export function formatSubnetEnv(env: SubnetEnv): string {
  const v4 = checkPair(4, env.network, env.subnet, 'network', 'subnet');
  const hasV6 = env.ipv6Network !== undefined || env.ipv6Subnet !== undefined;
  if (hasV6 && (env.ipv6Network === undefined || env.ipv6Subnet === undefined)) {
    const missing = env.ipv6Network === undefined ? 'ipv6Network' : 'ipv6Subnet';
    throw invalid(OBJECT, missing, 'ipv6Network and ipv6Subnet must be given together');
  }
  if (!Number.isSafeInteger(env.mtu) || env.mtu < 68 || env.mtu > 65535) {
    throw invalid(OBJECT, 'mtu', `must be an integer in 68..65535, got ${env.mtu}`);
  }
  const lines = [`FLANNEL_NETWORK=${v4.network.toString()}`, `FLANNEL_SUBNET=${firstHost(v4.subnet)}`];
  if (hasV6) {
    const v6 = checkPair(6, env.ipv6Network as string, env.ipv6Subnet as string, 'ipv6Network', 'ipv6Subnet');
    lines.push(
      `FLANNEL_IPV6_NETWORK=${v6.network.toString()}`,
      `FLANNEL_IPV6_SUBNET=${firstHost(v6.subnet)}`,
    );
  }
  lines.push(`FLANNEL_MTU=${env.mtu}`, `FLANNEL_IPMASQ=${env.ipMasq ? 'true' : 'false'}`);
  return `${lines.join('\n')}\n`;
}

function checkPair(
  family: IpFamily,
  networkText: string,
  subnetText: string,
  networkField: string,
  subnetField: string,
): { network: Cidr; subnet: Cidr } {
  const network = parseCidrField(OBJECT, networkField, networkText, { family });
  const subnet = parseCidrField(OBJECT, subnetField, subnetText, { family });
  if (subnet.prefixLength > subnet.bits - 2) {
    throw invalid(
      OBJECT,
      subnetField,
      `${subnetText} has no room for a first host (prefix at most /${subnet.bits - 2})`,
    );
  }
  if (!network.contains(subnet))
    throw invalid(OBJECT, subnetField, `${subnetText} is not inside ${networkText}`);
  return { network, subnet };
}

/** The lease's first host with the lease's prefix: `10.244.3.0/24` → `10.244.3.1/24`. */
function firstHost(lease: Cidr): string {
  return `${lease.firstHost}/${lease.prefixLength}`;
}

const KEYS = {
  network: 'FLANNEL_NETWORK',
  subnet: 'FLANNEL_SUBNET',
  ipv6Network: 'FLANNEL_IPV6_NETWORK',
  ipv6Subnet: 'FLANNEL_IPV6_SUBNET',
  mtu: 'FLANNEL_MTU',
  ipMasq: 'FLANNEL_IPMASQ',
} as const;

/**
 * Reads subnet.env text. Tolerates what a shell would: comments, blank lines, `export `, quotes
 * and surrounding spaces; unknown keys are ignored and a repeated key's last value wins. Throws
 * INVALID_ARGUMENT naming the line and key at fault, or the missing key.
 */
export function parseSubnetEnv(text: string): SubnetEnv {
  const seen = new Map<string, { value: string; line: number }>();
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) throw invalid(`${OBJECT} line ${i + 1}`, '', `expected KEY=VALUE, got ${JSON.stringify(raw)}`);
    seen.set(m[1] as string, { value: unquote(m[2] as string), line: i + 1 });
  }

  const need = (key: string): { value: string; where: string } => {
    const found = seen.get(key);
    if (!found) throw invalid(OBJECT, key, 'missing');
    return { value: found.value, where: `${OBJECT} line ${found.line}` };
  };
  // FLANNEL_SUBNET holds an address inside the lease (its first host); the lease is its network.
  const cidr = (key: string, family: IpFamily, holdsFirstHost: boolean): string => {
    const { value, where } = need(key);
    return parseCidrField(where, key, value, { family, lenient: holdsFirstHost }).toString();
  };

  const env: SubnetEnv = {
    network: cidr(KEYS.network, 4, false),
    subnet: cidr(KEYS.subnet, 4, true),
    mtu: 0,
    ipMasq: false,
  };
  if (seen.has(KEYS.ipv6Network) || seen.has(KEYS.ipv6Subnet)) {
    env.ipv6Network = cidr(KEYS.ipv6Network, 6, false);
    env.ipv6Subnet = cidr(KEYS.ipv6Subnet, 6, true);
  }
  const mtu = need(KEYS.mtu);
  if (!/^\d{1,5}$/.test(mtu.value) || Number(mtu.value) < 68 || Number(mtu.value) > 65535) {
    throw invalid(mtu.where, KEYS.mtu, `must be an integer in 68..65535, got ${JSON.stringify(mtu.value)}`);
  }
  env.mtu = Number(mtu.value);
  const masq = need(KEYS.ipMasq);
  if (masq.value !== 'true' && masq.value !== 'false') {
    throw invalid(masq.where, KEYS.ipMasq, `must be true or false, got ${JSON.stringify(masq.value)}`);
  }
  env.ipMasq = masq.value === 'true';
  return env;
}

function unquote(value: string): string {
  const v = value.trim();
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.at(-1) === v[0]) return v.slice(1, -1);
  return v;
}

/**
 * Writes `contents` to `path` atomically: a temp file in the same directory is written and
 * fsynced, then renamed over `path`, so a reader (CNI, at any moment a pod starts) sees the old
 * file or the new one, never a truncated one, and a crash leaves one of the two on disk. The
 * directory is created when missing (it is usually on tmpfs, /run/flannel, empty after boot).
 * Temp files a killed writer left (kill -9 before the rename) are removed on the first write.
 */
/** Targets whose directory was swept for stale temp files by this process. */
const swept = new Set<string>();

export async function writeSubnetEnv(path: string, contents: string): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  if (!swept.has(path)) {
    swept.add(path);
    await removeStaleTempFiles(dir, basename(path));
  }
  // Same directory, so the rename never crosses a file system and stays atomic.
  const tmp = join(dir, tempFileName(basename(path)));
  try {
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(contents);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  // The rename is only durable once the directory entry is on disk.
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/**
 * `weftctl leases`, `lease reserve` and `lease release`: flannel's leases under
 * `<etcd-prefix>/subnets/`. A reservation is what flannel calls one: a lease key without a TTL,
 * which the node with that PublicIP takes and never lets expire.
 */
import { boolFlag, stringFlag } from '../../cli/flag-parser.js';
import { ErrorCodes, WeftError, messageOf } from '../../errors/index.js';
import { DEFAULT_LEASE_TTL_SECONDS } from '../../flanneld/lease/index.js';
import {
  canonicalIp,
  decodeLeaseAttrs,
  encodeLeaseAttrs,
  formatSubnetKey,
  isIPv4,
  leaseFitsConfig,
  parseNetConfig,
  parseSubnetKey,
  subnetPath,
  subnetsDir,
  type LeaseAttrs,
  type SubnetKey,
} from '../../ipam/index.js';
import type { KeyValue, Store } from '../../registry/index.js';
import { UsageError, defineCommand, expectArgs, type CommandContext } from '../command.js';
import { cell, formatAge } from '../output.js';
import { getConfig } from './config.js';

/** One lease as `weftctl leases` shows it. */
export interface LeaseView {
  subnet: string;
  ipv6Subnet?: string;
  key: string;
  publicIP: string;
  publicIPv6?: string;
  backend?: string;
  vtepMAC?: string;
  /** Seconds left; absent for a reservation. */
  ttlSeconds?: number;
  reservation: boolean;
}

function vtepMac(attrs: LeaseAttrs): string | undefined {
  const data = attrs.backendData as { VtepMAC?: unknown } | undefined;
  return typeof data?.VtepMAC === 'string' ? data.VtepMAC : undefined;
}

/** Reads the leases; unreadable ones come back as errors naming the key and field. */
export async function readLeases(
  store: Store,
  prefix: string,
): Promise<{ leases: LeaseView[]; errors: string[] }> {
  const dir = subnetsDir(prefix);
  const { items } = await store.list(dir);
  const leases: LeaseView[] = [];
  const errors: string[] = [];
  for (const kv of items) {
    const key = kv.key.slice(dir.length);
    try {
      const subnets = parseSubnetKey(key);
      const attrs = decodeLeaseAttrs(kv.value, key);
      const ttl = kv.ttlBound ? await store.timeToLive(kv.key) : undefined;
      const mac = vtepMac(attrs);
      leases.push({
        subnet: subnets.ipv4?.toString() ?? '',
        ...(subnets.ipv6 && { ipv6Subnet: subnets.ipv6.toString() }),
        key,
        publicIP: attrs.publicIP,
        ...(attrs.publicIPv6 && { publicIPv6: attrs.publicIPv6 }),
        ...(attrs.backendType && { backend: attrs.backendType }),
        ...(mac && { vtepMAC: mac }),
        ...(ttl !== undefined && { ttlSeconds: Math.round(ttl) }),
        reservation: !kv.ttlBound,
      });
    } catch (err) {
      errors.push(`${kv.key}: ${messageOf(err)}`);
    }
  }
  return { leases, errors };
}

/** A subnet argument: `10.244.3.0/24` or flannel's key form `10.244.3.0-24`. */
function parseSubnetArg(arg: string): SubnetKey {
  const key = arg.includes('/') && !arg.includes('&') ? arg.replace('/', '-') : arg;
  try {
    return parseSubnetKey(key);
  } catch (err) {
    throw new UsageError(`subnet "${arg}": ${messageOf(err).replace(/^subnet key "[^"]*": /, '')}`);
  }
}

async function currentLease(store: Store, ctx: CommandContext, subnets: SubnetKey) {
  const path = subnetPath(subnets, ctx.global.etcdPrefix);
  return { path, kv: await store.get(path) };
}

function publicIpOf(kv: KeyValue, key: string): string {
  try {
    return decodeLeaseAttrs(kv.value, key).publicIP;
  } catch {
    return '(unreadable)';
  }
}

/** Another writer got there between our read and our compare-and-swap. */
function conflict(path: string, what: 'changed' | 'appeared'): WeftError {
  return new WeftError(ErrorCodes.CONFLICT, `${path} ${what} meanwhile; run again`, { object: path });
}

const PUBLIC_IP_FLAG = stringFlag({
  name: 'public-ip',
  metavar: '<ip>',
  description: "The node's public IPv4 address (weft-flanneld's --public-ip or its interface address).",
  env: false,
});

export const leaseCommands = [
  defineCommand({
    words: ['leases'],
    summary: 'List the leases: subnet, public IP, backend, VTEP MAC, TTL left, reservation.',
    flags: {},
    async run(ctx, _flags, args) {
      expectArgs(args, 0, 0, 'weftctl leases');
      const { leases, errors } = await readLeases(await ctx.store(), ctx.global.etcdPrefix);
      ctx.print(leases, (ls) => {
        if (ls.length === 0 && errors.length === 0)
          return `no leases under ${subnetsDir(ctx.global.etcdPrefix)}\n`;
        return {
          headers: ['subnet', 'public-ip', 'backend', 'vtep-mac', 'ttl', 'reserved'],
          rows: ls.map((l) => [
            [l.subnet, l.ipv6Subnet].filter(Boolean).join(','),
            [l.publicIP, l.publicIPv6].filter(Boolean).join(','),
            cell(l.backend),
            cell(l.vtepMAC),
            l.ttlSeconds === undefined ? '-' : formatAge(l.ttlSeconds),
            l.reservation ? 'yes' : 'no',
          ]),
        };
      });
      for (const e of errors) ctx.io.stderr(`weftctl: skipped unreadable lease ${e}\n`);
      return errors.length ? 1 : 0;
    },
  }),
  defineCommand({
    words: ['lease', 'reserve'],
    usage: 'SUBNET --public-ip IP',
    summary: 'Pin a subnet to a node: a lease without TTL, as flannel reservations are.',
    description:
      "SUBNET is 10.244.3.0/24 or flannel's key form 10.244.3.0-24 and must fit the network config. " +
      'A lease the node already holds becomes a reservation in place (the node keeps its subnet); a ' +
      'subnet leased to another node is refused. The node takes its reservation when weft-flanneld ' +
      '(or flannel) next starts or renews.',
    flags: { publicIp: PUBLIC_IP_FLAG },
    async run(ctx, flags, args) {
      expectArgs(args, 1, 1, 'weftctl lease reserve SUBNET --public-ip IP');
      if (flags.publicIp === undefined) throw new UsageError('lease reserve needs --public-ip');
      if (!isIPv4(flags.publicIp))
        throw new UsageError(`--public-ip "${flags.publicIp}": not an IPv4 address`);
      const publicIP = canonicalIp(flags.publicIp);
      const subnets = parseSubnetArg(args[0] ?? '');
      const key = formatSubnetKey(subnets);
      const store = await ctx.store();
      const { key: cfgKey, kv: cfg } = await getConfig(ctx);
      const config = parseNetConfig(cfg.value);
      if (!leaseFitsConfig(config, subnets)) {
        throw new WeftError(
          ErrorCodes.INVALID_ARGUMENT,
          `subnet ${key} does not fit the network config at ${cfgKey} (network, subnet length and range)`,
          { object: key, field: 'subnet' },
        );
      }
      const { path, kv } = await currentLease(store, ctx, subnets);
      if (!kv) {
        const created = await store.create(path, encodeLeaseAttrs({ publicIP }));
        if (!created.created) throw conflict(path, 'appeared');
        ctx.io.stdout(`reserved ${key} for ${publicIP}\n`);
        return 0;
      }
      const holder = publicIpOf(kv, key);
      if (holder !== publicIP) {
        throw new WeftError(
          ErrorCodes.ALREADY_EXISTS,
          `subnet ${key} is ${kv.ttlBound ? 'leased' : 'reserved'} to ${holder}; release it first`,
          { object: path },
        );
      }
      if (!kv.ttlBound) {
        ctx.io.stdout(`${key} is already reserved for ${publicIP}\n`);
        return 0;
      }
      const res = await store.update(path, kv.value, { modRevision: kv.modRevision }, { ttlSeconds: null });
      if (!res.updated) throw conflict(path, 'changed');
      ctx.io.stdout(`reserved ${key} for ${publicIP} (the node's lease, now without TTL)\n`);
      return 0;
    },
  }),
  defineCommand({
    words: ['lease', 'release'],
    usage: 'SUBNET [--delete]',
    summary: 'Turn a reservation back into an ordinary lease (or delete a lease with --delete).',
    description:
      `Without --delete the key gets flannel's lease TTL (${DEFAULT_LEASE_TTL_SECONDS} s): the node ` +
      'that uses it keeps renewing it, and when no node does, it expires. --delete removes the key ' +
      'at once; a running node then takes a new lease (possibly the same subnet).',
    flags: {
      delete: boolFlag({ name: 'delete', description: 'Delete the lease key instead.', env: false }),
    },
    async run(ctx, flags, args) {
      expectArgs(args, 1, 1, 'weftctl lease release SUBNET [--delete]');
      const subnets = parseSubnetArg(args[0] ?? '');
      const key = formatSubnetKey(subnets);
      const store = await ctx.store();
      const { path, kv } = await currentLease(store, ctx, subnets);
      if (!kv)
        throw new WeftError(ErrorCodes.NOT_FOUND, `no lease or reservation for ${key} at ${path}`, {
          object: path,
        });
      if (flags.delete) {
        const gone = await store.delete(path, { modRevision: kv.modRevision });
        if (!gone) throw conflict(path, 'changed');
        ctx.io.stdout(`deleted ${kv.ttlBound ? 'lease' : 'reservation'} ${key} (${publicIpOf(kv, key)})\n`);
        return 0;
      }
      if (kv.ttlBound) {
        throw new WeftError(
          ErrorCodes.INVALID_ARGUMENT,
          `${key} is not a reservation (it has a TTL); use --delete to remove the lease`,
          {
            object: path,
          },
        );
      }
      const res = await store.update(
        path,
        kv.value,
        { modRevision: kv.modRevision },
        {
          ttlSeconds: DEFAULT_LEASE_TTL_SECONDS,
        },
      );
      if (!res.updated) throw conflict(path, 'changed');
      ctx.io.stdout(
        `released ${key} (${publicIpOf(kv, key)}): an ordinary lease now, expiring unless renewed\n`,
      );
      return 0;
    },
  }),
];

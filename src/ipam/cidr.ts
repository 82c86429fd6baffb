/**
 * An immutable IPv4 or IPv6 network (address block). Arithmetic is on bigint so one code path
 * serves both families; ip-address only parses and prints.
 */
import { invalid } from '../errors/index.js';
import { ADDRESS_BITS, badValue, bigIntToIp, parseIp, type IpFamily } from './ip.js';

/** A prefix length written in decimal without a sign or leading zeros, or undefined. */
export function parsePrefixLength(text: string): number | undefined {
  return /^(0|[1-9][0-9]{0,2})$/.test(text) ? Number(text) : undefined;
}

/** An IPv4 or IPv6 network; build one with {@link Cidr.parse} and friends. Frozen. */
export class Cidr {
  /** Address family. */
  readonly family: IpFamily;
  /** Prefix length in bits. */
  readonly prefixLength: number;
  /** The network address as an integer. */
  readonly start: bigint;

  private constructor(family: IpFamily, start: bigint, prefixLength: number) {
    this.family = family;
    this.start = start;
    this.prefixLength = prefixLength;
    Object.freeze(this);
  }

  /**
   * Parses `address/prefix`, refusing host bits (`10.244.1.0/16`): where a network is expected,
   * host bits are almost always a typo, and silently masking them would pick a different network.
   */
  static parse(text: string): Cidr {
    return Cidr.#parse(text, true);
  }

  /** Parses `address/prefix`, clearing any host bits (`10.244.1.7/16` → `10.244.0.0/16`). */
  static parseLenient(text: string): Cidr {
    return Cidr.#parse(text, false);
  }

  /** The network `ip/prefixLength`; throws when host bits are set. */
  static from(ip: string, prefixLength: number): Cidr {
    const { family, value } = parseIp(ip);
    return Cidr.#make(family, value, prefixLength, true, `${ip}/${prefixLength}`);
  }

  /** The network whose address is `value`; throws when out of range or host bits are set. */
  static fromBigInt(family: IpFamily, value: bigint, prefixLength: number): Cidr {
    return Cidr.#make(family, value, prefixLength, true, `${bigIntToIp(value, family)}/${prefixLength}`);
  }

  static #parse(text: string, strict: boolean): Cidr {
    const slash = text.indexOf('/');
    const prefixLength = parsePrefixLength(text.slice(slash + 1));
    if (slash < 0 || prefixLength === undefined) {
      throw badValue(text, 'is not a CIDR (expected <address>/<prefix length>)');
    }
    const { family, value } = parseIp(text.slice(0, slash));
    return Cidr.#make(family, value, prefixLength, strict, text);
  }

  static #make(family: IpFamily, value: bigint, prefixLength: number, strict: boolean, text: string): Cidr {
    const bits = ADDRESS_BITS[family];
    if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > bits) {
      throw badValue(text, `has a prefix length out of range for IPv${family} (0..${bits})`);
    }
    const hostBits = (1n << BigInt(bits - prefixLength)) - 1n;
    const start = value & ~hostBits;
    if (strict && start !== value) {
      throw badValue(text, `has host bits set (the network is ${bigIntToIp(start, family)}/${prefixLength})`);
    }
    return new Cidr(family, start, prefixLength);
  }

  /** Number of bits in an address of this family (32 or 128). */
  get bits(): number {
    return ADDRESS_BITS[this.family];
  }

  /** Number of addresses in the network. */
  get size(): bigint {
    return 1n << BigInt(this.bits - this.prefixLength);
  }

  /** The last address as an integer. */
  get end(): bigint {
    return this.start + this.size - 1n;
  }

  /** The network address, canonical. */
  get network(): string {
    return bigIntToIp(this.start, this.family);
  }

  /**
   * The network address plus one: what flannel hands to the node's bridge (FLANNEL_SUBNET). A
   * single-address network has no other address, so it yields its own.
   */
  get firstHost(): string {
    return bigIntToIp(this.size > 1n ? this.start + 1n : this.start, this.family);
  }

  /** True when the address (string) or the whole network lies inside this one; false across families. */
  contains(other: string | Cidr): boolean {
    const { family, start, end } = typeof other === 'string' ? rangeOfIp(other) : other;
    return family === this.family && start >= this.start && end <= this.end;
  }

  /** True when the two networks share at least one address. */
  overlaps(other: Cidr): boolean {
    return other.family === this.family && other.start <= this.end && this.start <= other.end;
  }

  /**
   * The networks of `list` not inside another one of it, in their first order, duplicates once.
   * Two CIDRs either nest or are disjoint, so the result covers the same addresses with no
   * overlap: what an nft interval set takes (overlapping elements fail the whole transaction).
   */
  static outermost(list: readonly Cidr[]): Cidr[] {
    return list.filter((c, i) => !list.some((o, j) => j !== i && o.contains(c) && (!c.contains(o) || j < i)));
  }

  /** True when both denote the same network. */
  equals(other: Cidr): boolean {
    return (
      other.family === this.family && other.start === this.start && other.prefixLength === this.prefixLength
    );
  }

  /** The network of the same length that follows this one, or undefined at the end of the address space. */
  next(): Cidr | undefined {
    const start = this.end + 1n;
    return start >> BigInt(this.bits) === 0n ? new Cidr(this.family, start, this.prefixLength) : undefined;
  }

  /** How many `/subnetLen` subnets this network splits into. */
  subnetCount(subnetLen: number): bigint {
    this.#checkSubnetLen(subnetLen);
    return 1n << BigInt(subnetLen - this.prefixLength);
  }

  /** The `index`-th (from 0) `/subnetLen` subnet of this network. */
  subnetAt(subnetLen: number, index: bigint): Cidr {
    if (index < 0n || index >= this.subnetCount(subnetLen)) {
      throw badValue(String(index), `is not a subnet index of ${this} at /${subnetLen}`);
    }
    return new Cidr(this.family, this.start + (index << BigInt(this.bits - subnetLen)), subnetLen);
  }

  /** Index of the `/subnetLen` subnet of this network that holds the address `value`. */
  subnetIndexOf(subnetLen: number, value: bigint): bigint {
    this.#checkSubnetLen(subnetLen);
    if (value < this.start || value > this.end) {
      throw badValue(bigIntToIp(value, this.family), `is not inside ${this}`);
    }
    return (value - this.start) >> BigInt(this.bits - subnetLen);
  }

  /** All `/subnetLen` subnets in address order; lazy, so huge splits cost nothing until iterated. */
  *subnets(subnetLen: number): Generator<Cidr> {
    const count = this.subnetCount(subnetLen);
    for (let i = 0n; i < count; i++) yield this.subnetAt(subnetLen, i);
  }

  /** `network/prefixLength`, canonical. */
  toString(): string {
    return `${this.network}/${this.prefixLength}`;
  }

  /** Serialises as the CIDR string so configs and logs print naturally. */
  toJSON(): string {
    return this.toString();
  }

  #checkSubnetLen(subnetLen: number): void {
    if (!Number.isInteger(subnetLen) || subnetLen < this.prefixLength || subnetLen > this.bits) {
      throw badValue(
        String(subnetLen),
        `is not a subnet length of ${this} (${this.prefixLength}..${this.bits})`,
      );
    }
  }
}

function rangeOfIp(ip: string): { family: IpFamily; start: bigint; end: bigint } {
  const { family, value } = parseIp(ip);
  return { family, start: value, end: value };
}

/** Options for {@link parseCidrField}. */
export interface CidrFieldOptions {
  /** Required family. */
  family: IpFamily;
  /** Accept host bits (`10.244.3.1/24`) and return the network they are in. Default false. */
  lenient?: boolean;
}

/**
 * Parses one CIDR-valued field of a named object, with an error that names both
 * (`subnet.env line 2: field FLANNEL_SUBNET: must be an IPv4 CIDR, got "x"`).
 */
export function parseCidrField(object: string, field: string, text: string, opts: CidrFieldOptions): Cidr {
  let c: Cidr;
  try {
    c = opts.lenient ? Cidr.parseLenient(text) : Cidr.parse(text);
  } catch (err) {
    const why = /host bits/.test((err as Error).message)
      ? `${text} has host bits set (the network is ${Cidr.parseLenient(text).toString()})`
      : `must be an IPv${opts.family} CIDR, got ${JSON.stringify(text)}`;
    throw invalid(object, field, why);
  }
  if (c.family !== opts.family) {
    throw invalid(object, field, `must be an IPv${opts.family} CIDR, got ${JSON.stringify(text)}`);
  }
  return c;
}

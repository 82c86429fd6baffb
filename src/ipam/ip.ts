/**
 * Single IP addresses as strings, and their numeric form. Addresses leave this module in
 * canonical form (IPv6 compressed and lowercase, as Go's net.IP prints them), so that strings
 * written by weft and by flannel compare equal.
 */
import { Address4, Address6 } from 'ip-address';
import { ErrorCodes, WeftError } from '../errors/index.js';

/** An address family: 4 or 6. */
export type IpFamily = 4 | 6;

/** Number of bits in an address of each family. */
export const ADDRESS_BITS: Readonly<Record<IpFamily, number>> = { 4: 32, 6: 128 };

/**
 * The family of a bare address, or undefined when `text` is not one. ip-address also accepts a
 * `/prefix` and an IPv6 zone (`%eth0`); neither belongs in a bare address, so both are refused.
 */
export function ipFamily(text: string): IpFamily | undefined {
  if (text.includes('/') || text.includes('%')) return undefined;
  if (Address4.isValid(text)) return 4;
  if (Address6.isValid(text)) return 6;
  return undefined;
}

/** True when `text` is a bare IPv4 address. */
export function isIPv4(text: string): boolean {
  return ipFamily(text) === 4;
}

/** True when `text` is a bare IPv6 address. */
export function isIPv6(text: string): boolean {
  return ipFamily(text) === 6;
}

/** A parsed address: its family and its value as an unsigned integer. */
export interface ParsedIp {
  readonly family: IpFamily;
  readonly value: bigint;
}

/** Parses a bare address; throws WEFT_INVALID_ARGUMENT when `text` is not one. */
export function parseIp(text: string): ParsedIp {
  switch (ipFamily(text)) {
    case 4:
      return { family: 4, value: new Address4(text).bigInt() };
    case 6:
      return { family: 6, value: new Address6(text).bigInt() };
    default:
      throw badValue(text, 'is not an IP address');
  }
}

/** The address as an unsigned integer; throws WEFT_INVALID_ARGUMENT when `text` is not an address. */
export function ipToBigInt(text: string): bigint {
  return parseIp(text).value;
}

/** The canonical string of an address given as an integer; throws when out of the family's range. */
export function bigIntToIp(value: bigint, family: IpFamily): string {
  if (value < 0n || value >= 1n << BigInt(ADDRESS_BITS[family])) {
    throw badValue(String(value), `is out of range for IPv${family}`);
  }
  return family === 4 ? Address4.fromBigInt(value).correctForm() : Address6.fromBigInt(value).correctForm();
}

/** `text` in canonical form; throws WEFT_INVALID_ARGUMENT when it is not an address. */
export function canonicalIp(text: string): string {
  const { family, value } = parseIp(text);
  return bigIntToIp(value, family);
}

/**
 * The error for a malformed address or CIDR. The message starts with the offending value and
 * names no object, so that callers who know the field (a config key, a registry key) can
 * embed it in their own message.
 */
export function badValue(text: string, reason: string): WeftError {
  return new WeftError(ErrorCodes.INVALID_ARGUMENT, `${JSON.stringify(text)} ${reason}`, {
    field: '',
    value: text,
  });
}

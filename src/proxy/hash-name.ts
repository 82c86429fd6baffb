/**
 * kube-proxy's name hashing, shared by the iptables chain names, the nftables object names and
 * the benchmark's kube-proxy-layout peer: base32 (Go's base32.StdEncoding) of sha256, truncated.
 */
import { createHash } from 'node:crypto';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 with padding: Go's base32.StdEncoding.EncodeToString. */
export function base32(data: Uint8Array): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const byte of data) {
    acc = ((acc << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  while (out.length % 8 !== 0) out += '=';
  return out;
}

/** The first `length` characters of base32(sha256(text)). */
export function hashName(text: string, length: number): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, length);
}

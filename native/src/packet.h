// IPv4 packet checks and edits for the udp backend: everything that reads a header of a packet
// from the TUN device or the network goes through ParseIpv4 first, which is the fuzz target.
#pragma once

#include <cstddef>
#include <cstdint>

namespace weft {

enum class PacketError {
  kOk = 0,
  kTruncated,     // shorter than the IPv4 header or its IHL
  kBadVersion,    // not IPv4
  kBadIhl,        // IHL < 5
  kBadLength,     // total length < IHL or > bytes received
};

const char* PacketErrorName(PacketError e);

struct Ipv4Info {
  uint32_t src;  // network byte order
  uint32_t dst;  // network byte order
  uint8_t ttl;
  uint8_t protocol;
  size_t header_len;
  size_t total_len;  // from the header; the caller sends only this many bytes
};

// Validates an IPv4 header; on kOk fills `info`. Never reads beyond `len`.
PacketError ParseIpv4(const uint8_t* p, size_t len, Ipv4Info* info);

// Decrements TTL in place and patches the header checksum incrementally (RFC 1624). Returns
// false, changing nothing, when the TTL is 0 or 1 (the packet must not be forwarded).
bool DecrementTtl(uint8_t* p, size_t len);

// The Internet checksum of `len` bytes.
uint16_t InternetChecksum(const uint8_t* p, size_t len);

// Writes into `out` (capacity `cap`) an ICMP destination-unreachable (type 3, `code`) answering
// `orig`, from `src` (network order) to the original source. Returns its length, or 0 when
// `orig` is not a packet one may answer (ICMP error, fragment, broadcast).
size_t BuildIcmpUnreachable(const uint8_t* orig, size_t orig_len, uint32_t src, uint8_t code, uint8_t* out,
                            size_t cap);

}  // namespace weft

// IPv4 packet checks and edits for the udp backend: everything that reads a header of a packet
// from the TUN device or the network goes through ParseIpv4 first, which is the fuzz target.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

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

// One remote lease: its subnet and the node's public IP (all network byte order).
struct TunRoute {
  uint32_t net;
  uint32_t mask;
  uint32_t gw;
};

// The udp backend's lease table: where a packet from the TUN goes, and whether a datagram from
// the network may enter the TUN (only from a lease's public IP, with an inner source inside
// that lease's subnet; anyone else could inject any packet into the overlay).
class LeaseTable {
 public:
  enum class Verdict { kOk, kUnknownPeer, kForeignSource };

  void Set(std::vector<TunRoute> routes);
  // Longest prefix wins; false when no lease covers `dst`.
  bool Route(uint32_t dst, uint32_t* gw) const;
  Verdict Check(uint32_t outer_src, uint32_t inner_src) const;
  size_t size() const { return routes_.size(); }

 private:
  std::vector<TunRoute> routes_;
  // Prefix masks present, longest first, each with its networks: a lookup is one hash probe
  // per distinct prefix length (one in a cluster), not a scan of every lease.
  std::vector<std::pair<uint32_t, std::unordered_map<uint32_t, uint32_t>>> by_mask_;
  // Public IP → indexes into routes_ (a node may hold more than one lease).
  std::unordered_map<uint32_t, std::vector<size_t>> by_gw_;
};

// A token bucket in the manner of the kernel's ICMP limit (net.ipv4.icmp_msgs_per_sec and
// icmp_msgs_burst): `per_sec` tokens a second, at most `burst` saved up.
class TokenBucket {
 public:
  TokenBucket(uint32_t per_sec, uint32_t burst) : per_sec_(per_sec), burst_(burst), tokens_(burst) {}
  // True (and one token used) when one may be sent at `now_ms` (a monotonic clock).
  bool Take(uint64_t now_ms);

 private:
  uint32_t per_sec_;
  uint32_t burst_;
  uint64_t tokens_;
  uint64_t last_ms_ = 0;
  bool started_ = false;
};

}  // namespace weft

// Segmentation and coalescing of TCP/IPv4 for the udp backend's offload path, in the manner of
// the userspace WireGuard work: the TUN device hands us TSO super-packets (IFF_VNET_HDR with
// TUN_F_TSO4), which are cut into MTU-sized packets with full checksums and sent as one UDP GSO
// batch; on receive, UDP GRO batches are split into packets again and consecutive segments of a
// TCP flow are merged into one super-packet written to the TUN with a GSO header. Pure functions
// over buffers, so the C++ tests and the fuzz target exercise them without a device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft {

// struct virtio_net_hdr, host byte order (what a TUN without TUNSETVNETLE/BE uses on x86).
struct VnetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
static_assert(sizeof(VnetHdr) == 10, "virtio_net_hdr is 10 bytes");

constexpr uint8_t kVnetNeedsCsum = 1;
constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcpV4 = 1;

// Completes a CHECKSUM_PARTIAL packet: the field at csum_start+csum_offset holds the pseudo-header
// sum; the checksum over [csum_start, len) is folded, inverted and stored. False when out of range.
bool CompleteChecksum(uint8_t* pkt, size_t len, uint16_t csum_start, uint16_t csum_offset);

// The TCP checksum of an IPv4 packet, computed in full and stored. False when not TCP/IPv4.
bool SetTcp4Checksum(uint8_t* pkt, size_t len);

// Cuts a TCP/IPv4 super-packet into segments of at most `mss` payload bytes, written one after
// another into `out`. Returns the bytes written (0 when `pkt` is not a well-formed TCP/IPv4
// packet, mss is 0, or `cap` is too small); `seg_len` gets the length of every segment but the
// last (which may be shorter). Each segment gets its own IP id, length, checksums and sequence
// number; FIN and PSH stay on the last segment only, CWR on the first only.
size_t SegmentTcp4(const uint8_t* pkt, size_t len, uint16_t mss, uint8_t* out, size_t cap, size_t* seg_len);

// Segments per UDP_SEGMENT send: LTS kernels refuse more than 64 (UDP_MAX_SEGMENTS; 128 since
// Linux 6.9), so the forwarder never asks for more.
constexpr size_t kMaxGsoSegments = 64;

// One UDP GSO send: `len` bytes at `offset` of back-to-back segments.
struct GsoSend {
  size_t offset;
  size_t len;
};

// Plans the sends for `total` bytes of segments of `seg_len` bytes each (the last may be
// shorter), starting at `offset`: each send holds whole segments, at most kMaxGsoSegments and
// at most `max_bytes` (at least one segment). Writes up to `cap` sends to `out` and returns how
// many; `consumed` gets the bytes they cover (less than `total` when `cap` ran out: the caller
// sends those and plans the rest).
size_t PlanGsoSends(size_t offset, size_t total, size_t seg_len, size_t max_bytes, GsoSend* out, size_t cap,
                    size_t* consumed);

// The datagrams of one receive of `len` bytes that UDP GRO merged at segment size `seg` (0 or
// >= len: one datagram): calls f(offset, size) for each, in order; an empty receive is one
// empty datagram.
template <typename F>
void ForEachGroSegment(size_t len, size_t seg, F f) {
  if (seg == 0 || seg > len) seg = len;
  if (len == 0) {
    f(size_t{0}, size_t{0});
    return;
  }
  for (size_t off = 0; off < len; off += seg) f(off, len - off < seg ? len - off : seg);
}

// Merges consecutive in-order segments of the same TCP/IPv4 flow, within one receive batch.
class TcpCoalescer {
 public:
  // One packet to write to the TUN: `hdr` then `data`.
  struct Out {
    VnetHdr hdr;
    const uint8_t* data;
    size_t len;
  };

  // Adds a well-formed IPv4 packet (total length == len). Packets that cannot be merged are
  // passed through unchanged, in order relative to their flow.
  void Add(const uint8_t* pkt, size_t len);
  // Every packet added since the last call, merged where possible. Valid until the next Add.
  const std::vector<Out>& Finish();
  void Clear();

 private:
  struct Item {
    size_t offset;  // into buf_
    size_t len;
    uint32_t next_seq;
    uint16_t mss;
    uint16_t segs;
    bool closed;
  };
  bool TryMerge(Item& it, const uint8_t* pkt, size_t len);

  std::vector<uint8_t> buf_;
  std::vector<Item> items_;
  std::vector<Out> out_;
};

}  // namespace weft

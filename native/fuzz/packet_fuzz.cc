// libFuzzer target over the forwarder's packet paths, exactly as the forwarder applies them to
// bytes off the wire or the TUN: parse, TTL decrement and ICMP answer; the TSO segmentation and
// the UDP GSO batch plan of the send path; the UDP GRO split, the lease check and the TCP
// coalescing of the receive path.
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/offload.h"
#include "../src/packet.h"

namespace {

// The send path after segmentation: the forwarder plans UDP_SEGMENT sends into a batch of at
// most `cap` entries, sends, and plans the rest. Every send must hold whole segments, at most
// kMaxGsoSegments of them, and the sends must cover the segments exactly, in order.
void GsoBatch(size_t total, size_t seg_len, size_t cap) {
  if (seg_len == 0) return;
  weft::GsoSend plan[64];
  size_t done = 0;
  for (int rounds = 0; done < total; rounds++) {
    if (rounds > 100000) __builtin_trap();  // no progress
    size_t consumed = 0;
    size_t k = weft::PlanGsoSends(done, total - done, seg_len, 65000, plan, cap, &consumed);
    if (k == 0 || k > cap || consumed == 0 || consumed > total - done) __builtin_trap();
    size_t at = done;
    for (size_t j = 0; j < k; j++) {
      if (plan[j].offset != at || plan[j].len == 0) __builtin_trap();
      if (plan[j].len > weft::kMaxGsoSegments * seg_len) __builtin_trap();
      if (plan[j].len > 65000 && plan[j].len > seg_len) __builtin_trap();
      // Whole segments: only the very last send of the packet may end in a short one.
      if (plan[j].len % seg_len != 0 && at + plan[j].len != total) __builtin_trap();
      at += plan[j].len;
    }
    if (at != done + consumed) __builtin_trap();
    done += consumed;
  }
}

// The receive path: `data` as one UDP GRO receive of segment size `seg` from `outer`.
void GroReceive(const uint8_t* data, size_t size, size_t seg, uint32_t outer) {
  weft::LeaseTable leases;
  uint32_t net = 0, gw = 0;
  inet_pton(AF_INET, "10.244.0.0", &net);
  inet_pton(AF_INET, "192.0.2.1", &gw);
  leases.Set({{net, htonl(0xffff0000u), gw}});
  weft::TcpCoalescer co;
  size_t covered = 0;
  weft::ForEachGroSegment(size, seg, [&](size_t off, size_t piece) {
    if (off != covered || off + piece > size) __builtin_trap();
    covered += piece;
    // A copy of exactly the datagram: ASan catches any read past it.
    std::vector<uint8_t> d(data + off, data + off + piece);
    weft::Ipv4Info info{};
    if (weft::ParseIpv4(d.data(), d.size(), &info) != weft::PacketError::kOk || info.total_len != piece) return;
    if (leases.Check(outer, info.src) != weft::LeaseTable::Verdict::kOk) return;
    co.Add(d.data(), d.size());
  });
  if (covered != size) __builtin_trap();
  size_t out_total = 0;
  for (const auto& o : co.Finish()) {
    if (o.len > 65535) __builtin_trap();
    out_total += o.len;
  }
  (void)out_total;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes: ASan then catches any read past the datagram.
  std::vector<uint8_t> buf(data, data + size);
  // The receive path sees every input, parseable or not; the segment size and the sender come
  // from the first bytes, so the fuzzer steers them.
  size_t gro_seg = size >= 2 ? static_cast<size_t>((data[0] << 8) | data[1]) % 2048 : 0;
  uint32_t outer = 0;
  inet_pton(AF_INET, size > 2 && (data[2] & 1) ? "192.0.2.1" : "192.0.2.9", &outer);
  GroReceive(buf.data(), buf.size(), gro_seg, outer);

  weft::Ipv4Info info{};
  if (weft::ParseIpv4(buf.data(), buf.size(), &info) != weft::PacketError::kOk) return 0;
  if (info.total_len > buf.size() || info.header_len > info.total_len) __builtin_trap();
  uint8_t icmp[20 + 8 + 60 + 8];
  size_t n = weft::BuildIcmpUnreachable(buf.data(), info.total_len, 0x0100f40a, 0, icmp, sizeof icmp);
  if (n > sizeof icmp) __builtin_trap();
  if (n > 0 && weft::InternetChecksum(icmp, 20) != 0) __builtin_trap();
  weft::DecrementTtl(buf.data(), info.total_len);
  // The offload path: segment as if the TUN handed this over as a TSO packet, plan its GSO
  // sends as the forwarder batches them, then coalesce the result back, as the receiving side does.
  static std::vector<uint8_t> out(1 << 18);
  size_t seg_len = 0;
  uint16_t mss = static_cast<uint16_t>(size > 0 ? 1 + data[size - 1] * 4 : 536);
  size_t total = weft::SegmentTcp4(buf.data(), info.total_len, mss, out.data(), out.size(), &seg_len);
  if (total > 0) GsoBatch(total, seg_len, size > 3 ? 1 + data[3] % 64 : 64);
  weft::TcpCoalescer co;
  for (size_t off = 0; off < total;) {
    size_t len = static_cast<size_t>((out[off + 2] << 8) | out[off + 3]);
    if (len == 0 || off + len > total) __builtin_trap();
    co.Add(out.data() + off, len);
    off += len;
  }
  co.Add(buf.data(), info.total_len);
  for (const auto& o : co.Finish())
    if (o.len > 65535) __builtin_trap();
  // The GRO receive of what segmentation made: datagrams of seg_len, from a lease's node.
  if (total > 0) GroReceive(out.data(), total, seg_len, htonl(0xc0000201));
  return 0;
}

// libFuzzer target over the forwarder's packet path: parse, and for packets that parse, the TTL
// decrement and the ICMP answer, exactly as the forwarder applies them to bytes off the wire.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/offload.h"
#include "../src/packet.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes: ASan then catches any read past the datagram.
  std::vector<uint8_t> buf(data, data + size);
  weft::Ipv4Info info{};
  if (weft::ParseIpv4(buf.data(), buf.size(), &info) != weft::PacketError::kOk) return 0;
  if (info.total_len > buf.size() || info.header_len > info.total_len) __builtin_trap();
  uint8_t icmp[20 + 8 + 60 + 8];
  size_t n = weft::BuildIcmpUnreachable(buf.data(), info.total_len, 0x0100f40a, 0, icmp, sizeof icmp);
  if (n > sizeof icmp) __builtin_trap();
  if (n > 0 && weft::InternetChecksum(icmp, 20) != 0) __builtin_trap();
  weft::DecrementTtl(buf.data(), info.total_len);
  // The offload path: segment as if the TUN handed this over as a TSO packet, then coalesce the
  // result back, as the receiving side does.
  static std::vector<uint8_t> out(1 << 18);
  size_t seg_len = 0;
  uint16_t mss = static_cast<uint16_t>(size > 0 ? 64 + data[0] * 4 : 536);
  size_t total = weft::SegmentTcp4(buf.data(), info.total_len, mss, out.data(), out.size(), &seg_len);
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
  return 0;
}

#include "packet.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace weft {

const char* PacketErrorName(PacketError e) {
  switch (e) {
    case PacketError::kOk:
      return "ok";
    case PacketError::kTruncated:
      return "truncated";
    case PacketError::kBadVersion:
      return "bad-version";
    case PacketError::kBadIhl:
      return "bad-ihl";
    case PacketError::kBadLength:
      return "bad-length";
  }
  return "unknown";
}

PacketError ParseIpv4(const uint8_t* p, size_t len, Ipv4Info* info) {
  if (len < 20) return len > 0 && (p[0] >> 4) != 4 ? PacketError::kBadVersion : PacketError::kTruncated;
  if ((p[0] >> 4) != 4) return PacketError::kBadVersion;
  size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
  if (ihl < 20) return PacketError::kBadIhl;
  if (ihl > len) return PacketError::kTruncated;
  size_t total = (static_cast<size_t>(p[2]) << 8) | p[3];
  if (total < ihl || total > len) return PacketError::kBadLength;
  uint32_t src, dst;
  std::memcpy(&src, p + 12, 4);
  std::memcpy(&dst, p + 16, 4);
  info->src = src;
  info->dst = dst;
  info->ttl = p[8];
  info->protocol = p[9];
  info->header_len = ihl;
  info->total_len = total;
  return PacketError::kOk;
}

bool DecrementTtl(uint8_t* p, size_t len) {
  if (len < 20 || p[8] <= 1) return false;
  // RFC 1624: HC' = ~(~HC + ~m + m'), on the 16-bit word holding TTL and protocol.
  uint16_t old_word = static_cast<uint16_t>((p[8] << 8) | p[9]);
  p[8]--;
  uint16_t new_word = static_cast<uint16_t>((p[8] << 8) | p[9]);
  uint32_t hc = static_cast<uint16_t>((p[10] << 8) | p[11]);
  uint32_t sum = (~hc & 0xffff) + (~old_word & 0xffff) + new_word;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  uint16_t res = static_cast<uint16_t>(~sum & 0xffff);
  p[10] = static_cast<uint8_t>(res >> 8);
  p[11] = static_cast<uint8_t>(res & 0xff);
  return true;
}

uint16_t InternetChecksum(const uint8_t* p, size_t len) {
  uint32_t sum = 0;
  size_t i = 0;
  for (; i + 1 < len; i += 2) sum += static_cast<uint32_t>((p[i] << 8) | p[i + 1]);
  if (i < len) sum += static_cast<uint32_t>(p[i] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

size_t BuildIcmpUnreachable(const uint8_t* orig, size_t orig_len, uint32_t src, uint8_t code, uint8_t* out,
                            size_t cap) {
  Ipv4Info in{};
  if (ParseIpv4(orig, orig_len, &in) != PacketError::kOk) return 0;
  // RFC 1122: never answer an ICMP error, a non-first fragment, or a broadcast/multicast.
  uint16_t frag = static_cast<uint16_t>(((orig[6] & 0x1f) << 8) | orig[7]);
  if (frag != 0) return 0;
  const uint8_t* d = orig + 16;
  if (d[0] >= 224 || (d[0] == 255 && d[1] == 255 && d[2] == 255 && d[3] == 255)) return 0;
  if (in.protocol == 1 && in.total_len > in.header_len) {
    uint8_t type = orig[in.header_len];
    if (type != 0 && type != 8 && type != 13 && type != 15 && type != 17) return 0;
  }
  size_t quoted = in.header_len + 8;
  if (quoted > in.total_len) quoted = in.total_len;
  size_t total = 20 + 8 + quoted;
  if (total > cap) return 0;
  std::memset(out, 0, 28);
  out[0] = 0x45;
  out[2] = static_cast<uint8_t>(total >> 8);
  out[3] = static_cast<uint8_t>(total & 0xff);
  out[8] = 64;
  out[9] = 1;  // ICMP
  std::memcpy(out + 12, &src, 4);
  std::memcpy(out + 16, orig + 12, 4);
  uint16_t hc = InternetChecksum(out, 20);
  out[10] = static_cast<uint8_t>(hc >> 8);
  out[11] = static_cast<uint8_t>(hc & 0xff);
  uint8_t* icmp = out + 20;
  icmp[0] = 3;
  icmp[1] = code;
  std::memcpy(icmp + 8, orig, quoted);
  uint16_t ic = InternetChecksum(icmp, 8 + quoted);
  icmp[2] = static_cast<uint8_t>(ic >> 8);
  icmp[3] = static_cast<uint8_t>(ic & 0xff);
  return total;
}

void LeaseTable::Set(std::vector<TunRoute> routes) {
  routes_ = std::move(routes);
  by_mask_.clear();
  by_gw_.clear();
  for (size_t i = 0; i < routes_.size(); i++) {
    TunRoute& r = routes_[i];
    r.net &= r.mask;
    auto it = std::find_if(by_mask_.begin(), by_mask_.end(), [&](const auto& m) { return m.first == r.mask; });
    if (it == by_mask_.end()) {
      by_mask_.emplace_back(r.mask, std::unordered_map<uint32_t, uint32_t>{});
      it = by_mask_.end() - 1;
    }
    it->second.emplace(r.net, r.gw);  // a duplicate subnet keeps its first lease
    by_gw_[r.gw].push_back(i);
  }
  std::sort(by_mask_.begin(), by_mask_.end(), [](const auto& a, const auto& b) { return ntohl(a.first) > ntohl(b.first); });
}

bool LeaseTable::Route(uint32_t dst, uint32_t* gw) const {
  for (const auto& [mask, nets] : by_mask_) {
    auto it = nets.find(dst & mask);
    if (it != nets.end()) {
      *gw = it->second;
      return true;
    }
  }
  return false;
}

LeaseTable::Verdict LeaseTable::Check(uint32_t outer_src, uint32_t inner_src) const {
  auto it = by_gw_.find(outer_src);
  if (it == by_gw_.end()) return Verdict::kUnknownPeer;
  for (size_t i : it->second) {
    const TunRoute& r = routes_[i];
    if ((inner_src & r.mask) == r.net) return Verdict::kOk;
  }
  return Verdict::kForeignSource;
}

bool TokenBucket::Take(uint64_t now_ms) {
  if (!started_) {
    started_ = true;
    last_ms_ = now_ms;
  }
  if (now_ms > last_ms_) {
    // Whole tokens only; the remainder of the interval is kept by not moving last_ms_ past it.
    uint64_t add = (now_ms - last_ms_) * per_sec_ / 1000;
    if (add > 0) {
      tokens_ = std::min<uint64_t>(burst_, tokens_ + add);
      last_ms_ += add * 1000 / per_sec_;
      if (tokens_ == burst_) last_ms_ = now_ms;
    }
  }
  if (tokens_ == 0) return false;
  tokens_--;
  return true;
}

}  // namespace weft

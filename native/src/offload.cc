#include "offload.h"

#include <cstring>

#include "packet.h"

namespace weft {

namespace {

uint32_t Sum(const uint8_t* p, size_t len, uint32_t acc) {
  uint64_t s = acc;
  size_t i = 0;
  for (; i + 1 < len; i += 2) s += static_cast<uint32_t>((p[i] << 8) | p[i + 1]);
  if (i < len) s += static_cast<uint32_t>(p[i] << 8);
  while (s >> 32) s = (s & 0xffffffff) + (s >> 32);
  return static_cast<uint32_t>(s);
}

uint16_t Fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(s);
}

void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v & 0xff);
}

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t Get32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}
void Put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

uint32_t PseudoSum(const uint8_t* ip, size_t l4_len) {
  uint32_t s = Sum(ip + 12, 8, 0);
  s += 6;  // TCP
  s += static_cast<uint32_t>(l4_len);
  return s;
}

void SetIpChecksum(uint8_t* ip, size_t ihl) {
  ip[10] = ip[11] = 0;
  Put16(ip + 10, static_cast<uint16_t>(~Fold(Sum(ip, ihl, 0))));
}

// Header lengths of a TCP/IPv4 packet, or false.
bool TcpHeaders(const uint8_t* pkt, size_t len, size_t* ihl, size_t* thl) {
  Ipv4Info in{};
  if (ParseIpv4(pkt, len, &in) != PacketError::kOk || in.protocol != 6 || in.total_len != len) return false;
  if (len < in.header_len + 20) return false;
  size_t t = static_cast<size_t>(pkt[in.header_len + 12] >> 4) * 4;
  if (t < 20 || in.header_len + t > len) return false;
  *ihl = in.header_len;
  *thl = t;
  return true;
}

constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20, kCwr = 0x80;

}  // namespace

bool CompleteChecksum(uint8_t* pkt, size_t len, uint16_t csum_start, uint16_t csum_offset) {
  if (csum_start >= len || static_cast<size_t>(csum_start) + csum_offset + 2 > len) return false;
  uint16_t c = static_cast<uint16_t>(~Fold(Sum(pkt + csum_start, len - csum_start, 0)));
  Put16(pkt + csum_start + csum_offset, c);
  return true;
}

bool SetTcp4Checksum(uint8_t* pkt, size_t len) {
  size_t ihl, thl;
  if (!TcpHeaders(pkt, len, &ihl, &thl)) return false;
  uint8_t* th = pkt + ihl;
  th[16] = th[17] = 0;
  Put16(th + 16, static_cast<uint16_t>(~Fold(Sum(th, len - ihl, PseudoSum(pkt, len - ihl)))));
  return true;
}

size_t SegmentTcp4(const uint8_t* pkt, size_t len, uint16_t mss, uint8_t* out, size_t cap, size_t* seg_len) {
  size_t ihl, thl;
  if (mss == 0 || !TcpHeaders(pkt, len, &ihl, &thl)) return 0;
  size_t hdr = ihl + thl;
  size_t payload = len - hdr;
  size_t nsegs = payload == 0 ? 1 : (payload + mss - 1) / mss;
  if (nsegs * hdr + payload > cap) return 0;
  uint16_t id = Get16(pkt + 4);
  uint32_t seq = Get32(pkt + ihl + 4);
  uint8_t flags = pkt[ihl + 13];
  size_t off = 0;
  for (size_t i = 0; i < nsegs; i++) {
    size_t chunk = payload - i * mss < mss ? payload - i * mss : mss;
    uint8_t* s = out + off;
    std::memcpy(s, pkt, hdr);
    std::memcpy(s + hdr, pkt + hdr + i * mss, chunk);
    size_t total = hdr + chunk;
    Put16(s + 2, static_cast<uint16_t>(total));
    Put16(s + 4, static_cast<uint16_t>(id + i));
    SetIpChecksum(s, ihl);
    uint8_t* th = s + ihl;
    Put32(th + 4, seq + static_cast<uint32_t>(i * mss));
    uint8_t f = flags;
    if (i + 1 < nsegs) f &= static_cast<uint8_t>(~(kFin | kPsh));
    if (i > 0) f &= static_cast<uint8_t>(~kCwr);
    th[13] = f;
    th[16] = th[17] = 0;
    Put16(th + 16, static_cast<uint16_t>(~Fold(Sum(th, total - ihl, PseudoSum(s, total - ihl)))));
    if (i == 0) *seg_len = total;
    off += total;
  }
  return off;
}

size_t PlanGsoSends(size_t offset, size_t total, size_t seg_len, size_t max_bytes, GsoSend* out, size_t cap,
                    size_t* consumed) {
  *consumed = 0;
  if (seg_len == 0 || total == 0) return 0;
  size_t per = max_bytes / seg_len;
  if (per == 0) per = 1;
  if (per > kMaxGsoSegments) per = kMaxGsoSegments;
  size_t n = 0;
  size_t off = 0;
  while (off < total && n < cap) {
    size_t chunk = per * seg_len;
    if (chunk > total - off) chunk = total - off;
    out[n++] = GsoSend{offset + off, chunk};
    off += chunk;
  }
  *consumed = off;
  return n;
}

void TcpCoalescer::Clear() {
  buf_.clear();
  items_.clear();
  out_.clear();
}

bool TcpCoalescer::TryMerge(Item& it, const uint8_t* pkt, size_t len) {
  if (it.closed || it.mss == 0) return false;
  const uint8_t* head = buf_.data() + it.offset;
  size_t ihl, thl;
  if (!TcpHeaders(pkt, len, &ihl, &thl)) return false;
  // The head was validated when it was added; its length field is only updated by Finish().
  size_t hihl = static_cast<size_t>(head[0] & 0x0f) * 4;
  size_t hthl = static_cast<size_t>(head[hihl + 12] >> 4) * 4;
  // Same flow, same header shape (options compared byte for byte, as Linux GRO does).
  if (ihl != 20 || hihl != 20 || thl != hthl) return false;
  if (std::memcmp(pkt + 12, head + 12, 8) != 0 || std::memcmp(pkt + ihl, head + ihl, 4) != 0) return false;
  if ((pkt[6] & 0x40) != (head[6] & 0x40) || (Get16(pkt + 6) & 0x3fff) != 0) return false;  // DF same; no fragment
  if (pkt[8] != head[8] || pkt[1] != head[1]) return false;                                 // TTL, TOS
  const uint8_t* th = pkt + ihl;
  const uint8_t* hth = head + ihl;
  uint8_t f = th[13];
  if ((f & static_cast<uint8_t>(~(kAck | kPsh))) != 0 || !(f & kAck)) return false;
  if (Get32(th + 8) != Get32(hth + 8) || Get16(th + 14) != Get16(hth + 14)) return false;  // ack, window
  if (thl > 20 && std::memcmp(th + 20, hth + 20, thl - 20) != 0) return false;
  size_t payload = len - ihl - thl;
  if (payload == 0 || payload > it.mss || Get32(th + 4) != it.next_seq) return false;
  if (it.len + payload > 65535 || it.segs >= 64) return false;
  // The merged packet lives at the end of buf_: only the last item can grow in place.
  if (it.offset + it.len != buf_.size()) return false;
  buf_.insert(buf_.end(), pkt + ihl + thl, pkt + len);
  head = buf_.data() + it.offset;
  if (f & kPsh) buf_[it.offset + ihl + 13] |= kPsh;
  it.len += payload;
  it.next_seq += static_cast<uint32_t>(payload);
  it.segs++;
  if (payload < it.mss || (f & kPsh)) it.closed = true;
  return true;
}

void TcpCoalescer::Add(const uint8_t* pkt, size_t len) {
  if (!items_.empty() && TryMerge(items_.back(), pkt, len)) return;
  Item it{buf_.size(), len, 0, 0, 1, true};
  size_t ihl, thl;
  if (TcpHeaders(pkt, len, &ihl, &thl)) {
    uint8_t f = pkt[ihl + 13];
    size_t payload = len - ihl - thl;
    bool plain = ihl == 20 && (f & static_cast<uint8_t>(~(kAck | kPsh))) == 0 && (f & kAck) && payload > 0 &&
                 !(f & kPsh) && (Get16(pkt + 6) & 0x3fff) == 0;
    if (plain) {
      it.closed = false;
      it.mss = static_cast<uint16_t>(payload);
      it.next_seq = Get32(pkt + ihl + 4) + static_cast<uint32_t>(payload);
    }
  }
  (void)kSyn;
  (void)kRst;
  (void)kUrg;
  (void)kFin;
  buf_.insert(buf_.end(), pkt, pkt + len);
  items_.push_back(it);
}

const std::vector<TcpCoalescer::Out>& TcpCoalescer::Finish() {
  out_.clear();
  for (auto& it : items_) {
    uint8_t* p = buf_.data() + it.offset;
    VnetHdr h{};
    if (it.segs > 1) {
      size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
      size_t thl = static_cast<size_t>(p[ihl + 12] >> 4) * 4;
      Put16(p + 2, static_cast<uint16_t>(it.len));
      SetIpChecksum(p, ihl);
      // CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the kernel completes it.
      Put16(p + ihl + 16, Fold(PseudoSum(p, it.len - ihl)));
      h.flags = kVnetNeedsCsum;
      h.gso_type = kGsoTcpV4;
      h.hdr_len = static_cast<uint16_t>(ihl + thl);
      h.gso_size = it.mss;
      h.csum_start = static_cast<uint16_t>(ihl);
      h.csum_offset = 16;
    }
    out_.push_back(Out{h, p, it.len});
  }
  return out_;
}

}  // namespace weft

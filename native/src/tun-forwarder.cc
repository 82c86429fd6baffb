#include "tun-forwarder.h"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "offload.h"
#include "packet.h"

namespace weft {

namespace {
constexpr size_t kBatch = 64;
constexpr size_t kVnet = sizeof(VnetHdr);
// A read from the TUN: a virtio header and up to 64 KiB of (super-)packet.
constexpr size_t kReadSize = kVnet + 65535;
// What one UDP GSO send may carry (the UDP length field is 16 bits).
constexpr size_t kMaxSend = 65000;
// Segmenting a 64 KiB super-packet adds one header per segment.
constexpr size_t kArenaSize = kBatch * 2048 + 4 * 65536;
constexpr size_t kRecvSize = 65536;
}  // namespace

struct TunForwarder::Unit {
  size_t offset;
  size_t len;
  uint16_t seg;  // UDP_SEGMENT size, 0 for a single datagram
  uint32_t gw;
};

namespace {
uint64_t Segments(const TunForwarder::Unit& u) { return u.seg > 0 ? (u.len + u.seg - 1) / u.seg : 1; }
}  // namespace

struct TunForwarder::Buffers {
  uint8_t read[kReadSize];
  uint8_t arena[kArenaSize];
  Unit units[kBatch];
  sockaddr_in addr[kBatch];
  iovec iov[kBatch];
  char control[kBatch][CMSG_SPACE(sizeof(uint16_t))];
  mmsghdr msgs[kBatch];
  uint8_t in[kBatch][kRecvSize];
  char in_control[kBatch][CMSG_SPACE(sizeof(int))];
  sockaddr_in in_addr[kBatch];
  iovec in_iov[kBatch];
  mmsghdr in_msgs[kBatch];
};

TunForwarder::TunForwarder(IoLoop* loop, int tun_fd, int udp_fd, uint16_t port, uint32_t icmp_src, bool offload)
    : loop_(loop),
      tun_fd_(tun_fd),
      udp_fd_(udp_fd),
      port_(port),
      icmp_src_(icmp_src),
      offload_(offload),
      b_(new Buffers) {
  tun_side_.f = this;
  tun_side_.tun = true;
  udp_side_.f = this;
}

TunForwarder::~TunForwarder() {
  if (tun_fd_ >= 0) close(tun_fd_);
  if (udp_fd_ >= 0) close(udp_fd_);
}

bool TunForwarder::Start() {
  if (!loop_->Add(tun_fd_, EPOLLIN | EPOLLET, &tun_side_)) return false;
  if (!loop_->Add(udp_fd_, EPOLLIN | EPOLLET, &udp_side_)) return false;
  // Packets may have queued before registration; edge-triggered epoll would not say so.
  FromTun();
  FromUdp();
  return true;
}

void TunForwarder::SetRoutes(std::vector<TunRoute> routes) { leases_.Set(std::move(routes)); }

void TunForwarder::WriteTun(const VnetHdr* hdr, const uint8_t* pkt, size_t len) {
  ssize_t w;
  if (offload_) {
    VnetHdr zero{};
    iovec iov[2] = {{const_cast<VnetHdr*>(hdr ? hdr : &zero), kVnet}, {const_cast<uint8_t*>(pkt), len}};
    w = writev(tun_fd_, iov, 2) - static_cast<ssize_t>(kVnet);
  } else {
    w = write(tun_fd_, pkt, len);
  }
  if (w == static_cast<ssize_t>(len)) {
    stats_.tun_tx++;
    stats_.bytes_in += len;
  } else {
    stats_.send_errors++;
  }
}

void TunForwarder::Unreachable(const uint8_t* pkt, size_t len) {
  stats_.drop_no_route++;
  // Rate-limited as the kernel limits its own: a pod scanning the network must not turn the
  // forwarder into an ICMP generator.
  if (!icmp_limit_.Take(IoLoop::NowMs())) {
    stats_.icmp_suppressed++;
    return;
  }
  uint8_t icmp[20 + 8 + 60 + 8];
  size_t ilen = BuildIcmpUnreachable(pkt, len, icmp_src_, 0, icmp, sizeof icmp);
  if (ilen == 0) return;
  WriteTun(nullptr, icmp, ilen);
  stats_.tun_tx--;  // counted as ICMP, not as forwarded
  stats_.bytes_in -= ilen;
  stats_.icmp_sent++;
}

void TunForwarder::Flush(size_t n) {
  if (n == 0) return;
  Buffers& b = *b_;
  for (size_t i = 0; i < n; i++) {
    Unit& u = b.units[i];
    std::memset(&b.msgs[i], 0, sizeof b.msgs[i]);
    std::memset(&b.addr[i], 0, sizeof b.addr[i]);
    b.addr[i].sin_family = AF_INET;
    b.addr[i].sin_port = port_;
    b.addr[i].sin_addr.s_addr = u.gw;
    b.iov[i] = {b.arena + u.offset, u.len};
    msghdr& h = b.msgs[i].msg_hdr;
    h.msg_name = &b.addr[i];
    h.msg_namelen = sizeof(sockaddr_in);
    h.msg_iov = &b.iov[i];
    h.msg_iovlen = 1;
    if (u.seg > 0 && u.len > u.seg) {
      std::memset(b.control[i], 0, sizeof b.control[i]);  // the padding goes to the kernel too
      h.msg_control = b.control[i];
      h.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      std::memcpy(CMSG_DATA(c), &u.seg, sizeof u.seg);
    }
  }
  size_t sent = 0;
  while (sent < n) {
    int r = sendmmsg(udp_fd_, b.msgs + sent, static_cast<unsigned>(n - sent), 0);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
        // The socket buffer is full: the rest is dropped, as a router drops from a full queue;
        // IP traffic recovers on its own, and retrying now would only spin.
        for (size_t i = sent; i < n; i++) stats_.send_errors += Segments(b.units[i]);
        return;
      }
      // sendmmsg reports the failure of one message (no route to that node, a firewall, a GSO
      // send the egress device cannot take): only that one is lost, the batch goes on after it.
      // A GSO send is retried as single datagrams first.
      if (b.units[sent].seg > 0 && b.units[sent].len > b.units[sent].seg && err != EACCES && err != EPERM)
        SendSegments(sent);
      else
        stats_.send_errors += Segments(b.units[sent]);
      sent++;
      continue;
    }
    for (int i = 0; i < r; i++) {
      const Unit& u = b.units[sent + static_cast<size_t>(i)];
      stats_.bytes_out += u.len;
      stats_.udp_tx += Segments(u);
    }
    sent += static_cast<size_t>(r);
  }
}

void TunForwarder::SendSegments(size_t i) {
  Buffers& b = *b_;
  const Unit& u = b.units[i];
  for (size_t off = 0; off < u.len; off += u.seg) {
    size_t len = u.len - off < u.seg ? u.len - off : u.seg;
    ssize_t w = sendto(udp_fd_, b.arena + u.offset + off, len, 0, reinterpret_cast<sockaddr*>(&b.addr[i]),
                       sizeof(sockaddr_in));
    if (w == static_cast<ssize_t>(len)) {
      stats_.udp_tx++;
      stats_.bytes_out += len;
    } else {
      stats_.send_errors++;
    }
  }
}

void TunForwarder::FromTun() {
  Buffers& b = *b_;
  for (;;) {
    size_t n = 0;
    size_t used = 0;
    bool drained = false;
    while (n + 2 <= kBatch && used + 2 * 65536 <= kArenaSize) {
      ssize_t got = read(tun_fd_, b.read, offload_ ? kReadSize : kReadSize - kVnet);
      if (got < 0) {
        if (errno == EINTR) continue;
        drained = true;  // EAGAIN, or the device went away: the daemon notices and recreates it
        break;
      }
      stats_.tun_rx++;
      VnetHdr h{};
      uint8_t* pkt = b.read;
      size_t len = static_cast<size_t>(got);
      if (offload_) {
        if (len < kVnet) {
          stats_.drop_unsupported++;
          continue;
        }
        std::memcpy(&h, b.read, kVnet);
        pkt += kVnet;
        len -= kVnet;
      }
      Ipv4Info info{};
      if (ParseIpv4(pkt, len, &info) != PacketError::kOk) {
        // The kernel only hands the TUN well-formed packets: what fails here is another family.
        stats_.drop_unsupported++;
        continue;
      }
      len = info.total_len;
      uint32_t gw = 0;
      if (!leases_.Route(info.dst, &gw)) {
        Unreachable(pkt, len);
        continue;
      }
      if (!DecrementTtl(pkt, len)) {
        stats_.drop_ttl++;
        continue;
      }
      if (h.gso_type == kGsoTcpV4 && h.gso_size > 0) {
        size_t seg_len = 0;
        size_t total = SegmentTcp4(pkt, len, h.gso_size, b.arena + used, kArenaSize - used, &seg_len);
        if (total == 0) {
          stats_.drop_unsupported++;
          continue;
        }
        // Sends of whole segments, at most 64 each; when the batch is full it goes out first
        // (the arena keeps its contents until the outer loop starts over).
        for (size_t done = 0; done < total;) {
          if (n == kBatch) {
            Flush(n);
            n = 0;
          }
          GsoSend plan[kBatch];
          size_t consumed = 0;
          size_t k = PlanGsoSends(used + done, total - done, seg_len, kMaxSend, plan, kBatch - n, &consumed);
          for (size_t j = 0; j < k; j++)
            b.units[n++] = Unit{plan[j].offset, plan[j].len, static_cast<uint16_t>(seg_len), gw};
          done += consumed;
        }
        used += total;
        continue;
      }
      if (h.gso_type != kGsoNone) {
        stats_.drop_unsupported++;  // UDP fragmentation offload and the like: not offered
        continue;
      }
      if (h.flags & kVnetNeedsCsum) CompleteChecksum(pkt, len, h.csum_start, h.csum_offset);
      std::memcpy(b.arena + used, pkt, len);
      b.units[n++] = Unit{used, len, 0, gw};
      used += len;
    }
    Flush(n);
    if (drained) return;
  }
}

void TunForwarder::FromUdp() {
  Buffers& b = *b_;
  for (;;) {
    for (size_t i = 0; i < kBatch; i++) {
      b.in_iov[i] = {b.in[i], kRecvSize};
      std::memset(&b.in_msgs[i], 0, sizeof b.in_msgs[i]);
      b.in_msgs[i].msg_hdr.msg_iov = &b.in_iov[i];
      b.in_msgs[i].msg_hdr.msg_iovlen = 1;
      b.in_msgs[i].msg_hdr.msg_name = &b.in_addr[i];
      b.in_msgs[i].msg_hdr.msg_namelen = sizeof b.in_addr[i];
      b.in_msgs[i].msg_hdr.msg_control = b.in_control[i];
      b.in_msgs[i].msg_hdr.msg_controllen = sizeof b.in_control[i];
    }
    int r = recvmmsg(udp_fd_, b.in_msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (r < 0) {
      if (errno == EINTR) continue;
      return;
    }
    coalescer_.Clear();
    for (int i = 0; i < r; i++) {
      msghdr& h = b.in_msgs[i].msg_hdr;
      size_t len = b.in_msgs[i].msg_len;
      if (h.msg_flags & MSG_TRUNC) {
        stats_.udp_rx++;
        stats_.drop_malformed++;
        continue;
      }
      // With UDP GRO one read holds several datagrams of `seg` bytes each (the last shorter).
      size_t seg = len;
      for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int v = 0;
          std::memcpy(&v, CMSG_DATA(c), sizeof v);
          if (v > 0) seg = static_cast<size_t>(v);
        }
      }
      uint32_t from = h.msg_namelen >= sizeof(sockaddr_in) && b.in_addr[i].sin_family == AF_INET
                          ? b.in_addr[i].sin_addr.s_addr
                          : 0;
      uint8_t* data = b.in[i];
      ForEachGroSegment(len, seg, [&](size_t off, size_t piece) {
        stats_.udp_rx++;
        Ipv4Info info{};
        if (ParseIpv4(data + off, piece, &info) != PacketError::kOk || info.total_len != piece) {
          stats_.drop_malformed++;
          return;
        }
        switch (leases_.Check(from, info.src)) {
          case LeaseTable::Verdict::kOk:
            break;
          case LeaseTable::Verdict::kUnknownPeer:
            stats_.drop_unknown_peer++;
            return;
          case LeaseTable::Verdict::kForeignSource:
            stats_.drop_foreign_source++;
            return;
        }
        if (offload_)
          coalescer_.Add(data + off, piece);
        else
          WriteTun(nullptr, data + off, piece);
      });
    }
    if (offload_) {
      for (const auto& o : coalescer_.Finish()) WriteTun(&o.hdr, o.data, o.len);
    }
    if (static_cast<size_t>(r) < kBatch) return;
  }
}

}  // namespace weft

#include "tun-forwarder.h"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "packet.h"

namespace weft {

namespace {
constexpr size_t kBatch = 64;
// Without offloads a packet is at most the TUN MTU; 64 KiB also holds whatever a misconfigured
// MTU lets through, so nothing is truncated silently.
constexpr size_t kSlotSize = 65536;
}  // namespace

struct TunForwarder::Slot {
  uint8_t buf[kSlotSize];
  sockaddr_in addr;
  iovec iov;
};

TunForwarder::TunForwarder(IoLoop* loop, int tun_fd, int udp_fd, uint16_t port, uint32_t icmp_src)
    : loop_(loop),
      tun_fd_(tun_fd),
      udp_fd_(udp_fd),
      port_(port),
      icmp_src_(icmp_src),
      out_(new Slot[kBatch]),
      in_(new Slot[kBatch]) {
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

void TunForwarder::SetRoutes(std::vector<TunRoute> routes) { routes_ = std::move(routes); }

bool TunForwarder::Lookup(uint32_t dst, uint32_t* gw) const {
  // Longest prefix wins; a cluster has one subnet length, so this is a scan of equals.
  const TunRoute* best = nullptr;
  for (const auto& r : routes_) {
    if ((dst & r.mask) != r.net) continue;
    if (!best || ntohl(r.mask) > ntohl(best->mask)) best = &r;
  }
  if (!best) return false;
  *gw = best->gw;
  return true;
}

void TunForwarder::Flush(size_t n) {
  if (n == 0) return;
  mmsghdr msgs[kBatch];
  std::memset(msgs, 0, sizeof(mmsghdr) * n);
  for (size_t i = 0; i < n; i++) {
    msgs[i].msg_hdr.msg_name = &out_[i].addr;
    msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
    msgs[i].msg_hdr.msg_iov = &out_[i].iov;
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  size_t sent = 0;
  while (sent < n) {
    int r = sendmmsg(udp_fd_, msgs + sent, static_cast<unsigned>(n - sent), 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      // A full socket buffer or an unreachable peer drops the rest of the batch, as a router
      // would; IP traffic recovers on its own.
      stats_.send_errors += n - sent;
      return;
    }
    for (int i = 0; i < r; i++) stats_.bytes_out += out_[sent + i].iov.iov_len;
    stats_.udp_tx += static_cast<uint64_t>(r);
    sent += static_cast<size_t>(r);
  }
}

void TunForwarder::FromTun() {
  for (;;) {
    size_t n = 0;
    bool drained = false;
    while (n < kBatch) {
      Slot& s = out_[n];
      ssize_t len = read(tun_fd_, s.buf, kSlotSize);
      if (len < 0) {
        if (errno == EINTR) continue;
        drained = true;  // EAGAIN, or the device went away: the daemon notices and recreates it
        break;
      }
      stats_.tun_rx++;
      Ipv4Info info{};
      if (ParseIpv4(s.buf, static_cast<size_t>(len), &info) != PacketError::kOk) {
        // The kernel only hands the TUN well-formed packets: what fails here is another family.
        stats_.drop_unsupported++;
        continue;
      }
      uint32_t gw = 0;
      if (!Lookup(info.dst, &gw)) {
        stats_.drop_no_route++;
        uint8_t icmp[20 + 8 + 60 + 8];
        size_t ilen = BuildIcmpUnreachable(s.buf, info.total_len, icmp_src_, 0, icmp, sizeof icmp);
        if (ilen > 0 && write(tun_fd_, icmp, ilen) == static_cast<ssize_t>(ilen)) stats_.icmp_sent++;
        continue;
      }
      if (!DecrementTtl(s.buf, info.total_len)) {
        stats_.drop_ttl++;
        continue;
      }
      std::memset(&s.addr, 0, sizeof s.addr);
      s.addr.sin_family = AF_INET;
      s.addr.sin_port = port_;
      s.addr.sin_addr.s_addr = gw;
      s.iov.iov_base = s.buf;
      s.iov.iov_len = info.total_len;
      n++;
    }
    Flush(n);
    if (drained) return;
  }
}

void TunForwarder::FromUdp() {
  for (;;) {
    mmsghdr msgs[kBatch];
    std::memset(msgs, 0, sizeof msgs);
    for (size_t i = 0; i < kBatch; i++) {
      in_[i].iov.iov_base = in_[i].buf;
      in_[i].iov.iov_len = kSlotSize;
      msgs[i].msg_hdr.msg_iov = &in_[i].iov;
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int r = recvmmsg(udp_fd_, msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (r < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < r; i++) {
      stats_.udp_rx++;
      size_t len = msgs[i].msg_len;
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        stats_.drop_malformed++;
        continue;
      }
      Ipv4Info info{};
      if (ParseIpv4(in_[i].buf, len, &info) != PacketError::kOk) {
        stats_.drop_malformed++;
        continue;
      }
      ssize_t w = write(tun_fd_, in_[i].buf, info.total_len);
      if (w == static_cast<ssize_t>(info.total_len)) {
        stats_.tun_tx++;
        stats_.bytes_in += info.total_len;
      } else {
        stats_.send_errors++;
      }
    }
    if (static_cast<size_t>(r) < kBatch) return;
  }
}

}  // namespace weft

// flannel's udp backend data path: IP packets read from a TUN device are sent as UDP datagrams
// to the node that owns the destination subnet, and datagrams received are written to the TUN.
// Runs on its own IoLoop thread; routes are replaced wholesale through the loop's command queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "io-loop.h"
#include "offload.h"
#include "packet.h"

namespace weft {

struct TunStats {
  std::atomic<uint64_t> tun_rx{0}, tun_tx{0}, udp_rx{0}, udp_tx{0};
  std::atomic<uint64_t> bytes_out{0}, bytes_in{0};
  std::atomic<uint64_t> drop_malformed{0}, drop_unsupported{0}, drop_no_route{0}, drop_ttl{0}, icmp_sent{0}, send_errors{0};
  // Datagrams not from a lease's public IP; from one, but with an inner source outside its
  // subnet; ICMP errors not sent because of the rate limit.
  std::atomic<uint64_t> drop_unknown_peer{0}, drop_foreign_source{0}, icmp_suppressed{0};
};

// The ICMP limit: net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst's defaults.
constexpr uint32_t kIcmpPerSec = 1000;
constexpr uint32_t kIcmpBurst = 50;

class TunForwarder {
 public:
  // Takes ownership of both fds (non-blocking). `port` is the remote nodes' UDP port (network
  // order); `icmp_src` the address ICMP errors come from (network order).
  // `offload`: the TUN was opened with IFF_VNET_HDR and TSO offered, and the socket may get
  // UDP GRO batches (see offload.h).
  TunForwarder(IoLoop* loop, int tun_fd, int udp_fd, uint16_t port, uint32_t icmp_src, bool offload);
  ~TunForwarder();

  // Loop thread.
  bool Start();
  // The remote leases: where packets go, and whom datagrams are accepted from.
  void SetRoutes(std::vector<TunRoute> routes);
  void SetIcmpSource(uint32_t src) { icmp_src_ = src; }
  // The ICMP limit (default kIcmpPerSec, kIcmpBurst); tests set a slow one.
  void SetIcmpLimit(uint32_t per_sec, uint32_t burst) { icmp_limit_ = TokenBucket(per_sec, burst); }
  const TunStats& stats() const { return stats_; }

  struct Unit;

 private:
  struct Side : Pollable {
    TunForwarder* f = nullptr;
    bool tun = false;
    void OnEvents(uint32_t events) override { tun ? f->FromTun() : f->FromUdp(); }
  };
  void FromTun();
  void FromUdp();
  void Flush(size_t n);
  void SendSegments(size_t i);
  void WriteTun(const VnetHdr* hdr, const uint8_t* pkt, size_t len);
  void Unreachable(const uint8_t* pkt, size_t len);

  IoLoop* loop_;
  int tun_fd_;
  int udp_fd_;
  uint16_t port_;
  uint32_t icmp_src_;
  Side tun_side_;
  Side udp_side_;
  LeaseTable leases_;
  TokenBucket icmp_limit_{kIcmpPerSec, kIcmpBurst};
  TunStats stats_;
  bool offload_;
  struct Buffers;
  std::unique_ptr<Buffers> b_;
  TcpCoalescer coalescer_;
};

}  // namespace weft

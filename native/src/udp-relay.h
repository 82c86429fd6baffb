// The UDP relay of the userspace proxier: one socket per service port receives client datagrams
// in batches (recvmmsg), each client gets a flow (its own socket connected to the endpoint chosen
// for its first datagram), and replies go back through the service socket in batches (sendmmsg)
// from the very address the client sent to (IP_PKTINFO), so that conntrack's REDIRECT reversal
// hands the client a reply from the service address. Flows end after an idle period.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io-loop.h"

namespace weft {

struct UdpTarget {
  sockaddr_storage addr;
  socklen_t len;
  std::string key;  // "ip:port", to match flows when endpoints change
};

struct UdpListenerStats {
  uint32_t id;
  uint64_t datagrams_in;   // from clients
  uint64_t datagrams_out;  // replies to clients
  uint64_t flows_created;
  uint64_t flows_active;
  uint64_t dropped;  // no endpoint, or a send failed
};

class UdpListener;

class UdpRelay {
 public:
  explicit UdpRelay(IoLoop* loop);
  ~UdpRelay();

  // Loop thread. Takes ownership of `fd` (bound, non-blocking, IP_PKTINFO enabled).
  void AddListener(uint32_t id, int fd, int family, uint32_t idle_ms);
  void RemoveListener(uint32_t id);
  // Replaces the endpoints (in the order to take them); flows to endpoints no longer listed end.
  void SetEndpoints(uint32_t id, std::vector<UdpTarget> targets, uint32_t affinity_seconds);
  void Tick(uint64_t now_ms);
  void CloseAll();
  std::vector<UdpListenerStats> Stats() const;

 private:
  IoLoop* loop_;
  std::unordered_map<uint32_t, std::unique_ptr<UdpListener>> listeners_;
};

}  // namespace weft

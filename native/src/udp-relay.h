// The UDP relay of the userspace proxier: one socket per service port receives client datagrams
// in batches (recvmmsg), each client gets a flow (its own socket connected to the endpoint chosen
// for its first datagram), and replies go back through the service socket in batches (sendmmsg)
// from the very address the client sent to (IP_PKTINFO), so that conntrack's REDIRECT reversal
// hands the client a reply from the service address. Flows end after an idle period.
//
// Bounded against forged sources: flows are capped per listener and in total (each is a file
// descriptor), affinity entries per listener, and past a cap the least recently active entry
// makes room and is counted. A listener reads a bounded number of batches per wake-up
// (level-triggered), so a flood cannot keep the thread from its timer tick and commands.
#pragma once

#include <list>

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
  uint64_t dropped;  // no endpoint, no flow could be opened, or a send failed
  uint64_t flows_evicted;     // closed early to make room for a new client
  uint64_t affinity_evicted;  // affinity entries dropped early to make room
};

// The caps; shared by the relay's listeners. 0 means unbounded.
struct UdpLimits {
  uint64_t max_flows = 0;               // all listeners together
  uint64_t max_flows_per_listener = 0;  // one listener
  uint64_t max_affinity = 0;            // affinity entries of one listener
  uint64_t flows = 0;                   // live flows, all listeners together
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
  // Applies to flows and affinity entries created from now on.
  void SetLimits(uint64_t max_flows, uint64_t max_flows_per_listener, uint64_t max_affinity);
  void Tick(uint64_t now_ms);
  void CloseAll();
  std::vector<UdpListenerStats> Stats() const;

 private:
  IoLoop* loop_;
  UdpLimits limits_;
  std::unordered_map<uint32_t, std::unique_ptr<UdpListener>> listeners_;
};

}  // namespace weft

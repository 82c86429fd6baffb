#include "udp-relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace weft {

namespace {
constexpr size_t kBatch = 32;
constexpr size_t kMaxDatagram = 65536;
constexpr size_t kCmsgSpace = CMSG_SPACE(sizeof(in6_pktinfo));

std::string AddrKey(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    auto* s = reinterpret_cast<const sockaddr_in*>(&a);
    return std::string(reinterpret_cast<const char*>(&s->sin_addr), 4) +
           std::string(reinterpret_cast<const char*>(&s->sin_port), 2);
  }
  auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
  return std::string(reinterpret_cast<const char*>(&s->sin6_addr), 16) +
         std::string(reinterpret_cast<const char*>(&s->sin6_port), 2);
}

std::string IpKey(const sockaddr_storage& a) {
  std::string k = AddrKey(a);
  return k.substr(0, k.size() - 2);
}

// The local address a datagram was received on, from its IP_PKTINFO / IPV6_PKTINFO.
struct LocalAddr {
  bool set = false;
  in_pktinfo v4{};
  in6_pktinfo v6{};
};

LocalAddr LocalOf(msghdr* h) {
  LocalAddr out;
  for (cmsghdr* c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      std::memcpy(&out.v4, CMSG_DATA(c), sizeof out.v4);
      out.v4.ipi_ifindex = 0;  // answer from the address; let routing pick the interface
      out.set = true;
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      std::memcpy(&out.v6, CMSG_DATA(c), sizeof out.v6);
      out.v6.ipi6_ifindex = 0;
      out.set = true;
    }
  }
  return out;
}

// Fills `h`'s control buffer to send from `local`.
void SetLocal(msghdr* h, char* buf, int family, const LocalAddr& local) {
  if (!local.set) {
    h->msg_control = nullptr;
    h->msg_controllen = 0;
    return;
  }
  h->msg_control = buf;
  h->msg_controllen = kCmsgSpace;
  std::memset(buf, 0, kCmsgSpace);
  cmsghdr* c = CMSG_FIRSTHDR(h);
  if (family == AF_INET) {
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
    std::memcpy(CMSG_DATA(c), &local.v4, sizeof local.v4);
    h->msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
  } else {
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
    std::memcpy(CMSG_DATA(c), &local.v6, sizeof local.v6);
    h->msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
  }
}

struct Buffers {
  uint8_t data[kBatch][kMaxDatagram];
  char control[kBatch][kCmsgSpace];
  sockaddr_storage addr[kBatch];
  iovec iov[kBatch];
  mmsghdr msgs[kBatch];
};

// One set of batch buffers per I/O thread, shared by its listeners: a listener uses them only
// inside one callback, and 2 MiB per service port would not scale to thousands of them.
Buffers& ThreadBuffers() {
  thread_local std::unique_ptr<Buffers> bufs(new Buffers);
  return *bufs;
}
}  // namespace

class UdpFlow : public Pollable {
 public:
  UdpFlow(UdpListener* l, int fd, std::string key, const sockaddr_storage& client, const LocalAddr& local,
          std::string target)
      : listener_(l),
        fd_(fd),
        key_(std::move(key)),
        client_(client),
        local_(local),
        target_(std::move(target)) {}
  ~UdpFlow() override {
    if (fd_ >= 0) close(fd_);
  }
  void OnEvents(uint32_t events) override;

  UdpListener* listener_;
  int fd_;
  std::string key_;
  sockaddr_storage client_;
  LocalAddr local_;
  std::string target_;
  uint64_t last_ms_ = 0;
  bool dead_ = false;
  std::list<UdpFlow*>::iterator lru_;
};

// A flood must not keep the thread in one listener: after this many batches the listener waits
// for the next epoll_wait (level-triggered, so what is left is reported again), and the timer
// tick, commands and other sockets get their turn.
constexpr int kBatchesPerWake = 8;

class UdpListener : public Pollable {
 public:
  UdpListener(IoLoop* loop, UdpLimits* limits, uint32_t id, int fd, int family, uint32_t idle_ms)
      : loop_(loop), limits_(limits), id_(id), fd_(fd), family_(family), idle_ms_(idle_ms) {}
  ~UdpListener() override {
    for (auto& [k, f] : flows_) Drop(f.get(), false);
    flows_.clear();
    if (fd_ >= 0) {
      loop_->Remove(fd_);
      close(fd_);
    }
  }

  bool Start() { return loop_->Add(fd_, EPOLLIN, this); }

  // Ends every flow (giving their share of the total cap back); before the listener goes.
  void EndAll() {
    while (!lru_.empty()) EndFlow(lru_.front()->key_);
  }

  void SetEndpoints(std::vector<UdpTarget> targets, uint32_t affinity_seconds) {
    targets_ = std::move(targets);
    affinity_ms_ = static_cast<uint64_t>(affinity_seconds) * 1000;
    next_ = 0;
    std::vector<std::string> gone;
    for (auto& [k, f] : flows_) {
      bool kept = false;
      for (auto& t : targets_) kept = kept || t.key == f->target_;
      if (!kept) gone.push_back(k);
    }
    for (auto& k : gone) EndFlow(k);
    for (auto it = affinity_.begin(); it != affinity_.end();) {
      bool kept = affinity_ms_ > 0;
      bool found = false;
      for (auto& t : targets_) found = found || t.key == it->second.target;
      if (kept && found) {
        ++it;
      } else {
        affinity_lru_.erase(it->second.lru);
        it = affinity_.erase(it);
      }
    }
  }

  void OnEvents(uint32_t) override {
    Buffers& b = ThreadBuffers();
    for (int batch = 0; batch < kBatchesPerWake; batch++) {
      for (size_t i = 0; i < kBatch; i++) {
        b.iov[i] = {b.data[i], kMaxDatagram};
        std::memset(&b.msgs[i], 0, sizeof b.msgs[i]);
        b.msgs[i].msg_hdr.msg_name = &b.addr[i];
        b.msgs[i].msg_hdr.msg_namelen = sizeof b.addr[i];
        b.msgs[i].msg_hdr.msg_iov = &b.iov[i];
        b.msgs[i].msg_hdr.msg_iovlen = 1;
        b.msgs[i].msg_hdr.msg_control = b.control[i];
        b.msgs[i].msg_hdr.msg_controllen = kCmsgSpace;
      }
      int n = recvmmsg(fd_, b.msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      uint64_t now = IoLoop::NowMs();
      for (int i = 0; i < n; i++) {
        in_++;
        UdpFlow* f = FlowFor(b.addr[i], LocalOf(&b.msgs[i].msg_hdr), now);
        if (!f) {
          dropped_++;
          continue;
        }
        Touch(f, now);
        if (send(f->fd_, b.data[i], b.msgs[i].msg_len, MSG_DONTWAIT) < 0) dropped_++;
      }
      if (static_cast<size_t>(n) < kBatch) return;
    }
  }

  // Replies of one flow: read in a batch, sent to the client in a batch.
  void Replies(UdpFlow* f) {
    Buffers& b = ThreadBuffers();
    for (int batch = 0; batch < kBatchesPerWake; batch++) {
      for (size_t i = 0; i < kBatch; i++) {
        b.iov[i] = {b.data[i], kMaxDatagram};
        std::memset(&b.msgs[i], 0, sizeof b.msgs[i]);
        b.msgs[i].msg_hdr.msg_iov = &b.iov[i];
        b.msgs[i].msg_hdr.msg_iovlen = 1;
      }
      int n = recvmmsg(f->fd_, b.msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;  // EAGAIN, or ECONNREFUSED from an endpoint that is gone: the flow idles out
      }
      for (int i = 0; i < n; i++) {
        b.iov[i].iov_len = b.msgs[i].msg_len;
        b.msgs[i].msg_hdr.msg_name = &f->client_;
        b.msgs[i].msg_hdr.msg_namelen = family_ == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
        SetLocal(&b.msgs[i].msg_hdr, b.control[i], family_, f->local_);
      }
      int sent = 0;
      while (sent < n) {
        int r = sendmmsg(fd_, b.msgs + sent, static_cast<unsigned>(n - sent), MSG_DONTWAIT);
        if (r < 0) {
          if (errno == EINTR) continue;
          dropped_ += static_cast<uint64_t>(n - sent);
          break;
        }
        sent += r;
      }
      out_ += static_cast<uint64_t>(sent);
      Touch(f, IoLoop::NowMs());
      if (static_cast<size_t>(n) < kBatch) return;
    }
  }

  void Tick(uint64_t now) {
    // Least recently active first: the first live one ends the scan.
    while (!lru_.empty() && now - lru_.front()->last_ms_ >= idle_ms_) EndFlow(lru_.front()->key_);
    while (!affinity_lru_.empty()) {
      auto it = affinity_.find(affinity_lru_.front());
      if (it != affinity_.end() && it->second.expires > now) break;
      if (it != affinity_.end()) affinity_.erase(it);
      affinity_lru_.pop_front();
    }
  }

  UdpListenerStats Stats() const {
    return UdpListenerStats{id_, in_, out_, created_, flows_.size(), dropped_, evicted_, affinity_evicted_};
  }

 private:
  struct Affinity {
    std::string target;
    uint64_t expires;
    std::list<std::string>::iterator lru;
  };

  void Touch(UdpFlow* f, uint64_t now) {
    f->last_ms_ = now;
    if (f->dead_) return;
    lru_.splice(lru_.end(), lru_, f->lru_);
  }

  // Room for one more flow: past a cap, this listener's flow idle the longest is closed. False
  // when the total is full and this listener has none to give up.
  bool MakeRoom() {
    for (;;) {
      bool full = (limits_->max_flows_per_listener > 0 && flows_.size() >= limits_->max_flows_per_listener) ||
                  (limits_->max_flows > 0 && limits_->flows >= limits_->max_flows);
      if (!full) return true;
      if (lru_.empty()) return false;
      EndFlow(lru_.front()->key_);
      evicted_++;
    }
  }

  UdpFlow* FlowFor(const sockaddr_storage& client, const LocalAddr& local, uint64_t now) {
    std::string key = AddrKey(client);
    auto it = flows_.find(key);
    if (it != flows_.end()) return it->second.get();
    const UdpTarget* t = Choose(client, now);
    if (!t) return nullptr;
    if (!MakeRoom()) return nullptr;
    int fd = socket(family_, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return nullptr;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&t->addr), t->len) != 0) {
      close(fd);
      return nullptr;
    }
    auto flow = std::make_unique<UdpFlow>(this, fd, key, client, local, t->key);
    flow->last_ms_ = now;
    if (!loop_->Add(fd, EPOLLIN, flow.get())) return nullptr;
    created_++;
    limits_->flows++;
    UdpFlow* raw = flow.get();
    raw->lru_ = lru_.insert(lru_.end(), raw);
    flows_[key] = std::move(flow);
    return raw;
  }

  // Round-robin over the list JavaScript shuffled; ClientIP affinity keeps a client's IP on the
  // endpoint it got first, until the affinity timeout passes without traffic.
  const UdpTarget* Choose(const sockaddr_storage& client, uint64_t now) {
    if (targets_.empty()) return nullptr;
    std::string ip = affinity_ms_ > 0 ? IpKey(client) : std::string();
    if (affinity_ms_ > 0) {
      auto a = affinity_.find(ip);
      if (a != affinity_.end() && a->second.expires > now) {
        for (auto& t : targets_)
          if (t.key == a->second.target) {
            a->second.expires = now + affinity_ms_;
            affinity_lru_.splice(affinity_lru_.end(), affinity_lru_, a->second.lru);
            return &t;
          }
      }
    }
    const UdpTarget* t = &targets_[next_ % targets_.size()];
    next_ = (next_ + 1) % targets_.size();
    if (affinity_ms_ > 0) {
      auto old = affinity_.find(ip);
      if (old != affinity_.end()) {
        affinity_lru_.erase(old->second.lru);
        affinity_.erase(old);
      }
      // Forged source addresses must not grow the table: the entry unused the longest goes.
      while (limits_->max_affinity > 0 && affinity_.size() >= limits_->max_affinity && !affinity_lru_.empty()) {
        affinity_.erase(affinity_lru_.front());
        affinity_lru_.pop_front();
        affinity_evicted_++;
      }
      auto lru = affinity_lru_.insert(affinity_lru_.end(), ip);
      affinity_[ip] = Affinity{t->key, now + affinity_ms_, lru};
    }
    return t;
  }

  void EndFlow(const std::string& key) {
    auto it = flows_.find(key);
    if (it == flows_.end()) return;
    std::shared_ptr<UdpFlow> keep(it->second.release());
    flows_.erase(it);
    lru_.erase(keep->lru_);
    limits_->flows--;
    Drop(keep.get(), true);
    loop_->AfterBatch([keep] {});
  }

  void Drop(UdpFlow* f, bool remove) {
    if (f->dead_) return;
    f->dead_ = true;
    if (remove) loop_->Remove(f->fd_);
  }

  friend class UdpFlow;
  IoLoop* loop_;
  UdpLimits* limits_;
  uint32_t id_;
  int fd_;
  int family_;
  uint64_t idle_ms_;
  uint64_t affinity_ms_ = 0;
  size_t next_ = 0;
  std::vector<UdpTarget> targets_;
  std::unordered_map<std::string, std::unique_ptr<UdpFlow>> flows_;
  std::list<UdpFlow*> lru_;  // least recently active first
  std::unordered_map<std::string, Affinity> affinity_;
  std::list<std::string> affinity_lru_;  // least recently used first
  uint64_t in_ = 0, out_ = 0, created_ = 0, dropped_ = 0, evicted_ = 0, affinity_evicted_ = 0;
};

void UdpFlow::OnEvents(uint32_t) {
  if (!dead_) listener_->Replies(this);
}

UdpRelay::UdpRelay(IoLoop* loop) : loop_(loop) {}
UdpRelay::~UdpRelay() = default;

void UdpRelay::AddListener(uint32_t id, int fd, int family, uint32_t idle_ms) {
  auto l = std::make_unique<UdpListener>(loop_, &limits_, id, fd, family, idle_ms);
  if (!l->Start()) return;
  listeners_[id] = std::move(l);
}

void UdpRelay::RemoveListener(uint32_t id) {
  auto it = listeners_.find(id);
  if (it == listeners_.end()) return;
  it->second->EndAll();
  std::shared_ptr<UdpListener> keep(it->second.release());
  listeners_.erase(it);
  // Its flows may still be named by events of this batch.
  loop_->AfterBatch([keep] {});
}

void UdpRelay::SetEndpoints(uint32_t id, std::vector<UdpTarget> targets, uint32_t affinity_seconds) {
  auto it = listeners_.find(id);
  if (it != listeners_.end()) it->second->SetEndpoints(std::move(targets), affinity_seconds);
}

void UdpRelay::SetLimits(uint64_t max_flows, uint64_t max_flows_per_listener, uint64_t max_affinity) {
  limits_.max_flows = max_flows;
  limits_.max_flows_per_listener = max_flows_per_listener;
  limits_.max_affinity = max_affinity;
}

void UdpRelay::Tick(uint64_t now_ms) {
  for (auto& [id, l] : listeners_) l->Tick(now_ms);
}

void UdpRelay::CloseAll() {
  std::vector<uint32_t> ids;
  for (auto& [id, l] : listeners_) ids.push_back(id);
  for (uint32_t id : ids) RemoveListener(id);
}

std::vector<UdpListenerStats> UdpRelay::Stats() const {
  std::vector<UdpListenerStats> out;
  for (auto& [id, l] : listeners_) out.push_back(l->Stats());
  return out;
}

}  // namespace weft

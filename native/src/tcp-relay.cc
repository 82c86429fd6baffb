#include "tcp-relay.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace weft {

namespace {
// The pipe size asked for when the options do not say: what Linux gives by default, 16 pages.
constexpr size_t kPipeDefault = 1 << 16;
// The copy buffer; a read that fills it means bulk transfer, where splice wins.
constexpr size_t kCopy = 16 * 1024;
// A splice that moves less than this counts towards going back to copying.
constexpr size_t kSmall = 4096;
constexpr uint32_t kEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

// Makes the peer see a reset rather than an orderly close.
void CloseWithReset(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

bool Retry(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }
}  // namespace

const char* EndReasonName(EndReason r) {
  switch (r) {
    case EndReason::kClosed:
      return "closed";
    case EndReason::kReset:
      return "reset";
    case EndReason::kIdle:
      return "idle";
    case EndReason::kError:
      return "error";
    case EndReason::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

// One direction: src → pipe → dst. Bytes wait in at most two places, in this order: the pipe,
// then `spill` (what a short write to the pipe left in user space). Nothing more is read from
// src while spill holds bytes, so the order on the wire is the order read.
struct Direction {
  int src = -1;
  int dst = -1;
  int pipe_r = -1;
  int pipe_w = -1;
  // What F_GETPIPE_SZ reported: never assumed, a shrunken pipe is as good as a large one.
  size_t pipe_cap = 0;
  size_t in_pipe = 0;
  std::vector<uint8_t> spill;
  size_t spill_off = 0;
  uint64_t bytes = 0;
  bool src_eof = false;
  bool dst_shut = false;
  // Small exchanges (requests, replies) cost fewer system calls copied through a buffer than
  // spliced through the pipe (recv+send against splice in+out), so a direction starts in copy
  // mode and switches to splice once reads fill the buffer: HAProxy's splice-auto, in effect.
  bool splicing = false;
  int small_splices = 0;
  size_t spilled() const { return spill.size() - spill_off; }
  bool done() const { return dst_shut; }
};

class TcpConnection {
 public:
  // Routes the epoll events of one fd to the connection.
  struct Side : Pollable {
    TcpConnection* conn = nullptr;
    void OnEvents(uint32_t events) override { conn->OnEvents(events); }
  };

  TcpConnection(TcpRelay* relay, IoLoop* loop, uint64_t id, int a, int b, uint64_t idle_ms)
      : relay_(relay), loop_(loop), id_(id), a_(a), b_(b), idle_ms_(idle_ms) {
    side_a_.conn = this;
    side_b_.conn = this;
    ab_.src = a;
    ab_.dst = b;
    ba_.src = b;
    ba_.dst = a;
  }

  ~TcpConnection() { CloseFds(false); }

  uint64_t id() const { return id_; }
  uint64_t ab_bytes() const { return ab_.bytes; }
  uint64_t ba_bytes() const { return ba_.bytes; }

  // Returns errno on failure (the caller reports the end).
  int Setup(const TcpRelayOptions& opts) {
    for (Direction* d : {&ab_, &ba_}) {
      int p[2];
      if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return errno;
      d->pipe_r = p[0];
      d->pipe_w = p[1];
      // Sized explicitly: once the user is over pipe-user-pages-soft, new pipes start at 8 KiB.
      // A refusal (pipe-user-pages-hard, pipe-max-size) leaves the pipe as it is, which works.
      size_t want = opts.pipe_size > 0 ? opts.pipe_size : kPipeDefault;
      fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(want));
      int cap = fcntl(p[1], F_GETPIPE_SZ);
      if (cap <= 0) return cap < 0 ? errno : EINVAL;
      d->pipe_cap = static_cast<size_t>(cap);
      size_t copy = opts.copy_max > 0 ? opts.copy_max : (d->pipe_cap < kCopy ? d->pipe_cap : kCopy);
      copy_max_ = copy > kCopy ? kCopy : copy;
    }
    // The sockets came from libuv, already non-blocking; make sure for fds from elsewhere.
    for (int fd : {a_, b_}) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      // The relay passes on what it got at once; Nagle would only hold small replies back.
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (!loop_->Add(a_, kEvents, &side_a_)) return errno;
    registered_a_ = true;
    if (!loop_->Add(b_, kEvents, &side_b_)) return errno;
    registered_b_ = true;
    last_ms_ = IoLoop::NowMs();
    return 0;
  }

  void OnEvents(uint32_t events) {
    if (dead_) return;
    if (events & EPOLLERR) {
      // Pump first: data already queued is delivered before the error is acted on.
      Pump(ab_);
      Pump(ba_);
      if (dead_) return;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(a_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) getsockopt(b_, SOL_SOCKET, SO_ERROR, &err, &len);
      End(err == ECONNRESET || err == EPIPE ? EndReason::kReset : EndReason::kError, err);
      return;
    }
    Pump(ab_);
    if (!dead_) Pump(ba_);
    if (!dead_ && ab_.done() && ba_.done()) End(EndReason::kClosed, 0);
  }

  void CheckIdle(uint64_t now_ms) {
    if (!dead_ && idle_ms_ > 0 && now_ms - last_ms_ >= idle_ms_) End(EndReason::kIdle, 0);
  }

  void End(EndReason reason, int err) {
    if (dead_) return;
    dead_ = true;
    CloseFds(reason == EndReason::kReset);
    relay_->Finished(this, reason, err);
  }

 private:
  // Copy mode: one recv and one send. What the destination does not take now goes into the
  // (empty) pipe, and what a short pipe write leaves into spill; either way it waits for
  // EPOLLOUT, in order. Returns false when the connection ended.
  bool CopyOnce(Direction& d, bool* progress) {
    static thread_local uint8_t buf[kCopy];
    size_t want = copy_max_;
    ssize_t n = recv(d.src, buf, want, MSG_DONTWAIT);
    if (n == 0) {
      d.src_eof = true;
      *progress = true;
      return true;
    }
    if (n < 0) {
      if (Retry(errno)) return true;
      Fail(errno);
      return false;
    }
    *progress = true;
    size_t len = static_cast<size_t>(n);
    if (len == want) d.splicing = true;
    ssize_t w = send(d.dst, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0) {
      if (!Retry(errno)) {
        Fail(errno);
        return false;
      }
      w = 0;
    }
    d.bytes += static_cast<uint64_t>(w);
    size_t off = static_cast<size_t>(w);
    if (off < len) {
      ssize_t p = write(d.pipe_w, buf + off, len - off);
      if (p < 0) {
        if (!Retry(errno)) {
          Fail(errno);
          return false;
        }
        p = 0;
      }
      d.in_pipe += static_cast<size_t>(p);
      off += static_cast<size_t>(p);
    }
    if (off < len) d.spill.assign(buf + off, buf + len), d.spill_off = 0;
    return true;
  }

  // Moves spill to the pipe's tail as room frees up. Returns false when the connection ended.
  bool Unspill(Direction& d, bool* progress) {
    ssize_t p = write(d.pipe_w, d.spill.data() + d.spill_off, d.spilled());
    if (p < 0) {
      if (Retry(errno)) return true;
      Fail(errno);
      return false;
    }
    if (p > 0) *progress = true;
    d.in_pipe += static_cast<size_t>(p);
    d.spill_off += static_cast<size_t>(p);
    if (d.spilled() == 0) {
      std::vector<uint8_t>().swap(d.spill);  // an idle connection holds no user-space buffer
      d.spill_off = 0;
    }
    return true;
  }

  void Pump(Direction& d) {
    bool progress = true;
    while (progress && !dead_) {
      progress = false;
      // What waits goes first: the pipe to the destination (a short splice keeps the rest
      // there for the next EPOLLOUT), then spill to the pipe.
      if (d.in_pipe > 0) {
        ssize_t n = splice(d.pipe_r, nullptr, d.dst, nullptr, d.in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
          d.in_pipe -= static_cast<size_t>(n);
          d.bytes += static_cast<uint64_t>(n);
          progress = true;
        } else if (n < 0 && !Retry(errno)) {
          Fail(errno);
          return;
        }
      }
      if (d.spilled() > 0 && !Unspill(d, &progress)) return;
      if (d.src_eof || d.spilled() > 0) {
        // Nothing more is read until spill is gone.
      } else if (!d.splicing) {
        if (d.in_pipe == 0 && !CopyOnce(d, &progress)) return;
      } else if (d.in_pipe < d.pipe_cap) {
        ssize_t n = splice(d.src, nullptr, d.pipe_w, nullptr, d.pipe_cap - d.in_pipe,
                           SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
          d.in_pipe += static_cast<size_t>(n);
          // Back to copying after a run of small reads (the bulk phase is over).
          d.small_splices = static_cast<size_t>(n) < kSmall ? d.small_splices + 1 : 0;
          if (d.small_splices >= 2) {
            d.splicing = false;
            d.small_splices = 0;
          }
          progress = true;
        } else if (n == 0) {
          d.src_eof = true;
          progress = true;
        } else if (!Retry(errno)) {
          Fail(errno);
          return;
        }
      }
      if (progress) last_ms_ = IoLoop::NowMs();
    }
    if (!dead_ && d.src_eof && d.in_pipe == 0 && d.spilled() == 0 && !d.dst_shut) {
      // Half-close: the other side learns that no more data comes, and may still answer.
      shutdown(d.dst, SHUT_WR);
      d.dst_shut = true;
    }
  }

  void Fail(int err) { End(err == ECONNRESET || err == EPIPE ? EndReason::kReset : EndReason::kError, err); }

  void CloseFds(bool reset) {
    if (registered_a_) loop_->Remove(a_);
    if (registered_b_) loop_->Remove(b_);
    registered_a_ = registered_b_ = false;
    for (int* fd : {&a_, &b_}) {
      if (*fd < 0) continue;
      if (reset)
        CloseWithReset(*fd);
      else
        close(*fd);
      *fd = -1;
    }
    for (Direction* d : {&ab_, &ba_}) {
      if (d->pipe_r >= 0) close(d->pipe_r);
      if (d->pipe_w >= 0) close(d->pipe_w);
      d->pipe_r = d->pipe_w = -1;
    }
  }

  TcpRelay* relay_;
  IoLoop* loop_;
  uint64_t id_;
  int a_;
  int b_;
  uint64_t idle_ms_;
  size_t copy_max_ = kCopy;
  uint64_t last_ms_ = 0;
  bool dead_ = false;
  bool registered_a_ = false;
  bool registered_b_ = false;
  Side side_a_;
  Side side_b_;
  Direction ab_;
  Direction ba_;
};

TcpRelay::TcpRelay(IoLoop* loop, Emit emit, TcpRelayOptions opts)
    : loop_(loop), emit_(std::move(emit)), opts_(opts) {}

TcpRelay::~TcpRelay() = default;

void TcpRelay::Add(uint64_t id, int fd_a, int fd_b, uint64_t idle_ms) {
  auto conn = std::make_unique<TcpConnection>(this, loop_, id, fd_a, fd_b, idle_ms);
  int err = conns_.count(id) ? EEXIST : conn->Setup(opts_);
  if (err != 0) {
    emit_(RelayEnd{id, 0, 0, EndReason::kError, err});
    return;  // the destructor closes the fds
  }
  TcpConnection* raw = conn.get();
  conns_[id] = std::move(conn);
  // Data may have arrived before registration; edge-triggered epoll would not report it.
  raw->OnEvents(EPOLLIN | EPOLLOUT);
}

void TcpRelay::Tick(uint64_t now_ms) {
  std::vector<TcpConnection*> all;
  all.reserve(conns_.size());
  for (auto& [id, c] : conns_) all.push_back(c.get());
  for (auto* c : all) c->CheckIdle(now_ms);
}

void TcpRelay::CloseAll() {
  std::vector<TcpConnection*> all;
  for (auto& [id, c] : conns_) all.push_back(c.get());
  for (auto* c : all) c->End(EndReason::kShutdown, 0);
}

void TcpRelay::Finished(TcpConnection* c, EndReason reason, int err) {
  emit_(RelayEnd{c->id(), c->ab_bytes(), c->ba_bytes(), reason, err});
  uint64_t id = c->id();
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  // Freed after the batch: another event of this batch may name it.
  std::shared_ptr<TcpConnection> keep(it->second.release());
  conns_.erase(it);
  loop_->AfterBatch([keep] {});
}

}  // namespace weft

// The TCP relay: bytes move between two connected sockets through a pipe per direction with
// splice(2), so they never enter user space. Edge-triggered epoll on the I/O thread; each
// direction is pumped until the kernel says EAGAIN, and a full pipe is the backpressure.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "io-loop.h"

namespace weft {

// How a relayed connection ended.
enum class EndReason { kClosed, kReset, kIdle, kError, kShutdown };

const char* EndReasonName(EndReason r);

// Sent to JavaScript (in batches) when a connection ends.
struct RelayEnd {
  uint64_t id;
  uint64_t bytes_a_to_b;
  uint64_t bytes_b_to_a;
  EndReason reason;
  int err;  // errno for kError/kReset, else 0
};

class TcpConnection;

struct TcpRelayOptions {
  // Pipe capacity asked for with F_SETPIPE_SZ; 0 asks for 64 KiB. The kernel may grant another
  // size (it rounds to pages, and a user over pipe-user-pages-soft gets 8 KiB pipes by default),
  // so each connection works with what F_GETPIPE_SZ reports. Tests ask for one page.
  size_t pipe_size = 0;
  // Largest read in copy mode; 0 means the granted pipe size (capped at 16 KiB), so that what
  // the destination does not take always fits the empty pipe. Tests set it larger to exercise
  // the user-space remainder that a short pipe write leaves.
  size_t copy_max = 0;
};

class TcpRelay {
 public:
  using Emit = std::function<void(const RelayEnd&)>;

  TcpRelay(IoLoop* loop, Emit emit, TcpRelayOptions opts = {});
  ~TcpRelay();

  // Loop thread. Takes ownership of both fds (closed when the connection ends). Emits an end
  // event at once when the connection cannot be set up, or when `id` names a live connection
  // (EEXIST: the live one is never replaced).
  void Add(uint64_t id, int fd_a, int fd_b, uint64_t idle_ms);
  // Loop thread: ends connections idle for longer than their timeout.
  void Tick(uint64_t now_ms);
  // Loop thread: ends every connection (reason kShutdown).
  void CloseAll();
  // Loop thread: called by a connection that ended; its object is freed after the batch.
  void Finished(TcpConnection* c, EndReason reason, int err);

  size_t active() const { return conns_.size(); }

 private:
  IoLoop* loop_;
  Emit emit_;
  TcpRelayOptions opts_;
  std::unordered_map<uint64_t, std::unique_ptr<TcpConnection>> conns_;
};

}  // namespace weft

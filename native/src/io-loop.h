// The addon's I/O thread: one epoll set, an eventfd that JavaScript writes to wake it, a command
// queue, and a coarse timer tick for idle timeouts. Everything that touches a relayed fd runs on
// this thread, so no relay state needs a lock; only the command queue and the outgoing event
// batch are shared with the JavaScript thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace weft {

// Something registered in the epoll set.
class Pollable {
 public:
  virtual ~Pollable() = default;
  virtual void OnEvents(uint32_t events) = 0;
};

class IoLoop {
 public:
  using Command = std::function<void()>;
  using Tick = std::function<void(uint64_t now_ms)>;
  // Called on the loop thread, once, when epoll_wait fails with anything but EINTR; the thread
  // then ends. Without a handler the error goes to stderr; never silently.
  using OnError = std::function<void(int err)>;

  IoLoop();
  ~IoLoop();
  IoLoop(const IoLoop&) = delete;
  IoLoop& operator=(const IoLoop&) = delete;

  // Starts the thread; false (with errno set) when epoll, eventfd or timerfd cannot be created.
  bool Start(Tick tick, uint32_t tick_ms);
  // Before Start.
  void SetErrorHandler(OnError on_error) { on_error_ = std::move(on_error); }
  // Queues `cmd` to run on the loop thread and wakes it. Safe from any thread.
  void Post(Command cmd);
  // Runs the queued commands, then stops and joins the thread. Idempotent.
  void Stop();

  // Loop thread only.
  bool Add(int fd, uint32_t events, Pollable* p);
  // Runs `cmd` once the current batch of epoll events is handled: an object that finishes while
  // handling one event may still be named by a later event of the same batch.
  void AfterBatch(Command cmd) { after_batch_.push_back(std::move(cmd)); }
  void Remove(int fd);
  static uint64_t NowMs();
  bool running() const { return running_.load(); }
  // False once the thread ended on an error; commands posted after that never run.
  bool healthy() const { return !failed_.load(); }
  // For tests that make epoll_wait fail.
  int epoll_fd_for_test() const { return epfd_; }

 private:
  void Run();
  void DrainCommands();

  int epfd_ = -1;
  int wakefd_ = -1;
  int timerfd_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Command> queue_;
  std::vector<Command> after_batch_;
  std::atomic<bool> running_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};
  Tick tick_;
  OnError on_error_;
};

}  // namespace weft

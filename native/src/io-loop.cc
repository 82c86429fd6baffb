#include "io-loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace weft {

namespace {
// Distinguishes the loop's own fds from relays in epoll's data field.
Pollable* const kWake = reinterpret_cast<Pollable*>(1);
Pollable* const kTimer = reinterpret_cast<Pollable*>(2);
}  // namespace

IoLoop::IoLoop() = default;

IoLoop::~IoLoop() { Stop(); }

uint64_t IoLoop::NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

bool IoLoop::Start(Tick tick, uint32_t tick_ms) {
  tick_ = std::move(tick);
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  timerfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epfd_ < 0 || wakefd_ < 0 || timerfd_ < 0) {
    int saved = errno;
    if (epfd_ >= 0) close(epfd_);
    if (wakefd_ >= 0) close(wakefd_);
    if (timerfd_ >= 0) close(timerfd_);
    epfd_ = wakefd_ = timerfd_ = -1;
    errno = saved;
    return false;
  }
  itimerspec its{};
  its.it_interval.tv_sec = tick_ms / 1000;
  its.it_interval.tv_nsec = static_cast<long>(tick_ms % 1000) * 1000000L;
  its.it_value = its.it_interval;
  timerfd_settime(timerfd_, 0, &its, nullptr);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = kWake;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev);
  ev.data.ptr = kTimer;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, timerfd_, &ev);
  running_ = true;
  thread_ = std::thread([this] { Run(); });
  return true;
}

void IoLoop::Post(Command cmd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(cmd));
  }
  uint64_t one = 1;
  if (wakefd_ >= 0) {
    ssize_t n = write(wakefd_, &one, sizeof one);
    (void)n;  // EAGAIN means the counter is already non-zero: the loop wakes anyway.
  }
}

void IoLoop::Stop() {
  if (!running_.load()) return;
  stopping_ = true;
  Post([] {});
  if (thread_.joinable()) thread_.join();
  if (failed_.load()) {
    // The thread is gone: what was posted (closing connections, fds handed over) runs here, so
    // that nothing leaks.
    DrainCommands();
    std::vector<Command> later;
    later.swap(after_batch_);
    for (auto& cmd : later) cmd();
  }
  close(epfd_);
  close(wakefd_);
  close(timerfd_);
  epfd_ = wakefd_ = timerfd_ = -1;
  running_ = false;
}

bool IoLoop::Add(int fd, uint32_t events, Pollable* p) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = p;
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void IoLoop::Remove(int fd) { epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr); }

void IoLoop::DrainCommands() {
  std::vector<Command> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(queue_);
  }
  for (auto& cmd : batch) cmd();
}

void IoLoop::Run() {
  epoll_event events[64];
  for (;;) {
    int n = epoll_wait(epfd_, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      // EBADF, EINVAL, EFAULT: the set is gone and waiting again would spin. The owner hears of
      // it (JavaScript gets an error event) rather than finding a thread that quietly stopped.
      int err = errno;
      failed_ = true;
      if (on_error_)
        on_error_(err);
      else
        std::fprintf(stderr, "weft native: I/O thread stops: epoll_wait: %s\n", std::strerror(err));
      break;
    }
    for (int i = 0; i < n; i++) {
      Pollable* p = static_cast<Pollable*>(events[i].data.ptr);
      if (p == kWake) {
        uint64_t v;
        ssize_t r = read(wakefd_, &v, sizeof v);
        (void)r;
        DrainCommands();
      } else if (p == kTimer) {
        uint64_t v;
        ssize_t r = read(timerfd_, &v, sizeof v);
        (void)r;
        if (tick_) tick_(NowMs());
      } else {
        p->OnEvents(events[i].events);
      }
    }
    if (!after_batch_.empty()) {
      std::vector<Command> later;
      later.swap(after_batch_);
      for (auto& cmd : later) cmd();
    }
    if (stopping_.load()) {
      DrainCommands();
      std::vector<Command> later;
      later.swap(after_batch_);
      for (auto& cmd : later) cmd();
      break;
    }
  }
}

}  // namespace weft

// Tests of the native code without Node: the relay over loopback TCP and the packet functions.
// Built and run plain, under ASan/UBSan (`make sanitize`) and under valgrind memcheck, so that a
// leak or an out-of-bounds access in the hot paths fails the build, not a node in production.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../src/io-loop.h"
#include "../src/offload.h"
#include "../src/packet.h"
#include "../src/tcp-relay.h"
#include "../src/tun-forwarder.h"
#include "../src/udp-relay.h"

using namespace weft;

static int failures = 0;
#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                                \
    }                                                                            \
  } while (0)

namespace {

int Listen(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  listen(fd, 16);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

int Connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::perror("connect");
  return fd;
}

// A connected pair through a listener: returns {connecting end, accepted end}.
std::pair<int, int> Pair() {
  uint16_t port = 0;
  int l = Listen(&port);
  int c = Connect(port);
  int s = accept(l, nullptr, nullptr);
  close(l);
  return {c, s};
}

struct Ends {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<RelayEnd> ends;
  void Push(const RelayEnd& e) {
    std::lock_guard<std::mutex> lock(mu);
    ends.push_back(e);
    cv.notify_all();
  }
  bool Wait(size_t n, int ms = 5000) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return ends.size() >= n; });
  }
};

// Relay harness: client <-> [a | relay | b] <-> upstream.
struct Harness {
  IoLoop loop;
  Ends ends;
  TcpRelay* relay = nullptr;
  explicit Harness(TcpRelayOptions opts = {}) {
    relay = new TcpRelay(&loop, [this](const RelayEnd& e) { ends.Push(e); }, opts);
    loop.Start([this](uint64_t now) { relay->Tick(now); }, 50);
  }
  ~Harness() {
    loop.Post([this] { relay->CloseAll(); });
    loop.Stop();
    delete relay;
  }
  // Returns {client fd, upstream server fd}.
  // `sndbuf`, when set, shrinks the relay's socket buffers towards the upstream: a slow
  // reader then makes the relay's writes short at once.
  std::pair<int, int> Connect(uint64_t id, uint64_t idle_ms = 0, int sndbuf = 0) {
    auto [client, a] = Pair();
    auto [b, upstream] = Pair();
    if (sndbuf > 0) {
      setsockopt(b, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      setsockopt(upstream, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    }
    loop.Post([this, id, a = a, b = b, idle_ms] { relay->Add(id, a, b, idle_ms); });
    return {client, upstream};
  }
};

ssize_t ReadAll(int fd, std::string* out) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return n;
    out->append(buf, static_cast<size_t>(n));
  }
}

void TestEchoHalfClose() {
  Harness h;
  auto [client, upstream] = h.Connect(1);
  std::string sent(8 << 20, '\0');
  for (size_t i = 0; i < sent.size(); i++) sent[i] = static_cast<char>(i * 131);
  std::thread server([up = upstream] {
    std::string got;
    ReadAll(up, &got);  // until the client's FIN arrives through the relay
    size_t off = 0;
    while (off < got.size()) {
      ssize_t n = write(up, got.data() + off, got.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    shutdown(up, SHUT_WR);
    close(up);
  });
  std::thread writer([c = client, &sent] {
    size_t off = 0;
    while (off < sent.size()) {
      ssize_t n = write(c, sent.data() + off, sent.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    shutdown(c, SHUT_WR);
  });
  std::string back;
  ReadAll(client, &back);
  writer.join();
  server.join();
  close(client);
  CHECK(back == sent);
  CHECK(h.ends.Wait(1));
  CHECK(h.ends.ends.size() == 1 && h.ends.ends[0].reason == EndReason::kClosed);
  CHECK(h.ends.ends[0].bytes_a_to_b == sent.size() && h.ends.ends[0].bytes_b_to_a == sent.size());
}

void TestReset() {
  Harness h;
  auto [client, upstream] = h.Connect(2);
  linger l{1, 0};
  setsockopt(upstream, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(upstream);  // RST
  CHECK(h.ends.Wait(1));
  CHECK(h.ends.ends[0].reason == EndReason::kReset);
  char c;
  ssize_t n = read(client, &c, 1);
  CHECK(n < 0 && errno == ECONNRESET);
  close(client);
}

void TestIdleAndShutdown() {
  Harness h;
  auto [c1, u1] = h.Connect(3, 200);
  auto [c2, u2] = h.Connect(4, 0);
  CHECK(h.ends.Wait(1, 3000));
  CHECK(h.ends.ends[0].id == 3 && h.ends.ends[0].reason == EndReason::kIdle);
  h.loop.Post([&h] { h.relay->CloseAll(); });
  CHECK(h.ends.Wait(2, 3000));
  CHECK(h.ends.ends[1].id == 4 && h.ends.ends[1].reason == EndReason::kShutdown);
  for (int fd : {c1, u1, c2, u2}) close(fd);
}

void TestManyConnections() {
  Harness h;
  std::vector<std::pair<int, int>> conns;
  for (uint32_t i = 0; i < 200; i++) conns.push_back(h.Connect(100 + i));
  for (auto& [c, u] : conns) {
    CHECK(write(c, "ping", 4) == 4);
    char buf[4];
    CHECK(read(u, buf, 4) == 4 && std::memcmp(buf, "ping", 4) == 0);
    close(c);
    close(u);
  }
  CHECK(h.ends.Wait(200));
}

// One page per pipe (what a user over pipe-user-pages-soft is close to) and a slow reader:
// the relay's writes are short, in copy mode (request-sized writes) and in splice mode (bulk).
// The reader stops for a while, again and again, each time after the relay caught up and went
// back to copy mode, so a full destination meets a request-sized read many times. The
// connection must deliver every byte in order and end closed, never reset.
void TestSmallPipesSlowReader(size_t copy_max) {
  TcpRelayOptions opts;
  opts.pipe_size = 4096;
  opts.copy_max = copy_max;
  Harness h(opts);
  auto [client, upstream] = h.Connect(7, 0, 32768);
  std::string sent(3 << 20, '\0');
  for (size_t i = 0; i < sent.size(); i++) sent[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::thread writer([c = client, &sent] {
    size_t off = 0;
    while (off < sent.size()) {
      size_t chunk = sent.size() - off < 5000 ? sent.size() - off : 5000;
      ssize_t n = write(c, sent.data() + off, chunk);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
      std::this_thread::sleep_for(std::chrono::microseconds(250));
    }
    shutdown(c, SHUT_WR);
  });
  std::string got;
  char buf[8192];
  fcntl(upstream, F_SETFL, O_NONBLOCK);
  for (bool eof = false; !eof;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the destination fills up
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(8);
    while (!eof && std::chrono::steady_clock::now() < until) {
      ssize_t n = read(upstream, buf, sizeof buf);
      if (n > 0)
        got.append(buf, static_cast<size_t>(n));
      else if (n == 0 || errno != EAGAIN)
        eof = true;
      else
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  writer.join();
  CHECK(got.size() == sent.size());
  CHECK(got == sent);
  close(upstream);
  close(client);
  CHECK(h.ends.Wait(1));
  CHECK(h.ends.ends.size() == 1 && h.ends.ends[0].reason == EndReason::kClosed);
  if (!h.ends.ends.empty()) {
    CHECK(h.ends.ends[0].err == 0);
    CHECK(h.ends.ends[0].bytes_a_to_b == sent.size());
  }
}

// A live id is never replaced: the second Add with it is refused, the first keeps working.
void TestDuplicateId() {
  Harness h;
  uint64_t id = (1ull << 32) + 5;  // past 32 bits: ids are kept whole
  auto [c1, u1] = h.Connect(id);
  auto [c2, u2] = h.Connect(id);
  CHECK(h.ends.Wait(1));
  if (h.ends.ends.empty()) return;
  CHECK(h.ends.ends[0].id == id && h.ends.ends[0].reason == EndReason::kError && h.ends.ends[0].err == EEXIST);
  CHECK(write(c1, "ping", 4) == 4);
  char buf[4];
  CHECK(read(u1, buf, 4) == 4 && std::memcmp(buf, "ping", 4) == 0);
  for (int fd : {c1, u1, c2, u2}) close(fd);
}

// An epoll_wait failure ends the thread with a report, not silently.
void TestLoopError() {
  IoLoop loop;
  std::mutex m;
  std::condition_variable cv;
  int got = 0;
  loop.SetErrorHandler([&](int err) {
    std::lock_guard<std::mutex> lock(m);
    got = err;
    cv.notify_all();
  });
  CHECK(loop.Start([](uint64_t) {}, 20));
  // Replace the epoll fd with one that is not an epoll set: the next epoll_wait fails (EINVAL).
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int saved = dup(loop.epoll_fd_for_test());
  dup2(devnull, loop.epoll_fd_for_test());
  close(devnull);
  {
    std::unique_lock<std::mutex> lock(m);
    cv.wait_for(lock, std::chrono::seconds(3), [&] { return got != 0; });
  }
  CHECK(got == EINVAL);
  CHECK(!loop.healthy());
  bool ran = false;
  loop.Post([&ran] { ran = true; });
  loop.Stop();
  CHECK(ran);  // what was posted after the failure still runs (on Stop), so nothing leaks
  close(saved);
}

std::vector<uint8_t> Ipv4(uint8_t ttl) {
  std::vector<uint8_t> p(36, 0);
  p[0] = 0x45;
  p[3] = 36;
  p[8] = ttl;
  p[9] = 1;
  uint8_t src[4] = {10, 244, 1, 2}, dst[4] = {10, 244, 2, 2};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  uint16_t c = InternetChecksum(p.data(), 20);
  p[10] = static_cast<uint8_t>(c >> 8);
  p[11] = static_cast<uint8_t>(c & 0xff);
  p[20] = 8;
  return p;
}

void TestPackets() {
  Ipv4Info info{};
  auto p = Ipv4(64);
  CHECK(ParseIpv4(p.data(), p.size(), &info) == PacketError::kOk && info.total_len == 36 && info.ttl == 64);
  CHECK(ParseIpv4(p.data(), 19, &info) == PacketError::kTruncated);
  CHECK(ParseIpv4(p.data(), 30, &info) == PacketError::kBadLength);
  // Incremental checksum equals a full recomputation for every TTL.
  for (int ttl = 2; ttl < 256; ttl++) {
    auto q = Ipv4(static_cast<uint8_t>(ttl));
    CHECK(DecrementTtl(q.data(), q.size()));
    CHECK(InternetChecksum(q.data(), 20) == 0);
  }
  auto one = Ipv4(1);
  CHECK(!DecrementTtl(one.data(), one.size()) && one[8] == 1);
  uint8_t out[128];
  size_t n = BuildIcmpUnreachable(p.data(), p.size(), htonl(0x0af40100), 0, out, sizeof out);
  CHECK(n == 20 + 8 + 28);
  CHECK(InternetChecksum(out, 20) == 0);
  CHECK(InternetChecksum(out + 20, n - 20) == 0);
  CHECK(out[20] == 3 && out[21] == 0);
  // Never answer an ICMP error.
  auto err = Ipv4(64);
  err[20] = 3;
  CHECK(BuildIcmpUnreachable(err.data(), err.size(), 0, 0, out, sizeof out) == 0);
  // Random input never reads out of bounds (ASan/valgrind check this).
  uint32_t seed = 7;
  for (int i = 0; i < 100000; i++) {
    size_t len = (seed = seed * 1103515245u + 12345u) % 96;
    std::vector<uint8_t> buf(len);
    for (auto& b : buf) b = static_cast<uint8_t>((seed = seed * 1103515245u + 12345u) >> 16);
    if (!buf.empty() && (i & 1)) buf[0] = static_cast<uint8_t>(0x40 | (buf[0] & 0x0f));
    Ipv4Info in{};
    if (ParseIpv4(buf.data(), buf.size(), &in) == PacketError::kOk) CHECK(in.total_len <= buf.size());
    BuildIcmpUnreachable(buf.data(), buf.size(), 0, 0, out, sizeof out);
    DecrementTtl(buf.data(), buf.size());
  }
}

// A TCP/IPv4 packet with `payload` bytes of payload and the given flags.
std::vector<uint8_t> Tcp4(size_t payload, uint8_t flags, uint32_t seq) {
  std::vector<uint8_t> p(20 + 32 + payload);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(p.size() >> 8);
  p[3] = static_cast<uint8_t>(p.size() & 0xff);
  p[6] = 0x40;  // DF
  p[8] = 64;
  p[9] = 6;
  uint8_t src[4] = {10, 244, 1, 2}, dst[4] = {10, 244, 2, 2};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  uint8_t* th = &p[20];
  th[0] = 0x9c;
  th[1] = 0x40;
  th[2] = 0x14;
  th[3] = 0x51;
  th[4] = static_cast<uint8_t>(seq >> 24);
  th[5] = static_cast<uint8_t>(seq >> 16);
  th[6] = static_cast<uint8_t>(seq >> 8);
  th[7] = static_cast<uint8_t>(seq);
  th[12] = 0x80;  // 32-byte header: timestamps
  th[13] = flags;
  th[14] = 0x01;
  th[20] = 1;
  th[21] = 1;
  th[22] = 8;
  th[23] = 10;
  for (size_t i = 0; i < payload; i++) p[52 + i] = static_cast<uint8_t>(i * 7 + 3);
  uint16_t c = InternetChecksum(p.data(), 20);
  p[10] = static_cast<uint8_t>(c >> 8);
  p[11] = static_cast<uint8_t>(c);
  SetTcp4Checksum(p.data(), p.size());
  return p;
}

// True when the TCP checksum of `p` verifies.
bool TcpValid(const uint8_t* p, size_t len) {
  std::vector<uint8_t> q(p, p + len);
  uint16_t got = static_cast<uint16_t>((q[36] << 8) | q[37]);
  SetTcp4Checksum(q.data(), q.size());
  return got == static_cast<uint16_t>((q[36] << 8) | q[37]);
}

void TestOffload() {
  // A 10,000-byte super-packet with PSH|ACK, cut at MSS 1400.
  auto super = Tcp4(10000, 0x18, 1000);
  std::vector<uint8_t> out(20000);
  size_t seg_len = 0;
  size_t total = SegmentTcp4(super.data(), super.size(), 1400, out.data(), out.size(), &seg_len);
  CHECK(seg_len == 52 + 1400);
  CHECK(total == 8 * 52 + 10000);
  TcpCoalescer co;
  size_t off = 0;
  for (int i = 0; off < total; i++) {
    size_t len = static_cast<size_t>((out[off + 2] << 8) | out[off + 3]);
    CHECK(InternetChecksum(&out[off], 20) == 0);
    CHECK(TcpValid(&out[off], len));
    uint32_t seq = (static_cast<uint32_t>(out[off + 24]) << 24) | (out[off + 25] << 16) | (out[off + 26] << 8) | out[off + 27];
    CHECK(seq == 1000u + static_cast<uint32_t>(i) * 1400u);
    bool last = off + len == total;
    CHECK(((out[off + 33] & 0x08) != 0) == last);  // PSH only on the last segment
    co.Add(&out[off], len);
    off += len;
  }
  // Coalescing gives back one super-packet equal to the original once its checksum is completed.
  const auto& merged = co.Finish();
  CHECK(merged.size() == 1);
  if (merged.size() == 1) {
    const auto& m = merged[0];
    CHECK(m.hdr.gso_type == kGsoTcpV4 && m.hdr.gso_size == 1400 && m.hdr.flags == kVnetNeedsCsum);
    CHECK(m.len == super.size());
    std::vector<uint8_t> full(m.data, m.data + m.len);
    CHECK(CompleteChecksum(full.data(), full.size(), m.hdr.csum_start, m.hdr.csum_offset));
    CHECK(std::memcmp(full.data() + 20, super.data() + 20, super.size() - 20) == 0);
  }
  // Segments of another flow, or out of order, are not merged.
  TcpCoalescer co2;
  auto a = Tcp4(1000, 0x10, 1);
  auto b = Tcp4(1000, 0x10, 5000);  // a gap
  auto syn = Tcp4(0, 0x02, 9);
  co2.Add(a.data(), a.size());
  co2.Add(b.data(), b.size());
  co2.Add(syn.data(), syn.size());
  const auto& separate = co2.Finish();
  CHECK(separate.size() == 3);
  for (const auto& o : separate) CHECK(o.hdr.gso_type == kGsoNone);
  // Garbage never segments.
  uint8_t junk[64] = {0x45};
  CHECK(SegmentTcp4(junk, sizeof junk, 1400, out.data(), out.size(), &seg_len) == 0);
  CHECK(SegmentTcp4(super.data(), super.size(), 1400, out.data(), 100, &seg_len) == 0);
}

int UdpSocket(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void TestUdpRelay() {
  IoLoop loop;
  UdpRelay relay(&loop);
  loop.Start([&relay](uint64_t now) { relay.Tick(now); }, 50);
  uint16_t ep_port = 0, svc_port = 0, cl_port = 0;
  int ep = UdpSocket(&ep_port);
  int svc = UdpSocket(&svc_port);
  int one = 1;
  setsockopt(svc, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
  fcntl(svc, F_SETFL, O_NONBLOCK);
  int cl = UdpSocket(&cl_port);
  UdpTarget t{};
  auto* a = reinterpret_cast<sockaddr_in*>(&t.addr);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons(ep_port);
  t.len = sizeof(sockaddr_in);
  t.key = "127.0.0.1:" + std::to_string(ep_port);
  loop.Post([&relay, svc, t] { relay.AddListener(1, svc, AF_INET, 200); relay.SetEndpoints(1, {t}, 0); });
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(svc_port);
  for (int i = 0; i < 50; i++) {
    CHECK(sendto(cl, "hi", 2, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == 2);
    char buf[16];
    sockaddr_in from{};
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(ep, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
    CHECK(n == 2);
    CHECK(sendto(ep, "yo", 2, 0, reinterpret_cast<sockaddr*>(&from), fl) == 2);
    n = recv(cl, buf, sizeof buf, 0);
    CHECK(n == 2 && std::memcmp(buf, "yo", 2) == 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the flow idles out
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::vector<UdpListenerStats> stats;
  loop.Post([&] {
    stats = relay.Stats();
    std::lock_guard<std::mutex> lock(m);
    done = true;
    cv.notify_one();
  });
  {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done; });
  }
  CHECK(stats.size() == 1 && stats[0].datagrams_in == 50 && stats[0].datagrams_out == 50);
  CHECK(stats[0].flows_created == 1 && stats[0].flows_active == 0);
  loop.Post([&relay] { relay.CloseAll(); });
  loop.Stop();
  close(ep);
  close(cl);
}

// The udp backend's forwarder without a device: a datagram socketpair stands in for the TUN
// (one message per packet, as a TUN read gives), loopback UDP for the network.
struct FwdHarness {
  IoLoop loop;
  int tun_test = -1;  // the test's end: write = a packet from the TUN, read = written to the TUN
  int udp = -1;
  uint16_t port = 0;
  TunForwarder* fwd = nullptr;
  FwdHarness(bool offload, const char* bind_ip) {
    int sp[2];
    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp);
    int big = 4 << 20;
    setsockopt(sp[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
    setsockopt(sp[1], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    tun_test = sp[0];
    udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, bind_ip, &a.sin_addr);
    bind(udp, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(udp, reinterpret_cast<sockaddr*>(&a), &len);
    port = a.sin_port;
    fwd = new TunForwarder(&loop, sp[1], udp, port, htonl(0x0a010001), offload);
    loop.Start([](uint64_t) {}, 50);
  }
  ~FwdHarness() {
    loop.Stop();
    delete fwd;
    close(tun_test);
  }
  void Run(std::function<void()> f) {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    loop.Post([&] {
      f();
      std::lock_guard<std::mutex> lock(m);
      done = true;
      cv.notify_one();
    });
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done; });
  }
  bool WaitFor(std::function<bool()> cond) {
    for (int i = 0; i < 300 && !cond(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return cond();
  }
};

TunRoute Route(const char* net, int plen, const char* gw) {
  TunRoute r{};
  inet_pton(AF_INET, net, &r.net);
  inet_pton(AF_INET, gw, &r.gw);
  r.mask = htonl(plen == 0 ? 0 : ~0u << (32 - plen));
  return r;
}

std::vector<uint8_t> Packet(const char* src, const char* dst, size_t payload = 8) {
  std::vector<uint8_t> p(28 + payload, 0);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(p.size() >> 8);
  p[3] = static_cast<uint8_t>(p.size());
  p[8] = 64;
  p[9] = 17;
  inet_pton(AF_INET, src, &p[12]);
  inet_pton(AF_INET, dst, &p[16]);
  uint16_t c = InternetChecksum(p.data(), 20);
  p[10] = static_cast<uint8_t>(c >> 8);
  p[11] = static_cast<uint8_t>(c);
  return p;
}

int UdpOn(const char* ip, uint16_t port_n) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = port_n;
  inet_pton(AF_INET, ip, &a.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::perror("bind");
  timeval tv{0, 300000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  return fd;
}

size_t Drain(int fd) {
  size_t n = 0;
  char buf[65536];
  while (recv(fd, buf, sizeof buf, 0) >= 0) n++;
  return n;
}

void LeaseTableChecks() {
  LeaseTable t;
  t.Set({Route("10.244.1.0", 24, "192.0.2.1"), Route("10.244.2.0", 24, "192.0.2.2"), Route("10.244.3.0", 24, "192.0.2.2")});
  uint32_t gw = 0, a = 0, b = 0;
  inet_pton(AF_INET, "10.244.3.77", &a);
  CHECK(t.Route(a, &gw) && gw == Route("0.0.0.0", 0, "192.0.2.2").gw);
  inet_pton(AF_INET, "10.245.0.1", &b);
  CHECK(!t.Route(b, &gw));
  uint32_t n1 = Route("0.0.0.0", 0, "192.0.2.1").gw, n2 = Route("0.0.0.0", 0, "192.0.2.2").gw, n9 = Route("0.0.0.0", 0, "192.0.2.9").gw;
  CHECK(t.Check(n2, a) == LeaseTable::Verdict::kOk);  // node 2 holds two leases
  CHECK(t.Check(n1, a) == LeaseTable::Verdict::kForeignSource);
  CHECK(t.Check(n9, a) == LeaseTable::Verdict::kUnknownPeer);
  TokenBucket bucket(1000, 50);
  int ok = 0;
  for (int i = 0; i < 200; i++) ok += bucket.Take(5000);
  CHECK(ok == 50);
  CHECK(!bucket.Take(5000) && bucket.Take(5001) && !bucket.Take(5001));
  ok = 0;
  for (uint64_t ms = 6000; ms < 7000; ms++) ok += bucket.Take(ms) + bucket.Take(ms);
  CHECK(ok >= 1000 && ok <= 1051);  // the rate, plus what was saved up
}

// Item 10: only a lease's node, with sources of its own subnet, reaches the TUN.
void TestForwarderAcceptsLeasesOnly() {
  FwdHarness h(false, "127.0.0.10");
  h.Run([&] { h.fwd->SetRoutes({Route("10.1.0.0", 16, "127.0.0.11")}); h.fwd->Start(); });
  int peer = UdpOn("127.0.0.11", 0), stranger = UdpOn("127.0.0.12", 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = h.port;
  inet_pton(AF_INET, "127.0.0.10", &to.sin_addr);
  auto good = Packet("10.1.2.3", "10.0.0.1");
  auto spoofed = Packet("10.7.2.3", "10.0.0.1");
  auto send = [&](int fd, const std::vector<uint8_t>& p) {
    CHECK(sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == static_cast<ssize_t>(p.size()));
  };
  send(peer, good);
  send(peer, spoofed);
  send(stranger, good);
  send(peer, good);
  const TunStats& s = h.fwd->stats();
  CHECK(h.WaitFor([&] { return s.udp_rx.load() == 4; }));
  CHECK(s.tun_tx.load() == 2);
  CHECK(s.drop_foreign_source.load() == 1);
  CHECK(s.drop_unknown_peer.load() == 1);
  uint8_t buf[2048];
  CHECK(recv(h.tun_test, buf, sizeof buf, 0) == static_cast<ssize_t>(good.size()));
  CHECK(std::memcmp(buf + 12, good.data() + 12, 4) == 0);
  close(peer);
  close(stranger);
}

// Item 11: a failing message does not take the rest of its sendmmsg batch with it.
void TestForwarderBatchSurvivesAFailure() {
  FwdHarness h(false, "127.0.0.20");
  int node = UdpOn("127.0.0.21", h.port);
  // Packets queued before the forwarder starts are read and sent as one batch; every other one
  // goes to a broadcast address, which sendmmsg refuses (EACCES without SO_BROADCAST).
  for (int i = 0; i < 20; i++) {
    auto p = Packet("10.0.0.1", i % 2 ? "10.2.0.9" : "10.1.0.9");
    CHECK(write(h.tun_test, p.data(), p.size()) == static_cast<ssize_t>(p.size()));
  }
  h.Run([&] {
    h.fwd->SetRoutes({Route("10.1.0.0", 16, "127.0.0.21"), Route("10.2.0.0", 16, "255.255.255.255")});
    h.fwd->Start();
  });
  const TunStats& s = h.fwd->stats();
  CHECK(h.WaitFor([&] { return s.udp_tx.load() + s.send_errors.load() >= 20; }));
  CHECK(s.send_errors.load() == 10);
  CHECK(s.udp_tx.load() == 10);
  CHECK(Drain(node) == 10);
  close(node);
}

// Item 11: a super-packet of 200 segments goes out in UDP_SEGMENT sends of at most 64.
void TestForwarderGsoAtMost64() {
  FwdHarness h(true, "127.0.0.30");
  int node = UdpOn("127.0.0.31", h.port);
  auto super = Tcp4(10000, 0x10, 1);
  VnetHdr vh{};
  vh.gso_type = kGsoTcpV4;
  vh.gso_size = 50;
  vh.hdr_len = 52;
  std::vector<uint8_t> msg(sizeof vh + super.size());
  std::memcpy(msg.data(), &vh, sizeof vh);
  std::memcpy(msg.data() + sizeof vh, super.data(), super.size());
  // The super-packet's destination is 10.244.2.2.
  h.Run([&] { h.fwd->SetRoutes({Route("10.244.2.0", 24, "127.0.0.31")}); h.fwd->Start(); });
  CHECK(write(h.tun_test, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()));
  const TunStats& s = h.fwd->stats();
  CHECK(h.WaitFor([&] { return s.udp_tx.load() + s.send_errors.load() >= 200; }));
  CHECK(s.send_errors.load() == 0);
  CHECK(s.udp_tx.load() == 200);
  CHECK(Drain(node) == 200);
  GsoSend plan[8];
  size_t consumed = 0;
  CHECK(PlanGsoSends(0, 200 * 102, 102, 65000, plan, 8, &consumed) == 4 && consumed == 200 * 102);
  CHECK(plan[0].len == 64 * 102 && plan[3].len == 8 * 102 && plan[3].offset == 192 * 102);
  CHECK(PlanGsoSends(0, 200 * 102, 102, 65000, plan, 2, &consumed) == 2 && consumed == 128 * 102);
  close(node);
}

// Low: ICMP unreachables are rate-limited and the suppressed ones counted.
void TestForwarderIcmpLimit() {
  FwdHarness h(false, "127.0.0.40");
  for (int i = 0; i < 300; i++) {
    auto p = Packet("10.1.0.5", "10.9.0.9");
    CHECK(write(h.tun_test, p.data(), p.size()) == static_cast<ssize_t>(p.size()));
  }
  // One a second after a burst of 50: however slow the run (valgrind), about 50 go out.
  h.Run([&] { h.fwd->SetIcmpLimit(1, 50); h.fwd->Start(); });
  const TunStats& s = h.fwd->stats();
  CHECK(h.WaitFor([&] { return s.drop_no_route.load() == 300; }));
  CHECK(s.icmp_sent.load() >= 50 && s.icmp_sent.load() <= 53);
  CHECK(s.icmp_sent.load() + s.icmp_suppressed.load() == 300);
}

}  // namespace

int main() {
  // A relay that resets a connection must fail a CHECK, not kill the test with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  TestOffload();
  TestUdpRelay();
  TestPackets();
  TestEchoHalfClose();
  TestReset();
  TestIdleAndShutdown();
  TestManyConnections();
  TestSmallPipesSlowReader(0);
  TestSmallPipesSlowReader(16384);
  TestDuplicateId();
  TestLoopError();
  LeaseTableChecks();
  TestForwarderAcceptsLeasesOnly();
  TestForwarderBatchSurvivesAFailure();
  TestForwarderGsoAtMost64();
  TestForwarderIcmpLimit();
  if (failures) {
    std::fprintf(stderr, "native tests: %d failure(s)\n", failures);
    return 1;
  }
  std::printf("native tests: ok\n");
  return 0;
}

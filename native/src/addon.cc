// The JavaScript face of the addon: a `Relay` object owning one I/O thread. JavaScript hands it
// connected socket fds (duplicated here, so Node may close its own handles at once) and gets the
// ends of connections back in batches through a thread-safe function, never one call per packet.
#include <napi.h>
#include <unistd.h>
#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <atomic>
#include <condition_variable>
#include <string>
#include <memory>
#include <mutex>
#include <vector>

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "io-loop.h"
#include "packet.h"
#include "tcp-relay.h"
#include "tun-forwarder.h"
#include "udp-relay.h"

namespace weft {

namespace {

constexpr uint32_t kTickMs = 100;

using EventBatch = std::vector<RelayEnd>;

void DeliverBatch(Napi::Env env, Napi::Function callback, std::nullptr_t*, EventBatch* batch) {
  std::unique_ptr<EventBatch> owned(batch);
  if (env == nullptr || callback.IsEmpty()) return;
  Napi::Array arr = Napi::Array::New(env, owned->size());
  for (size_t i = 0; i < owned->size(); i++) {
    const RelayEnd& e = (*owned)[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Napi::Number::New(env, static_cast<double>(e.id)));
    o.Set("bytesAtoB", Napi::Number::New(env, static_cast<double>(e.bytes_a_to_b)));
    o.Set("bytesBtoA", Napi::Number::New(env, static_cast<double>(e.bytes_b_to_a)));
    o.Set("reason", Napi::String::New(env, EndReasonName(e.reason)));
    o.Set("errno", Napi::Number::New(env, e.err));
    arr.Set(static_cast<uint32_t>(i), o);
  }
  callback.Call({arr});
}

using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, EventBatch, DeliverBatch>;

void DeliverError(Napi::Env env, Napi::Function callback, std::nullptr_t*, std::string* msg) {
  std::unique_ptr<std::string> owned(msg);
  if (env == nullptr || callback.IsEmpty()) return;
  callback.Call({Napi::Error::New(env, *owned).Value()});
}

// An object's `onError` callback, callable from its I/O thread: the thread ending on an
// epoll_wait error is reported, not silent. Does not keep Node's event loop alive.
class ErrorSink {
 public:
  using Fn = Napi::TypedThreadSafeFunction<std::nullptr_t, std::string, DeliverError>;
  void Init(Napi::Env env, Napi::Value cb, const char* name) {
    if (!cb.IsFunction()) return;
    fn_ = Fn::New(env, cb.As<Napi::Function>(), name, 0, 1);
    fn_.Unref(env);
    live_ = true;
  }
  // Any thread; without a callback the message goes to stderr.
  void Report(const std::string& msg) {
    if (!live_ || fn_.NonBlockingCall(new std::string(msg)) != napi_ok)
      std::fprintf(stderr, "weft native: %s\n", msg.c_str());
  }
  void Release() {
    if (live_) fn_.Release();
    live_ = false;
  }

 private:
  Fn fn_;
  std::atomic<bool> live_{false};
};

// A JavaScript number as a count of milliseconds: a non-negative integer up to 2^53, kept whole
// (a 32-bit conversion would turn 2^32 + 1 ms into 1 ms). False for anything else.
bool ToMs(Napi::Value v, uint64_t* out) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace

class Relay : public Napi::ObjectWrap<Relay> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Relay",
                       {InstanceMethod("addTcp", &Relay::AddTcp), InstanceMethod("stats", &Relay::Stats),
                        InstanceMethod("close", &Relay::Close)});
  }

  explicit Relay(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Relay>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "Relay(onEvents): onEvents must be a function").ThrowAsJavaScriptException();
      return;
    }
    // Relay(onEvents, { pipeSize?, onError? }): pipeSize is for tests (one page makes every
    // short write happen); onError hears of the I/O thread stopping on an error.
    TcpRelayOptions opts;
    if (info.Length() >= 2 && info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      uint64_t pipe = 0;
      if (!o.Get("pipeSize").IsUndefined() && (!ToMs(o.Get("pipeSize"), &pipe) || pipe > (1u << 20))) {
        Napi::TypeError::New(env, "Relay: pipeSize must be an integer from 0 to 1048576").ThrowAsJavaScriptException();
        return;
      }
      opts.pipe_size = static_cast<size_t>(pipe);
      errors_.Init(env, o.Get("onError"), "weft-relay-error");
    }
    tsfn_ = Tsfn::New(env, info[0].As<Napi::Function>(), "weft-relay-events", 0, 1);
    relay_ = std::make_unique<TcpRelay>(&loop_, [this](const RelayEnd& e) { Queue(e); }, opts);
    loop_.SetErrorHandler([this](int err) {
      errors_.Report(std::string("Relay: the I/O thread stopped: epoll_wait: ") + strerror(err));
    });
    if (!loop_.Start([this](uint64_t now) { OnTick(now); }, kTickMs)) {
      int err = errno;
      tsfn_.Release();
      released_ = true;
      Napi::Error::New(env, std::string("Relay: cannot start the I/O thread: ") + strerror(err))
          .ThrowAsJavaScriptException();
      return;
    }
    open_ = true;
  }

  ~Relay() override { Shutdown(); }

 private:
  // addTcp(id, fdA, fdB, idleMs): the fds are duplicated; the caller keeps and may close its own.
  Napi::Value AddTcp(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) {
      Napi::Error::New(env, "Relay is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() ||
        !info[3].IsNumber()) {
      Napi::TypeError::New(env, "addTcp(id, fdA, fdB, idleMs): numbers expected").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    // Ids and timeouts are taken whole (up to 2^53): a 32-bit id wraps onto live connections.
    uint64_t id = 0, idle = 0;
    if (!ToMs(info[0], &id) || !ToMs(info[3], &idle)) {
      Napi::TypeError::New(env, "addTcp(id, fdA, fdB, idleMs): id and idleMs must be integers from 0 to 2^53")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int fd_a = info[1].As<Napi::Number>().Int32Value();
    int fd_b = info[2].As<Napi::Number>().Int32Value();
    int a = fcntl(fd_a, F_DUPFD_CLOEXEC, 3);
    if (a < 0) {
      Napi::Error::New(env, std::string("addTcp: fdA: ") + strerror(errno)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int b = fcntl(fd_b, F_DUPFD_CLOEXEC, 3);
    if (b < 0) {
      int err = errno;
      close(a);
      Napi::Error::New(env, std::string("addTcp: fdB: ") + strerror(err)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    added_++;
    loop_.Post([this, id, a, b, idle] { relay_->Add(id, a, b, idle); });
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("added", Napi::Number::New(env, static_cast<double>(added_.load())));
    o.Set("ended", Napi::Number::New(env, static_cast<double>(ended_.load())));
    o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes_.load())));
    o.Set("batches", Napi::Number::New(env, static_cast<double>(batches_.load())));
    return o;
  }

  // close(): ends every connection, joins the thread and releases the callback. Idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    if (open_) {
      open_ = false;
      loop_.Post([this] { relay_->CloseAll(); });
      loop_.Stop();
      Flush();
    }
    relay_.reset();
    if (!released_) {
      released_ = true;
      tsfn_.Release();
    }
    errors_.Release();
  }

  // I/O thread: collect; the batch goes out at the next tick or when it grows large.
  void Queue(const RelayEnd& e) {
    ended_++;
    bytes_ += e.bytes_a_to_b + e.bytes_b_to_a;
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(e);
    if (pending_.size() >= 256) FlushLocked();
  }

  void OnTick(uint64_t now) {
    relay_->Tick(now);
    Flush();
  }

  void Flush() {
    std::lock_guard<std::mutex> lock(mu_);
    FlushLocked();
  }

  void FlushLocked() {
    if (pending_.empty() || released_) return;
    auto* batch = new EventBatch();
    batch->swap(pending_);
    batches_++;
    if (tsfn_.NonBlockingCall(batch) != napi_ok) delete batch;
  }

  IoLoop loop_;
  std::unique_ptr<TcpRelay> relay_;
  Tsfn tsfn_;
  ErrorSink errors_;
  std::mutex mu_;
  EventBatch pending_;
  std::atomic<bool> open_{false};
  bool released_ = false;
  std::atomic<uint64_t> added_{0};
  std::atomic<uint64_t> ended_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> batches_{0};
};


namespace {

constexpr int kStats = 15;

struct StatsSnapshot {
  uint64_t v[kStats];
};

const char* const kStatNames[kStats] = {"tunRx",         "tunTx",           "udpRx",       "udpTx",
                                        "bytesOut",      "bytesIn",         "dropMalformed", "dropUnsupported",
                                        "dropNoRoute",   "dropTtl",         "icmpSent",    "sendErrors",
                                        "dropUnknownPeer", "dropForeignSource", "icmpSuppressed"};

StatsSnapshot Snapshot(const TunStats& s) {
  return StatsSnapshot{{s.tun_rx.load(), s.tun_tx.load(), s.udp_rx.load(), s.udp_tx.load(), s.bytes_out.load(),
                        s.bytes_in.load(), s.drop_malformed.load(), s.drop_unsupported.load(), s.drop_no_route.load(), s.drop_ttl.load(),
                        s.icmp_sent.load(), s.send_errors.load(), s.drop_unknown_peer.load(),
                        s.drop_foreign_source.load(), s.icmp_suppressed.load()}};
}

Napi::Object StatsObject(Napi::Env env, const StatsSnapshot& s) {
  Napi::Object o = Napi::Object::New(env);
  for (int i = 0; i < kStats; i++) o.Set(kStatNames[i], Napi::Number::New(env, static_cast<double>(s.v[i])));
  return o;
}

void DeliverStats(Napi::Env env, Napi::Function callback, std::nullptr_t*, StatsSnapshot* snap) {
  std::unique_ptr<StatsSnapshot> owned(snap);
  if (env == nullptr || callback.IsEmpty()) return;
  callback.Call({StatsObject(env, *owned)});
}

using StatsTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, StatsSnapshot, DeliverStats>;

bool ParseV4(const std::string& text, uint32_t* out) { return inet_pton(AF_INET, text.c_str(), out) == 1; }

}  // namespace

// Tun({ name, localIp, port, icmpSource }, onStats, onError?): the udp backend's forwarder. The TUN device
// is created in the network namespace of the calling process and lives as long as the object.
class Tun : public Napi::ObjectWrap<Tun> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Tun",
                       {InstanceMethod("setRoutes", &Tun::SetRoutes), InstanceMethod("stats", &Tun::Stats),
                        InstanceMethod("setIcmpSource", &Tun::SetIcmpSource), InstanceMethod("close", &Tun::Close),
                        InstanceAccessor("name", &Tun::Name, nullptr),
                        InstanceAccessor("offload", &Tun::Offload, nullptr)});
  }

  explicit Tun(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tun>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "Tun(options, onStats)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    std::string name = o.Get("name").IsString() ? o.Get("name").As<Napi::String>().Utf8Value() : "flannel0";
    std::string local = o.Get("localIp").IsString() ? o.Get("localIp").As<Napi::String>().Utf8Value() : "0.0.0.0";
    std::string icmp = o.Get("icmpSource").IsString() ? o.Get("icmpSource").As<Napi::String>().Utf8Value() : "0.0.0.0";
    uint32_t port = o.Get("port").IsNumber() ? o.Get("port").As<Napi::Number>().Uint32Value() : 8285;
    uint32_t local_addr = 0, icmp_addr = 0;
    if (name.empty() || name.size() >= IFNAMSIZ) { Fail(env, "name: must be 1 to 15 characters"); return; }
    if (!ParseV4(local, &local_addr)) { Fail(env, "localIp: not an IPv4 address"); return; }
    if (!ParseV4(icmp, &icmp_addr)) { Fail(env, "icmpSource: not an IPv4 address"); return; }
    if (port == 0 || port > 65535) { Fail(env, "port: out of range"); return; }

    bool want_offload = !o.Get("offload").IsBoolean() || o.Get("offload").As<Napi::Boolean>().Value();
    bool offload = false;
    int tun = -1;
    ifreq ifr{};
    // With IFF_VNET_HDR and TSO offered the kernel hands over whole TCP super-packets; a kernel
    // that refuses gets the plain per-packet device.
    for (int attempt = want_offload ? 0 : 1; attempt < 2 && tun < 0; attempt++) {
      tun = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
      if (tun < 0) { FailErrno(env, "open /dev/net/tun"); return; }
      std::memset(&ifr, 0, sizeof ifr);
      ifr.ifr_flags = static_cast<short>(IFF_TUN | IFF_NO_PI | (attempt == 0 ? IFF_VNET_HDR : 0));
      std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
      if (ioctl(tun, TUNSETIFF, &ifr) != 0) {
        int e = errno;
        close(tun);
        tun = -1;
        if (attempt == 1) {
          errno = e;
          FailErrno(env, "TUNSETIFF " + name);
          return;
        }
        continue;
      }
      if (attempt == 0) {
        int hdr = 10;
        unsigned off = TUN_F_CSUM | TUN_F_TSO4;
        if (ioctl(tun, TUNSETVNETHDRSZ, &hdr) != 0 || ioctl(tun, TUNSETOFFLOAD, off) != 0) {
          close(tun);
          tun = -1;
          continue;
        }
        offload = true;
      }
    }
    name_ = ifr.ifr_name;
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (udp < 0) {
      close(tun);
      { FailErrno(env, "socket"); return; }
    }
    int buf = 4 << 20;
    setsockopt(udp, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
    setsockopt(udp, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    sa.sin_addr.s_addr = local_addr;
    if (bind(udp, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      int e = errno;
      close(tun);
      close(udp);
      errno = e;
      { FailErrno(env, "bind " + local + ":" + std::to_string(port)); return; }
    }
    if (offload) {
      int one = 1;
      setsockopt(udp, SOL_UDP, UDP_GRO, &one, sizeof one);  // optional: without it datagrams come one by one
    }
    offload_ = offload;
    fwd_ = std::make_unique<TunForwarder>(&loop_, tun, udp, htons(static_cast<uint16_t>(port)), icmp_addr, offload);
    tsfn_ = StatsTsfn::New(env, info[1].As<Napi::Function>(), "weft-tun-stats", 0, 1);
    released_ = false;
    if (info.Length() >= 3) errors_.Init(env, info[2], "weft-tun-error");
    loop_.SetErrorHandler([this](int err) {
      errors_.Report(std::string("Tun: the I/O thread stopped: epoll_wait: ") + strerror(err));
    });
    if (!loop_.Start([this](uint64_t now) { OnTick(now); }, kTickMs)) {
      tsfn_.Release();
      released_ = true;
      fwd_.reset();
      { FailErrno(env, "I/O thread"); return; }
    }
    bool started = false;
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    loop_.Post([&] {
      bool ok = fwd_->Start();
      std::lock_guard<std::mutex> lock(m);
      started = ok;
      done = true;
      cv.notify_one();
    });
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done; });
    if (!started) {
      Shutdown();
      { FailErrno(env, "epoll"); return; }
    }
    open_ = true;
  }

  ~Tun() override { Shutdown(); }

 private:
  void Fail(Napi::Env env, const std::string& msg) { Napi::Error::New(env, "Tun: " + msg).ThrowAsJavaScriptException(); }
  void FailErrno(Napi::Env env, const std::string& what) { Fail(env, what + ": " + strerror(errno)); }

  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
  Napi::Value Offload(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), offload_); }

  // setRoutes([[network, prefixLength, publicIp], ...]): replaces the table.
  Napi::Value SetRoutes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_ || info.Length() < 1 || !info[0].IsArray()) {
      Fail(env, open_ ? "setRoutes(routes): an array expected" : "closed");
      return env.Undefined();
    }
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<TunRoute> routes;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsArray() || v.As<Napi::Array>().Length() != 3) {
        Fail(env, "setRoutes: route " + std::to_string(i) + " must be [network, prefixLength, publicIp]");
        return env.Undefined();
      }
      Napi::Array r = v.As<Napi::Array>();
      uint32_t net = 0, gw = 0;
      Napi::Value len = r.Get(1u);
      if (!r.Get(0u).IsString() || !ParseV4(r.Get(0u).As<Napi::String>().Utf8Value(), &net) || !len.IsNumber() ||
          len.As<Napi::Number>().Uint32Value() > 32 || !r.Get(2u).IsString() ||
          !ParseV4(r.Get(2u).As<Napi::String>().Utf8Value(), &gw)) {
        Fail(env, "setRoutes: route " + std::to_string(i) + " is not [IPv4 network, 0..32, IPv4 address]");
        return env.Undefined();
      }
      uint32_t plen = len.As<Napi::Number>().Uint32Value();
      uint32_t mask = plen == 0 ? 0 : htonl(~0u << (32 - plen));
      routes.push_back(TunRoute{net & mask, mask, gw});
    }
    loop_.Post([this, routes = std::move(routes)]() mutable { fwd_->SetRoutes(std::move(routes)); });
    return env.Undefined();
  }

  Napi::Value SetIcmpSource(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t addr = 0;
    if (!open_ || info.Length() < 1 || !info[0].IsString() || !ParseV4(info[0].As<Napi::String>().Utf8Value(), &addr)) {
      Fail(env, open_ ? "setIcmpSource(ip): an IPv4 address expected" : "closed");
      return env.Undefined();
    }
    loop_.Post([this, addr] { fwd_->SetIcmpSource(addr); });
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    if (!fwd_) return info.Env().Undefined();
    return StatsObject(info.Env(), Snapshot(fwd_->stats()));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    if (loop_.running()) loop_.Stop();
    open_ = false;
    if (!released_) {
      released_ = true;
      if (fwd_) tsfn_.NonBlockingCall(new StatsSnapshot(Snapshot(fwd_->stats())));
      tsfn_.Release();
    }
    errors_.Release();
    fwd_.reset();  // closes the TUN fd: the device goes away with it
  }

  // I/O thread: statistics go to JavaScript once a second, and only when they moved.
  void OnTick(uint64_t now) {
    if (now - last_push_ < 1000) return;
    last_push_ = now;
    StatsSnapshot s = Snapshot(fwd_->stats());
    if (std::memcmp(&s, &last_, sizeof s) == 0) return;
    last_ = s;
    tsfn_.NonBlockingCall(new StatsSnapshot(s));
  }

  IoLoop loop_;
  std::unique_ptr<TunForwarder> fwd_;
  StatsTsfn tsfn_;
  ErrorSink errors_;
  std::string name_;
  bool offload_ = false;
  bool open_ = false;
  // True until the thread-safe function exists, so that failed construction releases nothing.
  bool released_ = true;
  uint64_t last_push_ = 0;
  StatsSnapshot last_{};
};

// parseIpv4(buffer): the packet check the forwarder applies, exposed for tests.
Napi::Value ParseIpv4Js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    Napi::TypeError::New(env, "parseIpv4(buffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto b = info[0].As<Napi::Buffer<uint8_t>>();
  Ipv4Info in{};
  PacketError e = ParseIpv4(b.Data(), b.Length(), &in);
  Napi::Object o = Napi::Object::New(env);
  o.Set("error", Napi::String::New(env, PacketErrorName(e)));
  if (e == PacketError::kOk) {
    o.Set("ttl", Napi::Number::New(env, in.ttl));
    o.Set("protocol", Napi::Number::New(env, in.protocol));
    o.Set("totalLength", Napi::Number::New(env, static_cast<double>(in.total_len)));
  }
  return o;
}

namespace {

using UdpStatsBatch = std::vector<UdpListenerStats>;

Napi::Object UdpStatsObject(Napi::Env env, const UdpListenerStats& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", Napi::Number::New(env, s.id));
  o.Set("datagramsIn", Napi::Number::New(env, static_cast<double>(s.datagrams_in)));
  o.Set("datagramsOut", Napi::Number::New(env, static_cast<double>(s.datagrams_out)));
  o.Set("flowsCreated", Napi::Number::New(env, static_cast<double>(s.flows_created)));
  o.Set("flowsActive", Napi::Number::New(env, static_cast<double>(s.flows_active)));
  o.Set("dropped", Napi::Number::New(env, static_cast<double>(s.dropped)));
  o.Set("flowsEvicted", Napi::Number::New(env, static_cast<double>(s.flows_evicted)));
  o.Set("affinityEvicted", Napi::Number::New(env, static_cast<double>(s.affinity_evicted)));
  return o;
}

void DeliverUdpStats(Napi::Env env, Napi::Function callback, std::nullptr_t*, UdpStatsBatch* batch) {
  std::unique_ptr<UdpStatsBatch> owned(batch);
  if (env == nullptr || callback.IsEmpty()) return;
  Napi::Array arr = Napi::Array::New(env, owned->size());
  for (size_t i = 0; i < owned->size(); i++) arr.Set(static_cast<uint32_t>(i), UdpStatsObject(env, (*owned)[i]));
  callback.Call({arr});
}

using UdpTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, UdpStatsBatch, DeliverUdpStats>;

bool ParseEndpoint(const std::string& ip, uint32_t port, UdpTarget* t) {
  std::memset(&t->addr, 0, sizeof t->addr);
  if (port == 0 || port > 65535) return false;
  auto* a4 = reinterpret_cast<sockaddr_in*>(&t->addr);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&t->addr);
  if (inet_pton(AF_INET, ip.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    t->len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, ip.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    t->len = sizeof(sockaddr_in6);
  } else {
    return false;
  }
  t->key = ip + ":" + std::to_string(port);
  return true;
}

}  // namespace

// UdpRelay(onStats): the userspace proxier's UDP data path on one I/O thread. JavaScript binds
// service sockets through it, gives each its endpoints, and gets per-listener counters back
// once a second, in one batch.
class UdpRelayJs : public Napi::ObjectWrap<UdpRelayJs> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "UdpRelay",
                       {InstanceMethod("addListener", &UdpRelayJs::AddListener),
                        InstanceMethod("setEndpoints", &UdpRelayJs::SetEndpoints),
                        InstanceMethod("setLimits", &UdpRelayJs::SetLimits),
                        InstanceMethod("removeListener", &UdpRelayJs::RemoveListener),
                        InstanceMethod("close", &UdpRelayJs::Close)});
  }

  explicit UdpRelayJs(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UdpRelayJs>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "UdpRelay(onStats): onStats must be a function").ThrowAsJavaScriptException();
      return;
    }
    tsfn_ = UdpTsfn::New(env, info[0].As<Napi::Function>(), "weft-udp-relay-stats", 0, 1);
    released_ = false;
    relay_ = std::make_unique<UdpRelay>(&loop_);
    if (!loop_.Start([this](uint64_t now) { OnTick(now); }, 100)) {
      int err = errno;
      Shutdown();
      Napi::Error::New(env, std::string("UdpRelay: cannot start the I/O thread: ") + strerror(err))
          .ThrowAsJavaScriptException();
      return;
    }
    open_ = true;
  }

  ~UdpRelayJs() override { Shutdown(); }

 private:
  void Throw(Napi::Env env, const std::string& msg) { Napi::Error::New(env, "UdpRelay: " + msg).ThrowAsJavaScriptException(); }

  // addListener(id, bindIp, port, idleMs) → the bound port.
  Napi::Value AddListener(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) return Throw(env, "closed"), env.Undefined();
    if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber() || !info[3].IsNumber())
      return Throw(env, "addListener(id, bindIp, port, idleMs)"), env.Undefined();
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    UdpTarget bind{};
    uint32_t port = info[2].As<Napi::Number>().Uint32Value();
    std::string ip = info[1].As<Napi::String>().Utf8Value();
    // Port 0 asks the kernel for one; ParseEndpoint wants a real port, so parse with 1 and reset.
    if (!ParseEndpoint(ip, 1, &bind) || port > 65535) return Throw(env, "bad bind address " + ip), env.Undefined();
    int family = bind.addr.ss_family;
    if (family == AF_INET)
      reinterpret_cast<sockaddr_in*>(&bind.addr)->sin_port = htons(static_cast<uint16_t>(port));
    else
      reinterpret_cast<sockaddr_in6*>(&bind.addr)->sin6_port = htons(static_cast<uint16_t>(port));
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Throw(env, std::string("socket: ") + strerror(errno)), env.Undefined();
    int one = 1;
    if (family == AF_INET) {
      setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    } else {
      setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    int buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (bind_socket(fd, bind) != 0) {
      int e = errno;
      close(fd);
      return Throw(env, "bind " + ip + ":" + std::to_string(port) + ": " + strerror(e)), env.Undefined();
    }
    sockaddr_storage got{};
    socklen_t len = sizeof got;
    getsockname(fd, reinterpret_cast<sockaddr*>(&got), &len);
    uint16_t bound = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&got)->sin_port
                                             : reinterpret_cast<sockaddr_in6*>(&got)->sin6_port);
    uint32_t idle = info[3].As<Napi::Number>().Uint32Value();
    loop_.Post([this, id, fd, family, idle] { relay_->AddListener(id, fd, family, idle); });
    return Napi::Number::New(env, bound);
  }

  // setEndpoints(id, [[ip, port], ...], affinitySeconds): in the order to take them.
  Napi::Value SetEndpoints(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) return Throw(env, "closed"), env.Undefined();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsArray() || !info[2].IsNumber())
      return Throw(env, "setEndpoints(id, endpoints, affinitySeconds)"), env.Undefined();
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    Napi::Array arr = info[1].As<Napi::Array>();
    std::vector<UdpTarget> targets;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      UdpTarget t{};
      if (!v.IsArray() || v.As<Napi::Array>().Length() != 2 || !v.As<Napi::Array>().Get(0u).IsString() ||
          !v.As<Napi::Array>().Get(1u).IsNumber() ||
          !ParseEndpoint(v.As<Napi::Array>().Get(0u).As<Napi::String>().Utf8Value(),
                         v.As<Napi::Array>().Get(1u).As<Napi::Number>().Uint32Value(), &t))
        return Throw(env, "setEndpoints: endpoint " + std::to_string(i) + " is not [ip, port]"), env.Undefined();
      targets.push_back(std::move(t));
    }
    uint32_t affinity = info[2].As<Napi::Number>().Uint32Value();
    loop_.Post([this, id, targets = std::move(targets), affinity]() mutable {
      relay_->SetEndpoints(id, std::move(targets), affinity);
    });
    return env.Undefined();
  }

  // setLimits(maxFlows, maxFlowsPerListener, maxAffinityEntries); 0 = unbounded.
  Napi::Value SetLimits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) return Throw(env, "closed"), env.Undefined();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber())
      return Throw(env, "setLimits(maxFlows, maxFlowsPerListener, maxAffinityEntries)"), env.Undefined();
    auto count = [](const Napi::Value& v) {
      double d = v.As<Napi::Number>().DoubleValue();
      return d >= 1 && d < 9e15 ? static_cast<uint64_t>(d) : uint64_t{0};
    };
    uint64_t flows = count(info[0]), per = count(info[1]), affinity = count(info[2]);
    loop_.Post([this, flows, per, affinity] { relay_->SetLimits(flows, per, affinity); });
    return env.Undefined();
  }

  Napi::Value RemoveListener(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_ || info.Length() < 1 || !info[0].IsNumber()) return env.Undefined();
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    loop_.Post([this, id] { relay_->RemoveListener(id); });
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  static int bind_socket(int fd, const UdpTarget& t) {
    return bind(fd, reinterpret_cast<const sockaddr*>(&t.addr), t.len);
  }

  void Shutdown() {
    if (loop_.running()) {
      loop_.Post([this] { relay_->CloseAll(); });
      loop_.Stop();
    }
    open_ = false;
    relay_.reset();
    if (!released_) {
      released_ = true;
      tsfn_.Release();
    }
  }

  void OnTick(uint64_t now) {
    relay_->Tick(now);
    if (now - last_push_ < 1000) return;
    last_push_ = now;
    auto stats = relay_->Stats();
    if (!stats.empty()) tsfn_.NonBlockingCall(new UdpStatsBatch(std::move(stats)));
  }

  IoLoop loop_;
  std::unique_ptr<UdpRelay> relay_;
  UdpTsfn tsfn_;
  bool open_ = false;
  bool released_ = true;
  uint64_t last_push_ = 0;
};

// SO_RCVBUFFORCE on a socket another library opened (the netlink package offers only SO_RCVBUF,
// which rmem_max caps): with CAP_NET_ADMIN the kernel grants the size asked for. Returns the
// size the kernel reports afterwards; throws with the errno's text when it refuses (EPERM
// without the capability), so the caller can keep what SO_RCVBUF gave.
Napi::Value ForceRecvBufferJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "forceRecvBuffer(fd, bytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t want = info[1].As<Napi::Number>().Int64Value();
  if (fd < 0 || want <= 0 || want > (1LL << 30)) {
    Napi::RangeError::New(env, "forceRecvBuffer: fd >= 0 and 0 < bytes <= 1 GiB").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int bytes = static_cast<int>(want);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
    Napi::Error::New(env, std::string("SO_RCVBUFFORCE: ") + strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int got = 0;
  socklen_t len = sizeof got;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) != 0) got = 0;
  return Napi::Number::New(env, got);
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  exports.Set("Relay", Relay::Init(env));
  exports.Set("Tun", Tun::Init(env));
  exports.Set("UdpRelay", UdpRelayJs::Init(env));
  exports.Set("parseIpv4", Napi::Function::New(env, ParseIpv4Js, "parseIpv4"));
  exports.Set("forceRecvBuffer", Napi::Function::New(env, ForceRecvBufferJs, "forceRecvBuffer"));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

NODE_API_MODULE(weft_native, InitAll)

}  // namespace weft

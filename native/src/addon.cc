// The JavaScript face of the addon: a `Relay` object owning one I/O thread. JavaScript hands it
// connected socket fds (duplicated here, so Node may close its own handles at once) and gets the
// ends of connections back in batches through a thread-safe function, never one call per packet.
#include <napi.h>
#include <unistd.h>
#include <fcntl.h>

#include <cstring>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "io-loop.h"
#include "tcp-relay.h"

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
    o.Set("id", Napi::Number::New(env, e.id));
    o.Set("bytesAtoB", Napi::Number::New(env, static_cast<double>(e.bytes_a_to_b)));
    o.Set("bytesBtoA", Napi::Number::New(env, static_cast<double>(e.bytes_b_to_a)));
    o.Set("reason", Napi::String::New(env, EndReasonName(e.reason)));
    o.Set("errno", Napi::Number::New(env, e.err));
    arr.Set(static_cast<uint32_t>(i), o);
  }
  callback.Call({arr});
}

using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, EventBatch, DeliverBatch>;

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
    tsfn_ = Tsfn::New(env, info[0].As<Napi::Function>(), "weft-relay-events", 0, 1);
    relay_ = std::make_unique<TcpRelay>(&loop_, [this](const RelayEnd& e) { Queue(e); });
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
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    int fd_a = info[1].As<Napi::Number>().Int32Value();
    int fd_b = info[2].As<Napi::Number>().Int32Value();
    uint32_t idle = info[3].As<Napi::Number>().Uint32Value();
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
  std::mutex mu_;
  EventBatch pending_;
  std::atomic<bool> open_{false};
  bool released_ = false;
  std::atomic<uint64_t> added_{0};
  std::atomic<uint64_t> ended_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> batches_{0};
};

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  exports.Set("Relay", Relay::Init(env));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

NODE_API_MODULE(weft_native, InitAll)

}  // namespace weft

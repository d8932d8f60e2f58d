#pragma once
/// Whether a JetStream stream can store what is published to it, asked while the reader is
/// quiet. A consumer keeps answering pull requests (empty) while its stream elects a leader on
/// a cluster (their leaders are elected apart), so an empty fetch does not tell idle vehicles
/// from a stream that stores nothing; vehicles that keep what the stream has not acknowledged
/// send it once a leader is elected, and a window join that took the quiet for idle vehicles
/// would have closed those windows (docs/semantics.md, "Catching up"). While nothing stored in
/// the last `quiet_ms` is delivered (nothing at all, or only what was stored before: a backlog,
/// which consumers on the other nodes keep delivering while the stream elects its leader), a
/// thread of its own asks the stream every `quiet_ms` (at most 1 s each) whether it has a
/// leader; the reader holds input back until it answered yes.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "jetstream.hpp"

namespace fleetflow {

class StreamWatch {
 public:
  /// `js` must outlive the watch; `node` names the source in logs.
  StreamWatch(nats::JetStream& js, std::string stream, std::string node, int quiet_ms);
  /// Stop().
  ~StreamWatch();
  StreamWatch(const StreamWatch&) = delete;
  StreamWatch& operator=(const StreamWatch&) = delete;

  void Start();
  /// Ends the thread; idempotent.
  void Stop();

  /// Messages were delivered at `now_ns` (steady clock), the newest of them stored at
  /// `stored_ns` (the server's wall clock): the stream is not quiet if that was within quiet_ms.
  void Delivered(int64_t now_ns, int64_t stored_ns) {
    delivered_ns_ = now_ns;
    if (stored_ns > stored_ns_.load()) stored_ns_ = stored_ns;
  }
  /// Quiet, and the stream has not said within the last 3 × quiet_ms (at least 1.5 s) that it
  /// has a leader: what it stores meanwhile is unknown. Thread-safe.
  bool Unconfirmed(int64_t now_ns) const;
  /// The stream's last answer was none, an error, or no leader; asked again every quiet_ms
  /// until it answers with one, whatever is delivered meanwhile (a consumer may deliver again
  /// what it had before: that is no sign that the stream stores). Thread-safe.
  bool Unavailable() const;

 private:
  /// Nothing delivered for quiet_ms, or nothing stored in the last quiet_ms.
  bool Quiet(int64_t now_ns) const;
  void Loop();
  void Ask();

  nats::JetStream& js_;
  const std::string stream_;
  const std::string node_;
  const int64_t quiet_ns_;
  std::atomic<int64_t> delivered_ns_;
  std::atomic<int64_t> stored_ns_{0};     // wall: the newest stored time delivered
  std::atomic<int64_t> confirmed_ns_{0};  // steady: the stream's last answer with a leader
  std::atomic<bool> unavailable_{false};
  int64_t unavailable_since_ns_ = 0;  // the thread's, for the log
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // under mu_
};

}  // namespace fleetflow

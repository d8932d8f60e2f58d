#pragma once
/// Whether the stream has everything its edge leaf nodes stored (docs/deploy.md, "Edge leaf
/// nodes"). An edge (a depot's or a vehicle's nats-server in a JetStream domain of its own)
/// stores what its vehicles publish while its link to the hub is down; the hub's stream sources
/// it and stores it, in order, once the link is back. Meanwhile the hub stores nothing of those
/// vehicles, so the quiet is no sign of idle vehicles, and the gap in stored times is no idle
/// time: the source is cut off (Operator::CutOffFromInput) until the hub has caught up.
///
/// The hub reports each source in its stream info: `active`, the time since the source last
/// sent anything (its consumer on the edge sends a heartbeat every second, so a source that is
/// connected is never quiet for long), and `lag`, the messages still at the edge as of the
/// last one it sent. While the link is down the hub tries to create the source's consumer
/// again every 10 s, and each try makes `active` start from 0 again without anything coming:
/// so a source counts as caught up only once its contacts advance (two of them, at least
/// 100 ms apart), each answer fresh (`active` at most 1.25 s), with no error and a live-sized
/// lag, for 2 s in a row. An edge behind for longer than the maximum hold is given up (logged;
/// its backlog comes late), so one depot that stays away holds no rows back for ever.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "jetstream.hpp"
#include "metrics.hpp"

namespace fleetflow {

/// One edge as the hub reports it, answer by answer: the decision, without threads or servers.
class EdgeProgress {
 public:
  static constexpr int64_t kFreshNs = 1'250'000'000;  // heartbeats come every second
  static constexpr int64_t kDistinctNs = 100'000'000;
  static constexpr int64_t kSettleNs = 2'000'000'000;
  /// A lag this small is live traffic (each message sent as it is stored), not a backlog.
  static constexpr uint64_t kLiveLag = 1000;

  /// `max_hold_ns`: how long the edge may hold windows back at most (0: for ever). Behind from
  /// `now_ns` until an answer says otherwise.
  EdgeProgress(int64_t max_hold_ns, int64_t now_ns);

  /// The hub's answer at `now_ns` (steady clock): the source's state, or nullptr when the
  /// stream did not answer or does not report the source.
  void Observe(int64_t now_ns, const nats::StreamSourceState* state);
  /// The hub may lack what the edge stored, and the edge was not given up.
  bool Behind(int64_t now_ns) const;
  /// Behind for longer than the maximum hold: no longer holds anything back.
  bool GivenUp(int64_t now_ns) const;
  /// Caught up (the last answers say the hub has what the edge stored).
  bool CaughtUp() const { return caught_up_; }
  /// Since when it is behind (meaningful while !CaughtUp()).
  int64_t behind_since_ns() const { return behind_since_ns_; }

 private:
  const int64_t max_hold_ns_;
  bool caught_up_ = false;
  int64_t behind_since_ns_;
  std::optional<int64_t> live_since_ns_;  // the current run of healthy answers began
  std::optional<int64_t> contact_ns_;     // the run's latest contact (now - active)
  int contacts_ = 0;                      // distinct contacts in the run
};

/// Asks the hub's stream for its edge sources every 250 ms, on a thread of its own.
class EdgeWatch {
 public:
  struct Edge {
    std::string domain;  // for logs
    nats::StreamSource source;
  };
  /// `js` must outlive the watch; `node` names the source in logs; `max_hold_ms` 0: for ever.
  EdgeWatch(nats::JetStream& js, std::string stream, std::vector<Edge> edges, std::string node,
            int64_t max_hold_ms, Metrics& metrics, const Labels& labels);
  /// Stop().
  ~EdgeWatch();
  EdgeWatch(const EdgeWatch&) = delete;
  EdgeWatch& operator=(const EdgeWatch&) = delete;

  void Start();
  /// Ends the thread; idempotent.
  void Stop();
  /// Some edge is behind and not given up. Thread-safe.
  bool Behind() const { return behind_.load(); }

  static constexpr int kPollMs = 250;

 private:
  void Loop();
  void Ask();

  nats::JetStream& js_;
  const std::string stream_;
  const std::vector<Edge> edges_;
  const std::string node_;
  std::vector<EdgeProgress> progress_;  // the thread's
  std::vector<bool> reported_behind_;   // the thread's, for the log
  std::vector<bool> reported_given_up_;
  std::atomic<bool> behind_{true};
  Gauge& behind_gauge_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // under mu_
};

/// Makes `stream` source every edge: adds the sources it lacks (`create`), or throws naming the
/// edges it does not source.
void SettleEdgeSources(nats::JetStream& js, const std::string& stream,
                       const std::vector<EdgeWatch::Edge>& edges, bool create,
                       const std::string& node);

}  // namespace fleetflow

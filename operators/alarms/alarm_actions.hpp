#pragma once
/// What a `rule` node does with its alarm events (docs/alarms.md), in their order:
///  1. the event on `<subject_prefix>.<vehicle>.<rule>` in JetStream stream `stream` (created
///     when missing), header Nats-Msg-Id `<vehicle>.<rule>.<raised_ns>.<raised|cleared>`, so an
///     event evaluated again (a worker killed before it stored its state) is stored once; with
///     no stream, on core NATS (at most once);
///  2. its row in `table` (PostgreSQL): one row per alarm (vehicle_id, rule, raised), cleared
///     filled in by the clear, written idempotently;
///  3. to the vehicle: the event on vehicle.<id>.cmd.alarm and the rule's command on
///     vehicle.<id>.cmd.<verb>: core NATS, at most once (a vehicle offline misses them; the
///     firmware counts one it got twice as a duplicate).
/// 1 and 2 are retried until they succeed (the events wait, in order); Flush() says when every
/// event is done, which is when the rule may store the state that follows them.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "message.hpp"
#include "metrics.hpp"
#include "nats_config.hpp"

namespace fleetflow::alarms {

struct AlarmActionsOptions {
  NatsClientOptions nats;
  std::string subject_prefix = "alarm";
  std::string stream = "ALARMS";  ///< empty: core NATS
  int64_t stream_max_age_ms = 0;
  int64_t stream_replicas = 1;
  int64_t duplicate_window_ms = 3'600'000;
  int64_t publish_timeout_ms = 5000;
  bool notify_vehicle = true;
  std::string conninfo;  ///< PostgreSQL (libpq's environment when empty)
  std::string table;     ///< empty: no table
};

class AlarmActions {
 public:
  AlarmActions(AlarmActionsOptions options, const std::string& node, Metrics& metrics,
               const Labels& labels);
  ~AlarmActions();

  void Add(std::vector<AlarmEvent> events);
  /// Carries out the events waiting; true when none waits. After a failure, the next attempt
  /// waits (100 ms doubling up to 5 s) unless `force`.
  bool Flush(bool force);
  size_t pending() const { return pending_.size(); }

  /// The table's CREATE statement.
  static std::string CreateTableSql(const std::string& table);

 private:
  struct Pending {
    AlarmEvent event;
    bool stored = false;  // in the stream
  };
  void Connect();
  void Store(Pending& p);
  void WriteTable(size_t n);
  void Tell(const AlarmEvent& e);

  const AlarmActionsOptions o_;
  const std::string node_;
  std::deque<Pending> pending_;
  Counter& published_;
  Counter& table_rows_;
  Counter& told_;
  Counter& failures_;
  struct Clients;
  std::unique_ptr<Clients> clients_;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{100};
};

}  // namespace fleetflow::alarms

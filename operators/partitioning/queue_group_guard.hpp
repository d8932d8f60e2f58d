#pragma once
/// One reader per core queue group. Core NATS shares a queue group's messages among its members
/// message by message: with two workers, each would join about half of every vehicle's samples,
/// and both would upsert rows of wrong values under the same keys. Several workers need the
/// partitioned JetStream source (pipelines/jetstream.json), which gives each a whole share of
/// the vehicles. So a core source claims its queue group at start: it asks on kSubject whether
/// a worker already reads the group, and refuses to start when one answers; meanwhile it answers
/// those asks itself, for as long as it runs.

#include <memory>
#include <string>
#include <string_view>

#include "nats_client.hpp"

namespace fleetflow {

class QueueGroupGuard {
 public:
  /// Where the workers of every core queue group ask and answer (the group and subject are in
  /// the ask): the engine's NATS user needs to publish and subscribe there.
  static constexpr std::string_view kSubject = "fleetflow.queue_group";

  /// `node`: the source's node id; the answers name it with this host and process.
  /// `conn` must outlive the guard.
  QueueGroupGuard(nats::Connection& conn, std::string group, std::string subject,
                  const std::string& node);
  ~QueueGroupGuard();

  /// Starts answering, then asks and waits `wait_ms` for answers. Throws std::runtime_error
  /// naming the worker that reads the group already, and what to use instead; when the server
  /// refuses kSubject to this user, only warns (the group is not guarded).
  void Claim(int wait_ms);

 private:
  /// The ask's payload: "<group>\n<subject>\n<this guard's token>".
  std::string Ask() const;

  nats::Connection& conn_;
  const std::string group_, subject_, who_, token_;
  std::unique_ptr<nats::Subscription> answering_;
};

}  // namespace fleetflow

#pragma once
/// Turns one NATS message (subject + payload, per the wire contract in schemas/wire.hpp) into what
/// a source emits: a SampleBatch, a StatusEvent, or nothing when it is bad input. Shared by
/// nats_source and replay_source, so a replay decodes, validates and counts exactly as the live
/// source did. Counts messages_in, samples_in, status_in and input_rejected{reason} under the
/// node's labels; logs rejects with a rate limit. Thread-safe.

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "operator.hpp"

namespace fleetflow {

class WireInput {
 public:
  enum class Outcome {
    kEmit,            // `out` holds the message to emit
    kRejected,        // the whole message was bad input
    kNothingLeft,     // a sample message whose every sample was rejected
  };

  /// `max_future_ns`: samples more than this ahead of `now_ns` are rejected (future_timestamp).
  WireInput(const OperatorContext& ctx, int64_t max_future_ns);

  /// Decodes one message received at `now_ns` (engine clock). A StatusEvent is stamped with
  /// `now_ns`; a SampleBatch gets `received_ns = now_ns`.
  Outcome Decode(std::string_view subject, const void* data, size_t size, int64_t now_ns,
                 std::optional<Body>& out);

 private:
  void Reject(const std::string& reason, std::string_view subject);

  const std::string id_;
  const int64_t max_future_ns_;
  Metrics& metrics_;
  const Labels labels_;
  Counter& messages_;
  Counter& samples_;
  Counter& status_;
  std::mutex reject_mu_;
  std::map<std::string, Counter*> rejected_;
};

}  // namespace fleetflow

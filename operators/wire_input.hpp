#pragma once
/// Turns one NATS message (subject + payload, per the wire contract in schemas/wire.hpp) into what
/// a source emits: a SampleBatch, a StatusEvent, or nothing when it is bad input. Shared by
/// nats_source and replay_source, so a replay decodes, validates and counts exactly as the live
/// source did. Counts messages_in, samples_in, status_in and input_rejected{reason} under the
/// node's labels; logs rejects with a rate limit. Thread-safe.
///
/// Reject reasons (metric label, dead-letter subject token):
///   bad_subject, bad_status, empty, oversize, bad_identifier, malformed, unknown_sensor
///     (the whole message);
///   bad_timestamp, future_timestamp, past_timestamp, bad_position, non_finite_value
///     (one sample; the message's other samples go on).

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "operator.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace fleetflow {

/// The validation settings every source shares.
struct WireInputOptions {
  int64_t max_future_ms = 0;
  int64_t max_past_ms = 0;  ///< 0: no limit
  size_t max_payload_bytes = 0;
  std::vector<std::string> sensors;  ///< empty: any
  std::vector<std::string> position_sensors;
};

/// The spec of max_future_ms, max_past_ms, max_payload_bytes, sensors, position_sensors; a
/// source takes them in with OptionsSpec::Include.
const OptionsSpec<WireInputOptions>& WireInputSpec();

/// Sets the facts (NodeFacts::sensors, position_sensors) of a source that reads with `options`.
void SetWireInputFacts(const WireInputOptions& options, NodeFacts& facts);

/// The names of WireInputSpec()'s fields (to carry them from one source's config to another's).
const std::vector<std::string>& WireInputFieldNames();

/// A partitioned subject `<prefix>.<n>.<vehicle>.<sensor>` (the NATS server's partition mapping)
/// as the vehicle's own, `vehicle.<vehicle>.<sensor>`, built in `buf`; any other subject as it is.
std::string_view UnmapPartitioned(std::string_view subject, std::string_view prefix,
                                  std::string& buf);

/// One reason a message, or some of its samples, was rejected.
struct InputReject {
  std::string reason;
  size_t samples = 0;  // samples rejected for this reason; 0: the whole message
};

class WireInput {
 public:
  enum class Outcome {
    kEmit,         // `out` holds the message to emit
    kRejected,     // the whole message was bad input
    kNothingLeft,  // a sample message whose every sample was rejected
  };

  /// Validates as `options` say; counts under ctx's node.
  WireInput(const OperatorContext& ctx, const WireInputOptions& options);
  /// The same, with the settings of WireInputSpec() read from ctx.config (the fuzzers build one
  /// from any source's config).
  explicit WireInput(const OperatorContext& ctx);

  /// Decodes one message received at `now_ns` (engine clock). A StatusEvent is stamped with
  /// `now_ns`; a SampleBatch gets `received_ns = now_ns`. The body is built in place in the
  /// allocation that becomes the emitted Message (still mutable: a source may add its ack).
  /// When `rejects` is given it is overwritten with what was rejected, one entry per reason.
  Outcome Decode(std::string_view subject, const void* data, size_t size, int64_t now_ns,
                 std::shared_ptr<Body>& out, std::vector<InputReject>* rejects = nullptr);

 private:
  void Count(const std::string& reason, size_t n, std::string_view subject);

  const std::string id_;
  const int64_t max_future_ns_;
  const int64_t max_past_ns_;  // 0: no limit
  const size_t max_payload_bytes_;
  /// Looked up by the subject's view of the name: no string per message.
  struct NameHash : std::hash<std::string_view> {
    using is_transparent = void;
  };
  const std::unordered_set<std::string, NameHash, std::equal_to<>> sensors_;  // empty: any
  const std::unordered_set<std::string, NameHash, std::equal_to<>> position_sensors_;
  Metrics& metrics_;
  const Labels labels_;
  Counter& messages_;
  Counter& samples_;
  Counter& status_;
  std::mutex reject_mu_;
  std::map<std::string, Counter*> rejected_;
};

}  // namespace fleetflow

#pragma once
/// Dead-lettering of bad input for nats_source: a rejected message is published, unchanged, to
/// <prefix>.<reason>.<original subject> with the reason in the Fleetflow-Reject-Reason header
/// (and, when only some samples were bad, their number in Fleetflow-Rejected-Samples).
///
/// With JetStream delivery the dead letter goes to a stream (created on <prefix>.> when missing
/// and the source creates streams) and the server's acknowledgement is awaited, so the original
/// message is terminated only once its dead letter is stored: nothing acknowledged is lost.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "jetstream.hpp"
#include "nats_client.hpp"
#include "operator.hpp"
#include "options.hpp"
#include "wire_input.hpp"

namespace fleetflow {

inline constexpr char kRejectReasonHeader[] = "Fleetflow-Reject-Reason";
inline constexpr char kRejectedSamplesHeader[] = "Fleetflow-Rejected-Samples";

/// The dead-letter settings of a source.
struct DeadLetterOptions {
  bool enabled = false;  ///< dead_letter
  std::string prefix;    ///< dead_letter_prefix
  std::string stream;    ///< dead_letter_stream
};

/// The spec of dead_letter, dead_letter_prefix, dead_letter_stream; a source takes them in with
/// OptionsSpec::Include.
const OptionsSpec<DeadLetterOptions>& DeadLetterSpec();

class DeadLetters {
 public:
  /// Publishes as `options` say; counts under ctx's node. Disabled when `options.enabled` is
  /// false; then Publish only returns true.
  DeadLetters(const OperatorContext& ctx, const DeadLetterOptions& options);

  bool enabled() const { return enabled_; }

  /// Starts publishing on `conn`; with `js`, through JetStream (creating the dead-letter stream
  /// with `replicas` when `create_stream`).
  void Start(nats::Connection& conn, nats::JetStream* js, bool create_stream, int replicas = 1);

  /// Publishes one dead letter per reject of the message. Returns false when one could not be
  /// published (counted in dead_letter_failures); the caller must not drop the original then.
  bool Publish(std::string_view subject, const void* data, size_t size,
               const std::vector<InputReject>& rejects);

 private:
  const std::string node_;
  const bool enabled_;
  const std::string prefix_;
  const std::string stream_;
  Metrics& metrics_;
  const Labels labels_;
  Counter& failures_;
  nats::Connection* conn_ = nullptr;
  nats::JetStream* js_ = nullptr;
};

}  // namespace fleetflow

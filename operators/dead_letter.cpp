#include "dead_letter.hpp"

#include "logging.hpp"

namespace fleetflow {

const OptionsSpec<DeadLetterOptions>& DeadLetterSpec() {
  using O = DeadLetterOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Boolean("dead_letter",
              "Publish every rejected message, unchanged, to "
              "<dead_letter_prefix>.<reason>.<subject> with the reason in the "
              "Fleetflow-Reject-Reason header.",
              &O::enabled)
        .Default(false);
    c.String("dead_letter_prefix", "First token(s) of dead-letter subjects.", &O::prefix)
        .Default("deadletter");
    c.String("dead_letter_stream",
             "jetstream: the stream that stores dead letters (created on <dead_letter_prefix>.> "
             "when missing and create_stream is true). A bad message is terminated only once its "
             "dead letter is stored.",
             &O::stream)
        .Default("DEADLETTER");
  });
}

DeadLetters::DeadLetters(const OperatorContext& ctx, const DeadLetterOptions& options)
    : node_(ctx.node_id),
      enabled_(options.enabled),
      prefix_(options.prefix),
      stream_(options.stream),
      metrics_(ctx.metrics),
      labels_(ctx.labels()),
      failures_(ctx.metrics.GetCounter(
          "dead_letter_failures",
          "Dead letters that could not be published (the original is kept for redelivery).",
          labels_)) {}

void DeadLetters::Start(nats::Connection& conn, nats::JetStream* js, bool create_stream,
                        int replicas) {
  conn_ = &conn;
  js_ = js;
  if (enabled_ && js_ != nullptr && create_stream) {
    nats::StreamOptions s;
    s.name = stream_;
    s.subjects = {prefix_ + ".>"};
    s.max_age_ms = 0;  // dead letters are kept until someone deals with them
    s.replicas = replicas;
    js_->EnsureStream(s);
  }
}

bool DeadLetters::Publish(std::string_view subject, const void* data, size_t size,
                          const std::vector<InputReject>& rejects) {
  if (!enabled_ || conn_ == nullptr) return true;
  bool ok = true;
  for (const InputReject& r : rejects) {
    const std::string dl_subject = prefix_ + "." + r.reason + "." + std::string(subject);
    nats::Headers headers{{kRejectReasonHeader, r.reason}};
    if (r.samples > 0) headers.emplace_back(kRejectedSamplesHeader, std::to_string(r.samples));
    try {
      if (js_ != nullptr) {
        js_->Publish(dl_subject, data, size, headers, 5000);
      } else {
        conn_->Publish(dl_subject, data, size, headers);
      }
      Labels l = labels_;
      l.emplace_back("reason", r.reason);
      metrics_
          .GetCounter("dead_letters", "Rejected messages published to the dead-letter subject.", l)
          .Inc();
    } catch (const nats::Error& e) {
      ok = false;
      failures_.Inc();
      static RateLimitedLog log;
      log.Log(node_ + "/dead_letter", spdlog::level::err, "dead letter not published",
              {{"node", node_}, {"subject", dl_subject}, {"error", e.what()}});
    }
  }
  return ok;
}

}  // namespace fleetflow

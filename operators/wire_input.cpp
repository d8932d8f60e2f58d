#include "wire_input.hpp"

#include <cmath>

#include "logging.hpp"

namespace fleetflow {

namespace {

const char* Invalid(const wire::Point& p, int64_t horizon) {
  if (p.ts_ns <= 0) return "bad_timestamp";
  if (p.ts_ns > horizon) return "future_timestamp";
  if (p.has_position) {
    if (!std::isfinite(p.lat) || !std::isfinite(p.lon) || std::abs(p.lat) > 90 ||
        std::abs(p.lon) > 180) {
      return "bad_position";
    }
  } else if (!std::isfinite(p.value)) {
    return "non_finite_value";
  }
  return nullptr;
}

}  // namespace

WireInput::WireInput(const OperatorContext& ctx, int64_t max_future_ns)
    : id_(ctx.node_id),
      max_future_ns_(max_future_ns),
      metrics_(ctx.metrics),
      labels_(ctx.labels()),
      messages_(ctx.metrics.GetCounter("messages_in", "Messages received.", labels_)),
      samples_(ctx.metrics.GetCounter("samples_in", "Valid samples decoded.", labels_)),
      status_(ctx.metrics.GetCounter("status_in", "Vehicle status messages received.", labels_)) {}

WireInput::Outcome WireInput::Decode(std::string_view subject_text, const void* data, size_t size,
                                     int64_t now_ns, std::optional<Body>& out) {
  messages_.Inc();
  const wire::Subject subject = wire::ParseSubject(subject_text);
  if (subject.kind == wire::SubjectKind::kInvalid) {
    Reject("bad_subject", subject_text);
    return Outcome::kRejected;
  }
  if (subject.kind == wire::SubjectKind::kStatus) {
    bool on = false;
    if (!wire::ParseStatus({static_cast<const char*>(data), size}, on)) {
      Reject("bad_status", subject_text);
      return Outcome::kRejected;
    }
    status_.Inc();
    out.emplace(StatusEvent{std::string(subject.vehicle), on, now_ns});
    return Outcome::kEmit;
  }
  SampleBatch batch;
  const wire::DecodeError err = wire::DecodeBatch(data, size, batch.points);
  if (err != wire::DecodeError::kNone) {
    Reject(std::string(wire::ToString(err)), subject_text);
    return Outcome::kRejected;
  }
  const int64_t horizon = now_ns + max_future_ns_;
  std::erase_if(batch.points, [&](const wire::Point& p) {
    const char* reason = Invalid(p, horizon);
    if (reason != nullptr) Reject(reason, subject_text);
    return reason != nullptr;
  });
  if (batch.points.empty()) return Outcome::kNothingLeft;
  samples_.Inc(batch.points.size());
  batch.vehicle = subject.vehicle;
  batch.sensor = subject.sensor;
  batch.received_ns = now_ns;
  out.emplace(std::move(batch));
  return Outcome::kEmit;
}

void WireInput::Reject(const std::string& reason, std::string_view subject) {
  Counter* c;
  {
    std::lock_guard lock(reject_mu_);
    auto& slot = rejected_[reason];
    if (slot == nullptr) {
      Labels l = labels_;
      l.emplace_back("reason", reason);
      slot = &metrics_.GetCounter("input_rejected", "Messages or samples rejected, by reason.", l);
    }
    c = slot;
  }
  c->Inc();
  static RateLimitedLog reject_log;
  reject_log.Log(
      id_ + "/" + reason, spdlog::level::warn, "rejected input",
      {{"node", id_}, {"subject", subject}, {"reason", reason}, {"total", c->value()}});
}

}  // namespace fleetflow

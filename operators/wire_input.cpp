#include "wire_input.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "logging.hpp"

namespace fleetflow {

namespace {

const char* Invalid(const wire::Point& p, int64_t horizon, int64_t oldest, bool position_sensor) {
  if (p.ts_ns <= 0) return "bad_timestamp";
  if (p.ts_ns > horizon) return "future_timestamp";
  if (p.ts_ns < oldest) return "past_timestamp";
  if (position_sensor && !p.has_position) return "missing_position";
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

/// `ms` in ns, saturating: a limit too large to represent means no limit, never an overflow.
int64_t MsToNs(int64_t ms) { return ms > INT64_MAX / 1'000'000 ? INT64_MAX : ms * 1'000'000; }

/// a + b clamped to the int64 range (a replayed receive time may be anything).
int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

}  // namespace

const OptionsSpec<WireInputOptions>& WireInputSpec() {
  using O = WireInputOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Integer("max_future_ms",
              "Samples whose event time is more than this ahead of the engine clock (replay: of "
              "their recorded receive time) are rejected (reason future_timestamp).",
              &O::max_future_ms)
        .Default(int64_t{300'000})
        .Min(0);
    c.Integer("max_past_ms",
              "Samples whose event time is more than this behind the engine clock are rejected "
              "(reason past_timestamp); 0: no limit. Keep it above the longest outage a backlog "
              "may come from (the stream's max age).",
              &O::max_past_ms)
        .Default(int64_t{7 * 86'400'000LL})
        .Min(0);
    c.Integer("max_payload_bytes",
              "Messages with a larger payload are rejected whole (reason oversize).",
              &O::max_payload_bytes)
        .Default(int64_t{262'144})
        .Min(16);
    c.StringArray("sensors",
                  "Sensor names accepted; samples of other sensors are rejected (reason "
                  "unknown_sensor). Empty: every well-formed sensor name.",
                  &O::sensors)
        .DefaultJson("[]")
        .Example(R"(["speed", "soc", "torque", "gps"])");
    c.StringArray("position_sensors",
                  "Sensors whose samples carry a position (latitude, longitude) rather than a "
                  "value; a sample of one of them without a position is rejected (reason "
                  "missing_position), since every column read from it would be NULL.",
                  &O::position_sensors)
        .DefaultJson(R"(["gps"])");
  });
}

void SetWireInputFacts(const WireInputOptions& options, NodeFacts& facts) {
  if (!options.sensors.empty()) facts.sensors = options.sensors;
  facts.position_sensors = options.position_sensors;
}

const std::vector<std::string>& WireInputFieldNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const Field& f : WireInputSpec().config().fields()) out.push_back(f.name);
    return out;
  }();
  return names;
}

WireInput::WireInput(const OperatorContext& ctx, const WireInputOptions& options)
    : id_(ctx.node_id),
      max_future_ns_(MsToNs(options.max_future_ms)),
      max_past_ns_(MsToNs(options.max_past_ms)),
      max_payload_bytes_(options.max_payload_bytes),
      sensors_(options.sensors.begin(), options.sensors.end()),
      position_sensors_(options.position_sensors.begin(), options.position_sensors.end()),
      metrics_(ctx.metrics),
      labels_(ctx.labels()),
      messages_(ctx.metrics.GetCounter("messages_in", "Messages received.", labels_)),
      samples_(ctx.metrics.GetCounter("samples_in", "Valid samples decoded.", labels_)),
      status_(ctx.metrics.GetCounter("status_in", "Vehicle status messages received.", labels_)) {}

WireInput::WireInput(const OperatorContext& ctx)
    : WireInput(ctx, WireInputSpec().Parse(ctx.config)) {}

std::string_view UnmapPartitioned(std::string_view subject, std::string_view prefix,
                                  std::string& buf) {
  if (!subject.starts_with(prefix) || subject.substr(prefix.size(), 1) != ".") return subject;
  const size_t a = subject.find('.', prefix.size() + 1);
  if (a == std::string_view::npos) return subject;
  buf.assign(wire::kSubjectRoot).append(subject.substr(a));
  return buf;
}

WireInput::Outcome WireInput::Decode(std::string_view subject_text, const void* data, size_t size,
                                     int64_t now_ns, std::shared_ptr<Body>& out,
                                     std::vector<InputReject>* rejects) {
  std::vector<InputReject> local;
  std::vector<InputReject>& found = rejects != nullptr ? *rejects : local;
  found.clear();
  const auto reject_whole = [&](std::string reason) {
    Count(reason, 1, subject_text);
    found.push_back({std::move(reason), 0});
    return Outcome::kRejected;
  };
  messages_.Inc();
  const wire::Subject subject = wire::ParseSubject(subject_text);
  if (subject.kind == wire::SubjectKind::kInvalid) return reject_whole("bad_subject");
  if (size > max_payload_bytes_) return reject_whole("oversize");
  if (subject.kind == wire::SubjectKind::kStatus) {
    bool on = false;
    if (!wire::ParseStatus({static_cast<const char*>(data), size}, on)) {
      return reject_whole("bad_status");
    }
    status_.Inc();
    out = MakePerMessage<Body>(StatusEvent{std::string(subject.vehicle), on, now_ns});
    return Outcome::kEmit;
  }
  if (!sensors_.empty() && !sensors_.contains(subject.sensor)) {
    return reject_whole("unknown_sensor");
  }
  auto body = MakePerMessage<Body>(std::in_place_type<SampleBatch>);
  SampleBatch& batch = std::get<SampleBatch>(*body);
  const wire::DecodeError err = wire::DecodeBatch(data, size, batch.points);
  if (err != wire::DecodeError::kNone) return reject_whole(std::string(wire::ToString(err)));
  const int64_t horizon = SaturatingAdd(now_ns, max_future_ns_);
  const int64_t oldest = max_past_ns_ > 0 ? SaturatingAdd(now_ns, -max_past_ns_) : 0;
  const bool position_sensor = position_sensors_.contains(subject.sensor);
  std::erase_if(batch.points, [&](const wire::Point& p) {
    const char* reason = Invalid(p, horizon, oldest, position_sensor);
    if (reason == nullptr) return false;
    auto it = std::find_if(found.begin(), found.end(),
                           [&](const InputReject& r) { return r.reason == reason; });
    if (it == found.end()) it = found.insert(found.end(), InputReject{reason, 0});
    ++it->samples;
    return true;
  });
  for (const InputReject& r : found) Count(r.reason, r.samples, subject_text);
  if (batch.points.empty()) return Outcome::kNothingLeft;
  samples_.Inc(batch.points.size());
  batch.vehicle = subject.vehicle;
  batch.sensor = subject.sensor;
  batch.received_ns = now_ns;
  batch.stream_ns = now_ns;
  out = std::move(body);
  return Outcome::kEmit;
}

void WireInput::Count(const std::string& reason, size_t n, std::string_view subject) {
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
  c->Inc(n);
  static RateLimitedLog reject_log;
  reject_log.Log(id_ + "/" + reason, spdlog::level::warn, "rejected input",
                 {{"node", id_}, {"subject", subject}, {"reason", reason}, {"total", c->value()}});
}

}  // namespace fleetflow

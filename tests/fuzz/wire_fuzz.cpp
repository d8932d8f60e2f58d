// Fuzz target: the sample decoder and the validation every source applies (wire::DecodeBatch,
// wire::ParseSubject / ParseStatus, WireInput::Decode).
// Input: byte 0 = subject length n, then n subject bytes, then the payload. The whole input is
// also decoded as one payload. Invariants checked: a failed decode leaves the output unchanged,
// a decoded batch re-encodes to the same samples, and WireInput emits only valid samples.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "clock.hpp"
#include "fuzz_check.hpp"
#include "metrics.hpp"
#include "operator.hpp"
#include "wire.hpp"
#include "wire_input.hpp"

namespace {

using fleetflow::wire::Point;

bool SameDouble(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

/// What survives an encode/decode round trip: a position sample carries no value.
bool SamePoint(const Point& a, const Point& b) {
  if (a.ts_ns != b.ts_ns || a.seq != b.seq || a.has_position != b.has_position) return false;
  if (a.has_position) return SameDouble(a.lat, b.lat) && SameDouble(a.lon, b.lon);
  return SameDouble(a.value, b.value);
}

void CheckDecode(const uint8_t* data, size_t size) {
  std::vector<Point> out(1);  // a decode appends; a failed one must leave this alone
  const auto err = fleetflow::wire::DecodeBatch(data, size, out);
  FF_FUZZ_CHECK(!fleetflow::wire::ToString(err).empty());
  if (err != fleetflow::wire::DecodeError::kNone) {
    FF_FUZZ_CHECK(out.size() == 1);
    return;
  }
  const std::vector<Point> points(out.begin() + 1, out.end());
  const auto again = fleetflow::wire::EncodeBatch(points);
  std::vector<Point> back;
  FF_FUZZ_CHECK(fleetflow::wire::DecodeBatch(again.data(), again.size(), back) ==
                fleetflow::wire::DecodeError::kNone);
  FF_FUZZ_CHECK(back.size() == points.size());
  for (size_t i = 0; i < points.size(); ++i) FF_FUZZ_CHECK(SamePoint(points[i], back[i]));
}

class FixedClock final : public fleetflow::Clock {
 public:
  int64_t NowNs() const override { return kNow; }
  static constexpr int64_t kNow = 1'700'000'000'000'000'000;  // 2023-11-14
};

constexpr int64_t kMaxFutureNs = 300'000'000'000;  // max_future_ms' default

/// Decodes through `input` and checks what it emits against its settings.
void CheckWireInput(fleetflow::WireInput& input, std::string_view subject, const uint8_t* data,
                    size_t size, int64_t max_past_ns, size_t max_payload) {
  std::shared_ptr<fleetflow::Body> body;
  std::vector<fleetflow::InputReject> rejects;
  const auto outcome = input.Decode(subject, data, size, FixedClock::kNow, body, &rejects);
  FF_FUZZ_CHECK((body != nullptr) == (outcome == fleetflow::WireInput::Outcome::kEmit));
  // A whole message rejected names its reason (a batch of zero samples leaves nothing, unrejected).
  FF_FUZZ_CHECK(outcome != fleetflow::WireInput::Outcome::kRejected || rejects.size() == 1);
  for (const auto& r : rejects) FF_FUZZ_CHECK(!r.reason.empty());
  if (!body) return;
  FF_FUZZ_CHECK(size <= max_payload);
  if (const auto* batch = std::get_if<fleetflow::SampleBatch>(body.get())) {
    const auto parsed = fleetflow::wire::ParseSubject(subject);
    FF_FUZZ_CHECK(parsed.kind == fleetflow::wire::SubjectKind::kSample);
    FF_FUZZ_CHECK(batch->vehicle == parsed.vehicle && batch->sensor == parsed.sensor);
    FF_FUZZ_CHECK(!batch->points.empty());
    for (const Point& p : batch->points) {
      FF_FUZZ_CHECK(p.ts_ns > 0 && p.ts_ns <= FixedClock::kNow + kMaxFutureNs);
      FF_FUZZ_CHECK(max_past_ns == 0 || p.ts_ns >= FixedClock::kNow - max_past_ns);
      if (p.has_position) {
        FF_FUZZ_CHECK(std::abs(p.lat) <= 90 && std::abs(p.lon) <= 180);
      } else {
        FF_FUZZ_CHECK(std::isfinite(p.value));
      }
    }
  } else {
    FF_FUZZ_CHECK(std::holds_alternative<fleetflow::StatusEvent>(*body));
    FF_FUZZ_CHECK(fleetflow::wire::ParseSubject(subject).kind ==
                  fleetflow::wire::SubjectKind::kStatus);
  }
}

void CheckWireInputs(std::string_view subject, const uint8_t* data, size_t size) {
  static fleetflow::Metrics metrics;
  static FixedClock clock;
  // The defaults (any sensor, 7 days into the past, 256 KiB), and a strict source.
  static fleetflow::WireInput defaults(fleetflow::OperatorContext{
      "defaults", "replay_source", fleetflow::fuzz::SourceConfig(), metrics, clock});
  static fleetflow::WireInput strict(fleetflow::OperatorContext{
      "strict", "replay_source",
      fleetflow::fuzz::SourceConfig(
          R"("max_past_ms": 0, "max_payload_bytes": 4096, "sensors": ["speed", "gps", "soc"])"),
      metrics, clock});
  CheckWireInput(defaults, subject, data, size, 7 * 86'400'000'000'000LL, 262'144);
  CheckWireInput(strict, subject, data, size, 0, 4096);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fleetflow::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckDecode(data, size);
  if (size == 0) return 0;
  const size_t n = std::min<size_t>(data[0], size - 1);
  const std::string_view subject(reinterpret_cast<const char*>(data + 1), n);
  const uint8_t* payload = data + 1 + n;
  const size_t payload_size = size - 1 - n;
  // The payload usually sits at an odd address here, as client libraries hand it over.
  CheckDecode(payload, payload_size);
  CheckWireInputs(subject, payload, payload_size);
  return 0;
}

#pragma once
/// The wire contract of fleetflow (see schemas/telemetry.fbs and docs/wire.md):
/// subjects `vehicle.<vehicle_id>.<sensor>` and `vehicle.<vehicle_id>.status`, payloads
/// FlatBuffers `Batch` tables with file identifier FLT1, status payloads `on` / `off`.
/// Shared by the engine and the vehicle firmware; depends on FlatBuffers only.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flatbuffers {
class FlatBufferBuilder;
}  // namespace flatbuffers

namespace fleetflow::wire {

/// One sensor sample, decoded. `value` is meaningful for scalar sensors, `lat`/`lon` when
/// `has_position` is set (position sensors such as gps).
struct Point {
  int64_t ts_ns = 0;
  uint32_t seq = 0;
  double value = 0.0;
  double lat = 0.0;
  double lon = 0.0;
  bool has_position = false;

  bool operator==(const Point&) const = default;
};

inline constexpr std::string_view kSubjectRoot = "vehicle";
inline constexpr std::string_view kStatusToken = "status";

enum class SubjectKind { kSample, kStatus, kInvalid };

/// A parsed subject; the views point into the subject string given to ParseSubject.
struct Subject {
  SubjectKind kind = SubjectKind::kInvalid;
  std::string_view vehicle;
  std::string_view sensor;  // empty for status subjects
};

/// True when `token` is a valid vehicle id or sensor token: 1..64 of [A-Za-z0-9_-].
bool IsValidToken(std::string_view token);

/// Splits `vehicle.<id>.<sensor>`; anything else (more or fewer tokens, bad characters) is
/// kInvalid.
Subject ParseSubject(std::string_view subject);

std::string SampleSubject(std::string_view vehicle, std::string_view sensor);
std::string StatusSubject(std::string_view vehicle);

enum class DecodeError {
  kNone,
  kEmpty,          // zero-length payload
  kBadIdentifier,  // not a FLT1 buffer
  kMalformed,      // the FlatBuffers verifier rejected the buffer
};

std::string_view ToString(DecodeError e);

/// Decodes a Batch payload, appending its samples to `out`. Never throws; a payload that is not
/// a well-formed FLT1 buffer returns an error and leaves `out` unchanged.
DecodeError DecodeBatch(const void* data, size_t size, std::vector<Point>& out);

/// Encodes samples as one Batch. Points with `has_position` carry a Position, others a value.
std::vector<uint8_t> EncodeBatch(std::span<const Point> points);
/// The same into `fbb`, cleared first (its buffer then holds the Batch): an encoder of many
/// batches reuses one builder's memory.
void EncodeBatch(std::span<const Point> points, flatbuffers::FlatBufferBuilder& fbb);

/// Parses a status payload: "on" / "off" (surrounding whitespace ignored). Returns false when
/// the payload is neither.
bool ParseStatus(std::string_view payload, bool& on);

}  // namespace fleetflow::wire

#include "wire.hpp"

#include <flatbuffers/flatbuffers.h>

#include <cstring>

#include "telemetry_generated.h"

namespace fleetflow::wire {

bool IsValidToken(std::string_view token) {
  if (token.empty() || token.size() > 64) return false;
  for (char c : token) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

Subject ParseSubject(std::string_view subject) {
  Subject out;
  const size_t a = subject.find('.');
  if (a == std::string_view::npos || subject.substr(0, a) != kSubjectRoot) return out;
  const size_t b = subject.find('.', a + 1);
  if (b == std::string_view::npos) return out;
  const std::string_view vehicle = subject.substr(a + 1, b - a - 1);
  const std::string_view last = subject.substr(b + 1);
  if (!IsValidToken(vehicle) || !IsValidToken(last)) return out;  // also rejects a 4th token
  out.vehicle = vehicle;
  if (last == kStatusToken) {
    out.kind = SubjectKind::kStatus;
  } else {
    out.kind = SubjectKind::kSample;
    out.sensor = last;
  }
  return out;
}

std::string SampleSubject(std::string_view vehicle, std::string_view sensor) {
  std::string s;
  s.reserve(kSubjectRoot.size() + vehicle.size() + sensor.size() + 2);
  s.append(kSubjectRoot).append(".").append(vehicle).append(".").append(sensor);
  return s;
}

std::string StatusSubject(std::string_view vehicle) { return SampleSubject(vehicle, kStatusToken); }

std::string_view ToString(DecodeError e) {
  switch (e) {
    case DecodeError::kNone:
      return "ok";
    case DecodeError::kEmpty:
      return "empty";
    case DecodeError::kBadIdentifier:
      return "bad_identifier";
    case DecodeError::kMalformed:
      return "malformed";
  }
  return "unknown";
}

DecodeError DecodeBatch(const void* data, size_t size, std::vector<Point>& out) {
  if (data == nullptr || size == 0) return DecodeError::kEmpty;
  const auto* bytes = static_cast<const uint8_t*>(data);
  // FlatBuffers reads scalars in place; a payload at an odd address (as client libraries hand
  // them over) is copied to an aligned buffer first.
  thread_local std::vector<uint64_t> aligned;
  if (reinterpret_cast<uintptr_t>(bytes) % alignof(uint64_t) != 0) {
    aligned.resize((size + sizeof(uint64_t) - 1) / sizeof(uint64_t));
    std::memcpy(aligned.data(), bytes, size);
    bytes = reinterpret_cast<const uint8_t*>(aligned.data());
  }
  if (size < 8 || !BatchBufferHasIdentifier(bytes)) return DecodeError::kBadIdentifier;
  flatbuffers::Verifier verifier(bytes, size);
  if (!VerifyBatchBuffer(verifier)) return DecodeError::kMalformed;
  const Batch* batch = GetBatch(bytes);
  const auto* samples = batch->samples();
  out.reserve(out.size() + samples->size());
  for (const Sample* s : *samples) {
    if (s == nullptr) continue;
    Point p;
    p.ts_ns = s->ts_ns();
    p.seq = s->seq();
    p.value = s->value();
    if (const Position* pos = s->position()) {
      p.has_position = true;
      p.lat = pos->lat();
      p.lon = pos->lon();
    }
    out.push_back(p);
  }
  return DecodeError::kNone;
}

void EncodeBatch(std::span<const Point> points, flatbuffers::FlatBufferBuilder& fbb) {
  fbb.Clear();
  thread_local std::vector<flatbuffers::Offset<Sample>> offsets;
  offsets.clear();
  for (const Point& p : points) {
    SampleBuilder b(fbb);
    b.add_ts_ns(p.ts_ns);
    b.add_seq(p.seq);
    if (p.has_position) {
      const Position pos(p.lat, p.lon);
      b.add_position(&pos);
    } else {
      b.add_value(p.value);
    }
    offsets.push_back(b.Finish());
  }
  const auto vec = fbb.CreateVector(offsets);
  FinishBatchBuffer(fbb, CreateBatch(fbb, vec));
}

std::vector<uint8_t> EncodeBatch(std::span<const Point> points) {
  flatbuffers::FlatBufferBuilder fbb(64 + points.size() * 48);
  EncodeBatch(points, fbb);
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

bool ParseStatus(std::string_view payload, bool& on) {
  while (!payload.empty() && (payload.front() == ' ' || payload.front() == '\n' ||
                              payload.front() == '\r' || payload.front() == '\t')) {
    payload.remove_prefix(1);
  }
  while (!payload.empty() && (payload.back() == ' ' || payload.back() == '\n' ||
                              payload.back() == '\r' || payload.back() == '\t')) {
    payload.remove_suffix(1);
  }
  if (payload == "on") {
    on = true;
    return true;
  }
  if (payload == "off") {
    on = false;
    return true;
  }
  return false;
}

}  // namespace fleetflow::wire

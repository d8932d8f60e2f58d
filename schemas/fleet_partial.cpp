#include "fleet_partial.hpp"

#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "fleet_partial_generated.h"

namespace fleetflow::fleet {
namespace {

constexpr char kPartialId[] = "FLP1";
constexpr char kStateId[] = "FLM1";

using Builder = flatbuffers::FlatBufferBuilder;

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Row>>> Rows(
    Builder& b, const std::vector<Row>& rows) {
  std::vector<flatbuffers::Offset<fb::Row>> out;
  out.reserve(rows.size());
  for (const Row& r : rows) {
    std::vector<fb::Stats> stats;
    stats.reserve(r.stats.size());
    for (const Stats& s : r.stats) stats.emplace_back(s.count, s.min, s.max, s.sum);
    out.push_back(fb::CreateRow(b, b.CreateString(r.key), b.CreateVectorOfStructs(stats)));
  }
  return b.CreateVector(out);
}

std::string Finish(Builder& b) {
  return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
}

/// The rows of `in`, each with one statistic per metric; false when one has not.
bool ReadRows(const flatbuffers::Vector<flatbuffers::Offset<fb::Row>>* in, size_t metrics,
              std::vector<Row>& out) {
  out.clear();
  if (in == nullptr) return true;
  out.reserve(in->size());
  for (const fb::Row* r : *in) {
    if (r->stats()->size() != metrics) return false;
    Row& row = out.emplace_back();
    row.key = r->key()->str();
    for (const fb::Stats* s : *r->stats())
      row.stats.push_back({s->count(), s->min(), s->max(), s->sum()});
  }
  return true;
}

std::vector<std::string> Strings(
    const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* in) {
  std::vector<std::string> out;
  for (const flatbuffers::String* s : *in) out.push_back(s->str());
  return out;
}

/// The root of `value` once verified; valid until the next call on the thread. FlatBuffers reads
/// scalars in place: a value at an unaligned address (a NATS message's payload) is copied to an
/// aligned buffer first.
template <typename T>
const T* Verified(std::string_view value, const char* id) {
  const auto* data = reinterpret_cast<const uint8_t*>(value.data());
  thread_local std::vector<uint64_t> aligned;
  if (reinterpret_cast<uintptr_t>(data) % alignof(uint64_t) != 0) {
    aligned.resize((value.size() + sizeof(uint64_t) - 1) / sizeof(uint64_t));
    std::memcpy(aligned.data(), data, value.size());
    data = reinterpret_cast<const uint8_t*>(aligned.data());
  }
  if (value.size() < 8 || !flatbuffers::BufferHasIdentifier(data, id)) return nullptr;
  flatbuffers::Verifier v(data, value.size());
  if (!v.VerifyBuffer<T>(id)) return nullptr;
  return flatbuffers::GetRoot<T>(data);
}

}  // namespace

std::string Encode(const Partial& p) {
  Builder b(256);
  const auto node = b.CreateString(p.node);
  const auto metrics = b.CreateVectorOfStrings(p.metrics);
  const auto rows = Rows(b, p.rows);
  b.Finish(fb::CreatePartial(b, node, p.origin, p.origins, p.start_ns, p.length_ns, metrics, rows),
           kPartialId);
  return Finish(b);
}

std::string Encode(const MergeState& s) {
  Builder b(1024);
  const auto metrics = b.CreateVectorOfStrings(s.metrics);
  std::vector<flatbuffers::Offset<fb::Reached>> reached;
  for (const auto& [origin, end] : s.reached) reached.push_back(fb::CreateReached(b, origin, end));
  std::vector<flatbuffers::Offset<fb::Window>> windows;
  for (const auto& [start, rows] : s.windows) {
    windows.push_back(fb::CreateWindow(b, start, Rows(b, rows)));
  }
  b.Finish(fb::CreateMergeState(b, s.origins, s.length_ns, metrics, b.CreateVector(reached),
                                b.CreateVector(windows)),
           kStateId);
  return Finish(b);
}

bool Decode(std::string_view value, Partial& out) {
  const fb::Partial* p = Verified<fb::Partial>(value, kPartialId);
  if (p == nullptr) return false;
  Partial d;
  d.node = p->node()->str();
  d.origin = p->origin();
  d.origins = p->origins();
  d.start_ns = p->start_ns();
  d.length_ns = p->length_ns();
  d.metrics = Strings(p->metrics());
  if (!ReadRows(p->rows(), d.metrics.size(), d.rows)) return false;
  out = std::move(d);
  return true;
}

bool Decode(std::string_view value, MergeState& out) {
  const fb::MergeState* s = Verified<fb::MergeState>(value, kStateId);
  if (s == nullptr) return false;
  MergeState d;
  d.origins = s->origins();
  d.length_ns = s->length_ns();
  d.metrics = Strings(s->metrics());
  if (s->reached() != nullptr) {
    for (const fb::Reached* r : *s->reached()) d.reached[r->origin()] = r->end_ns();
  }
  if (s->windows() != nullptr) {
    for (const fb::Window* w : *s->windows()) {
      if (!ReadRows(w->rows(), d.metrics.size(), d.windows[w->start_ns()])) return false;
    }
  }
  out = std::move(d);
  return true;
}

}  // namespace fleetflow::fleet

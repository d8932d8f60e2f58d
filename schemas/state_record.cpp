#include "state_record.hpp"

#include "state_generated.h"

namespace fleetflow::state {

std::string EncodeRecord(const std::vector<Series>& series) {
  // A flush encodes many records: the builders and their memory are kept for the next.
  thread_local flatbuffers::FlatBufferBuilder fbb(1024);
  thread_local flatbuffers::FlatBufferBuilder batch(256);
  thread_local std::vector<flatbuffers::Offset<fb::Series>> offsets;
  fbb.Clear();
  offsets.clear();
  for (const Series& s : series) {
    wire::EncodeBatch(s.samples, batch);
    offsets.push_back(
        fb::CreateSeries(fbb, fbb.CreateString(s.name),
                         fbb.CreateVector(batch.GetBufferPointer(), batch.GetSize())));
  }
  fb::FinishRecordBuffer(fbb, fb::CreateRecord(fbb, fbb.CreateVector(offsets)));
  return {reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()};
}

bool DecodeRecord(std::string_view value, std::vector<Series>& out) {
  out.clear();
  const auto* bytes = reinterpret_cast<const uint8_t*>(value.data());
  if (value.size() < 8 || !fb::RecordBufferHasIdentifier(bytes)) return false;
  flatbuffers::Verifier verifier(bytes, value.size());
  if (!fb::VerifyRecordBuffer(verifier)) return false;
  for (const auto* s : *fb::GetRecord(bytes)->series()) {
    Series decoded{s->name()->str(), {}};
    if (wire::DecodeBatch(s->batch()->data(), s->batch()->size(), decoded.samples) !=
        wire::DecodeError::kNone) {
      out.clear();
      return false;
    }
    out.push_back(std::move(decoded));
  }
  return true;
}

}  // namespace fleetflow::state

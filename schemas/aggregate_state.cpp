#include "aggregate_state.hpp"

#include "aggregate_state_generated.h"

namespace fleetflow::aggregate {

namespace {

fb::Sample ToFb(const wire::Point& p) {
  return fb::Sample(p.ts_ns, p.seq, p.value, p.lat, p.lon, p.has_position);
}

wire::Point FromFb(const fb::Sample& s) {
  return wire::Point{s.ts_ns(), s.seq(), s.value(), s.lat(), s.lon(), s.has_position()};
}

flatbuffers::Offset<fb::Window> EncodeWindow(flatbuffers::FlatBufferBuilder& fbb, const Window& w) {
  std::vector<fb::Run> runs;
  runs.reserve(w.runs.size());
  for (const Run& r : w.runs) runs.emplace_back(ToFb(r.first), ToFb(r.last), r.distance_m);
  return fb::CreateWindow(fbb, w.end_ns, w.count, w.min, w.max, w.sum, w.positions, w.min_lat,
                          w.max_lat, w.min_lon, w.max_lon, fbb.CreateVectorOfStructs(runs));
}

}  // namespace

std::string Encode(const State& state) {
  flatbuffers::FlatBufferBuilder fbb(256);
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Vehicle>>> vehicles;
  if (!state.vehicles.empty()) {
    std::vector<flatbuffers::Offset<fb::Vehicle>> vs;
    vs.reserve(state.vehicles.size());
    for (const Vehicle& v : state.vehicles) {
      std::vector<flatbuffers::Offset<fb::Sensor>> ss;
      ss.reserve(v.sensors.size());
      for (const Sensor& s : v.sensors) {
        std::vector<flatbuffers::Offset<fb::Window>> ws;
        ws.reserve(s.windows.size());
        for (const Window& w : s.windows) ws.push_back(EncodeWindow(fbb, w));
        const auto name = fbb.CreateString(s.name);
        const auto windows = fbb.CreateVector(ws);
        fb::SensorBuilder b(fbb);
        b.add_name(name);
        b.add_windows(windows);
        if (s.last_emitted) {
          const fb::Sample last = ToFb(*s.last_emitted);
          b.add_last_emitted(&last);
        }
        ss.push_back(b.Finish());
      }
      const auto id = fbb.CreateString(v.id);
      vs.push_back(fb::CreateVehicle(fbb, id, fbb.CreateVector(ss)));
    }
    vehicles = fbb.CreateVector(vs);
  }
  flatbuffers::Offset<fb::Progress> progress;
  if (const auto& p = state.progress) {
    progress =
        fb::CreateProgress(fbb, p->next.value_or(0), p->next.has_value(), p->first_window,
                           p->newest_event_ns, p->stream_ns.value_or(0), p->stream_ns.has_value());
  }
  fb::FinishStateBuffer(fbb, fb::CreateState(fbb, vehicles, progress));
  return {reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()};
}

bool Decode(std::string_view value, State& out) {
  out = State{};
  const auto* bytes = reinterpret_cast<const uint8_t*>(value.data());
  if (value.size() < 8 || !fb::StateBufferHasIdentifier(bytes)) return false;
  flatbuffers::Verifier verifier(bytes, value.size());
  if (!fb::VerifyStateBuffer(verifier)) return false;
  const fb::State* state = fb::GetState(bytes);
  if (const auto* vehicles = state->vehicles()) {
    out.vehicles.reserve(vehicles->size());
    for (const fb::Vehicle* v : *vehicles) {
      Vehicle& vehicle = out.vehicles.emplace_back();
      vehicle.id = v->id()->str();
      if (v->sensors() == nullptr) continue;
      for (const fb::Sensor* s : *v->sensors()) {
        Sensor& sensor = vehicle.sensors.emplace_back();
        sensor.name = s->name()->str();
        if (s->last_emitted()) sensor.last_emitted = FromFb(*s->last_emitted());
        if (s->windows() == nullptr) continue;
        for (const fb::Window* w : *s->windows()) {
          Window& window = sensor.windows.emplace_back();
          window.end_ns = w->end_ns();
          window.count = w->count();
          window.min = w->min();
          window.max = w->max();
          window.sum = w->sum();
          window.positions = w->positions();
          window.min_lat = w->min_lat();
          window.max_lat = w->max_lat();
          window.min_lon = w->min_lon();
          window.max_lon = w->max_lon();
          for (const fb::Run* r : *w->runs()) {
            window.runs.push_back(Run{FromFb(r->first()), FromFb(r->last()), r->distance_m()});
          }
        }
      }
    }
  }
  if (const fb::Progress* p = state->progress()) {
    Progress& progress = out.progress.emplace();
    if (p->has_next()) progress.next = p->next();
    progress.first_window = p->first_window();
    progress.newest_event_ns = p->newest_event_ns();
    if (p->has_stream_ns()) progress.stream_ns = p->stream_ns();
  }
  return true;
}

}  // namespace fleetflow::aggregate

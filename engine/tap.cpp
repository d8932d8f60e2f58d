#include "tap.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <type_traits>

namespace fleetflow {

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void Number(Writer& w, double v) {
  if (std::isfinite(v)) {
    w.Double(v);
  } else {
    w.Null();  // JSON has no NaN or infinity
  }
}

/// "key": v, for an integer (signed or not) or a bool.
template <typename T>
void WriteScalar(Writer& w, const char* key, T v) {
  static_assert(std::is_integral_v<T>);
  w.Key(key);
  if constexpr (std::is_same_v<T, bool>) {
    w.Bool(v);
  } else if constexpr (std::is_signed_v<T>) {
    w.Int64(v);
  } else {
    w.Uint64(v);
  }
}

void WriteNumber(Writer& w, const char* key, double v) {
  w.Key(key);
  Number(w, v);
}

void WriteOptionalPoint(Writer& w, const std::optional<wire::Point>& p) {
  if (p) {
    WriteTapPoint(w, *p);
  } else {
    w.Null();
  }
}

void WriteString(Writer& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

void WriteBody(Writer& w, const SampleBatch& b, size_t, size_t max_points) {
  WriteString(w, "kind", "samples");
  WriteString(w, "vehicle", b.vehicle);
  WriteString(w, "sensor", b.sensor);
  WriteScalar(w, "partition", b.partition);
  WriteScalar(w, "received_ns", b.received_ns);
  if (b.restored) {
    WriteScalar(w, "restored", true);
  }
  WriteScalar(w, "points_total", b.points.size());
  w.Key("points");
  w.StartArray();
  for (size_t i = 0; i < b.points.size() && i < max_points; ++i) WriteTapPoint(w, b.points[i]);
  w.EndArray();
}

void WriteBody(Writer& w, const StatusEvent& s, size_t, size_t) {
  WriteString(w, "kind", "status");
  WriteString(w, "vehicle", s.vehicle);
  WriteString(w, "status", s.on ? "on" : "off");
  WriteScalar(w, "at_ns", s.at_ns);
  WriteScalar(w, "partition", s.partition);
}

void WriteBody(Writer& w, const Tick& t, size_t, size_t) {
  WriteString(w, "kind", "tick");
  WriteScalar(w, "now_ns", t.now_ns);
  WriteScalar(w, "drain", t.drain);
  WriteScalar(w, "held_back", t.held_back);
}

void WriteBody(Writer& w, const WindowBatch& b, size_t max_rows, size_t) {
  WriteString(w, "kind", "window");
  WriteScalar(w, "window_ns", b.window_ns);
  WriteScalar(w, "rows_total", b.rows.size());
  w.Key("rows");
  w.StartArray();
  for (size_t i = 0; i < b.rows.size() && i < max_rows; ++i) {
    const WindowRow& row = b.rows[i];
    w.StartObject();
    WriteString(w, "vehicle", row.vehicle);
    w.Key("slots");
    w.StartObject();
    const std::span<const Slot> slots = b.Slots(row);
    for (size_t s = 0; s < slots.size(); ++s) {
      const std::string name =
          b.sensors && s < b.sensors->size() ? (*b.sensors)[s] : "#" + std::to_string(s);
      w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
      w.StartObject();
      w.Key("before");
      WriteOptionalPoint(w, slots[s].before);
      w.Key("after");
      WriteOptionalPoint(w, slots[s].after);
      w.EndObject();
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
}

void WriteBody(Writer& w, const StatsBatch& b, size_t max_rows, size_t) {
  WriteString(w, "kind", "stats");
  WriteScalar(w, "start_ns", b.start_ns);
  WriteScalar(w, "length_ns", b.length_ns);
  if (b.partition) WriteScalar(w, "partition", *b.partition);
  WriteScalar(w, "rows_total", b.rows.size());
  w.Key("rows");
  w.StartArray();
  for (size_t i = 0; i < b.rows.size() && i < max_rows; ++i) {
    const StatsRow& row = b.rows[i];
    w.StartObject();
    WriteString(w, "vehicle", row.vehicle);
    w.Key("sensors");
    w.StartObject();
    for (size_t s = 0; s < row.sensors.size(); ++s) {
      const SensorStats& st = row.sensors[s];
      if (st.count == 0) continue;
      const std::string name =
          b.sensors && s < b.sensors->size() ? (*b.sensors)[s] : "#" + std::to_string(s);
      w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
      w.StartObject();
      WriteScalar(w, "count", st.count);
      WriteNumber(w, "min", st.min);
      WriteNumber(w, "max", st.max);
      WriteNumber(w, "mean", st.sum / static_cast<double>(st.count));
      w.Key("first");
      WriteTapPoint(w, st.first);
      w.Key("last");
      WriteTapPoint(w, st.last);
      if (st.positions > 0) {
        WriteNumber(w, "min_lat", st.min_lat);
        WriteNumber(w, "max_lat", st.max_lat);
        WriteNumber(w, "min_lon", st.min_lon);
        WriteNumber(w, "max_lon", st.max_lon);
        WriteNumber(w, "distance_m", st.distance_m);
      }
      w.EndObject();
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
}

void WriteBody(Writer& w, const PartitionEvent& e, size_t, size_t) {
  WriteString(w, "kind", "partition");
  WriteString(w, "event", e.kind == PartitionEvent::Kind::kAssigned ? "assigned" : "revoked");
  WriteScalar(w, "partition", e.partition);
  if (e.emitted) {
    w.Key("emitted");  // each windowed node's last window before this owner
    w.StartObject();
    for (const auto& [node, window_ns] : *e.emitted) WriteScalar(w, node.c_str(), window_ns);
    w.EndObject();
  }
}

}  // namespace

void WriteTapPoint(Writer& w, const wire::Point& p) {
  w.StartObject();
  WriteScalar(w, "ts_ns", p.ts_ns);
  WriteScalar(w, "seq", p.seq);
  if (p.has_position) {
    w.Key("lat");
    Number(w, p.lat);
    w.Key("lon");
    Number(w, p.lon);
  } else {
    w.Key("value");
    Number(w, p.value);
  }
  w.EndObject();
}

std::string TapJson(const std::string& node, const Body& body, size_t max_rows, size_t max_points) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  WriteString(w, "node", node);
  std::visit([&](const auto& b) { WriteBody(w, b, max_rows, max_points); }, body);
  w.EndObject();
  return {sb.GetString(), sb.GetSize()};
}

std::optional<TapOptions> ParseTapOptions(
    const std::function<std::optional<std::string>(const std::string&)>& param,
    std::string& error) {
  TapOptions o;
  const auto number = [&](const std::string& name, size_t lo, size_t hi, size_t& out) {
    const auto text = param(name);
    if (!text) return true;
    size_t used = 0;
    unsigned long long v = 0;
    try {
      v = std::stoull(*text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text->size() || v < lo || v > hi || (*text)[0] == '-') {
      error = name + " must be a whole number in " + std::to_string(lo) + ".." +
              std::to_string(hi) + ", not '" + *text + "'";
      return false;
    }
    out = static_cast<size_t>(v);
    return true;
  };
  size_t timeout_ms = static_cast<size_t>(o.timeout.count());
  size_t ticks = 0;
  if (!number("count", 1, TapOptions::kMaxCount, o.count) ||
      !number("every", 1, 1000000, o.every) || !number("max_rows", 0, 100000, o.max_rows) ||
      !number("max_points", 0, 100000, o.max_points) ||
      !number("timeout_ms", 1, static_cast<size_t>(TapOptions::kMaxTimeout.count()), timeout_ms) ||
      !number("ticks", 0, 1, ticks)) {
    return std::nullopt;
  }
  o.timeout = std::chrono::milliseconds(timeout_ms);
  o.ticks = ticks == 1;
  return o;
}

void TapPoint::Offer(const Message& m) {
  const bool tick = std::holds_alternative<Tick>(*m);
  std::lock_guard lock(mu_);
  if (!busy_ || lines_.size() >= options_.count || (tick && !options_.ticks)) return;
  if (seen_++ % options_.every != 0) return;
  lines_.push_back(TapJson(node_, *m, options_.max_rows, options_.max_points));
  if (lines_.size() >= options_.count) {
    armed_.store(false, std::memory_order_relaxed);
    cv_.notify_all();
  }
}

TapPoint::Result TapPoint::Collect(const TapOptions& options) {
  std::unique_lock lock(mu_);
  if (cancelled_) return {Outcome::kCancelled, {}};
  if (busy_) return {Outcome::kBusy, {}};
  busy_ = true;
  options_ = options;
  seen_ = 0;
  lines_.clear();
  armed_.store(true, std::memory_order_relaxed);
  const bool full = cv_.wait_for(lock, options.timeout,
                                 [this] { return cancelled_ || lines_.size() >= options_.count; });
  armed_.store(false, std::memory_order_relaxed);
  busy_ = false;
  Result r;
  r.outcome = cancelled_ ? Outcome::kCancelled : full ? Outcome::kCollected : Outcome::kTimedOut;
  r.lines.swap(lines_);
  return r;
}

void TapPoint::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  armed_.store(false, std::memory_order_relaxed);
  cv_.notify_all();
}

}  // namespace fleetflow

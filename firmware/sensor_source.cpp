#include "sensor_source.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string_view>

namespace fleetflow::firmware {
namespace {

std::vector<std::string_view> SplitCommas(std::string_view line) {
  std::vector<std::string_view> fields;
  while (true) {
    const size_t comma = line.find(',');
    std::string_view f = line.substr(0, comma);
    while (!f.empty() && (f.front() == ' ' || f.front() == '\t')) f.remove_prefix(1);
    while (!f.empty() && (f.back() == ' ' || f.back() == '\t')) f.remove_suffix(1);
    fields.push_back(f);
    if (comma == std::string_view::npos) return fields;
    line.remove_prefix(comma + 1);
  }
}

bool ParseDouble(std::string_view text, double& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && std::isfinite(out);
}

}  // namespace

int SimulatedVehicleIndex(const std::string& vehicle_id) {
  uint64_t h = 0xCBF29CE484222325ULL;  // FNV-1a
  for (char c : vehicle_id) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ULL;
  return static_cast<int>(h % 1'000'000);
}

SimulatedSource::SimulatedSource(uint64_t seed, const std::string& vehicle_id,
                                 const std::vector<std::string>& sensors, int64_t start_ns)
    : vehicle_(SimulatedVehicleIndex(vehicle_id)) {
  fleet_.seed = seed;
  fleet_.vehicles = 1;
  fleet_.start_ns = start_ns;
  fleet_.sensors.clear();
  for (const std::string& name : sensors) fleet_.sensors.push_back({name, 1.0});
}

bool SimulatedSource::Read(int sensor, int64_t ts_ns, wire::Point& out) {
  out = sim::SampleAt(fleet_, vehicle_, sensor, ts_ns, out.seq);
  return true;
}

CsvReplaySource::CsvReplaySource(const std::string& path, const std::vector<std::string>& sensors,
                                 int64_t start_ns, bool loop)
    : path_(path),
      sensors_(sensors),
      start_ns_(start_ns),
      loop_(loop),
      in_(path),
      latest_(sensors.size()),
      has_latest_(sensors.size(), false) {
  if (!in_) throw std::runtime_error(path + ": cannot open the sensor recording");
  std::vector<bool> seen(sensors.size(), false);
  Row row;
  while (NextRow(row)) {
    if (row.sensor >= 0) seen[row.sensor] = true;
    last_ms_ = row.time_ms;
  }
  for (size_t i = 0; i < sensors.size(); ++i) {
    if (!seen[i]) throw std::runtime_error(path + ": no row for sensor '" + sensors[i] + "'");
  }
  if (loop_ && last_ms_ <= 0) {
    throw std::runtime_error(path + ": a looped recording must span more than 0 ms");
  }
  Rewind();
}

void CsvReplaySource::Rewind() {
  in_.clear();
  in_.seekg(0);
  line_ = 0;
}

bool CsvReplaySource::NextRow(Row& row) {
  std::string line;
  const int64_t previous_ms = line_ == 0 ? 0 : row.time_ms;
  while (std::getline(in_, line)) {
    ++line_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line.front() == '#') continue;
    const auto fail = [&](const std::string& what) {
      throw std::runtime_error(path_ + ":" + std::to_string(line_) + ": " + what);
    };
    std::vector<std::string_view> f = SplitCommas(line);
    double time_ms = 0;
    if (!ParseDouble(f[0], time_ms)) {
      if (f[0] == "time_ms") continue;  // the header row
      fail("time_ms '" + std::string(f[0]) + "' is not a number");
    }
    f.resize(5);
    if (!wire::IsValidToken(f[1])) fail("'" + std::string(f[1]) + "' is not a sensor name");
    row.time_ms = std::llround(time_ms);
    if (row.time_ms < previous_ms) fail("rows must be in time order");
    const auto it = std::find(sensors_.begin(), sensors_.end(), f[1]);
    row.sensor = it == sensors_.end() ? -1 : static_cast<int>(it - sensors_.begin());
    row.point = {};
    if (!f[3].empty() || !f[4].empty()) {
      row.point.has_position = true;
      if (!ParseDouble(f[3], row.point.lat) || !ParseDouble(f[4], row.point.lon)) {
        fail("lat and lon must both be numbers");
      }
    } else if (!ParseDouble(f[2], row.point.value)) {
      fail("a row needs a value, or lat and lon");
    }
    return true;
  }
  return false;
}

bool CsvReplaySource::Read(int sensor, int64_t ts_ns, wire::Point& out) {
  const int64_t elapsed_ms = (ts_ns - start_ns_) / 1'000'000;
  while (true) {
    if (!have_pending_) {
      if (NextRow(pending_)) {
        have_pending_ = true;
      } else if (loop_) {
        Rewind();
        base_ms_ += last_ms_;
        continue;
      } else {
        break;
      }
    }
    if (base_ms_ + pending_.time_ms > elapsed_ms) break;
    if (pending_.sensor >= 0) {
      latest_[pending_.sensor] = pending_.point;
      has_latest_[pending_.sensor] = true;
    }
    have_pending_ = false;
  }
  if (!has_latest_[sensor]) return false;
  const uint32_t seq = out.seq;
  out = latest_[sensor];
  out.ts_ns = ts_ns;
  out.seq = seq;
  return true;
}

}  // namespace fleetflow::firmware

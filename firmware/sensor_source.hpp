#pragma once
/// Where fleet-sensor's readings come from. A source answers "what does sensor i read now?";
/// the caller decides when to ask (the rate scheduler) and sets each sample's time and sequence
/// number. Real hardware (CAN, ADC, a GNSS receiver) plugs in as another implementation.

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "signals.hpp"
#include "wire.hpp"

namespace fleetflow::firmware {

class SensorSource {
 public:
  virtual ~SensorSource() = default;
  /// Fills the value (or position) of sensor `sensor`, an index into the configured sensor
  /// list, at event time `ts_ns`. Returns false when the sensor has no reading to give. Called
  /// from one thread, with non-decreasing `ts_ns`.
  virtual bool Read(int sensor, int64_t ts_ns, wire::Point& out) = 0;
};

/// The simulated vehicle of signals.hpp: vehicle `vehicle_id` is vehicle number
/// SimulatedVehicleIndex(vehicle_id) of a fleet with this seed, time origin `start_ns`.
class SimulatedSource : public SensorSource {
 public:
  SimulatedSource(uint64_t seed, const std::string& vehicle_id,
                  const std::vector<std::string>& sensors, int64_t start_ns);
  bool Read(int sensor, int64_t ts_ns, wire::Point& out) override;

 private:
  sim::FleetConfig fleet_;
  int vehicle_;
};

/// A stable index in [0, 1e6) derived from a vehicle id, so a vehicle simulates the same signals
/// in every run.
int SimulatedVehicleIndex(const std::string& vehicle_id);

/// Replays a recording: a CSV file with rows `time_ms,sensor,value,lat,lon` (time in ms from the
/// start of the recording; a position sensor fills lat and lon and leaves value empty, a scalar
/// one fills value only). Blank lines, lines starting with '#' and a header row are skipped; rows
/// must be in time order. A read returns the sensor's newest row at or before the time elapsed
/// since `start_ns` (sample and hold), false before its first row. At the end of the file the
/// values are held, or with `loop` the recording starts over every `last time_ms` ms.
/// The file is streamed, never loaded whole. Rows of sensors not configured are ignored.
class CsvReplaySource : public SensorSource {
 public:
  /// Checks the whole file first; throws std::runtime_error naming the file and line of the
  /// first bad row, or a configured sensor that has no row.
  CsvReplaySource(const std::string& path, const std::vector<std::string>& sensors,
                  int64_t start_ns, bool loop);
  bool Read(int sensor, int64_t ts_ns, wire::Point& out) override;

 private:
  struct Row {
    int64_t time_ms = 0;
    int sensor = -1;  // index into sensors_, -1 when not configured
    wire::Point point;
  };
  // Reads the next data row; false at the end of the file. Throws on a malformed row.
  bool NextRow(Row& row);
  void Rewind();

  std::string path_;
  std::vector<std::string> sensors_;
  int64_t start_ns_;
  bool loop_;
  std::ifstream in_;
  int line_ = 0;
  int64_t last_ms_ = 0;  // time of the last row
  int64_t base_ms_ = 0;  // loop offset added to row times
  bool have_pending_ = false;
  Row pending_;  // next row not yet due
  std::vector<wire::Point> latest_;
  std::vector<bool> has_latest_;
};

}  // namespace fleetflow::firmware

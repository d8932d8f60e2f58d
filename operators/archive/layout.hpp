#pragma once
/// The archive's files (docs/archive.md): what the `archive` operator writes and `fleetflow find
/// --archive` reads, in one place. An open layout that DuckDB, Polars, Spark or Athena read
/// without fleetflow:
///
///   <root>/sensor=<sensor>/day=<YYYY-MM-DD>/hour=<HH>/cell=<geohash>/<chunk>.csv.zst
///   <root>/sensor=<sensor>/day=<YYYY-MM-DD>/hour=<HH>/cell=<geohash>/<chunk>.json
///   <root>/rows=<row set>/day=<YYYY-MM-DD>/hour=<HH>/cell=<geohash>/<chunk>.csv.zst (and .json)
///
/// (`hour=` only with the hourly period.) A chunk is zstd-compressed CSV with a header, one
/// sample per line, sorted by vehicle then time: `vehicle_id,ts,lat,lon` for a position sensor,
/// `vehicle_id,ts,value` for the others; `ts` RFC 3339 in UTC to the microsecond. A chunk of
/// rows (row_archive) has one aligned row per line: `vehicle_id,ts,<its columns>`. Its summary
/// (the .json beside it) says what a finder needs to skip it without reading a byte of it.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow::archive {

/// A latitude/longitude box, degrees WGS 84, bounds included.
struct Box {
  double min_lat = 0.0;
  double max_lat = 0.0;
  double min_lon = 0.0;
  double max_lon = 0.0;
  bool Intersects(const Box& o) const {
    return min_lat <= o.max_lat && o.min_lat <= max_lat && min_lon <= o.max_lon &&
           o.min_lon <= max_lon;
  }
};

/// The geohash of (lat, lon) with `precision` characters (1 to 12).
std::string Geohash(double lat, double lon, int precision);
/// The box a geohash covers; nullopt when `hash` is not one (empty, too long, a letter outside
/// the geohash alphabet). A point on the box's south or west edge is in the cell, one on its
/// north or east edge in the next.
std::optional<Box> GeohashBox(std::string_view hash);

/// The cell of samples without a position whose vehicle's position is not known to the writer.
inline constexpr std::string_view kNoCell = "none";

enum class Period { kHour, kDay };
constexpr int64_t PeriodNs(Period p) {
  return p == Period::kHour ? int64_t{3'600'000'000'000} : int64_t{86'400'000'000'000};
}

/// The top folder of a sensor's samples ("sensor=gps") and of a row set ("rows=1s").
inline std::string SensorFolder(std::string_view sensor) { return "sensor=" + std::string(sensor); }
inline std::string RowsFolder(std::string_view row_set) { return "rows=" + std::string(row_set); }

/// The folder of the chunks under `top` (SensorFolder, RowsFolder), period starting at or
/// before `ts_ns` and cell `cell`, relative to the root:
/// "sensor=gps/day=2026-11-28/hour=10/cell=u09t".
std::string ChunkFolder(std::string_view top, int64_t ts_ns, Period period, std::string_view cell);

/// The midnight (UTC, ns) of a day folder's name ("day=2026-11-28"); nullopt when it is none.
std::optional<int64_t> DayOf(std::string_view folder);

inline constexpr std::string_view kChunkSuffix = ".csv.zst";
inline constexpr std::string_view kSummarySuffix = ".json";

/// A chunk's place in the layout, read from its path.
struct ChunkPlace {
  std::string sensor;   // under sensor=<sensor>
  std::string row_set;  // under rows=<row set> (then sensor is empty)
  int64_t period_start_ns = 0;
  int64_t period_ns = 0;  // an hour or a day
  std::string cell;       // a geohash or kNoCell
  std::string name;       // the file name, with kChunkSuffix
};

/// Reads a chunk's path relative to the root ("sensor=…/day=…[/hour=…]/cell=…/name.csv.zst", or
/// "rows=…/…");
/// nullopt when it is not one.
std::optional<ChunkPlace> ParseChunkPath(std::string_view relative);

/// The summary beside a chunk (`<name>.json` for `<name>.csv.zst`).
struct Summary {
  int version = 1;
  std::string sensor;                 // a chunk of samples: their sensor
  std::string row_set;                // a chunk of rows: its row set (then sensor is empty)
  std::string columns;                // a chunk of rows: its CSV header, without the newline
  bool positions = false;             // the chunk has lat and lon columns (else value)
  int64_t first_ns = 0;               // the oldest sample's time
  int64_t last_ns = 0;                // the newest sample's time
  std::optional<Box> box;             // of the positions; none without
  uint64_t samples = 0;               // lines after the header (a chunk of rows: "rows")
  std::vector<std::string> vehicles;  // sorted
  uint64_t bytes = 0;                 // the chunk's size on disk
  uint32_t partition = 0;             // of the stream it was read from (0: unpartitioned)
  uint64_t first_sequence = 0;        // the stream sequences of the messages it holds (0: none)
  uint64_t last_sequence = 0;
};

std::string ToJson(const Summary& s);
/// nullopt (and `why`) when `json` is not a summary of this version.
std::optional<Summary> ParseSummary(std::string_view json, std::string* why = nullptr);
/// The summary's path for a chunk's path.
std::string SummaryPathOf(std::string_view chunk_path);

/// The CSV header line (with its newline) of a chunk of position or value samples.
std::string_view CsvHeader(bool positions);
/// Appends `ns` as RFC 3339 UTC to the microsecond: 2026-11-28T10:00:00.123456Z.
void AppendTime(std::string& out, int64_t ns);
/// Reads what AppendTime writes (exactly that form); nullopt otherwise.
std::optional<int64_t> ParseTime(std::string_view text);
/// Appends `v` rounded to `decimals` digits after the point, without trailing zeros.
void AppendFixed(std::string& out, double v, int decimals);
/// Appends `v` with `digits` significant digits, the shortest text that reads back as that.
void AppendSignificant(std::string& out, double v, int digits);

/// zstd, one frame. Compress throws std::runtime_error when zstd fails; Decompress returns
/// nullopt (and `why`) for input that is not a whole zstd frame.
std::string Compress(std::string_view data, int level);
std::optional<std::string> Decompress(std::string_view data, std::string* why = nullptr);

}  // namespace fleetflow::archive

#include "find.hpp"

#include <geos_c.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <tbb/blocked_range.h>
#include <tbb/enumerable_thread_specific.h>
#include <tbb/parallel_for.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "layout.hpp"
#include "pg_client.hpp"
#include "utc_time.hpp"

namespace fleetflow {
namespace {

constexpr int kExitFatal = 1;
constexpr int kExitInvalid = 2;

/// A problem with what was asked (exit 2) or with the database (exit 1).
struct Refused {
  int status;
  std::string message;
};

/// Every position of `coordinates` (nested arrays down to [lon, lat]) is a WGS 84 longitude and
/// latitude; returns what is wrong, empty when nothing is.
std::string CheckPositions(const rapidjson::Value& coordinates, int depth) {
  if (!coordinates.IsArray() || coordinates.Empty()) return "coordinates must be non-empty arrays";
  if (depth == 0) {
    if (coordinates.Size() < 2 || !coordinates[0].IsNumber() || !coordinates[1].IsNumber()) {
      return "a position must be [longitude, latitude]";
    }
    const double lon = coordinates[0].GetDouble(), lat = coordinates[1].GetDouble();
    if (lon < -180 || lon > 180 || lat < -90 || lat > 90) {
      return "position [" + std::to_string(lon) + ", " + std::to_string(lat) +
             "] is not a WGS 84 longitude and latitude";
    }
    return "";
  }
  for (const auto& c : coordinates.GetArray()) {
    if (std::string why = CheckPositions(c, depth - 1); !why.empty()) return why;
  }
  return "";
}

/// The area's geometry as GeoJSON text: a Polygon or MultiPolygon, or the geometry of a Feature.
std::string ReadArea(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Refused{kExitInvalid, "find: cannot read the area " + path};
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document doc;
  // Full precision: a vertex is the double its text names, as a sample's position is, so that a
  // position on the area's edge is on it here too.
  doc.Parse<rapidjson::kParseFullPrecisionFlag>(text.str().c_str());
  if (doc.HasParseError()) {
    throw Refused{kExitInvalid, "find: " + path + " is not JSON (at byte " +
                                    std::to_string(doc.GetErrorOffset()) + ")"};
  }
  const rapidjson::Value* geometry = &doc;
  if (doc.IsObject() && doc.HasMember("type") && doc["type"] == "Feature" &&
      doc.HasMember("geometry")) {
    geometry = &doc["geometry"];
  }
  const auto type =
      geometry->IsObject() && geometry->HasMember("type") && (*geometry)["type"].IsString()
          ? std::string((*geometry)["type"].GetString())
          : std::string();
  if (type != "Polygon" && type != "MultiPolygon") {
    throw Refused{kExitInvalid, "find: " + path +
                                    " is not a GeoJSON Polygon or MultiPolygon (nor a Feature of "
                                    "one)" +
                                    (type.empty() ? "" : ": it is a " + type)};
  }
  if (!geometry->HasMember("coordinates")) {
    throw Refused{kExitInvalid, "find: " + path + ": the " + type + " has no coordinates"};
  }
  if (std::string why = CheckPositions((*geometry)["coordinates"], type == "Polygon" ? 2 : 3);
      !why.empty()) {
    throw Refused{kExitInvalid, "find: " + path + ": " + why};
  }
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  geometry->Accept(w);
  return sb.GetString();
}

int64_t ParseBound(const std::string& text, const char* name) {
  const auto ns = ParseRfc3339(text);
  if (!ns) {
    throw Refused{kExitInvalid, std::string("find: ") + name + " '" + text +
                                    "' is not an RFC 3339 time (2026-11-25T09:00:00Z)"};
  }
  return *ns;
}

std::string Timestamp(int64_t ns) {
  return "(timestamptz 'epoch' + " + std::to_string(ns / 1000) + " * interval '1 microsecond')";
}

std::string Value(const pg::Row& row, size_t i) { return row.at(i).value_or(""); }

/// The expression of a row's position in `table`: its point geometry column, or its lat/lon
/// columns as a point.
std::string PositionOf(pg::Connection& db, const std::string& table) {
  const pg::Rows columns = db.Exec(
      "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
      "WHERE a.attrelid = " +
      pg::QuoteLiteral(table) + "::regclass AND a.attnum > 0 AND NOT a.attisdropped");
  std::optional<std::string> geometry;
  bool lat = false, lon = false;
  for (const pg::Row& c : columns) {
    const std::string name = Value(c, 0);
    if (Value(c, 1) == "geometry" && !geometry) geometry = name;
    lat = lat || name == "lat";
    lon = lon || name == "lon";
  }
  if (geometry) return "t." + pg::QuoteIdent(*geometry);
  if (lat && lon) return "ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326)";
  throw Refused{kExitFatal, "find: table " + table +
                                " has neither a geometry column nor lat and lon columns: not a "
                                "table of 1 s rows with positions"};
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (const char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string JsonString(const std::string& s) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.String(s.c_str(), static_cast<rapidjson::SizeType>(s.size()));
  return sb.GetString();
}

struct Found {
  std::string vehicle;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  uint64_t inside = 0;
};

void Print(const std::vector<Found>& found, const std::string& format, std::ostream& out) {
  static const char* kHeader[] = {"vehicle_id", "first_inside", "last_inside", "samples_inside"};
  if (format == "csv") {
    out << kHeader[0] << ',' << kHeader[1] << ',' << kHeader[2] << ',' << kHeader[3] << '\n';
    for (const Found& f : found) {
      out << CsvField(f.vehicle) << ',' << FormatUtc(f.first_ns) << ',' << FormatUtc(f.last_ns)
          << ',' << f.inside << '\n';
    }
  } else if (format == "json") {
    out << "[";
    for (size_t i = 0; i < found.size(); ++i) {
      const Found& f = found[i];
      out << (i ? ",\n " : "\n ") << "{\"vehicle_id\": " << JsonString(f.vehicle)
          << ", \"first_inside\": \"" << FormatUtc(f.first_ns) << "\", \"last_inside\": \""
          << FormatUtc(f.last_ns) << "\", \"samples_inside\": " << f.inside << "}";
    }
    out << (found.empty() ? "]\n" : "\n]\n");
  } else {
    size_t width = std::string(kHeader[0]).size();
    for (const Found& f : found) width = std::max(width, f.vehicle.size());
    const auto pad = [](const std::string& s, size_t w) {
      return s + std::string(w - s.size(), ' ');
    };
    out << pad(kHeader[0], width) << "  " << pad(kHeader[1], 24) << "  " << pad(kHeader[2], 24)
        << "  " << kHeader[3] << '\n';
    for (const Found& f : found) {
      out << pad(f.vehicle, width) << "  " << pad(FormatUtc(f.first_ns), 24) << "  "
          << pad(FormatUtc(f.last_ns), 24) << "  " << f.inside << '\n';
    }
  }
}

/// The period [from, to) of --from and --to; refused when it is empty.
std::pair<int64_t, int64_t> ReadPeriod(const FindArgs& args) {
  const int64_t from = ParseBound(args.from, "--from");
  const int64_t to = ParseBound(args.to, "--to");
  if (to <= from) {
    throw Refused{kExitInvalid, "find: the period from " + FormatUtc(from) + " to " +
                                    FormatUtc(to) + " is empty: --to must come after --from"};
  }
  return {from, to};
}

int FindInPostgres(const FindArgs& args, std::ostream& out, std::ostream& err) {
  const std::string area = ReadArea(args.area);
  const auto [from, to] = ReadPeriod(args);
  std::string conninfo = args.conninfo;
  if (conninfo.empty()) {
    if (const char* env = std::getenv("FLEETFLOW_PG")) conninfo = env;
  }
  std::unique_ptr<pg::Connection> db;
  try {
    db = pg::Connection::Connect(conninfo);
  } catch (const pg::Error& e) {
    throw Refused{kExitFatal, std::string("find --pg: ") + e.what()};
  }
  if (db->Exec("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").empty()) {
    throw Refused{kExitFatal,
                  "find --pg: the database " + db->description() +
                      " has no PostGIS, with which find tests positions against the area: "
                      "CREATE EXTENSION postgis (Debian: postgresql-15-postgis-3; the sink "
                      "creates it when it writes a geometry column and may)"};
  }
  if (!pg::IsValidIdentifier(args.table)) {
    throw Refused{kExitInvalid, "find: '" + args.table + "' is not a table name fleetflow writes"};
  }
  if (Value(db->Exec("SELECT to_regclass(" + pg::QuoteLiteral(args.table) + ") IS NULL").at(0),
            0) == "t") {
    throw Refused{kExitFatal, "find --pg: the database " + db->description() + " has no table " +
                                  args.table + " (the 1 s rows: the sink's table)"};
  }
  const std::string geometry =
      "ST_SetSRID(ST_GeomFromGeoJSON(" + pg::QuoteLiteral(area) + "), 4326)";
  try {
    const pg::Row valid = db->Exec("SELECT ST_IsValid(g), ST_IsValidReason(g) FROM (SELECT " +
                                   geometry + " AS g) AS a")
                              .at(0);
    if (Value(valid, 0) != "t") {
      throw Refused{kExitInvalid,
                    "find: the area " + args.area + " is not a valid polygon: " + Value(valid, 1)};
    }
  } catch (const pg::Error& e) {
    throw Refused{kExitInvalid, "find: the area " + args.area + ": " + e.what()};
  }
  const std::string position = PositionOf(*db, args.table);
  const std::string table = pg::QuoteIdent(args.table);

  // What of the period the table holds: before its oldest row (its retention) nothing answers.
  const pg::Row held = db->Exec(
                             "SELECT (extract(epoch FROM min(time)) * 1e6)::bigint, "
                             "(extract(epoch FROM max(time)) * 1e6)::bigint FROM " +
                             table)
                           .at(0);
  if (!held.at(0)) {
    err << "find: table " << args.table << " holds no rows\n";
  } else {
    const int64_t oldest = std::stoll(Value(held, 0)) * 1000;
    const int64_t newest = std::stoll(Value(held, 1)) * 1000;
    if (from < oldest) {
      err << "find: table " << args.table << " holds rows from " << FormatUtc(oldest)
          << " on: the period before it (its retention) is not answered\n";
    }
    if (to > newest + 1'000'000'000) {
      err << "find: table " << args.table << " holds rows up to " << FormatUtc(newest) << '\n';
    }
  }
  // On the boundary counts as inside (ST_Covers); the geometry column's GiST index serves it.
  const pg::Rows rows = db->Exec(
      "SELECT t.vehicle_id, (extract(epoch FROM min(t.time)) * 1e6)::bigint, "
      "(extract(epoch FROM max(t.time)) * 1e6)::bigint, count(*) FROM " +
      table + " AS t, (SELECT " + geometry + " AS g) AS a WHERE t.time >= " + Timestamp(from) +
      " AND t.time < " + Timestamp(to) + " AND ST_Covers(a.g, " + position +
      ") GROUP BY t.vehicle_id ORDER BY t.vehicle_id");
  std::vector<Found> found;
  for (const pg::Row& r : rows) {
    found.push_back({Value(r, 0), std::stoll(Value(r, 1)) * 1000, std::stoll(Value(r, 2)) * 1000,
                     std::stoull(Value(r, 3))});
  }
  Print(found, args.format, out);
  err << "find: " << found.size() << (found.size() == 1 ? " vehicle" : " vehicles")
      << " in the area from " << FormatUtc(from) << " to " << FormatUtc(to) << " (the 1 s rows of "
      << args.table << " on " << db->description() << ")\n";
  return 0;
}

// find --archive: the archive operator's chunks of a position sensor (docs/archive.md).

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// The area in one GEOS context: read from its GeoJSON text and prepared for testing points. A
/// context and what is made in it serve one thread at a time, so each thread that tests points
/// has its own.
class GeosArea {
 public:
  /// Throws Refused (exit 2) when GEOS cannot read the area or, with `validate`, it is not valid.
  GeosArea(const std::string& geojson, const std::string& path, bool validate) {
    try {
      Build(geojson, path, validate);
    } catch (...) {
      Release();
      throw;
    }
  }
  ~GeosArea() { Release(); }
  GeosArea(const GeosArea&) = delete;
  GeosArea& operator=(const GeosArea&) = delete;

  /// The smallest box around the area.
  const archive::Box& envelope() const { return envelope_; }

  /// Whether the point, within the envelope, is inside the area or on its boundary. The envelope
  /// is cut into a grid of cells, each learnt on its first point: a cell the area covers whole
  /// answers yes, one it does not meet answers no, without GEOS; only the points of cells its
  /// boundary crosses are tested one by one (a rectangle has none).
  bool Covers(double lon, double lat) {
    const int row = CellIndex(lat, envelope_.min_lat, per_lat_);
    const int column = CellIndex(lon, envelope_.min_lon, per_lon_);
    const double lat0 = lat_edges_[row], lat1 = lat_edges_[row + 1];
    const double lon0 = lon_edges_[column], lon1 = lon_edges_[column + 1];
    // The cell's closed box holds the point (rounding may put it in the next one: then GEOS).
    if (lat < lat0 || lat > lat1 || lon < lon0 || lon > lon1) return PointCovered(lon, lat);
    uint8_t& cell = cells_[static_cast<size_t>(row) * kGrid + static_cast<size_t>(column)];
    if (cell == kUnknown) cell = Classify(lon0, lat0, lon1, lat1);
    if (cell == kInside) return true;
    if (cell == kOutside) return false;
    return PointCovered(lon, lat);
  }

 private:
  static void OnError(const char* message, void* self) {
    static_cast<GeosArea*>(self)->error_ = message;
  }

  void Build(const std::string& geojson, const std::string& path, bool validate) {
    ctx_ = GEOS_init_r();
    if (ctx_ == nullptr) throw Refused{kExitFatal, "find: GEOS cannot start (GEOS_init_r)"};
    GEOSContext_setErrorMessageHandler_r(ctx_, &GeosArea::OnError, this);
    GEOSGeoJSONReader* reader = GEOSGeoJSONReader_create_r(ctx_);
    if (reader != nullptr) {
      geometry_ = GEOSGeoJSONReader_readGeometry_r(ctx_, reader, geojson.c_str());
      GEOSGeoJSONReader_destroy_r(ctx_, reader);
    }
    if (geometry_ == nullptr) {
      throw Refused{kExitInvalid, "find: the area " + path + " is not a polygon: " + error_};
    }
    if (validate && GEOSisValid_r(ctx_, geometry_) != 1) {
      char* reason = GEOSisValidReason_r(ctx_, geometry_);
      const std::string why = reason != nullptr ? reason : error_;
      GEOSFree_r(ctx_, reason);
      throw Refused{kExitInvalid, "find: the area " + path + " is not a valid polygon: " + why};
    }
    double min_lon = 0, min_lat = 0, max_lon = 0, max_lat = 0;
    if (GEOSGeom_getExtent_r(ctx_, geometry_, &min_lon, &min_lat, &max_lon, &max_lat) != 1) {
      throw Refused{kExitInvalid, "find: the area " + path + " has no extent: " + error_};
    }
    envelope_ = archive::Box{min_lat, max_lat, min_lon, max_lon};
    cell_lat_ = (max_lat - min_lat) / kGrid;
    cell_lon_ = (max_lon - min_lon) / kGrid;
    per_lat_ = cell_lat_ > 0 ? 1 / cell_lat_ : 0;
    per_lon_ = cell_lon_ > 0 ? 1 / cell_lon_ : 0;
    for (int i = 0; i <= kGrid; ++i) {
      lat_edges_[i] = Edge(i, min_lat, max_lat, cell_lat_);
      lon_edges_[i] = Edge(i, min_lon, max_lon, cell_lon_);
    }
    cells_.assign(static_cast<size_t>(kGrid) * kGrid, kUnknown);
    prepared_ = GEOSPrepare_r(ctx_, geometry_);
    if (prepared_ == nullptr) {
      throw Refused{kExitFatal, "find: GEOS cannot prepare the area " + path + ": " + error_};
    }
  }

  static constexpr int kGrid = 64;
  enum : uint8_t { kUnknown, kInside, kOutside, kCrossed };

  /// The cell of `v` on one axis, `per` cells a degree (0: one cell). Rounding may give the one
  /// beside: the caller checks the point is in the cell's box.
  static int CellIndex(double v, double min, double per) {
    const double i = (v - min) * per;  // v >= min: truncating is flooring
    return !(i >= 0) ? 0 : i >= kGrid ? kGrid - 1 : static_cast<int>(i);
  }
  /// The edge `i` of the grid (0 to kGrid) on one axis; the last one is the envelope's own.
  static double Edge(int i, double min, double max, double step) {
    return i >= kGrid ? max : i <= 0 ? min : std::min(max, min + i * step);
  }

  bool PointCovered(double lon, double lat) {
    GEOSGeometry* point = GEOSGeom_createPointFromXY_r(ctx_, lon, lat);
    if (point == nullptr) return false;
    // A point intersects the area when it is inside or on the boundary: ST_Covers for points.
    const char inside = GEOSPreparedIntersects_r(ctx_, prepared_, point);
    GEOSGeom_destroy_r(ctx_, point);
    return inside == 1;
  }

  /// Whether the area covers the closed box whole (every point of it is inside or on the
  /// boundary), does not meet it at all, or neither.
  uint8_t Classify(double lon0, double lat0, double lon1, double lat1) {
    GEOSGeometry* box = nullptr;
    if (lon0 < lon1 && lat0 < lat1) {
      box = GEOSGeom_createRectangle_r(ctx_, lon0, lat0, lon1, lat1);
    }
    if (box == nullptr) return kCrossed;  // a degenerate cell: point by point
    const char covers = GEOSPreparedCovers_r(ctx_, prepared_, box);
    const char meets = covers == 1 ? 1 : GEOSPreparedIntersects_r(ctx_, prepared_, box);
    GEOSGeom_destroy_r(ctx_, box);
    if (covers == 1) return kInside;
    if (meets == 0) return kOutside;
    return kCrossed;
  }

  void Release() {
    if (ctx_ == nullptr) return;
    if (prepared_ != nullptr) GEOSPreparedGeom_destroy_r(ctx_, prepared_);
    if (geometry_ != nullptr) GEOSGeom_destroy_r(ctx_, geometry_);
    GEOS_finish_r(ctx_);
    ctx_ = nullptr;
    prepared_ = nullptr;
    geometry_ = nullptr;
  }

  GEOSContextHandle_t ctx_ = nullptr;
  GEOSGeometry* geometry_ = nullptr;
  const GEOSPreparedGeometry* prepared_ = nullptr;
  archive::Box envelope_;
  double cell_lat_ = 0, cell_lon_ = 0;  // the grid's cells, in degrees
  double per_lat_ = 0, per_lon_ = 0;    // cells a degree
  double lat_edges_[kGrid + 1] = {}, lon_edges_[kGrid + 1] = {};
  std::vector<uint8_t> cells_;  // by row (latitude) then column: what each is
  std::string error_;           // GEOS's last error message
};

/// The whole file at `path` in `data`; false (and `why`) when it cannot be read.
bool ReadFile(const std::string& path, std::string& data, std::string& why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = std::strerror(errno);
    return false;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    why = "read error";
    return false;
  }
  data = std::move(text).str();
  return true;
}

/// The reading's progress on a terminal: chunks read of the candidates and samples scanned, one
/// line redrawn in place at most 10 times a second, by whichever thread gets to it.
class Progress {
 public:
  Progress(bool on, std::ostream& err, size_t chunks) : on_(on), err_(err), chunks_(chunks) {
    if (on_) Draw();
  }

  void Add(uint64_t chunks, uint64_t samples) {
    read_ += chunks;
    samples_ += samples;
    if (!on_) return;
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - drawn_ < std::chrono::milliseconds(100)) return;
    drawn_ = now;
    Draw();
  }

  /// Clears the line.
  void Finish() {
    if (!on_) return;
    std::lock_guard lock(mu_);
    err_ << "\r\033[K" << std::flush;
  }

 private:
  void Draw() {
    err_ << "\rfind: " << read_.load() << " of " << chunks_ << " chunks read, " << samples_.load()
         << " samples scanned\033[K" << std::flush;
  }

  const bool on_;
  std::ostream& err_;
  const size_t chunks_;
  std::atomic<uint64_t> read_{0}, samples_{0};
  std::mutex mu_;  // guards err_ and drawn_
  std::chrono::steady_clock::time_point drawn_ = std::chrono::steady_clock::now();
};

/// What one thread found in the chunks it read.
struct Scan {
  std::unordered_map<std::string, Found> found;
  uint64_t samples = 0;               // lines of samples read
  uint64_t bad_lines = 0;             // lines that are not a sample
  std::vector<std::string> unread;    // chunks not read: "path: why"
  std::vector<std::string> bad_line;  // per chunk with bad lines, the first: "path: line N: why"
};

/// The first field of a CSV line (quoted or not) in `field`, the rest after its comma in `rest`;
/// false when the line has no such field.
bool FirstField(std::string_view line, std::string& field, std::string_view& rest) {
  field.clear();
  if (line.empty() || line[0] != '"') {
    const size_t comma = line.find(',');
    if (comma == std::string_view::npos) return false;
    field.assign(line.substr(0, comma));
    rest = line.substr(comma + 1);
    return true;
  }
  for (size_t i = 1; i < line.size(); ++i) {
    if (line[i] != '"') {
      field += line[i];
    } else if (i + 1 < line.size() && line[i + 1] == '"') {
      field += '"';
      ++i;
    } else {
      if (i + 1 >= line.size() || line[i + 1] != ',') return false;
      rest = line.substr(i + 2);
      return true;
    }
  }
  return false;
}

bool ParseDegrees(std::string_view text, double lo, double hi, double& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && out >= lo && out <= hi;
}

/// A plain decimal (-?digits[.digits]) at `at` in `text`, read as std::from_chars reads it: the
/// digits as an integer divided by a power of ten, which is the correctly rounded value while
/// both are exact doubles (at most 15 digits and 22 decimals). `at` moves past it. False, and
/// `at` anywhere, for any other text (the caller reads it the long way).
bool QuickDecimal(std::string_view text, size_t& at, double& out) {
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const char* p = text.data() + at;
  const char* const end = text.data() + text.size();
  const bool negative = p < end && *p == '-';
  p += negative ? 1 : 0;
  uint64_t mantissa = 0;
  const char* const first = p;
  unsigned d = 0;
  while (p < end && (d = static_cast<unsigned char>(*p) - unsigned{'0'}) <= 9) {
    mantissa = mantissa * 10 + d;
    ++p;
  }
  if (p == first) return false;
  size_t digits = static_cast<size_t>(p - first), decimals = 0;
  if (p < end && *p == '.') {
    const char* const point = ++p;
    while (p < end && (d = static_cast<unsigned char>(*p) - unsigned{'0'}) <= 9) {
      mantissa = mantissa * 10 + d;
      ++p;
    }
    decimals = static_cast<size_t>(p - point);
    if (decimals == 0) return false;
    digits += decimals;
  }
  if (digits > 15 || decimals > 22) return false;
  at = static_cast<size_t>(p - text.data());
  const double v = static_cast<double>(mantissa) / kPow10[decimals];
  out = negative ? -v : v;
  return true;
}

/// archive::ParseTime, quicker on the lines of a chunk: they share their day, whose text is
/// compared with the previous line's instead of being read again. The same times and the same
/// texts refused.
class TimeReader {
 public:
  std::optional<int64_t> Read(std::string_view t) {
    if (t.size() != 27 || !known_ || std::memcmp(t.data(), day_, sizeof day_) != 0) {
      return ReadDay(t);
    }
    int hh = 0, mm = 0, ss = 0, us = 0;
    if (t[10] != 'T' || t[13] != ':' || t[16] != ':' || t[19] != '.' || t[26] != 'Z' ||
        !Digits(t, 11, 2, hh) || !Digits(t, 14, 2, mm) || !Digits(t, 17, 2, ss) ||
        !Digits(t, 20, 6, us) || hh > 23 || mm > 59 || ss > 60) {
      return std::nullopt;
    }
    return day_ns_ + (int64_t{hh} * 3600 + mm * 60 + ss) * 1'000'000'000 + int64_t{us} * 1000;
  }

 private:
  static bool Digits(std::string_view t, size_t at, size_t n, int& out) {
    out = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      out = out * 10 + (t[i] - '0');
    }
    return true;
  }

  std::optional<int64_t> ReadDay(std::string_view t) {
    const auto ns = archive::ParseTime(t);
    if (!ns) return ns;
    const auto midnight = archive::ParseTime(std::string(t.substr(0, 10)) + "T00:00:00.000000Z");
    if (midnight) {
      std::memcpy(day_, t.data(), sizeof day_);
      day_ns_ = *midnight;
      known_ = true;
    }
    return ns;
  }

  bool known_ = false;
  char day_[10] = {};  // the text of the last day read ("2026-11-28")
  int64_t day_ns_ = 0;
};

/// The common line of a chunk of positions read in one pass: a vehicle_id without quotes, a time
/// of 27 characters, plain decimals in range. False for any other line, read then field by field
/// (which says what is wrong with it); when true, the same fields and values as that reading.
bool QuickLine(std::string_view line, TimeReader& times, std::string_view& vehicle, int64_t& ts,
               double& lat, double& lon) {
  const size_t comma = line.find(',');
  if (comma == 0 || comma == std::string_view::npos || line[0] == '"' || line.size() < comma + 29 ||
      line[comma + 28] != ',') {
    return false;
  }
  const auto t = times.Read(line.substr(comma + 1, 27));
  size_t at = comma + 29;
  if (!t || !QuickDecimal(line, at, lat) || at >= line.size() || line[at] != ',' ||
      !QuickDecimal(line, ++at, lon) || at != line.size() || lat < -90 || lat > 90 || lon < -180 ||
      lon > 180) {
    return false;
  }
  vehicle = line.substr(0, comma);
  ts = *t;
  return true;
}

/// Reads the samples of one chunk of positions (its decompressed CSV) into `scan`: those in the
/// period, within the area's envelope, then in the area.
void ScanChunk(std::string_view csv, const std::string& path, int64_t from, int64_t to,
               GeosArea& area, Scan& scan, Progress& progress) {
  const archive::Box& envelope = area.envelope();
  std::string_view header = archive::CsvHeader(true);
  header.remove_suffix(1);  // its newline
  uint64_t line_no = 0, bad = 0, unreported = 0;
  std::string first_bad;
  std::string vehicle;
  TimeReader times;
  Found* current = nullptr;  // the entry of the vehicle of the previous line inside
  size_t at = 0;
  while (at < csv.size()) {
    size_t eol = csv.find('\n', at);
    if (eol == std::string_view::npos) eol = csv.size();
    std::string_view line = csv.substr(at, eol - at);
    at = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_no == 1) {
      if (line != header) {
        scan.unread.push_back(path + ": not a chunk of positions: its header is '" +
                              std::string(line.substr(0, 80)) + "', not '" + std::string(header) +
                              "'");
        return;
      }
      continue;
    }
    if (line.empty()) continue;
    ++scan.samples;
    if (++unreported == 65536) {
      progress.Add(0, unreported);
      unreported = 0;
    }
    std::string_view id;  // the vehicle_id: in the line, or in `vehicle` when quoted
    int64_t ts = 0;
    double lat = 0, lon = 0;
    if (!QuickLine(line, times, id, ts, lat, lon)) {
      std::string_view rest;
      std::optional<int64_t> time;
      const char* why = nullptr;
      if (!FirstField(line, vehicle, rest) || vehicle.empty()) {
        why = "no vehicle_id";
      } else {
        const size_t c1 = rest.find(','), c2 = rest.find(',', c1 == rest.npos ? c1 : c1 + 1);
        if (c1 == rest.npos || c2 == rest.npos || rest.find(',', c2 + 1) != rest.npos) {
          why = "not 4 fields";
        } else if (!(time = times.Read(rest.substr(0, c1)))) {
          why = "ts is not a time like 2026-11-28T10:00:00.123456Z";
        } else if (!ParseDegrees(rest.substr(c1 + 1, c2 - c1 - 1), -90, 90, lat)) {
          why = "lat is not a latitude";
        } else if (!ParseDegrees(rest.substr(c2 + 1), -180, 180, lon)) {
          why = "lon is not a longitude";
        }
      }
      if (why != nullptr) {
        if (bad++ == 0) first_bad = path + ": line " + std::to_string(line_no) + ": " + why;
        continue;
      }
      id = vehicle;
      ts = *time;
    }
    if (ts < from || ts >= to) continue;
    if (lat < envelope.min_lat || lat > envelope.max_lat || lon < envelope.min_lon ||
        lon > envelope.max_lon || !area.Covers(lon, lat)) {
      continue;
    }
    if (current == nullptr || current->vehicle != id) {
      current = &scan.found[std::string(id)];
      if (current->inside == 0) current->vehicle = id;
    }
    if (current->inside == 0 || ts < current->first_ns) current->first_ns = ts;
    if (current->inside == 0 || ts > current->last_ns) current->last_ns = ts;
    ++current->inside;
  }
  progress.Add(1, unreported);
  if (line_no == 0) scan.unread.push_back(path + ": empty: not even a header");
  if (bad > 0) {
    scan.bad_lines += bad;
    scan.bad_line.push_back(
        first_bad +
        (bad > 1 ? " (and " + std::to_string(bad - 1) + " more bad lines in the chunk)" : ""));
  }
}

/// A chunk that may hold samples in the area during the period.
struct Candidate {
  std::string path;
  bool summary_prunes = false;  // its summary says it holds none
  std::string no_summary;       // why it has no readable summary; empty when it has one
};

void PrintSome(const std::vector<std::string>& lines, const char* what, std::ostream& err) {
  constexpr size_t kShown = 10;
  for (size_t i = 0; i < lines.size() && i < kShown; ++i) err << "find: " << lines[i] << '\n';
  if (lines.size() > kShown) {
    err << "find: ... and " << lines.size() - kShown << " more " << what << '\n';
  }
}

int FindInArchive(const FindArgs& args, std::ostream& out, std::ostream& err) {
  namespace fs = std::filesystem;
  const auto started = std::chrono::steady_clock::now();
  const std::string geojson = ReadArea(args.area);
  const std::pair<int64_t, int64_t> period = ReadPeriod(args);
  const int64_t from = period.first, to = period.second;  // captured by the lambdas below
  GeosArea area(geojson, args.area, /*validate=*/true);
  const archive::Box envelope = area.envelope();

  const bool token = !args.sensor.empty() && args.sensor.size() <= 64 &&
                     std::all_of(args.sensor.begin(), args.sensor.end(), [](unsigned char c) {
                       return std::isalnum(c) || c == '_' || c == '-';
                     });
  if (!token) {
    throw Refused{kExitInvalid, "find: --sensor '" + args.sensor +
                                    "' is not a sensor name (1 to 64 of A-Z a-z 0-9 _ -)"};
  }
  const fs::path root(args.archive);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw Refused{kExitInvalid,
                  "find: the archive " + args.archive +
                      (fs::exists(root, ec) ? " is not a directory" : " does not exist")};
  }
  const fs::path sensor_dir = root / ("sensor=" + args.sensor);
  if (!fs::is_directory(sensor_dir, ec)) {
    std::vector<std::string> sensors;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.rfind("sensor=", 0) == 0) sensors.push_back(name);
    }
    std::sort(sensors.begin(), sensors.end());
    std::string held;
    for (const std::string& s : sensors) held += (held.empty() ? "" : ", ") + s;
    throw Refused{kExitInvalid,
                  "find: the archive " + args.archive + " has no folder sensor=" + args.sensor +
                      (sensors.empty() ? ": it holds no sensor=… folder (not an archive?)"
                                       : " (it holds " + held +
                                             "; --sensor names the position "
                                             "sensor)")};
  }

  // Every chunk of the sensor, pruned by period and cell from its path alone.
  uint64_t chunks = 0, by_period = 0, by_cell = 0, not_in_layout = 0;
  int64_t oldest = 0, newest = 0;  // the periods the chunks cover
  std::string first_not_in_layout;
  std::vector<Candidate> candidates;
  for (fs::recursive_directory_iterator it(sensor_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (!EndsWith(name, archive::kChunkSuffix) || !it->is_regular_file(type_ec)) continue;
    const std::string relative = it->path().lexically_relative(root).generic_string();
    const auto place = archive::ParseChunkPath(relative);
    if (!place || place->sensor != args.sensor) {
      if (not_in_layout++ == 0) first_not_in_layout = it->path().string();
      continue;
    }
    const int64_t period_end = place->period_start_ns + place->period_ns;
    oldest = chunks == 0 ? place->period_start_ns : std::min(oldest, place->period_start_ns);
    newest = chunks == 0 ? period_end : std::max(newest, period_end);
    ++chunks;
    if (place->period_start_ns >= to || period_end <= from) {
      ++by_period;
      continue;
    }
    const auto cell =
        place->cell == archive::kNoCell ? std::nullopt : archive::GeohashBox(place->cell);
    if (!cell || !cell->Intersects(envelope)) {
      ++by_cell;
      continue;
    }
    candidates.push_back({it->path().string(), false, ""});
  }
  if (ec) {
    throw Refused{kExitFatal,
                  "find: cannot list the archive " + sensor_dir.string() + ": " + ec.message()};
  }
  std::sort(candidates.begin(), candidates.end(),
            [](const Candidate& a, const Candidate& b) { return a.path < b.path; });

  // Then by summary: its times and the box of its positions.
  tbb::parallel_for(tbb::blocked_range<size_t>(0, candidates.size()),
                    [&](const tbb::blocked_range<size_t>& range) {
                      for (size_t i = range.begin(); i != range.end(); ++i) {
                        Candidate& c = candidates[i];
                        std::string json, why;
                        if (!ReadFile(archive::SummaryPathOf(c.path), json, why)) {
                          c.no_summary = why;
                          continue;
                        }
                        const auto s = archive::ParseSummary(json, &why);
                        if (!s) {
                          c.no_summary = why;
                          continue;
                        }
                        c.summary_prunes = s->last_ns < from || s->first_ns >= to ||
                                           (s->box && !s->box->Intersects(envelope));
                      }
                    });
  uint64_t by_summary = 0;
  std::vector<std::string> no_summary;
  std::vector<std::string> to_read;
  for (const Candidate& c : candidates) {
    if (c.summary_prunes) {
      ++by_summary;
      continue;
    }
    if (!c.no_summary.empty()) {
      no_summary.push_back(archive::SummaryPathOf(c.path) + ": " + c.no_summary +
                           " (its chunk is read whole)");
    }
    to_read.push_back(c.path);
  }

  // Then the chunks left, in parallel: each thread with its own GEOS context and prepared area.
  Progress progress(args.progress, err, to_read.size());
  tbb::enumerable_thread_specific<Scan> scans;
  tbb::enumerable_thread_specific<std::unique_ptr<GeosArea>> areas;
  tbb::parallel_for(tbb::blocked_range<size_t>(0, to_read.size(), 1),
                    [&](const tbb::blocked_range<size_t>& range) {
                      Scan& scan = scans.local();
                      for (size_t i = range.begin(); i != range.end(); ++i) {
                        const std::string& path = to_read[i];
                        try {
                          std::unique_ptr<GeosArea>& mine = areas.local();
                          if (!mine) mine = std::make_unique<GeosArea>(geojson, args.area, false);
                          std::string compressed, why;
                          if (!ReadFile(path, compressed, why)) {
                            scan.unread.push_back(path + ": cannot read it: " + why);
                          } else if (const auto csv = archive::Decompress(compressed, &why)) {
                            ScanChunk(*csv, path, from, to, *mine, scan, progress);
                            continue;
                          } else {
                            scan.unread.push_back(path + ": cannot decompress it: " + why);
                          }
                        } catch (const Refused& r) {
                          scan.unread.push_back(path + ": " + r.message);
                        } catch (const std::exception& e) {
                          scan.unread.push_back(path + ": " + e.what());
                        }
                        progress.Add(1, 0);
                      }
                    });
  progress.Finish();

  std::unordered_map<std::string, Found> merged;
  Scan all;
  for (Scan& scan : scans) {
    for (auto& [vehicle, f] : scan.found) {
      auto [entry, added] = merged.try_emplace(vehicle, f);
      if (added) continue;
      Found& m = entry->second;
      m.first_ns = std::min(m.first_ns, f.first_ns);
      m.last_ns = std::max(m.last_ns, f.last_ns);
      m.inside += f.inside;
    }
    all.samples += scan.samples;
    all.bad_lines += scan.bad_lines;
    all.unread.insert(all.unread.end(), scan.unread.begin(), scan.unread.end());
    all.bad_line.insert(all.bad_line.end(), scan.bad_line.begin(), scan.bad_line.end());
  }
  std::vector<Found> found;
  found.reserve(merged.size());
  for (auto& [vehicle, f] : merged) found.push_back(std::move(f));
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.vehicle < b.vehicle; });
  Print(found, args.format, out);

  std::sort(all.unread.begin(), all.unread.end());
  std::sort(all.bad_line.begin(), all.bad_line.end());
  std::sort(no_summary.begin(), no_summary.end());
  if (not_in_layout > 0) {
    err << "find: " << not_in_layout << " file" << (not_in_layout == 1 ? "" : "s") << " named *"
        << archive::kChunkSuffix << " not in the archive's layout, ignored: " << first_not_in_layout
        << (not_in_layout > 1 ? " and others" : "") << '\n';
  }
  PrintSome(no_summary, "chunks without a readable summary", err);
  PrintSome(all.unread, "chunks not read", err);
  PrintSome(all.bad_line, "chunks with bad lines", err);
  if (chunks == 0) {
    err << "find: the archive " << args.archive << " holds no chunk of sensor " << args.sensor
        << '\n';
  } else {
    if (from < oldest) {
      err << "find: the archive holds sensor " << args.sensor << " from " << FormatUtc(oldest)
          << " on: the period before it is not answered\n";
    }
    if (to > newest) {
      err << "find: the archive holds sensor " << args.sensor << " up to " << FormatUtc(newest)
          << '\n';
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  char elapsed[32];
  std::snprintf(elapsed, sizeof elapsed, "%.2f s", seconds);
  err << "find: " << found.size() << (found.size() == 1 ? " vehicle" : " vehicles")
      << " in the area from " << FormatUtc(from) << " to " << FormatUtc(to) << " (archive "
      << args.archive << ", sensor " << args.sensor << ": " << chunks << " chunks, skipped "
      << by_period << " by period, " << by_cell << " by cell, " << by_summary
      << " by summary; read " << to_read.size() - all.unread.size() << " of " << to_read.size()
      << (no_summary.empty()
              ? ""
              : " (" + std::to_string(no_summary.size()) + " without a readable summary)")
      << ", " << all.samples << " samples scanned"
      << (all.bad_lines == 0 ? "" : ", " + std::to_string(all.bad_lines) + " bad lines") << "; "
      << elapsed << ")\n";
  if (!all.unread.empty() || all.bad_lines > 0) {
    err << "find: the answer may be incomplete: " << all.unread.size() << " chunk"
        << (all.unread.size() == 1 ? "" : "s") << " not read, " << all.bad_lines << " bad line"
        << (all.bad_lines == 1 ? "" : "s") << '\n';
    return kExitFatal;
  }
  return 0;
}

}  // namespace

CLI::App* AddFindCommand(CLI::App& app, FindArgs& args) {
  auto* cmd = app.add_subcommand(
      "find",
      "Which vehicles were in an area during a period: one line per vehicle with its first and "
      "last time inside and the rows (--pg) or samples (--archive) inside (a position on the "
      "area's edge is inside).");
  cmd->add_option("--area", args.area,
                  "A GeoJSON file: a Polygon or MultiPolygon (or a Feature of one), longitude and "
                  "latitude in WGS 84")
      ->required();
  cmd->add_option("--from", args.from, "Start of the period (RFC 3339), included")->required();
  cmd->add_option("--to", args.to, "End of the period (RFC 3339), excluded")->required();
  cmd->add_flag("--pg", args.pg,
                "Answer from PostgreSQL: the 1 s rows of --table, positions tested with PostGIS "
                "(for the period the table still holds)");
  cmd->add_option("--archive", args.archive,
                  "Answer from the archive in this directory (docs/archive.md): the samples of "
                  "--sensor, in the chunks whose period, cell and summary may hold some in the "
                  "area, read in parallel, positions tested with GEOS");
  cmd->add_option("--sensor", args.sensor, "The archive's position sensor (--archive)")
      ->capture_default_str();
  cmd->add_option("--conninfo", args.conninfo,
                  "PostgreSQL connection string (default: FLEETFLOW_PG, else libpq's PG* "
                  "variables)");
  cmd->add_option("--table", args.table, "The sink's table of 1 s rows")->capture_default_str();
  cmd->add_option("--format", args.format,
                  "table, csv (a header, then one line per vehicle) or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"table", "csv", "json"}));
  cmd->footer(
      "Exactly one of --pg and --archive. Exit status 0, also when no vehicle was there; 1 when "
      "the database cannot answer or a chunk of the archive cannot be read (what was found is "
      "printed); 2 for a bad area, period, archive or option.\n\nExample:\n  fleetflow find "
      "--archive /var/lib/fleetflow/archive --area paris.geojson \\\n    --from "
      "2026-11-28T08:00:00Z --to 2026-11-28T10:00:00Z --format csv");
  // The reading's progress on stderr when it is a terminal.
  args.progress = isatty(STDERR_FILENO) != 0;
  return cmd;
}

int Find(const FindArgs& args, std::ostream& out, std::ostream& err) {
  try {
    if (args.pg && !args.archive.empty()) {
      throw Refused{kExitInvalid,
                    "find: --pg and --archive exclude each other: say where to look with one"};
    }
    if (!args.pg && args.archive.empty()) {
      throw Refused{kExitInvalid,
                    "find: say where to look: --pg (PostgreSQL's 1 s rows, with PostGIS) or "
                    "--archive DIR (the archive operator's files, docs/archive.md)"};
    }
    if (!args.archive.empty()) return FindInArchive(args, out, err);
    return FindInPostgres(args, out, err);
  } catch (const Refused& r) {
    err << r.message << '\n';
    return r.status;
  } catch (const pg::Error& e) {
    err << "find --pg: " << e.what() << '\n';
    return kExitFatal;
  }
}

}  // namespace fleetflow

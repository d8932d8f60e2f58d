#include "find.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <vector>

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
  doc.Parse(text.str().c_str());
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

int FindInPostgres(const FindArgs& args, std::ostream& out, std::ostream& err) {
  const std::string area = ReadArea(args.area);
  const int64_t from = ParseBound(args.from, "--from");
  const int64_t to = ParseBound(args.to, "--to");
  if (to <= from) {
    throw Refused{kExitInvalid, "find: the period from " + FormatUtc(from) + " to " +
                                    FormatUtc(to) + " is empty: --to must come after --from"};
  }
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

}  // namespace

CLI::App* AddFindCommand(CLI::App& app, FindArgs& args) {
  auto* cmd = app.add_subcommand(
      "find",
      "Which vehicles were in an area during a period: one line per vehicle with its first and "
      "last time inside and the rows inside (a position on the area's edge is inside).");
  cmd->add_option("--area", args.area,
                  "A GeoJSON file: a Polygon or MultiPolygon (or a Feature of one), longitude and "
                  "latitude in WGS 84")
      ->required();
  cmd->add_option("--from", args.from, "Start of the period (RFC 3339), included")->required();
  cmd->add_option("--to", args.to, "End of the period (RFC 3339), excluded")->required();
  cmd->add_flag("--pg", args.pg,
                "Answer from PostgreSQL: the 1 s rows of --table, positions tested with PostGIS "
                "(for the period the table still holds)");
  cmd->add_option("--conninfo", args.conninfo,
                  "PostgreSQL connection string (default: FLEETFLOW_PG, else libpq's PG* "
                  "variables)");
  cmd->add_option("--table", args.table, "The sink's table of 1 s rows")->capture_default_str();
  cmd->add_option("--format", args.format,
                  "table, csv (a header, then one line per vehicle) or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"table", "csv", "json"}));
  return cmd;
}

int Find(const FindArgs& args, std::ostream& out, std::ostream& err) {
  try {
    if (!args.pg) {
      throw Refused{kExitInvalid,
                    "find: say where to look: --pg (PostgreSQL's 1 s rows, with PostGIS)"};
    }
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

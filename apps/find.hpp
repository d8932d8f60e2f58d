#pragma once
/// `fleetflow find` (docs/cli.md): which vehicles were in an area during a period. With `--pg` it
/// asks PostgreSQL's 1 s rows (the sink's table, positions as its point geometry column or its
/// lat/lon columns) through PostGIS, for the period the table still holds; with `--archive` it
/// reads the archive operator's chunks of a position sensor (docs/archive.md), skipping those whose
/// period, cell or summary cannot hold a sample in the area, and tests the samples with GEOS. One
/// line per vehicle with its first and last time inside and the rows (samples) inside.

#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace fleetflow {

struct FindArgs {
  std::string area;  // a GeoJSON file: a Polygon or MultiPolygon (or a Feature of one), WGS 84
  std::string from;  // RFC 3339; included
  std::string to;    // RFC 3339; excluded
  bool pg = false;
  std::string conninfo;  // empty: FLEETFLOW_PG, else libpq's PG* variables
  std::string table = "vehicle_telemetry";
  std::string format = "table";  // table, csv or json
  std::string archive;           // the archive's root directory (find --archive)
  std::string sensor = "gps";    // the archive's position sensor
  bool progress = false;         // redraw the reading's progress on `err` (a terminal)
};

/// Adds the `find` subcommand and its options to `app`.
CLI::App* AddFindCommand(CLI::App& app, FindArgs& args);

/// Runs the search; the answer goes to `out`, what it says about it to `err`. Returns the exit
/// status: 0 (also when no vehicle was there), 1 when the database cannot answer (unreachable,
/// no PostGIS, no such table) or a chunk of the archive (or a line of one) could not be read (what
/// was found is printed, and may be incomplete), 2 for a bad area, period, archive or option.
int Find(const FindArgs& args, std::ostream& out, std::ostream& err);

}  // namespace fleetflow

#pragma once
/// timescale_sink: writes window rows to a PostgreSQL table, one row per (vehicle_id, time), one
/// column per configured sensor field: behind window_join interpolated at the window time, behind
/// window_aggregate a statistic of the window (time: the window's start).
///
/// Creates the table (and missing columns) on connect; makes it a hypertable with the configured
/// chunk interval, compression and retention when TimescaleDB can be used (installed,
/// preloaded, creatable: checked before CREATE EXTENSION), and uses a plain table otherwise
/// (timescaledb "auto", with one warning naming the reason and the fix) or refuses to start
/// ("on"). On TimescaleDB's Apache-licensed edition, which has no policy jobs, compress_after
/// is a configuration error and the sink applies retention itself (drop_chunks() on a thread
/// and session of its own). Rows are buffered and written in batches (COPY into a staging table,
/// then INSERT ... ON CONFLICT (vehicle_id, time) DO UPDATE), so a re-emitted window updates its
/// row instead of duplicating it. While PostgreSQL is down, the sink holds the rows and retries
/// with exponential backoff; Process() blocks only once max_pending_rows are held (this
/// backpressures the graph). Only a drain Tick gives up, after drain_timeout_ms, counting the
/// rows it could not write in sink_rows_dropped.
///
/// With the geometry setting, the table also has a PostGIS geometry column with a GiST index
/// (SinkGeometry), computed in the upsert; where PostGIS cannot be used, one warning and the
/// plain columns only.
///
/// Failover: every reconnect uses the configured conninfo again, so with a primary and its
/// standbys named together and target_session_attrs=read-write the sink follows a promotion.
/// It never writes to a server in recovery or a read-only session (held and retried, as when
/// unreachable). After a COMMIT whose outcome is unknown (the session broke during it), the
/// next write leaves rows that are in the table as sent alone, so none is written twice.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "message.hpp"
#include "options.hpp"
#include "registry.hpp"
#include "row_columns.hpp"

namespace fleetflow {

/// The column's SQL type: double precision, bigint for a count, timestamptz for a time.
std::string ColumnType(const RowColumn& column);

/// Whether the sink's table is a TimescaleDB hypertable (the timescaledb setting).
enum class TimescaleMode {
  kAuto,  ///< when TimescaleDB can be used, else a plain table with a warning
  kOn,    ///< required: the sink refuses to start without it
  kOff,   ///< always a plain table
};

/// The options of timescale_sink, parsed from its validated config (TimescaleSinkSpec()).
struct TimescaleSinkOptions {
  std::string conninfo;  ///< empty: libpq's environment
  std::string table;
  std::string key_column = "vehicle_id";  ///< the rows' key: a vehicle, or a cell of fleet rows
  std::vector<RowColumn> columns;
  size_t batch_rows = 0;
  size_t max_pending_rows = 0;
  std::chrono::milliseconds flush{0};
  std::chrono::milliseconds retry_initial{0};
  std::chrono::milliseconds retry_max{0};
  std::chrono::milliseconds drain_timeout{0};
  TimescaleMode timescale = TimescaleMode::kAuto;
  std::string chunk_interval;
  std::string compress_after;           ///< empty: no compression policy
  std::string retention;                ///< empty: rows kept forever
  std::string geometry;                 ///< the geometry column's name; empty: none
  std::string geometry_sensor = "gps";  ///< whose lat / lon columns make it
};

/// The geometry column of a sink (its geometry setting), in SRID 4326, computed by the database
/// in the upsert from value columns of the sink that hold geometry_sensor's position:
///  - rows of a window_join (no column has a stat): a Point (lon, lat) from the interpolated lat
///    and lon columns;
///  - statistics (window_aggregate): the bounding box from the min and max of lat and lon,
///    ST_Envelope of its corners: a Polygon, or a Point (LineString) when they are equal (on one
///    axis).
/// NULL when one of the numbers is NULL (no position at the window time, none in the window).
struct SinkGeometry {
  std::string name;  ///< empty: no geometry column
  bool box = false;  ///< statistics: the bounding box; else the point
  /// Indexes into the columns: the point's {lon, lat}; the box's {lon_min, lat_min, lon_max,
  /// lat_max}.
  std::vector<size_t> from;
  std::string problem;  ///< why the columns cannot make it, with the fix; "" when they can
};

/// The geometry column of `options` (name "" when it has none).
SinkGeometry GeometryOf(const TimescaleSinkOptions& options);

/// The geometry column's SQL type: geometry(Point, 4326) or, for a box, geometry(Geometry, 4326).
std::string GeometryType(const SinkGeometry& geometry);

/// The SQL expression of the geometry from `values`, the SQL of each column's value (same order
/// as the columns).
std::string GeometryExpression(const SinkGeometry& geometry,
                               const std::vector<std::string>& values);

inline constexpr char kTimescaleSinkName[] = "timescale_sink";

/// The spec of timescale_sink's settings, bound to TimescaleSinkOptions.
const OptionsSpec<TimescaleSinkOptions>& TimescaleSinkSpec();

/// The columns of a validated timescale_sink config, in order.
std::vector<RowColumn> SinkColumns(const Config& config);

/// Registers the operator "timescale_sink" (input: rows; no output).
void RegisterTimescaleSink(Registry& registry);

}  // namespace fleetflow

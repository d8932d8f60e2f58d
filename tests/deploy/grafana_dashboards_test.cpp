// Every query of the Grafana dashboards in deploy/grafana/dashboards (panels, template variables
// and annotations), with Grafana's PostgreSQL macros and the variables expanded for a fixed time
// range, runs on a real PostgreSQL filled by the pipeline (`fleetflow replay` of the committed
// recording; alarms of its vehicles in the rule node's table), as a role with only the grants
// docs/deploy.md gives Grafana's (and the alarm table), and returns rows of the shape its panel
// needs; on plain PostgreSQL and on TimescaleDB, both with
// pg_stat_statements, which the database dashboard reads. A query that errors, uses a macro this
// test does not know, or returns nothing fails. Every dashboard (the engine's, on Prometheus,
// too: prometheus_test.cpp runs its queries) has its identity and uses provisioned datasources
// only.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "build_paths.hpp"
#include "grafana_provisioning.hpp"
#include "grafana_sql.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kSource = ::fleetflow::testing::SourceDir();
const std::string kFleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";

// The committed recording's windows lie in 14:16:55-14:16:58 UTC
// (tests/data/fleet_seed42_rows.csv).
constexpr const char* kFrom = "2026-11-22T14:16:50Z";
constexpr const char* kTo = "2026-11-22T14:17:00Z";

/// The ranges each query runs for, all ending at kTo: one per table a dashboard picks (the 1 s
/// rows, the 1 min and 1 h statistics; the vehicle's and the fleet's thresholds differ), with
/// the interval Grafana gives a panel about 1 000 pixels wide.
const std::vector<GrafanaRange> kRanges = {
    {kFrom, kTo, "1s"},                    // 10 s: the 1 s rows
    {"2026-11-22T08:17:00Z", kTo, "1m"},   // 6 h: 1 min statistics
    {"2026-11-19T14:17:00Z", kTo, "5m"},   // 3 days: the vehicle's 1 min, the fleet's 1 h
    {"2026-10-23T14:17:00Z", kTo, "1h"}};  // 30 days: 1 h statistics

struct Column {
  std::string name, type;
  bool numeric() const {
    return type == "double precision" || type == "numeric" || type == "bigint" ||
           type == "integer" || type == "real";
  }
  bool time() const { return type.rfind("timestamp", 0) == 0 || numeric(); }
};

struct Result {
  std::vector<Column> columns;
  std::vector<std::string> rows;        // row_to_json of each row
  std::map<std::string, int> non_null;  // column -> rows where it is not NULL
};

/// Runs `sql` as a temporary view, with the libpq environment `env` (server, database, role):
/// its columns with their types, and its rows.
Result Query(const std::map<std::string, std::string>& env, const std::string& sql) {
  const CommandResult r = RunCommand(
      {FindServerBinary("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c",
       "CREATE TEMP VIEW panel AS " + sql, "-c",
       "SELECT attname || ':' || format_type(atttypid, atttypmod) FROM pg_attribute "
       "WHERE attrelid = 'panel'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
       "-c", "SELECT '{row}' || row_to_json(p)::text FROM panel p"},
      60s, env);
  if (r.exit_code != 0) throw std::runtime_error("query failed: " + r.err + "\n" + sql);
  Result result;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("{row}", 0) == 0) {
      result.rows.push_back(line.substr(5));
      rapidjson::Document row;
      row.Parse(result.rows.back().c_str());
      for (auto it = row.MemberBegin(); it != row.MemberEnd(); ++it) {
        if (!it->value.IsNull()) ++result.non_null[it->name.GetString()];
      }
    } else if (const size_t colon = line.find(':'); colon != std::string::npos) {
      result.columns.push_back({line.substr(0, colon), line.substr(colon + 1)});
    }
  }
  return result;
}

using Preload = PostgresServer::Preload;

/// The tier tables of pipelines/tiers.json, the period of each one's rows.
const std::vector<std::pair<std::string, int>> kTiers = {
    {"vehicle_telemetry", 1}, {"vehicle_stats_1m", 60}, {"vehicle_stats_1h", 3600}};

/// The table of a rule node's alarms, as its `table` makes it (operators/alarms/alarm_actions.cpp,
/// AlarmActions::CreateTableSql): one row per alarm, `cleared` NULL while it is active.
constexpr const char* kAlarmTable =
    "CREATE TABLE IF NOT EXISTS vehicle_alarms (vehicle_id text NOT NULL, rule text NOT NULL, "
    "raised timestamptz NOT NULL, cleared timestamptz, severity text NOT NULL, "
    "value double precision, clear_value double precision, message text, "
    "PRIMARY KEY (vehicle_id, rule, raised)); "
    "CREATE INDEX IF NOT EXISTS vehicle_alarms_raised_idx ON vehicle_alarms (raised)";

/// A PostgreSQL as the dashboards find it: the tables of pipelines/tiers.json filled by the
/// pipeline and the generated history, the alarms of pipelines/jetstream-tiers.json's rule node,
/// pg_stat_statements counting since before the engine wrote, and the role Grafana connects as.
struct DashboardDatabase {
  std::unique_ptr<PostgresServer> pg;
  int replay_exit = -1;
  std::string replay_err;

  /// libpq environment of the role "grafana", with the grants docs/deploy.md gives it.
  std::map<std::string, std::string> grafana() const {
    auto env = pg->env();
    env["PGUSER"] = "grafana";
    return env;
  }
};

std::unique_ptr<DashboardDatabase> FillDatabase(Preload preload) {
  auto db = std::make_unique<DashboardDatabase>();
  db->pg = std::make_unique<PostgresServer>(preload | Preload::kPgStatStatements);
  PostgresServer& pg = *db->pg;
  pg.Start();
  // What a DBA does once the library is preloaded (docs/deploy.md, Grafana).
  pg.Psql("CREATE EXTENSION pg_stat_statements");
  // The same rows the pipeline writes live, from the committed recording, through the pipeline
  // with the statistics tiers: its tables are the ones the dashboards read.
  // Its retentions (7 and 90 days of the server's clock) would drop the recording's day
  // (2026-11-22) as it is written once that day is older: here they keep a century, which
  // changes nothing else (a table with a retention is still partitioned by time).
  const TempDir dir("fleetflow-dashboards");
  const std::string pipeline = dir.File("tiers.json");
  const std::string shipped = ReadFile(kSource + "/pipelines/tiers.json");
  const std::string kept = std::regex_replace(shipped, std::regex(R"("retention": "[0-9]+ days")"),
                                              R"("retention": "36500 days")");
  if (kept == shipped) {
    db->replay_err = "pipelines/tiers.json has no \"retention\": \"N days\" to lengthen";
    return db;
  }
  std::ofstream(pipeline) << kept;
  const CommandResult r =
      RunCommand({kFleetflow, "replay", kSource + "/tests/data/fleet_seed42.ffrc", "--pipeline",
                  pipeline, "--metrics-port", "-1"},
                 120s, pg.env());
  db->replay_exit = r.exit_code;
  db->replay_err = r.err;
  if (r.exit_code != 0) return db;
  // The recording lasts seconds: its minute and hour are still open at its end. The history the
  // longer ranges read is generated for the same vehicles: a minute row each for the day before
  // kTo, an hour row each for the 30 days before (plausible values, one sample a second).
  const std::string stats =
      "speed_samples, speed_mean, speed_min, speed_max, soc_first, soc_last, soc_min, "
      "torque_mean, torque_max, gps_samples, lat_min, lat_max, lon_min, lon_max, lat_last, "
      "lon_last, distance_m, last_seen";
  const auto generate = [&](const std::string& table, const std::string& span,
                            const std::string& step, int samples) {
    const std::string n = std::to_string(samples);
    // On plain PostgreSQL a table with a retention is partitioned by time, its partitions made
    // by the sink as it writes: the history's go to a default partition. On TimescaleDB the
    // hypertable makes the chunks.
    if (pg.Psql("SELECT relkind FROM pg_class WHERE relname = '" + table + "'") == "p") {
      pg.Psql("CREATE TABLE " + table + "_history PARTITION OF " + table + " DEFAULT");
    }
    pg.Psql("INSERT INTO " + table + " (vehicle_id, time, " + stats + ") SELECT v, t, " + n +
            ", 10 + 5 * sin(extract(epoch FROM t) / 3600), 2, 30, "
            "80, 79.5, 79.5, 50, 120, " +
            n +
            ", 48.13, 48.15, 11.56, 11.59, 48.14, 11.575, "
            "300, t + interval '" +
            step +
            "' - interval '1 second' "
            "FROM (SELECT DISTINCT vehicle_id AS v FROM vehicle_telemetry) vs, "
            "generate_series(timestamptz '" +
            kTo + "' - interval '" + span +
            "', "
            "timestamptz '" +
            kTo + "' - interval '" + step + "', interval '" + step + "') t ON CONFLICT DO NOTHING");
  };
  generate("vehicle_stats_1m", "1 day", "1 minute", 60);
  generate("vehicle_stats_1h", "30 days", "1 hour", 3600);
  // The rows across vehicles of the generated minutes, as fleet_aggregate makes them: per
  // geohash cell of 5 characters (PostGIS's, which the sinks' geometry brought) and the fleet.
  if (pg.Psql("SELECT relkind FROM pg_class WHERE relname = 'fleet_cells_1m'") == "p") {
    pg.Psql("CREATE TABLE fleet_cells_1m_history PARTITION OF fleet_cells_1m DEFAULT");
  }
  for (const std::string key :
       {"ST_GeoHash(ST_SetSRID(ST_MakePoint(lon_last, lat_last), 4326), 5)", "'fleet'"}) {
    pg.Psql(
        "INSERT INTO fleet_cells_1m (cell, time, vehicles, moving, speed_mean, speed_max, "
        "soc_mean, soc_min) SELECT " +
        key +
        ", time, count(*), sum((speed_max >= 1)::int), avg(speed_mean), max(speed_max), "
        "avg(soc_last), min(soc_last) FROM vehicle_stats_1m GROUP BY 1, 2 "
        "ON CONFLICT DO NOTHING");
  }
  // The alarms of the recording's vehicles, as the rule node writes them: an overspeed raised and
  // cleared, a low state of charge still active, a torque spike without value or message (NULL
  // in the table), each within the recording's seconds.
  pg.Psql(kAlarmTable);
  pg.Psql(
      "INSERT INTO vehicle_alarms (vehicle_id, rule, raised, cleared, severity, value, "
      "clear_value, message) SELECT vehicle_id, 'overspeed', min(time), min(time) + interval "
      "'2 seconds', 'critical', max(speed), min(speed), 'above 130 km/h for 5 s' FROM "
      "vehicle_telemetry GROUP BY vehicle_id UNION ALL SELECT vehicle_id, 'low_soc', min(time) + "
      "interval '1 second', NULL, 'warning', min(soc), NULL, 'state of charge below 15 %' FROM "
      "vehicle_telemetry GROUP BY vehicle_id UNION ALL SELECT vehicle_id, 'torque_spike', "
      "max(time), NULL, 'info', NULL, NULL, NULL FROM vehicle_telemetry GROUP BY vehicle_id");
  // As autovacuum does soon after such inserts: the database dashboard shows when.
  pg.Psql("VACUUM ANALYZE vehicle_telemetry, vehicle_stats_1m, vehicle_stats_1h, fleet_cells_1m");
  // Grafana's role as docs/deploy.md makes it: reads the tier tables and the statistics.
  pg.Psql(kGrafanaRoleSql);
  pg.Psql("GRANT SELECT ON vehicle_alarms TO grafana");
  return db;
}

/// Runs every query of dashboard `file` (variables, then panels) for `range` on `db` as
/// Grafana's role and checks that it returns rows of its panel's shape; adds the panels' types to
/// `panel_types` and the queries run to `queries`.
void CheckDashboardQueries(const DashboardDatabase& db, const std::string& file,
                           const GrafanaRange& range, int vehicles_in_range,
                           std::set<std::string>& panel_types, int& queries) {
  const std::string datasource_uid = "fleetflow-pg";
  const auto env = db.grafana();
  const rapidjson::Document dash = LoadJson(file);
  ASSERT_FALSE(Str(dash, "uid").empty());

  // Template variables: run their queries; the first value is the one the panels get.
  std::map<std::string, std::string> vars;
  if (dash.HasMember("templating")) {
    for (const auto& v : dash["templating"]["list"].GetArray()) {
      SCOPED_TRACE("variable " + Str(v, "name"));
      ASSERT_EQ(Str(v, "type"), "query");
      EXPECT_EQ(Str(v["datasource"], "uid"), datasource_uid);
      const Result r = Query(env, ExpandGrafanaSql(Str(v, "query"), vars, range));
      ++queries;
      ASSERT_EQ(r.columns.size(), 1u);
      ASSERT_EQ(static_cast<int>(r.rows.size()), vehicles_in_range);
      rapidjson::Document first;
      first.Parse(r.rows.front().c_str());
      vars[Str(v, "name")] = first.MemberBegin()->value.GetString();
    }
  }

  // Annotation queries: Grafana takes `time` (and `timeend` for a region), `text` and `tags`.
  if (dash.HasMember("annotations")) {
    for (const auto& a : dash["annotations"]["list"].GetArray()) {
      SCOPED_TRACE("annotation '" + Str(a, "name") + "'");
      EXPECT_EQ(Str(a["datasource"], "uid"), datasource_uid);
      ASSERT_TRUE(a.HasMember("target"));
      EXPECT_EQ(Str(a["target"]["datasource"], "uid"), datasource_uid);
      EXPECT_EQ(Str(a["target"], "format"), "table");
      Result r;
      ASSERT_NO_THROW(r = Query(env, ExpandGrafanaSql(Str(a["target"], "rawSql"), vars, range)));
      ++queries;
      ASSERT_FALSE(r.rows.empty()) << "no rows";
      ASSERT_FALSE(r.columns.empty());
      EXPECT_EQ(r.columns[0].name, "time");
      for (const Column& c : r.columns) {
        SCOPED_TRACE("column " + c.name);
        EXPECT_TRUE(c.name == "time" || c.name == "timeend" || c.name == "text" ||
                    c.name == "tags");
        if (c.name == "time" || c.name == "timeend") {
          EXPECT_TRUE(c.time()) << c.type;
        } else {
          EXPECT_EQ(c.type, "text");
        }
        if (c.name != "tags") {
          EXPECT_EQ(r.non_null[c.name], static_cast<int>(r.rows.size())) << "NULL in some row";
        }
      }
      // The alarms of the vehicle the variable chose that overlap the range: each one.
      if (vars.count("vehicle")) {
        const std::string overlapping =
            db.pg->Psql("SELECT count(*) FROM vehicle_alarms WHERE vehicle_id = '" +
                        vars["vehicle"] + "' AND raised <= '" + range.to +
                        "' AND (cleared IS NULL OR cleared >= '" + range.from + "')");
        EXPECT_EQ(std::to_string(r.rows.size()), overlapping);
      }
    }
  }

  for (const auto& panel : dash["panels"].GetArray()) {
    const std::string type = Str(panel, "type");
    SCOPED_TRACE("panel '" + Str(panel, "title") + "' (" + type + ")");
    panel_types.insert(type);
    ASSERT_TRUE(panel.HasMember("targets") && !panel["targets"].Empty());
    EXPECT_EQ(Str(panel["datasource"], "uid"), datasource_uid);
    for (const auto& target : panel["targets"].GetArray()) {
      EXPECT_EQ(Str(target["datasource"], "uid"), datasource_uid);
      const std::string format = Str(target, "format");
      Result r;
      ASSERT_NO_THROW(r = Query(env, ExpandGrafanaSql(Str(target, "rawSql"), vars, range)));
      ++queries;
      ASSERT_FALSE(r.rows.empty()) << "no rows";
      auto has_values = [&](const Column& c) { return r.non_null[c.name] > 0; };
      if (format == "time_series") {
        // Grafana needs a column "time" (timestamp or epoch) and at least one numeric series; a
        // text column "metric" names the series of each row (one query, several series).
        ASSERT_GE(r.columns.size(), 2u);
        EXPECT_EQ(r.columns[0].name, "time");
        EXPECT_TRUE(r.columns[0].time()) << r.columns[0].type;
        bool by_metric = false;
        for (size_t i = 1; i < r.columns.size(); ++i) {
          if (r.columns[i].name == "metric" && r.columns[i].type == "text") {
            by_metric = true;
            continue;
          }
          EXPECT_TRUE(r.columns[i].numeric()) << r.columns[i].name << ": " << r.columns[i].type;
          EXPECT_TRUE(has_values(r.columns[i])) << r.columns[i].name << " is always NULL";
        }
        // One table answers: two that overlap would give a time twice (of one series).
        std::map<std::string, std::set<std::string>> times;
        size_t points = 0;
        for (const auto& row : r.rows) {
          rapidjson::Document d;
          d.Parse(row.c_str());
          const std::string series = by_metric ? Str(d, "metric") : "";
          EXPECT_TRUE(times[series]
                          .insert(d["time"].IsString() ? d["time"].GetString()
                                                       : std::to_string(d["time"].GetDouble()))
                          .second)
              << "a time given twice: " << row;
          ++points;
        }
        EXPECT_GE(points, 2u) << "a time series of one point";
      } else {
        ASSERT_EQ(format, "table");
        for (const Column& c : r.columns) {
          EXPECT_TRUE(has_values(c)) << c.name << " is always NULL";
        }
      }
      if (type == "geomap" && Str(panel["options"]["layers"][0]["location"], "mode") == "geohash") {
        // One marker per cell: a geohash of the field the layer names, or the fleet's row.
        const std::string field = Str(panel["options"]["layers"][0]["location"], "geohash");
        for (const auto& row : r.rows) {
          rapidjson::Document d;
          d.Parse(row.c_str());
          ASSERT_TRUE(d.HasMember(field.c_str()) && d[field.c_str()].IsString()) << row;
          const std::string cell = d[field.c_str()].GetString();
          EXPECT_TRUE(!cell.empty() && cell.find_first_not_of("0123456789bcdefghjkmnpqrstuvwxyz") ==
                                           std::string::npos)
              << "not a geohash: " << row;
        }
      } else if (type == "geomap") {
        // One marker per vehicle, at a plausible position.
        std::set<std::string> names;
        for (const Column& c : r.columns) names.insert(c.name);
        EXPECT_TRUE(names.count("lat") && names.count("lon") && names.count("vehicle_id"));
        EXPECT_EQ(static_cast<int>(r.rows.size()), vehicles_in_range);
        for (const auto& row : r.rows) {
          rapidjson::Document d;
          d.Parse(row.c_str());
          EXPECT_TRUE(d["lat"].IsNumber() && std::abs(d["lat"].GetDouble()) <= 90) << row;
          EXPECT_TRUE(d["lon"].IsNumber() && std::abs(d["lon"].GetDouble()) <= 180) << row;
        }
      }
    }
  }
}

/// Every PostgreSQL dashboard's queries on `db`, for each range of kRanges the dashboard reads.
void CheckEveryDashboard(const DashboardDatabase& db) {
  ASSERT_EQ(ProvisionedDatasources()["fleetflow-pg"], "postgres")
      << "deploy/grafana/provisioning/datasources must provision the datasource the dashboards use";
  const auto files = DashboardFiles("postgres");
  ASSERT_EQ(files.size(), 6u) << "fleet map, one vehicle, fleet aggregates; one vehicle and the "
                                 "fleet over weeks; the database";
  const int vehicles_in_range = std::stoi(
      db.pg->Psql("SELECT count(DISTINCT vehicle_id) FROM vehicle_telemetry WHERE time BETWEEN '" +
                  std::string(kFrom) + "' AND '" + kTo + "'"));
  ASSERT_GT(vehicles_in_range, 1);

  std::set<std::string> panel_types;
  int queries = 0;
  for (const auto& range : kRanges) {
    for (const auto& file : files) {
      // The dashboards of the 1 s rows are for minutes: only the "over weeks" ones and the
      // database's (rows per second of each tier) pick tables.
      const bool picks_tables = file.find("-history.json") != std::string::npos ||
                                file.find("/database.json") != std::string::npos;
      if (!picks_tables && &range != &kRanges.front()) continue;
      SCOPED_TRACE(file + ", " + range.from + " to " + range.to);
      CheckDashboardQueries(db, file, range, vehicles_in_range, panel_types, queries);
    }
  }
  EXPECT_TRUE(panel_types.count("geomap")) << "the fleet map";
  EXPECT_TRUE(panel_types.count("timeseries"));
  EXPECT_TRUE(panel_types.count("table"));
  std::cout << "ran " << queries << " dashboard queries on " << files.size() << " dashboards, "
            << kRanges.size() << " ranges\n";
}

/// The rows of the query of the panel titled `title` of the database dashboard, for `range`, as
/// Grafana's role; each row parsed.
std::vector<rapidjson::Document> DatabasePanelRows(const DashboardDatabase& db,
                                                   const std::string& title,
                                                   const GrafanaRange& range = kRanges.front()) {
  const rapidjson::Document dash = LoadJson(kGrafanaDir + "/dashboards/database.json");
  for (const auto& panel : dash["panels"].GetArray()) {
    if (Str(panel, "title") != title) continue;
    const Result r =
        Query(db.grafana(), ExpandGrafanaSql(Str(panel["targets"][0], "rawSql"), {}, range));
    std::vector<rapidjson::Document> rows(r.rows.size());
    for (size_t i = 0; i < r.rows.size(); ++i) rows[i].Parse(r.rows[i].c_str());
    return rows;
  }
  throw std::runtime_error("database.json has no panel '" + title + "'");
}

double Number(const rapidjson::Value& row, const char* column) {
  if (!row.HasMember(column) || !row[column].IsNumber()) {
    throw std::runtime_error(std::string("no number in column '") + column + "'");
  }
  return row[column].GetDouble();
}

/// What the database dashboard shows of `db` is what PostgreSQL knows another way: the sink's
/// upsert of vehicle_telemetry with the rows it wrote; each tier table with its size, the same
/// as TimescaleDB's hypertable_size() or the sum over pg_partition_tree(); the rows per second
/// of each tier that the range reads, adding up to the rows of the range.
void CheckDatabaseDashboard(const DashboardDatabase& db, bool timescaledb) {
  const PostgresServer& pg = *db.pg;
  const double sink_rows = std::stod(pg.Psql("SELECT count(*) FROM vehicle_telemetry"));
  ASSERT_GT(sink_rows, 0);
  {
    SCOPED_TRACE("panel 'The sink's statements'");
    std::map<std::string, std::pair<double, double>> statements;  // label -> calls, rows
    for (const auto& row : DatabasePanelRows(db, "The sink's statements")) {
      statements[Str(row, "statement")] = {Number(row, "calls"), Number(row, "rows")};
    }
    ASSERT_TRUE(statements.count("upsert into vehicle_telemetry"));
    EXPECT_GT(statements["upsert into vehicle_telemetry"].first, 0);
    EXPECT_EQ(statements["upsert into vehicle_telemetry"].second, sink_rows)
        << "the upserts' rows are the rows the sink wrote (the replay only)";
    ASSERT_TRUE(statements.count("COPY into the staging table (every sink)"));
    EXPECT_GE(statements["COPY into the staging table (every sink)"].second, sink_rows);
    for (const auto& [label, values] : statements) {
      EXPECT_TRUE(label.rfind("upsert into ", 0) == 0 || label.rfind("COPY ", 0) == 0 ||
                  label.rfind("staging table ", 0) == 0)
          << "not a statement of the sink: " << label;
    }
  }
  {
    SCOPED_TRACE("panel 'Table and index size per tier'");
    std::map<std::string, const rapidjson::Document*> by_table;
    const auto rows = DatabasePanelRows(db, "Table and index size per tier");
    for (const auto& row : rows) by_table[Str(row, "table")] = &row;
    ASSERT_EQ(by_table.size(), kTiers.size() + 1) << "the tiers and fleet_cells_1m";
    auto tables = kTiers;
    tables.emplace_back("fleet_cells_1m", 60);
    for (const auto& [table, period_s] : tables) {
      SCOPED_TRACE(table);
      ASSERT_TRUE(by_table.count(table));
      const rapidjson::Value& row = *by_table[table];
      EXPECT_GT(Number(row, "data"), 0);
      EXPECT_GT(Number(row, "indexes"), 0);
      EXPECT_EQ(Number(row, "total"), Number(row, "data") + Number(row, "indexes"));
      EXPECT_EQ(Number(row, "rows"), std::stod(pg.Psql("SELECT count(*) FROM " + table)));
      const std::string expected =
          timescaledb ? pg.Psql("SELECT hypertable_size('" + table + "')")
                      : pg.Psql(
                            "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM "
                            "pg_partition_tree('" +
                            table + "')), pg_total_relation_size('" + table + "'))");
      EXPECT_EQ(Number(row, "total"), std::stod(expected));
      const std::string parts =
          timescaledb ? pg.Psql("SELECT count(*) FROM show_chunks('" + table + "')")
                      : pg.Psql("SELECT count(*) FROM pg_inherits WHERE inhparent = '" + table +
                                "'::regclass");
      EXPECT_EQ(Number(row, "partitions or chunks"), std::stod(parts));
    }
  }
  {
    SCOPED_TRACE("panel 'Rows per second per tier'");
    // Which tiers each range reads: the 1 s rows up to 1 hour, the minutes up to 1 day, the hours
    // always. Besides kRanges an hour of 5 s buckets: finer than a minute, so a tier's rows are
    // counted per bucket of its own period.
    const std::vector<std::pair<GrafanaRange, std::set<std::string>>> ranges = {
        {kRanges[0], {"vehicle_telemetry"}},
        {{"2026-11-22T13:17:00Z", kTo, "5s"},
         {"vehicle_telemetry", "vehicle_stats_1m", "vehicle_stats_1h"}},
        {kRanges[1], {"vehicle_stats_1m", "vehicle_stats_1h"}},
        {kRanges[2], {"vehicle_stats_1h"}},
        {kRanges[3], {"vehicle_stats_1h"}}};
    for (const auto& [range, read] : ranges) {
      SCOPED_TRACE(range.from + " to " + range.to + ", " + range.interval);
      std::map<std::string, double> rows_in_range;  // rows per second x bucket, summed
      for (const auto& row : DatabasePanelRows(db, "Rows per second per tier", range)) {
        const std::string table = Str(row, "metric");
        const auto tier = std::find_if(kTiers.begin(), kTiers.end(),
                                       [&](const auto& t) { return t.first == table; });
        ASSERT_NE(tier, kTiers.end()) << table;
        const double bucket_s = std::max<double>(
            static_cast<double>(GrafanaIntervalSeconds(range.interval)), tier->second);
        rows_in_range[table] += Number(row, "rows per second") * bucket_s;
      }
      std::set<std::string> tables;
      for (const auto& [table, rows] : rows_in_range) tables.insert(table);
      EXPECT_EQ(tables, read);
      for (const auto& [table, rows] : rows_in_range) {
        const double expected =
            std::stod(pg.Psql("SELECT count(*) FROM " + table + " WHERE time BETWEEN '" +
                              range.from + "' AND '" + range.to + "'"));
        EXPECT_NEAR(rows, expected, 1e-6 * expected) << table;
      }
    }
  }
}

class GrafanaDashboardsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (PostgresServer::Available()) db_ = FillDatabase(Preload::kNothing);
  }
  static void TearDownTestSuite() { db_.reset(); }
  void SetUp() override {
    FF_REQUIRE_POSTGRES();
    ASSERT_EQ(db_->replay_exit, 0) << db_->replay_err;
    ASSERT_NE(db_->pg->Psql("SELECT count(*) FROM vehicle_telemetry"), "0");
  }

  static std::unique_ptr<DashboardDatabase> db_;
};
std::unique_ptr<DashboardDatabase> GrafanaDashboardsTest::db_;

TEST_F(GrafanaDashboardsTest, EveryPanelQueryReturnsRowsOfItsPanelsShape) {
  CheckEveryDashboard(*db_);
}

TEST_F(GrafanaDashboardsTest, DatabaseDashboardShowsTheSinksStatementsAndEachTierTable) {
  CheckDatabaseDashboard(*db_, /*timescaledb=*/false);
}

/// The same on TimescaleDB (scripts/timescaledb.sh): the tier tables are hypertables.
class GrafanaDashboardsOnTimescaleDbTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (PostgresServer::Available() && PostgresServer::TimescaleDbInstalled()) {
      db_ = FillDatabase(Preload::kTimescaleDb);
    }
  }
  static void TearDownTestSuite() { db_.reset(); }
  void SetUp() override {
    FF_REQUIRE_POSTGRES();
    FF_REQUIRE_TIMESCALEDB();
    ASSERT_EQ(db_->replay_exit, 0) << db_->replay_err;
    ASSERT_EQ(db_->pg->Psql("SELECT count(*) FROM timescaledb_information.hypertables"), "4")
        << "the sink makes each table of pipelines/tiers.json a hypertable";
  }

  static std::unique_ptr<DashboardDatabase> db_;
};
std::unique_ptr<DashboardDatabase> GrafanaDashboardsOnTimescaleDbTest::db_;

TEST_F(GrafanaDashboardsOnTimescaleDbTest, EveryPanelQueryReturnsRowsOfItsPanelsShape) {
  CheckEveryDashboard(*db_);
}

TEST_F(GrafanaDashboardsOnTimescaleDbTest,
       DatabaseDashboardShowsTheSinksStatementsAndEachTierTable) {
  CheckDatabaseDashboard(*db_, /*timescaledb=*/true);
}

/// The field config Grafana applies to field `name` of `panel`: the defaults, then the
/// properties of the overrides that match it by name.
std::map<std::string, const rapidjson::Value*> FieldConfig(const rapidjson::Value& panel,
                                                           const std::string& name) {
  std::map<std::string, const rapidjson::Value*> config;
  if (!panel.HasMember("fieldConfig")) return config;
  const rapidjson::Value& fc = panel["fieldConfig"];
  if (fc.HasMember("defaults")) {
    for (const auto& m : fc["defaults"].GetObject()) config[m.name.GetString()] = &m.value;
  }
  if (!fc.HasMember("overrides")) return config;
  for (const auto& o : fc["overrides"].GetArray()) {
    if (Str(o["matcher"], "id") != "byName" || Str(o["matcher"], "options") != name) continue;
    for (const auto& prop : o["properties"].GetArray()) config[Str(prop, "id")] = &prop["value"];
  }
  return config;
}

// Every column of vehicle_telemetry a panel shows gets the unit of what the engine stores
// (fleet-sim and the wire contract: speed in m/s, soc in %, torque in Nm, positions in WGS84
// degrees) and a precision that shows it: 5 decimals of a degree are about a metre, 1 is 11 km.
// Only soc is a 0-100 range.
TEST(GrafanaDashboardUnitsTest, EveryShownColumnHasItsUnitAndPrecision) {
  const std::map<std::string, std::string> kUnit = {
      {"speed", "velocityms"}, {"soc", "percent"}, {"torque", "forceNm"}};
  const std::regex column(R"(\b(lat|lon|speed|soc|torque)\b)");
  int checked = 0;
  for (const auto& file : DashboardFiles("postgres")) {
    const rapidjson::Document dash = LoadJson(file);
    for (const auto& panel : dash["panels"].GetArray()) {
      SCOPED_TRACE(file + ": panel '" + Str(panel, "title") + "'");
      std::set<std::string> shown;
      for (const auto& target : panel["targets"].GetArray()) {
        const std::string sql = Str(target, "rawSql");
        for (auto it = std::sregex_iterator(sql.begin(), sql.end(), column);
             it != std::sregex_iterator(); ++it) {
          shown.insert((*it)[1]);
        }
      }
      for (const std::string& name : shown) {
        SCOPED_TRACE("field " + name);
        const auto config = FieldConfig(panel, name);
        const auto text = [&](const char* key) {
          const auto it = config.find(key);
          return it != config.end() && it->second->IsString() ? std::string(it->second->GetString())
                                                              : std::string();
        };
        const auto number = [&](const char* key) -> std::optional<double> {
          const auto it = config.find(key);
          if (it == config.end() || !it->second->IsNumber()) return std::nullopt;
          return it->second->GetDouble();
        };
        if (name == "lat" || name == "lon") {
          EXPECT_TRUE(text("unit").empty() || text("unit") == "none" || text("unit") == "degree")
              << text("unit");
          EXPECT_GE(number("decimals").value_or(0), 5) << "a degree needs 5 decimals (1 m)";
        } else {
          EXPECT_EQ(text("unit"), kUnit.at(name));
        }
        if (name != "soc") {
          EXPECT_FALSE(number("max").has_value()) << "a 0-100 range belongs to soc only";
        }
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 29) << "columns shown by the five dashboards' panels";
}

// What Grafana needs to provision every dashboard next to the others: a unique uid, a title in the
// "fleetflow: " series and the tag, panels with unique ids inside the 24 columns, each with a
// datasource and queries; and every datasource reference names a datasource that
// deploy/grafana/provisioning provisions, with its type.
TEST(GrafanaProvisioningTest, EveryDashboardHasItsIdentityAndUsesProvisionedDatasources) {
  const auto datasources = ProvisionedDatasources();
  EXPECT_EQ(datasources,
            (std::map<std::string, std::string>{{"fleetflow-pg", "postgres"},
                                                {"fleetflow-prometheus", "prometheus"}}));
  const auto files = DashboardFiles();
  EXPECT_EQ(files.size(), 7u) << "fleet map, one vehicle, fleet aggregates, the two over weeks, "
                                 "database, engine";
  EXPECT_EQ(DashboardFiles("prometheus"),
            std::vector<std::string>{kGrafanaDir + "/dashboards/engine.json"});
  std::set<std::string> uids;
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const rapidjson::Document dash = LoadJson(file);
    EXPECT_TRUE(uids.insert(Str(dash, "uid")).second) << "uid '" << Str(dash, "uid") << "' twice";
    EXPECT_FALSE(Str(dash, "uid").empty());
    EXPECT_EQ(Str(dash, "title").rfind("fleetflow: ", 0), 0u) << Str(dash, "title");
    ASSERT_TRUE(dash.HasMember("tags") && dash["tags"].IsArray());
    EXPECT_EQ(std::count_if(dash["tags"].Begin(), dash["tags"].End(),
                            [](const auto& t) { return t == "fleetflow"; }),
              1);
    ASSERT_TRUE(dash.HasMember("panels") && dash["panels"].IsArray() && !dash["panels"].Empty());
    std::set<int> ids;
    for (const auto& panel : dash["panels"].GetArray()) {
      SCOPED_TRACE("panel '" + Str(panel, "title") + "'");
      EXPECT_TRUE(panel["id"].IsInt() && ids.insert(panel["id"].GetInt()).second);
      EXPECT_TRUE(panel.HasMember("datasource"));
      EXPECT_TRUE(panel.HasMember("targets") && !panel["targets"].Empty());
      const auto& pos = panel["gridPos"];
      EXPECT_LE(pos["x"].GetInt() + pos["w"].GetInt(), 24);
    }
    int refs = 0;
    ForEachDatasourceRef(dash, [&](const rapidjson::Value& ds) {
      ++refs;
      const auto it = datasources.find(Str(ds, "uid"));
      ASSERT_NE(it, datasources.end())
          << "datasource uid '" << Str(ds, "uid") << "' is not provisioned";
      EXPECT_EQ(Str(ds, "type"), it->second) << "datasource " << it->first;
    });
    EXPECT_GT(refs, 0);
  }
}

TEST(GrafanaSqlTest, MacroExpansionMatchesGrafana) {
  const GrafanaRange range{kFrom, kTo, "1s"};
  EXPECT_EQ(ExpandGrafanaSql(
                "SELECT $__timeGroupAlias(time, $__interval) WHERE $__timeFilter(time)", {}, range),
            "SELECT floor(extract(epoch from time)/1)*1 AS \"time\" WHERE time BETWEEN "
            "'2026-11-22T14:16:50Z' AND '2026-11-22T14:17:00Z'");
  EXPECT_EQ(
      ExpandGrafanaSql("$__timeGroup(t, '5m') x = '$v' AND $__timeTo()", {{"v", "v7"}}, range),
      "floor(extract(epoch from t)/300)*300 x = 'v7' AND '2026-11-22T14:17:00Z'");
  EXPECT_EQ(ExpandGrafanaSql("$__interval_ms", {}, GrafanaRange{kFrom, kTo, "5m"}), "300000");
  EXPECT_THROW(ExpandGrafanaSql("WHERE $__unixEpochFilter(t)", {}, range), std::runtime_error);
  EXPECT_THROW(ExpandGrafanaSql("WHERE x = '$unknown'", {}, range), std::runtime_error);
}

}  // namespace
}  // namespace fleetflow::testing

// Every query of the Grafana dashboards in deploy/grafana/dashboards (panels and template
// variables), with Grafana's PostgreSQL macros and the variables expanded for a fixed time range,
// runs on a real PostgreSQL filled by the pipeline (`fleetflow replay` of the committed
// recording) and returns rows of the shape its panel needs. A query that errors, uses a macro
// this test does not know, or returns nothing fails. Every dashboard (the engine's, on
// Prometheus, too: prometheus_test.cpp runs its queries) has its identity and uses provisioned
// datasources only.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "build_paths.hpp"
#include "grafana_provisioning.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kSource = ::fleetflow::testing::SourceDir();
const std::string kFleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";

// The committed recording's windows lie in 14:16:55-14:16:58 UTC
// (tests/data/fleet_seed42_rows.csv).
constexpr const char* kFrom = "2026-11-22T14:16:50Z";
constexpr const char* kTo = "2026-11-22T14:17:00Z";
constexpr const char* kInterval = "1s";
constexpr const char* kIntervalMs = "1000";

int64_t IntervalSeconds(std::string text) {
  text.erase(std::remove_if(text.begin(), text.end(), [](char c) { return c == '\'' || c == ' '; }),
             text.end());
  static const std::map<std::string, int64_t> kUnits = {
      {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
  std::smatch m;
  if (!std::regex_match(text, m, std::regex(R"((\d+)(s|m|h|d))"))) {
    throw std::runtime_error("unsupported interval '" + text + "'");
  }
  return std::stoll(m[1]) * kUnits.at(m[2]);
}

/// Grafana's PostgreSQL macros (pkg/tsdb/grafana-postgresql-datasource/macros.go) and template
/// variables, for the fixed range kFrom..kTo. Throws on a macro it does not implement.
std::string Expand(std::string sql, const std::map<std::string, std::string>& vars) {
  sql = std::regex_replace(sql, std::regex(R"(\$__interval_ms\b)"), kIntervalMs);
  sql = std::regex_replace(sql, std::regex(R"(\$__interval\b)"), kInterval);
  for (const auto& [name, value] : vars) {
    sql = std::regex_replace(sql, std::regex("\\$\\{" + name + "\\}|\\$" + name + "\\b"), value);
  }
  const std::string range = std::string("'") + kFrom + "' AND '" + kTo + "'";
  sql = std::regex_replace(sql, std::regex(R"(\$__timeFilter\(\s*([^)]+?)\s*\))"),
                           "$1 BETWEEN " + range);
  sql =
      std::regex_replace(sql, std::regex(R"(\$__timeFrom\(\s*\))"), std::string("'") + kFrom + "'");
  sql = std::regex_replace(sql, std::regex(R"(\$__timeTo\(\s*\))"), std::string("'") + kTo + "'");
  const std::regex group(R"(\$__timeGroup(Alias)?\(\s*([^,]+?)\s*,\s*([^,)]+?)\s*\))");
  std::smatch m;
  while (std::regex_search(sql, m, group)) {
    const int64_t s = IntervalSeconds(m[3]);
    std::string expr = "floor(extract(epoch from " + m[2].str() + ")/" + std::to_string(s) + ")*" +
                       std::to_string(s);
    if (m[1].matched) expr += " AS \"time\"";
    sql = m.prefix().str() + expr + m.suffix().str();
  }
  if (sql.find('$') != std::string::npos) {
    throw std::runtime_error("unexpanded macro or variable in: " + sql);
  }
  return sql;
}

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

/// Runs `sql` as a temporary view: its columns with their types, and its rows.
Result Query(const PostgresServer& pg, const std::string& sql) {
  const CommandResult r = RunCommand(
      {FindServerBinary("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c",
       "CREATE TEMP VIEW panel AS " + sql, "-c",
       "SELECT attname || ':' || format_type(atttypid, atttypmod) FROM pg_attribute "
       "WHERE attrelid = 'panel'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
       "-c", "SELECT '{row}' || row_to_json(p)::text FROM panel p"},
      60s, pg.env());
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

class GrafanaDashboardsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!PostgresServer::Available()) return;
    pg_ = new PostgresServer();
    pg_->Start();
    // The same rows the pipeline writes live, from the committed recording.
    const CommandResult r =
        RunCommand({kFleetflow, "replay", kSource + "/tests/data/fleet_seed42.ffrc", "--pipeline",
                    kSource + "/pipelines/default.json", "--metrics-port", "-1"},
                   120s, pg_->env());
    replay_exit_ = r.exit_code;
    replay_err_ = r.err;
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  void SetUp() override {
    FF_REQUIRE_POSTGRES();
    ASSERT_EQ(replay_exit_, 0) << replay_err_;
    ASSERT_NE(pg_->Psql("SELECT count(*) FROM vehicle_telemetry"), "0");
  }

  static PostgresServer* pg_;
  static int replay_exit_;
  static std::string replay_err_;
};
PostgresServer* GrafanaDashboardsTest::pg_ = nullptr;
int GrafanaDashboardsTest::replay_exit_ = -1;
std::string GrafanaDashboardsTest::replay_err_;

TEST_F(GrafanaDashboardsTest, EveryPanelQueryReturnsRowsOfItsPanelsShape) {
  const std::string datasource_uid = "fleetflow-pg";
  ASSERT_EQ(ProvisionedDatasources()[datasource_uid], "postgres")
      << "deploy/grafana/provisioning/datasources must provision the datasource the dashboards use";
  const auto files = DashboardFiles("postgres");
  ASSERT_EQ(files.size(), 3u) << "fleet map, one vehicle, fleet aggregates";
  const int vehicles_in_range = std::stoi(
      pg_->Psql("SELECT count(DISTINCT vehicle_id) FROM vehicle_telemetry WHERE time BETWEEN '" +
                std::string(kFrom) + "' AND '" + kTo + "'"));
  ASSERT_GT(vehicles_in_range, 1);

  std::set<std::string> panel_types;
  int queries = 0;
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const rapidjson::Document dash = LoadJson(file);
    ASSERT_FALSE(Str(dash, "uid").empty());

    // Template variables: run their queries; the first value is the one the panels get.
    std::map<std::string, std::string> vars;
    if (dash.HasMember("templating")) {
      for (const auto& v : dash["templating"]["list"].GetArray()) {
        SCOPED_TRACE("variable " + Str(v, "name"));
        ASSERT_EQ(Str(v, "type"), "query");
        EXPECT_EQ(Str(v["datasource"], "uid"), datasource_uid);
        const Result r = Query(*pg_, Expand(Str(v, "query"), vars));
        ++queries;
        ASSERT_EQ(r.columns.size(), 1u);
        ASSERT_EQ(static_cast<int>(r.rows.size()), vehicles_in_range);
        rapidjson::Document first;
        first.Parse(r.rows.front().c_str());
        vars[Str(v, "name")] = first.MemberBegin()->value.GetString();
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
        ASSERT_NO_THROW(r = Query(*pg_, Expand(Str(target, "rawSql"), vars)));
        ++queries;
        ASSERT_FALSE(r.rows.empty()) << "no rows";
        auto has_values = [&](const Column& c) { return r.non_null[c.name] > 0; };
        if (format == "time_series") {
          // Grafana needs a column "time" (timestamp or epoch) and at least one numeric series.
          ASSERT_GE(r.columns.size(), 2u);
          EXPECT_EQ(r.columns[0].name, "time");
          EXPECT_TRUE(r.columns[0].time()) << r.columns[0].type;
          for (size_t i = 1; i < r.columns.size(); ++i) {
            EXPECT_TRUE(r.columns[i].numeric()) << r.columns[i].name << ": " << r.columns[i].type;
            EXPECT_TRUE(has_values(r.columns[i])) << r.columns[i].name << " is always NULL";
          }
          EXPECT_GE(r.rows.size(), 2u) << "a time series of one point";
        } else {
          ASSERT_EQ(format, "table");
          for (const Column& c : r.columns) {
            EXPECT_TRUE(has_values(c)) << c.name << " is always NULL";
          }
        }
        if (type == "geomap") {
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
  EXPECT_TRUE(panel_types.count("geomap")) << "the fleet map";
  EXPECT_TRUE(panel_types.count("timeseries"));
  std::cout << "ran " << queries << " dashboard queries on " << files.size() << " dashboards\n";
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
  EXPECT_GE(checked, 16) << "columns shown by the three dashboards' panels";
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
  EXPECT_EQ(files.size(), 4u) << "fleet map, one vehicle, fleet aggregates, engine";
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

TEST_F(GrafanaDashboardsTest, MacroExpansionMatchesGrafana) {
  EXPECT_EQ(Expand("SELECT $__timeGroupAlias(time, $__interval) WHERE $__timeFilter(time)", {}),
            "SELECT floor(extract(epoch from time)/1)*1 AS \"time\" WHERE time BETWEEN "
            "'2026-11-22T14:16:50Z' AND '2026-11-22T14:17:00Z'");
  EXPECT_EQ(Expand("$__timeGroup(t, '5m') x = '$v' AND $__timeTo()", {{"v", "v7"}}),
            "floor(extract(epoch from t)/300)*300 x = 'v7' AND '2026-11-22T14:17:00Z'");
  EXPECT_THROW(Expand("WHERE $__unixEpochFilter(t)", {}), std::runtime_error);
  EXPECT_THROW(Expand("WHERE x = '$unknown'", {}), std::runtime_error);
}

}  // namespace
}  // namespace fleetflow::testing

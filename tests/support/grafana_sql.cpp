#include "grafana_sql.hpp"

#include <algorithm>
#include <regex>
#include <stdexcept>

namespace fleetflow::testing {

int64_t GrafanaIntervalSeconds(std::string text) {
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

std::string ExpandGrafanaSql(std::string sql, const std::map<std::string, std::string>& vars,
                             const GrafanaRange& range) {
  const int64_t interval_s = GrafanaIntervalSeconds(range.interval);
  sql = std::regex_replace(sql, std::regex(R"(\$__interval_ms\b)"),
                           std::to_string(interval_s * 1000));
  sql = std::regex_replace(sql, std::regex(R"(\$__interval\b)"), range.interval);
  for (const auto& [name, value] : vars) {
    sql = std::regex_replace(sql, std::regex("\\$\\{" + name + "\\}|\\$" + name + "\\b"), value);
  }
  const std::string from = "'" + range.from + "'", to = "'" + range.to + "'";
  sql = std::regex_replace(sql, std::regex(R"(\$__timeFilter\(\s*([^)]+?)\s*\))"),
                           "$1 BETWEEN " + from + " AND " + to);
  sql = std::regex_replace(sql, std::regex(R"(\$__timeFrom\(\s*\))"), from);
  sql = std::regex_replace(sql, std::regex(R"(\$__timeTo\(\s*\))"), to);
  const std::regex group(R"(\$__timeGroup(Alias)?\(\s*([^,]+?)\s*,\s*([^,)]+?)\s*\))");
  std::smatch m;
  while (std::regex_search(sql, m, group)) {
    const int64_t s = GrafanaIntervalSeconds(m[3]);
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

const char* const kGrafanaRoleSql =
    "CREATE ROLE grafana LOGIN; "
    "GRANT SELECT ON vehicle_telemetry, vehicle_stats_1m, vehicle_stats_1h, fleet_cells_1m TO "
    "grafana; "
    "GRANT pg_read_all_stats TO grafana; "
    "ALTER ROLE grafana SET jit = off";

}  // namespace fleetflow::testing

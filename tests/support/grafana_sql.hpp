#pragma once
/// Grafana's PostgreSQL macros (pkg/tsdb/grafana-postgresql-datasource/macros.go) and template
/// variables, expanded for a fixed time range as Grafana does before it sends a dashboard's query:
/// what the dashboard test runs on real rows and the query benchmark times.

#include <cstdint>
#include <map>
#include <string>

namespace fleetflow::testing {

/// A dashboard's time range and the interval Grafana would pick for it.
struct GrafanaRange {
  std::string from;  // RFC 3339, e.g. "2026-11-22T14:16:50Z"
  std::string to;
  std::string interval;  // "1s", "1m", "5m", "1h": $__interval
};

/// Seconds of an interval written as Grafana writes them ("5m", "'1h'"). Throws on another form.
int64_t GrafanaIntervalSeconds(std::string text);

/// `sql` with $__interval, $__interval_ms, $__timeFilter, $__timeFrom, $__timeTo,
/// $__timeGroup(Alias) and the template variables `vars` expanded for `range`. Throws on a macro
/// or variable it does not know.
std::string ExpandGrafanaSql(std::string sql, const std::map<std::string, std::string>& vars,
                             const GrafanaRange& range);

/// Grafana's read-only role `grafana` as docs/deploy.md makes it (without its password): the
/// tier tables, the statistics of the other roles, and no JIT compilation.
extern const char* const kGrafanaRoleSql;

}  // namespace fleetflow::testing

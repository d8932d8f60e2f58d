#pragma once
// What a pipeline would write, computed without PostgreSQL or NATS: its timescale_sink nodes
// replaced by captures that keep the rows the sink would upsert (the sink's own row computation,
// RowValues), its rule nodes by captures that keep the alarm events (the rule's own RuleEngine),
// and its archives left out (they write files, not rows). `fleetflow test` compares what they
// keep; `fleetflow replay --out` writes it as CSV (docs/recording.md).

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "message.hpp"
#include "pipeline.hpp"
#include "registry.hpp"
#include "row_columns.hpp"

namespace fleetflow {

/// A row's key as the sink's table has it: (vehicle or cell, window time in ns).
using CapturedRowKey = std::pair<std::string, int64_t>;
/// The rows one sink would hold, by key: the last of a re-emitted window wins, as the upsert
/// does. Ordered by vehicle, then time. A value per column, nullopt for NULL.
using CapturedRows = std::map<CapturedRowKey, std::vector<std::optional<double>>>;

/// Where the captures put what they keep; must outlive the Runtime that runs the pipeline.
struct Captures {
  std::map<std::string, CapturedRows> rows;               // by timescale_sink node id
  std::map<std::string, std::vector<AlarmEvent>> alarms;  // by rule node id
  /// The operators standing in for timescale_sink and rule (the nodes point at them).
  OperatorInfo sink;
  OperatorInfo rule;
};

/// Makes `pipeline` write into `captures` instead of PostgreSQL and NATS: every timescale_sink
/// node computes its rows into captures.rows[id], every rule node its events into
/// captures.alarms[id], and archive and row_archive nodes are removed (nothing comes after them).
/// The sources are not touched: IsolateForReplay does that.
void CaptureInstead(Pipeline& pipeline, const Registry& registry, Captures& captures);

/// The text PostgreSQL gives a double precision value (float8out with extra_float_digits 1, the
/// default since PostgreSQL 12): the shortest text that reads back as the same double, in fixed
/// notation for decimal exponents from -4 to 14 and `1.5e+15` / `1e-05` outside; NaN, Infinity,
/// -Infinity.
std::string PostgresDoubleText(double v);

/// A sink's rows as CSV: the header `vehicle_id,time_ms,<columns>` (the columns the sink's table
/// has, in its order; the geometry column, which PostgreSQL computes from them, is not
/// included), then one line per row in the order of `rows`, the time in ms since the Unix epoch,
/// each value as the table holds it: PostgresDoubleText, a count as an integer, a first_time /
/// last_time as RFC 3339 in UTC with microseconds, NULL as an empty cell. `fleetflow test` reads
/// it back (expect_csv).
void WriteRowsCsv(const std::vector<RowColumn>& columns, const CapturedRows& rows,
                  std::ostream& out);

}  // namespace fleetflow

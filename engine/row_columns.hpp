#pragma once
/// The columns of a row as the operators that take rows compute them (timescale_sink,
/// row_archive, rule): each column is one field of one sensor's window slot interpolated at the
/// window time (rows of a window_join), one statistic of a sensor (rows of a window_aggregate),
/// or an expression over the other columns (a derived column). One computation, so that a
/// table, an archive and a rule agree on every value.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "expression.hpp"
#include "interpolation.hpp"
#include "message.hpp"
#include "metrics.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace fleetflow {

/// Which statistic of a window_aggregate's row a column takes (kNone: the column interpolates a
/// window_join's slot).
enum class ColumnStat {
  kNone,
  kCount,      ///< samples in the window (bigint)
  kMin,        ///< of `field`: value, or lat / lon (the bounding box)
  kMax,        ///< likewise
  kMean,       ///< of the value
  kFirst,      ///< `field` of the oldest sample
  kLast,       ///< `field` of the newest sample
  kFirstTime,  ///< time of the oldest sample (timestamptz)
  kLastTime,   ///< time of the newest sample (timestamptz)
  kDistance,   ///< metres travelled (position sensors)
  kSum,        ///< of the value (fleet_aggregate's rows: the vehicles moving)
};

/// The statistic's name in a pipeline file.
const char* StatName(ColumnStat stat);

/// One column of a row.
struct RowColumn {
  std::string name;
  std::string sensor;  ///< empty for a derived column
  ColumnField field = ColumnField::kValue;
  Interpolation mode = Interpolation::kLinear;
  ColumnStat stat = ColumnStat::kNone;
  std::string expression;  ///< non-empty: a derived column, computed from the columns before it
  bool derived() const { return !expression.empty(); }
};

/// `ns` since the epoch in whole microseconds, rounded down: PostgreSQL's resolution, so how the
/// sink writes a time (the row's key, a first_time / last_time column).
int64_t Microseconds(int64_t ns);

/// The value of one statistic column from a sensor's statistics (nullopt: no sample, no position
/// for a position field, or not finite). Times are Microseconds() since the epoch.
std::optional<double> StatValue(const SensorStats& stats, const RowColumn& column);

/// Declares a column's fields after its `name` (which each operator describes itself): sensor,
/// field, interpolation, stat (when `statistics`: the operator takes window_aggregate's rows)
/// and expression; and `words` says how a NULL shows where the operator writes it.
void DeclareRowColumnFields(OptionsSpec<RowColumn>& columns, bool statistics,
                            const std::string& null_words);

/// The problems of `columns` (validated by the spec): each has a sensor or an expression, not
/// both; every expression compiles and names sensor columns and derived columns before it. Pointers
/// are /columns/<i>/....
void CheckRowColumns(const std::vector<RowColumn>& columns, std::vector<ConfigProblem>& out);

/// Which rows a node reads: those of the nearest node upstream that says (`from`: its type and
/// id, for messages).
struct RowsSource {
  NodeFacts::Rows rows = NodeFacts::Rows::kUnknown;
  std::string from;
};
RowsSource RowsFrom(const std::vector<UpstreamNode>& upstream);

/// Statistic columns fit the rows of a window_aggregate, interpolated ones those of a
/// window_join; derived columns either (check_upstream of the nodes that take columns).
std::vector<UpstreamProblem> CheckColumnsFitRows(const std::vector<RowColumn>& columns,
                                                 const std::string& self_id,
                                                 const std::vector<UpstreamNode>& upstream);

/// The values of rows, one per column, NULL (nullopt) where there is none: a sensor the batch
/// lacks, no sample within the join's max gap, a derived column with a NULL input or an error.
/// Compiles the expressions once; one per operator instance (not thread-safe).
class RowValues {
 public:
  using Values = std::vector<std::vector<std::optional<double>>>;

  /// Throws ExpressionError (naming the column) for an expression CheckRowColumns refuses.
  explicit RowValues(std::vector<RowColumn> columns);
  ~RowValues();

  const std::vector<RowColumn>& columns() const { return columns_; }
  /// Each row of `batch`, in its order.
  Values Of(const WindowBatch& batch);
  Values Of(const StatsBatch& batch);
  /// Called with a derived column's index when its expression failed on a row (finite inputs,
  /// no finite value: x / 0, sqrt(-1)); that row's value is NULL.
  std::function<void(size_t column)> on_error;
  /// Sets on_error to count in `metrics`' expression_errors_total{<labels>, column=<name>}, a
  /// counter per derived column (made now, so that each shows from the start at 0).
  void CountErrorsIn(Metrics& metrics, const Labels& labels);
  /// Computes the derived columns of a row whose other columns `values` holds (one per
  /// column); no-op without derived columns.
  void Derive(std::string_view vehicle, std::vector<std::optional<double>>& values);

 private:
  std::vector<RowColumn> columns_;
  std::unique_ptr<Expressions> expressions_;        // names: the columns' names; null: none derived
  std::vector<std::pair<size_t, size_t>> derived_;  // (column, expression)
};

}  // namespace fleetflow

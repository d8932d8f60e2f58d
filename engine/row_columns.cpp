#include "row_columns.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "schema_check.hpp"

namespace fleetflow {

namespace {

/// For each column, the index of its sensor in `sensors` (SIZE_MAX: derived, or not there).
std::vector<size_t> SensorIndex(const std::vector<RowColumn>& columns,
                                const std::vector<std::string>& sensors) {
  std::vector<size_t> index(columns.size(), SIZE_MAX);
  for (size_t c = 0; c < columns.size(); ++c) {
    if (columns[c].derived()) continue;
    const auto it = std::find(sensors.begin(), sensors.end(), columns[c].sensor);
    if (it != sensors.end()) index[c] = static_cast<size_t>(it - sensors.begin());
  }
  return index;
}

std::vector<std::string> Names(const std::vector<RowColumn>& columns) {
  std::vector<std::string> names;
  names.reserve(columns.size());
  for (const RowColumn& c : columns) names.push_back(c.name);
  return names;
}

/// Compiles column `c`'s expression into `e` (names: every column's); its index there. Throws
/// ExpressionError for one that does not compile or uses a derived column not before it.
size_t CompileColumn(const std::vector<RowColumn>& columns, size_t c, Expressions& e) {
  const size_t i = e.Add(columns[c].expression);
  for (const size_t used : e.Used(i)) {
    if (used >= c && columns[used].derived()) {
      throw ExpressionError(
          "'" + columns[used].name + "' is " +
              (used == c ? "this column itself" : "a derived column listed after this one") +
              ": an expression uses the sensor columns and the derived "
              "columns before it",
          std::string::npos, columns[used].name);
    }
  }
  return i;
}

}  // namespace

const char* StatName(ColumnStat s) {
  switch (s) {
    case ColumnStat::kNone:
      return "none";
    case ColumnStat::kCount:
      return "count";
    case ColumnStat::kMin:
      return "min";
    case ColumnStat::kMax:
      return "max";
    case ColumnStat::kMean:
      return "mean";
    case ColumnStat::kFirst:
      return "first";
    case ColumnStat::kLast:
      return "last";
    case ColumnStat::kFirstTime:
      return "first_time";
    case ColumnStat::kLastTime:
      return "last_time";
    case ColumnStat::kDistance:
      return "distance";
    case ColumnStat::kSum:
      return "sum";
  }
  return "?";
}

int64_t Microseconds(int64_t ns) { return ns / 1000 - (ns % 1000 < 0 ? 1 : 0); }

std::optional<double> StatValue(const SensorStats& s, const RowColumn& column) {
  if (s.count == 0) return std::nullopt;
  const bool position = column.field != ColumnField::kValue;
  if (position && s.positions == 0) return std::nullopt;
  const auto of = [&](const wire::Point& p) -> std::optional<double> {
    if (column.field == ColumnField::kValue) return p.value;
    if (!p.has_position) return std::nullopt;
    return column.field == ColumnField::kLat ? p.lat : p.lon;
  };
  std::optional<double> out;
  switch (column.stat) {
    case ColumnStat::kNone:
      return std::nullopt;
    case ColumnStat::kCount:
      out = static_cast<double>(s.count);
      break;
    case ColumnStat::kMin:
      out = !position ? s.min : column.field == ColumnField::kLat ? s.min_lat : s.min_lon;
      break;
    case ColumnStat::kMax:
      out = !position ? s.max : column.field == ColumnField::kLat ? s.max_lat : s.max_lon;
      break;
    case ColumnStat::kMean:
      out = s.sum / static_cast<double>(s.count);
      break;
    case ColumnStat::kFirst:
      out = of(s.first);
      break;
    case ColumnStat::kLast:
      out = of(s.last);
      break;
    case ColumnStat::kFirstTime:
    case ColumnStat::kLastTime: {
      // Whole microseconds, as the time key: exact in a double, where seconds would not be.
      const int64_t ns = column.stat == ColumnStat::kFirstTime ? s.first.ts_ns : s.last.ts_ns;
      out = static_cast<double>(Microseconds(ns));
      break;
    }
    case ColumnStat::kDistance:
      out = s.positions > 0 ? std::optional<double>(s.distance_m) : std::nullopt;
      break;
    case ColumnStat::kSum:
      out = s.sum;
      break;
  }
  if (out && !std::isfinite(*out)) return std::nullopt;
  return out;
}

void DeclareRowColumnFields(OptionsSpec<RowColumn>& columns, bool statistics,
                            const std::string& null_words) {
  columns
      .String("sensor",
              "Sensor whose window slot feeds the column: the <sensor> token of "
              "vehicle.<id>.<sensor>, as listed in the window join's sensors. A sensor missing "
              "from a window batch gives " +
                  null_words + ". Empty (or absent) for a derived column (expression).",
              &RowColumn::sensor)
      .Default("")
      .Pattern("^([A-Za-z0-9_-]{1,64})?$", std::string("empty, or ") + kSensorNameWords)
      .Example("\"gps\"");
  columns
      .Enum(
          "field",
          "Which number of the sample: value (scalar sensors), lat or lon (position "
          "sensors; a sample without a position counts as absent).",
          &RowColumn::field,
          {{"value", ColumnField::kValue}, {"lat", ColumnField::kLat}, {"lon", ColumnField::kLon}})
      .Default("value");
  columns
      .Enum("interpolation",
            "linear: interpolate between the samples before and after the window time, or "
            "hold the one present when only one is; previous: the last sample at or before "
            "the window time. No sample within the window join's max gap, or a NaN/Inf "
            "value, gives " +
                null_words + ".",
            &RowColumn::mode,
            {{"linear", Interpolation::kLinear}, {"previous", Interpolation::kPrevious}})
      .Default("linear");
  if (statistics) {
    columns
        .Enum("stat",
              "Behind window_aggregate: which statistic of the sensor in the window the column "
              "holds (none: behind window_join, the interpolated value). count (bigint); min, "
              "max of field (value, or lat / lon: the bounding box); mean of the value; first, "
              "last: field of the oldest / newest sample; first_time, last_time: their times "
              "(timestamptz); distance: metres travelled (position sensors); sum of the value "
              "(behind fleet_aggregate: the vehicles moving). No sample of the sensor in the "
              "window gives " +
                  null_words + ".",
              &RowColumn::stat,
              {{"none", ColumnStat::kNone},
               {"count", ColumnStat::kCount},
               {"min", ColumnStat::kMin},
               {"max", ColumnStat::kMax},
               {"mean", ColumnStat::kMean},
               {"first", ColumnStat::kFirst},
               {"last", ColumnStat::kLast},
               {"first_time", ColumnStat::kFirstTime},
               {"last_time", ColumnStat::kLastTime},
               {"distance", ColumnStat::kDistance},
               {"sum", ColumnStat::kSum}})
        .Default("none");
  }
  columns
      .String("expression",
              "A derived column instead of a sensor's: an expression over the sensor columns "
              "and the derived columns listed before it (by name), computed for each row "
              "(docs/alarms.md, \"Expressions\"): "
              "muparser's language (+ - * / ^, comparisons, && ||, c ? a : b, abs, sqrt, min, "
              "max, ...) with isnull(x) and vehicle(\"id\"). field, interpolation and stat do "
              "not apply. A NULL input gives " +
                  null_words +
                  "; so does a result that is not a finite number (x / 0), counted in "
                  "expression_errors_total by column.",
              &RowColumn::expression)
      .Default("")
      .Example("\"torque * speed / 0.3 / 1000\"");
}

void CheckRowColumns(const std::vector<RowColumn>& columns, std::vector<ConfigProblem>& out) {
  for (size_t c = 0; c < columns.size(); ++c) {
    const RowColumn& col = columns[c];
    const std::string at = "/columns/" + std::to_string(c);
    if (col.derived() && !col.sensor.empty()) {
      out.push_back({at + "/sensor", "column '" + col.name + "' has both a sensor and an " +
                                         "expression: keep one (an expression column is " +
                                         "computed from the columns before it)"});
    } else if (!col.derived() && col.sensor.empty()) {
      out.push_back({at, "column '" + col.name + "' needs a sensor (whose samples feed it) or " +
                             "an expression (over the columns before it)"});
    }
  }
  // Every expression, so that every mistake shows at once.
  Expressions e(Names(columns));
  for (size_t c = 0; c < columns.size(); ++c) {
    if (!columns[c].derived()) continue;
    try {
      (void)CompileColumn(columns, c, e);
    } catch (const ExpressionError& x) {
      out.push_back({"/columns/" + std::to_string(c) + "/expression",
                     "column '" + columns[c].name + "': " + x.what()});
    }
  }
}

RowsSource RowsFrom(const std::vector<UpstreamNode>& upstream) {
  RowsSource out;
  for (const UpstreamNode& n : upstream) {
    if (n.facts.rows == NodeFacts::Rows::kUnknown) continue;
    out.rows = n.facts.rows;
    out.from = n.type + " '" + n.id + "'";
  }
  return out;
}

namespace {

std::string Listed(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

/// What the nodes upstream say about the sensors that reach the one that makes the rows.
class SensorPaths {
 public:
  explicit SensorPaths(const std::vector<UpstreamNode>& upstream) {
    for (const UpstreamNode& n : upstream) by_id_[n.id] = &n;
  }

  /// Whether samples of `sensor` reach `node` (its inputs, along some path from a source, pass
  /// each node's sensors); `blockers` gets the nodes whose sensors leave it out.
  bool Reaches(const UpstreamNode& node, const std::string& sensor,
               std::vector<const UpstreamNode*>& blockers) const {
    bool any = node.inputs.empty();
    for (const std::string& in : node.inputs) {
      const auto it = by_id_.find(in);
      if (it == by_id_.end()) return true;  // not known: assume it does
      any = Passes(*it->second, sensor, blockers) || any;
    }
    return any;
  }

  /// The position sensors of the sources upstream of `node`; nullopt when one does not say.
  std::optional<std::vector<std::string>> Positions(const UpstreamNode& node) const {
    std::vector<std::string> out;
    bool known = true;
    Sources(node, out, known);
    if (!known) return std::nullopt;
    return out;
  }

 private:
  bool Passes(const UpstreamNode& n, const std::string& sensor,
              std::vector<const UpstreamNode*>& blockers) const {
    if (n.facts.sensors && std::find(n.facts.sensors->begin(), n.facts.sensors->end(), sensor) ==
                               n.facts.sensors->end()) {
      if (std::find(blockers.begin(), blockers.end(), &n) == blockers.end()) blockers.push_back(&n);
      return false;
    }
    return Reaches(n, sensor, blockers);
  }

  void Sources(const UpstreamNode& node, std::vector<std::string>& out, bool& known) const {
    for (const std::string& in : node.inputs) {
      const auto it = by_id_.find(in);
      if (it == by_id_.end()) {
        known = false;
        continue;
      }
      const UpstreamNode& n = *it->second;
      if (!n.inputs.empty()) {
        Sources(n, out, known);
      } else if (!n.facts.position_sensors) {
        known = false;
      } else {
        out.insert(out.end(), n.facts.position_sensors->begin(), n.facts.position_sensors->end());
      }
    }
  }

  std::map<std::string, const UpstreamNode*> by_id_;
};

/// Whether a column's value depends on its field being a position (lat, lon) or a position
/// sensor (distance): statistics that ignore the field (count, the times, mean, sum) do not.
bool NeedsPosition(const RowColumn& c) {
  if (c.stat == ColumnStat::kDistance) return true;
  if (c.field == ColumnField::kValue) return false;
  return c.stat == ColumnStat::kNone || c.stat == ColumnStat::kMin || c.stat == ColumnStat::kMax ||
         c.stat == ColumnStat::kFirst || c.stat == ColumnStat::kLast;
}

/// A column whose sensor does not reach the rows, or which reads a position of a sensor that
/// carries a value, is NULL in every row: refused, with where the sensor is left out.
void CheckColumnSensors(const std::vector<RowColumn>& columns, const std::string& self_id,
                        const std::vector<UpstreamNode>& upstream,
                        std::vector<UpstreamProblem>& problems) {
  const UpstreamNode* maker = nullptr;  // of the rows: the nearest node that emits rows
  for (const UpstreamNode& n : upstream) {
    if (n.facts.rows != NodeFacts::Rows::kUnknown) maker = &n;
  }
  if (maker == nullptr || !maker->facts.sensors) return;
  const std::vector<std::string>& sensors = *maker->facts.sensors;
  const std::string what = maker->type + " '" + maker->id + "'";
  const SensorPaths paths(upstream);
  const auto positions = paths.Positions(*maker);
  for (size_t i = 0; i < columns.size(); ++i) {
    const RowColumn& c = columns[i];
    if (c.derived()) continue;
    const std::string at = "/columns/" + std::to_string(i);
    const std::string column = "column '" + c.name + "' reads sensor '" + c.sensor + "'";
    std::vector<const UpstreamNode*> blockers;
    if (std::find(sensors.begin(), sensors.end(), c.sensor) == sensors.end()) {
      problems.push_back({self_id, at + "/sensor",
                          column + ", which is not among the sensors of " + what + " (" +
                              Listed(sensors) +
                              "): it would be NULL in every row; add it there, or name one "
                              "of them" +
                              DidYouMean(c.sensor, sensors)});
    } else if (!paths.Reaches(*maker, c.sensor, blockers)) {
      std::string dropped;
      for (const UpstreamNode* b : blockers) {
        dropped += (dropped.empty() ? "" : " and ") + b->type + " '" + b->id +
                   "' (sensors: " + Listed(*b->facts.sensors) + ")";
      }
      problems.push_back({self_id, at + "/sensor",
                          column + ", whose samples " + dropped + " drops before they reach " +
                              what + ": it would be NULL in every row; add '" + c.sensor +
                              "' to the sensors there"});
    } else if (positions && NeedsPosition(c) &&
               std::find(positions->begin(), positions->end(), c.sensor) == positions->end()) {
      const bool distance = c.stat == ColumnStat::kDistance;
      problems.push_back(
          {self_id, at + (distance ? "/stat" : "/field"),
           "column '" + c.name + "' reads " +
               (distance ? std::string("the distance travelled by")
                         : std::string("field ") + (c.field == ColumnField::kLat ? "lat" : "lon") +
                               " of") +
               " sensor '" + c.sensor +
               "', which carries a value, not a position (the position sensors: " +
               Listed(*positions) + "): it would be NULL in every row; " +
               (distance ? "use a position sensor" : "use field value") +
               ", or list the sensor in the source's position_sensors"});
    }
  }
}

}  // namespace

std::vector<UpstreamProblem> CheckColumnsFitRows(const std::vector<RowColumn>& columns,
                                                 const std::string& self_id,
                                                 const std::vector<UpstreamNode>& upstream) {
  const auto [rows, from] = RowsFrom(upstream);
  std::vector<UpstreamProblem> problems;
  CheckColumnSensors(columns, self_id, upstream, problems);
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].derived()) continue;
    const std::string at = "/columns/" + std::to_string(i) + "/stat";
    if (rows == NodeFacts::Rows::kStatistics && columns[i].stat == ColumnStat::kNone) {
      problems.push_back({self_id, at,
                          "column '" + columns[i].name + "' reads statistics from " + from +
                              ": set its stat (count, min, max, mean, first, last, first_time, "
                              "last_time or distance)"});
    } else if (rows == NodeFacts::Rows::kSlots && columns[i].stat != ColumnStat::kNone) {
      problems.push_back({self_id, at,
                          "column '" + columns[i].name + "' has stat " + StatName(columns[i].stat) +
                              ", but " + from +
                              " emits interpolated rows, not statistics: remove stat, or read "
                              "from a window_aggregate"});
    }
  }
  return problems;
}

RowValues::RowValues(std::vector<RowColumn> columns) : columns_(std::move(columns)) {
  if (std::none_of(columns_.begin(), columns_.end(),
                   [](const RowColumn& c) { return c.derived(); })) {
    return;
  }
  expressions_ = std::make_unique<Expressions>(Names(columns_));
  for (size_t c = 0; c < columns_.size(); ++c) {
    if (!columns_[c].derived()) continue;
    try {
      derived_.emplace_back(c, CompileColumn(columns_, c, *expressions_));
    } catch (const ExpressionError& x) {
      throw ExpressionError("column '" + columns_[c].name + "': " + x.what(), x.position(),
                            x.token());
    }
  }
}

RowValues::~RowValues() = default;

void RowValues::CountErrorsIn(Metrics& metrics, const Labels& labels) {
  std::vector<Counter*> counters(columns_.size(), nullptr);
  for (const auto& [column, expression] : derived_) {
    Labels l = labels;
    l.emplace_back("column", columns_[column].name);
    counters[column] = &metrics.GetCounter(
        "expression_errors",
        "Rows whose derived column's expression gave no finite number from finite inputs (x / 0, "
        "sqrt(-1)): the value is NULL.",
        l);
  }
  on_error = [counters](size_t column) { counters[column]->Inc(); };
}

void RowValues::Derive(std::string_view vehicle, std::vector<std::optional<double>>& values) {
  if (!expressions_) return;
  double* v = expressions_->values();
  constexpr double kNull = std::numeric_limits<double>::quiet_NaN();
  for (size_t c = 0; c < values.size(); ++c) v[c] = values[c].value_or(kNull);
  expressions_->SetVehicle(vehicle);
  for (const auto& [column, expression] : derived_) {
    const Evaluated r = expressions_->Evaluate(expression);
    if (r.error && on_error) on_error(column);
    values[column] = r.value;
    v[column] = r.value.value_or(kNull);
  }
}

RowValues::Values RowValues::Of(const WindowBatch& batch) {
  Values out;
  if (!batch.sensors) return out;
  const std::vector<size_t> index = SensorIndex(columns_, *batch.sensors);
  out.reserve(batch.rows.size());
  for (const WindowRow& row : batch.rows) {
    auto& values = out.emplace_back(columns_.size());
    const std::span<const Slot> slots = batch.Slots(row);
    for (size_t c = 0; c < columns_.size(); ++c) {
      if (index[c] >= slots.size()) continue;
      values[c] =
          InterpolateSlot(slots[index[c]], columns_[c].field, columns_[c].mode, batch.window_ns);
    }
    if (expressions_) Derive(row.vehicle, values);
  }
  return out;
}

RowValues::Values RowValues::Of(const StatsBatch& batch) {
  Values out;
  if (!batch.sensors) return out;
  const std::vector<size_t> index = SensorIndex(columns_, *batch.sensors);
  out.reserve(batch.rows.size());
  for (const StatsRow& row : batch.rows) {
    auto& values = out.emplace_back(columns_.size());
    for (size_t c = 0; c < columns_.size(); ++c) {
      if (index[c] < row.sensors.size()) values[c] = StatValue(row.sensors[index[c]], columns_[c]);
    }
    if (expressions_) Derive(row.vehicle, values);
  }
  return out;
}

}  // namespace fleetflow

#include "row_capture.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <memory>

#include "rule.hpp"
#include "timescale_sink.hpp"
#include "utc_time.hpp"

namespace fleetflow {

namespace {

/// Stands in for timescale_sink: keeps the rows it would write (the last of a re-emitted window
/// wins, as the upsert does), computed as the sink computes them (RowValues), at the time the sink
/// gives them (a join's window time, an aggregate's window start).
class CaptureSink final : public Operator {
 public:
  CaptureSink(const Config& config, CapturedRows& rows)
      : values_(SinkColumns(config)), rows_(rows) {}

  void Process(const Message& in, Emitter& out) override {
    if (const auto* window = std::get_if<WindowBatch>(in.get())) {
      Keep(window->rows, window->window_ns, values_.Of(*window));
    } else if (const auto* stats = std::get_if<StatsBatch>(in.get())) {
      Keep(stats->rows, stats->start_ns, values_.Of(*stats));
    } else if (std::holds_alternative<Tick>(*in)) {
      out.Emit(in);
    }
  }

 private:
  template <typename Row>
  void Keep(const std::vector<Row>& rows, int64_t time_ns,
            std::vector<std::vector<std::optional<double>>> values) {
    for (size_t r = 0; r < values.size(); ++r) {
      rows_[{rows[r].vehicle, time_ns}] = std::move(values[r]);
    }
  }

  RowValues values_;
  CapturedRows& rows_;
};

/// Stands in for rule: evaluates its rules on the rows as the node does (RuleEngine) and keeps
/// the events, instead of storing them and telling the vehicles.
class CaptureRule final : public Operator {
 public:
  CaptureRule(const Config& config, std::vector<AlarmEvent>& events)
      : engine_(Make(config)), events_(events) {}

  void Process(const Message& in, Emitter& out) override {
    if (const auto* window = std::get_if<WindowBatch>(in.get())) {
      engine_.OnWindow(*window, events_);
    } else if (const auto* stats = std::get_if<StatsBatch>(in.get())) {
      engine_.OnWindow(*stats, events_);
    } else if (std::holds_alternative<Tick>(*in)) {
      out.Emit(in);
    }
  }

 private:
  static alarms::RuleEngine Make(const Config& config) {
    RuleDefinition d = RuleDefinitionOf(config);
    return alarms::RuleEngine(std::move(d.columns), std::move(d.rules));
  }
  alarms::RuleEngine engine_;
  std::vector<AlarmEvent>& events_;
};

}  // namespace

void CaptureInstead(Pipeline& pipeline, const Registry& registry, Captures& captures) {
  captures.sink = *registry.Find(kTimescaleSinkName);
  captures.sink.create = [&captures](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<CaptureSink>(ctx.config, captures.rows.at(ctx.node_id));
  };
  captures.rule = *registry.Find("rule");
  captures.rule.create = [&captures](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<CaptureRule>(ctx.config, captures.alarms.at(ctx.node_id));
  };
  // An archive writes files, not rows: left out (nothing comes after it).
  std::erase_if(pipeline.nodes,
                [](const NodeDecl& n) { return n.type == "archive" || n.type == "row_archive"; });
  for (NodeDecl& n : pipeline.nodes) {
    // Before the runtime creates the captures, which only look their place up.
    if (n.type == kTimescaleSinkName) {
      n.info = &captures.sink;
      captures.rows.try_emplace(n.id);
    } else if (n.type == "rule") {
      n.info = &captures.rule;
      captures.alarms.try_emplace(n.id);
    }
  }
}

std::string PostgresDoubleText(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  // The shortest digits that read back as `v` (what PostgreSQL's float8out finds too), then its
  // layout: fixed for decimal exponents -4..14, printf's scientific form outside.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string sci(buf, r.ptr);  // [-]d[.ddd]e(+|-)xx
  const size_t e = sci.find('e');
  const bool negative = sci[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  const int exp = std::atoi(sci.c_str() + e + 1);
  std::string out = negative ? "-" : "";
  if (exp >= -4 && exp < 15) {
    if (exp < 0) {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (digits.size() <= static_cast<size_t>(exp) + 1) {
      out += digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0');
    } else {
      out += digits.substr(0, static_cast<size_t>(exp) + 1) + "." +
             digits.substr(static_cast<size_t>(exp) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exponent[16];
  std::snprintf(exponent, sizeof exponent, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return out + exponent;
}

void WriteRowsCsv(const std::vector<RowColumn>& columns, const CapturedRows& rows,
                  std::ostream& out) {
  out << "vehicle_id,time_ms";
  for (const RowColumn& c : columns) out << ',' << c.name;
  out << '\n';
  for (const auto& [key, values] : rows) {
    // Window times are whole milliseconds (windows are given in ms); floor, as extract() would.
    const int64_t ms =
        key.second >= 0 ? key.second / 1'000'000 : -((-key.second + 999'999) / 1'000'000);
    out << key.first << ',' << ms;
    for (size_t i = 0; i < columns.size(); ++i) {
      out << ',';
      if (i >= values.size() || !values[i]) continue;  // NULL
      const std::string type = ColumnType(columns[i]);
      if (type == "timestamptz") {
        out << FormatUtc(static_cast<int64_t>(*values[i]) * 1000, 6);  // Microseconds()
      } else if (type == "bigint") {
        out << static_cast<long long>(std::llround(*values[i]));
      } else {
        out << PostgresDoubleText(*values[i]);
      }
    }
    out << '\n';
  }
}

}  // namespace fleetflow

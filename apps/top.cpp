#include "top.hpp"

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <future>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "http_server.hpp"
#include "stop_signals.hpp"
#include "utc_time.hpp"

namespace fleetflow {

namespace top {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kDefaultPort = 9464;
constexpr const char* kLatencyHistogram = "fleetflow_row_latency_seconds";
constexpr const char* kAlarmsActive = "fleetflow_alarms_active";
constexpr const char* kAlarmsRaised = "fleetflow_alarms_raised_total";
constexpr const char* kAlarmsCleared = "fleetflow_alarms_cleared_total";

std::optional<double> Find(const std::map<std::string, double>* m, const std::string& name) {
  if (m == nullptr) return std::nullopt;
  const auto it = m->find(name);
  return it == m->end() ? std::nullopt : std::optional<double>(it->second);
}

/// The samples of one scrape, summed by node and metric name (over their other labels).
struct Index {
  std::map<std::string, double> total;                              // by name, all labels
  std::map<std::string, std::map<std::string, double>> by_node;     // node -> name -> sum
  std::map<std::string, std::string> op;                            // node -> operator
  std::map<std::string, std::map<std::string, Buckets>> histogram;  // node -> base name -> buckets
  std::map<std::string, std::map<std::string, double>> by_rule;     // rule -> name -> sum
  std::string version;

  explicit Index(const std::vector<prom::Sample>& samples) {
    std::map<std::string, std::map<std::string, std::map<double, double>>> buckets;
    for (const prom::Sample& s : samples) {
      total[s.name] += s.value;
      if (s.name == "fleetflow_build_info") version = s.Label("version").value_or("");
      const auto node = s.Label("node");
      if (!node) continue;
      if (auto o = s.Label("operator")) op[*node] = *o;
      by_node[*node][s.name] += s.value;
      if (auto rule = s.Label("rule")) by_rule[*rule][s.name] += s.value;
      constexpr std::string_view kBucket = "_bucket";
      const auto le = s.Label("le");
      if (le && s.name.ends_with(kBucket)) {
        if (const auto bound = prom::ParseValue(*le)) {
          buckets[*node][s.name.substr(0, s.name.size() - kBucket.size())][*bound] += s.value;
        }
      }
    }
    for (const auto& [node, families] : buckets) {
      for (const auto& [name, by_le] : families) {
        histogram[node][name] = Buckets(by_le.begin(), by_le.end());
      }
    }
  }

  std::optional<double> Get(const std::string& name) const { return Find(&total, name); }
  const std::map<std::string, double>* Node(const std::string& node) const {
    const auto it = by_node.find(node);
    return it == by_node.end() ? nullptr : &it->second;
  }
  const std::map<std::string, double>* Rule(const std::string& rule) const {
    const auto it = by_rule.find(rule);
    return it == by_rule.end() ? nullptr : &it->second;
  }
};

/// What a column reads for one node of one worker.
struct NodeContext {
  const std::map<std::string, double>* before;  // null: no rates yet
  const std::map<std::string, double>& now;
  double seconds;
  const Buckets* latency;  // this interval's row latency observations; null: no histogram

  /// The summed rate of `names`; nullopt when the node has none of them, NaN before two scrapes.
  std::optional<double> Rate(std::initializer_list<const char*> names) const {
    bool present = false;
    double rate = 0;
    for (const char* name : names) {
      const auto v = Find(&now, name);
      if (!v) continue;
      present = true;
      if (before != nullptr) rate += CounterRate(Find(before, name).value_or(0), *v, seconds);
    }
    if (!present) return std::nullopt;
    return before == nullptr ? kNaN : rate;
  }
  std::optional<double> Gauge(const char* name) const { return Find(&now, name); }
  std::optional<double> P99() const {
    if (latency == nullptr) return std::nullopt;
    return before == nullptr ? kNaN : HistogramQuantile(0.99, *latency);
  }
};

enum class Kind { kRate, kCount, kFlag, kSeconds };

struct Column {
  const char* title;
  Kind kind;
  const char* help;
  std::function<std::optional<double>(const NodeContext&)> value;
};

const std::vector<Column>& Columns() {
  static const std::vector<Column> columns = {
      {"MSGS/s", Kind::kRate, "messages received by a source (nats_source, replay_source)",
       [](const NodeContext& c) { return c.Rate({"fleetflow_messages_in_total"}); }},
      {"SAMPLES/s", Kind::kRate, "valid samples a source decoded and passed on",
       [](const NodeContext& c) { return c.Rate({"fleetflow_samples_in_total"}); }},
      {"REJECT/s", Kind::kRate,
       "input a node turned away: a source's rejected messages and samples (any reason), "
       "keyed_last_value's stale, duplicate and unknown-sensor samples, window_join's late "
       "samples, range_filter's samples out of range",
       [](const NodeContext& c) {
         const auto r =
             c.Rate({"fleetflow_input_rejected_total", "fleetflow_samples_stale_total",
                     "fleetflow_samples_duplicate_total", "fleetflow_samples_unknown_sensor_total",
                     "fleetflow_late_samples_total", "fleetflow_samples_out_of_range_total"});
         // A source counts rejections by reason, from the first one: none yet is 0.
         if (r) return r;
         const auto in = c.Rate({"fleetflow_messages_in_total"});
         return in && !std::isnan(*in) ? std::optional<double>(0) : in;
       }},
      {"ACCEPT/s", Kind::kRate, "samples keyed_last_value took into its state and passed on",
       [](const NodeContext& c) { return c.Rate({"fleetflow_samples_accepted_total"}); }},
      {"ROWS/s", Kind::kRate, "rows window_join emitted (one per active vehicle and window)",
       [](const NodeContext& c) { return c.Rate({"fleetflow_rows_emitted_total"}); }},
      {"WRITTEN/s", Kind::kRate, "rows the sink wrote to PostgreSQL",
       [](const NodeContext& c) { return c.Rate({"fleetflow_sink_rows_written_total"}); }},
      {"PENDING", Kind::kCount, "rows the sink holds, not yet written (now)",
       [](const NodeContext& c) { return c.Gauge("fleetflow_sink_pending_rows"); }},
      {"BLOCKED", Kind::kFlag,
       "yes while the sink is full and takes no more rows (backpressure); the fleet line counts "
       "blocked sinks",
       [](const NodeContext& c) { return c.Gauge("fleetflow_sink_blocked"); }},
      {"P99 LAT", Kind::kSeconds,
       "99th percentile of the rows' latency (window time to commit) over the last interval, "
       "from fleetflow_row_latency_seconds; - when no row was written",
       [](const NodeContext& c) { return c.P99(); }},
      {"KV/s", Kind::kRate, "writes to the JetStream KV state bucket (keyed_last_value)",
       [](const NodeContext& c) { return c.Rate({"fleetflow_kv_writes_total"}); }},
  };
  return columns;
}

/// The table's order, as a pipeline usually runs: sources, other nodes (filters), state, joins,
/// sinks.
int Rank(const std::map<std::string, double>& m) {
  if (m.contains("fleetflow_messages_in_total")) return 0;
  if (m.contains("fleetflow_samples_accepted_total")) return 2;
  if (m.contains("fleetflow_rows_emitted_total")) return 3;
  // A rule node ends its branch, as a sink does.
  if (m.contains("fleetflow_sink_rows_written_total") ||
      m.contains("fleetflow_rule_rows_evaluated_total")) {
    return 4;
  }
  return 1;
}

std::string Bytes(double b) {
  char buf[32];
  if (b >= 1024.0 * 1024 * 1024) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
  }
  return buf;
}

// ANSI styles; none without color.
const char* const kBold = "\x1b[1m";
const char* const kRed = "\x1b[1;31m";
const char* const kGreen = "\x1b[32m";
const char* const kYellow = "\x1b[33m";
const char* const kReset = "\x1b[0m";

struct Painter {
  bool color;
  std::string operator()(const char* style, const std::string& text) const {
    return color ? style + text + kReset : text;
  }
};

std::string Cell(const Column& col, const std::optional<double>& v, bool rates) {
  if (!v) return "-";
  if (col.kind == Kind::kRate || col.kind == Kind::kSeconds) {
    if (!rates) return "...";
    if (std::isnan(*v)) return "-";
  }
  switch (col.kind) {
    case Kind::kFlag:
      return *v > 0 ? "yes" : "no";
    case Kind::kSeconds:
      return Seconds(*v);
    case Kind::kRate:
    case Kind::kCount:
      break;
  }
  return Human(*v);
}

/// The table's layout: the widths of the node and operator columns, then of each value column.
struct Layout {
  size_t node = 4, op = 8;
  std::vector<size_t> widths;

  explicit Layout(const std::vector<WorkerView>& views) {
    for (const auto& v : views) {
      for (const auto& n : v.nodes) {
        node = std::max(node, n.node.size());
        op = std::max(op, n.op.size());
      }
    }
    node = std::min<size_t>(std::max<size_t>(node, 5), 24);  // "total" fits
    for (const Column& c : Columns()) widths.push_back(std::max<size_t>(6, std::strlen(c.title)));
  }

  std::string Row(const std::string& node_text, const std::string& op_text,
                  const std::vector<std::string>& cells) const {
    std::string line = "  " + Pad(node_text, node) + " " + Pad(op_text, op);
    for (size_t i = 0; i < cells.size(); ++i) {
      line += std::string(1 + widths[i] - std::min(widths[i], cells[i].size()), ' ') + cells[i];
    }
    return line;
  }

  static std::string Pad(const std::string& s, size_t width) {
    return s.size() >= width ? s.substr(0, width) : s + std::string(width - s.size(), ' ');
  }
};

std::string Header(const WorkerView& v, const Painter& paint) {
  if (!v.up) return paint(kBold, v.endpoint) + "  " + paint(kRed, "DOWN") + "  " + v.error;
  std::string line = paint(kBold, v.endpoint) + "  " + paint(kGreen, "up");
  if (!v.version.empty()) line += "  v" + v.version;
  if (v.uptime_s) line += "  uptime " + FormatDuration(*v.uptime_s);
  if (v.rss_bytes) line += "  rss " + Bytes(*v.rss_bytes);
  line += "  " + (!v.ready   ? paint(kYellow, "ready?")
                  : *v.ready ? paint(kGreen, "ready")
                             : paint(kYellow, "NOT READY"));
  if (v.workers) line += "  workers " + Human(*v.workers);
  if (v.partitions) line += "  partitions " + Human(*v.partitions);
  if (v.lag) line += "  lag " + Human(*v.lag);
  if (v.queued) line += "  queued " + Human(*v.queued);
  if (v.sources_blocked) {
    const std::string blocked = "sources blocked " + Human(*v.sources_blocked);
    line += "  " + (*v.sources_blocked > 0 ? paint(kRed, blocked) : blocked);
  }
  if (v.errors_per_s && *v.errors_per_s > 0) {
    line += "  " + paint(kRed, "errors " + Human(*v.errors_per_s) + "/s");
  }
  return line;
}

/// "  alarms active: overspeed 3, low_soc 1  raised 0.20/s  cleared 0.10/s": the rules with
/// active alarms, most first, then the rates over every rule ("..." until a second scrape).
std::string AlarmsLine(const std::vector<AlarmRule>& alarms, bool rates, const Painter& paint) {
  std::vector<const AlarmRule*> active;
  double raised = 0, cleared = 0;
  for (const AlarmRule& a : alarms) {
    if (a.active > 0) active.push_back(&a);
    raised += a.raised_per_s;
    cleared += a.cleared_per_s;
  }
  std::stable_sort(active.begin(), active.end(),
                   [](const AlarmRule* a, const AlarmRule* b) { return a->active > b->active; });
  std::string line = "  alarms active: ";
  for (size_t i = 0; i < active.size(); ++i) {
    line += (i > 0 ? ", " : "") + paint(kYellow, active[i]->rule + " " + Human(active[i]->active));
  }
  if (active.empty()) line += "none";
  const auto rate = [&](double r) { return !rates ? std::string("...") : Human(r) + "/s"; };
  return line + "  raised " + rate(raised) + "  cleared " + rate(cleared);
}

}  // namespace

std::string Endpoint::Name() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::optional<Endpoint> ParseEndpoint(std::string_view text, std::string& error) {
  const std::string given(text);
  if (text.starts_with("https://")) {
    error = "'" + given + "': https is not served; the metrics endpoint speaks plain http";
    return std::nullopt;
  }
  if (text.starts_with("http://")) text.remove_prefix(7);
  for (const std::string_view path : {"/metrics", "/"}) {
    if (text.ends_with(path)) {
      text.remove_suffix(path.size());
      break;
    }
  }
  Endpoint e;
  std::string_view port;
  if (text.starts_with("[")) {  // [v6addr]:port
    const size_t close = text.find(']');
    if (close == std::string_view::npos) {
      error = "'" + given + "': no ']' after the IPv6 address";
      return std::nullopt;
    }
    e.host = std::string(text.substr(1, close - 1));
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty() && !rest.starts_with(":")) {
      error = "'" + given + "': expected ':port' after ']'";
      return std::nullopt;
    }
    if (!rest.empty()) port = rest.substr(1);
  } else {
    const size_t colon = text.find(':');
    if (colon != text.rfind(':')) {
      error = "'" + given + "': write an IPv6 address in brackets, [addr]:port";
      return std::nullopt;
    }
    e.host = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) port = text.substr(colon + 1);
  }
  if (e.host.empty() || e.host.find_first_of("/?# ") != std::string::npos) {
    error = "'" + given + "': expected host:port or http://host:port";
    return std::nullopt;
  }
  e.port = kDefaultPort;
  if (port.data() != nullptr) {
    int p = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p < 1 ||
        p > 65535) {
      error = "'" + given + "': the port must be a number from 1 to 65535";
      return std::nullopt;
    }
    e.port = p;
  }
  return e;
}

double CounterRate(double before, double now, double seconds) {
  if (!(seconds > 0)) return kNaN;
  return (now >= before ? now - before : now) / seconds;
}

Buckets BucketDelta(const Buckets& before, const Buckets& now) {
  const double before_count = before.empty() ? 0 : before.back().second;
  const double now_count = now.empty() ? 0 : now.back().second;
  if (now_count < before_count) return now;  // reset
  Buckets delta;
  double floor = 0;
  for (const auto& [le, count] : now) {
    double prior = 0;
    for (const auto& [ble, bcount] : before) {
      if (ble == le) prior = bcount;
    }
    floor = std::max(floor, count - prior);  // cumulative counts never fall
    delta.emplace_back(le, floor);
  }
  return delta;
}

Buckets AddBuckets(const Buckets& a, const Buckets& b) {
  std::set<double> bounds;
  for (const auto& x : a) bounds.insert(x.first);
  for (const auto& x : b) bounds.insert(x.first);
  // The count of a cumulative histogram at `le`: its count at the largest bound <= le.
  const auto at = [](const Buckets& h, double le) {
    double count = 0;
    for (const auto& [bound, c] : h) {
      if (bound <= le) count = c;
    }
    return count;
  };
  Buckets sum;
  for (const double le : bounds) sum.emplace_back(le, at(a, le) + at(b, le));
  return sum;
}

double HistogramQuantile(double q, const Buckets& buckets) {
  if (buckets.empty() || !(buckets.back().second > 0)) return kNaN;
  const double total = buckets.back().second;
  const double rank = std::clamp(q, 0.0, 1.0) * total;
  double lower = 0, below = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    const auto [le, count] = buckets[i];
    if (count >= rank && count > below) {
      if (std::isinf(le)) return i == 0 ? kNaN : buckets[i - 1].first;
      if (i == 0 && le <= 0) return le;
      return lower + (le - lower) * (rank - below) / (count - below);
    }
    lower = le;
    below = count;
  }
  return buckets.back().first;
}

std::string Human(double v) {
  if (std::isnan(v)) return "-";
  const double a = std::fabs(v);
  char buf[32];
  if (a < 1000 && a == std::floor(a)) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (a < 9.995) {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  } else if (a < 99.95) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else if (a < 999.5) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    const char* units = "kMGTP";
    double x = v / 1000;
    while (std::fabs(x) >= 999.5 && units[1] != '\0') {
      x /= 1000;
      ++units;
    }
    const double ax = std::fabs(x);
    std::snprintf(buf, sizeof buf,
                  ax < 9.995   ? "%.2f%c"
                  : ax < 99.95 ? "%.1f%c"
                               : "%.0f%c",
                  x, *units);
  }
  return buf;
}

std::string Seconds(double s) {
  if (std::isnan(s)) return "-";
  char buf[32];
  if (s < 0.9995) {
    std::snprintf(buf, sizeof buf, "%.0fms", s * 1000);
  } else if (s < 9.995) {
    std::snprintf(buf, sizeof buf, "%.2fs", s);
  } else if (s < 99.95) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  } else {
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  }
  return buf;
}

Scrape ScrapeEndpoint(const Endpoint& endpoint, int timeout_ms) {
  Scrape s;
  std::string error;
  const auto metrics = HttpGet(endpoint.host, endpoint.port, "/metrics", timeout_ms, error);
  s.at = std::chrono::steady_clock::now();
  s.unix_s =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (!metrics) {
    s.error = "no answer (" + error + ")";
    return s;
  }
  if (metrics->status != 200) {
    s.error = "/metrics answered " + std::to_string(metrics->status);
    return s;
  }
  prom::ParseResult parsed = prom::ParseText(metrics->body);
  if (parsed.samples.empty()) {
    s.error = "/metrics: no samples" + (parsed.errors.empty() ? "" : " (" + parsed.errors[0] + ")");
    return s;
  }
  s.up = true;
  s.samples = std::move(parsed.samples);
  if (const auto ready = HttpGet(endpoint.host, endpoint.port, "/readyz", timeout_ms, error)) {
    s.ready = ready->status == 200;
  }
  return s;
}

WorkerView ComputeView(const std::string& endpoint, const Scrape* before, const Scrape& now) {
  WorkerView v;
  v.endpoint = endpoint;
  v.up = now.up;
  v.error = now.error;
  if (!now.up) return v;
  v.ready = now.ready;
  const Index cur(now.samples);
  const bool rates = before != nullptr && before->up;
  const std::optional<Index> prev =
      rates ? std::optional<Index>(std::in_place, before->samples) : std::nullopt;
  const double seconds = rates ? std::chrono::duration<double>(now.at - before->at).count() : kNaN;
  v.rates = rates;
  v.version = cur.version;
  if (const auto start = cur.Get("process_start_time_seconds")) {
    v.uptime_s = std::max(0.0, now.unix_s - *start);
  }
  v.rss_bytes = cur.Get("process_resident_memory_bytes");
  v.partitions = cur.Get("fleetflow_partitions_owned");
  v.lag = cur.Get("fleetflow_consumer_pending");
  v.queued = cur.Get("fleetflow_graph_queued_messages");
  v.sources_blocked = cur.Get("fleetflow_graph_sources_blocked");
  // Every partitioned source sees the same membership: the most any of them sees.
  for (const auto& [node, metrics] : cur.by_node) {
    if (const auto w = Find(&metrics, "fleetflow_workers")) {
      v.workers = std::max(v.workers.value_or(0), *w);
    }
  }
  if (const auto errors = cur.Get("fleetflow_operator_errors_total")) {
    v.errors_per_s = rates ? CounterRate(prev->Get("fleetflow_operator_errors_total").value_or(0),
                                         *errors, seconds)
                           : kNaN;
  }

  for (const auto& [node, metrics] : cur.by_node) {
    NodeRow row;
    row.node = node;
    const auto op = cur.op.find(node);
    row.op = op == cur.op.end() ? "" : op->second;
    row.rank = Rank(metrics);
    const Buckets* latency = nullptr;
    if (const auto h = cur.histogram.find(node); h != cur.histogram.end()) {
      if (const auto l = h->second.find(kLatencyHistogram); l != h->second.end()) {
        Buckets prior;
        if (rates && prev->histogram.contains(node) &&
            prev->histogram.at(node).contains(kLatencyHistogram)) {
          prior = prev->histogram.at(node).at(kLatencyHistogram);
        }
        row.latency = BucketDelta(prior, l->second);
        latency = &row.latency;
      }
    }
    static const std::map<std::string, double> kNothing;  // a node new since: from 0
    const auto* prior = rates ? prev->Node(node) : nullptr;
    const NodeContext ctx{rates && prior == nullptr ? &kNothing : prior, metrics, seconds, latency};
    for (const Column& c : Columns()) row.cells.push_back(c.value(ctx));
    v.nodes.push_back(std::move(row));
  }
  std::sort(v.nodes.begin(), v.nodes.end(), [](const NodeRow& a, const NodeRow& b) {
    return std::tie(a.rank, a.node) < std::tie(b.rank, b.node);
  });

  // Alarms by rule (in the order of the names), from the rule nodes' metrics.
  for (const auto& entry : cur.by_rule) {
    const std::string& rule = entry.first;
    const auto& metrics = entry.second;  // clang 14 cannot capture a structured binding
    const auto active = Find(&metrics, kAlarmsActive);
    if (!active) continue;
    AlarmRule a{rule, *active};
    if (rates) {
      const auto* prior = prev->Rule(rule);  // null: a rule new since, from 0
      const auto rate = [&](const char* name) {
        return CounterRate(Find(prior, name).value_or(0), Find(&metrics, name).value_or(0),
                           seconds);
      };
      a.raised_per_s = rate(kAlarmsRaised);
      a.cleared_per_s = rate(kAlarmsCleared);
    }
    v.alarms.push_back(std::move(a));
  }
  return v;
}

std::vector<std::pair<std::string, std::string>> ColumnHelp() {
  std::vector<std::pair<std::string, std::string>> help = {
      {"NODE", "the node's id in the pipeline file"},
      {"OPERATOR", "its type"},
  };
  for (const Column& c : Columns()) help.emplace_back(c.title, c.help);
  return help;
}

std::vector<std::string> RenderFrame(const std::vector<WorkerView>& views, const std::string& title,
                                     bool color) {
  const Painter paint{color};
  const Layout layout(views);
  const auto& columns = Columns();
  std::vector<std::string> titles;
  for (const Column& c : columns) titles.emplace_back(c.title);
  const std::string table_header = paint(kBold, layout.Row("NODE", "OPERATOR", titles));

  std::vector<std::string> lines = {title};
  for (const WorkerView& v : views) {
    lines.emplace_back();
    lines.push_back(Header(v, paint));
    if (!v.up || v.nodes.empty()) continue;
    lines.push_back(table_header);
    for (const NodeRow& n : v.nodes) {
      std::vector<std::string> cells;
      for (size_t i = 0; i < columns.size(); ++i) {
        cells.push_back(Cell(columns[i], n.cells[i], v.rates));
      }
      lines.push_back(layout.Row(n.node, n.op, cells));
    }
    if (!v.alarms.empty()) lines.push_back(AlarmsLine(v.alarms, v.rates, paint));
  }
  if (views.size() < 2) return lines;

  // The fleet: each column summed over every node of every worker that answered.
  size_t up = 0;
  bool rates = true;
  double partitions = 0, lag = 0;
  bool has_partitions = false, has_lag = false;
  std::vector<std::optional<double>> total(columns.size());
  Buckets latency;
  std::map<std::string, AlarmRule> alarms;  // by rule, summed over the workers
  for (const WorkerView& v : views) {
    if (!v.up) continue;
    ++up;
    for (const AlarmRule& a : v.alarms) {
      AlarmRule& sum = alarms.try_emplace(a.rule, AlarmRule{a.rule, 0, 0, 0}).first->second;
      sum.active += a.active;
      sum.raised_per_s += a.raised_per_s;
      sum.cleared_per_s += a.cleared_per_s;
    }
    rates = rates && v.rates;
    has_partitions = has_partitions || v.partitions.has_value();
    has_lag = has_lag || v.lag.has_value();
    partitions += v.partitions.value_or(0);
    lag += v.lag.value_or(0);
    for (const NodeRow& n : v.nodes) {
      latency = AddBuckets(latency, n.latency);
      for (size_t i = 0; i < columns.size(); ++i) {
        if (n.cells[i]) total[i] = total[i].value_or(0) + n.cells[i].value_or(0);
      }
    }
  }
  const std::string count = std::to_string(up) + " of " + std::to_string(views.size()) + " up";
  std::string line =
      paint(kBold, "fleet") + "  " + (up < views.size() ? paint(kRed, count) : count);
  if (has_partitions) line += "  partitions " + Human(partitions);
  if (has_lag) line += "  lag " + Human(lag);
  lines.emplace_back();
  lines.push_back(line);
  if (up == 0) return lines;
  std::vector<std::string> cells;
  for (size_t i = 0; i < columns.size(); ++i) {
    std::optional<double> t = total[i];
    if (t && columns[i].kind == Kind::kSeconds) t = HistogramQuantile(0.99, latency);
    if (t && columns[i].kind == Kind::kFlag) {
      cells.push_back(Human(*t));  // blocked sinks
      continue;
    }
    cells.push_back(Cell(columns[i], t, rates));
  }
  lines.push_back(table_header);
  lines.push_back(layout.Row("total", "", cells));
  if (!alarms.empty()) {
    std::vector<AlarmRule> by_rule;
    for (auto& [rule, a] : alarms) by_rule.push_back(std::move(a));
    lines.push_back(AlarmsLine(by_rule, rates, paint));
  }
  return lines;
}

}  // namespace top

namespace {

constexpr int kExitFatal = 1;
constexpr int kExitInvalid = 2;

/// The terminal while the view redraws in place: cursor hidden, keys read one at a time without
/// echo (when stdin is a terminal); both restored on destruction.
class Terminal {
 public:
  Terminal() {
    keys_ = isatty(STDIN_FILENO) != 0 && tcgetattr(STDIN_FILENO, &saved_) == 0;
    if (keys_) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);  // ISIG stays: Ctrl-C is SIGINT
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    std::cout << "\x1b[?25l\x1b[2J" << std::flush;
  }
  ~Terminal() {
    if (keys_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
    std::cout << "\n\x1b[?25h" << std::flush;  // the shell prompt on a line of its own
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  /// Draws the frame from the top left, each line cut to the terminal's width and no more lines
  /// than it has rows, and clears what the previous frame left.
  void Draw(const std::vector<std::string>& lines) const {
    winsize ws{};
    const bool known = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0;
    const size_t cols = known ? ws.ws_col : 120;
    const size_t rows = known && ws.ws_row > 0 ? ws.ws_row : lines.size();
    std::string out = "\x1b[H";
    for (size_t i = 0; i < lines.size() && i < rows; ++i) {
      if (i > 0) out += "\r\n";
      out += Cut(lines[i], cols) + "\x1b[K";
    }
    out += "\x1b[J";
    std::cout << out << std::flush;
  }

  /// Whether `q` was typed since the last call.
  bool QuitTyped() const {
    if (!keys_) return false;
    char buf[64];
    bool quit = false;
    for (pollfd p{STDIN_FILENO, POLLIN, 0}; poll(&p, 1, 0) > 0 && (p.revents & POLLIN);) {
      const ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n <= 0) break;
      quit = quit || std::find(buf, buf + n, 'q') != buf + n ||
             std::find(buf, buf + n, 'Q') != buf + n;
    }
    return quit;
  }
  bool keys() const { return keys_; }

 private:
  /// The first `cols` visible characters of `line` (ANSI style sequences take no room).
  static std::string Cut(const std::string& line, size_t cols) {
    std::string out;
    size_t visible = 0;
    bool cut = false;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\x1b') {
        const size_t end = line.find('m', i);
        out += line.substr(i, end - i + 1);
        i = end == std::string::npos ? line.size() : end;
        continue;
      }
      if (visible == cols) {
        cut = true;
        continue;
      }
      out.push_back(line[i]);
      ++visible;
    }
    return cut ? out + "\x1b[0m" : out;
  }

  bool keys_ = false;
  termios saved_{};
};

std::string Clock() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

}  // namespace

int Top(const TopArgs& args) {
  std::vector<std::string> given = args.endpoints;
  if (given.empty()) given.push_back("127.0.0.1:" + std::to_string(top::kDefaultPort));
  std::vector<top::Endpoint> endpoints;
  for (const std::string& text : given) {
    std::string error;
    const auto e = top::ParseEndpoint(text, error);
    if (!e) {
      std::cerr << "top: " << error << '\n';
      return kExitInvalid;
    }
    endpoints.push_back(*e);
  }
  const int iterations = args.once ? 1 : args.iterations;
  const bool redraw = iterations == 0 && isatty(STDOUT_FILENO) != 0;
  const bool color = redraw && !args.no_color && std::getenv("NO_COLOR") == nullptr;

  const StopSignals stop;  // before the scraping threads start
  std::optional<Terminal> terminal;
  if (redraw) terminal.emplace();
  const auto interval = std::chrono::milliseconds(args.interval_ms);
  char every[32];
  std::snprintf(every, sizeof every, "every %g s", args.interval_ms / 1000.0);
  std::string title_tail = std::string("  ") + every + "  " + std::to_string(endpoints.size()) +
                           (endpoints.size() == 1 ? " endpoint" : " endpoints");
  if (terminal && terminal->keys()) title_tail += "  (q quits)";

  std::vector<top::Scrape> before(endpoints.size());
  bool have_before = false;
  int printed = 0;
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::future<top::Scrape>> pending;
    for (const auto& e : endpoints) {
      pending.push_back(std::async(std::launch::async, top::ScrapeEndpoint, e, args.timeout_ms));
    }
    std::vector<top::Scrape> now;
    std::vector<top::WorkerView> views;
    bool all_up = true;
    for (size_t i = 0; i < endpoints.size(); ++i) {
      now.push_back(pending[i].get());
      views.push_back(
          top::ComputeView(endpoints[i].Name(), have_before ? &before[i] : nullptr, now[i]));
      all_up = all_up && views.back().up;
    }
    const auto lines = top::RenderFrame(views, "fleetflow top  " + Clock() + title_tail, color);
    if (terminal) {
      terminal->Draw(lines);
    } else if (have_before) {
      std::string frame;
      for (const auto& l : lines) frame += l + "\n";
      std::cout << (printed > 0 ? "\n" : "") << frame << std::flush;
    }
    printed += have_before ? 1 : 0;
    before = std::move(now);
    have_before = true;
    if (iterations > 0 && printed >= iterations) return all_up ? 0 : kExitFatal;

    const auto next = start + interval;
    for (auto left = next - std::chrono::steady_clock::now(); left > left.zero();
         left = next - std::chrono::steady_clock::now()) {
      // On a terminal, look for `q` every 50 ms; otherwise wait for a signal only.
      const auto slice = terminal && terminal->keys() ? std::min<std::chrono::nanoseconds>(
                                                            left, std::chrono::milliseconds(50))
                                                      : std::chrono::nanoseconds(left);
      if (stop.Wait(slice) != 0 || (terminal && terminal->QuitTyped())) return 0;
    }
  }
}

CLI::App* AddTopCommand(CLI::App& app, TopArgs& args) {
  auto* cmd = app.add_subcommand(
      "top",
      "A live view of running workers from their /metrics: per worker its state, partitions "
      "and lag, and per node of its pipeline the rates over the last interval. Redraws in place "
      "on a terminal (q or Ctrl-C quits); prints one frame after another otherwise.");
  cmd->add_option("endpoints", args.endpoints,
                  "Workers' metrics endpoints, host:port or http://host:port (their "
                  "--metrics-port); several give the fleet's total too. Default: 127.0.0.1:9464");
  cmd->add_option("--interval-ms", args.interval_ms, "Scrape every so often")
      ->capture_default_str()
      ->check(CLI::Range(100, 3600000));
  cmd->add_option("--timeout-ms", args.timeout_ms,
                  "Wait this long for an endpoint's answer; one that does not answer is shown "
                  "DOWN and the view goes on")
      ->capture_default_str()
      ->check(CLI::Range(1, 60000));
  auto* once = cmd->add_flag("--once", args.once,
                             "Print one frame (two scrapes an interval apart, for the rates) "
                             "and exit: 1 when an endpoint did not answer");
  cmd->add_option("--iterations", args.iterations,
                  "Print this many frames, one per interval, then exit as --once does")
      ->check(CLI::Range(1, 1000000))
      ->excludes(once);
  cmd->add_flag("--no-color", args.no_color, "No colors on a terminal (also: NO_COLOR set)");
  std::string footer =
      "Each worker: endpoint, up or DOWN (and why), version, uptime, resident memory, ready or "
      "NOT READY (/readyz), workers in the membership, partitions owned, lag (messages of the "
      "stream not yet delivered), messages queued in the graph, sources blocked by "
      "backpressure, operator errors/s when any.\nColumns (rates per second over the last "
      "interval; - where the node has no such metric, ... until a second scrape):\n";
  for (const auto& [title, help] : top::ColumnHelp()) {
    footer +=
        "  " + title + std::string(title.size() < 10 ? 10 - title.size() : 1, ' ') + help + "\n";
  }
  footer +=
      "With a rule node, a line after the table: the rules with alarms active now among the "
      "worker's vehicles, most first (fleetflow_alarms_active), and the alarms raised and "
      "cleared per second.\n"
      "With several endpoints, the fleet line sums partitions, lag and each column (P99 LAT: "
      "over every worker's rows), and the alarms over the workers.";
  cmd->footer(footer);
  return cmd;
}

}  // namespace fleetflow

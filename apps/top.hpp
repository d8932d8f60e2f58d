#pragma once
/// `fleetflow top` (docs/cli.md): a live view of running workers, from their /metrics. Each
/// interval it scrapes every endpoint, turns the counters into per-second rates over the interval
/// and the row latency histogram into its 99th percentile, and draws one block per worker (its
/// header line, a table of its pipeline's nodes and, with a rule node, its active alarms), then
/// the fleet's total.

#include <chrono>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "prom_text.hpp"

namespace CLI {
class App;
}

namespace fleetflow {

struct TopArgs {
  std::vector<std::string> endpoints;  // empty: 127.0.0.1:9464
  int interval_ms = 1000;
  int timeout_ms = 1000;
  int iterations = 0;  // frames to print with rates, then exit; 0: until interrupted
  bool once = false;   // iterations = 1
  bool no_color = false;
};

/// Adds the `top` subcommand, its options and the help on its columns to `app`.
CLI::App* AddTopCommand(CLI::App& app, TopArgs& args);

/// Runs the view until SIGINT, SIGTERM, SIGHUP or `q` (on a terminal), or for the frames asked;
/// returns the exit status: 0, 1 when an endpoint was down in the last frame of --once or
/// --iterations, 2 for a bad endpoint.
int Top(const TopArgs& args);

namespace top {

struct Endpoint {
  std::string host;
  int port = 9464;
  /// host:port, as the view names the worker ([host]:port for an IPv6 address).
  std::string Name() const;
};

/// `host:port`, `http://host:port` (a trailing `/` or `/metrics` is allowed), `host` (port 9464),
/// `[v6addr]:port`; nullopt with `error` set otherwise.
std::optional<Endpoint> ParseEndpoint(std::string_view text, std::string& error);

/// The per-second rate of a counter read `before` and `now`, `seconds` apart. A counter that went
/// down was reset (the worker restarted) and counts from 0: now / seconds.
double CounterRate(double before, double now, double seconds);

/// A histogram's cumulative buckets: (upper bound `le`, observations at or below it), ascending by
/// bound, the last one +Inf.
using Buckets = std::vector<std::pair<double, double>>;

/// The observations of each bucket between two readings (cumulative, like the readings). When
/// the count went down the histogram was reset: `now` whole.
Buckets BucketDelta(const Buckets& before, const Buckets& now);

/// The buckets of two histograms added, bound by bound (a bound only one of them has takes the
/// other's count at its next lower bound).
Buckets AddBuckets(const Buckets& a, const Buckets& b);

/// The q-quantile (0..1) of the observations in `buckets`, as Prometheus' histogram_quantile:
/// linear within the bucket it falls in (the first bucket starts at 0); the largest finite bound
/// when it falls in the +Inf bucket; NaN without observations.
double HistogramQuantile(double q, const Buckets& buckets);

/// One scrape of one endpoint.
struct Scrape {
  std::chrono::steady_clock::time_point at;
  double unix_s = 0;  ///< when, in seconds since the Unix epoch (uptime from the start time)
  bool up = false;
  std::string error;  ///< why it is down
  std::vector<prom::Sample> samples;
  std::optional<bool> ready;  ///< /readyz: 200 or not; nullopt when it did not answer
};

/// GETs /metrics and /readyz of `endpoint`, each waiting `timeout_ms` at most.
Scrape ScrapeEndpoint(const Endpoint& endpoint, int timeout_ms);

/// A node of a worker's pipeline: one row of the table. `cells` holds one value per column of
/// the table: nullopt where the node has no such metric, NaN for a rate not known yet (one
/// scrape so far).
struct NodeRow {
  std::string node;
  std::string op;
  int rank = 0;  ///< sources, others (filters), state, joins, sinks: the table's order
  std::vector<std::optional<double>> cells;
  Buckets latency;  ///< row latency observations in the interval (for the fleet's percentile)
};

/// The alarms of one rule (the `rule` label of a rule node's metrics), summed over the worker's
/// rule nodes.
struct AlarmRule {
  std::string rule;
  double active = 0;  ///< fleetflow_alarms_active: among the vehicles the worker owns, now
  /// fleetflow_alarms_raised_total and _cleared_total per second; NaN before two scrapes.
  double raised_per_s = std::numeric_limits<double>::quiet_NaN();
  double cleared_per_s = std::numeric_limits<double>::quiet_NaN();
};

struct WorkerView {
  std::string endpoint;
  bool up = false;
  bool rates = false;  ///< two scrapes in a row answered: the rates are known
  std::string error;
  std::optional<bool> ready;
  std::string version;
  // Each present when the worker exposes the metric.
  std::optional<double> uptime_s, rss_bytes, workers, partitions, lag, queued, sources_blocked,
      errors_per_s;
  std::vector<NodeRow> nodes;
  /// By rule name; empty when the pipeline has no rule node (no fleetflow_alarms_active).
  std::vector<AlarmRule> alarms;
};

/// The view of one worker from its last two scrapes (`before` null, or down: no rates yet).
WorkerView ComputeView(const std::string& endpoint, const Scrape* before, const Scrape& now);

/// The table's columns: titles and what they count, for --help.
std::vector<std::pair<std::string, std::string>> ColumnHelp();

/// The lines of one frame: a title line, a block per worker (with a rule node, a line of its
/// active alarms after its table), and with several workers the fleet's total (and its alarms).
/// `color`: ANSI colors (no cursor movement).
std::vector<std::string> RenderFrame(const std::vector<WorkerView>& views, const std::string& title,
                                     bool color);

/// A rate, count or size in at most 5 characters: 0, 0.5, 12.5, 950, 1.23k, 45.6k, 789k, 1.23M.
std::string Human(double v);
/// A latency: 850ms, 1.20s, 45.0s, 120s.
std::string Seconds(double s);

}  // namespace top

}  // namespace fleetflow

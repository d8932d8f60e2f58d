#include "timescale_sink.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pg_client.hpp"
#include "timescale_schema.hpp"

namespace fleetflow {

std::string ColumnType(const RowColumn& column) {
  switch (column.stat) {
    case ColumnStat::kCount:
      return "bigint";
    case ColumnStat::kFirstTime:
    case ColumnStat::kLastTime:
      return "timestamptz";
    default:
      return "double precision";
  }
}

SinkGeometry GeometryOf(const TimescaleSinkOptions& o) {
  SinkGeometry g;
  g.name = o.geometry;
  if (g.name.empty()) return g;
  g.box = std::any_of(o.columns.begin(), o.columns.end(),
                      [](const RowColumn& c) { return c.stat != ColumnStat::kNone; });
  // The first column of the sensor with the field and statistic asked for.
  const auto find = [&o](ColumnField field, ColumnStat stat) -> std::optional<size_t> {
    for (size_t i = 0; i < o.columns.size(); ++i) {
      const RowColumn& c = o.columns[i];
      if (c.sensor == o.geometry_sensor && c.field == field && c.stat == stat) return i;
    }
    return std::nullopt;
  };
  struct Need {
    ColumnField field;
    ColumnStat stat;
    const char* words;
  };
  const std::vector<Need> needs =
      g.box ? std::vector<Need>{{ColumnField::kLon, ColumnStat::kMin, "field lon, stat min"},
                                {ColumnField::kLat, ColumnStat::kMin, "field lat, stat min"},
                                {ColumnField::kLon, ColumnStat::kMax, "field lon, stat max"},
                                {ColumnField::kLat, ColumnStat::kMax, "field lat, stat max"}}
            : std::vector<Need>{{ColumnField::kLon, ColumnStat::kNone, "field lon"},
                                {ColumnField::kLat, ColumnStat::kNone, "field lat"}};
  std::string missing;
  for (const Need& need : needs) {
    if (const auto i = find(need.field, need.stat)) {
      g.from.push_back(*i);
    } else {
      missing += std::string(missing.empty() ? "" : "; ") + "{sensor " + o.geometry_sensor + ", " +
                 need.words + "}";
    }
  }
  if (!missing.empty()) {
    g.from.clear();
    g.problem = std::string("geometry '") + g.name + "' is " +
                (g.box ? "the bounding box of the statistics" : "the point of the interpolated") +
                " lat / lon columns of sensor '" + o.geometry_sensor + "', but the columns lack " +
                missing + ": add them, or set geometry_sensor";
  }
  return g;
}

std::string GeometryType(const SinkGeometry& geometry) {
  return geometry.box ? "geometry(Geometry, 4326)" : "geometry(Point, 4326)";
}

std::string GeometryExpression(const SinkGeometry& g, const std::vector<std::string>& values) {
  const auto point = [&](size_t lon, size_t lat) {
    return "ST_MakePoint(" + values.at(g.from.at(lon)) + ", " + values.at(g.from.at(lat)) + ")";
  };
  // ST_MakePoint and ST_MakeLine are strict: a NULL number gives a NULL geometry.
  if (!g.box) return "ST_SetSRID(" + point(0, 1) + ", 4326)";
  return "ST_SetSRID(ST_Envelope(ST_MakeLine(" + point(0, 1) + ", " + point(2, 3) + ")), 4326)";
}

std::vector<RowColumn> SinkColumns(const Config& config) {
  return TimescaleSinkSpec().Parse(config).columns;
}

namespace {

constexpr const char* kName = kTimescaleSinkName;
constexpr char kStaging[] = "ff_sink_staging";

using Millis = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Histogram buckets (docs/metrics.md). A write transaction: 1 ms to 10 s. A row's latency is at
// least the window join's allowed lateness plus flush_ms (0.5 s with pipelines/default.json):
// 50 ms to 10 min.
const std::vector<double> kWriteBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25,  0.5,    1,     2.5,  5,     10};
const std::vector<double> kLatencyBuckets = {0.05, 0.1, 0.25, 0.5, 0.75, 1,   1.5, 2,
                                             3,    5,   10,   30,  60,   120, 300, 600};
// From a window's close to its rows' commit: 5 ms to 1 min; the stages of it: 0.1 ms to 10 s.
const std::vector<double> kCloseBuckets = {0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                                           0.25,  0.5,  1,    2.5,  5,    10,    30,  60};
const std::vector<double> kStageBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                           0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                           1,      2.5,     5,      10};

/// Where a row's time goes from its window's due time to the commit that wrote it
/// (docs/metrics.md, row_stage_seconds), one histogram per stage, each observation weighted by
/// the rows it is of.
class RowStages {
 public:
  enum Stage { kArrival, kGraph, kJoin, kQueue, kEncode, kBuffer, kCopy, kUpsert, kCommit, kCount };

  RowStages(Metrics& metrics, const Labels& labels) {
    static constexpr const char* kNames[kCount] = {"arrival", "graph", "join",   "queue", "encode",
                                                   "buffer",  "copy",  "upsert", "commit"};
    for (int s = 0; s < kCount; ++s) {
      Labels l = labels;
      l.emplace_back("stage", kNames[s]);
      stages_[s] = &metrics.GetHistogram(
          "row_stage_seconds",
          "Time rows spent in each stage from their window's due time (its time plus the "
          "allowed lateness) to the commit that wrote them, in seconds: arrival (until the "
          "source received the input that closed the window: the vehicles' batching, the "
          "delivery, a fetch), graph (source to the windowed operator), join (making the "
          "window's rows), queue (to the sink), encode (their column values), buffer (held "
          "before the write began), copy, upsert and commit (of the write transaction). See "
          "docs/metrics.md.",
          kStageBuckets, l);
    }
  }

  /// `ns` (skipped when negative: a clock that stepped back) for `rows` rows.
  void Observe(Stage s, int64_t ns, uint64_t rows) {
    if (ns >= 0 && rows > 0) stages_[s]->Observe(static_cast<double>(ns) * 1e-9, rows);
  }

  /// The stages up to the sink of `rows` rows of a window closed with `t` that reached the sink
  /// at `arrived_ns` and whose values took `encode` to compute; none for a correction.
  void Arrived(const CloseTiming& t, int64_t arrived_ns, std::chrono::nanoseconds encode,
               uint64_t rows) {
    if (t.closed_ns == 0) return;
    if (t.input_ns != 0) {  // closed on input, not on the clock
      Observe(kArrival, t.input_ns - t.due_ns, rows);
      Observe(kGraph, t.closed_ns - t.input_ns, rows);
    }
    Observe(kJoin, t.emitted_ns - t.closed_ns, rows);
    Observe(kQueue, arrived_ns - t.emitted_ns, rows);
    Observe(kEncode, encode.count(), rows);
  }

 private:
  std::array<Histogram*, kCount> stages_{};
};

/// The column names the sink adds itself.
bool IsKeyColumn(const TimescaleSinkOptions& o, const std::string& name) {
  return name == o.key_column || name == "time";
}

/// Statistic columns fit the rows of a window_aggregate, interpolated ones those of a
/// window_join (the nearest node upstream that says which rows it emits).
std::vector<UpstreamProblem> CheckColumnsFitTheRows(const Config& self, const std::string& self_id,
                                                    const std::vector<UpstreamNode>& upstream) {
  const auto [rows, from] = RowsFrom(upstream);
  const UpstreamNode* partitioned = nullptr;
  const UpstreamNode* across = nullptr;
  for (const UpstreamNode& n : upstream) {
    if (n.facts.partitioned) partitioned = &n;
    if (n.facts.across_vehicles) across = &n;
  }
  std::vector<UpstreamProblem> problems;
  // A partition's rows across vehicles are a part of each cell's: written, the rows of a cell
  // would be written once per partition, each with some of its vehicles.
  if (rows == NodeFacts::Rows::kPartials) {
    problems.push_back({self_id, "",
                        "timescale_sink '" + self_id + "' reads the partials of " + from +
                            ": put a cell_merge between them, which writes each cell's row once "
                            "all partitions' partials are in"});
  } else if (across != nullptr && partitioned != nullptr) {
    problems.push_back({across->id, "",
                        across->type + " '" + across->id + "' is behind partitioned source '" +
                            partitioned->id +
                            "': each partition's rows are partials of the cells' rows, not rows "
                            "to write; send them with fleet_publish and write what a "
                            "fleet_source -> cell_merge makes of them "
                            "(pipelines/jetstream-tiers.json)"});
  }
  for (UpstreamProblem& p :
       CheckColumnsFitRows(TimescaleSinkSpec().Parse(self).columns, self_id, upstream)) {
    problems.push_back(std::move(p));
  }
  return problems;
}

/// The rules across fields of TimescaleSinkSpec().
void CheckSettings(const TimescaleSinkOptions& o, std::vector<ConfigProblem>& out) {
  if (o.key_column == "time") {
    out.push_back({"/key_column", "'time' is the other column of the key; name the key otherwise"});
  }
  std::set<std::string> names;
  for (size_t i = 0; i < o.columns.size(); ++i) {
    const std::string& name = o.columns[i].name;
    const std::string at = "/columns/" + std::to_string(i) + "/name";
    if (IsKeyColumn(o, name)) {
      out.push_back(
          {at, "'" + name + "' is reserved for the key column; give the column another name"});
    } else if (!names.insert(name).second) {
      out.push_back({at, "duplicate column '" + name + "'; column names must be unique"});
    }
  }
  CheckRowColumns(o.columns, out);
  for (size_t i = 0; i < o.columns.size(); ++i) {
    const RowColumn& c = o.columns[i];
    const bool takes_field = c.stat == ColumnStat::kNone || c.stat == ColumnStat::kMin ||
                             c.stat == ColumnStat::kMax || c.stat == ColumnStat::kFirst ||
                             c.stat == ColumnStat::kLast;
    if (!takes_field && c.field != ColumnField::kValue) {
      out.push_back({"/columns/" + std::to_string(i) + "/field",
                     "stat " + std::string(StatName(c.stat)) +
                         " takes no field (it is not a number of one sample); remove field, or "
                         "use min, max, first or last for lat / lon"});
    }
  }
  if (!o.geometry.empty()) {
    if (IsKeyColumn(o, o.geometry) || names.count(o.geometry)) {
      out.push_back({"/geometry", "'" + o.geometry +
                                      "' is the name of another column; give the geometry "
                                      "column a name of its own"});
    } else if (const SinkGeometry g = GeometryOf(o); !g.problem.empty()) {
      out.push_back({"/geometry", g.problem});
    }
  }
  if (o.max_pending_rows < o.batch_rows) {
    out.push_back({"/max_pending_rows", "must be at least batch_rows (" +
                                            std::to_string(o.batch_rows) + "), found " +
                                            std::to_string(o.max_pending_rows)});
  }
  if (o.retry_max < o.retry_initial) {
    out.push_back({"/retry_max_ms", "must be at least retry_initial_ms (" +
                                        std::to_string(o.retry_initial.count()) + "), found " +
                                        std::to_string(o.retry_max.count())});
  }
}

class TimescaleSink final : public Operator {
 public:
  TimescaleSink(const OperatorContext& ctx, TimescaleSinkOptions options)
      : cfg_(std::move(options)),
        node_(ctx.node_id),
        values_(cfg_.columns),
        schema_(cfg_, node_),
        rows_written_(ctx.metrics.GetCounter(
            "sink_rows_written", "Rows written (inserted or updated) to PostgreSQL", ctx.labels())),
        batches_(
            ctx.metrics.GetCounter("sink_batches", "Write transactions committed", ctx.labels())),
        retries_(ctx.metrics.GetCounter("sink_retries",
                                        "Failed PostgreSQL writes or connects that were retried",
                                        ctx.labels())),
        rows_dropped_(ctx.metrics.GetCounter("sink_rows_dropped",
                                             "Rows given up on (PostgreSQL unreachable at drain)",
                                             ctx.labels())),
        last_batch_seconds_(ctx.metrics.GetGauge("sink_last_batch_seconds",
                                                 "Duration of the last committed write transaction",
                                                 ctx.labels())),
        pending_rows_(ctx.metrics.GetGauge("sink_pending_rows", "Rows buffered, not yet written",
                                           ctx.labels())),
        blocked_(ctx.metrics.GetGauge(
            "sink_blocked",
            "1 while the sink holds max_pending_rows and waits for PostgreSQL (backpressure)",
            ctx.labels())),
        write_seconds_(ctx.metrics.GetHistogram(
            "sink_write_seconds", "Duration of each committed write transaction, in seconds.",
            kWriteBuckets, ctx.labels())),
        row_latency_(ctx.metrics.GetHistogram(
            "row_latency_seconds",
            "Time from a row's window time (event time) to the commit of the transaction that "
            "wrote it, on the engine clock, in seconds.",
            kLatencyBuckets, ctx.labels())),
        close_latency_(ctx.metrics.GetHistogram(
            "row_close_latency_seconds",
            "Time from the close of a row's window (the windowed operator began to make its "
            "rows) to the commit of the transaction that wrote it, on the engine clock, in "
            "seconds: what fleetflow adds to the window's allowed lateness.",
            kCloseBuckets, ctx.labels())),
        stages_(ctx.metrics, ctx.labels()),
        clock_(ctx.clock) {
    values_.CountErrorsIn(ctx.metrics, ctx.labels());
    backoff_ = cfg_.retry_initial;
    try {
      EnsureConnected();
    } catch (const pg::Error& e) {
      if (!e.connection_lost()) {
        throw std::runtime_error(std::string(kName) + ": preparing table '" + cfg_.table +
                                 "' failed: " + e.what());
      }
      spdlog::warn(
          "{} '{}': no PostgreSQL to write to yet ({}); rows are held and the "
          "connection is retried",
          kName, node_, e.what());
      next_attempt_ = SteadyClock::now() + backoff_;
    } catch (const SinkSetupError& e) {
      throw std::runtime_error(std::string(kName) + ": " + e.what());
    }
  }

  ~TimescaleSink() override {
    if (!pending_.empty()) {
      spdlog::error("{} '{}': {} rows were never written (no drain Tick reached the sink)", kName,
                    node_, pending_.size());
      rows_dropped_.Inc(pending_.size());
    }
  }

  void Process(const Message& in, Emitter& out) override {
    const auto* window = std::get_if<WindowBatch>(in.get());
    const auto* stats = std::get_if<StatsBatch>(in.get());
    if (window != nullptr || stats != nullptr) {
      const int64_t arrived_ns = clock_.NowNs();
      const CloseTiming& timing = window != nullptr ? window->timing : stats->timing;
      const auto encode_start = SteadyClock::now();
      const size_t rows = window != nullptr ? window->rows.size() : stats->rows.size();
      if (window != nullptr) {
        Buffer(window->rows, window->window_ns, values_.Of(*window), timing.closed_ns, arrived_ns,
               nullptr);
      } else {
        Buffer(stats->rows, stats->start_ns, values_.Of(*stats), timing.closed_ns, arrived_ns,
               stats->in_flight);
      }
      stages_.Arrived(timing, arrived_ns, SteadyClock::now() - encode_start, rows);
      // flush_ms 0: a window read live is written as soon as its rows are in; a backlog's
      // windows wait for the Tick, many in one write.
      Flush(/*all=*/cfg_.flush.count() == 0 && timing.live);
      if (pending_.size() > cfg_.max_pending_rows) HoldUntilRoom();
    } else if (const auto* tick = std::get_if<Tick>(in.get())) {
      // Rows that arrived since the previous Tick were emitted for this one (an operator
      // forwards a Tick after what it emitted on it): they count as buffered at its time.
      for (auto it = pending_.rbegin(); it != pending_.rend() && it->buffered_ns < 0; ++it) {
        it->buffered_ns = tick->now_ns;
      }
      if (tick->drain) {
        Drain();
      } else if (!pending_.empty() &&
                 std::chrono::nanoseconds(tick->now_ns - pending_.front().buffered_ns) >=
                     cfg_.flush) {
        Flush(/*all=*/true);
      } else if (!ready_.load() && SteadyClock::now() >= next_attempt_) {
        RetryConnect();
      }
      out.Emit(in);
    }
  }

  bool Ready() const override { return ready_.load(); }

 private:
  struct Pending {
    pg::ValuesRow row;
    int64_t buffered_ns = -1;  // the Tick after its arrival; -1 until that Tick
    int64_t closed_ns = 0;     // its window closed (CloseTiming::closed_ns; 0: unknown)
    int64_t arrived_ns = 0;    // it reached the sink
    InFlight in_flight;        // the last row of its window: the window's token (InFlight)
  };

  /// The upsert from the staging table. A row already in the table with the same values is left
  /// alone (not updated, so not written again): a window emitted again as it was (a partition
  /// taken over without a hand-over record, the write after a COMMIT whose outcome is unknown)
  /// costs a comparison, not a write. A row with other values (a correction) is updated.
  /// With `geometry`, the geometry column is computed from the staged numbers (a function of
  /// the value columns, so not compared; a row written before the column was there is updated
  /// once to fill it).
  std::string BuildUpsert(bool geometry) const {
    const std::string table = pg::QuoteIdent(cfg_.table);
    const std::string key = pg::QuoteIdent(cfg_.key_column);
    std::string cols = key + ", \"time\"";
    std::string select = "vehicle_id, \"time\"";  // the staging table's key
    std::string set, old_values, new_values;
    std::vector<std::string> values;
    for (size_t i = 0; i < cfg_.columns.size(); ++i) {
      const std::string q = pg::QuoteIdent(cfg_.columns[i].name);
      const std::string sep = i ? ", " : "";
      const std::string v = "v[" + std::to_string(i + 1) + "]";
      values.push_back(v);
      cols += ", " + q;
      // Times travel as microseconds since the epoch; a count is cast on assignment.
      select += ", " + (ColumnType(cfg_.columns[i]) == "timestamptz"
                            ? "timestamptz 'epoch' + " + v + " * interval '1 microsecond'"
                            : v);
      set += sep + q + " = EXCLUDED." + q;
      old_values += sep + table + "." + q;
      new_values += sep + "EXCLUDED." + q;
    }
    std::string unfilled;
    if (geometry) {
      const SinkGeometry g = GeometryOf(cfg_);
      const std::string q = pg::QuoteIdent(g.name);
      cols += ", " + q;
      select += ", " + GeometryExpression(g, values);
      set += ", " + q + " = EXCLUDED." + q;
      unfilled = " OR (" + table + "." + q + " IS NULL AND EXCLUDED." + q + " IS NOT NULL)";
    }
    return "INSERT INTO " + table + " (" + cols + ") SELECT " + select + " FROM " +
           pg::QuoteIdent(kStaging) + " ON CONFLICT (" + key + ", \"time\") DO UPDATE SET " + set +
           " WHERE ROW(" + old_values + ") IS DISTINCT FROM ROW(" + new_values + ")" + unfilled;
  }

  /// Holds the rows of one window (`rows`: WindowRow or StatsRow) at `time_ns`; its last row
  /// holds the window's `in_flight` until it is committed (rows leave pending_ in order).
  template <typename RowT>
  void Buffer(const std::vector<RowT>& rows, int64_t time_ns,
              std::vector<std::vector<std::optional<double>>> values, int64_t closed_ns,
              int64_t arrived_ns, InFlight in_flight) {
    for (size_t r = 0; r < values.size(); ++r) {
      pending_.push_back(
          {{rows[r].vehicle, time_ns, std::move(values[r])}, -1, closed_ns, arrived_ns, {}});
    }
    if (!values.empty()) pending_.back().in_flight = std::move(in_flight);
    pending_rows_.Set(static_cast<double>(pending_.size()));
  }

  /// Rows of `chunk` keyed by (vehicle_id, time in µs); the last of equal keys wins.
  static std::vector<pg::ValuesRow> Dedup(std::vector<pg::ValuesRow> chunk) {
    std::unordered_map<std::string, size_t> last;
    last.reserve(chunk.size());
    std::vector<std::string> keys;
    keys.reserve(chunk.size());
    for (size_t i = 0; i < chunk.size(); ++i) {
      keys.push_back(chunk[i].vehicle_id + '\0' + std::to_string(Microseconds(chunk[i].time_ns)));
      last[keys.back()] = i;
    }
    if (last.size() == chunk.size()) return chunk;
    std::vector<pg::ValuesRow> out;
    out.reserve(last.size());
    for (size_t i = 0; i < chunk.size(); ++i) {
      if (last[keys[i]] == i) out.push_back(std::move(chunk[i]));
    }
    return out;
  }

  /// Writes pending rows in batches: all of them, or only full batches. A failure leaves the
  /// rows pending and sets the time of the next attempt; until then Flush does nothing, so the
  /// pipeline goes on while the rows fit in max_pending_rows.
  void Flush(bool all) {
    while (!pending_.empty() && (all || pending_.size() >= cfg_.batch_rows) &&
           SteadyClock::now() >= next_attempt_) {
      if (!TryWriteFront()) return;
    }
  }

  /// Backpressure: more than max_pending_rows are held, so the sink stops taking window rows
  /// (the graph's queues fill and the sources stop fetching) until PostgreSQL takes a batch.
  void HoldUntilRoom() {
    blocked_.Set(1);
    spdlog::warn("{} '{}': {} rows held (max_pending_rows {}); waiting for PostgreSQL", kName,
                 node_, pending_.size(), cfg_.max_pending_rows);
    while (pending_.size() > cfg_.max_pending_rows) {
      std::this_thread::sleep_until(next_attempt_);
      TryWriteFront();
    }
    blocked_.Set(0);
  }

  /// One attempt to write (up to) the first batch_rows pending rows. On failure the rows stay
  /// pending and the next attempt waits for the backoff, which doubles up to retry_max_ms.
  bool TryWriteFront() {
    const size_t n = std::min(cfg_.batch_rows, pending_.size());
    std::vector<pg::ValuesRow> chunk;
    chunk.reserve(n);
    for (size_t i = 0; i < n; ++i) chunk.push_back(pending_[i].row);
    chunk = Dedup(std::move(chunk));
    const bool was_connected = ready_.load();
    try {
      EnsureConnected();
      const auto partitions_kept = schema_.EnsurePartitions(*conn_, chunk);
      const auto start = SteadyClock::now();
      const int64_t write_ns = clock_.NowNs();
      // After a COMMIT whose outcome is unknown, the rows it carried (the front of pending_,
      // all in this chunk: pending_ only grows at the back) may be in the table already: the
      // upsert leaves those alone, and the log says how many there were.
      pg::CopyTimings took;
      const uint64_t changed = conn_->CopyViaStaging(kStaging, chunk, upsert_sql_, &took);
      if (unsure_rows_ > 0) {
        spdlog::warn(
            "{} '{}': the write after the unanswered COMMIT of {} rows added or changed {} of {} "
            "rows; the other {} were in the table as sent (written by that COMMIT) and were not "
            "written again",
            kName, node_, unsure_rows_, changed, chunk.size(), chunk.size() - changed);
        unsure_rows_ = 0;
      }
      const double seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
      last_batch_seconds_.Set(seconds);
      write_seconds_.Observe(seconds);
      ObserveRowLatency(chunk);
      ObserveStages(n, write_ns, took);
      batches_.Inc();
      rows_written_.Inc(chunk.size());
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(n));
      pending_rows_.Set(static_cast<double>(pending_.size()));
      if (failures_ > 0) {
        spdlog::info("{} '{}': writing again after {} failed attempts; {} rows pending", kName,
                     node_, failures_, pending_.size());
      }
      failures_ = 0;
      backoff_ = cfg_.retry_initial;
      return true;
    } catch (const std::runtime_error& e) {  // pg::Error, SinkSetupError
      Disconnect();
      schema_.ForgetPartitions();  // the retention may have dropped one that rows need
      ++failures_;
      retries_.Inc();
      const auto* pg_error = dynamic_cast<const pg::Error*>(&e);
      if (pg_error && pg_error->commit_unknown()) unsure_rows_ = chunk.size();
      if (was_connected && pg_error && pg_error->connection_lost()) {
        lost_.emplace(Lost{server_, server_info_, SteadyClock::now()});
        spdlog::warn(
            "{} '{}': lost the connection to PostgreSQL at {} while writing {} rows{}; {} rows "
            "held, reconnecting (next attempt in {} ms): {}",
            kName, node_, server_, chunk.size(),
            pg_error->commit_unknown()
                ? " during their COMMIT (whether it happened is unknown: the next write adds or "
                  "changes only rows that are not in the table as sent)"
                : "",
            pending_.size(), backoff_.count(), e.what());
      } else {
        if (lost_) ++lost_->attempts;
        spdlog::warn(
            "{} '{}': writing {} rows failed (attempt {}), {} rows held, next attempt in "
            "{} ms: {}",
            kName, node_, chunk.size(), failures_, pending_.size(), backoff_.count(), e.what());
      }
      next_attempt_ = SteadyClock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, cfg_.retry_max);
      return false;
    }
  }

  /// Event time to commit for the rows just committed. The rows of a window share its time, so
  /// each run of equal times is recorded at once.
  void ObserveRowLatency(const std::vector<pg::ValuesRow>& rows) {
    const int64_t now_ns = clock_.NowNs();
    for (size_t i = 0; i < rows.size();) {
      size_t j = i + 1;
      while (j < rows.size() && rows[j].time_ns == rows[i].time_ns) ++j;
      row_latency_.Observe(static_cast<double>(now_ns - rows[i].time_ns) * 1e-9, j - i);
      i = j;
    }
  }

  /// Close to commit, and the stages from the sink on, for the first `n` pending rows, just
  /// committed by a write that began at `write_ns`.
  void ObserveStages(size_t n, int64_t write_ns, const pg::CopyTimings& took) {
    const int64_t now_ns = clock_.NowNs();
    for (size_t i = 0; i < n;) {
      size_t j = i + 1;
      while (j < n && pending_[j].closed_ns == pending_[i].closed_ns &&
             pending_[j].arrived_ns == pending_[i].arrived_ns) {
        ++j;
      }
      if (pending_[i].closed_ns != 0) {
        close_latency_.Observe(static_cast<double>(now_ns - pending_[i].closed_ns) * 1e-9, j - i);
        stages_.Observe(RowStages::kBuffer, write_ns - pending_[i].arrived_ns, j - i);
      }
      i = j;
    }
    stages_.Observe(RowStages::kCopy, took.copy_ns, n);
    stages_.Observe(RowStages::kUpsert, took.upsert_ns, n);
    stages_.Observe(RowStages::kCommit, took.commit_ns, n);
  }

  void Drain() {
    const auto deadline = SteadyClock::now() + cfg_.drain_timeout;
    while (!pending_.empty()) {
      if (next_attempt_ > deadline) {
        spdlog::error(
            "{} '{}': drain: PostgreSQL unreachable for {} ms; {} rows were NOT written "
            "and are counted in sink_rows_dropped",
            kName, node_, cfg_.drain_timeout.count(), pending_.size());
        rows_dropped_.Inc(pending_.size());
        pending_.clear();
        pending_rows_.Set(0);
        return;
      }
      std::this_thread::sleep_until(next_attempt_);
      TryWriteFront();
    }
  }

  void Disconnect() {
    conn_.reset();
    ready_.store(false);
  }

  /// Opens a session and prepares the table, unless both are done. Throws pg::Error,
  /// SinkSetupError.
  void EnsureConnected() {
    if (conn_ && conn_->IsOpen() && ready_.load()) return;
    Disconnect();
    auto conn = pg::Connection::Connect(cfg_.conninfo);
    // A standby (one host named, without target_session_attrs=read-write) is never written to:
    // held and retried like an unreachable server, since it may be promoted.
    const pg::ServerInfo info = conn->Identify();
    if (const std::string why = NotWritableReason(*conn, info); !why.empty()) {
      throw pg::Error(why, /*connection_lost=*/true);
    }
    schema_.Prepare(conn);
    upsert_sql_ = BuildUpsert(schema_.has_geometry());
    conn_ = std::move(conn);
    server_ = conn_->server();
    server_info_ = info;
    ready_.store(true);
    if (lost_) LogReconnected();
    schema_.StartRetentionIfNeeded();
  }

  /// The one line after a lost connection: which server the sink writes to now, and whether it
  /// is the one it lost.
  void LogReconnected() {
    const Lost& lost = *lost_;
    std::string which;
    if (server_info_.address == lost.info.address && server_info_.started == lost.info.started) {
      which = "the same server as before";
    } else if (server_ == lost.server && server_info_.address == lost.info.address) {
      which = "the same server as before, restarted (up since " + server_info_.started + ")";
    } else {
      which = "a different server than before (" + lost.server +
              (lost.info.address.empty() || lost.info.address == lost.server
                   ? ""
                   : ", address " + lost.info.address) +
              ")";
    }
    if (!server_info_.address.empty() && server_info_.address != server_) {
      which += ", address " + server_info_.address;
    }
    spdlog::warn(
        "{} '{}': writing to PostgreSQL at {}, {}; connected {:.1f} s after the connection to {} "
        "was lost, {} failed attempts in between; {} rows held",
        kName, node_, server_, which,
        std::chrono::duration<double>(SteadyClock::now() - lost.at).count(), lost.server,
        lost.attempts, pending_.size());
    lost_.reset();
  }

  void RetryConnect() {
    try {
      EnsureConnected();
      backoff_ = cfg_.retry_initial;
    } catch (const std::runtime_error& e) {
      retries_.Inc();
      if (lost_) ++lost_->attempts;
      spdlog::warn(
          "{} '{}': cannot connect to or prepare PostgreSQL yet, next attempt in {} ms: {}", kName,
          node_, backoff_.count(), e.what());
      next_attempt_ = SteadyClock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, cfg_.retry_max);
    }
  }

  const TimescaleSinkOptions cfg_;
  const std::string node_;
  RowValues values_;  // the rows' values (cfg_.columns)
  TimescaleSchema schema_;
  Counter& rows_written_;
  Counter& batches_;
  Counter& retries_;
  Counter& rows_dropped_;
  Gauge& last_batch_seconds_;
  Gauge& pending_rows_;
  Gauge& blocked_;
  Histogram& write_seconds_;
  Histogram& row_latency_;
  Histogram& close_latency_;
  RowStages stages_;
  const Clock& clock_;

  /// A session that broke: the server it was on, and since when the sink has none.
  struct Lost {
    std::string server;
    pg::ServerInfo info;
    SteadyClock::time_point at;
    int attempts = 0;  // failed attempts since
  };

  std::string upsert_sql_;  // rows not in the table as sent (BuildUpsert), set by each connect
  std::unique_ptr<pg::Connection> conn_;
  std::string server_;          // conn_'s server, kept after it is gone
  pg::ServerInfo server_info_;  // what conn_'s server said it was at connect
  std::optional<Lost> lost_;    // set from a lost session until the next one
  size_t unsure_rows_ = 0;      // rows of a COMMIT whose outcome is unknown, at pending_'s front
  std::atomic<bool> ready_{false};
  std::deque<Pending> pending_;
  Millis backoff_{100};                     // wait after the next failure
  SteadyClock::time_point next_attempt_{};  // no write or connect before
  int failures_ = 0;                        // consecutive failed attempts
};

constexpr char kIdentifier[] = "^[a-z_][a-z0-9_]{0,62}$";
constexpr char kIdentifierWords[] =
    "a valid identifier: 1 to 63 lower-case letters, digits and _, starting with a letter or _";

}  // namespace

const OptionsSpec<TimescaleSinkOptions>& TimescaleSinkSpec() {
  using O = TimescaleSinkOptions;
  return StaticSpec<O>([](OptionsSpec<O>& spec) {
    OptionsSpec<RowColumn> columns;
    columns
        .String("name",
                "Column name in the table (double precision; bigint for a count, timestamptz for a "
                "time). 1 to 63 lower-case letters, "
                "digits and _, starting with a letter or _; not the key column or time.",
                &RowColumn::name)
        .Required()
        .Pattern(kIdentifier, kIdentifierWords)
        .Example("\"speed\"");
    DeclareRowColumnFields(columns, /*statistics=*/true, "NULL");

    spec.String("conninfo",
                "libpq connection string (key=value or postgresql:// URI). Empty: libpq's "
                "environment (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSSLMODE). Give the password "
                "in a password file (PGPASSFILE, default ~/.pgpass), not here nor in PGPASSWORD: "
                "environment variables show in process listings and crash reports. Passwords "
                "never appear in logs. A primary with standbys: name them all with "
                "target_session_attrs=read-write (host=a,b port=5432,5432 ...), and every "
                "connect, reconnects after a failover too, goes to the one that takes writes. "
                "The sink never writes to a standby or a read-only session: it holds the rows "
                "and retries, saying why.",
                &O::conninfo)
        .Default("")
        .Example("\"host=db port=5432 dbname=fleet user=fleetflow sslmode=require\"");
    spec.String("table",
                "Target table, created when missing with the key column (key_column, text), time "
                "timestamptz, one column per entry of columns and PRIMARY KEY (key, time), and "
                "an index on time (a hypertable's own; on plain PostgreSQL <table>_time_idx, "
                "made at start when missing); "
                "columns missing from an existing table are added. 1 to 63 lower-case letters, "
                "digits and _, starting with a letter or _.",
                &O::table)
        .Default("vehicle_telemetry")
        .Pattern(kIdentifier, kIdentifierWords);
    spec.String("key_column",
                "The column of the rows' key (text), with time the table's primary key: the "
                "vehicle of window_join and window_aggregate rows, the cell (or \"fleet\") of "
                "fleet_aggregate rows.",
                &O::key_column)
        .Default("vehicle_id")
        .Pattern(kIdentifier, kIdentifierWords)
        .Example("\"cell\"");
    spec.ObjectArray("columns",
                     "The value columns: each takes one field of one sensor's samples, "
                     "interpolated at the window time (or a statistic of it, behind "
                     "window_aggregate), or is an expression over the other columns.",
                     &O::columns, columns)
        .MinItems(1)
        .DefaultJson(
            R"([{"name":"lat","sensor":"gps","field":"lat","interpolation":"linear","stat":"none","expression":""},)"
            R"({"name":"lon","sensor":"gps","field":"lon","interpolation":"linear","stat":"none","expression":""},)"
            R"({"name":"speed","sensor":"speed","field":"value","interpolation":"linear",)"
            R"("stat":"none","expression":""},)"
            R"({"name":"soc","sensor":"soc","field":"value","interpolation":"linear",)"
            R"("stat":"none","expression":""},)"
            R"({"name":"torque","sensor":"torque","field":"value","interpolation":"linear",)"
            R"("stat":"none","expression":""}])");
    spec.Integer("batch_rows",
                 "Rows per write transaction: buffered rows are written as soon as this many are "
                 "pending.",
                 &O::batch_rows)
        .Default(int64_t{5000})
        .Min(1);
    spec.Integer("max_pending_rows",
                 "Rows held in memory while PostgreSQL is unreachable or slow (about 150 bytes "
                 "each with five columns). The pipeline goes on until this many are held; then "
                 "the sink stops taking rows until PostgreSQL takes a batch, which fills the "
                 "graph's queues and stops the sources (JetStream keeps the messages). At least "
                 "batch_rows.",
                 &O::max_pending_rows)
        .Default(int64_t{100000})
        .Min(1);
    spec.Integer("flush_ms",
                 "Longest time a row waits in the buffer: rows are written at the first Tick at "
                 "least this long after the Tick they came with. 0: the rows of a window read "
                 "live are written as soon as they come (one write per window and partition); "
                 "those of a backlog's windows at the Tick they came with, many windows in one "
                 "write.",
                 &O::flush)
        .Default(int64_t{0})
        .Min(0);
    spec.Integer("retry_initial_ms",
                 "First wait before retrying a failed write or connect; it doubles after each "
                 "failure up to retry_max_ms.",
                 &O::retry_initial)
        .Default(int64_t{100})
        .Min(1);
    spec.Integer("retry_max_ms", "Longest wait between two retries; at least retry_initial_ms.",
                 &O::retry_max)
        .Default(int64_t{10000})
        .Min(1);
    spec.Integer("drain_timeout_ms",
                 "At shutdown (drain), how long to keep retrying while PostgreSQL is unreachable "
                 "before giving up; rows given up on are logged as an error and counted in "
                 "sink_rows_dropped. Outside a drain the sink retries without limit, holding "
                 "up to max_pending_rows rows and then slowing the pipeline down.",
                 &O::drain_timeout)
        .Default(int64_t{30000})
        .Min(0);
    spec.Enum("timescaledb",
              "auto: make the table a TimescaleDB hypertable when TimescaleDB can be used on the "
              "server, a plain PostgreSQL table otherwise, with one warning naming the reason "
              "(not installed; installed but not in shared_preload_libraries; the role may not "
              "create the extension) and the fix. The sink checks this before CREATE EXTENSION, "
              "so no session ends on a FATAL error. on: require TimescaleDB; the engine refuses "
              "to start with the same words. off: always a plain table.",
              &O::timescale,
              {{"auto", TimescaleMode::kAuto},
               {"on", TimescaleMode::kOn},
               {"off", TimescaleMode::kOff}})
        .Default("auto");
    spec.String("chunk_interval",
                "chunk_time_interval of the hypertable, a PostgreSQL interval. On an existing "
                "hypertable a different value applies to the chunks created from then on "
                "(set_chunk_time_interval). On plain PostgreSQL with a retention: the width of "
                "the table's partitions by time (aligned on the Unix epoch).",
                &O::chunk_interval)
        .Default("1 day")
        .MinLength(1)
        .Example("\"6 hours\"");
    spec.String(
            "compress_after",
            "TimescaleDB Community edition only (timescaledb.license = 'timescale'): compress "
            "chunks older than this interval (segmented by the key column). Empty: no compression "
            "policy. An existing policy is kept. On the Apache-licensed edition (as Debian "
            "builds it) it is a configuration error naming the edition.",
            &O::compress_after)
        .Default("")
        .Example("\"7 days\"");
    spec.String("retention",
                "Drop rows older than this interval, a chunk or partition at a time. TimescaleDB "
                "Community edition: a retention policy job (an existing one is kept). "
                "Apache-licensed edition, which has no policy jobs: the sink runs drop_chunks() "
                "itself on a session of its own, at start and then every chunk_interval (at most "
                "hourly), waiting at most 2 s for a lock, off the write path. Plain PostgreSQL: "
                "the sink creates the table PARTITION BY RANGE (time), one partition per "
                "chunk_interval, each made before the rows that need it are written, and drops "
                "the partitions wholly older than the retention the same way (a table that "
                "exists unpartitioned is left alone, with a warning). Rows already older than "
                "the retention (a replay) are written all the same and go at its next turn. "
                "Empty: keep rows forever.",
                &O::retention)
        .Default("")
        .Example("\"90 days\"");
    spec.String("geometry",
                "Adds a PostGIS geometry column of this name in SRID 4326 (longitude, latitude), "
                "with a GiST index, so that spatial queries (&&, ST_Intersects, ST_DWithin) find "
                "rows by place. The database computes it in each write (in the upsert: no data "
                "sent twice, and turning it on for an existing table rewrites none of its rows) "
                "from columns the sink writes anyway, those of geometry_sensor: behind window_join "
                "a Point from the "
                "interpolated lat and lon columns; behind window_aggregate the bounding box from "
                "the min and max of lat and lon (ST_Envelope: a Polygon; a Point when the "
                "vehicle stood still; a LineString when it moved along one axis only). NULL when "
                "one of those numbers is NULL. The sink runs CREATE EXTENSION IF NOT EXISTS "
                "postgis in the database when it lacks it. Where PostGIS is not installed on the "
                "server (Debian: postgresql-15-postgis-3, for the server's major version), or "
                "the role may not create the extension (PostGIS needs a superuser for that, "
                "once per database), the table gets the plain columns only: one warning names "
                "what is missing and the fix, and the sink writes on (the column and its index "
                "are added at a later start that finds PostGIS). Rows written before the column "
                "existed keep NULL until written again. Empty: no geometry column, PostGIS is "
                "not needed.",
                &O::geometry)
        .Default("")
        .Pattern("^([a-z_][a-z0-9_]{0,62})?$", std::string("empty, or ") + kIdentifierWords)
        .Example("\"position\"");
    spec.String("geometry_sensor",
                "The position sensor whose columns make the geometry: the columns of this sensor "
                "with field lat and lon (behind window_join) or with field lat and lon and stat "
                "min and max (behind window_aggregate); the first of each if there are several.",
                &O::geometry_sensor)
        .Default("gps")
        .Pattern(kSensorNamePattern, kSensorNameWords);
    spec.Rule(
        "Column names are unique and neither the key column nor time; max_pending_rows is at "
        "least batch_rows; retry_max_ms is at least retry_initial_ms; the geometry column's "
        "name is not another column's, and the columns hold what it is made from.",
        CheckSettings);
  });
}

void RegisterTimescaleSink(Registry& registry) {
  OperatorInfo info = TypedOperator<TimescaleSink>(
      kTimescaleSinkName,
      "Writes window rows to PostgreSQL/TimescaleDB (interpolated columns, batched COPY, "
      "idempotent upsert, retries while the database is down)",
      PortKind::kRows, PortKind::kNone, TimescaleSinkSpec());
  info.check_upstream = CheckColumnsFitTheRows;
  info.check_connect = [](const Config& config) {
    return CheckSinkDatabase(TimescaleSinkSpec().Parse(config));
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

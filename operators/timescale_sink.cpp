#include "timescale_sink.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pg_client.hpp"

namespace fleetflow {

std::optional<double> InterpolateSlot(const Slot& slot, ColumnField field, Interpolation mode,
                                      int64_t window_ns) {
  struct Sample {
    int64_t t;
    double v;
  };
  const auto pick = [field](const std::optional<wire::Point>& p) -> std::optional<Sample> {
    if (!p) return std::nullopt;
    switch (field) {
      case ColumnField::kValue:
        return Sample{p->ts_ns, p->value};
      case ColumnField::kLat:
        return p->has_position ? std::optional<Sample>(Sample{p->ts_ns, p->lat}) : std::nullopt;
      case ColumnField::kLon:
        return p->has_position ? std::optional<Sample>(Sample{p->ts_ns, p->lon}) : std::nullopt;
    }
    return std::nullopt;
  };
  const auto before = pick(slot.before);
  const auto after = mode == Interpolation::kLinear ? pick(slot.after) : std::nullopt;
  double out;
  if (before && after) {
    out = after->t == before->t
              ? before->v
              : before->v + (after->v - before->v) * (static_cast<double>(window_ns - before->t) /
                                                      static_cast<double>(after->t - before->t));
  } else if (before) {
    out = before->v;
  } else if (after) {
    out = after->v;
  } else {
    return std::nullopt;
  }
  if (!std::isfinite(out)) return std::nullopt;
  return out;
}

namespace {

constexpr char kName[] = "timescale_sink";
constexpr char kStaging[] = "ff_sink_staging";

using Millis = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

enum class TimescaleMode { kAuto, kOn, kOff };

struct Column {
  std::string name;
  std::string sensor;
  ColumnField field = ColumnField::kValue;
  Interpolation mode = Interpolation::kLinear;
};

struct SinkConfig {
  std::string conninfo;
  std::string table;
  std::vector<Column> columns;
  size_t batch_rows = 5000;
  size_t max_pending_rows = 100000;
  int64_t flush_ns = 0;
  Millis retry_initial{100};
  Millis retry_max{10000};
  Millis drain_timeout{30000};
  TimescaleMode timescale = TimescaleMode::kAuto;
  std::string chunk_interval;
  std::string compress_after;
  std::string retention;
};

/// A problem with the database that no retry of the same statement fixes by itself (a missing
/// extension that was required, a table without the key the upsert needs).
class SetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void ConfigError(const std::string& field, const std::string& message) {
  throw std::runtime_error(std::string(kName) + ": field '" + field + "': " + message);
}

void CheckIdentifier(const std::string& field, const std::string& name) {
  if (!pg::IsValidIdentifier(name)) {
    ConfigError(field, "'" + name +
                           "' is not a valid identifier; use 1 to 63 lower-case letters, digits "
                           "and _, starting with a letter or _");
  }
}

SinkConfig ParseConfig(const Config& c) {
  SinkConfig s;
  s.conninfo = c.String("conninfo");
  s.table = c.String("table", "vehicle_telemetry");
  CheckIdentifier("table", s.table);

  const auto columns = c.Objects("columns");
  if (columns.empty()) ConfigError("columns", "needs at least one column");
  std::set<std::string> names;
  for (size_t i = 0; i < columns.size(); ++i) {
    const std::string at = "columns[" + std::to_string(i) + "]";
    Column col;
    col.name = columns[i].String("name");
    col.sensor = columns[i].String("sensor");
    CheckIdentifier(at + ".name", col.name);
    if (col.name == "vehicle_id" || col.name == "time") {
      ConfigError(at + ".name", "'" + col.name +
                                    "' is reserved for the key column; give the column another "
                                    "name");
    }
    if (!names.insert(col.name).second) {
      ConfigError(at + ".name", "duplicate column '" + col.name + "'; column names must be unique");
    }
    if (!wire::IsValidToken(col.sensor)) {
      ConfigError(at + ".sensor",
                  "'" + col.sensor + "' is not a sensor name; use 1 to 64 of A-Z a-z 0-9 _ -");
    }
    const std::string field = columns[i].String("field", "value");
    if (field == "value") {
      col.field = ColumnField::kValue;
    } else if (field == "lat") {
      col.field = ColumnField::kLat;
    } else if (field == "lon") {
      col.field = ColumnField::kLon;
    } else {
      ConfigError(at + ".field", "must be one of value, lat, lon, found '" + field + "'");
    }
    const std::string mode = columns[i].String("interpolation", "linear");
    if (mode == "linear") {
      col.mode = Interpolation::kLinear;
    } else if (mode == "previous") {
      col.mode = Interpolation::kPrevious;
    } else {
      ConfigError(at + ".interpolation", "must be one of linear, previous, found '" + mode + "'");
    }
    s.columns.push_back(std::move(col));
  }

  s.batch_rows = static_cast<size_t>(std::max<int64_t>(1, c.Integer("batch_rows", 5000)));
  s.max_pending_rows = static_cast<size_t>(
      std::max<int64_t>(1, c.Integer("max_pending_rows", 100000)));
  if (s.max_pending_rows < s.batch_rows) {
    ConfigError("max_pending_rows",
                "must be at least batch_rows (" + std::to_string(s.batch_rows) + ")");
  }
  s.flush_ns = std::max<int64_t>(0, c.Integer("flush_ms", 0)) * 1'000'000;
  s.retry_initial = Millis(std::max<int64_t>(1, c.Integer("retry_initial_ms", 100)));
  s.retry_max = Millis(c.Integer("retry_max_ms", 10000));
  if (s.retry_max < s.retry_initial) {
    ConfigError("retry_max_ms", "must be at least retry_initial_ms (" +
                                    std::to_string(s.retry_initial.count()) + ")");
  }
  s.drain_timeout = Millis(std::max<int64_t>(0, c.Integer("drain_timeout_ms", 30000)));
  const std::string ts = c.String("timescaledb", "auto");
  if (ts == "auto") {
    s.timescale = TimescaleMode::kAuto;
  } else if (ts == "on") {
    s.timescale = TimescaleMode::kOn;
  } else if (ts == "off") {
    s.timescale = TimescaleMode::kOff;
  } else {
    ConfigError("timescaledb", "must be one of auto, on, off, found '" + ts + "'");
  }
  s.chunk_interval = c.String("chunk_interval", "1 day");
  if (s.chunk_interval.empty()) ConfigError("chunk_interval", "must not be empty, e.g. \"1 day\"");
  s.compress_after = c.String("compress_after");
  s.retention = c.String("retention");
  return s;
}

std::string Interval(const std::string& text) { return pg::QuoteLiteral(text) + "::interval"; }

class TimescaleSink final : public Operator {
 public:
  explicit TimescaleSink(const OperatorContext& ctx)
      : cfg_(ParseConfig(ctx.config)),
        node_(ctx.node_id),
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
            ctx.labels())) {
    upsert_sql_ = BuildUpsert();
    backoff_ = cfg_.retry_initial;
    try {
      EnsureConnected();
    } catch (const pg::Error& e) {
      if (!e.connection_lost()) {
        throw std::runtime_error(std::string(kName) + ": preparing table '" + cfg_.table +
                                 "' failed: " + e.what());
      }
      spdlog::warn(
          "{} '{}': PostgreSQL is not reachable yet ({}); rows are held and the "
          "connection is retried",
          kName, node_, e.what());
      next_attempt_ = SteadyClock::now() + backoff_;
    } catch (const SetupError& e) {
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
    if (const auto* batch = std::get_if<WindowBatch>(in.get())) {
      Buffer(*batch);
      Flush(/*all=*/false);
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
                 tick->now_ns - pending_.front().buffered_ns >= cfg_.flush_ns) {
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
  };

  std::string BuildUpsert() const {
    std::string cols = "\"vehicle_id\", \"time\"";
    std::string select = "vehicle_id, \"time\"";
    std::string set;
    for (size_t i = 0; i < cfg_.columns.size(); ++i) {
      const std::string q = pg::QuoteIdent(cfg_.columns[i].name);
      cols += ", " + q;
      select += ", v[" + std::to_string(i + 1) + "]";
      set += (i ? ", " : "") + q + " = EXCLUDED." + q;
    }
    return "INSERT INTO " + pg::QuoteIdent(cfg_.table) + " (" + cols + ") SELECT " + select +
           " FROM " + pg::QuoteIdent(kStaging) +
           " ON CONFLICT (\"vehicle_id\", \"time\") DO UPDATE SET " + set;
  }

  void Buffer(const WindowBatch& batch) {
    if (!batch.sensors) return;
    std::vector<size_t> index(cfg_.columns.size(), SIZE_MAX);
    for (size_t c = 0; c < cfg_.columns.size(); ++c) {
      const auto& sensors = *batch.sensors;
      const auto it = std::find(sensors.begin(), sensors.end(), cfg_.columns[c].sensor);
      if (it != sensors.end()) index[c] = static_cast<size_t>(it - sensors.begin());
    }
    for (const auto& row : batch.rows) {
      Pending p{{row.vehicle, batch.window_ns, {}}};
      p.row.values.reserve(cfg_.columns.size());
      for (size_t c = 0; c < cfg_.columns.size(); ++c) {
        const auto& col = cfg_.columns[c];
        p.row.values.push_back(
            index[c] < row.slots.size()
                ? InterpolateSlot(row.slots[index[c]], col.field, col.mode, batch.window_ns)
                : std::nullopt);
      }
      pending_.push_back(std::move(p));
    }
    pending_rows_.Set(static_cast<double>(pending_.size()));
  }

  /// Rows of `chunk` keyed by (vehicle_id, time in µs); the last of equal keys wins.
  static std::vector<pg::ValuesRow> Dedup(std::vector<pg::ValuesRow> chunk) {
    std::unordered_map<std::string, size_t> last;
    last.reserve(chunk.size());
    std::vector<std::string> keys;
    keys.reserve(chunk.size());
    for (size_t i = 0; i < chunk.size(); ++i) {
      const int64_t ns = chunk[i].time_ns;
      const int64_t us = ns / 1000 - (ns % 1000 < 0 ? 1 : 0);
      keys.push_back(chunk[i].vehicle_id + '\0' + std::to_string(us));
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
    try {
      EnsureConnected();
      const auto start = SteadyClock::now();
      conn_->CopyViaStaging(kStaging, chunk, upsert_sql_);
      last_batch_seconds_.Set(std::chrono::duration<double>(SteadyClock::now() - start).count());
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
    } catch (const std::runtime_error& e) {  // pg::Error, SetupError
      Disconnect();
      ++failures_;
      retries_.Inc();
      spdlog::warn("{} '{}': writing {} rows failed (attempt {}), {} rows held, next attempt in "
                   "{} ms: {}",
                   kName, node_, chunk.size(), failures_, pending_.size(), backoff_.count(),
                   e.what());
      next_attempt_ = SteadyClock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, cfg_.retry_max);
      return false;
    }
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

  /// Opens a session and prepares the table, unless both are done. Throws pg::Error, SetupError.
  void EnsureConnected() {
    if (conn_ && conn_->IsOpen() && ready_.load()) return;
    Disconnect();
    auto conn = pg::Connection::Connect(cfg_.conninfo);
    PrepareTable(*conn);
    conn_ = std::move(conn);
    ready_.store(true);
  }

  void RetryConnect() {
    try {
      EnsureConnected();
      backoff_ = cfg_.retry_initial;
    } catch (const std::runtime_error& e) {
      retries_.Inc();
      spdlog::warn(
          "{} '{}': cannot connect to or prepare PostgreSQL yet, next attempt in {} ms: {}", kName,
          node_, backoff_.count(), e.what());
      next_attempt_ = SteadyClock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, cfg_.retry_max);
    }
  }

  std::string LockStatement() const {
    return "SELECT pg_advisory_xact_lock(hashtext(" +
           pg::QuoteLiteral(std::string("fleetflow.") + kName + "." + cfg_.table) + "))";
  }

  /// Checks the interval settings on the server, so a typo shows before TimescaleDB needs them.
  void CheckIntervals(pg::Connection& conn) const {
    const std::pair<const char*, const std::string*> intervals[] = {
        {"chunk_interval", &cfg_.chunk_interval},
        {"compress_after", &cfg_.compress_after},
        {"retention", &cfg_.retention}};
    for (const auto& [field, value] : intervals) {
      if (value->empty()) continue;
      try {
        conn.Exec("SELECT " + Interval(*value));
      } catch (const pg::Error& e) {
        if (e.connection_lost()) throw;
        throw SetupError(
            "field '" + std::string(field) + "': '" + *value +
            "' is not a PostgreSQL interval (e.g. \"1 day\", \"6 hours\"): " + e.what());
      }
    }
  }

  void PrepareTable(pg::Connection& conn) {
    CheckIntervals(conn);
    const bool hypertable = UseTimescale(conn);
    const std::string table = pg::QuoteIdent(cfg_.table);
    std::string create = "CREATE TABLE IF NOT EXISTS " + table +
                         " (\"vehicle_id\" text NOT NULL, \"time\" timestamptz NOT NULL";
    std::string add = "ALTER TABLE " + table;
    for (size_t i = 0; i < cfg_.columns.size(); ++i) {
      const std::string col = pg::QuoteIdent(cfg_.columns[i].name);
      create += ", " + col + " double precision";
      add +=
          (i ? ", " : " ") + std::string("ADD COLUMN IF NOT EXISTS ") + col + " double precision";
    }
    create += ", PRIMARY KEY (\"vehicle_id\", \"time\"))";
    conn.ExecInTransaction({LockStatement(), create, add});

    const auto key = conn.Exec(
        "SELECT 1 FROM pg_index i WHERE i.indrelid = " + pg::QuoteLiteral(table) +
        "::regclass AND i.indisunique AND i.indnkeyatts = 2 AND (SELECT array_agg(a.attname::text "
        "ORDER BY a.attname) FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = "
        "ANY(i.indkey::int2[])) = ARRAY['time', 'vehicle_id']");
    if (key.empty()) {
      throw SetupError("table '" + cfg_.table +
                       "' exists without a PRIMARY KEY or UNIQUE index on (vehicle_id, time), "
                       "which the upsert needs; add one: ALTER TABLE " +
                       table + " ADD PRIMARY KEY (vehicle_id, time)");
    }
    if (hypertable) MakeHypertable(conn);
    spdlog::info("{} '{}': connected to PostgreSQL ({}); table '{}' ready ({}), {} columns", kName,
                 node_, conn.description(), cfg_.table,
                 hypertable ? "TimescaleDB hypertable" : "plain PostgreSQL table",
                 cfg_.columns.size());
  }

  /// Decides between the TimescaleDB and the plain path, installing the extension if needed.
  bool UseTimescale(pg::Connection& conn) {
    if (cfg_.timescale == TimescaleMode::kOff) {
      spdlog::info("{} '{}': timescaledb is off; '{}' is a plain PostgreSQL table", kName, node_,
                   cfg_.table);
      return false;
    }
    if (!conn.HasExtension("timescaledb")) {
      if (cfg_.timescale == TimescaleMode::kOn) {
        throw SetupError(
            "timescaledb is \"on\" but the timescaledb extension is not available "
            "on the server (" +
            conn.description() +
            "); install TimescaleDB there, or set timescaledb to \"auto\" or "
            "\"off\"");
      }
      spdlog::info(
          "{} '{}': the timescaledb extension is not available; using a plain "
          "PostgreSQL table '{}' (no hypertable, compression or retention)",
          kName, node_, cfg_.table);
      if (!cfg_.compress_after.empty() || !cfg_.retention.empty()) {
        spdlog::warn("{} '{}': compress_after and retention need TimescaleDB and are ignored",
                     kName, node_);
      }
      return false;
    }
    try {
      conn.Exec("CREATE EXTENSION IF NOT EXISTS timescaledb");
    } catch (const pg::Error& e) {
      if (cfg_.timescale == TimescaleMode::kOn || e.connection_lost()) throw;
      spdlog::warn(
          "{} '{}': the timescaledb extension is available but cannot be created ({}); "
          "using a plain PostgreSQL table '{}'",
          kName, node_, e.what(), cfg_.table);
      return false;
    }
    return true;
  }

  /// The TimescaleDB-only part: hypertable, compression and retention policies.
  void MakeHypertable(pg::Connection& conn) {
    const std::string rel = pg::QuoteLiteral(pg::QuoteIdent(cfg_.table));
    std::vector<std::string> sql = {
        LockStatement(), "SELECT create_hypertable(" + rel + ", 'time', chunk_time_interval => " +
                             Interval(cfg_.chunk_interval) +
                             ", if_not_exists => TRUE, migrate_data => TRUE)"};
    if (!cfg_.compress_after.empty()) {
      const auto enabled =
          conn.Exec("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = " +
                    pg::QuoteLiteral(cfg_.table) + " AND compression_enabled");
      if (enabled.empty()) {
        sql.push_back("ALTER TABLE " + pg::QuoteIdent(cfg_.table) +
                      " SET (timescaledb.compress, timescaledb.compress_segmentby = "
                      "'vehicle_id', timescaledb.compress_orderby = 'time DESC')");
      }
      sql.push_back("SELECT add_compression_policy(" + rel + ", " + Interval(cfg_.compress_after) +
                    ", if_not_exists => TRUE)");
    }
    if (!cfg_.retention.empty()) {
      sql.push_back("SELECT add_retention_policy(" + rel + ", " + Interval(cfg_.retention) +
                    ", if_not_exists => TRUE)");
    }
    conn.ExecInTransaction(sql);
  }

  const SinkConfig cfg_;
  const std::string node_;
  Counter& rows_written_;
  Counter& batches_;
  Counter& retries_;
  Counter& rows_dropped_;
  Gauge& last_batch_seconds_;
  Gauge& pending_rows_;
  Gauge& blocked_;

  std::string upsert_sql_;
  std::unique_ptr<pg::Connection> conn_;
  std::atomic<bool> ready_{false};
  std::deque<Pending> pending_;
  Millis backoff_{100};                     // wait after the next failure
  SteadyClock::time_point next_attempt_{};  // no write or connect before
  int failures_ = 0;                        // consecutive failed attempts
};

ConfigSpec Spec() {
  ConfigSpec columns;
  columns
      .String("name",
              "Column name in the table (double precision). 1 to 63 lower-case letters, "
              "digits and _, starting with a letter or _; not vehicle_id or time.")
      .Required()
      .Example("\"speed\"");
  columns
      .String("sensor",
              "Sensor whose window slot feeds the column: the <sensor> token of "
              "vehicle.<id>.<sensor>, as listed in the window join's sensors. A sensor missing "
              "from a window batch gives NULL.")
      .Required()
      .Example("\"gps\"");
  columns
      .String("field",
              "Which number of the sample: value (scalar sensors), lat or lon (position "
              "sensors; a sample without a position counts as absent).")
      .OneOf({"value", "lat", "lon"})
      .Default("value");
  columns
      .String("interpolation",
              "linear: interpolate between the samples before and after the window time, or "
              "hold the one present when only one is; previous: the last sample at or before "
              "the window time. No sample within the window join's max gap, or a NaN/Inf "
              "value, gives NULL.")
      .OneOf({"linear", "previous"})
      .Default("linear");

  ConfigSpec spec;
  spec.String("conninfo",
              "libpq connection string (key=value or postgresql:// URI). Empty: the PG* "
              "environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE). Use "
              "${VAR} for secrets; passwords never appear in logs.")
      .Default("")
      .Example("\"host=db port=5432 dbname=fleet user=fleetflow password=${PGPASSWORD}\"");
  spec.String("table",
              "Target table, created when missing with vehicle_id text, time timestamptz, one "
              "double precision column per entry of columns and PRIMARY KEY (vehicle_id, time); "
              "columns missing from an existing table are added. 1 to 63 lower-case letters, "
              "digits and _, starting with a letter or _.")
      .Default("vehicle_telemetry");
  spec.ObjectArray("columns",
                   "The value columns: each takes one field of one sensor's samples, "
                   "interpolated at the window time.",
                   std::move(columns))
      .DefaultJson(
          R"([{"name":"lat","sensor":"gps","field":"lat","interpolation":"linear"},)"
          R"({"name":"lon","sensor":"gps","field":"lon","interpolation":"linear"},)"
          R"({"name":"speed","sensor":"speed","field":"value","interpolation":"linear"},)"
          R"({"name":"soc","sensor":"soc","field":"value","interpolation":"linear"},)"
          R"({"name":"torque","sensor":"torque","field":"value","interpolation":"linear"}])");
  spec.Integer("batch_rows",
               "Rows per write transaction: buffered rows are written as soon as this many are "
               "pending.")
      .Default(int64_t{5000})
      .Min(1);
  spec.Integer("max_pending_rows",
               "Rows held in memory while PostgreSQL is unreachable or slow (about 150 bytes "
               "each with five columns). The pipeline goes on until this many are held; then "
               "the sink stops taking rows until PostgreSQL takes a batch, which fills the "
               "graph's queues and stops the sources (JetStream keeps the messages). At least "
               "batch_rows.")
      .Default(int64_t{100000})
      .Min(1);
  spec.Integer("flush_ms",
               "Longest time a row waits in the buffer: rows are written at the first Tick at "
               "least this long after the Tick they came with. 0: at the Tick they came with "
               "(one write per window).")
      .Default(int64_t{0})
      .Min(0);
  spec.Integer("retry_initial_ms",
               "First wait before retrying a failed write or connect; it doubles after each "
               "failure up to retry_max_ms.")
      .Default(int64_t{100})
      .Min(1);
  spec.Integer("retry_max_ms", "Longest wait between two retries; at least retry_initial_ms.")
      .Default(int64_t{10000})
      .Min(1);
  spec.Integer("drain_timeout_ms",
               "At shutdown (drain), how long to keep retrying while PostgreSQL is unreachable "
               "before giving up; rows given up on are logged as an error and counted in "
               "sink_rows_dropped. Outside a drain the sink retries without limit, holding "
               "up to max_pending_rows rows and then slowing the pipeline down.")
      .Default(int64_t{30000})
      .Min(0);
  spec.String("timescaledb",
              "auto: make the table a TimescaleDB hypertable when the timescaledb extension is "
              "available on the server, a plain PostgreSQL table otherwise; on: require "
              "TimescaleDB (fail when the extension is missing); off: always a plain table.")
      .OneOf({"auto", "on", "off"})
      .Default("auto");
  spec.String("chunk_interval",
              "TimescaleDB only: chunk_time_interval of the hypertable, a PostgreSQL interval.")
      .Default("1 day")
      .Example("\"6 hours\"");
  spec.String("compress_after",
              "TimescaleDB only: compress chunks older than this interval (segmented by "
              "vehicle_id). Empty: no compression policy. An existing policy is kept.")
      .Default("")
      .Example("\"7 days\"");
  spec.String("retention",
              "TimescaleDB only: drop chunks older than this interval. Empty: keep rows "
              "forever. An existing policy is kept.")
      .Default("")
      .Example("\"90 days\"");
  return spec;
}

}  // namespace

void RegisterTimescaleSink(Registry& registry) {
  OperatorInfo info;
  info.name = kName;
  info.summary =
      "Writes window rows to PostgreSQL/TimescaleDB (interpolated columns, batched COPY, "
      "idempotent upsert, retries while the database is down)";
  info.input = PortKind::kRows;
  info.output = PortKind::kNone;
  info.config = Spec();
  info.create = [](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<TimescaleSink>(ctx);
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

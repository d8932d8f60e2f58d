#include "timescale_sink.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
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

std::vector<SinkColumn> SinkColumns(const Config& config) {
  std::vector<SinkColumn> out;
  for (const Config& column : config.Objects("columns")) {
    SinkColumn col;
    col.name = column.String("name");
    col.sensor = column.String("sensor");
    const std::string field = column.String("field");
    col.field = field == "lat"   ? ColumnField::kLat
                : field == "lon" ? ColumnField::kLon
                                 : ColumnField::kValue;
    col.mode = column.String("interpolation") == "previous" ? Interpolation::kPrevious
                                                            : Interpolation::kLinear;
    out.push_back(std::move(col));
  }
  return out;
}

std::vector<std::vector<std::optional<double>>> SinkRowValues(
    const std::vector<SinkColumn>& columns, const WindowBatch& batch) {
  std::vector<std::vector<std::optional<double>>> out;
  if (!batch.sensors) return out;
  std::vector<size_t> index(columns.size(), SIZE_MAX);
  for (size_t c = 0; c < columns.size(); ++c) {
    const auto& sensors = *batch.sensors;
    const auto it = std::find(sensors.begin(), sensors.end(), columns[c].sensor);
    if (it != sensors.end()) index[c] = static_cast<size_t>(it - sensors.begin());
  }
  out.reserve(batch.rows.size());
  for (const auto& row : batch.rows) {
    auto& values = out.emplace_back();
    values.reserve(columns.size());
    for (size_t c = 0; c < columns.size(); ++c) {
      const auto& col = columns[c];
      values.push_back(index[c] < row.slots.size() ? InterpolateSlot(row.slots[index[c]], col.field,
                                                                     col.mode, batch.window_ns)
                                                   : std::nullopt);
    }
  }
  return out;
}

namespace {

constexpr char kName[] = "timescale_sink";
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

enum class TimescaleMode { kAuto, kOn, kOff };

using Column = SinkColumn;

/// The settings, read from the validated config: defaults and checks live in Spec().
struct SinkConfig {
  std::string conninfo;
  std::string table;
  std::vector<Column> columns;
  size_t batch_rows;
  size_t max_pending_rows;
  int64_t flush_ns;
  Millis retry_initial;
  Millis retry_max;
  Millis drain_timeout;
  TimescaleMode timescale;
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

SinkConfig ParseConfig(const Config& c) {
  SinkConfig s;
  s.conninfo = c.String("conninfo");
  s.table = c.String("table");
  s.columns = SinkColumns(c);
  s.batch_rows = static_cast<size_t>(c.Integer("batch_rows"));
  s.max_pending_rows = static_cast<size_t>(c.Integer("max_pending_rows"));
  s.flush_ns = c.Integer("flush_ms") * 1'000'000;
  s.retry_initial = Millis(c.Integer("retry_initial_ms"));
  s.retry_max = Millis(c.Integer("retry_max_ms"));
  s.drain_timeout = Millis(c.Integer("drain_timeout_ms"));
  const std::string ts = c.String("timescaledb");
  s.timescale = ts == "on"    ? TimescaleMode::kOn
                : ts == "off" ? TimescaleMode::kOff
                              : TimescaleMode::kAuto;
  s.chunk_interval = c.String("chunk_interval");
  s.compress_after = c.String("compress_after");
  s.retention = c.String("retention");
  return s;
}

/// The column names the sink adds itself.
bool IsKeyColumn(const std::string& name) { return name == "vehicle_id" || name == "time"; }

/// The rules across fields of Spec().
void CheckSettings(const Config& c, std::vector<ConfigProblem>& out) {
  const auto columns = c.Objects("columns");
  std::set<std::string> names;
  for (size_t i = 0; i < columns.size(); ++i) {
    const std::string name = columns[i].String("name");
    const std::string at = "/columns/" + std::to_string(i) + "/name";
    if (IsKeyColumn(name)) {
      out.push_back(
          {at, "'" + name + "' is reserved for the key column; give the column another name"});
    } else if (!names.insert(name).second) {
      out.push_back({at, "duplicate column '" + name + "'; column names must be unique"});
    }
  }
  if (c.Integer("max_pending_rows") < c.Integer("batch_rows")) {
    out.push_back({"/max_pending_rows", "must be at least batch_rows (" +
                                            std::to_string(c.Integer("batch_rows")) + "), found " +
                                            std::to_string(c.Integer("max_pending_rows"))});
  }
  if (c.Integer("retry_max_ms") < c.Integer("retry_initial_ms")) {
    out.push_back({"/retry_max_ms", "must be at least retry_initial_ms (" +
                                        std::to_string(c.Integer("retry_initial_ms")) +
                                        "), found " + std::to_string(c.Integer("retry_max_ms"))});
  }
}

std::string Interval(const std::string& text) { return pg::QuoteLiteral(text) + "::interval"; }

/// Checks the interval settings on the server, so a typo shows before TimescaleDB needs them.
void CheckIntervals(pg::Connection& conn, const SinkConfig& cfg) {
  const std::pair<const char*, const std::string*> intervals[] = {
      {"chunk_interval", &cfg.chunk_interval},
      {"compress_after", &cfg.compress_after},
      {"retention", &cfg.retention}};
  for (const auto& [field, value] : intervals) {
    if (value->empty()) continue;
    try {
      conn.Exec("SELECT " + Interval(*value));
    } catch (const pg::Error& e) {
      if (e.connection_lost()) throw;
      throw SetupError("field '" + std::string(field) + "': '" + *value +
                       "' is not a PostgreSQL interval (e.g. \"1 day\", \"6 hours\"): " + e.what());
    }
  }
}

/// Why TimescaleDB cannot be used through this session, "" when it can. Reads catalogs and
/// settings only, so that no attempt ends the session with a FATAL error (CREATE EXTENSION
/// timescaledb without the preloaded library does).
std::string TimescaleUnavailableReason(pg::Connection& conn) {
  const auto ext =
      conn.Exec("SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'");
  if (ext.empty()) {
    return "the timescaledb extension is not available on the server (not installed); install "
           "TimescaleDB there (on Debian 12: scripts/timescaledb.sh builds it) and add "
           "'timescaledb' to shared_preload_libraries in postgresql.conf, then restart "
           "PostgreSQL";
  }
  // The loader, when preloaded, defines timescaledb.disable_load in every session.
  const auto loader = conn.Exec("SELECT current_setting('timescaledb.disable_load', true)");
  if (loader.empty() || loader[0].empty() || !loader[0][0] || loader[0][0]->empty()) {
    return "the timescaledb extension is installed but not preloaded (CREATE EXTENSION would "
           "fail with FATAL: extension \"timescaledb\" must be preloaded); add 'timescaledb' "
           "to shared_preload_libraries in postgresql.conf (shared_preload_libraries = "
           "'timescaledb') and restart PostgreSQL";
  }
  if (!ext[0].empty() && ext[0][0]) return "";  // created in this database already
  const auto may = conn.Exec(
      "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR "
      "has_database_privilege(current_database(), 'CREATE'), current_user, current_database()");
  if (!may.empty() && may[0].size() == 3 && may[0][0] && *may[0][0] == "f") {
    return "the role '" + may[0][1].value_or("") +
           "' may not create the timescaledb extension in database '" + may[0][2].value_or("") +
           "' (it needs the CREATE privilege on the database, or superuser); run CREATE "
           "EXTENSION timescaledb there once as a superuser, or GRANT CREATE ON DATABASE to "
           "the role";
  }
  return "";
}

/// Why the upsert cannot work on existing table `table` ("" when it can): it needs a PRIMARY KEY
/// or UNIQUE index on (vehicle_id, time).
std::string MissingUpsertKey(pg::Connection& conn, const std::string& table) {
  const std::string quoted = pg::QuoteIdent(table);
  const auto key = conn.Exec(
      "SELECT 1 FROM pg_index i WHERE i.indrelid = " + pg::QuoteLiteral(quoted) +
      "::regclass AND i.indisunique AND i.indnkeyatts = 2 AND (SELECT array_agg(a.attname::text "
      "ORDER BY a.attname) FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = "
      "ANY(i.indkey::int2[])) = ARRAY['time', 'vehicle_id']");
  if (!key.empty()) return "";
  return "table '" + table +
         "' exists without a PRIMARY KEY or UNIQUE index on (vehicle_id, time), which the upsert "
         "needs; add one: ALTER TABLE " +
         quoted + " ADD PRIMARY KEY (vehicle_id, time)";
}

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
            ctx.labels())),
        write_seconds_(ctx.metrics.GetHistogram(
            "sink_write_seconds", "Duration of each committed write transaction, in seconds.",
            kWriteBuckets, ctx.labels())),
        row_latency_(ctx.metrics.GetHistogram(
            "row_latency_seconds",
            "Time from a row's window time (event time) to the commit of the transaction that "
            "wrote it, on the engine clock, in seconds.",
            kLatencyBuckets, ctx.labels())),
        clock_(ctx.clock) {
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
    StopRetention();
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
    auto values = SinkRowValues(cfg_.columns, batch);
    for (size_t r = 0; r < values.size(); ++r) {
      pending_.push_back({{batch.rows[r].vehicle, batch.window_ns, std::move(values[r])}});
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
      const double seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
      last_batch_seconds_.Set(seconds);
      write_seconds_.Observe(seconds);
      ObserveRowLatency(chunk);
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
      spdlog::warn(
          "{} '{}': writing {} rows failed (attempt {}), {} rows held, next attempt in "
          "{} ms: {}",
          kName, node_, chunk.size(), failures_, pending_.size(), backoff_.count(), e.what());
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
    PrepareTable(conn);
    conn_ = std::move(conn);
    ready_.store(true);
    StartRetentionIfNeeded();
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

  /// Creates or completes the table; `conn` may be replaced by a new session (see
  /// UseTimescale). Throws pg::Error, SetupError.
  void PrepareTable(std::unique_ptr<pg::Connection>& session) {
    CheckIntervals(*session, cfg_);
    const bool hypertable = UseTimescale(session);
    pg::Connection& conn = *session;
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

    const std::string no_key = MissingUpsertKey(conn, cfg_.table);
    if (!no_key.empty()) throw SetupError(no_key);
    if (hypertable) MakeHypertable(conn);
    spdlog::info("{} '{}': connected to PostgreSQL ({}); table '{}' ready ({}), {} columns", kName,
                 node_, conn.description(), cfg_.table,
                 hypertable ? "TimescaleDB hypertable, " + EditionName(license_) + " edition"
                            : std::string("plain PostgreSQL table"),
                 cfg_.columns.size());
  }

  static std::string EditionName(const std::string& license) {
    if (license == "apache") return "Apache-licensed ('apache')";
    if (license == "timescale") return "Community ('timescale')";
    return "'" + license + "'";
  }

  /// Decides between the TimescaleDB and the plain path, creating the extension if needed.
  /// `session` is replaced by a new one when the server ended it on CREATE EXTENSION.
  bool UseTimescale(std::unique_ptr<pg::Connection>& session) {
    if (cfg_.timescale == TimescaleMode::kOff) {
      spdlog::info("{} '{}': timescaledb is off; '{}' is a plain PostgreSQL table", kName, node_,
                   cfg_.table);
      return false;
    }
    std::string reason =
        timescale_unusable_.empty() ? TimescaleUnavailableReason(*session) : timescale_unusable_;
    if (reason.empty()) {
      try {
        session->Exec("CREATE EXTENSION IF NOT EXISTS timescaledb");
      } catch (const pg::Error& e) {
        if (!e.connection_lost()) {
          reason = "CREATE EXTENSION timescaledb failed: " + std::string(e.what());
        } else {
          // A FATAL error ends the session; whether that or the network broke it shows by
          // connecting again: a network failure throws here and is retried as such.
          session = pg::Connection::Connect(cfg_.conninfo);
          reason = "the server ended the session on CREATE EXTENSION timescaledb (" +
                   std::string(e.what()) +
                   "); the server log says why, e.g. that 'timescaledb' is missing from "
                   "shared_preload_libraries in postgresql.conf";
          timescale_unusable_ = reason;  // never tried again by this sink: it would not change
        }
      }
    }
    if (!reason.empty()) {
      if (cfg_.timescale == TimescaleMode::kOn) {
        throw SetupError("timescaledb is \"on\" but TimescaleDB cannot be used on the server (" +
                         session->description() + "): " + reason +
                         "; or set timescaledb to \"auto\" or \"off\"");
      }
      if (!warned_plain_) {
        warned_plain_ = true;
        spdlog::warn(
            "{} '{}': TimescaleDB cannot be used, so '{}' is a plain PostgreSQL table "
            "(no hypertable, compression or retention): {}{}",
            kName, node_, cfg_.table, reason,
            cfg_.compress_after.empty() && cfg_.retention.empty()
                ? ""
                : "; compress_after and retention need TimescaleDB and are ignored");
      }
      return false;
    }
    const auto license = session->Exec("SELECT current_setting('timescaledb.license', true)");
    license_ = !license.empty() && !license[0].empty() && license[0][0] ? *license[0][0] : "";
    if (!cfg_.compress_after.empty() && license_ != "timescale") {
      throw SetupError(
          "field 'compress_after': compression needs TimescaleDB's Community edition "
          "(timescaledb.license = 'timescale'), but the server (" +
          session->description() + ") runs the " + EditionName(license_) +
          " edition, which has no compression; remove compress_after, or install the "
          "Community edition of TimescaleDB on the server");
    }
    return true;
  }

  /// The TimescaleDB-only part: hypertable, chunk interval, compression and retention.
  void MakeHypertable(pg::Connection& conn) {
    const std::string rel = pg::QuoteLiteral(pg::QuoteIdent(cfg_.table));
    std::vector<std::string> sql = {
        LockStatement(), "SELECT create_hypertable(" + rel + ", 'time', chunk_time_interval => " +
                             Interval(cfg_.chunk_interval) +
                             ", if_not_exists => TRUE, migrate_data => TRUE)"};
    // An existing hypertable keeps its interval unless told otherwise: new chunks take the
    // configured one (existing chunks keep theirs).
    const auto current =
        conn.Exec("SELECT time_interval::text, time_interval = " + Interval(cfg_.chunk_interval) +
                  " FROM timescaledb_information.dimensions WHERE hypertable_name = " +
                  pg::QuoteLiteral(cfg_.table) + " AND column_name = 'time'");
    if (!current.empty() && current[0].size() == 2 && current[0][1] && *current[0][1] == "f") {
      spdlog::info("{} '{}': chunk_interval of '{}' changes from {} to {} (for new chunks)", kName,
                   node_, cfg_.table, current[0][0].value_or("?"), cfg_.chunk_interval);
      sql.push_back("SELECT set_chunk_time_interval(" + rel + ", " + Interval(cfg_.chunk_interval) +
                    ")");
    }
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
    if (!cfg_.retention.empty() && license_ == "timescale") {
      sql.push_back("SELECT add_retention_policy(" + rel + ", " + Interval(cfg_.retention) +
                    ", if_not_exists => TRUE)");
    }
    conn.ExecInTransaction(sql);
    if (!cfg_.retention.empty() && license_ != "timescale") {
      // No policy jobs in this edition: the sink drops old chunks itself (RetentionLoop), as
      // often as a chunk closes, at most hourly.
      const auto period = conn.Exec("SELECT extract(epoch FROM least(" +
                                    Interval(cfg_.chunk_interval) + ", '1 hour'::interval))");
      const double seconds = !period.empty() && period[0][0] ? std::stod(*period[0][0]) : 3600.0;
      std::lock_guard lock(retention_mutex_);
      retention_period_ = Millis(std::max<int64_t>(1000, static_cast<int64_t>(seconds * 1000)));
      own_retention_ = true;
    }
  }

  /// Starts the thread that drops old chunks where TimescaleDB has no retention policy job.
  void StartRetentionIfNeeded() {
    if (!own_retention_ || retention_thread_.joinable()) return;
    spdlog::info(
        "{} '{}': the {} edition of TimescaleDB has no retention policy job; the sink "
        "drops chunks of '{}' older than {} itself, now and every {} s",
        kName, node_, EditionName(license_), cfg_.table, cfg_.retention,
        retention_period_.count() / 1000);
    retention_thread_ = std::thread([this] { RetentionLoop(); });
  }

  /// Off the write path, on a session of its own: drop_chunks() at start and then every
  /// retention_period_. A lock wait is cut short (lock_timeout), so writes are never held up
  /// for long; failures are logged and retried at the next turn (sooner after an error).
  void RetentionLoop() {
    std::unique_ptr<pg::Connection> conn;
    const std::string sql = "SELECT count(*) FROM drop_chunks(" +
                            pg::QuoteLiteral(pg::QuoteIdent(cfg_.table)) + ", older_than => " +
                            Interval(cfg_.retention) + ")";
    std::unique_lock lock(retention_mutex_);
    while (!retention_stop_) {
      Millis wait = retention_period_;
      lock.unlock();
      try {
        if (!conn || !conn->IsOpen()) {
          conn = pg::Connection::Connect(cfg_.conninfo);
          conn->Exec("SET lock_timeout = '2s'");
        }
        const auto rows = conn->Exec(sql);
        const std::string dropped = !rows.empty() && rows[0][0] ? *rows[0][0] : "0";
        if (dropped != "0") {
          spdlog::info("{} '{}': retention dropped {} chunks of '{}' older than {}", kName, node_,
                       dropped, cfg_.table, cfg_.retention);
        }
      } catch (const std::exception& e) {
        conn.reset();
        wait = std::min(wait, Millis(60000));
        spdlog::warn("{} '{}': dropping chunks older than {} failed, next attempt in {} s: {}",
                     kName, node_, cfg_.retention, wait.count() / 1000, e.what());
      }
      lock.lock();
      retention_cv_.wait_for(lock, wait, [this] { return retention_stop_; });
    }
  }

  void StopRetention() {
    {
      std::lock_guard lock(retention_mutex_);
      retention_stop_ = true;
    }
    retention_cv_.notify_all();
    if (retention_thread_.joinable()) retention_thread_.join();
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
  Histogram& write_seconds_;
  Histogram& row_latency_;
  const Clock& clock_;

  std::string upsert_sql_;
  std::unique_ptr<pg::Connection> conn_;
  std::atomic<bool> ready_{false};
  std::deque<Pending> pending_;
  Millis backoff_{100};                     // wait after the next failure
  SteadyClock::time_point next_attempt_{};  // no write or connect before
  int failures_ = 0;                        // consecutive failed attempts

  std::string license_;             // timescaledb.license of the server, "" without TimescaleDB
  std::string timescale_unusable_;  // why CREATE EXTENSION ended a session; then never retried
  bool warned_plain_ = false;       // the plain-table warning is given once

  // Retention where TimescaleDB runs no policy job (Apache-licensed edition).
  bool own_retention_ = false;
  Millis retention_period_{3600000};
  std::thread retention_thread_;
  std::mutex retention_mutex_;
  std::condition_variable retention_cv_;
  bool retention_stop_ = false;
};

constexpr char kIdentifier[] = "^[a-z_][a-z0-9_]{0,62}$";
constexpr char kIdentifierWords[] =
    "a valid identifier: 1 to 63 lower-case letters, digits and _, starting with a letter or _";

ConfigSpec Spec() {
  ConfigSpec columns;
  columns
      .String("name",
              "Column name in the table (double precision). 1 to 63 lower-case letters, "
              "digits and _, starting with a letter or _; not vehicle_id or time.")
      .Required()
      .Pattern(kIdentifier, kIdentifierWords)
      .Example("\"speed\"");
  columns
      .String("sensor",
              "Sensor whose window slot feeds the column: the <sensor> token of "
              "vehicle.<id>.<sensor>, as listed in the window join's sensors. A sensor missing "
              "from a window batch gives NULL.")
      .Required()
      .Pattern("^[A-Za-z0-9_-]{1,64}$", "a sensor name: 1 to 64 of A-Z a-z 0-9 _ -")
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
              "libpq connection string (key=value or postgresql:// URI). Empty: libpq's "
              "environment (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSSLMODE). Give the password "
              "in a password file (PGPASSFILE, default ~/.pgpass), not here nor in PGPASSWORD: "
              "environment variables show in process listings and crash reports. Passwords "
              "never appear in logs.")
      .Default("")
      .Example("\"host=db port=5432 dbname=fleet user=fleetflow sslmode=require\"");
  spec.String("table",
              "Target table, created when missing with vehicle_id text, time timestamptz, one "
              "double precision column per entry of columns and PRIMARY KEY (vehicle_id, time); "
              "columns missing from an existing table are added. 1 to 63 lower-case letters, "
              "digits and _, starting with a letter or _.")
      .Default("vehicle_telemetry")
      .Pattern(kIdentifier, kIdentifierWords);
  spec.ObjectArray("columns",
                   "The value columns: each takes one field of one sensor's samples, "
                   "interpolated at the window time.",
                   std::move(columns))
      .MinItems(1)
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
              "auto: make the table a TimescaleDB hypertable when TimescaleDB can be used on the "
              "server, a plain PostgreSQL table otherwise, with one warning naming the reason "
              "(not installed; installed but not in shared_preload_libraries; the role may not "
              "create the extension) and the fix. The sink checks this before CREATE EXTENSION, "
              "so no session ends on a FATAL error. on: require TimescaleDB; the engine refuses "
              "to start with the same words. off: always a plain table.")
      .OneOf({"auto", "on", "off"})
      .Default("auto");
  spec.String("chunk_interval",
              "TimescaleDB only: chunk_time_interval of the hypertable, a PostgreSQL interval. "
              "On an existing hypertable a different value applies to the chunks created from "
              "then on (set_chunk_time_interval).")
      .Default("1 day")
      .MinLength(1)
      .Example("\"6 hours\"");
  spec.String("compress_after",
              "TimescaleDB Community edition only (timescaledb.license = 'timescale'): compress "
              "chunks older than this interval (segmented by vehicle_id). Empty: no compression "
              "policy. An existing policy is kept. On the Apache-licensed edition (as Debian "
              "builds it) it is a configuration error naming the edition.")
      .Default("")
      .Example("\"7 days\"");
  spec.String("retention",
              "TimescaleDB only: drop chunks older than this interval. Community edition: a "
              "retention policy job (an existing one is kept). Apache-licensed edition, which "
              "has no policy jobs: the sink runs drop_chunks() itself on a session of its own, "
              "at start and then every chunk_interval (at most hourly), waiting at most 2 s for "
              "a lock, off the write path. Empty: keep rows forever.")
      .Default("")
      .Example("\"90 days\"");
  spec.Rule(
      "Column names are unique and neither vehicle_id nor time; max_pending_rows is at "
      "least batch_rows; retry_max_ms is at least retry_initial_ms.",
      CheckSettings);
  return spec;
}

/// `fleetflow validate --connect`: what the sink would find at start, read from the catalogs.
std::vector<ConnectFinding> CheckConnect(const Config& c) {
  using Level = ConnectFinding::Level;
  const SinkConfig cfg = ParseConfig(c);
  std::vector<ConnectFinding> out;
  std::unique_ptr<pg::Connection> conn;
  try {
    conn = pg::Connection::Connect(cfg.conninfo, std::chrono::seconds(5));
    out.push_back({Level::kOk, "connected to PostgreSQL (" + conn->description() + ")"});
  } catch (const std::exception& e) {
    out.push_back({Level::kProblem, std::string("cannot connect to PostgreSQL: ") + e.what()});
    return out;
  }
  try {
    CheckIntervals(*conn, cfg);
    const std::string table = pg::QuoteIdent(cfg.table);
    const std::string rel = pg::QuoteLiteral(table);
    const auto who = conn->Exec("SELECT to_regclass(" + rel +
                                ") IS NOT NULL, current_user, current_schema(), "
                                "has_schema_privilege(current_schema(), 'CREATE'), "
                                "has_database_privilege(current_database(), 'TEMP')");
    const auto text = [&who](size_t i) { return who.at(0).at(i).value_or(""); };
    const std::string role = text(1);
    if (text(4) != "t") {
      out.push_back({Level::kProblem, "role " + role +
                                          " may not create temporary tables, which every write "
                                          "stages its rows in: GRANT TEMP ON DATABASE to it"});
    }
    if (text(0) != "t") {
      if (text(3) == "t") {
        out.push_back({Level::kNote, "table " + cfg.table +
                                         " does not exist: created at start in "
                                         "schema " +
                                         text(2)});
      } else {
        out.push_back({Level::kProblem, "table " + cfg.table + " does not exist and role " + role +
                                            " may not create it in schema " + text(2) +
                                            ": create it, or GRANT CREATE ON SCHEMA " + text(2) +
                                            " to the role"});
      }
    } else {
      std::set<std::string> have;
      for (const auto& row : conn->Exec("SELECT attname FROM pg_attribute WHERE attrelid = " + rel +
                                        "::regclass AND attnum > 0 AND NOT attisdropped")) {
        have.insert(row.at(0).value_or(""));
      }
      std::string missing;
      for (const std::string& name : {std::string("vehicle_id"), std::string("time")}) {
        if (!have.count(name)) missing += (missing.empty() ? "" : ", ") + name;
      }
      for (const Column& col : cfg.columns) {
        if (!have.count(col.name)) missing += (missing.empty() ? "" : ", ") + col.name;
      }
      const auto owns = conn->Exec(
          "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = " + rel +
          "::regclass");
      if (!missing.empty()) {
        if (!owns.empty() && owns[0].at(0).value_or("") == "t") {
          out.push_back({Level::kNote, "table " + cfg.table + " lacks the columns " + missing +
                                           ": added at start"});
        } else {
          out.push_back({Level::kProblem, "table " + cfg.table + " lacks the columns " + missing +
                                              " and role " + role +
                                              " does not own it, so the sink cannot add them"});
        }
      }
      const std::string no_key = MissingUpsertKey(*conn, cfg.table);
      if (!no_key.empty()) out.push_back({Level::kProblem, no_key});
      const auto grants = conn->Exec(
          "SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) p "
          "WHERE NOT has_table_privilege(" +
          rel + ", p)");
      std::string lacking;
      for (const auto& row : grants)
        lacking += (lacking.empty() ? "" : ", ") + row.at(0).value_or("");
      if (!lacking.empty()) {
        out.push_back({Level::kProblem, "role " + role + " lacks " + lacking + " on table " +
                                            cfg.table +
                                            " (the upsert needs SELECT, INSERT and "
                                            "UPDATE): GRANT SELECT, INSERT, UPDATE ON " +
                                            table + " TO " + pg::QuoteIdent(role)});
      }
      if (missing.empty() && no_key.empty() && lacking.empty()) {
        out.push_back({Level::kOk, "table " + cfg.table +
                                       ": every column, the key the upsert needs, and SELECT, "
                                       "INSERT and UPDATE granted"});
      }
    }
    if (cfg.timescale != TimescaleMode::kOff) {
      const std::string reason = TimescaleUnavailableReason(*conn);
      if (reason.empty()) {
        out.push_back({Level::kOk, "TimescaleDB can be used: the table is a hypertable"});
      } else {
        out.push_back({cfg.timescale == TimescaleMode::kOn ? Level::kProblem : Level::kNote,
                       "TimescaleDB cannot be used, the table is a plain one: " + reason});
      }
    }
  } catch (const std::exception& e) {
    out.push_back({Level::kProblem, e.what()});
  }
  return out;
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
  info.check_connect = CheckConnect;
  registry.Add(std::move(info));
}

}  // namespace fleetflow

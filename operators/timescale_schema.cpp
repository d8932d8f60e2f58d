#include "timescale_schema.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <utility>

#include "thread_name.hpp"

namespace fleetflow {

namespace {

constexpr const char* kName = kTimescaleSinkName;

std::string Interval(const std::string& text) { return pg::QuoteLiteral(text) + "::interval"; }

/// Checks the interval settings on the server, so a typo shows before TimescaleDB needs them.
void CheckIntervals(pg::Connection& conn, const TimescaleSinkOptions& cfg) {
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
      throw SinkSetupError(
          "field '" + std::string(field) + "': '" + *value +
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

/// What PostGIS is on the server of `conn`: whether the extension is installed on the server,
/// created in this database, and whether the role may create it (a superuser; or, were the
/// installed PostGIS a trusted extension, which it is not up to 3.3, the CREATE privilege on the
/// database); the server's major version, the role and the database.
struct PostgisState {
  bool on_server = false;
  bool in_database = false;
  bool may_create = false;
  std::string major, role, database;
};

PostgisState ReadPostgisState(pg::Connection& conn) {
  const auto rows = conn.Exec(
      "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'), "
      "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis'), "
      "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR "
      "(has_database_privilege(current_database(), 'CREATE') AND EXISTS (SELECT 1 FROM "
      "pg_available_extension_versions v JOIN pg_available_extensions e ON e.name = v.name AND "
      "e.default_version = v.version WHERE v.name = 'postgis' AND v.trusted)), "
      "current_setting('server_version_num')::int / 10000, current_user, current_database()");
  PostgisState s;
  if (rows.empty() || rows[0].size() != 6) return s;
  const auto text = [&rows](size_t i) { return rows[0][i].value_or(""); };
  s.on_server = text(0) == "t";
  s.in_database = text(1) == "t";
  s.may_create = text(2) == "t";
  s.major = text(3);
  s.role = text(4);
  s.database = text(5);
  return s;
}

std::string PostgisNotInstalled(const PostgisState& s) {
  return "PostGIS is not installed on the server (no postgis in pg_available_extensions); "
         "install it there (Debian: apt-get install postgresql-" +
         (s.major.empty() ? std::string("<major>") : s.major) +
         "-postgis-3) and restart the engine";
}

std::string PostgisNotCreatable(const PostgisState& s) {
  return "the role '" + s.role + "' may not create the postgis extension in database '" +
         s.database +
         "' (PostGIS is installed on the server; creating it needs a superuser); run CREATE "
         "EXTENSION postgis there once as a superuser and restart the engine";
}

/// Why the upsert cannot work on existing table `table` ("" when it can): it needs a PRIMARY KEY
/// or UNIQUE index on (`key`, time).
std::string MissingUpsertKey(pg::Connection& conn, const std::string& table,
                             const std::string& key) {
  const std::string quoted = pg::QuoteIdent(table);
  const auto found = conn.Exec(
      "SELECT 1 FROM pg_index i WHERE i.indrelid = " + pg::QuoteLiteral(quoted) +
      "::regclass AND i.indisunique AND i.indnkeyatts = 2 AND (SELECT array_agg(a.attname::text "
      "ORDER BY a.attname = 'time', a.attname) FROM pg_attribute a WHERE a.attrelid = i.indrelid "
      "AND a.attnum = ANY(i.indkey::int2[])) = ARRAY[" +
      pg::QuoteLiteral(key) + ", 'time']");
  if (!found.empty()) return "";
  return "table '" + table + "' exists without a PRIMARY KEY or UNIQUE index on (" + key +
         ", time), which the upsert needs; add one: ALTER TABLE " + quoted + " ADD PRIMARY KEY (" +
         key + ", time)";  // an identifier (the spec's pattern): no quotes needed
}

std::string EditionName(const std::string& license) {
  if (license == "apache") return "Apache-licensed ('apache')";
  if (license == "timescale") return "Community ('timescale')";
  return "'" + license + "'";
}

}  // namespace

TimescaleSchema::TimescaleSchema(const TimescaleSinkOptions& options, std::string node)
    : cfg_(options), node_(std::move(node)) {}

TimescaleSchema::~TimescaleSchema() { StopRetention(); }

std::string TimescaleSchema::LockStatement() const {
  return "SELECT pg_advisory_xact_lock(hashtext(" +
         pg::QuoteLiteral(std::string("fleetflow.") + kName + "." + cfg_.table) + "))";
}

void TimescaleSchema::Prepare(std::unique_ptr<pg::Connection>& session) {
  CheckIntervals(*session, cfg_);
  const bool hypertable = UseTimescale(session);
  pg::Connection& conn = *session;
  const SinkGeometry geometry = GeometryOf(cfg_);
  geometry_ = !geometry.name.empty() && UsePostgis(conn);
  // Plain PostgreSQL has no chunks: a retention needs the table partitioned by time.
  const bool by_range = !hypertable && !cfg_.retention.empty();
  const std::string table = pg::QuoteIdent(cfg_.table);
  const std::string key = pg::QuoteIdent(cfg_.key_column);
  std::string create = "CREATE TABLE IF NOT EXISTS " + table + " (" + key +
                       " text NOT NULL, \"time\" timestamptz NOT NULL";
  std::string add = "ALTER TABLE " + table;
  for (size_t i = 0; i < cfg_.columns.size(); ++i) {
    const std::string col = pg::QuoteIdent(cfg_.columns[i].name);
    const std::string type = ColumnType(cfg_.columns[i]);
    create += ", " + col + " " + type;
    add += (i ? ", " : " ") + std::string("ADD COLUMN IF NOT EXISTS ") + col + " " + type;
  }
  if (geometry_) {
    // Nullable without a default: adding it to an existing table rewrites no row.
    const std::string col = pg::QuoteIdent(geometry.name) + " " + GeometryType(geometry);
    create += ", " + col;
    add += ", ADD COLUMN IF NOT EXISTS " + col;
  }
  create += ", PRIMARY KEY (" + key + ", \"time\"))";
  if (by_range) create += " PARTITION BY RANGE (\"time\")";
  conn.ExecInTransaction({LockStatement(), create, add});

  const std::string no_key = MissingUpsertKey(conn, cfg_.table, cfg_.key_column);
  if (!no_key.empty()) throw SinkSetupError(no_key);
  if (hypertable) MakeHypertable(conn);
  if (by_range) PreparePartitions(conn);
  if (!hypertable) {
    // The index TimescaleDB gives every hypertable: queries over the last minutes or hours of
    // all vehicles (the dashboards) read those rows instead of the whole table or partition.
    const std::string index = cfg_.table.substr(0, 54) + "_time_idx";
    conn.ExecInTransaction({LockStatement(), "CREATE INDEX IF NOT EXISTS " + pg::QuoteIdent(index) +
                                                 " ON " + table + " (\"time\" DESC)"});
  }
  if (geometry_) {
    // On the parent: PostgreSQL and TimescaleDB give every partition or chunk its own.
    const std::string index = (cfg_.table + "_" + geometry.name).substr(0, 58) + "_gist";
    conn.ExecInTransaction({LockStatement(), "CREATE INDEX IF NOT EXISTS " + pg::QuoteIdent(index) +
                                                 " ON " + table + " USING gist (" +
                                                 pg::QuoteIdent(geometry.name) + ")"});
  }
  spdlog::info("{} '{}': connected to PostgreSQL ({}); table '{}' ready ({}), {} columns{}", kName,
               node_, conn.description(), cfg_.table,
               hypertable ? "TimescaleDB hypertable, " + EditionName(license_) + " edition"
                          : std::string("plain PostgreSQL table, index on time"),
               cfg_.columns.size(),
               geometry_
                   ? " and the geometry column '" + geometry.name + "' (" +
                         (geometry.box ? "bounding box" : "point") + ", SRID 4326, GiST index)"
                   : std::string());
}

/// Whether the geometry column can be had: PostGIS in the database, created here when the
/// server has it and the role may. Otherwise one warning (the first time) names what is
/// missing and the fix. Asked again at every connect: a DBA may have installed it meanwhile.
bool TimescaleSchema::UsePostgis(pg::Connection& conn) {
  const PostgisState state = ReadPostgisState(conn);
  std::string reason;
  if (!state.on_server) {
    reason = PostgisNotInstalled(state);
  } else if (!state.in_database && !state.may_create) {
    reason = PostgisNotCreatable(state);
  } else if (!state.in_database) {
    try {
      // Sinks starting together would race on the catalog (a unique violation): one at a time.
      conn.ExecInTransaction({"SELECT pg_advisory_xact_lock(hashtext('fleetflow.postgis'))",
                              "CREATE EXTENSION IF NOT EXISTS postgis"});
    } catch (const pg::Error& e) {
      if (e.connection_lost()) throw;
      reason = "CREATE EXTENSION postgis failed in database '" + state.database + "' (" + e.what() +
               "); run it there once as a superuser and restart the engine";
    }
  }
  if (reason.empty()) return true;
  if (!warned_geometry_) {
    warned_geometry_ = true;
    spdlog::warn(
        "{} '{}': PostGIS cannot be used, so '{}' gets no geometry column '{}' and no spatial "
        "index (its lat / lon columns are written as always): {}",
        kName, node_, cfg_.table, cfg_.geometry, reason);
  }
  return false;
}

/// Decides between the TimescaleDB and the plain path, creating the extension if needed.
/// `session` is replaced by a new one when the server ended it on CREATE EXTENSION.
bool TimescaleSchema::UseTimescale(std::unique_ptr<pg::Connection>& session) {
  if (cfg_.timescale == TimescaleMode::kOff) {
    spdlog::info("{} '{}': timescaledb is off; '{}' is a plain PostgreSQL table", kName, node_,
                 cfg_.table);
    return false;
  }
  std::string reason =
      timescale_unusable_.empty() ? TimescaleUnavailableReason(*session) : timescale_unusable_;
  if (reason.empty()) {
    try {
      // Sinks starting together (the tiers' tables) take turns: a CREATE EXTENSION racing
      // another fails on its unique key, and left a plain table behind.
      session->ExecInTransaction({"SELECT pg_advisory_xact_lock(hashtext('fleetflow.timescaledb'))",
                                  "CREATE EXTENSION IF NOT EXISTS timescaledb"});
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
      throw SinkSetupError("timescaledb is \"on\" but TimescaleDB cannot be used on the server (" +
                           session->description() + "): " + reason +
                           "; or set timescaledb to \"auto\" or \"off\"");
    }
    if (!warned_plain_) {
      warned_plain_ = true;
      spdlog::warn(
          "{} '{}': TimescaleDB cannot be used, so '{}' is a plain PostgreSQL table "
          "(no hypertable or compression{}): {}{}",
          kName, node_, cfg_.table,
          cfg_.retention.empty() ? "" : "; the retention drops partitions by time", reason,
          cfg_.compress_after.empty() ? "" : "; compress_after needs TimescaleDB and is ignored");
    }
    return false;
  }
  const auto license = session->Exec("SELECT current_setting('timescaledb.license', true)");
  license_ = !license.empty() && !license[0].empty() && license[0][0] ? *license[0][0] : "";
  if (!cfg_.compress_after.empty() && license_ != "timescale") {
    throw SinkSetupError(
        "field 'compress_after': compression needs TimescaleDB's Community edition "
        "(timescaledb.license = 'timescale'), but the server (" +
        session->description() + ") runs the " + EditionName(license_) +
        " edition, which has no compression; remove compress_after, or install the "
        "Community edition of TimescaleDB on the server");
  }
  return true;
}

/// The TimescaleDB-only part: hypertable, chunk interval, compression and retention.
void TimescaleSchema::MakeHypertable(pg::Connection& conn) {
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
                    " SET (timescaledb.compress, timescaledb.compress_segmentby = " +
                    pg::QuoteLiteral(pg::QuoteIdent(cfg_.key_column)) +
                    ", timescaledb.compress_orderby = 'time DESC')");
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
    retention_period_ =
        std::chrono::milliseconds(std::max<int64_t>(1000, static_cast<int64_t>(seconds * 1000)));
    own_retention_ = true;
  }
}

/// Plain PostgreSQL with a retention: partitions of chunk_interval, aligned on the epoch; the
/// current one and the next are created now, others before the rows that need them.
void TimescaleSchema::PreparePartitions(pg::Connection& conn) {
  const auto strategy = conn.Exec("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = " +
                                  pg::QuoteLiteral(pg::QuoteIdent(cfg_.table)) + "::regclass");
  if (strategy.empty()) {
    spdlog::warn(
        "{} '{}': retention {} needs '{}' partitioned by time on plain PostgreSQL, but the table "
        "exists unpartitioned: no row of it is dropped. Create it anew (the sink makes it "
        "PARTITION BY RANGE (time)) or drop old rows yourself",
        kName, node_, cfg_.retention, cfg_.table);
    return;
  }
  const auto width = conn.Exec("SELECT extract(epoch FROM " + Interval(cfg_.chunk_interval) + ")");
  const double seconds = !width.empty() && width[0][0] ? std::stod(*width[0][0]) : 86400.0;
  partition_width_s_ = std::max<int64_t>(60, static_cast<int64_t>(seconds));
  partitioned_ = true;
  ForgetPartitions();
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  (void)EnsurePartitions(conn,
                         {{"", now_ns, {}}, {"", now_ns + partition_width_s_ * 1'000'000'000, {}}});
  std::lock_guard lock(retention_mutex_);
  retention_period_ = std::chrono::milliseconds(std::min<int64_t>(partition_width_s_, 3600) * 1000);
  own_retention_ = true;
}

std::unique_lock<std::mutex> TimescaleSchema::EnsurePartitions(
    pg::Connection& conn, const std::vector<pg::ValuesRow>& rows) {
  if (!partitioned_) return {};
  std::unique_lock lock(partitions_mutex_);
  std::set<int64_t> needed;
  for (const pg::ValuesRow& row : rows) {
    const int64_t ns = row.time_ns;
    const int64_t s = ns / 1'000'000'000 - (ns % 1'000'000'000 < 0 ? 1 : 0);
    const int64_t start =
        (s / partition_width_s_ - (s % partition_width_s_ < 0 ? 1 : 0)) * partition_width_s_;
    if (!partitions_.count(start)) needed.insert(start);
  }
  if (needed.empty()) return lock;
  std::vector<std::string> sql = {LockStatement()};
  for (const int64_t start : needed) {
    sql.push_back(
        "CREATE TABLE IF NOT EXISTS " +
        pg::QuoteIdent(cfg_.table.substr(0, 40) + "_p" + std::to_string(start)) + " PARTITION OF " +
        pg::QuoteIdent(cfg_.table) + " FOR VALUES FROM (" +
        pg::QuoteLiteral(pg::FormatTimestamp(start * 1'000'000'000)) + ") TO (" +
        pg::QuoteLiteral(pg::FormatTimestamp((start + partition_width_s_) * 1'000'000'000)) + ")");
  }
  conn.ExecInTransaction(sql);
  partitions_.insert(needed.begin(), needed.end());
  return lock;
}

void TimescaleSchema::StartRetentionIfNeeded() {
  if (!own_retention_ || retention_thread_.joinable()) return;
  if (partitioned_) {
    spdlog::info(
        "{} '{}': '{}' is partitioned by time ({} s each); the sink drops partitions older "
        "than {} itself, now and every {} s",
        kName, node_, cfg_.table, partition_width_s_, cfg_.retention,
        retention_period_.count() / 1000);
  } else {
    spdlog::info(
        "{} '{}': the {} edition of TimescaleDB has no retention policy job; the sink "
        "drops chunks of '{}' older than {} itself, now and every {} s",
        kName, node_, EditionName(license_), cfg_.table, cfg_.retention,
        retention_period_.count() / 1000);
  }
  retention_thread_ = std::thread([this] { RetentionLoop(); });
  NameThread(retention_thread_, "ff-retention");
}

void TimescaleSchema::DropExpired(pg::Connection& conn) {
  const std::string rel = pg::QuoteLiteral(pg::QuoteIdent(cfg_.table));
  std::string dropped;
  if (!partitioned_) {
    const auto rows = conn.Exec("SELECT count(*) FROM drop_chunks(" + rel + ", older_than => " +
                                Interval(cfg_.retention) + ")");
    dropped = !rows.empty() && rows[0][0] ? *rows[0][0] : "0";
  } else {
    // Partitions whose upper bound is older than the retention; not while a write is under way
    // (it may have created one of them for rows older than the retention).
    std::lock_guard lock(partitions_mutex_);
    const auto expired = conn.Exec(
        "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = " +
        rel +
        "::regclass AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), "
        "'TO \\(''([^'']+)''\\)'))[1]::timestamptz <= now() - " +
        Interval(cfg_.retention));
    if (!expired.empty()) partitions_.clear();  // the next write creates again what it needs
    for (const auto& row : expired) {
      if (row[0]) conn.Exec("DROP TABLE IF EXISTS " + *row[0]);
    }
    dropped = std::to_string(expired.size());
  }
  if (dropped != "0") {
    spdlog::info("{} '{}': retention dropped {} {} of '{}' older than {}", kName, node_, dropped,
                 partitioned_ ? "partitions" : "chunks", cfg_.table, cfg_.retention);
  }
}

/// Off the write path, on a session of its own: drop_chunks() at start and then every
/// retention_period_. A lock wait is cut short (lock_timeout), so writes are never held up
/// for long; failures are logged and retried at the next turn (sooner after an error).
void TimescaleSchema::RetentionLoop() {
  std::unique_ptr<pg::Connection> conn;
  std::unique_lock lock(retention_mutex_);
  while (!retention_stop_) {
    std::chrono::milliseconds wait = retention_period_;
    lock.unlock();
    try {
      if (!conn || !conn->IsOpen()) {
        conn = pg::Connection::Connect(cfg_.conninfo);
        conn->Exec("SET lock_timeout = '2s'");
      }
      DropExpired(*conn);
    } catch (const std::exception& e) {
      conn.reset();
      wait = std::min(wait, std::chrono::milliseconds(60000));
      spdlog::warn("{} '{}': dropping {} older than {} failed, next attempt in {} s: {}", kName,
                   node_, partitioned_ ? "partitions" : "chunks", cfg_.retention,
                   wait.count() / 1000, e.what());
    }
    lock.lock();
    retention_cv_.wait_for(lock, wait, [this] { return retention_stop_; });
  }
}

void TimescaleSchema::StopRetention() {
  {
    std::lock_guard lock(retention_mutex_);
    retention_stop_ = true;
  }
  retention_cv_.notify_all();
  if (retention_thread_.joinable()) retention_thread_.join();
}

std::string NotWritableReason(const pg::Connection& conn, const pg::ServerInfo& info) {
  if (info.in_recovery) {
    return "PostgreSQL at " + conn.server() +
           " is a standby (in recovery) and takes no writes: name the primary in conninfo, or "
           "every server of the cluster (host=a,b port=p,q) with target_session_attrs=read-write, "
           "so that libpq connects to the one that takes writes";
  }
  if (info.read_only) {
    return "PostgreSQL at " + conn.server() +
           " opens sessions read-only (default_transaction_read_only is on for the server, the "
           "database or the role) and takes no writes: set it off for the sink's role (ALTER "
           "ROLE ... SET default_transaction_read_only = off), or name a server that takes writes";
  }
  return "";
}

std::vector<ConnectFinding> CheckSinkDatabase(const TimescaleSinkOptions& cfg) {
  using Level = ConnectFinding::Level;
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
    const std::string read_only = NotWritableReason(*conn, conn->Identify());
    if (!read_only.empty()) out.push_back({Level::kProblem, read_only});
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
      for (const std::string& name : {cfg.key_column, std::string("time")}) {
        if (!have.count(name)) missing += (missing.empty() ? "" : ", ") + name;
      }
      for (const RowColumn& col : cfg.columns) {
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
      const std::string no_key = MissingUpsertKey(*conn, cfg.table, cfg.key_column);
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
    if (!cfg.geometry.empty()) {
      const PostgisState state = ReadPostgisState(*conn);
      const std::string without =
          "PostGIS cannot be used, the table gets no geometry column '" + cfg.geometry + "': ";
      if (!state.on_server) {
        out.push_back({Level::kNote, without + PostgisNotInstalled(state)});
      } else if (!state.in_database && !state.may_create) {
        out.push_back({Level::kNote, without + PostgisNotCreatable(state)});
      } else {
        out.push_back({Level::kOk, std::string("PostGIS can be used") +
                                       (state.in_database ? ""
                                                          : " (the sink creates the extension "
                                                            "in the database at start)") +
                                       ": the geometry column '" + cfg.geometry +
                                       "' with a GiST index"});
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

}  // namespace fleetflow

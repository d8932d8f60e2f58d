#pragma once
/// The table side of timescale_sink: an internal helper unit of that operator, not an operator
/// of its own (nothing registers it, no other operator uses it). It creates or completes the
/// sink's table, decides between TimescaleDB and plain PostgreSQL (checking that TimescaleDB
/// can be used before CREATE EXTENSION, so that no session ends on a FATAL error), makes the
/// table a hypertable with its chunk interval, compression and retention policies, runs the
/// retention itself where the TimescaleDB edition has no policy jobs (Apache-licensed), and
/// answers `fleetflow validate --connect` from the catalogs. On plain PostgreSQL with a
/// retention, the table is partitioned by range of time (one partition per chunk_interval,
/// created before the rows that need it are written) and partitions older than the retention
/// are dropped. With a geometry column (the geometry setting) it creates the postgis extension
/// when the server has it and the role may, the column and its GiST index, or else warns once
/// and leaves them out. The write path (buffering, COPY and
/// upsert, retries, backpressure) is the operator's, in timescale_sink.cpp.

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pg_client.hpp"
#include "registry.hpp"
#include "timescale_sink.hpp"

namespace fleetflow {

/// A problem with the database that no retry of the same statement fixes by itself (a missing
/// extension that was required, a table without the key the upsert needs, a bad interval).
class SinkSetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The schema management of one sink. Prepare() runs on the sink's thread; the retention runs
/// on a thread and session of its own, stopped by the destructor.
class TimescaleSchema {
 public:
  /// `options` must outlive the object; `node` names the sink in logs.
  TimescaleSchema(const TimescaleSinkOptions& options, std::string node);
  ~TimescaleSchema();
  TimescaleSchema(const TimescaleSchema&) = delete;
  TimescaleSchema& operator=(const TimescaleSchema&) = delete;

  /// Creates or completes the table on a new session, and with TimescaleDB makes it a
  /// hypertable with its policies. `session` is replaced by a new one when the server ended it
  /// on CREATE EXTENSION. Throws pg::Error, SinkSetupError.
  void Prepare(std::unique_ptr<pg::Connection>& session);

  /// After a successful Prepare(): starts dropping old chunks (or partitions) on a thread of its
  /// own where no retention policy job does (once; later calls do nothing).
  void StartRetentionIfNeeded();

  /// On a range-partitioned table (plain PostgreSQL with a retention): creates the partitions
  /// that `rows` need and this object did not create or find yet. Throws pg::Error. The lock it
  /// returns keeps this object's retention from dropping a partition until it is released:
  /// hold it until the rows are written (rows older than the retention are written, as
  /// TimescaleDB writes them into a chunk of their own, and go at the retention's next turn).
  [[nodiscard]] std::unique_lock<std::mutex> EnsurePartitions(
      pg::Connection& conn, const std::vector<pg::ValuesRow>& rows);
  /// Forgets which partitions exist (a write failed: one may have been dropped meanwhile).
  void ForgetPartitions() {
    std::lock_guard lock(partitions_mutex_);
    partitions_.clear();
  }

  /// After Prepare(): whether the table has the geometry column (the geometry setting, and
  /// PostGIS usable), which the upsert then fills.
  bool has_geometry() const { return geometry_; }

 private:
  std::string LockStatement() const;
  bool UseTimescale(std::unique_ptr<pg::Connection>& session);
  bool UsePostgis(pg::Connection& conn);
  void MakeHypertable(pg::Connection& conn);
  void PreparePartitions(pg::Connection& conn);
  /// The statement that drops what the retention no longer keeps; it answers how many it dropped.
  void DropExpired(pg::Connection& conn);
  void RetentionLoop();
  void StopRetention();

  const TimescaleSinkOptions& cfg_;
  const std::string node_;
  std::string license_;             // timescaledb.license of the server, "" without TimescaleDB
  std::string timescale_unusable_;  // why CREATE EXTENSION ended a session; then never retried
  bool warned_plain_ = false;       // the plain-table warning is given once
  bool geometry_ = false;           // the table has the geometry column (Prepare)
  bool warned_geometry_ = false;    // the no-PostGIS warning is given once

  // Retention where TimescaleDB runs no policy job (Apache-licensed edition).
  bool own_retention_ = false;
  // Plain PostgreSQL with a retention: partitions of partition_width_s_ seconds (chunk_interval),
  // by the epoch second of their start; those known to exist.
  std::atomic<bool> partitioned_{false};  // read by the retention thread
  int64_t partition_width_s_ = 86400;
  std::set<int64_t> partitions_;  // guarded by partitions_mutex_
  // Held by a write from EnsurePartitions() to its commit, and by the retention's drop of
  // partitions (which then forgets partitions_): a write never meets a partition dropped after
  // this object created or found it.
  std::mutex partitions_mutex_;
  std::chrono::milliseconds retention_period_{3600000};
  std::thread retention_thread_;
  std::mutex retention_mutex_;
  std::condition_variable retention_cv_;
  bool retention_stop_ = false;
};

/// Why the server of `conn` takes no writes, "" when it does (`info` from conn.Identify()): a
/// standby in recovery, or sessions that are read-only. The words name the server and the fix.
std::string NotWritableReason(const pg::Connection& conn, const pg::ServerInfo& info);

/// `fleetflow validate --connect` for a sink with `options`: what it would find at start (the
/// server, the table's columns, key and grants, whether TimescaleDB can be used), read from the
/// catalogs without changing anything. Never throws.
std::vector<ConnectFinding> CheckSinkDatabase(const TimescaleSinkOptions& options);

}  // namespace fleetflow

#pragma once
/// The one wrapper of libpqxx in fleetflow. Operators reach PostgreSQL only through these types;
/// libpqxx exceptions become fleetflow::pg::Error at this edge, and no message ever carries a
/// password from a connection string.
///
/// Thread-safety: a Connection is used by one thread at a time (it owns one libpq session).

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow::pg {

/// A PostgreSQL operation failed. what() names the operation and carries the server's message
/// with its DETAIL and HINT (and the SQLSTATE), on one line, never a password.
class Error : public std::runtime_error {
 public:
  Error(const std::string& what, bool connection_lost, std::string sqlstate = "",
        bool commit_unknown = false)
      : std::runtime_error(what),
        connection_lost_(connection_lost),
        commit_unknown_(commit_unknown),
        sqlstate_(std::move(sqlstate)) {}
  /// True when the session is gone (server down, network failure, failed connect): reconnect.
  bool connection_lost() const { return connection_lost_; }
  /// True when the session was lost while a COMMIT was under way: the transaction may have
  /// committed or not, and only the data can tell (connection_lost() is true too).
  bool commit_unknown() const { return commit_unknown_; }
  /// The SQLSTATE code of a server error (e.g. "42P01"), "" when there is none.
  const std::string& sqlstate() const { return sqlstate_; }

 private:
  bool connection_lost_;
  bool commit_unknown_;
  std::string sqlstate_;
};

/// What a session's server is (Connection::Identify()).
struct ServerInfo {
  /// inet_server_addr():inet_server_port(), the address the server took the session on; ""
  /// over a Unix socket.
  std::string address;
  /// pg_postmaster_start_time() as text: with `address`, tells a restarted or another server
  /// behind the same name (a managed service's failover moves its DNS name) from the same one.
  std::string started;
  /// pg_is_in_recovery(): a standby, which takes no writes.
  bool in_recovery = false;
  /// transaction_read_only: the session cannot write (a standby, or
  /// default_transaction_read_only on for the server, database or role).
  bool read_only = false;
};

/// A result row: one text value per column, nullopt for SQL NULL.
using Row = std::vector<std::optional<std::string>>;
using Rows = std::vector<Row>;

/// True for an identifier fleetflow accepts for tables and columns: ^[a-z_][a-z0-9_]{0,62}$.
bool IsValidIdentifier(std::string_view name);

/// `name` as a quoted SQL identifier: "name", with embedded double quotes doubled.
std::string QuoteIdent(std::string_view name);

/// `text` as a SQL string literal, correct whatever standard_conforming_strings is.
std::string QuoteLiteral(std::string_view text);

/// `conninfo` as libpq parses it (PQconninfoParse; key=value and URI forms), rewritten as
/// key=value pairs with the password replaced by "***", for messages. A string libpq cannot
/// parse gives a fixed text that quotes none of it.
std::string RedactConninfo(std::string_view conninfo);

/// ns since the Unix epoch as a timestamptz literal in UTC with microseconds, e.g.
/// "2026-11-22 12:00:01.000000+00". Sub-microsecond digits are truncated towards -infinity.
std::string FormatTimestamp(int64_t ns);

/// One row for Connection::CopyViaStaging.
struct ValuesRow {
  std::string vehicle_id;
  int64_t time_ns = 0;
  /// One value per target column; nullopt, NaN and infinities are written as NULL.
  std::vector<std::optional<double>> values;
};

/// How long each step of Connection::CopyViaStaging took, in ns of the steady clock.
struct CopyTimings {
  int64_t copy_ns = 0;    ///< COPY of the rows into the staging table (their text encoding too)
  int64_t upsert_ns = 0;  ///< the statement that moves them to their target
  int64_t commit_ns = 0;  ///< COMMIT
};

/// An open libpq session.
class Connection {
 public:
  /// Connects. An empty `conninfo` uses libpq's PG* environment variables (PGHOST, PGPORT, ...).
  /// Unless the conninfo or PGCONNECT_TIMEOUT sets one, a connect timeout of `connect_timeout`
  /// applies. Throws Error (connection_lost() true) when the server cannot be reached.
  static std::unique_ptr<Connection> Connect(
      const std::string& conninfo, std::chrono::seconds connect_timeout = std::chrono::seconds(10));

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Runs `sql` outside a transaction (autocommit; several statements separated by ';' run as
  /// one implicit transaction) and returns the rows of the last statement.
  Rows Exec(const std::string& sql);

  /// Runs the statements in order in one transaction and commits; any failure rolls back all.
  void ExecInTransaction(const std::vector<std::string>& statements);

  /// True when the server can install the extension `name` (it is in pg_available_extensions),
  /// whether or not it is installed in this database yet.
  bool HasExtension(const std::string& name);

  /// Bulk write through a staging table, in one transaction:
  ///  1. creates, once per session, the temporary table `staging` (vehicle_id text,
  ///     time timestamptz, v double precision[]) ON COMMIT DELETE ROWS;
  ///  2. COPYs `rows` into it (row.values becomes the array `v`, NULL elements for missing);
  ///  3. runs `then_sql`, which moves the rows to their target, e.g.
  ///     INSERT INTO t SELECT vehicle_id, time, v[1], v[2] FROM staging ON CONFLICT ...;
  ///  4. commits and returns the number of rows `then_sql` affected; `timings`, when given, gets
  ///     how long steps 2 to 4 took.
  /// `staging` must satisfy IsValidIdentifier. On error nothing is written, except after an
  /// Error whose commit_unknown() is true: the session broke during the COMMIT, which may have
  /// happened.
  uint64_t CopyViaStaging(const std::string& staging, const std::vector<ValuesRow>& rows,
                          const std::string& then_sql, CopyTimings* timings = nullptr);

  /// False once the session is known to be broken.
  bool IsOpen() const;

  /// Asks the server what it is (one query; ServerInfo). Throws Error.
  ServerInfo Identify();

  /// The server this session is on, as libpq reached it: "host:port" (PQhost, PQport: with
  /// several hosts in the connection string, the one libpq kept).
  const std::string& server() const { return server_; }

  /// host, port (the ones libpq kept, as server()), dbname and user of the session, without
  /// the password, for log lines.
  const std::string& description() const { return description_; }

 private:
  struct Impl;
  Connection(std::unique_ptr<Impl> impl, std::string server, std::string description);

  std::unique_ptr<Impl> impl_;
  std::string server_;
  std::string description_;
};

}  // namespace fleetflow::pg

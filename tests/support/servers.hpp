// Test fixtures: free ports, polling waits, temporary directories, child processes and throwaway
// nats-server / PostgreSQL / Prometheus instances for integration and end-to-end tests.
//
// Every server runs on its own free port in its own temporary directory, so tests may run in
// parallel (ctest -j) without locks. Nothing here needs GoogleTest; the FF_REQUIRE_* macros at the
// bottom expand to GTEST_SKIP() at the call site, so use them directly in a test body or in a
// fixture's SetUp() (in a helper function the skip would only return from the helper).
// Failures to start a server throw std::runtime_error with the server's log tail; GoogleTest
// reports the exception as a test failure.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fleetflow::testing {

/// Returns a TCP port that was free on 127.0.0.1 a moment ago (binds port 0, reads it back and
/// closes the socket). Another process may take it before you bind; the servers below retry with
/// a new port when that happens. Throws std::runtime_error if no socket can be bound.
int FreePort();

/// Polls `cond` every `poll` until it returns true or `deadline` has elapsed; the condition is
/// checked once more at the deadline. Returns the last result; exceptions from `cond` propagate.
/// This is the only way tests wait: never a bare sleep standing in for synchronisation.
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds deadline,
             std::chrono::milliseconds poll = std::chrono::milliseconds(20));

/// True if a TCP connection to host:port succeeds within `timeout` (the socket is closed again).
bool PortAcceptsConnections(int port, const std::string& host = "127.0.0.1",
                            std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

/// Finds an executable: a name containing '/' is checked as is; otherwise PATH, then /usr/sbin,
/// /usr/local/sbin, /sbin, then /usr/lib/postgresql/<version>/bin (newest version first).
/// Returns the absolute path, or "" when not found.
std::string FindServerBinary(const std::string& name);

/// Reads a whole file; "" if it cannot be opened.
std::string ReadFile(const std::string& path);

/// The output of a finished command run by RunCommand().
struct CommandResult {
  int exit_code = -1;  ///< exit status, 128+signal if killed by a signal, -1 on timeout
  std::string out;     ///< everything written to stdout
  std::string err;     ///< everything written to stderr
  bool timed_out = false;
};

/// Runs a command to completion (no shell: argv[0] is looked up in PATH), capturing stdout and
/// stderr separately; `env` adds or overrides environment variables. Kills the command with
/// SIGKILL after `timeout`. Throws std::runtime_error if it cannot be started (not found, exec
/// error).
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::map<std::string, std::string>& env = {});

/// A directory created with mkdtemp under /tmp, removed recursively on destruction unless the
/// environment variable FF_KEEP_TEST_DIRS is set (then its path is printed to stderr). Movable.
class TempDir {
 public:
  /// Creates /tmp/<prefix>-XXXXXX. Throws std::runtime_error on failure.
  explicit TempDir(const std::string& prefix = "fleetflow-test");
  ~TempDir();
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// Absolute path of the directory (no trailing slash).
  const std::string& path() const { return path_; }
  /// path() + "/" + name.
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  /// Gives the directory (not its contents) to `user`, e.g. "postgres". Throws if the user does
  /// not exist or chown fails (only root may chown to another user).
  void ChownTo(const std::string& user) const;

 private:
  std::string path_;
};

/// A child process started with fork/execve: argv[0] is looked up in PATH (of the merged
/// environment), stdin is /dev/null, stdout and stderr are appended to `log_path`. The child gets
/// its own process group and PR_SET_PDEATHSIG=SIGKILL, so it dies if the thread that started it
/// (normally the test's main thread) dies. The destructor SIGKILLs the process group and reaps the
/// child if it still runs. Movable, not thread-safe.
class Process {
 public:
  /// Starts the child. `env` adds or overrides environment variables. When the test runs as root
  /// and `run_as_user` is not empty, the child switches to that user (and its groups, and cwd "/")
  /// before exec; otherwise `run_as_user` is ignored. Throws std::runtime_error if the executable
  /// is missing or exec fails (the reason is in the message).
  Process(const std::vector<std::string>& argv, const std::string& log_path,
          const std::map<std::string, std::string>& env = {}, const std::string& run_as_user = "");
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  /// Process id of the child (also its process group id).
  pid_t pid() const { return pid_; }
  /// Sends `sig` to the child itself (not its group). No-op once it has been reaped.
  void Signal(int sig) const;
  /// Sends `sig` to the child's whole process group. No-op once it has been reaped.
  void SignalGroup(int sig) const;
  /// Waits up to `timeout` for the child to exit and reaps it. Returns its exit status (128+signal
  /// if killed by a signal), or nullopt if it still runs. A zero timeout just checks.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  /// True while the child has not exited.
  bool Running();
  /// Sends `sig`, waits up to `timeout`, then SIGKILLs the group and reaps. Returns the status.
  int Stop(int sig = SIGTERM, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Contents of the log file so far.
  std::string ReadLog() const;
  /// Path of the log file.
  const std::string& log_path() const { return log_path_; }

 private:
  void KillAndReap() noexcept;

  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

/// A nats-server with JetStream on a free port of 127.0.0.1, its store and log in a temporary
/// directory: `nats-server -a 127.0.0.1 -p <port> -js -sd <dir>/js [-c config] [extra args]`.
/// Not started until Start(). The destructor stops it.
class NatsServer {
 public:
  NatsServer();
  /// `extra_args` are appended to the command line (e.g. {"-m", "8222"}); `config_file`, when not
  /// empty, is passed with -c (command-line flags still override it).
  explicit NatsServer(std::vector<std::string> extra_args, std::string config_file = "");
  ~NatsServer();
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  /// True if a nats-server binary can be found (see FindServerBinary).
  static bool Available();
  /// The nats-server 2.10 of scripts/nats210.sh ($FF_NATS210_SERVER, else its default path);
  /// empty when it is not installed.
  static std::string Server210();
  /// Before Start(): run Server210() (throws, naming scripts/nats210.sh, when not installed).
  void UseServer210();
  /// True when the tests run their servers without the account mapping
  /// ($FF_NATS_PARTITIONING=stream): see the class comment.
  static bool StreamsPartition();
  /// Before Start(): the server maps vehicle.<id>.<sensor> to <prefix>.<n>.<id>.<sensor> with
  /// n = partition(partitions, id), as docs/scaling.md configures it (replaces `config_file`).
  void MapPartitions(int partitions, const std::string& prefix = "telemetry");

  /// Before Start(): also listens for leaf nodes (no authentication) on a free port of
  /// 127.0.0.1, leafnode_port(), kept across restarts: a hub its edges connect to. A leaf
  /// reconnects to the address the hub advertises as well as to its configured one: with a
  /// TcpProxy in front, give its port as `advertise_port` (a leaf would bypass the proxy
  /// otherwise).
  void ListenForLeafNodes(int advertise_port = 0);
  /// The leaf node port (0 without ListenForLeafNodes()).
  int leafnode_port() const { return leafnode_port_; }
  /// Before Start(): runs as an edge leaf node (docs/deploy.md, "Edge leaf nodes"): JetStream in
  /// the domain `domain`, a leaf of the hub listening for leaf nodes on 127.0.0.1:`hub_port`
  /// (the hub's leafnode_port(), or a TcpProxy in front of it), reconnecting every second,
  /// exchanging no vehicles' samples and status (vehicle.*.*) with the hub either way: the hub
  /// gets the edge's only through its stream's source, and the edge's stream none of the hub's.
  void LeafOf(int hub_port, const std::string& domain);

  /// Starts the server and waits (at most 10 s) until a client connection receives the "INFO "
  /// greeting. If the port was taken meanwhile on the first start, retries on a new port. No-op
  /// when already running. Throws std::runtime_error with the log tail on failure.
  void Start();
  /// SIGTERM, waits up to 10 s (then SIGKILL). No-op when not running.
  void Stop();
  /// SIGKILL, no clean shutdown (simulates a crash). No-op when not running.
  void Kill();
  /// Sends `sig` to the server process, e.g. SIGSTOP / SIGCONT to stall it: clients stay
  /// connected while nothing is processed. No-op when not running.
  void Signal(int sig);
  /// Stop() then Start() on the same port and store directory.
  void Restart();
  /// True while the server process runs.
  bool running();
  /// The server's process id (0 when it does not run): to measure what it costs.
  pid_t pid() const { return proc_ ? proc_->pid() : 0; }

  /// "nats://127.0.0.1:<port>".
  std::string url() const;
  int port() const { return port_; }
  /// JetStream store directory (<dir>/js); kept across Restart().
  std::string store_dir() const { return dir_.File("js"); }
  /// The temporary directory holding the store and the log.
  const std::string& dir() const { return dir_.path(); }
  /// The server's log (all starts appended).
  std::string ReadLog() const;

 private:
  void Launch();

  TempDir dir_;
  std::vector<std::string> extra_args_;
  void WriteConfig();

  std::string config_file_;
  std::string mapping_;    // MapPartitions: the account mapping line
  int leafnode_port_ = 0;  // ListenForLeafNodes
  int leaf_advertise_port_ = 0;
  int leaf_hub_port_ = 0;    // LeafOf
  std::string leaf_domain_;  // LeafOf
  std::string binary_;       // empty: $FF_NATS_SERVER or the PATH's
  int port_ = 0;
  bool started_once_ = false;
  std::unique_ptr<Process> proc_;
};

/// A throwaway PostgreSQL cluster: initdb (trust auth, superuser "postgres", UTF8, --no-sync) in a
/// temporary directory, then `postgres -D <dir>/data -p <port> -k <dir> -c
/// listen_addresses=127.0.0.1 -c fsync=off ...` with a database "fleetflow". When the test runs as
/// root, initdb and postgres run as the user "postgres" (the directory is given to it). Not
/// started until Start(). The destructor stops it.
///
/// Every server is started with an explicit shared_preload_libraries: empty by default (so
/// TimescaleDB, even when installed on the machine, is not usable, as right after installing its
/// package), or the libraries of the Preload flags given, e.g.
/// `Preload::kTimescaleDb | Preload::kPgStatStatements` for
/// 'timescaledb,pg_stat_statements'.
class PostgresServer {
 public:
  /// Libraries to preload; flags, combined with |.
  enum class Preload : unsigned {
    kNothing = 0,           ///< shared_preload_libraries = '' (plain PostgreSQL)
    kTimescaleDb = 1,       ///< 'timescaledb' (telemetry off); Start() throws, naming
                            ///< scripts/timescaledb.sh, when TimescaleDB is not installed
    kPgStatStatements = 2,  ///< 'pg_stat_statements' (contrib: part of Debian's postgresql-15);
                            ///< its view needs CREATE EXTENSION pg_stat_statements in the
                            ///< database as well (the test's to run, as a DBA's)
  };
  /// True when `flag` is one of `set`'s.
  static bool Preloads(Preload set, Preload flag) {
    return (static_cast<unsigned>(set) & static_cast<unsigned>(flag)) != 0;
  }
  PostgresServer();
  /// `settings` are extra "name=value" server settings, each passed as -c name=value.
  explicit PostgresServer(std::vector<std::string> settings, Preload preload = Preload::kNothing);
  explicit PostgresServer(Preload preload) : PostgresServer(std::vector<std::string>{}, preload) {}

  /// True when the timescaledb extension is installed for the PostgreSQL these servers run
  /// (its control file in the extension directory and its library in the package library
  /// directory). `where` (optional) receives the control file's path that was checked.
  static bool TimescaleDbInstalled(std::string* where = nullptr);
  /// True when PostGIS is installed for the PostgreSQL these servers run (postgis.control in
  /// the extension directory; Debian package postgresql-<major>-postgis-3). `where` (optional)
  /// receives the control file's path that was checked.
  static bool PostGisInstalled(std::string* where = nullptr);
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  /// True if initdb, postgres, pg_isready and psql are found and, when running as root, the user
  /// "postgres" exists.
  static bool Available();

  /// On the first call runs initdb, starts the server, waits (at most 30 s) for pg_isready and
  /// creates the database "fleetflow"; later calls just start the server on the same port and
  /// data. No-op when already running. Throws std::runtime_error with the log tail on failure.
  void Start();
  /// Fast shutdown (SIGINT to the postmaster), waits up to 30 s (then SIGKILL). No-op when not
  /// running. Once it returns the port is closed.
  void Stop();
  /// SIGKILL to the postmaster and its backends (simulates a crash; the next Start() recovers).
  void Kill();
  /// Stop() then Start(), same port and data.
  void Restart();
  /// True while the postmaster runs.
  bool running();

  /// Instead of Start(), the first time: makes this server a hot standby of `primary`, which
  /// runs and accepts replication connections from 127.0.0.1 (PostgresPair starts one so).
  /// `pg_basebackup -R -X stream -c fast` copies the primary's data directory into this
  /// server's own, with standby.signal and primary_conninfo (postgresql.auto.conf); the standby
  /// then starts on a free port of its own and this waits (at most 30 s) until it accepts
  /// read-only connections and its WAL receiver streams from the primary. Later Start() calls
  /// start it again on the same port and data (a standby until promoted). The standby's
  /// settings (constructor) must be at least the primary's where hot standby requires it
  /// (max_connections, max_wal_senders, ...): give both the same. Throws std::runtime_error
  /// with the log's tail on failure, or when this server has a data directory already.
  void StartStandbyOf(const PostgresServer& primary);
  /// After a failover, the old primary (killed or stopped) as a standby of the new one, as an
  /// operator rebuilds it: its data directory is replaced by a base backup of `primary` (as
  /// StartStandbyOf) and it starts again on its own port; this waits (at most 30 s) until its
  /// WAL receiver streams. Throws when it runs, never ran, or does not get there.
  void RejoinAsStandbyOf(const PostgresServer& primary);
  /// Promotes a standby to a primary: SELECT pg_promote() (it waits for the end of recovery),
  /// then waits (at most 30 s) until pg_is_in_recovery() is false. Throws when it does not get
  /// there.
  void Promote();
  /// pg_is_in_recovery(): true while the server is a standby. Throws when it cannot be asked.
  bool InRecovery() const;

  /// "host=127.0.0.1 port=<port> user=postgres dbname=fleetflow".
  std::string conninfo() const;
  /// "postgresql://postgres@127.0.0.1:<port>/fleetflow".
  std::string url() const;
  /// libpq environment for child processes: PGHOST, PGPORT, PGUSER, PGDATABASE.
  std::map<std::string, std::string> env() const;
  int port() const { return port_; }
  /// The data directory (<dir>/data).
  std::string data_dir() const { return dir_.File("data"); }
  /// The temporary directory holding data, socket and logs.
  const std::string& dir() const { return dir_.path(); }
  /// The server's log (all starts appended).
  std::string ReadLog() const;

  /// Runs `psql -X -A -t -q -v ON_ERROR_STOP=1 -c <sql>` against `dbname` and returns stdout
  /// without trailing whitespace; rows are separated by '\n', columns by '|'. Throws
  /// std::runtime_error carrying psql's stderr on error.
  std::string Psql(const std::string& sql, const std::string& dbname = "fleetflow") const;
  /// Like Psql() but returns nullopt instead of throwing (e.g. to poll inside WaitFor() for a
  /// table that does not exist yet).
  std::optional<std::string> TryPsql(const std::string& sql,
                                     const std::string& dbname = "fleetflow") const;

 private:
  void Launch();
  void LaunchOnAFreePort();  // the first start: a free port, retried when taken meanwhile
  void BaseBackupOf(const PostgresServer& primary);  // pg_basebackup -R into data_dir()
  void WaitStreamingFrom(const PostgresServer& primary);
  std::string Bin(const std::string& name) const;

  TempDir dir_;
  std::vector<std::string> settings_;
  Preload preload_ = Preload::kNothing;
  std::string bin_dir_;
  std::string run_as_;
  int port_ = 0;
  bool initialised_ = false;  // initdb done
  bool started_once_ = false;
  std::unique_ptr<Process> proc_;
};

inline PostgresServer::Preload operator|(PostgresServer::Preload a, PostgresServer::Preload b) {
  return static_cast<PostgresServer::Preload>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}

/// A primary and a hot standby streaming from it, as a PostgreSQL with failover runs them (a
/// managed service, Patroni): two PostgresServers on 127.0.0.1, each with its own port and data,
/// both with the same settings (wal_level=replica, max_wal_senders=4, hot_standby=on and
/// `settings`). The primary accepts replication connections from 127.0.0.1 (initdb's trust
/// entry; an entry for user postgres is added to pg_hba.conf either way). With
/// Commit::kSynchronous (the default) the standby is the primary's synchronous standby
/// (synchronous_standby_names = '*', synchronous_commit = on): a COMMIT returns once the standby
/// has the transaction on disk, so promoting it after the primary's death loses no acknowledged
/// commit. With kAsynchronous a COMMIT does not wait, and the standby may lack the last ones.
/// The failover itself is the test's: primary().Kill(), then standby().Promote(); Rejoin() then
/// makes the dead server the new primary's standby, for a later failover. The destructor stops
/// both.
class PostgresPair {
 public:
  enum class Commit { kSynchronous, kAsynchronous };
  explicit PostgresPair(Commit commit = Commit::kSynchronous,
                        const std::vector<std::string>& settings = {});
  PostgresPair(const PostgresPair&) = delete;
  PostgresPair& operator=(const PostgresPair&) = delete;

  /// Starts the primary (initdb, database "fleetflow"), then the standby from a base backup of
  /// it (PostgresServer::StartStandbyOf); with kSynchronous, makes the standby synchronous
  /// (ALTER SYSTEM on the primary only, after the backup) and waits (at most 30 s) until
  /// pg_stat_replication says 'sync'. Throws std::runtime_error on failure.
  void Start();

  /// The servers in their roles: swapped by Rejoin().
  PostgresServer& primary() { return swapped_ ? standby_ : primary_; }
  PostgresServer& standby() { return swapped_ ? primary_ : standby_; }
  const PostgresServer& primary() const { return swapped_ ? standby_ : primary_; }
  const PostgresServer& standby() const { return swapped_ ? primary_ : standby_; }

  /// After a failover (primary().Kill(), standby().Promote()): the dead primary rejoins as the
  /// promoted server's standby (PostgresServer::RejoinAsStandbyOf: a fresh base backup, its own
  /// port again), synchronous with kSynchronous as in Start(); then the roles swap: primary()
  /// is the promoted server, standby() the rejoined one, and a second failover can follow.
  /// conninfo() stays the same. Throws when standby() is still in recovery or on failure.
  void Rejoin();

  /// Both servers in one libpq connection string, the first primary first:
  /// "host=127.0.0.1,127.0.0.1 port=<primary>,<standby> user=postgres dbname=fleetflow
  /// target_session_attrs=read-write". libpq tries them in order on every connect and keeps
  /// the first that takes writes, so after a promotion it finds the new primary. The same
  /// string whatever Rejoin() swapped.
  std::string conninfo() const;

 private:
  void MakeSynchronous();  // primary()'s one standby becomes synchronous (kSynchronous)

  Commit commit_;
  bool swapped_ = false;
  PostgresServer primary_;
  PostgresServer standby_;  // declared last: stopped first
};

/// A Prometheus server on a free port of 127.0.0.1, its configuration, TSDB and log in a
/// temporary directory: `prometheus --config.file=<dir>/prometheus.yml
/// --storage.tsdb.path=<dir>/data --web.listen-address=127.0.0.1:<port>`. Not started until
/// Start(). The destructor stops it.
class PrometheusServer {
 public:
  /// `config` is the text of prometheus.yml (give rule files by absolute path).
  explicit PrometheusServer(std::string config);
  ~PrometheusServer();
  PrometheusServer(const PrometheusServer&) = delete;
  PrometheusServer& operator=(const PrometheusServer&) = delete;

  /// True if the prometheus and promtool binaries can be found (see FindServerBinary).
  static bool Available();

  /// Starts the server and waits (at most 30 s) until it logs that it is ready and its port
  /// accepts connections. If the port was taken meanwhile, retries on a new port. No-op when
  /// already running. Throws std::runtime_error with the log tail on failure.
  void Start();
  /// SIGTERM, waits up to 10 s (then SIGKILL). No-op when not running.
  void Stop();

  int port() const { return port_; }
  /// The temporary directory holding the configuration, the TSDB and the log.
  const std::string& dir() const { return dir_.path(); }
  /// The server's log.
  std::string ReadLog() const;

 private:
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<Process> proc_;
};

}  // namespace fleetflow::testing

/// In a test body or SetUp(): skips the test when nats-server is not installed.
#define FF_REQUIRE_NATS_SERVER()                                        \
  do {                                                                  \
    if (!::fleetflow::testing::NatsServer::Available())                 \
      GTEST_SKIP() << "nats-server not installed: run scripts/deps.sh"; \
  } while (0)

/// In a test body or SetUp(): FAILS (never skips) the test when TimescaleDB is not installed: the
/// test suite installs it (scripts/timescaledb.sh, run by scripts/deps.sh).
#define FF_REQUIRE_TIMESCALEDB()                                                          \
  do {                                                                                    \
    std::string ff_tsdb_control;                                                          \
    if (!::fleetflow::testing::PostgresServer::TimescaleDbInstalled(&ff_tsdb_control))    \
      FAIL() << "TimescaleDB is not installed (" << ff_tsdb_control                       \
             << " missing): these tests need it; run scripts/timescaledb.sh as root, or " \
                "scripts/deps.sh, which runs it";                                         \
  } while (0)

/// In a test body or SetUp(): FAILS (never skips) the test when PostGIS is not installed: the
/// test suite installs it (scripts/deps.sh, Debian package postgresql-15-postgis-3).
#define FF_REQUIRE_POSTGIS()                                                           \
  do {                                                                                 \
    std::string ff_postgis_control;                                                    \
    if (!::fleetflow::testing::PostgresServer::PostGisInstalled(&ff_postgis_control))  \
      FAIL() << "PostGIS is not installed (" << ff_postgis_control                     \
             << " missing): these tests need it; run scripts/deps.sh (Debian package " \
                "postgresql-15-postgis-3)";                                            \
  } while (0)

/// In a test body or SetUp(): skips the test when PostgreSQL server binaries are not installed.
#define FF_REQUIRE_POSTGRES()                                                 \
  do {                                                                        \
    if (!::fleetflow::testing::PostgresServer::Available())                   \
      GTEST_SKIP() << "PostgreSQL server not installed: run scripts/deps.sh"; \
  } while (0)

/// In a test body or SetUp(): FAILS (never skips) the test when prometheus or promtool is not
/// installed: the test suite installs them (scripts/deps.sh, Debian package prometheus).
#define FF_REQUIRE_PROMETHEUS()                                                              \
  do {                                                                                       \
    if (!::fleetflow::testing::PrometheusServer::Available())                                \
      FAIL() << "prometheus/promtool not installed: these tests run a real Prometheus; run " \
                "scripts/deps.sh (Debian package prometheus)";                               \
  } while (0)

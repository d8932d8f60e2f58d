#pragma once
/// End-to-end checking: the rows a simulated fleet must produce, recomputed from the simulator's
/// signal model and the rules of docs/semantics.md, independently of the engine's code, and the
/// comparison with what a real PostgreSQL holds.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "servers.hpp"
#include "signals.hpp"
#include "wire.hpp"

namespace fleetflow::testing {

constexpr int64_t kSecond = 1'000'000'000;  // in ns

struct ExpectedRow {
  std::optional<double> lat, lon, speed, soc, torque;
};

using ExpectedRows = std::map<std::pair<std::string, int64_t>, ExpectedRow>;

/// Samples by vehicle and sensor, each sensor's in time order.
using Samples = std::map<std::string, std::map<std::string, std::vector<wire::Point>>>;

/// Rows of the default column set (lat, lon, speed linear; soc previous; torque linear) for
/// vehicles that published `samples`, then said off.
ExpectedRows ComputeExpectedRows(const Samples& samples, int64_t every_ns = 1'000'000'000,
                                 int64_t max_gap_ns = 2'000'000'000);
/// The same for a fleet-sim fleet that published every sample with start_ns <= ts < end_ns.
ExpectedRows ComputeExpectedRows(const sim::FleetConfig& fleet, int64_t end_ns,
                                 int64_t every_ns = 1'000'000'000,
                                 int64_t max_gap_ns = 2'000'000'000);
/// Every sample of a fleet-sim fleet with start_ns <= ts < end_ns.
Samples FleetSamples(const sim::FleetConfig& fleet, int64_t end_ns);

/// Rows of any table by (vehicle_id, time in ns): one value per compared column, in order.
using ExpectedTable = std::map<std::pair<std::string, int64_t>, std::vector<std::optional<double>>>;

/// A column of a window_aggregate's table (timescale_sink's column: name, sensor, stat, field).
struct StatColumn {
  std::string name, sensor, stat, field = "value";
};

/// The statistics rows of windows [S, S + every_ns) over `samples` (every sample in time, each
/// once), per the rules of docs/semantics.md ("Statistics per window"): one row per vehicle and
/// window with a sample of any of `sensors`; a position's distance adds the hop from the
/// sensor's previous sample when it is at most max_gap_ns older. Times are seconds after the
/// window's start (to the µs, rounded down, as PostgreSQL keeps them).
ExpectedTable ComputeExpectedStats(const Samples& samples, int64_t every_ns, int64_t max_gap_ns,
                                   const std::vector<std::string>& sensors,
                                   const std::vector<StatColumn>& columns);

/// Every sample `stream` stored (subjects [...].<vehicle>.<sensor>), once per (vehicle, sensor,
/// time) whatever was stored twice: what vehicles whose samples vary with the wall clock
/// (fleet-sensor) had acknowledged, to compute their rows from. Throws when it cannot be read.
Samples SamplesInStream(const std::string& nats_url, const std::string& stream);
size_t CountSamples(const Samples& samples);

struct CheckResult {
  size_t expected = 0, found = 0, unexpected = 0, mismatched = 0, missing = 0;
  std::string first_problems;  // up to 10 lines of each: missing rows, unexpected rows, values
  /// Every (vehicle, time) of each kind, in the order of the table (missing: of `expected`).
  std::vector<std::pair<std::string, int64_t>> missing_rows, unexpected_rows, mismatched_rows;
  bool ok() const { return found == expected && unexpected == 0 && mismatched == 0; }
  std::string Summary() const;
};

/// Compares vehicle_telemetry with `expected`: every row once, nothing else, values within 1e-9.
CheckResult CheckRows(const PostgresServer& pg, const ExpectedRows& expected);
/// The same for `table`, whose `columns` (SQL expressions giving numbers: extract(epoch FROM t)
/// for a time) are compared with `expected`'s values in order.
CheckResult CheckTable(const PostgresServer& pg, const std::string& table,
                       const std::vector<std::string>& columns, const ExpectedTable& expected);

/// Whether every row of `expected` is in vehicle_telemetry (what a test waits for: a count of
/// rows would also count rows that should not be there).
bool HasEveryRow(const PostgresServer& pg, const ExpectedRows& expected);

int64_t NowNs();

/// PublishKnownSamples' defaults: ten samples of each sensor, 100 ms apart.
constexpr int kKnownSamples = 10;
constexpr int64_t kKnownPeriodNs = 100'000'000;

/// Publishes, in event-time order, `samples` samples of each of `sensors` for vehicles
/// <prefix>0 .. <prefix>(vehicles - 1), one per message: sample k of vehicle v is at
/// start_ns + k * period_ns with seq k and value 10 v + k. Returns the number of messages.
int PublishKnownSamples(const std::string& nats_url, const std::string& prefix, int vehicles,
                        int64_t start_ns,
                        const std::vector<std::string>& sensors = {"speed", "soc"},
                        int samples = kKnownSamples, int64_t period_ns = kKnownPeriodNs);

/// The start of the second `lead_s` seconds after the current one, +250 ms (not on a window
/// boundary): when samples published from now on begin.
int64_t StartNs(int lead_s = 2);

/// A fleet-sim fleet that starts at StartNs(lead_s) and publishes for duration_s.
struct Fleet {
  sim::FleetConfig config;
  int64_t end_ns = 0;
};
Fleet MakeFleet(int vehicles, int duration_s, uint64_t seed = 7, int lead_s = 1);
/// The fleet-sim command line publishing `fleet` to `nats` (or the servers of `nats_url`, a
/// comma-separated list for a cluster) in real time.
std::vector<std::string> SimArgs(const std::string& nats_url, const Fleet& fleet, int duration_s);
std::vector<std::string> SimArgs(const NatsServer& nats, const Fleet& fleet, int duration_s);

/// A finished fleet-sim run and the rows it must produce.
struct SimRun {
  Fleet fleet;
  CommandResult result;  ///< fleet-sim's exit status and output: check exit_code
  ExpectedRows expected;
};
/// Runs fleet-sim to its end (at most 60 s after the fleet's end): `vehicles` vehicles of `seed`
/// publishing to `nats` for duration_s from two seconds on (MakeFleet(..., 2)).
SimRun RunFleetSim(const std::string& nats_url, int vehicles, int duration_s, uint64_t seed = 42);
SimRun RunFleetSim(const NatsServer& nats, int vehicles, int duration_s, uint64_t seed = 42);

/// Rows in vehicle_telemetry (0 while the table does not exist).
int Rows(const PostgresServer& pg);
/// Waits until vehicle_telemetry holds exactly `rows` rows; false when it does not at `deadline`.
bool WaitForRows(const PostgresServer& pg, size_t rows,
                 std::chrono::milliseconds deadline = std::chrono::seconds(30));

/// From now on, every insert and update of a row of `tables` (which must exist) is logged, so
/// that a row written twice shows, although the table holds it once: in the table row_writes
/// (tbl, vehicle_id, time, written_at: the clock_timestamp() of the write); vehicle_id holds the
/// key of a table keyed by cell (fleet_cells_1m).
void CountWrites(const PostgresServer& pg,
                 const std::vector<std::string>& tables = {"vehicle_telemetry"});
struct WriteCount {
  int64_t writes = 0;        // inserts and updates since CountWrites
  int64_t rows = 0;          // distinct (vehicle_id, time) written
  int64_t most_per_row = 0;  // writes of the row written most often
  double PerRow() const { return rows == 0 ? 0 : static_cast<double>(writes) / rows; }
};
/// The writes of `table` since CountWrites.
WriteCount Writes(const PostgresServer& pg, const std::string& table = "vehicle_telemetry");

/// Sum of every sample of the metric `name` (any labels) in a Prometheus text exposition
/// (read with apps/prom_text.hpp); -1 when there is none.
double Scrape(const std::string& exposition, const std::string& name);

/// The samples in an archive (docs/archive.md) as any reader sees them: every committed chunk
/// (*.csv.zst) under `root`, each line counted by (vehicle, sensor, time in µs).
/// The rows (row_archive's chunks, under rows=<row set>) likewise, by (vehicle, window time),
/// with their columns' values.
struct ArchiveCount {
  std::map<std::tuple<std::string, std::string, int64_t>, int> samples;
  size_t chunks = 0;
  uint64_t bytes = 0;  // of the chunks
  std::map<std::pair<std::string, int64_t>, int> rows;
  std::map<std::pair<std::string, int64_t>, std::vector<std::optional<double>>> row_values;
  std::vector<std::string> row_columns;  // of the rows' header, after vehicle_id and ts
  size_t row_chunks = 0;
  uint64_t row_bytes = 0;
  std::vector<std::string> problems;  // chunks or lines that could not be read
};
ArchiveCount CountArchive(const std::string& root);
/// The differences between `got` and every sample of `expected` once (times cut to the µs, as
/// the archive writes them): the first few, and how many there are; empty when exact.
std::string CompareArchive(const ArchiveCount& got, const Samples& expected);
/// The same for the rows: every expected row once, none other, each value within what the
/// archive's rounding allows (5 decimals of lat and lon, 4 significant digits of the others).
std::string CompareRowArchive(const ArchiveCount& got, const ExpectedRows& expected);

/// Writes the pipeline file `base` to `out_path` with the config of node `node_id` updated by the
/// members of the JSON object `overrides`; returns out_path.
std::string WritePipelineVariant(const std::string& base, const std::string& node_id,
                                 const std::string& overrides, const std::string& out_path);

/// A nats-server (vehicle subjects mapped to `partitions` partitions when > 0) and a PostgreSQL,
/// both started, and a temporary directory: what an end-to-end test runs on. In a test,
/// FF_REQUIRE_NATS_SERVER() and FF_REQUIRE_POSTGRES() come first.
struct Servers {
  explicit Servers(const std::string& dir_prefix, int partitions = 0,
                   PostgresServer::Preload preload = PostgresServer::Preload::kNothing);
  TempDir dir;  // removed last, after the servers have stopped
  NatsServer nats;
  PostgresServer pg;
};

/// A NATS cluster as production runs it (docs/deploy.md): `size` nats-servers with JetStream,
/// each a NatsServer of its own (store, log, port) named n0, n1, ..., routed to each other on
/// 127.0.0.1 (cluster "fleetflow"). Streams and buckets created with 3 replicas survive the loss
/// of any one node. Clients connect through url(), the list of every node.
class NatsCluster {
 public:
  explicit NatsCluster(int size = 3);
  /// Before Start(): every node maps the vehicles' subjects (NatsServer::MapPartitions).
  void MapPartitions(int partitions, const std::string& prefix = "telemetry");
  /// Before Start(): every node runs nats-server 2.10 (NatsServer::UseServer210; throws when
  /// it is not installed).
  void UseServer210();
  /// Starts every node that does not run, then waits (at most 30 s) until JetStream answers
  /// through every running node (the cluster elected its meta leader), and (at most 60 s) until
  /// a stream with a replica on every running node can be placed (every node routed and a peer).
  /// Throws when it does not.
  void Start();
  NatsServer& node(int i) { return *nodes_.at(static_cast<size_t>(i)); }
  int size() const { return static_cast<int>(nodes_.size()); }
  /// "nats://127.0.0.1:<port0>,nats://127.0.0.1:<port1>,..." (after Start()).
  std::string url() const;
  /// The node that leads `stream` ("KV_<bucket>" for a bucket), -1 when no node answers with a
  /// leader.
  int LeaderOf(const std::string& stream) const;
  /// Waits (at most `deadline`) until `stream` has a leader and every replica is current. A
  /// node whose replica is still behind after half of it is restarted (SIGTERM, same port and
  /// store), once, and said so on stderr: nats-server 2.10 restarted after a kill -9 on a busy
  /// machine sometimes never catches its replica up (its meta layer stays "not current with
  /// the meta leader"), which an operator would cure the same way. The engine's behaviour is
  /// what the tests check, not the server's recovery.
  bool WaitCurrent(const std::string& stream, std::chrono::milliseconds deadline);
  /// Makes one node lead both `stream` and `other`: asks `other`'s leader to step down (the
  /// cluster elects another at random) until its leader is `stream`'s, at most 30 times. The
  /// node leading both, -1 when it did not happen.
  int LeadTogether(const std::string& stream, const std::string& other);

 private:
  std::vector<int> cluster_ports_;
  std::vector<std::unique_ptr<NatsServer>> nodes_;
};

/// Vehicles <prefix>0 .. <prefix>(n-1), each a fleet-sensor process (this build's) publishing to
/// `nats_url` for duration_s with a fixed seed, batches of 100 ms and --ack jetstream: each keeps
/// what the stream has not acknowledged and sends it again (after 1 s, or on reconnecting every
/// 100 ms), for up to 20 s after its end; so nothing is lost across a node kill. Their output
/// goes to <dir>/<prefix><i>.log.
std::vector<std::unique_ptr<Process>> StartSensors(const std::string& nats_url, const TempDir& dir,
                                                   int n, int duration_s,
                                                   const std::string& prefix = "car");
/// A counter of the JSON line fleet-sensor (or fleet-sim) prints at its end (e.g. "samples",
/// "published_samples", "resent_messages"), -1 when absent.
int64_t SensorCounter(const Process& sensor, const std::string& name);

/// What to read when windows are missing: `vehicle`'s speed samples that `stream` stored over
/// 1 s after they were taken, by the second they were stored: "first - last -> stored" (seconds
/// of the minute, ms), in the stream's order.
std::string StoredLate(const std::string& nats_url, const std::string& vehicle,
                       const std::string& stream = "TELEMETRY");

/// `fleetflow run PIPELINE` on the given servers (NATS_URL and the libpq environment), with its
/// HTTP endpoints on a free port of 127.0.0.1 and its output in `log_path`.
class Engine {
 public:
  Engine(const std::string& pipeline, const NatsServer& nats, const PostgresServer& pg,
         const std::string& log_path);
  /// With the environment given: NATS_URL and the libpq variables (PGHOST, PGPORT, ...).
  /// `program`: the fleetflow binary (default: this build's apps/fleetflow).
  Engine(const std::string& pipeline, const std::map<std::string, std::string>& env,
         const std::string& log_path, const std::string& program = "");
  /// Waits until /readyz answers 200; false once the deadline passed or the process ended.
  bool WaitReady(std::chrono::milliseconds deadline = std::chrono::seconds(30));
  /// The body of GET `path` when it answers 200 (connection timeout 2 s, read timeout 10 s).
  std::optional<std::string> Get(const std::string& path) const;
  /// Metric `name` summed over its series (Scrape) from GET /metrics; -1 when it cannot be read.
  double Metric(const std::string& name) const;
  Process& process() { return *process_; }
  int port() const { return port_; }

 private:
  int port_;
  std::unique_ptr<Process> process_;
};

/// A tmux server of its own (a private socket in `dir`, no configuration read) running one
/// command in a detached 160x50 session, to test what a command shows on a terminal; killed on
/// destruction. Throws when a tmux command fails.
class Tmux {
 public:
  Tmux(const TempDir& dir, const std::string& command);
  ~Tmux();
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  /// What the pane shows now.
  std::string Screen() const;
  /// A tmux format of the pane, e.g. #{cursor_flag} (1: the cursor is shown).
  std::string Format(const std::string& format) const;
  void Keys(const std::string& keys) const;

 private:
  std::string Run(std::vector<std::string> args) const;

  std::string socket_;
  std::string session_;
};

}  // namespace fleetflow::testing

/// In a test body: FAILS (never skips) when tmux is not installed: the test suite installs it
/// (scripts/deps.sh).
#define FF_REQUIRE_TMUX()                                                               \
  do {                                                                                  \
    if (::fleetflow::testing::FindServerBinary("tmux").empty())                         \
      FAIL() << "tmux is not installed: this test drives fleetflow in a terminal; run " \
                "scripts/deps.sh";                                                      \
  } while (0)

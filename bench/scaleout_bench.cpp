// Scale-out by partition: 1, 2, 3, 4 ... workers on the same offered load, real servers.
//
// For each N of --workers, independently of the other runs: a fresh nats-server that maps
// vehicle.*.* into 16 partitions (the fixture's MapPartitions, as docs/scaling.md configures it)
// and a fresh PostgreSQL; N workers `fleetflow run <pipeline>` as child processes (env NATS_URL
// and PG*, each with its own metrics port) on pipelines/jetstream.json rewritten into a
// temporary directory with timescale_sink "timescaledb": "off" (the plain PostgreSQL path,
// whether or not the machine has TimescaleDB). Once every worker is ready (/readyz) and the 16
// partitions are owned (the sum of fleetflow_partitions_owned, each worker at least 16/N
// rounded down), a trigger logs every insert or update of vehicle_telemetry into a side table
// (the primary key would hide a second write of a row), the workers idle for --idle-s (their
// fixed cost: membership heartbeats, one fetch loop per owned partition), then fleet-sim
// publishes --vehicles vehicles for --seconds seconds in real time with a fixed seed.
//
// Measured from fleet-sim's start to the first poll that sees the last row written (the sum of
// fleetflow_sink_rows_written_total stops moving for --settle-s and equals the rows emitted):
// CPU of the workers (sum over their pids), of nats-server (its pid) and of PostgreSQL (the
// postmaster and its backends), per sample fleet-sim sent; while it runs, each worker's VmRSS
// every --poll-ms and its fleetflow_tracked_vehicles every --load-poll-ms (a read of /metrics
// costs the worker CPU; the maxima are reported); at the end the late
// samples (sum), the rows and their writes. Then SIGTERM to all workers (they hand over and
// drain) and the writes are counted again.
//
// The bare loop (unless --no-baseline), before fleetflow's workers at each N: N bare workers
// (this program with --bare-worker) on fresh servers read the same 16 durable consumers (made
// by a fleetflow worker that is then stopped) as a fleetflow worker reads them: one
// nats::PullSet on one connection, nats_source's batch, expiry and linger, requests ahead;
// the messages acknowledged together once a second (keyed_last_value's flush_ms), nothing else
// done with them. The same load; CPU from fleet-sim's start to the first poll that finds every
// consumer drained. What it costs at N against N = 1 is what reading costs on this machine;
// fleetflow's CPU beyond it is what the engine adds.
//
// Goals (issue "Scale out by partition"), each printed as met / not met, ratios against N = 1
// of the same run: workers' and server's CPU per sample at the largest N within 1.2 times N = 1;
// at most 1.02 writes per row; each worker tracks fleet/N vehicles within 20 %; RSS per worker
// falls as N grows. Everything runs on one machine: CPU per sample is the figure to compare,
// not the rate (fleet-sim offers the same real-time load at every N).
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "servers.hpp"

namespace fleetflow::bench {
namespace {

using namespace std::chrono_literals;

constexpr int kPartitions = 16;
// What the bare loop reads, as pipelines/jetstream.json's nats_source has it: its stream, its
// durable consumers (<durable>-<partition>) and nats_source's fetch defaults, which the pipeline
// leaves as they are.
constexpr const char* kStream = "TELEMETRY";
constexpr const char* kDurable = "fleetflow";
constexpr int kFetchBatch = 256;
constexpr int kFetchExpiryMs = 500;
constexpr int kFetchLingerMs = 75;
// keyed_last_value's flush_ms in the pipeline: a worker acknowledges what a flush made durable.
constexpr auto kAckEvery = std::chrono::milliseconds(1000);
constexpr const char* kBareWorkerFlag = "--bare-worker";
constexpr const char* kBareReady = "bare worker reading";

struct Settings {
  // The load, and the fleet-sim that publishes it.
  int vehicles = 500;
  double seconds = 30;
  uint64_t seed = 1;
  std::string rates;
  std::string fleet_sim;
  // The runs: how many workers each, how many rounds, and the fleetflow and pipeline they run.
  std::vector<int> workers = {1, 2, 3, 4};
  int repeats = 1;
  std::string fleetflow;
  std::string pipeline = std::string(FF_SOURCE_DIR) + "/pipelines/jetstream.json";
  // The measurement: when it starts and ends, and how often it reads the workers.
  double idle_s = 3;
  double settle_s = 4;
  int poll_ms = 500;
  int load_poll_ms = 2500;
  double drain_timeout_s = 180;
  Output out;  // --scale, --csv, --summary
  bool keep_logs = false;
  bool baseline = true;
};

/// Copies the pipeline with every timescale_sink's config given "timescaledb": "off".
void WritePipeline(const std::string& from, const std::string& to) {
  const std::string text = testing::ReadFile(from);
  rapidjson::Document doc;
  if (text.empty() || doc.Parse(text.c_str()).HasParseError() || !doc.IsObject() ||
      !doc.HasMember("nodes") || !doc["nodes"].IsArray()) {
    throw std::runtime_error("cannot read the pipeline " + from);
  }
  auto& alloc = doc.GetAllocator();
  int sinks = 0;
  for (auto& node : doc["nodes"].GetArray()) {
    if (!node.HasMember("type") || std::string(node["type"].GetString()) != "timescale_sink") {
      continue;
    }
    auto& config = node["config"];
    config.RemoveMember("timescaledb");
    config.AddMember("timescaledb", "off", alloc);
    ++sinks;
  }
  if (sinks == 0) throw std::runtime_error(from + " has no timescale_sink");
  doc.RemoveMember("$schema");  // relative to pipelines/
  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> writer(buf);
  doc.Accept(writer);
  std::ofstream out(to);
  out << buf.GetString() << '\n';
  if (!out) throw std::runtime_error("cannot write " + to);
}

/// The number in field `key` of /proc/<pid>/status (VmRSS in kB, Threads); 0 when gone.
uint64_t PidStatus(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1));
  }
  return 0;
}

/// Context switches (voluntary and not) of all threads of `pid` so far.
double TaskSwitches(pid_t pid) {
  double total = 0;
  std::error_code ec;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(dir, ec)) {
    std::ifstream in(task.path() / "status");
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
          line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::stod(line.substr(line.find(':') + 1));
      }
    }
  }
  return total;
}

double MiB(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

/// What one worker showed during and after the load.
struct WorkerFigures {
  double partitions = 0;   // owned once settled, before the load
  double tracked_max = 0;  // fleetflow_tracked_vehicles, largest value seen
  double tracked_end = 0;  // when fleet-sim finished
  uint64_t rss_max = 0;    // VmRSS, largest value seen during the load
  uint64_t hwm = 0;        // VmHWM at the end of the load
  uint64_t threads = 0;    // at the end of the load
  double cpu_s = 0;        // during the measured interval
  double switches = 0;     // context switches of its threads, same interval
  double late = 0;         // fleetflow_late_samples_total at the end
  double accepted = 0;     // fleetflow_samples_accepted_total at the end
  int exit_status = -1;    // after SIGTERM
};

/// The measurement of one N.
struct Run {
  int n = 0;
  int64_t samples = 0;  // fleet-sim's summary
  double sim_elapsed_s = 0;
  double sim_cpu_s = 0;
  double interval_s = 0;  // fleet-sim's start to the poll that saw the last row
  bool settled = false;
  double worker_cpu_s = 0, nats_cpu_s = 0, pg_cpu_s = 0;
  double worker_kernel_s = 0;  // of worker_cpu_s, in the kernel (system time)
  double worker_switches = 0, nats_switches = 0;
  double idle_worker_cpu_per_s = 0, idle_nats_cpu_per_s = 0;  // before the load
  double machine_busy = 0;                                    // fraction of all cores
  uint64_t rows = 0, writes = 0, most_writes_per_row = 0;
  uint64_t writes_after_stop = 0, rows_after_stop = 0;
  double late = 0, accepted = 0, rows_written_metric = 0;
  std::vector<WorkerFigures> workers;

  double WorkerUs() const { return samples ? 1e6 * worker_cpu_s / samples : 0; }
  double WorkerKernelUs() const { return samples ? 1e6 * worker_kernel_s / samples : 0; }
  double NatsUs() const { return samples ? 1e6 * nats_cpu_s / samples : 0; }
  double PgUs() const { return samples ? 1e6 * pg_cpu_s / samples : 0; }
  double WorkerSwitchesPer1000() const { return samples ? 1e3 * worker_switches / samples : 0; }
  double NatsSwitchesPer1000() const { return samples ? 1e3 * nats_switches / samples : 0; }
  double WritesPerRow() const { return rows ? static_cast<double>(writes) / rows : 0; }
  double WritesPerRowAfterStop() const {
    return rows_after_stop ? static_cast<double>(writes_after_stop) / rows_after_stop : 0;
  }
  double MeanRssMiB() const {
    double sum = 0;
    for (const auto& w : workers) sum += MiB(w.rss_max);
    return workers.empty() ? 0 : sum / workers.size();
  }
  /// Largest |tracked_max - fleet/N| / (fleet/N) over the workers.
  double TrackedDeviation(int vehicles) const {
    const double share = static_cast<double>(vehicles) / n;
    double worst = 0;
    for (const auto& w : workers) worst = std::max(worst, std::abs(w.tracked_max - share) / share);
    return worst;
  }
};

std::string Tail(const std::string& log, size_t chars = 3000) {
  return log.size() > chars ? log.substr(log.size() - chars) : log;
}

/// fleet-sim publishing the load of `s` to `url`.
std::vector<std::string> FleetSimArgv(const Settings& s, const std::string& url) {
  std::vector<std::string> argv = {s.fleet_sim,
                                   "--nats-url",
                                   url,
                                   "--vehicles",
                                   std::to_string(s.vehicles),
                                   "--seed",
                                   std::to_string(s.seed),
                                   "--duration",
                                   std::to_string(s.seconds),
                                   "--quiet"};
  if (!s.rates.empty()) {
    argv.push_back("--rates");
    argv.push_back(s.rates);
  }
  return argv;
}

/// Fresh servers for one run, the pipeline rewritten into their directory, and the workers'
/// environment (NATS_URL and the libpq variables).
struct RunServers {
  testing::Servers servers{"ff-bench-scaleout", kPartitions};
  std::string pipeline = servers.dir.File("jetstream.json");
  std::map<std::string, std::string> env = servers.pg.env();

  explicit RunServers(const Settings& s) {
    WritePipeline(s.pipeline, pipeline);
    env["NATS_URL"] = servers.nats.url();
  }
};

/// The idle before the load: what the workers `pids` and nats-server spend with no load
/// (heartbeats, empty fetches), per second of --idle-s.
void MeasureIdle(const Settings& s, const std::vector<pid_t>& pids, pid_t nats_pid, Run& run) {
  const auto workers = [&] {
    double t = 0;
    for (pid_t pid : pids) t += PidCpuSeconds(pid);
    return t;
  };
  const double w0 = workers(), n0 = PidCpuSeconds(nats_pid);
  const auto t0 = SteadyClock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(s.idle_s));
  const double dt = Seconds(SteadyClock::now() - t0);
  run.idle_worker_cpu_per_s = (workers() - w0) / dt;
  run.idle_nats_cpu_per_s = (PidCpuSeconds(nats_pid) - n0) / dt;
}

Run MeasureOne(const Settings& s, int n) {
  Run run;
  run.n = n;
  const RunServers setup(s);
  const testing::NatsServer& nats = setup.servers.nats;
  const testing::PostgresServer& pg = setup.servers.pg;
  const testing::TempDir& dir = setup.servers.dir;
  const std::string& pipeline = setup.pipeline;
  const auto& env = setup.env;

  std::vector<std::unique_ptr<testing::Engine>> workers;
  for (int i = 0; i < n; ++i) {
    workers.push_back(std::make_unique<testing::Engine>(
        pipeline, env, dir.File("worker" + std::to_string(i) + ".log"), s.fleetflow));
  }
  auto fail = [&](const std::string& what) {
    std::string logs;
    for (int i = 0; i < n; ++i) {
      logs += "--- worker " + std::to_string(i) + " log tail:\n" +
              Tail(workers[i]->process().ReadLog()) + "\n";
    }
    return std::runtime_error("N=" + std::to_string(n) + ": " + what + "\n" + logs);
  };
  for (auto& w : workers) {
    if (!testing::WaitFor([&] { return w->Get("/readyz").has_value(); }, 60s, 100ms)) {
      throw fail("a worker did not become ready within 60 s");
    }
  }
  // Settled: all 16 partitions owned, each worker at least its share rounded down.
  std::vector<double> owned(n, 0);
  const bool settled = testing::WaitFor(
      [&] {
        double sum = 0;
        bool each = true;
        for (int i = 0; i < n; ++i) {
          const auto text = workers[i]->Get("/metrics");
          owned[i] = text ? testing::Scrape(*text, "fleetflow_partitions_owned") : -1;
          sum += owned[i];
          each = each && owned[i] >= kPartitions / n;
        }
        return each && sum == kPartitions;
      },
      90s, 250ms);
  if (!settled) {
    std::string counts;
    for (double o : owned) counts += " " + std::to_string(static_cast<int>(o));
    throw fail("the 16 partitions were not shared out within 90 s; owned:" + counts);
  }
  if (!testing::WaitFor(
          [&] { return pg.TryPsql("SELECT 1 FROM vehicle_telemetry LIMIT 0").has_value(); }, 30s,
          100ms)) {
    throw fail("the sink did not create vehicle_telemetry");
  }
  testing::CountWrites(pg);
  run.workers.resize(n);
  for (int i = 0; i < n; ++i) run.workers[i].partitions = owned[i];

  const pid_t nats_pid = FindNatsServerPid(nats.port());
  const pid_t pg_pid = FindPostgresPid(pg.port());
  if (nats_pid <= 0 || pg_pid <= 0) throw fail("cannot find the servers' pids");
  auto worker_cpu = [&] {
    std::vector<double> v;
    for (auto& w : workers) v.push_back(PidCpuSeconds(w->process().pid()));
    return v;
  };
  {
    std::vector<pid_t> pids;
    for (auto& w : workers) pids.push_back(w->process().pid());
    MeasureIdle(s, pids, nats_pid, run);
  }

  // The load.
  struct Snapshot {
    std::vector<double> workers, worker_kernel, worker_switches;
    double nats = 0, pg = 0, nats_switches = 0;
    std::pair<double, double> machine;
    SteadyClock::time_point at;
  };
  auto snapshot = [&] {
    Snapshot snap{worker_cpu(),
                  {},
                  {},
                  PidCpuSeconds(nats_pid),
                  TreeCpuSeconds(pg_pid),
                  TaskSwitches(nats_pid),
                  MachineJiffies(),
                  SteadyClock::now()};
    for (auto& w : workers) {
      snap.worker_kernel.push_back(PidSystemCpuSeconds(w->process().pid()));
      snap.worker_switches.push_back(TaskSwitches(w->process().pid()));
    }
    return snap;
  };
  const Snapshot start = snapshot();
  testing::Process sim(FleetSimArgv(s, nats.url()), dir.File("fleet-sim.log"));
  bool sim_done = false;
  double last_written = -1;
  Snapshot last_change = start;
  SteadyClock::time_point sim_end{};
  SteadyClock::time_point last_scrape{};
  std::optional<int> sim_status;
  while (true) {
    const auto poll_at = SteadyClock::now();
    if (!sim_done) {
      run.sim_cpu_s = std::max(run.sim_cpu_s, PidCpuSeconds(sim.pid()));
      sim_status = sim.Wait(0ms);
      if (sim_status) {
        sim_done = true;
        sim_end = SteadyClock::now();
        if (*sim_status != 0) throw fail("fleet-sim failed: " + sim.ReadLog());
        for (int i = 0; i < n; ++i) run.workers[i].tracked_end = -1;
      }
    }
    for (int i = 0; i < n; ++i) {
      auto& f = run.workers[i];
      f.rss_max = std::max(f.rss_max, 1024 * PidStatus(workers[i]->process().pid(), "VmRSS"));
    }
    // Reading /metrics costs each worker CPU that counts as its own: while fleet-sim publishes,
    // only every --load-poll-ms.
    if (!sim_done && poll_at - last_scrape < std::chrono::milliseconds(s.load_poll_ms)) {
      std::this_thread::sleep_until(poll_at + std::chrono::milliseconds(s.poll_ms));
      continue;
    }
    last_scrape = poll_at;
    double written = 0, emitted = 0;
    for (int i = 0; i < n; ++i) {
      auto& f = run.workers[i];
      const auto text = workers[i]->Get("/metrics");
      if (!text) continue;
      const double tracked = testing::Scrape(*text, "fleetflow_tracked_vehicles");
      f.tracked_max = std::max(f.tracked_max, tracked);
      if (sim_done && f.tracked_end < 0) f.tracked_end = tracked;
      written += std::max(0.0, testing::Scrape(*text, "fleetflow_sink_rows_written_total"));
      emitted += std::max(0.0, testing::Scrape(*text, "fleetflow_rows_emitted_total"));
    }
    if (written != last_written) {
      last_written = written;
      last_change = snapshot();
    }
    if (sim_done) {
      const double quiet = Seconds(SteadyClock::now() - last_change.at);
      if (quiet >= s.settle_s && written == emitted && written > 0) {
        run.settled = true;
        break;
      }
      if (Seconds(SteadyClock::now() - sim_end) > s.drain_timeout_s) break;
    } else if (Seconds(SteadyClock::now() - start.at) > s.seconds + 120) {
      throw fail("fleet-sim did not finish");
    }
    std::this_thread::sleep_until(poll_at + std::chrono::milliseconds(s.poll_ms));
  }
  const Snapshot& end = last_change;
  run.interval_s = Seconds(end.at - start.at);
  for (int i = 0; i < n; ++i) {
    run.workers[i].cpu_s = end.workers[i] - start.workers[i];
    run.worker_cpu_s += run.workers[i].cpu_s;
    run.worker_kernel_s += end.worker_kernel[i] - start.worker_kernel[i];
    run.workers[i].switches = end.worker_switches[i] - start.worker_switches[i];
    run.worker_switches += run.workers[i].switches;
  }
  run.nats_cpu_s = end.nats - start.nats;
  run.nats_switches = end.nats_switches - start.nats_switches;
  run.pg_cpu_s = end.pg - start.pg;
  run.machine_busy = (end.machine.first - start.machine.first) /
                     std::max(1.0, end.machine.second - start.machine.second);
  FleetSimSummary sum_line;
  if (!ParseFleetSimSummary(sim.ReadLog(), sum_line)) throw fail("no fleet-sim summary line");
  run.samples = sum_line.samples;
  run.sim_elapsed_s = sum_line.elapsed_s;
  for (int i = 0; i < n; ++i) {
    auto& f = run.workers[i];
    f.hwm = 1024 * PidStatus(workers[i]->process().pid(), "VmHWM");
    f.threads = PidStatus(workers[i]->process().pid(), "Threads");
    if (const auto text = workers[i]->Get("/metrics")) {
      f.late = std::max(0.0, testing::Scrape(*text, "fleetflow_late_samples_total"));
      f.accepted = std::max(0.0, testing::Scrape(*text, "fleetflow_samples_accepted_total"));
      run.rows_written_metric +=
          std::max(0.0, testing::Scrape(*text, "fleetflow_sink_rows_written_total"));
    }
    run.late += f.late;
    run.accepted += f.accepted;
  }
  const testing::WriteCount counted = testing::Writes(pg);
  run.writes = counted.writes;
  run.rows = counted.rows;
  run.most_writes_per_row = counted.most_per_row;

  // SIGTERM to all at once: they hand over and drain.
  for (auto& w : workers) w->process().Signal(SIGTERM);
  for (int i = 0; i < n; ++i) {
    auto status = workers[i]->process().Wait(60s);
    run.workers[i].exit_status = status ? *status : workers[i]->process().Stop(SIGKILL, 5s);
  }
  const testing::WriteCount after_stop = testing::Writes(pg);
  run.writes_after_stop = after_stop.writes;
  run.rows_after_stop = after_stop.rows;
  if (s.keep_logs) {
    const auto keep =
        std::filesystem::temp_directory_path() / ("ff-bench-scaleout-logs-N" + std::to_string(n));
    std::filesystem::create_directories(keep);
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
      if (e.path().extension() == ".log" || e.path().extension() == ".json") {
        std::filesystem::copy_file(e.path(), keep / e.path().filename(),
                                   std::filesystem::copy_options::overwrite_existing);
      }
    }
    std::printf("  logs of N=%d kept in %s\n", n, keep.c_str());
  }
  return run;
}

// --- The bare loop: what reading the same partitions costs without fleetflow ---

std::atomic<bool> g_bare_stop{false};
extern "C" void StopBareWorker(int) { g_bare_stop = true; }

/// A bare worker (this program run with --bare-worker URL P,P,...): the partitions' durable
/// consumers read as a fleetflow worker reads them (one nats::PullSet on one connection, the
/// same batch, expiry, linger and requests ahead), and acknowledged as it acknowledges them:
/// together, once per flush (kAckEvery). Nothing else is done with a message. Until SIGTERM.
int BareWorker(const std::string& url, const std::string& partitions) {
  std::signal(SIGTERM, StopBareWorker);
  nats::ConnectOptions o;
  o.url = url;
  o.name = "bench-bare-worker";
  auto conn = nats::Connection::Connect(o);
  nats::PullSet set(*conn, kStream);
  std::stringstream list(partitions);
  for (std::string p; std::getline(list, p, ',');) {
    set.Add(static_cast<uint32_t>(std::stoul(p)), std::string(kDurable) + "-" + p);
  }
  nats::PullSet::Fetched fetched;
  std::vector<nats::DeferredAck> held;
  auto given = SteadyClock::now();
  bool told = false;
  while (!g_bare_stop.load()) {
    try {
      set.Fetch(kFetchBatch, kFetchExpiryMs, true, fetched, kFetchLingerMs);
    } catch (const nats::Error& e) {
      std::fprintf(stderr, "%s (retrying in 50 ms)\n", e.what());
      std::this_thread::sleep_for(50ms);
      continue;
    }
    for (const auto& [id, m] : fetched.messages) held.push_back(m->AckLater());
    if (SteadyClock::now() - given >= kAckEvery) {
      for (const auto& ack : held) ack();
      held.clear();
      given = SteadyClock::now();
    }
    if (!told) {  // the first Fetch sent every consumer its request
      std::printf("%s %s\n", kBareReady, partitions.c_str());
      std::fflush(stdout);
      told = true;
    }
  }
  return 0;
}

/// The partitions bare worker `i` of `n` reads: p with p % n == i (comma-separated).
std::string BarePartitions(int i, int n) {
  std::string out;
  for (int p = i; p < kPartitions; p += n) out += (out.empty() ? "" : ",") + std::to_string(p);
  return out;
}

/// The same measurement as MeasureOne with N bare workers in place of fleetflow's: fresh
/// servers, the stream and its 16 consumers made by a fleetflow worker that is then stopped
/// (so both read the same consumers), the idle, fleet-sim's load, and CPU from its start to the
/// first poll that finds every consumer with nothing pending and nothing unacknowledged.
Run MeasureBare(const Settings& s, int n) {
  Run run;
  run.n = n;
  const RunServers setup(s);
  const testing::NatsServer& nats = setup.servers.nats;
  const testing::TempDir& dir = setup.servers.dir;
  {
    testing::Engine maker(setup.pipeline, setup.env, dir.File("setup.log"), s.fleetflow);
    const bool owned =
        maker.WaitReady(60s) &&
        testing::WaitFor([&] { return maker.Metric("fleetflow_partitions_owned") == kPartitions; },
                         90s, 250ms);
    if (!owned || maker.process().Stop(SIGTERM, 60s) != 0) {
      throw std::runtime_error("bare N=" + std::to_string(n) +
                               ": the fleetflow worker that makes the stream and its consumers "
                               "failed:\n" +
                               Tail(maker.process().ReadLog()));
    }
  }
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  std::vector<std::unique_ptr<testing::Process>> workers;
  for (int i = 0; i < n; ++i) {
    workers.push_back(std::make_unique<testing::Process>(
        std::vector<std::string>{self, kBareWorkerFlag, nats.url(), BarePartitions(i, n)},
        dir.File("bare" + std::to_string(i) + ".log")));
  }
  auto fail = [&](const std::string& what) {
    std::string logs;
    for (int i = 0; i < n; ++i) {
      logs += "--- bare worker " + std::to_string(i) + " log tail:\n" +
              Tail(workers[i]->ReadLog()) + "\n";
    }
    return std::runtime_error("bare N=" + std::to_string(n) + ": " + what + "\n" + logs);
  };
  for (auto& w : workers) {
    if (!testing::WaitFor([&] { return w->ReadLog().find(kBareReady) != std::string::npos; }, 30s,
                          50ms)) {
      throw fail("a bare worker did not start reading within 30 s");
    }
  }
  run.workers.resize(n);
  for (int i = 0; i < n; ++i) run.workers[i].partitions = (kPartitions - i + n - 1) / n;
  const pid_t nats_pid = FindNatsServerPid(nats.port());
  if (nats_pid <= 0) throw fail("cannot find nats-server's pid");
  std::vector<pid_t> pids;
  for (auto& w : workers) pids.push_back(w->pid());
  MeasureIdle(s, pids, nats_pid, run);

  nats::ConnectOptions admin_options;
  admin_options.url = nats.url();
  admin_options.name = "bench-admin";
  auto admin = nats::Connection::Connect(admin_options);
  nats::JetStream js(*admin);
  std::vector<double> cpu0;
  for (pid_t pid : pids) {
    cpu0.push_back(PidCpuSeconds(pid));
    run.worker_kernel_s -= PidSystemCpuSeconds(pid);
    run.worker_switches -= TaskSwitches(pid);
  }
  const double nats0 = PidCpuSeconds(nats_pid);
  const auto machine0 = MachineJiffies();
  const auto start = SteadyClock::now();
  testing::Process sim(FleetSimArgv(s, nats.url()), dir.File("fleet-sim.log"));
  std::optional<int> sim_status;
  SteadyClock::time_point sim_end{};
  while (true) {
    const auto poll_at = SteadyClock::now();
    for (int i = 0; i < n; ++i) {
      auto& f = run.workers[i];
      f.rss_max = std::max(f.rss_max, 1024 * PidStatus(pids[i], "VmRSS"));
    }
    if (!sim_status) {
      run.sim_cpu_s = std::max(run.sim_cpu_s, PidCpuSeconds(sim.pid()));
      sim_status = sim.Wait(0ms);
      if (sim_status && *sim_status != 0) throw fail("fleet-sim failed: " + sim.ReadLog());
      if (sim_status) sim_end = SteadyClock::now();
      if (!sim_status && Seconds(poll_at - start) > s.seconds + 120) {
        throw fail("fleet-sim did not finish");
      }
    } else {
      uint64_t left = 0;
      for (int p = 0; p < kPartitions; ++p) {
        const auto [pending, ack_pending] =
            js.ConsumerPending(kStream, std::string(kDurable) + "-" + std::to_string(p));
        left += pending + ack_pending;
      }
      if (left == 0) {
        run.settled = true;
        break;
      }
      if (Seconds(SteadyClock::now() - sim_end) > s.drain_timeout_s) break;
    }
    std::this_thread::sleep_until(poll_at + std::chrono::milliseconds(s.poll_ms));
  }
  run.interval_s = Seconds(SteadyClock::now() - start);
  for (int i = 0; i < n; ++i) {
    run.workers[i].cpu_s = PidCpuSeconds(pids[i]) - cpu0[i];
    run.worker_cpu_s += run.workers[i].cpu_s;
    run.worker_kernel_s += PidSystemCpuSeconds(pids[i]);
    run.worker_switches += TaskSwitches(pids[i]);
  }
  run.nats_cpu_s = PidCpuSeconds(nats_pid) - nats0;
  const auto machine1 = MachineJiffies();
  run.machine_busy =
      (machine1.first - machine0.first) / std::max(1.0, machine1.second - machine0.second);
  FleetSimSummary sum_line;
  if (!ParseFleetSimSummary(sim.ReadLog(), sum_line)) throw fail("no fleet-sim summary line");
  run.samples = sum_line.samples;
  run.sim_elapsed_s = sum_line.elapsed_s;
  for (int i = 0; i < n; ++i) {
    run.workers[i].exit_status = workers[i]->Stop(SIGTERM, 30s);
    if (run.workers[i].exit_status != 0) throw fail("a bare worker did not exit 0 on SIGTERM");
  }
  return run;
}

std::string Verdict(bool met) { return met ? "met" : "NOT met"; }

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "Scale-out by partition: N fleetflow workers (pipelines/jetstream.json, 16 partitions) "
      "on the same fleet-sim load, real nats-server and PostgreSQL; CPU per sample of the "
      "workers, nats-server and PostgreSQL, writes per row, late samples, tracked vehicles and "
      "RSS per worker, with ratios against N = 1 of the same run"};
  app.add_option("--repeats", s.repeats,
                 "Rounds over the worker counts (1, 2, .., 1, 2, ..); the table shows, per N, the "
                 "round with the median worker CPU per sample")
      ->check(CLI::Range(1, 9));
  app.add_option("--workers", s.workers, "Worker counts, one independent run each")
      ->delimiter(',')
      ->check(CLI::Range(1, kPartitions))
      ->capture_default_str();
  app.add_option("--vehicles", s.vehicles, "Vehicles fleet-sim simulates")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  app.add_option("--seconds", s.seconds, "Seconds fleet-sim publishes in real time")
      ->check(CLI::Range(1.0, 3600.0))
      ->capture_default_str();
  app.add_option("--seed", s.seed, "fleet-sim's seed")->capture_default_str();
  app.add_option("--rates", s.rates, "fleet-sim --rates (default: fleet-sim's own)");
  app.add_option("--idle-s", s.idle_s, "Seconds the settled workers idle before the load")
      ->check(CLI::Range(0.0, 600.0))
      ->capture_default_str();
  app.add_option("--settle-s", s.settle_s,
                 "After fleet-sim: rows written unchanged this long = the last row is in")
      ->check(CLI::Range(1.0, 600.0))
      ->capture_default_str();
  app.add_option("--poll-ms", s.poll_ms,
                 "RSS sampling interval, and the workers' metrics once fleet-sim is done (the "
                 "last row)")
      ->check(CLI::Range(50, 10'000))
      ->capture_default_str();
  app.add_option("--load-poll-ms", s.load_poll_ms,
                 "While fleet-sim publishes, the workers' metrics (tracked vehicles) this often: "
                 "each read costs a worker about 0.3 ms of CPU, counted as its own")
      ->check(CLI::Range(50, 60'000))
      ->capture_default_str();
  app.add_option("--drain-timeout", s.drain_timeout_s,
                 "Seconds after fleet-sim to wait for the last row at most")
      ->capture_default_str();
  app.add_option("--pipeline", s.pipeline, "Pipeline the workers run (timescaledb set to off)")
      ->capture_default_str();
  app.add_option("--fleetflow", s.fleetflow, "Path of fleetflow (default: this build's)");
  app.add_option("--fleet-sim", s.fleet_sim, "Path of fleet-sim (default: this build's)");
  AddOutputOptions(app, s.out);
  app.add_flag("!--no-baseline", s.baseline,
               "Skip the bare loop: by default each N also runs, before fleetflow's workers, N "
               "bare workers (this program with --bare-worker) that read the same 16 consumers "
               "as a fleetflow worker reads them (nats::PullSet, the same batch, expiry, linger "
               "and requests ahead) and acknowledge them together once a second, as a flush "
               "does, nothing else; fresh servers, the same load, CPU until every consumer is "
               "drained");
  app.add_flag("--keep-logs", s.keep_logs,
               "Copy the workers' logs to /tmp/ff-bench-scaleout-logs-N*");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  std::sort(s.workers.begin(), s.workers.end());
  s.workers.erase(std::unique(s.workers.begin(), s.workers.end()), s.workers.end());
  if (s.fleetflow.empty()) s.fleetflow = BuildTreeProgram("apps/fleetflow");
  if (s.fleet_sim.empty()) s.fleet_sim = BuildTreeProgram("firmware/fleet-sim");
  if (s.fleetflow.empty() || s.fleet_sim.empty() || !testing::NatsServer::Available() ||
      !testing::PostgresServer::Available()) {
    std::cerr << "needs fleetflow and fleet-sim (this build), nats-server and PostgreSQL "
                 "(scripts/deps.sh)\n";
    return 1;
  }

  std::printf(
      "scale-out by partition: %d vehicles, fleet-sim %.0f s in real time (seed %llu%s%s), "
      "workers %s; %s with timescale_sink \"timescaledb\": \"off\" (the plain PostgreSQL "
      "path); %d partitions; %ld cores shared by the workers, nats-server, PostgreSQL and "
      "fleet-sim, load average %s\n",
      s.vehicles, s.seconds, static_cast<unsigned long long>(s.seed),
      s.rates.empty() ? "" : ", rates ", s.rates.c_str(),
      [&] {
        std::string t;
        for (int n : s.workers) t += (t.empty() ? "" : ",") + std::to_string(n);
        return t;
      }()
          .c_str(),
      std::filesystem::path(s.pipeline).filename().c_str(), kPartitions,
      sysconf(_SC_NPROCESSORS_ONLN), testing::ReadFile("/proc/loadavg").substr(0, 14).c_str());
  std::fflush(stdout);

  std::map<int, std::vector<Run>> rounds, bare_rounds;  // by N
  for (int round = 0; round < s.repeats; ++round) {
    for (int n : s.workers) {
      if (s.baseline) {
        std::printf("== bare loop, N = %d, round %d ...\n", n, round + 1);
        std::fflush(stdout);
        bare_rounds[n].push_back(MeasureBare(s, n));
        const Run& b = bare_rounds[n].back();
        std::printf(
            "  %lld samples, measured %.1f s%s; machine busy %.0f%%; idle: bare workers %.3f CPU "
            "s/s, nats-server %.3f; context switches per 1000 samples %.0f; bare workers' CPU "
            "%.2f us per sample, of it in the kernel %.2f; nats-server %.2f\n",
            static_cast<long long>(b.samples), b.interval_s,
            b.settled ? "" : " (consumers NOT drained)", 100 * b.machine_busy,
            b.idle_worker_cpu_per_s, b.idle_nats_cpu_per_s, b.WorkerSwitchesPer1000(), b.WorkerUs(),
            b.WorkerKernelUs(), b.NatsUs());
      }
      std::printf("== N = %d, round %d ...\n", n, round + 1);
      std::fflush(stdout);
      rounds[n].push_back(MeasureOne(s, n));
      const Run& r = rounds[n].back();
      std::printf(
          "  %lld samples in %.1f s (fleet-sim %.0f samples/s, its CPU %.1f s), measured %.1f s%s; "
          "machine busy %.0f%%; idle before the load: workers %.3f CPU s/s, nats-server %.3f; "
          "context "
          "switches per 1000 samples: workers %.0f, nats-server %.0f; workers' CPU %.2f us per "
          "sample, of it in the kernel %.2f (%.0f%%)\n",
          static_cast<long long>(r.samples), r.sim_elapsed_s, r.samples / r.sim_elapsed_s,
          r.sim_cpu_s, r.interval_s, r.settled ? "" : " (rows did NOT settle)",
          100 * r.machine_busy, r.idle_worker_cpu_per_s, r.idle_nats_cpu_per_s,
          r.WorkerSwitchesPer1000(), r.NatsSwitchesPer1000(), r.WorkerUs(), r.WorkerKernelUs(),
          r.worker_cpu_s > 0 ? 100 * r.worker_kernel_s / r.worker_cpu_s : 0.0);
      for (size_t i = 0; i < r.workers.size(); ++i) {
        const auto& w = r.workers[i];
        std::printf(
            "  worker %zu: %2.0f partitions, tracked max %.0f (at fleet-sim's end %.0f), CPU %.2f "
            "s, "
            "RSS max %.1f MiB, VmHWM %.1f MiB, %llu threads, late %.0f, accepted %.0f, exit %d\n",
            i, w.partitions, w.tracked_max, w.tracked_end, w.cpu_s, MiB(w.rss_max), MiB(w.hwm),
            static_cast<unsigned long long>(w.threads), w.late, w.accepted, w.exit_status);
      }
      std::printf(
          "  rows %llu, writes %llu (most per row %llu), after SIGTERM %llu writes of %llu rows; "
          "sink rows written %.0f; samples accepted %.0f of %lld sent\n",
          static_cast<unsigned long long>(r.rows), static_cast<unsigned long long>(r.writes),
          static_cast<unsigned long long>(r.most_writes_per_row),
          static_cast<unsigned long long>(r.writes_after_stop),
          static_cast<unsigned long long>(r.rows_after_stop), r.rows_written_metric, r.accepted,
          static_cast<long long>(r.samples));
      std::fflush(stdout);
    }
  }
  // Per round, the largest N against the smallest, run minutes apart: the host's load drifts
  // less within a round than across the run.
  auto pair_up = [&](std::map<int, std::vector<Run>>& by_n) {
    std::vector<double> paired;
    if (s.workers.size() > 1) {
      const auto& lo = by_n[s.workers.front()];
      const auto& hi = by_n[s.workers.back()];
      for (size_t i = 0; i < lo.size() && i < hi.size(); ++i) {
        if (lo[i].WorkerUs() > 0) paired.push_back(hi[i].WorkerUs() / lo[i].WorkerUs());
      }
      std::sort(paired.begin(), paired.end());
    }
    return paired;
  };
  const std::vector<double> paired = pair_up(rounds), bare_paired = pair_up(bare_rounds);
  // Per N, the round with the median worker CPU per sample (the machine is shared: one round
  // can be slowed by anything else that runs).
  auto medians = [&](std::map<int, std::vector<Run>>& by_n, const char* who) {
    std::vector<Run> out;
    for (int n : s.workers) {
      std::vector<Run>& all = by_n[n];
      if (all.empty()) continue;
      std::sort(all.begin(), all.end(),
                [](const Run& a, const Run& b) { return a.WorkerUs() < b.WorkerUs(); });
      if (s.repeats > 1) {
        std::printf("N = %d: %s us/sample per round:", n, who);
        for (const Run& r : all) std::printf(" %.2f", r.WorkerUs());
        std::printf(" (median %.2f)\n", all[all.size() / 2].WorkerUs());
      }
      out.push_back(all[all.size() / 2]);
    }
    return out;
  };
  const std::vector<Run> runs = medians(rounds, "worker");
  const std::vector<Run> bare = medians(bare_rounds, "bare worker");
  auto bare_of = [&](int n) -> const Run* {
    for (const Run& b : bare) {
      if (b.n == n) return &b;
    }
    return nullptr;
  };

  // Ratios against N = 1 of this run (the smallest N when 1 was not run).
  const Run& base = runs.front();
  const Run& top = runs.back();
  if (base.n != 1) std::printf("NOTE: no N = 1 in this run; ratios are against N = %d\n", base.n);
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0; };
  std::printf("\n%2s %9s %8s %8s %6s %8s %6s %8s %6s %8s %10s %5s %13s %8s %13s\n", "N", "samples",
              "wrk CPU", "wrk us/s", "ratio", "nats us", "ratio", "pg us", "ratio", "rows",
              "writes/row", "late", "tracked", "vs f/N", "RSS MiB");
  std::printf("%2s %9s %8s %8s %6s %8s %6s %8s %6s %8s %10s %5s %13s %8s %13s\n", "", "", "s",
              "sample", "vs N1", "/sample", "vs N1", "/sample", "vs N1", "", "(after stop)", "",
              "min-max", "worst", "min-max");
  Csv csv(s.out.csv, {"scale",
                      "workers",
                      "vehicles",
                      "seconds",
                      "samples",
                      "worker_cpu_s",
                      "worker_us_per_sample",
                      "worker_ratio",
                      "nats_cpu_s",
                      "nats_us_per_sample",
                      "nats_ratio",
                      "pg_cpu_s",
                      "pg_us_per_sample",
                      "pg_ratio",
                      "rows",
                      "writes",
                      "writes_per_row",
                      "writes_after_stop",
                      "writes_per_row_after_stop",
                      "late_samples",
                      "tracked_min",
                      "tracked_max",
                      "tracked_worst_deviation",
                      "rss_min_mib",
                      "rss_max_mib",
                      "rss_mean_mib",
                      "hwm_max_mib",
                      "idle_worker_cpu_per_s",
                      "worker_switches_per_1000",
                      "nats_switches_per_1000",
                      "idle_nats_cpu_per_s",
                      "machine_busy",
                      "settled",
                      "worker_kernel_us_per_sample",
                      "bare_worker_us_per_sample",
                      "bare_worker_kernel_us_per_sample",
                      "bare_worker_ratio",
                      "bare_nats_us_per_sample"});
  const Run* bare_base = bare_of(base.n);
  for (const Run& r : runs) {
    const Run* b = bare_of(r.n);
    double tmin = 1e18, tmax = 0, rmin = 1e18, rmax = 0, hmax = 0;
    for (const auto& w : r.workers) {
      tmin = std::min(tmin, w.tracked_max);
      tmax = std::max(tmax, w.tracked_max);
      rmin = std::min(rmin, MiB(w.rss_max));
      rmax = std::max(rmax, MiB(w.rss_max));
      hmax = std::max(hmax, MiB(w.hwm));
    }
    char tracked[32], rss[32], wpr[32];
    std::snprintf(tracked, sizeof tracked, "%.0f-%.0f", tmin, tmax);
    std::snprintf(rss, sizeof rss, "%.1f-%.1f", rmin, rmax);
    std::snprintf(wpr, sizeof wpr, "%.3f (%.3f)", r.WritesPerRow(), r.WritesPerRowAfterStop());
    std::printf(
        "%2d %9lld %8.2f %8.2f %6.2f %8.2f %6.2f %8.2f %6.2f %8llu %12s %5.0f %13s %7.0f%% %13s\n",
        r.n, static_cast<long long>(r.samples), r.worker_cpu_s, r.WorkerUs(),
        ratio(r.WorkerUs(), base.WorkerUs()), r.NatsUs(), ratio(r.NatsUs(), base.NatsUs()),
        r.PgUs(), ratio(r.PgUs(), base.PgUs()), static_cast<unsigned long long>(r.rows), wpr,
        r.late, tracked, 100 * r.TrackedDeviation(s.vehicles), rss);
    csv.Row(s.out.scale, r.n, s.vehicles, s.seconds, r.samples, r.worker_cpu_s, r.WorkerUs(),
            ratio(r.WorkerUs(), base.WorkerUs()), r.nats_cpu_s, r.NatsUs(),
            ratio(r.NatsUs(), base.NatsUs()), r.pg_cpu_s, r.PgUs(), ratio(r.PgUs(), base.PgUs()),
            r.rows, r.writes, r.WritesPerRow(), r.writes_after_stop, r.WritesPerRowAfterStop(),
            r.late, tmin, tmax, r.TrackedDeviation(s.vehicles), rmin, rmax, r.MeanRssMiB(), hmax,
            r.idle_worker_cpu_per_s, r.WorkerSwitchesPer1000(), r.NatsSwitchesPer1000(),
            r.idle_nats_cpu_per_s, r.machine_busy, r.settled ? 1 : 0, r.WorkerKernelUs(),
            b ? b->WorkerUs() : 0, b ? b->WorkerKernelUs() : 0,
            b && bare_base ? ratio(b->WorkerUs(), bare_base->WorkerUs()) : 0, b ? b->NatsUs() : 0);
  }
  std::printf(
      "(us = microseconds of CPU; per 1000 samples multiply by 1000 and read ms: e.g. %.2f us "
      "per sample = %.2f ms per 1000 samples)\n",
      base.WorkerUs(), base.WorkerUs());
  if (!bare.empty()) {
    std::printf(
        "\nThe bare loop (fetch, acks once a second; same consumers, batch, linger and load; "
        "fresh servers):\n"
        "%2s %8s %6s %9s %8s %6s %9s %10s\n",
        "N", "us/smpl", "vs N1", "kernel us", "nats us", "vs N1", "fleetflow", "ff - bare");
    for (const Run& b : bare) {
      const auto r =
          std::find_if(runs.begin(), runs.end(), [&](const Run& x) { return x.n == b.n; });
      const double ff = r != runs.end() ? r->WorkerUs() : 0;
      std::printf("%2d %8.2f %6.2f %9.2f %8.2f %6.2f %9.2f %10.2f%s\n", b.n, b.WorkerUs(),
                  ratio(b.WorkerUs(), bare.front().WorkerUs()), b.WorkerKernelUs(), b.NatsUs(),
                  ratio(b.NatsUs(), bare.front().NatsUs()), ff, ff - b.WorkerUs(),
                  b.settled ? "" : "  (consumers NOT drained)");
    }
  }

  // Goals.
  const double worker_ratio = ratio(top.WorkerUs(), base.WorkerUs());
  const double nats_ratio = ratio(top.NatsUs(), base.NatsUs());
  double worst_wpr = 0, worst_dev = 0;
  bool all_settled = true, rss_falls = runs.size() > 1;
  for (size_t i = 0; i < runs.size(); ++i) {
    worst_wpr = std::max({worst_wpr, runs[i].WritesPerRow(), runs[i].WritesPerRowAfterStop()});
    worst_dev = std::max(worst_dev, runs[i].TrackedDeviation(s.vehicles));
    all_settled = all_settled && runs[i].settled;
    if (i > 0 && runs[i].MeanRssMiB() >= runs[i - 1].MeanRssMiB()) rss_falls = false;
  }
  const bool g_worker = worker_ratio > 0 && worker_ratio <= 1.2;
  const bool g_nats = nats_ratio > 0 && nats_ratio <= 1.2;
  const bool g_wpr = worst_wpr > 0 && worst_wpr <= 1.02 && all_settled;
  const bool g_share = worst_dev <= 0.2;
  std::printf("\nGoals (N = %d against N = %d of this run):\n", top.n, base.n);
  std::printf("  workers' CPU per sample within 1.2x: %.2f us vs %.2f us = %.2fx -> %s\n",
              top.WorkerUs(), base.WorkerUs(), worker_ratio, Verdict(g_worker).c_str());
  if (paired.size() > 1) {
    std::printf("    (the same within each round:");
    for (double r : paired) std::printf(" %.2f", r);
    std::printf("; median %.2fx)\n", paired[paired.size() / 2]);
  }
  const Run* bare_top = bare_of(top.n);
  if (bare_base && bare_top) {
    const double ff_beyond_base = base.WorkerUs() - bare_base->WorkerUs();
    const double ff_beyond_top = top.WorkerUs() - bare_top->WorkerUs();
    std::printf(
        "    (the bare loop, same run: %.2f us vs %.2f us = %.2fx; N = %d adds %.2f us per sample "
        "to fleetflow's workers and %.2f to the bare loop's; fleetflow beyond the bare loop: "
        "%.2f us vs %.2f us = %.2fx)\n",
        bare_top->WorkerUs(), bare_base->WorkerUs(),
        ratio(bare_top->WorkerUs(), bare_base->WorkerUs()), top.n, top.WorkerUs() - base.WorkerUs(),
        bare_top->WorkerUs() - bare_base->WorkerUs(), ff_beyond_top, ff_beyond_base,
        ratio(ff_beyond_top, ff_beyond_base));
    if (bare_paired.size() > 1) {
      std::printf("    (the bare loop within each round:");
      for (double r : bare_paired) std::printf(" %.2f", r);
      std::printf("; median %.2fx)\n", bare_paired[bare_paired.size() / 2]);
    }
  }
  std::printf("  nats-server CPU per sample within 1.2x: %.2f us vs %.2f us = %.2fx -> %s\n",
              top.NatsUs(), base.NatsUs(), nats_ratio, Verdict(g_nats).c_str());
  std::printf(
      "  writes per row at most 1.02 (every N, before and after SIGTERM): worst %.3f%s -> %s\n",
      worst_wpr, all_settled ? "" : " (a run did not settle)", Verdict(g_wpr).c_str());
  std::printf("  each worker tracks fleet/N within 20%%: worst deviation %.1f%% -> %s\n",
              100 * worst_dev, Verdict(g_share).c_str());
  std::printf("  RSS per worker falls as N grows (mean of the workers' max VmRSS):");
  for (const Run& r : runs) std::printf(" N=%d %.1f MiB", r.n, r.MeanRssMiB());
  std::printf(" -> %s\n", Verdict(rss_falls).c_str());
  std::printf("  (PostgreSQL CPU per sample, no goal: %.2f us vs %.2f us = %.2fx)\n", top.PgUs(),
              base.PgUs(), ratio(top.PgUs(), base.PgUs()));
  std::printf(
      "  (workers' CPU per sample in user space, no goal: %.2f us vs %.2f us = %.2fx; in the "
      "kernel: %.2f us vs %.2f us = %.2fx)\n",
      top.WorkerUs() - top.WorkerKernelUs(), base.WorkerUs() - base.WorkerKernelUs(),
      ratio(top.WorkerUs() - top.WorkerKernelUs(), base.WorkerUs() - base.WorkerKernelUs()),
      top.WorkerKernelUs(), base.WorkerKernelUs(),
      ratio(top.WorkerKernelUs(), base.WorkerKernelUs()));

  const std::string nn = "N=" + std::to_string(top.n) + " vs N=" + std::to_string(base.n);
  const std::string load = std::to_string(s.vehicles) + " vehicles, " +
                           std::to_string(static_cast<int>(s.seconds)) + " s";
  AppendSummary(s.out.summary,
                {"scaleout", "worker us/sample " + nn, top.WorkerUs(), base.WorkerUs(), "<= 120%",
                 g_worker ? "yes" : "no", "sum of the workers' CPU per sample sent; " + load});
  AppendSummary(s.out.summary,
                {"scaleout", "nats-server us/sample " + nn, top.NatsUs(), base.NatsUs(), "<= 120%",
                 g_nats ? "yes" : "no", "nats-server CPU per sample sent; " + load});
  if (bare_base && bare_top) {
    AppendSummary(
        s.out.summary,
        {"scaleout", "bare loop us/sample " + nn, bare_top->WorkerUs(), bare_base->WorkerUs(), "",
         "", "bare fetch+ack workers on the same consumers and load (no goal); " + load});
  }
  AppendSummary(s.out.summary, {"scaleout", "writes/row (worst N)", worst_wpr, 0, "<= 1.02",
                                g_wpr ? "yes" : "no", "trigger-counted writes per distinct row"});
  AppendSummary(s.out.summary, {"scaleout", "tracked vs fleet/N (worst %)", 100 * worst_dev, 0,
                                "<= 20%", g_share ? "yes" : "no",
                                "largest deviation of a worker's tracked vehicles from fleet/N"});
  AppendSummary(s.out.summary, {"scaleout", "RSS/worker MiB N=" + std::to_string(top.n),
                                top.MeanRssMiB(), base.MeanRssMiB(), "falls",
                                rss_falls ? "yes" : "no", "mean of the workers' max VmRSS"});
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  using namespace fleetflow::bench;
  if (argc == 4 && std::string(argv[1]) == kBareWorkerFlag) {
    return RunMain(
        "ff-bench-scaleout --bare-worker", [](int, char** a) { return BareWorker(a[2], a[3]); },
        argc, argv);
  }
  return RunMain("ff-bench-scaleout", Main, argc, argv);
}

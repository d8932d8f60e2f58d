// Soak (issue #40): the simulated fleet for --duration (20 minutes by default) on a cluster as
// production runs it, under a scripted chaos schedule, then the rows compared with an
// independent computation and the writes per row counted.
//
// The servers, all on 127.0.0.1 free ports in temporary directories: three nats-servers 2.10
// routed to each other (NatsCluster, vehicle subjects mapped to 16 partitions), the stream and
// every bucket with 3 replicas (pipelines/jetstream.json with stream_replicas and bucket_replicas
// 3); a PostgreSQL primary with a synchronous standby (PostgresPair), the workers' sink naming
// both (target_session_attrs=read-write). Two workers `fleetflow run` that pipeline; --vehicles
// fleet-sensor processes (fixed seed) with --ack jetstream: each keeps what the stream has not
// acknowledged and sends it again, so no sample is lost across a node kill. Of them,
// --edge-vehicles (depot0, depot1, ...) publish to an edge leaf node instead (docs/deploy.md,
// "Edge leaf nodes": nats-server 2.10 in the JetStream domain depot1, its stream EDGE sourced by
// TELEMETRY, the pipeline's edge_domains), a leaf of the hub through a TcpProxy to whichever
// node accepts (a leaf's remote lists every hub node in production), which the leaf link step
// cuts.
//
// The chaos schedule (kSchedule below) is a table of (time, action) for 20 minutes; a shorter
// --duration scales its times. Each step is printed with its time as it starts and ends. A step
// that runs past the next one's time delays it (printed). At the end: the sensors' end, the
// rows settled (every expected row in PostgreSQL, at most --settle-s), the workers stopped with
// SIGTERM; then the rows compared exactly with ComputeExpectedRows of the samples the stream
// holds (fleet_check.hpp), the writes per row counted by a trigger installed before the load
// (rows written more than once attributed to the step before their second write), the samples
// taken / acknowledged / in the stream, late samples and redeliveries and the workers' CPU per
// message (the workers' /metrics and /proc, read every 5 s and right before a worker is killed
// or stopped: a killed worker's last seconds are not counted). A markdown summary table closes
// the output.
//
// Exit status: 0 when every row is exact and no row was written twice and every step ran; 1
// otherwise (the table says what). On failure the temporary directory (server, worker and
// sensor logs) is kept and its path printed; FF_KEEP_TEST_DIRS=1 keeps it always.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "message.hpp"
#include "nats_client.hpp"
#include "servers.hpp"
#include "tcp_proxy.hpp"

namespace fleetflow::bench {
namespace {

using namespace std::chrono_literals;
using testing::Engine;
using testing::NatsCluster;
using testing::PostgresPair;
using testing::PostgresServer;
using testing::WaitFor;

constexpr int kPartitions = 16;
const char* const kStreams[] = {"TELEMETRY", "KV_telemetry", "KV_fleetflow_members",
                                "KV_fleetflow_handover"};

enum class Action {
  kKillWorker,        // kill -9 the oldest worker, start a new one
  kAddWorker,         // start one more worker
  kStopWorker,        // SIGTERM the oldest worker (it hands its partitions over)
  kKillStreamLeader,  // kill -9 the node leading TELEMETRY, start it again
  kKillStateLeader,   // kill -9 the node leading KV_telemetry, start it again
  kRollingRestart,    // each node in turn: SIGTERM, started again once the others are current
  kPgFailover,        // kill -9 the PostgreSQL primary, promote the standby, rebuild a standby
  kLeafLinkCut,       // cut the edge leaf node's link to the hub for 60 s
};

struct Step {
  int at_s;  // seconds after the sensors started, in a 20-minute run
  Action action;
  const char* what;
};

// The chaos schedule of a 20-minute run (--duration scales the times).
constexpr int kScheduleLengthS = 1200;
constexpr Step kSchedule[] = {
    {60, Action::kKillWorker, "kill -9 a worker, start a new one"},
    {150, Action::kAddWorker, "add a third worker"},
    {240, Action::kKillStreamLeader, "kill -9 the stream's leader node, restart it"},
    {360, Action::kPgFailover, "PostgreSQL: kill -9 the primary, promote the standby"},
    {450, Action::kStopWorker, "SIGTERM a worker"},
    {540, Action::kKillStateLeader, "kill -9 the state bucket's leader node, restart it"},
    {630, Action::kLeafLinkCut, "cut the edge leaf node's link to the hub (60 s), restore it"},
    {690, Action::kRollingRestart, "rolling restart of the 3 nodes"},
    {840, Action::kKillWorker, "kill -9 a worker, start a new one"},
    {930, Action::kPgFailover, "PostgreSQL: kill -9 the primary, promote the standby (2nd)"},
    {1020, Action::kAddWorker, "add a third worker"},
};

constexpr const char* kEdgeDomain = "depot1";

struct Settings {
  int vehicles = 20;
  int edge_vehicles = 4;  // of `vehicles`, publishing to the edge leaf node
  std::string duration = "20m";
  double settle_s = 300;
  double quiet_s = 30;
  int workers = 2;
  std::string fleetflow;
  std::string pipeline = testing::SourceDir() + "/pipelines/jetstream.json";
  std::string markdown;  // the summary table also written here
};

/// "20m", "3m", "90s", "1h" or seconds.
double ParseDuration(const std::string& text) {
  size_t used = 0;
  const double v = std::stod(text, &used);
  const std::string unit = text.substr(used);
  if (unit.empty() || unit == "s") return v;
  if (unit == "m" || unit == "min") return v * 60;
  if (unit == "h") return v * 3600;
  throw std::runtime_error("--duration: unknown unit in '" + text + "' (s, m or h)");
}

/// What a worker's /metrics and /proc said when last read.
struct Scraped {
  double messages = 0, samples = 0, late = 0, redelivered = 0, recovered = 0, assigned = 0,
         rows_written = 0, sink_retries = 0, partitions = 0, cpu_s = 0;
};

struct Worker {
  int id = 0;
  std::unique_ptr<Engine> engine;
  bool alive = true;
  std::string fate = "ran to the end";
  Scraped last;
};

std::string Clock() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S", std::localtime(&t));
  return buf;
}

class Soak {
 public:
  explicit Soak(const Settings& s)
      : s_(s), duration_s_(ParseDuration(s.duration)), dir_("fleetflow-soak") {}

  int Run();

 private:
  double Elapsed() const { return Seconds(SteadyClock::now() - t0_); }
  /// Prints "[+mm:ss] HH:MM:SS <text>".
  void Say(const std::string& text) const {
    const double e = started_ ? Elapsed() : 0;
    std::printf("[+%02d:%04.1f] %s %s\n", static_cast<int>(e) / 60,
                e - 60 * (static_cast<int>(e) / 60), Clock().c_str(), text.c_str());
    std::fflush(stdout);
  }

  Worker& StartWorker();
  std::vector<Worker*> Alive();
  void ScrapeAll();
  void Scrape(Worker& w);
  double SumAlive(double Scraped::*field);
  void WaitUntil(double at_s);
  bool RowsGrow(int by, std::chrono::seconds deadline);
  void WaitCurrent();

  void RunStep(const Step& step);
  void KillWorker();
  void AddWorker();
  void StopWorker();
  void KillLeader(const std::string& stream);
  void RollingRestart();
  void PgFailover();
  void CutLeafLink();
  bool EdgesCaughtUp();
  std::string StepNear(int64_t window_ns) const;
  void ShowRows(const char* kind, const std::vector<std::pair<std::string, int64_t>>& rows,
                std::map<std::string, int64_t>& by_step) const;

  Settings s_;
  double duration_s_;
  testing::TempDir dir_;
  NatsCluster cluster_;
  std::unique_ptr<testing::TcpProxy> link_;  // the edge leaf node's link to the hub
  testing::NatsServer edge_;
  PostgresPair pg_;
  std::string pipeline_;
  std::vector<std::unique_ptr<Worker>> workers_;
  SteadyClock::time_point t0_;
  int64_t t0_ns_ = 0;  // t0_ on the wall clock (the rows' time)
  bool started_ = false;
  bool rejoined_ = true;  // a standby to fail over to
  int failovers_ = 0;
  std::vector<std::pair<double, std::string>> step_times_;  // start (s after t0), what
  std::vector<std::string> step_failures_;
  std::vector<std::string> skipped_;
  double last_scrape_ = -1e9;  // when the workers were last read (Elapsed())
  double last_status_ = 0;     // when the last status line was printed
};

Worker& Soak::StartWorker() {
  auto w = std::make_unique<Worker>();
  w->id = static_cast<int>(workers_.size());
  std::map<std::string, std::string> env = {{"NATS_URL", cluster_.url()},
                                            {"FLEETFLOW_PG", pg_.conninfo()}};
  w->engine = std::make_unique<Engine>(
      pipeline_, env, dir_.File("worker" + std::to_string(w->id) + ".log"), s_.fleetflow);
  workers_.push_back(std::move(w));
  return *workers_.back();
}

std::vector<Worker*> Soak::Alive() {
  std::vector<Worker*> out;
  for (auto& w : workers_) {
    if (w->alive) out.push_back(w.get());
  }
  return out;
}

void Soak::Scrape(Worker& w) {
  const double cpu = PidCpuSeconds(w.engine->process().pid());
  if (cpu > 0) w.last.cpu_s = cpu;
  const auto body = w.engine->Get("/metrics");
  if (!body) return;
  const auto get = [&](const char* name, double& into) {
    const double v = testing::Scrape(*body, name);
    if (v >= 0) into = v;
  };
  get("fleetflow_messages_in_total", w.last.messages);
  get("fleetflow_samples_in_total", w.last.samples);
  get("fleetflow_late_samples_total", w.last.late);
  get("fleetflow_messages_redelivered_total", w.last.redelivered);
  get("fleetflow_partitions_recovered_total", w.last.recovered);
  get("fleetflow_partitions_assigned_total", w.last.assigned);
  get("fleetflow_sink_rows_written_total", w.last.rows_written);
  get("fleetflow_sink_retries_total", w.last.sink_retries);
  get("fleetflow_partitions_owned", w.last.partitions);
}

void Soak::ScrapeAll() {
  for (Worker* w : Alive()) Scrape(*w);
  last_scrape_ = Elapsed();
}

double Soak::SumAlive(double Scraped::*field) {
  double sum = 0;
  for (Worker* w : Alive()) sum += w->last.*field;
  return sum;
}

/// Until `at_s` after t0: reads the workers every 5 s, prints a status line every minute.
void Soak::WaitUntil(double at_s) {
  while (Elapsed() < at_s) {
    if (Elapsed() - last_scrape_ >= 5) {
      ScrapeAll();
      if (Elapsed() - last_status_ >= 60) {
        last_status_ = Elapsed();
        std::string ids;
        for (Worker* w : Alive()) ids += (ids.empty() ? "w" : ", w") + std::to_string(w->id);
        char line[256];
        std::snprintf(line, sizeof line,
                      "status: %d rows; workers %s (%.0f partitions owned); %.0f late, %.0f "
                      "redelivered",
                      testing::Rows(pg_.primary()), ids.c_str(), SumAlive(&Scraped::partitions),
                      SumAlive(&Scraped::late), SumAlive(&Scraped::redelivered));
        Say(line);
      }
    }
    const double left = at_s - Elapsed();
    std::this_thread::sleep_for(std::chrono::duration<double>(std::clamp(left, 0.0, 1.0)));
  }
}

/// Whether vehicle_telemetry gains `by` rows within `deadline` (rows go on while a node is down);
/// true too once the vehicles have ended (a short run whose steps ran late: no rows to expect).
bool Soak::RowsGrow(int by, std::chrono::seconds deadline) {
  const int rows = testing::Rows(pg_.primary());
  const bool grew =
      WaitFor([&] { return testing::Rows(pg_.primary()) >= rows + by || Elapsed() >= duration_s_; },
              deadline, 200ms);
  if (grew && testing::Rows(pg_.primary()) < rows + by) {
    Say("  the vehicles have ended: no more rows to wait for");
  }
  return grew;
}

void Soak::WaitCurrent() {
  for (const char* stream : kStreams) {
    if (!cluster_.WaitCurrent(stream, 120s)) {
      throw std::runtime_error(std::string(stream) + ": a replica is not current after 120 s");
    }
  }
}

void Soak::KillWorker() {
  auto alive = Alive();
  if (alive.empty()) throw std::runtime_error("no worker to kill");
  Worker& victim = *alive.front();
  Scrape(victim);
  victim.engine->process().SignalGroup(SIGKILL);
  victim.engine->process().Wait(10s);
  victim.alive = false;
  victim.fate = "killed -9 at +" + std::to_string(static_cast<int>(Elapsed())) + " s";
  Say("  w" + std::to_string(victim.id) + " killed -9");
  AddWorker();
}

void Soak::AddWorker() {
  Worker& w = StartWorker();
  const auto start = SteadyClock::now();
  if (!w.engine->WaitReady(120s)) {
    throw std::runtime_error("w" + std::to_string(w.id) + " not ready after 120 s");
  }
  char line[128];
  std::snprintf(line, sizeof line, "  w%d started, ready in %.1f s", w.id,
                Seconds(SteadyClock::now() - start));
  Say(line);
}

void Soak::StopWorker() {
  auto alive = Alive();
  if (alive.size() < 2) throw std::runtime_error("fewer than two workers: none stopped");
  Worker& w = *alive.front();
  Scrape(w);
  const auto start = SteadyClock::now();
  const int status = w.engine->process().Stop(SIGTERM, 60s);
  w.alive = false;
  w.fate = "SIGTERM at +" + std::to_string(static_cast<int>(Elapsed())) + " s, exit " +
           std::to_string(status);
  char line[128];
  std::snprintf(line, sizeof line, "  w%d stopped with SIGTERM: exit %d after %.1f s", w.id, status,
                Seconds(SteadyClock::now() - start));
  Say(line);
  if (status != 0)
    throw std::runtime_error("w" + std::to_string(w.id) + " exited " + std::to_string(status) +
                             " on SIGTERM");
}

void Soak::KillLeader(const std::string& stream) {
  const int leader = cluster_.LeaderOf(stream);
  if (leader < 0) throw std::runtime_error(stream + " has no leader");
  cluster_.node(leader).Kill();
  Say("  n" + std::to_string(leader) + " (leader of " + stream + ") killed -9");
  const bool grew = RowsGrow(10 * s_.vehicles, 60s);
  Say(grew ? "  rows written on with n" + std::to_string(leader) + " down"
           : "  NO rows for 60 s with n" + std::to_string(leader) + " down");
  cluster_.node(leader).Start();  // same port, same store
  WaitCurrent();
  Say("  n" + std::to_string(leader) + " started again; every stream and bucket current; " +
      stream + " led by n" + std::to_string(cluster_.LeaderOf(stream)));
  if (!grew) throw std::runtime_error("no rows for 60 s with a node down");
}

void Soak::RollingRestart() {
  for (int node = 0; node < cluster_.size(); ++node) {
    cluster_.node(node).Stop();
    Say("  n" + std::to_string(node) + " stopped (SIGTERM)");
    const bool grew = RowsGrow(3 * s_.vehicles, 60s);
    cluster_.node(node).Start();
    WaitCurrent();
    Say("  n" + std::to_string(node) + " started again; every stream and bucket current" +
        (grew ? "" : " (NO rows for 60 s while it was down)"));
    if (!grew) throw std::runtime_error("no rows for 60 s with a node down");
  }
}

void Soak::PgFailover() {
  if (!rejoined_) {
    skipped_.push_back("a PostgreSQL failover: no standby (the rebuild failed)");
    Say("  SKIPPED: no standby to promote (the rebuild after the last failover failed)");
    return;
  }
  ScrapeAll();
  const double retries = SumAlive(&Scraped::sink_retries);
  const int old_port = pg_.primary().port();
  const auto killed = SteadyClock::now();
  pg_.primary().Kill();
  Say("  primary on port " + std::to_string(old_port) + " killed -9");
  // As long as a failover takes: the sinks fail to write twice or more.
  const bool noticed = WaitFor(
      [&] {
        ScrapeAll();
        return SumAlive(&Scraped::sink_retries) >= retries + 2;
      },
      30s, 500ms);
  const double written = SumAlive(&Scraped::rows_written);
  pg_.standby().Promote();
  char line[192];
  std::snprintf(line, sizeof line, "  standby on port %d promoted %.1f s after the kill%s",
                pg_.standby().port(), Seconds(SteadyClock::now() - killed),
                noticed ? "" : " (the sinks had not retried twice)");
  Say(line);
  const bool again = WaitFor(
      [&] {
        ScrapeAll();
        return SumAlive(&Scraped::rows_written) > written;
      },
      60s, 500ms);
  std::snprintf(line, sizeof line, "  rows written again %.1f s after the kill",
                Seconds(SteadyClock::now() - killed));
  Say(again ? line : "  NO rows written 60 s after the promotion");
  ++failovers_;
  rejoined_ = false;
  try {
    pg_.Rejoin();
    rejoined_ = true;
    Say("  the old primary rebuilt as the synchronous standby of the new one (port " +
        std::to_string(pg_.standby().port()) + ")");
  } catch (const std::exception& e) {
    Say(std::string("  no new standby (only one failover): ") + e.what());
  }
  if (!again) throw std::runtime_error("no rows written 60 s after the promotion");
}

/// Every worker says the hub has what the edge stored (fleetflow_edges_behind 0).
bool Soak::EdgesCaughtUp() {
  for (Worker* w : Alive()) {
    if (w->engine->Metric("fleetflow_edges_behind") != 0) return false;
  }
  return true;
}

void Soak::CutLeafLink() {
  if (!link_) {
    skipped_.push_back("the leaf link cut: no edge vehicles (--edge-vehicles 0)");
    Say("  SKIPPED: no edge leaf node (--edge-vehicles 0)");
    return;
  }
  const double outage_s = std::max(10.0, 60 * duration_s_ / kScheduleLengthS);
  const double cut_at = Elapsed();
  link_->SetRefusing(true);
  link_->ResetAll();
  Say("  the leaf link cut (its connections reset, new ones refused)");
  const bool seen = WaitFor([&] { return !EdgesCaughtUp(); }, 10s, 250ms);
  char line[160];
  std::snprintf(line, sizeof line, "  the workers see the edge behind %.1f s after the cut",
                Elapsed() - cut_at);
  Say(seen ? line : "  the workers do NOT see the edge behind 10 s after the cut");
  WaitUntil(cut_at + outage_s);  // the outage's length is the scenario
  link_->SetRefusing(false);
  const double back_at = Elapsed();
  Say("  the leaf link back");
  const bool caught_up = WaitFor([&] { return EdgesCaughtUp(); }, 120s, 250ms);
  std::snprintf(line, sizeof line,
                "  the hub caught up with the edge %.1f s after the link came back",
                Elapsed() - back_at);
  Say(caught_up ? line : "  the hub NOT caught up with the edge 120 s after the link came back");
  if (!seen) throw std::runtime_error("the workers did not see the edge behind");
  if (!caught_up) throw std::runtime_error("the hub did not catch up with the edge");
}

/// The step a window's problem most likely comes from: the last one that started before the
/// window closed (its time + 5 s: a second of window, the allowed lateness, the flush).
std::string Soak::StepNear(int64_t window_ns) const {
  const double at = static_cast<double>(window_ns - t0_ns_) / 1e9;
  std::string step = "no step (before the first)";
  for (const auto& [start, what] : step_times_) {
    if (start <= at + 5) step = what;
  }
  return step;
}

/// Prints `rows` as ranges of consecutive windows per vehicle, each with its partition and the
/// step near it; counts them by step.
void Soak::ShowRows(const char* kind, const std::vector<std::pair<std::string, int64_t>>& rows,
                    std::map<std::string, int64_t>& by_step) const {
  if (rows.empty()) return;
  auto sorted = rows;
  std::sort(sorted.begin(), sorted.end());
  std::printf("%zu rows %s:\n", rows.size(), kind);
  const auto clock = [](int64_t ns) {
    const std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000);
    char buf[16];
    std::strftime(buf, sizeof buf, "%H:%M:%S", std::localtime(&t));
    return std::string(buf);
  };
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j].first == sorted[i].first &&
           sorted[j].second - sorted[j - 1].second <= testing::kSecond) {
      ++j;
    }
    const std::string step = StepNear(sorted[i].second);
    by_step[step] += static_cast<int64_t>(j - i);
    std::printf("  %s (partition %u): %zu windows %s - %s (+%.0f .. +%.0f s), near STEP %s\n",
                sorted[i].first.c_str(), PartitionOf(sorted[i].first, kPartitions), j - i,
                clock(sorted[i].second).c_str(), clock(sorted[j - 1].second).c_str(),
                static_cast<double>(sorted[i].second - t0_ns_) / 1e9,
                static_cast<double>(sorted[j - 1].second - t0_ns_) / 1e9, step.c_str());
    i = j;
  }
}

void Soak::RunStep(const Step& step) {
  const double at = step.at_s * duration_s_ / kScheduleLengthS;
  WaitUntil(at);
  const double late = Elapsed() - at;
  const std::string name = std::to_string(step_times_.size() + 1) + ". " + step.what;
  step_times_.emplace_back(Elapsed(), name);
  char head[256];
  std::snprintf(head, sizeof head, "STEP %s%s", name.c_str(),
                late > 1 ? (" (" + std::to_string(static_cast<int>(late)) +
                            " s behind its time: the step before ran long)")
                               .c_str()
                         : "");
  Say(head);
  const auto start = SteadyClock::now();
  try {
    switch (step.action) {
      case Action::kKillWorker:
        KillWorker();
        break;
      case Action::kAddWorker:
        AddWorker();
        break;
      case Action::kStopWorker:
        StopWorker();
        break;
      case Action::kKillStreamLeader:
        KillLeader("TELEMETRY");
        break;
      case Action::kKillStateLeader:
        KillLeader("KV_telemetry");
        break;
      case Action::kRollingRestart:
        RollingRestart();
        break;
      case Action::kPgFailover:
        PgFailover();
        break;
      case Action::kLeafLinkCut:
        CutLeafLink();
        break;
    }
  } catch (const std::exception& e) {
    step_failures_.push_back(name + ": " + e.what());
    Say(std::string("  STEP FAILED: ") + e.what());
  }
  char tail[128];
  std::snprintf(tail, sizeof tail, "  (step took %.1f s)", Seconds(SteadyClock::now() - start));
  Say(tail);
}

int Soak::Run() {
  std::printf(
      "soak: %d vehicles for %s (%.0f s), %d workers to start with; date %s; machine %u "
      "cores; logs in %s\n",
      s_.vehicles, s_.duration.c_str(), duration_s_, s_.workers, Clock().c_str(),
      std::thread::hardware_concurrency(), dir_.path().c_str());
  Say("starting 3 nats-servers 2.10 and a PostgreSQL primary with a synchronous standby");
  cluster_.UseServer210();
  cluster_.MapPartitions(kPartitions);
  const bool edge = s_.edge_vehicles > 0;
  if (edge) {
    std::vector<int> leaf_ports;
    for (int i = 0; i < cluster_.size(); ++i) {
      cluster_.node(i).ListenForLeafNodes();
      leaf_ports.push_back(cluster_.node(i).leafnode_port());
    }
    link_ = std::make_unique<testing::TcpProxy>(leaf_ports);
    // The leaf reconnects through the proxy only.
    for (int i = 0; i < cluster_.size(); ++i) cluster_.node(i).ListenForLeafNodes(link_->port());
  }
  cluster_.Start();
  if (edge) {
    Say("starting the edge leaf node (domain " + std::string(kEdgeDomain) +
        ", a leaf of the hub through a proxy) and its stream EDGE");
    edge_.UseServer210();
    edge_.LeafOf(link_->port(), kEdgeDomain);
    edge_.Start();
    nats::ConnectOptions o;
    o.url = edge_.url();
    auto conn = nats::Connection::Connect(o);
    nats::StreamOptions stream;
    stream.name = "EDGE";
    stream.subjects = {"vehicle.*.*"};
    nats::JetStream(*conn).EnsureStream(stream);
  }
  pg_.Start();
  pipeline_ = testing::WritePipelineVariant(
      s_.pipeline, "telemetry",
      edge ? std::string(R"({"stream_replicas": 3, "edge_domains": [")") + kEdgeDomain + R"("]})"
           : std::string(R"({"stream_replicas": 3})"),
      dir_.File("pipeline.json"));
  testing::WritePipelineVariant(pipeline_, "last_values", R"({"bucket_replicas": 3})", pipeline_);
  for (int i = 0; i < s_.workers; ++i) StartWorker();
  for (auto& w : workers_) {
    if (!w->engine->WaitReady(120s)) {
      throw std::runtime_error("worker w" + std::to_string(w->id) + " not ready:\n" +
                               w->engine->process().ReadLog());
    }
  }
  if (!WaitFor(
          [&] {
            ScrapeAll();
            return SumAlive(&Scraped::partitions) == kPartitions;
          },
          60s, 500ms)) {
    throw std::runtime_error("the workers do not own the 16 partitions after 60 s");
  }
  testing::CountWrites(pg_.primary());
  Say("workers ready; starting the vehicles");
  const int sensor_s = static_cast<int>(duration_s_);
  auto sensors =
      testing::StartSensors(cluster_.url(), dir_, s_.vehicles - s_.edge_vehicles, sensor_s, "car");
  for (auto& sensor :
       testing::StartSensors(edge_.url(), dir_, s_.edge_vehicles, sensor_s, "depot")) {
    sensors.push_back(std::move(sensor));
  }
  t0_ = SteadyClock::now();
  t0_ns_ = testing::NowNs();
  last_scrape_ = -1e9;  // Elapsed() counts from here on
  started_ = true;
  Say("vehicles started; chaos schedule:");
  int n = 0;
  for (const Step& step : kSchedule) {
    std::printf("    +%4.0f s  %2d. %s\n", step.at_s * duration_s_ / kScheduleLengthS, ++n,
                step.what);
  }
  for (const Step& step : kSchedule) RunStep(step);
  WaitUntil(duration_s_);

  // The end: the vehicles done, the rows settled.
  Say("schedule done; waiting for the vehicles to finish");
  int64_t taken = 0, acknowledged = 0, resent = 0, dropped = 0;
  int sensors_failed = 0;
  for (auto& sensor : sensors) {
    const auto status = sensor->Wait(180s);
    if (status != std::optional<int>(0)) ++sensors_failed;
    taken += testing::SensorCounter(*sensor, "samples");
    acknowledged += testing::SensorCounter(*sensor, "published_samples");
    resent += testing::SensorCounter(*sensor, "resent_messages");
    dropped += testing::SensorCounter(*sensor, "dropped_samples");
  }
  Say("vehicles done; reading the stream");
  // What an edge stored reaches the hub's stream through its source, a while after the
  // vehicles were acknowledged: read until it has every sample acknowledged (at most 120 s).
  testing::Samples stored;
  WaitFor(
      [&] {
        stored = testing::SamplesInStream(cluster_.url(), "TELEMETRY");
        return static_cast<int64_t>(testing::CountSamples(stored)) >= acknowledged;
      },
      120s, 2s);
  const testing::ExpectedRows expected = testing::ComputeExpectedRows(stored);
  Say("waiting for the rows to settle (" + std::to_string(expected.size()) + " expected)");
  const auto settle = SteadyClock::now();
  // Until every expected row is there, or nothing was written for --quiet-s (rows missing for
  // good), at most --settle-s.
  int last_rows = -1;
  auto last_change = SteadyClock::now();
  bool settled = false;
  WaitFor(
      [&] {
        if (Elapsed() - last_scrape_ >= 5) ScrapeAll();
        settled = testing::HasEveryRow(pg_.primary(), expected);
        const int rows = testing::Rows(pg_.primary());
        if (rows != last_rows) {
          last_rows = rows;
          last_change = SteadyClock::now();
        }
        return settled || Seconds(SteadyClock::now() - last_change) >= s_.quiet_s;
      },
      std::chrono::milliseconds(static_cast<int64_t>(s_.settle_s * 1000)), 1s);
  const double settle_s = Seconds(SteadyClock::now() - settle);
  ScrapeAll();
  for (Worker* w : Alive()) {
    const int status = w->engine->process().Stop(SIGTERM, 60s);
    w->alive = false;
    w->fate = "SIGTERM at the end, exit " + std::to_string(status);
    if (status != 0) step_failures_.push_back("w" + std::to_string(w->id) + ": " + w->fate);
  }
  Say("workers stopped; comparing the rows");
  const testing::CheckResult check = testing::CheckRows(pg_.primary(), expected);
  const testing::WriteCount writes = testing::Writes(pg_.primary());

  // Rows written more than once, by the step before their second write.
  std::map<std::string, int64_t> twice_by_step;
  std::string twice_examples;
  if (writes.most_per_row > 1) {
    const std::string out = pg_.primary().Psql(
        "SELECT vehicle_id, to_char(time, 'HH24:MI:SS'), n, "
        "extract(epoch FROM second_write)::float8 FROM (SELECT vehicle_id, time, count(*) AS n, "
        "(array_agg(written_at ORDER BY written_at))[2] AS second_write FROM row_writes GROUP BY "
        "vehicle_id, time HAVING count(*) > 1) AS t ORDER BY second_write");
    const double t0_epoch =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() -
        Elapsed();
    std::istringstream in(out);
    int shown = 0;
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> f;
      std::istringstream cells(line);
      for (std::string c; std::getline(cells, c, '|');) f.push_back(c);
      if (f.size() < 4) continue;
      const double at = std::stod(f[3]) - t0_epoch;
      std::string step = "before the first step";
      for (const auto& [start, what] : step_times_) {
        if (start <= at) step = what;
      }
      ++twice_by_step[step];
      if (shown++ < 10) {
        twice_examples += "    " + f[0] + " window " + f[1] + " written " + f[2] +
                          " times, the second at +" + std::to_string(static_cast<int>(at)) + " s\n";
      }
    }
  }

  Scraped total;
  for (auto& w : workers_) {
    total.messages += w->last.messages;
    total.samples += w->last.samples;
    total.late += w->last.late;
    total.redelivered += w->last.redelivered;
    total.recovered += w->last.recovered;
    total.assigned += w->last.assigned;
    total.cpu_s += w->last.cpu_s;
  }
  const size_t in_stream = testing::CountSamples(stored);
  const bool exact = check.ok();
  const bool once = writes.most_per_row <= 1;
  const bool steps_ok = step_failures_.empty() && sensors_failed == 0;

  std::map<std::string, int64_t> missing_by_step, mismatched_by_step, unexpected_by_step;
  if (!exact) {
    std::printf("rows: %s\n%s\n", check.Summary().c_str(), check.first_problems.c_str());
    ShowRows("missing", check.missing_rows, missing_by_step);
    ShowRows("with other values", check.mismatched_rows, mismatched_by_step);
    ShowRows("unexpected", check.unexpected_rows, unexpected_by_step);
    std::set<std::string> vehicles;
    for (const auto& [vehicle, ns] : check.missing_rows) vehicles.insert(vehicle);
    for (const auto& [vehicle, ns] : check.mismatched_rows) vehicles.insert(vehicle);
    int shown = 0;
    std::printf(
        "speed samples the stream stored over 1 s after they were taken (first - last -> "
        "stored, s.ms of the minute):\n");
    for (const auto& v : vehicles) {
      if (shown++ == 4) break;
      std::printf("%s", testing::StoredLate(cluster_.url(), v).c_str());
    }
  }
  std::ostringstream md;
  char buf[512];
  md << "| soak | " << s_.vehicles << " vehicles (" << s_.edge_vehicles << " on the edge), "
     << s_.duration << " |\n|---|---|\n";
  const auto row = [&](const std::string& what, const std::string& value) {
    md << "| " << what << " | " << value << " |\n";
  };
  row(
      "chaos steps run", std::to_string(step_times_.size() - skipped_.size()) + " of " +
                             std::to_string(step_times_.size()) +
                             (skipped_.empty() ? "" : " (skipped: ") +
                             [&] {
                               std::string s;
                               for (const auto& k : skipped_) s += (s.empty() ? "" : "; ") + k;
                               return s;
                             }() +
                             (skipped_.empty() ? "" : ")"));
  row("steps failed", step_failures_.empty() ? "0" : std::to_string(step_failures_.size()));
  row("PostgreSQL failovers", std::to_string(failovers_));
  row("workers started / killed -9 / stopped", [&] {
    int killed = 0, stopped = 0;
    for (auto& w : workers_) {
      if (w->fate.rfind("killed", 0) == 0) ++killed;
      if (w->fate.rfind("SIGTERM at +", 0) == 0) ++stopped;
    }
    return std::to_string(workers_.size()) + " / " + std::to_string(killed) + " / " +
           std::to_string(stopped) + " (+ the rest at the end)";
  }());
  std::snprintf(buf, sizeof buf, "%lld / %lld / %zu", static_cast<long long>(taken),
                static_cast<long long>(acknowledged), in_stream);
  row("samples taken / acknowledged by the stream / in the stream", buf);
  std::snprintf(buf, sizeof buf, "%lld messages resent, %lld samples dropped, %d exited non-zero",
                static_cast<long long>(resent), static_cast<long long>(dropped), sensors_failed);
  row("vehicles", buf);
  std::snprintf(buf, sizeof buf, "%zu / %zu / %zu / %zu / %zu", check.expected, check.found,
                check.missing, check.unexpected, check.mismatched);
  row("rows expected / found / missing / unexpected / mismatched", buf);
  row("rows exact", exact ? "yes" : "**no**");
  for (const auto& [kind, by_step] :
       {std::pair<const char*, const std::map<std::string, int64_t>*>{"missing", &missing_by_step},
        {"with other values", &mismatched_by_step},
        {"unexpected", &unexpected_by_step}}) {
    for (const auto& [step, n] : *by_step) {
      row(std::string("&nbsp;&nbsp;rows ") + kind + " near \"" + step + "\"", std::to_string(n));
    }
  }
  std::snprintf(buf, sizeof buf, "%lld writes of %lld rows (%.4f per row)",
                static_cast<long long>(writes.writes), static_cast<long long>(writes.rows),
                writes.PerRow());
  row("writes", buf);
  int64_t twice = 0;
  for (const auto& [step, n] : twice_by_step) twice += n;
  row("rows written more than once", once ? "0" : "**" + std::to_string(twice) + "**");
  row("most writes of a row", std::to_string(writes.most_per_row));
  for (const auto& [step, n] : twice_by_step) {
    row("&nbsp;&nbsp;written twice after \"" + step + "\"", std::to_string(n));
  }
  std::snprintf(buf, sizeof buf, "%.1f s after the stream was read%s", settle_s,
                settled ? ""
                        : " (NOT settled: rows still missing, nothing written for --quiet-s or "
                          "until --settle-s)");
  row("rows settled", buf);
  std::snprintf(buf, sizeof buf, "%.0f / %.0f", total.late, total.redelivered);
  row("late samples / messages redelivered (workers' /metrics)", buf);
  std::snprintf(buf, sizeof buf, "%.0f taken over, %.0f of them without a hand-over record",
                total.assigned, total.recovered);
  row("partitions", buf);
  std::snprintf(buf, sizeof buf, "%.1f s for %.0f messages (%.0f samples): %.1f us per message",
                total.cpu_s, total.messages, total.samples,
                total.messages > 0 ? 1e6 * total.cpu_s / total.messages : 0.0);
  row("workers' CPU", buf);

  std::printf("\n");
  if (!step_failures_.empty()) {
    std::printf("steps that failed:\n");
    for (const auto& f : step_failures_) std::printf("  %s\n", f.c_str());
  }
  std::printf("workers:\n");
  for (auto& w : workers_) {
    std::printf(
        "  w%d: %s; %.0f messages, %.0f late, %.0f redelivered, %.0f partitions taken "
        "over (%.0f without a record), %.1f s CPU\n",
        w->id, w->fate.c_str(), w->last.messages, w->last.late, w->last.redelivered,
        w->last.assigned, w->last.recovered, w->last.cpu_s);
  }
  if (!twice_examples.empty())
    std::printf("rows written more than once:\n%s", twice_examples.c_str());
  std::printf("\n%s", md.str().c_str());
  if (!s_.markdown.empty()) std::ofstream(s_.markdown) << md.str();
  const bool ok = exact && once && steps_ok;
  std::printf("\nsoak: %s\n",
              ok ? "PASSED (every row exact, each written once)" : "FAILED (see above)");
  std::fflush(stdout);
  if (!ok) setenv("FF_KEEP_TEST_DIRS", "1", 1);  // the logs for the report
  return ok ? 0 : 1;
}

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "Soak: the simulated fleet on a 3-node NATS cluster and a PostgreSQL pair under a scripted "
      "chaos schedule; then the rows compared with an independent computation and the writes "
      "per row counted. Exit 1 when a row is wrong, written twice, or a step failed."};
  app.add_option("--vehicles", s.vehicles, "fleet-sensor processes (--ack jetstream)")
      ->capture_default_str()
      ->check(CLI::Range(1, 500));
  app.add_option("--edge-vehicles", s.edge_vehicles,
                 "of --vehicles, this many publish to the edge leaf node (0: no edge)")
      ->capture_default_str()
      ->check(CLI::Range(0, 500));
  app.add_option("--duration", s.duration,
                 "how long the vehicles publish (e.g. 20m, 3m, 600s); the schedule scales")
      ->capture_default_str();
  app.add_option("--workers", s.workers, "workers at the start")->capture_default_str();
  app.add_option("--settle-s", s.settle_s,
                 "at most this long after the vehicles' end for every expected row")
      ->capture_default_str();
  app.add_option("--quiet-s", s.quiet_s,
                 "stop waiting for missing rows once nothing was written for this long")
      ->capture_default_str();
  app.add_option("--fleetflow", s.fleetflow, "the fleetflow binary (default: this build's)");
  app.add_option("--pipeline", s.pipeline, "the pipeline (default pipelines/jetstream.json)")
      ->capture_default_str();
  app.add_option("--markdown", s.markdown, "also write the summary table to this file");
  CLI11_PARSE(app, argc, argv);
  if (!ServersInstalled(true, true)) return 1;
  if (testing::NatsServer::Server210().empty()) {
    std::fprintf(stderr,
                 "ff-bench-soak: nats-server 2.10 is not installed: run scripts/nats210.sh\n");
    return 1;
  }
  if (s.fleetflow.empty()) s.fleetflow = BuildTreeProgram("apps/fleetflow");
  if (ParseDuration(s.duration) < 60) throw std::runtime_error("--duration: at least 1m");
  if (s.edge_vehicles > s.vehicles) throw std::runtime_error("--edge-vehicles: at most --vehicles");
  Soak soak(s);
  return soak.Run();
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-soak", fleetflow::bench::Main, argc, argv);
}

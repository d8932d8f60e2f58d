// Edge leaf nodes (docs/deploy.md, "Edge leaf nodes"): the vehicles publish to a depot's
// nats-server 2.10, a leaf node of the hub in a JetStream domain of its own, whose stream EDGE
// stores them; the hub's stream TELEMETRY sources EDGE (pipelines/jetstream.json with
// edge_domains), partitioned as the hub's own subjects. The leaf's link to the hub goes through
// a TcpProxy the test cuts for 60 s while the vehicles keep publishing: once it is back the hub
// catches up, and every row of the outage is written once, with the values of an independent
// computation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "tcp_proxy.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/jetstream.json";
constexpr const char* kDomain = "depot1";

/// What a process costs now: resident memory (kB) and CPU time used so far (s), at `at_s`
/// (seconds on the steady clock).
struct ProcessCost {
  long rss_kb = -1;
  double cpu_s = -1;
  double at_s = 0;
};

/// CPU used from `a` to `b`, in percent of one core.
double CpuPercent(const ProcessCost& a, const ProcessCost& b) {
  return b.at_s > a.at_s ? 100 * (b.cpu_s - a.cpu_s) / (b.at_s - a.at_s) : -1;
}

ProcessCost CostOf(pid_t pid) {
  ProcessCost out;
  out.at_s = static_cast<double>(std::chrono::steady_clock::now().time_since_epoch().count()) / 1e9;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) out.rss_kb = std::stol(line.substr(6));
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return out;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(field);
    if (i == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  out.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  return out;
}

class EdgeE2E : public ::testing::Test {
 protected:
  EdgeE2E() : dir_("fleetflow-edge-e2e") {}

  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    FF_REQUIRE_POSTGRES();
    hub_.UseServer210();  // sources with subject transforms: nats-server 2.10 or later
    hub_.MapPartitions(16);
    hub_.ListenForLeafNodes();
    link_ = std::make_unique<TcpProxy>(hub_.leafnode_port());
    hub_.ListenForLeafNodes(link_->port());  // the edge reconnects through the proxy only
    hub_.Start();
    edge_.UseServer210();
    edge_.LeafOf(link_->port(), kDomain);
    edge_.Start();
    pg_.Start();
    // The depot's stream, made when the depot is set up (docs/deploy.md): the vehicles'
    // subjects as they publish them.
    edge_conn_ = Connect(edge_.url());
    edge_js_ = std::make_unique<nats::JetStream>(*edge_conn_);
    nats::StreamOptions stream;
    stream.name = "EDGE";
    stream.subjects = {"vehicle.*.*"};
    edge_js_->EnsureStream(stream);
    pipeline_ = WritePipelineVariant(
        kPipeline, "telemetry",
        std::string(R"({"edge_max_hold_ms": 600000, "edge_domains": [")") + kDomain + R"("]})",
        dir_.File("pipeline.json"));
  }

  static std::unique_ptr<nats::Connection> Connect(const std::string& url) {
    nats::ConnectOptions o;
    o.url = url;
    return nats::Connection::Connect(o);
  }

  uint64_t Messages(nats::Connection& conn, const std::string& stream) {
    nats::JetStream js(conn);
    const auto info = js.FindStream(stream);
    return info ? info->messages : 0;
  }

  TempDir dir_;
  NatsServer hub_;
  std::unique_ptr<TcpProxy> link_;
  NatsServer edge_;
  PostgresServer pg_;
  std::unique_ptr<nats::Connection> edge_conn_;
  std::unique_ptr<nats::JetStream> edge_js_;
  std::string pipeline_;
};

TEST_F(EdgeE2E, TheLeafLinkDownFor60sEveryRowOfTheOutageWrittenOnceWithExactValues) {
  Engine engine(pipeline_, hub_, pg_, dir_.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady(60s)) << engine.process().ReadLog();
  // The hub's stream sources the edge, and hears its heartbeats.
  ASSERT_TRUE(WaitFor([&] { return engine.Metric("fleetflow_edges_behind") == 0; }, 60s))
      << engine.process().ReadLog() << hub_.ReadLog();
  CountWrites(pg_);
  auto hub_conn = Connect(hub_.url());
  {
    nats::JetStream js(*hub_conn);
    const auto telemetry = js.FindStream("TELEMETRY");
    ASSERT_TRUE(telemetry);
    ASSERT_EQ(telemetry->sources.size(), 1u);
    EXPECT_EQ(telemetry->sources[0].api_prefix, std::string("$JS.") + kDomain + ".API");
  }
  // The leaf's cost while its link is up and nothing is published (a measurement over 5 s).
  const ProcessCost idle_start = CostOf(edge_.pid());
  std::this_thread::sleep_for(5s);  // the measurement's interval, not a synchronisation
  const ProcessCost idle_end = CostOf(edge_.pid());

  constexpr int kVehicles = 10, kDurationS = 100, kOutageS = 60;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS, 11, 2);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(edge_.url(), fleet, kDurationS), dir_.File("sim.log"));
  const auto at_s = [&] { return static_cast<double>(NowNs() - fleet.config.start_ns) / 1e9; };

  // 15 s in, the link goes down (connections reset, new ones refused) for 60 s.
  ASSERT_TRUE(WaitFor([&] { return at_s() >= 15; }, 60s));
  const ProcessCost load_start = CostOf(edge_.pid());
  const int rows_before = Rows(pg_);
  EXPECT_GT(rows_before, 5 * kVehicles) << engine.process().ReadLog();
  link_->SetRefusing(true);
  link_->ResetAll();
  const double cut_at_s = at_s();
  // The engine sees that the hub lacks what the edge stores.
  EXPECT_TRUE(WaitFor([&] { return engine.Metric("fleetflow_edges_behind") == 1; }, 10s))
      << engine.process().ReadLog() << "\nhub:\n"
      << hub_.ReadLog() << "\nedge:\n"
      << edge_.ReadLog() << "\nproxy accepted " << link_->accepted();
  const double seen_at_s = at_s();
  // The outage's length is the scenario, not a synchronisation.
  ASSERT_TRUE(WaitFor([&] { return at_s() >= cut_at_s + kOutageS; }, 90s));
  const ProcessCost load_end = CostOf(edge_.pid());
  const uint64_t held_at_edge = Messages(*edge_conn_, "EDGE");
  const uint64_t at_hub = Messages(*hub_conn, "TELEMETRY");
  const int rows_during = Rows(pg_);
  EXPECT_LT(at_hub + 1000, held_at_edge) << "the hub got what the edge stored while cut off";
  link_->SetRefusing(false);
  const double back_at_s = at_s();
  EXPECT_TRUE(WaitFor([&] { return engine.Metric("fleetflow_edges_behind") == 0; }, 90s))
      << engine.process().ReadLog() << hub_.ReadLog();
  const double caught_up_at_s = at_s();

  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  const ProcessCost end_cost = CostOf(edge_.pid());
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 90s))
      << Rows(pg_) << " of " << expected.size() << "\n"
      << engine.process().ReadLog();
  // Nothing reached the hub twice: once through the source, never over the leaf connection.
  EXPECT_TRUE(WaitFor(
      [&] { return Messages(*hub_conn, "TELEMETRY") == Messages(*edge_conn_, "EDGE"); }, 30s))
      << Messages(*hub_conn, "TELEMETRY") << " messages at the hub, "
      << Messages(*edge_conn_, "EDGE") << " at the edge";
  const double late = engine.Metric("fleetflow_late_samples_total");
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();
  EXPECT_EQ(late, 0) << "samples of the outage came after their windows closed";
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  const WriteCount writes = Writes(pg_);
  EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";

  nats::JetStream edge_js(*edge_conn_);
  const auto edge_stream = edge_js.FindStream("EDGE");
  ASSERT_TRUE(edge_stream);
  const double bytes_per_vehicle_hour = static_cast<double>(edge_stream->bytes) / kVehicles /
                                        (static_cast<double>(kDurationS) / 3600.0);
  std::printf(
      "edge e2e, %d vehicles publishing to a leaf node whose link was down from t = %.1f s "
      "for %.1f s (seen behind %.1f s after the cut; %llu messages held at the edge while the "
      "hub had %llu; %d rows before the cut, %d at its end): caught up %.1f s after the link "
      "came back; %s; %lld writes of %lld rows, at most %lld per row; late samples %.0f\n",
      kVehicles, cut_at_s, back_at_s - cut_at_s, seen_at_s - cut_at_s,
      static_cast<unsigned long long>(held_at_edge), static_cast<unsigned long long>(at_hub),
      rows_before, rows_during, caught_up_at_s - back_at_s, check.Summary().c_str(),
      static_cast<long long>(writes.writes), static_cast<long long>(writes.rows),
      static_cast<long long>(writes.most_per_row), late);
  std::printf(
      "edge e2e, the leaf's footprint: RSS %ld kB idle, %ld kB at the end of the outage; CPU "
      "%.2f%% of a core idle, %.2f%% with %d vehicles publishing (the link down), %.2f%% from "
      "the cut to the end of the run; store %.2f MB per vehicle and hour (%llu bytes, %llu "
      "messages for %d vehicles in %d s)\n",
      idle_end.rss_kb, load_end.rss_kb, CpuPercent(idle_start, idle_end),
      CpuPercent(load_start, load_end), kVehicles, CpuPercent(load_start, end_cost),
      bytes_per_vehicle_hour / 1e6, static_cast<unsigned long long>(edge_stream->bytes),
      static_cast<unsigned long long>(edge_stream->messages), kVehicles, kDurationS);
}

}  // namespace
}  // namespace fleetflow::testing

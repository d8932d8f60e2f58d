// pipelines/jetstream.json on a NATS cluster as production runs it (docs/deploy.md): three
// nats-servers 2.10 routed on 127.0.0.1, the stream and every bucket with 3 replicas, two
// workers: every row once with the values of an independent computation.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <regex>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "wire.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/jetstream.json";

class ClusterE2E : public ::testing::Test {
 protected:
  ClusterE2E() : dir_("fleetflow-cluster-e2e") {}

  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    FF_REQUIRE_POSTGRES();
    cluster_.UseServer210();
    cluster_.MapPartitions(16);
    cluster_.Start();
    pg_.Start();
    // Everything the pipeline creates has 3 replicas: any one node may go.
    pipeline_ = WritePipelineVariant(kPipeline, "telemetry", R"({"stream_replicas": 3})",
                                     dir_.File("pipeline.json"));
    WritePipelineVariant(pipeline_, "last_values", R"({"bucket_replicas": 3})", pipeline_);
    if (const char* idle = std::getenv("FF_CLUSTER_IDLE_MS")) {
      WritePipelineVariant(pipeline_, "windows", std::string(R"({"idle_ms": )") + idle + "}",
                           pipeline_);
    }
  }

  std::unique_ptr<Engine> Worker(int n) {
    auto env = pg_.env();
    env["NATS_URL"] = cluster_.url();
    return std::make_unique<Engine>(pipeline_, env,
                                    dir_.File("worker" + std::to_string(n) + ".log"));
  }

  /// Replicas of each stream the pipeline made, as the cluster reports them.
  std::map<std::string, int> Replicas() {
    nats::ConnectOptions o;
    o.url = cluster_.url();
    auto conn = nats::Connection::Connect(o);
    nats::JetStream js(*conn);
    std::map<std::string, int> out;
    for (const std::string s :
         {"TELEMETRY", "KV_telemetry", "KV_fleetflow_members", "KV_fleetflow_handover"}) {
      const auto info = js.FindStream(s);
      out[s] = info ? info->replicas : 0;
    }
    return out;
  }

  TempDir dir_;
  NatsCluster cluster_;
  PostgresServer pg_;
  std::string pipeline_;
};

TEST_F(ClusterE2E, TwoWorkersOnThreeNodesEveryStreamAndBucketR3EveryRowOnceExactValues) {
  auto a = Worker(0);
  auto b = Worker(1);
  ASSERT_TRUE(a->WaitReady()) << a->process().ReadLog();
  ASSERT_TRUE(b->WaitReady()) << b->process().ReadLog();
  const std::map<std::string, int> r3 = {{"TELEMETRY", 3},
                                         {"KV_telemetry", 3},
                                         {"KV_fleetflow_members", 3},
                                         {"KV_fleetflow_handover", 3}};
  EXPECT_EQ(Replicas(), r3);
  for (const auto& [stream, replicas] : r3) {
    EXPECT_GE(cluster_.LeaderOf(stream), 0) << stream;
    EXPECT_TRUE(cluster_.WaitCurrent(stream, 30s)) << stream << ": a replica is not current";
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        return a->Metric("fleetflow_partitions_owned") + b->Metric("fleetflow_partitions_owned") ==
               16;
      },
      30s));
  CountWrites(pg_);
  const SimRun run = RunFleetSim(cluster_.url(), 8, 12);
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, run.expected); }, 60s))
      << Rows(pg_) << " of " << run.expected.size();
  for (auto* w : {a.get(), b.get()}) {
    EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  }
  const CheckResult check = CheckRows(pg_, run.expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  const WriteCount writes = Writes(pg_);
  EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
}

/// What to read when windows are missing: `vehicle`'s speed samples that the stream stored over
/// 1 s after they were taken, by the second they were stored: "first - last -> stored" (seconds
/// of the minute, ms), in the stream's order.
std::string StoredLate(const std::string& url, const std::string& vehicle) {
  nats::ConnectOptions o;
  o.url = url;
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  auto reader = js.ReadStream("TELEMETRY", "telemetry.*." + vehicle + ".speed", {1, 0});
  std::string out;
  const auto ms = [](int64_t ns) { return std::to_string(ns / 1'000'000 % 60'000); };
  int64_t first = -1, last = -1, stored = -1;
  const auto flush = [&] {
    if (first >= 0)
      out += vehicle + " " + ms(first) + " - " + ms(last) + " -> " + ms(stored) + "\n";
    first = -1;
  };
  for (uint64_t n = 0; n < reader->total(); ++n) {
    const auto m = reader->Next(5000);
    if (!m) break;
    std::vector<wire::Point> points;
    if (wire::DecodeBatch(m->data(), m->size(), points) != wire::DecodeError::kNone ||
        points.empty() || m->stored_ns() - points.front().ts_ns < 1'000'000'000) {
      flush();
      continue;
    }
    if (first >= 0 && m->stored_ns() / 1'000'000'000 != stored / 1'000'000'000) flush();
    if (first < 0) first = points.front().ts_ns;
    last = points.back().ts_ns;
    stored = m->stored_ns();
  }
  flush();
  return out;
}

/// A counter of the status line fleet-sensor prints at its end, -1 when absent.
int64_t SensorCounter(const Process& sensor, const std::string& name) {
  std::smatch m;
  const std::string log = sensor.ReadLog();
  return std::regex_search(log, m, std::regex("\"" + name + "\":(\\d+)")) ? std::stoll(m[1]) : -1;
}

// Vehicles that keep what the stream has not acknowledged (fleet-sensor --ack jetstream) and two
// workers; the node leading the stream is killed with -9 and started again, then the node leading
// the state bucket. Every window of every vehicle is written, once.
TEST_F(ClusterE2E, TheStreamLeaderThenTheStateLeaderKilledEveryWindowOnce) {
  auto a = Worker(0);
  auto b = Worker(1);
  ASSERT_TRUE(a->WaitReady()) << a->process().ReadLog();
  ASSERT_TRUE(b->WaitReady()) << b->process().ReadLog();
  CountWrites(pg_);
  constexpr int kSensors = 4, kDurationS = 30;
  std::vector<std::unique_ptr<Process>> sensors;
  for (int i = 0; i < kSensors; ++i) {
    sensors.push_back(std::make_unique<Process>(
        std::vector<std::string>{::fleetflow::testing::BinaryDir() + "/firmware/fleet-sensor",
                                 "--vehicle",
                                 "car" + std::to_string(i),
                                 "--seed",
                                 "11",
                                 "--batch-ms",
                                 "100",
                                 "--duration",
                                 std::to_string(kDurationS),
                                 "--reconnect-wait-ms",
                                 "100",
                                 "--drain-ms",
                                 "20000",
                                 "--ack",
                                 "jetstream",
                                 "--ack-timeout-ms",
                                 "1000",
                                 "--nats-url",
                                 cluster_.url(),
                                 "--quiet"},
        dir_.File("sensor" + std::to_string(i) + ".log")));
  }
  for (const std::string stream : {"TELEMETRY", "KV_telemetry"}) {
    const int rows = Rows(pg_);
    ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows + 5 * kSensors; }, 60s))
        << a->process().ReadLog() << b->process().ReadLog();
    const int leader = cluster_.LeaderOf(stream);
    ASSERT_GE(leader, 0) << stream << " has no leader";
    cluster_.node(leader).Kill();
    ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows + 10 * kSensors; }, 60s))
        << "no rows with node n" << leader << " down\n"
        << a->process().ReadLog() << b->process().ReadLog();
    cluster_.node(leader).Start();  // same port, same store
    ASSERT_TRUE(cluster_.WaitCurrent(stream, 60s)) << stream;
  }
  for (auto& s : sensors) ASSERT_EQ(s->Wait(120s), std::optional<int>(0)) << s->ReadLog();
  int64_t taken = 0;
  for (auto& s : sensors) {
    taken += SensorCounter(*s, "samples");
    EXPECT_EQ(SensorCounter(*s, "published_samples"), SensorCounter(*s, "samples")) << s->ReadLog();
  }
  EXPECT_GT(taken, 0);
  // Each sensor's windows: one row per second of its run, every one of them, once.
  const std::string per_vehicle =
      "SELECT string_agg(n::text, ',' ORDER BY vehicle_id) FROM (SELECT vehicle_id, count(*) n, "
      "max(time) - min(time) span FROM vehicle_telemetry GROUP BY vehicle_id) t "
      "WHERE n = extract(epoch FROM span) + 1";
  EXPECT_TRUE(WaitFor(
      [&] {
        const auto complete = pg_.TryPsql(per_vehicle);
        return complete && std::count(complete->begin(), complete->end(), ',') == kSensors - 1 &&
               Rows(pg_) >= kSensors * (kDurationS - 2);
      },
      60s))
      << pg_.TryPsql(
                "SELECT vehicle_id, count(*), min(time), max(time) FROM vehicle_telemetry "
                "GROUP BY 1 ORDER BY 1")
             .value_or("")
      << a->process().ReadLog() << b->process().ReadLog() << "speed stored late:\n"
      << StoredLate(cluster_.url(), "car0") << StoredLate(cluster_.url(), "car1")
      << StoredLate(cluster_.url(), "car2") << StoredLate(cluster_.url(), "car3");
  // What to read when it fails: the windows each vehicle has, and the samples counted late.
  std::printf("late samples %.0f + %.0f, redelivered messages %.0f + %.0f\n%s\n",
              a->Metric("fleetflow_late_samples_total"), b->Metric("fleetflow_late_samples_total"),
              a->Metric("fleetflow_messages_redelivered_total"),
              b->Metric("fleetflow_messages_redelivered_total"),
              pg_.TryPsql("SELECT vehicle_id, string_agg(extract(second from time)::int::text, ' ' "
                          "ORDER BY time) FROM vehicle_telemetry GROUP BY 1")
                  .value_or("")
                  .c_str());
  for (auto* w : {a.get(), b.get()}) {
    EXPECT_TRUE(w->process().Running()) << w->process().ReadLog();
    EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  }
  const WriteCount writes = Writes(pg_);
  EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
  std::printf("cluster e2e, stream and state leaders killed: %lld writes of %lld rows\n",
              static_cast<long long>(writes.writes), static_cast<long long>(writes.rows));
}

}  // namespace
}  // namespace fleetflow::testing

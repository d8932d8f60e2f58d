// pipelines/jetstream.json on a NATS cluster as production runs it (docs/deploy.md): three
// nats-servers 2.10 routed on 127.0.0.1, the stream and every bucket with 3 replicas, two
// workers: every row once with the values of an independent computation.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>

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

  /// Worker(n) once /readyz answers; null (the test failed, the log printed) when it does not.
  std::unique_ptr<Engine> ReadyWorker(int n) {
    auto w = Worker(n);
    if (w->WaitReady(60s)) return w;
    ADD_FAILURE() << "worker " << n << " is not ready\n" << w->process().ReadLog();
    return nullptr;
  }

  struct Load {
    std::unique_ptr<Engine> a, b;
    std::vector<std::unique_ptr<Process>> sensors;
  };
  static constexpr int kSensors = 4;
  /// Two workers ready, every write counted from here on, kSensors fleet-sensors publishing for
  /// `seconds`; a worker null (the test failed, its log printed) when it is not ready.
  Load TwoWorkersUnderLoad(int seconds) {
    Load load{ReadyWorker(0), ReadyWorker(1), {}};
    if (!load.a || !load.b) return load;
    CountWrites(pg_);
    load.sensors = StartSensors(cluster_.url(), dir_, kSensors, seconds);
    return load;
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
  // Both create the R3 stream and buckets at once: on a loaded machine their replicas take
  // longer to form than the JetStream API's 5 s (nats::JetStream asks again).
  ASSERT_TRUE(a->WaitReady(60s)) << a->process().ReadLog();
  ASSERT_TRUE(b->WaitReady(60s)) << b->process().ReadLog();
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

/// Once the sensors are done: every sample they took is in the stream (acknowledged, nothing
/// lost), the rows are those of the stream's samples (an independent computation) and, once
/// the workers stopped, each was written once. `stopped`: workers that left before, whose logs
/// are printed with the others' when a check fails.
void ExpectEveryWindowOnce(const NatsCluster& cluster, const PostgresServer& pg,
                           std::vector<std::unique_ptr<Process>>& sensors,
                           const std::vector<Engine*>& workers, const std::string& what,
                           const std::vector<Engine*>& stopped = {}) {
  // The workers' logs, then what each vehicle says it did (resent, acknowledgement errors).
  const auto logs = [&] {
    std::string all;
    for (Engine* w : stopped) all += w->process().ReadLog();
    for (Engine* w : workers) all += w->process().ReadLog();
    for (size_t i = 0; i < sensors.size(); ++i) {
      all += "car" + std::to_string(i) + ": " + sensors[i]->ReadLog() + "\n";
    }
    return all;
  };
  int64_t taken = 0;
  for (auto& s : sensors) {
    ASSERT_EQ(s->Wait(120s), std::optional<int>(0)) << s->ReadLog();
    taken += SensorCounter(*s, "samples");
    EXPECT_EQ(SensorCounter(*s, "published_samples"), SensorCounter(*s, "samples")) << s->ReadLog();
  }
  const Samples stored = SamplesInStream(cluster.url(), "TELEMETRY");
  EXPECT_EQ(static_cast<int64_t>(CountSamples(stored)), taken) << [&] {
    std::string by_vehicle;  // what to read when they differ
    for (size_t i = 0; i < sensors.size(); ++i) {
      const auto it = stored.find("car" + std::to_string(i));
      by_vehicle += "car" + std::to_string(i) + ": in the stream";
      if (it != stored.end()) {
        for (const auto& [sensor, points] : it->second) {
          by_vehicle += " " + sensor + " " + std::to_string(points.size());
        }
      }
      by_vehicle += "; the sensor said " + sensors[i]->ReadLog() + "\n";
    }
    return by_vehicle;
  }();
  const ExpectedRows expected = ComputeExpectedRows(stored);
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg, expected); }, 60s))
      << CheckRows(pg, expected).Summary() << "\n"
      << CheckRows(pg, expected).first_problems << logs() << "speed stored late:\n"
      << StoredLate(cluster.url(), "car0") << StoredLate(cluster.url(), "car1")
      << StoredLate(cluster.url(), "car2") << StoredLate(cluster.url(), "car3");
  const CheckResult check = CheckRows(pg, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n"
                          << check.first_problems << logs() << "speed stored late:\n"
                          << StoredLate(cluster.url(), "car0") << StoredLate(cluster.url(), "car1")
                          << StoredLate(cluster.url(), "car2") << StoredLate(cluster.url(), "car3");
  double late = 0, redelivered = 0;
  for (Engine* w : workers) {
    late += w->Metric("fleetflow_late_samples_total");
    redelivered += w->Metric("fleetflow_messages_redelivered_total");
    EXPECT_TRUE(w->process().Running()) << w->process().ReadLog();
    EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  }
  const WriteCount writes = Writes(pg);
  EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
  std::printf(
      "cluster e2e, %s: %zu samples, %lld writes of %lld rows (%zu expected), %.0f "
      "samples late, %.0f messages delivered again\n",
      what.c_str(), CountSamples(stored), static_cast<long long>(writes.writes),
      static_cast<long long>(writes.rows), expected.size(), late, redelivered);
}

// Two workers; the node leading the stream is killed with -9 and started again, then the node
// leading the state bucket (another one if that is the same). Every window of every vehicle is
// written once, with the values of the samples the stream acknowledged.
TEST_F(ClusterE2E, TheStreamLeaderThenTheStateLeaderKilledEveryWindowOnce) {
  Load load = TwoWorkersUnderLoad(30);
  ASSERT_TRUE(load.a && load.b);
  auto &a = load.a, &b = load.b;
  auto& sensors = load.sensors;
  int killed = -1;
  for (const std::string stream : {"TELEMETRY", "KV_telemetry"}) {
    const int rows = Rows(pg_);
    ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows + 5 * kSensors; }, 60s))
        << a->process().ReadLog() << b->process().ReadLog();
    int leader = cluster_.LeaderOf(stream);
    ASSERT_GE(leader, 0) << stream << " has no leader";
    if (leader == killed) leader = (leader + 1) % cluster_.size();
    killed = leader;
    cluster_.node(leader).Kill();
    ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows + 10 * kSensors; }, 60s))
        << "no rows with node n" << leader << " down\n"
        << a->process().ReadLog() << b->process().ReadLog();
    cluster_.node(leader).Start();  // same port, same store
    ASSERT_TRUE(cluster_.WaitCurrent(stream, 60s)) << stream;
  }
  ExpectEveryWindowOnce(cluster_, pg_, sensors, {a.get(), b.get()},
                        "stream and state leaders killed");
}

// Two workers; one node leads both the stream and the state bucket, and is killed with -9: the
// stream stores nothing while it elects a new leader, the state writes fail meanwhile, and the
// consumers may still deliver what they held. Every window of every vehicle is written once,
// with the values of the samples the stream acknowledged.
TEST_F(ClusterE2E, TheNodeLeadingTheStreamAndTheStateKilledEveryWindowOnce) {
  Load load = TwoWorkersUnderLoad(30);
  ASSERT_TRUE(load.a && load.b);
  auto &a = load.a, &b = load.b;
  auto& sensors = load.sensors;
  const int rows = Rows(pg_);
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows + 5 * kSensors; }, 60s))
      << a->process().ReadLog() << b->process().ReadLog();
  const int leader = cluster_.LeadTogether("TELEMETRY", "KV_telemetry");
  ASSERT_GE(leader, 0) << "no node leads both the stream and the state bucket";
  const int before = Rows(pg_);
  cluster_.node(leader).Kill();
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= before + 10 * kSensors; }, 60s))
      << "no rows with node n" << leader << " down\n"
      << a->process().ReadLog() << b->process().ReadLog();
  cluster_.node(leader).Start();  // same port, same store
  for (const std::string stream : {"TELEMETRY", "KV_telemetry"}) {
    ASSERT_TRUE(cluster_.WaitCurrent(stream, 60s)) << stream;
  }
  ExpectEveryWindowOnce(cluster_, pg_, sensors, {a.get(), b.get()},
                        "the node leading the stream and the state killed");
}

// A rolling upgrade while the vehicles publish: each node in turn stopped (SIGTERM, as an update
// does) and started again once every stream and bucket is current. While the second is down, a
// third worker joins and the first leaves: partitions move, with their state and hand-over
// records, on a cluster missing a node.
TEST_F(ClusterE2E, ARollingRestartWithWorkersJoiningAndLeavingEveryWindowOnce) {
  Load load = TwoWorkersUnderLoad(45);
  ASSERT_TRUE(load.a && load.b);
  auto &a = load.a, &b = load.b;
  auto& sensors = load.sensors;
  std::unique_ptr<Engine> c;
  const auto logs = [&] {
    return a->process().ReadLog() + b->process().ReadLog() + (c ? c->process().ReadLog() : "");
  };
  for (int node = 0; node < cluster_.size(); ++node) {
    const int rows = Rows(pg_);
    ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows + 3 * kSensors; }, 60s)) << logs();
    cluster_.node(node).Stop();
    if (node == 1) {
      c = ReadyWorker(2);
      ASSERT_TRUE(c);
      ASSERT_EQ(a->process().Stop(SIGTERM, 60s), 0) << a->process().ReadLog();
    }
    ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows + 6 * kSensors; }, 60s))
        << "no rows with node n" << node << " down\n"
        << logs();
    cluster_.node(node).Start();
    for (const std::string stream :
         {"TELEMETRY", "KV_telemetry", "KV_fleetflow_members", "KV_fleetflow_handover"}) {
      ASSERT_TRUE(cluster_.WaitCurrent(stream, 60s)) << stream;
    }
  }
  ExpectEveryWindowOnce(cluster_, pg_, sensors, {b.get(), c.get()},
                        "rolling restart, a worker joining and one leaving", {a.get()});
}

}  // namespace
}  // namespace fleetflow::testing

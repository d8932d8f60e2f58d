// pipelines/jetstream.json on a NATS cluster as production runs it (docs/deploy.md): three
// nats-servers 2.10 routed on 127.0.0.1, the stream and every bucket with 3 replicas, two
// workers: every row once with the values of an independent computation.
#include <gtest/gtest.h>

#include <csignal>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"

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

}  // namespace
}  // namespace fleetflow::testing

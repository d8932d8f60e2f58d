// pipelines/jetstream.json end to end with real servers: the NATS server maps each vehicle to one
// of 16 partitions, each with its own durable consumer, and the workers share the partitions
// (state in one KV bucket, the changelog of each partition). Checks that nothing a vehicle sent
// is lost, and counts every write of every row (a trigger logs them: the table's primary key
// would hide a second write), when the engine is down, with several workers, when one is killed
// with SIGKILL and started again, on scale-out and scale-in.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <csignal>
#include <set>
#include <sstream>
#include <thread>

#include "build_paths.hpp"
#include "e2e_fixture.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "recording.hpp"
#include "wire.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/jetstream.json";

/// One engine worker running pipelines/jetstream.json.
class Worker : public Engine {
 public:
  Worker(const NatsServer& nats, const PostgresServer& pg, const TempDir& dir, int n)
      : Engine(kPipeline, nats, pg, dir.File("worker" + std::to_string(n) + ".log")) {}
};

class JetStreamE2E : public PartitionedServersTest {
 protected:
  JetStreamE2E() : PartitionedServersTest("fleetflow-js-e2e") {}
};

TEST_F(JetStreamE2E, EverythingPublishedWhileTheEngineWasDownIsWritten) {
  {
    Worker first(nats_, pg_, dir_, 0);  // creates the stream, the consumers and the buckets
    ASSERT_TRUE(first.WaitReady()) << first.process().ReadLog();
    ASSERT_EQ(first.process().Stop(SIGTERM, 30s), 0) << first.process().ReadLog();
  }
  CountWrites(pg_);
  constexpr int kVehicles = 10, kDurationS = 30;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const CommandResult sim = RunCommand(SimArgs(nats_, fleet, kDurationS), 120s);
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  EXPECT_EQ(Rows(pg_), 0);

  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Worker worker(nats_, pg_, dir_, 1);
  ASSERT_TRUE(worker.WaitReady()) << worker.process().ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 90s))
      << Rows(pg_) << " of " << expected.size() << " rows\n"
      << worker.process().ReadLog();
  EXPECT_EQ(worker.process().Stop(SIGTERM, 30s), 0) << worker.process().ReadLog();
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  const WriteCount writes = Writes(pg_);
  EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
  std::printf("jetstream e2e, engine down for %d s of publishing: %s; %lld writes of %lld rows\n",
              kDurationS, check.Summary().c_str(), static_cast<long long>(writes.writes),
              static_cast<long long>(writes.rows));
}

/// pipelines/jetstream.json for a group of workers of its own on the same stream: its own
/// durable consumers, buckets and table, named `name`.
std::string GroupPipeline(const TempDir& dir, const std::string& name) {
  const std::string path = dir.File(name + ".json");
  WritePipelineVariant(kPipeline, "telemetry",
                       R"({"durable": ")" + name + R"(", "state_bucket": ")" + name +
                           R"(", "membership_bucket": ")" + name + R"(_members", )" +
                           R"("handover_bucket": ")" + name + R"(_handover"})",
                       path);
  WritePipelineVariant(path, "last_values", R"({"bucket": ")" + name + R"("})", path);
  WritePipelineVariant(path, "database", R"({"table": "rows_)" + name + R"("})", path);
  return path;
}

/// Sleeps until the wall clock's fraction of a second is `ms` (within 1 ms of it, or a few more
/// when the thread is not run at once).
void SleepUntilFraction(int ms) {
  const int64_t target = int64_t{ms} * 1'000'000;
  const int64_t now = NowNs() % 1'000'000'000;
  std::this_thread::sleep_for(
      std::chrono::nanoseconds((target - now + 1'000'000'000) % 1'000'000'000));
}

// During catch-up the windows follow the time the stream stored each message, as they followed
// the clock live (docs/semantics.md, "Catching up"): three vehicles send for 3 s, fall silent
// for 3.7 s (longer than idle_ms, 2 s: a live worker closes their windows on the clock), send a
// sample from 0.8 s after their last one (late: its window is closed), then send for 2 s more.
// A worker that was down meanwhile reads it all from the stream and writes the same rows.
// The last sample before the silence is sent at k + 0.25 s, the late one at k + 3.975 s: window
// k + 3 s (the late sample 1.95 s before it, the next one 1.1 s after) closes at k + 4 s, just
// after the late sample was stored and while the source may still gather it. Unless the clock
// waits for what the source gathers (Tick::input_delay_ns), the live worker closes it without
// the late sample, a worker reading the backlog with it.
TEST_F(JetStreamE2E, AWorkerDownFor10sWritesTheRowsOfAWorkerThatWasNotLateSamplesIncluded) {
  const std::string live_pipeline = GroupPipeline(dir_, "live");
  const std::string outage_pipeline = GroupPipeline(dir_, "outage");
  const auto owns_all = [](const Engine& e) {
    return WaitFor([&] { return e.Metric("fleetflow_partitions_owned") == 16; }, 30s);
  };
  Engine live(live_pipeline, nats_, pg_, dir_.File("live.log"));
  ASSERT_TRUE(owns_all(live)) << live.process().ReadLog();
  {
    Engine outage(outage_pipeline, nats_, pg_, dir_.File("outage0.log"));  // its consumers
    ASSERT_TRUE(owns_all(outage)) << outage.process().ReadLog();
    ASSERT_EQ(outage.process().Stop(SIGTERM, 30s), 0) << outage.process().ReadLog();
  }
  nats::ConnectOptions o;
  o.url = nats_.url();
  auto pub = nats::Connection::Connect(o);
  const std::vector<std::string> vehicles = {"late-a", "late-b", "late-c"};
  int64_t newest_ns = 0;
  const auto send = [&](int64_t ts_ns) {
    newest_ns = std::max(newest_ns, ts_ns);
    for (const auto& v : vehicles) {
      const auto bytes = wire::EncodeBatch(std::vector<wire::Point>{
          wire::Point{ts_ns, 0, static_cast<double>(ts_ns / 1'000'000 % 100'000)}});
      pub->Publish("vehicle." + v + ".speed", bytes.data(), bytes.size());
    }
    pub->Flush(2000);
  };
  const auto send_for = [&](std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
      send(NowNs());
      std::this_thread::sleep_for(100ms);  // the vehicles' rate, not a synchronisation
    }
  };
  send_for(3s);
  SleepUntilFraction(250);
  send(NowNs());
  const int64_t last_ns = newest_ns;
  std::this_thread::sleep_for(3600ms);  // silence: longer than idle_ms
  SleepUntilFraction(975);
  const int64_t late_sent_ns = NowNs();
  send(last_ns + 800'000'000);  // late live
  send_for(2s);

  const std::string columns = "vehicle_id, time, lat, lon, speed, soc, torque";
  const auto count = [&](const std::string& table) {
    return std::stoi(pg_.TryPsql("SELECT count(*) FROM " + table).value_or("-1"));
  };
  // The last window with rows: the last one within max_gap_ms (2 s) of the newest sample.
  const int64_t last_window_s = (newest_ns + 2'000'000'000) / 1'000'000'000;
  const auto has_last_window = [&](const std::string& table) {
    return pg_.TryPsql("SELECT count(*) FROM " + table + " WHERE time = to_timestamp(" +
                       std::to_string(last_window_s) + ")") == "3";
  };
  // Live: the last windows close on the clock, idle_ms after the last sample.
  ASSERT_TRUE(WaitFor([&] { return has_last_window("rows_live"); }, 30s))
      << live.process().ReadLog();
  const double late_live = live.Metric("fleetflow_late_samples_total");
  EXPECT_EQ(late_live, 3) << "the sample after the silence is late live";
  EXPECT_EQ(live.process().Stop(SIGTERM, 30s), 0) << live.process().ReadLog();

  // 10 s after it stopped, the other group's worker reads all of it from the stream.
  Engine outage(outage_pipeline, nats_, pg_, dir_.File("outage1.log"));
  ASSERT_TRUE(outage.WaitReady()) << outage.process().ReadLog();
  ASSERT_TRUE(WaitFor([&] { return has_last_window("rows_outage"); }, 60s))
      << count("rows_outage") << " of " << count("rows_live") << "\n"
      << outage.process().ReadLog();
  const double late_outage = outage.Metric("fleetflow_late_samples_total");
  EXPECT_EQ(outage.process().Stop(SIGTERM, 30s), 0) << outage.process().ReadLog();
  EXPECT_EQ(late_outage, late_live);
  EXPECT_GT(count("rows_live"), 20);
  // What to read when the two differ: the samples' times, both tables, both logs.
  const auto table = [&](const std::string& t) {
    return pg_.Psql(
        "SELECT vehicle_id, to_char(time, 'HH24:MI:SS'), round(speed::numeric, 1) FROM " + t +
        " WHERE vehicle_id = 'late-a' ORDER BY 2");
  };
  std::printf("last sample before the silence at %lld, the late one sent at %lld\n",
              static_cast<long long>(last_ns), static_cast<long long>(late_sent_ns));
  const std::string timeline = "last sample before the silence " + std::to_string(last_ns) +
                               ", newest " + std::to_string(newest_ns) + "\nlive (late-a):\n" +
                               table("rows_live") + "\noutage (late-a):\n" + table("rows_outage") +
                               "\nlive log:\n" + live.process().ReadLog() + "\noutage log:\n" +
                               outage.process().ReadLog();
  EXPECT_EQ(count("rows_outage"), count("rows_live")) << timeline;
  for (const auto& [a, b] : {std::pair{"rows_live", "rows_outage"}, {"rows_outage", "rows_live"}}) {
    EXPECT_EQ(pg_.Psql("SELECT count(*) FROM (SELECT " + columns + " FROM " + a +
                       " EXCEPT SELECT " + columns + " FROM " + b + ") d"),
              "0")
        << "rows of " << a << " that " << b << " does not have:\n"
        << pg_.Psql("SELECT " + columns + " FROM " + a + " EXCEPT SELECT " + columns + " FROM " +
                    b + " ORDER BY 1, 2");
  }
}

/// The lines of the workers' logs `worker<first>.log` .. `worker<last>.log` that speak of
/// partitions: what to read when a hand-over went wrong.
std::string PartitionLines(const TempDir& dir, int first, int last) {
  std::string out;
  for (int n = first; n <= last; ++n) {
    std::istringstream log(ReadFile(dir.File("worker" + std::to_string(n) + ".log")));
    for (std::string line; std::getline(log, line);) {
      if (line.find("artition") != std::string::npos) {
        out += "worker" + std::to_string(n) + ": " + line + "\n";
      }
    }
  }
  return out;
}

TEST_F(JetStreamE2E, ThreeWorkersOneKilledAndRestartedNoRowMissingNoneTwice) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();
  CountWrites(pg_);

  constexpr int kVehicles = 30, kDurationS = 24;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));

  // A third of the way in, kill one worker without warning; two thirds in, start it again.
  const int third = static_cast<int>(expected.size() / 3);
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= third; }, 60s)) << Rows(pg_);
  workers[1]->process().Signal(SIGKILL);
  ASSERT_TRUE(workers[1]->process().Wait(10s).has_value());
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= 2 * third; }, 60s)) << Rows(pg_);
  workers[1] = std::make_unique<Worker>(nats_, pg_, dir_, 3);
  ASSERT_TRUE(workers[1]->WaitReady()) << workers[1]->process().ReadLog();

  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 60s))
      << Rows(pg_) << " of " << expected.size();
  for (auto& w : workers) EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  // The bucket still held the killed worker's key when the worker started again: counted, it
  // made four members for a member timeout, where the others saw three, and the restarted worker
  // read partitions that they read too.
  EXPECT_EQ(workers[1]->process().ReadLog().find("4 workers share"), std::string::npos)
      << workers[1]->process().ReadLog();
  // Every row once and nothing else; the values are compared by the test after this one.
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_EQ(check.found, check.expected) << check.Summary() << "\n"
                                         << check.first_problems << PartitionLines(dir_, 0, 3);
  EXPECT_EQ(check.unexpected, 0u) << check.Summary() << "\n" << check.first_problems;
  // The killed worker's partitions are taken over without a record: their recent windows are
  // written again (measured, not a goal).
  const WriteCount writes = Writes(pg_);
  std::printf("jetstream e2e, 3 workers, one killed and restarted: %s; %.3f writes per row\n",
              check.Summary().c_str(), writes.PerRow());
}

// The stream is each partition's changelog (docs/scaling.md, "State"): a worker acknowledges a
// message once its samples are in its memory. Killed before it stored its state (flush_ms 60 s:
// it writes only when its input pauses for a tick; the KV writes it made are printed),
// its successor re-reads from the stream what it acknowledged, after the partitions'
// checkpoints: every row is written, with the values of an independent computation.
TEST_F(JetStreamE2E, AWorkerKilledBeforeItStoredItsStateLosesNothingItAcknowledged) {
  const std::string pipeline = WritePipelineVariant(
      kPipeline, "last_values", R"({"flush_ms": 60000, "flush_messages": 10000000})",
      dir_.File("pipeline.json"));
  auto first = std::make_unique<Engine>(pipeline, nats_, pg_, dir_.File("worker0.log"));
  ASSERT_TRUE(first->WaitReady()) << first->process().ReadLog();
  CountWrites(pg_);
  constexpr int kVehicles = 20, kDurationS = 20;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size() / 3); }, 60s))
      << Rows(pg_);
  const double acknowledged = first->Metric("fleetflow_samples_accepted_total");
  const double stored = first->Metric("fleetflow_kv_writes_total");
  first->process().Signal(SIGKILL);
  ASSERT_TRUE(first->process().Wait(10s).has_value());
  Engine second(pipeline, nats_, pg_, dir_.File("worker1.log"));
  ASSERT_TRUE(second.WaitReady()) << second.process().ReadLog();
  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 90s))
      << Rows(pg_) << " of " << expected.size() << "\n"
      << PartitionLines(dir_, 0, 1);
  const double reread = second.Metric("fleetflow_changelog_messages_reread_total");
  EXPECT_EQ(second.process().Stop(SIGTERM, 30s), 0) << second.process().ReadLog();
  EXPECT_GT(reread, 0);
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n"
                          << check.first_problems << PartitionLines(dir_, 0, 1);
  std::printf(
      "jetstream e2e, a worker killed before it stored its state (%.0f samples taken in, %.0f "
      "KV writes): its successor re-read %.0f messages; %s; %.3f writes per row\n",
      acknowledged, stored, reread, check.Summary().c_str(), Writes(pg_).PerRow());
}

/// Partitions the workers read, in all (each counted once when they are settled).
double Owned(const std::vector<std::unique_ptr<Worker>>& workers) {
  double owned = 0;
  for (const auto& w : workers) owned += w->Metric("fleetflow_partitions_owned");
  return owned;
}

// A worker frozen (SIGSTOP) longer than the member timeout and the ack wait (4 + 5 s) is taken for
// gone: the other worker takes its partitions over, leases included. Once it runs again its fetch
// thread sees that it stood still and, before handing on what it fetched, asks the store for its
// leases: the partitions taken are given up at once, without records, and what it fetched of them
// is handed back to their new owner; the members, which count it again, then move some back,
// handed over as usual, but only once the kRevoked events of their giving up have passed the
// graph. Before the leases: 7-9 rows missing and 14-18 wrong values of 800 in each of three runs;
// with the leases only from the watch: 4 runs of 5 exact; with the check but a partition taken
// back before its kRevoked event had passed (which then wiped the record and the restored state
// the operators had begun with): 1 run in 2 to 5 not exact beside other e2e tests (a window
// missing, or a value wrong).
TEST_F(JetStreamE2E, AWorkerFrozenLongerThanItsAckWaitGivesUpWhatWasTakenFromIt) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();
  ASSERT_TRUE(WaitFor([&] { return Owned(workers) == 16; }, 30s)) << Owned(workers);
  CountWrites(pg_);
  constexpr int kVehicles = 20, kDurationS = 40;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size() / 4); }, 60s))
      << Rows(pg_);
  Worker& frozen = *workers[1];
  frozen.process().Signal(SIGSTOP);
  const bool taken_over =
      WaitFor([&] { return workers[0]->Metric("fleetflow_partitions_owned") == 16; }, 40s);
  frozen.process().Signal(SIGCONT);
  ASSERT_TRUE(taken_over) << workers[0]->Metric("fleetflow_partitions_owned");
  EXPECT_TRUE(WaitFor(
      [&] { return frozen.process().ReadLog().find("took its lease") != std::string::npos; }, 20s))
      << frozen.process().ReadLog();
  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 30s))
      << Rows(pg_) << " of " << expected.size();
  EXPECT_TRUE(WaitFor([&] { return Owned(workers) == 16; }, 30s)) << Owned(workers);
  for (auto& w : workers) EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  // A correction (a sample late at a hand-over) writes its row again.
  const WriteCount writes = Writes(pg_);
  EXPECT_LE(writes.PerRow(), 1.02) << writes.writes << " writes of " << writes.rows << " rows";
  std::printf("jetstream e2e, a worker frozen 10+ s: %s; %lld writes of %lld rows\n",
              check.Summary().c_str(), static_cast<long long>(writes.writes),
              static_cast<long long>(writes.rows));
}

TEST_F(JetStreamE2E, ThreeWorkersShareThePartitionsAndWriteEveryRowOnceWithTheSingleWorkerValues) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& w : workers) {
          if (w->Metric("fleetflow_partitions_owned") < 5) return false;  // 16 = 6 + 5 + 5
        }
        return Owned(workers) == 16;
      },
      30s))
      << Owned(workers);
  CountWrites(pg_);
  const SimRun sim = RunFleetSim(nats_, 30, 10, 7);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  const ExpectedRows& expected = sim.expected;
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 60s))
      << Rows(pg_) << " of " << expected.size();
  for (auto& w : workers) {
    EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  }
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  const WriteCount writes = Writes(pg_);
  EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
  std::printf("jetstream e2e, 3 workers: %s; %lld writes of %lld rows\n", check.Summary().c_str(),
              static_cast<long long>(writes.writes), static_cast<long long>(writes.rows));
}

/// What a stream holds: its last sequence, its message count and its subjects (a bucket's keys).
struct BucketState {
  uint64_t last_seq = 0, messages = 0;
  std::set<std::string> keys;
  bool operator==(const BucketState&) const = default;
};

std::ostream& operator<<(std::ostream& os, const BucketState& b) {
  return os << "{last_seq " << b.last_seq << ", " << b.messages << " messages, " << b.keys.size()
            << " keys}";
}

BucketState Stream(nats::Connection& conn, const std::string& stream) {
  const nats::Message reply =
      conn.Request("$JS.API.STREAM.INFO." + stream, R"({"subjects_filter": ">"})", 5000);
  rapidjson::Document doc;
  doc.Parse(reply.text().data(), reply.text().size());
  if (doc.HasParseError() || !doc.HasMember("state")) {
    throw std::runtime_error("stream info of " + stream + ": " + std::string(reply.text()));
  }
  const auto& state = doc["state"];
  BucketState out{state["last_seq"].GetUint64(), state["messages"].GetUint64(), {}};
  if (state.HasMember("subjects")) {
    for (const auto& m : state["subjects"].GetObject()) out.keys.insert(m.name.GetString());
  }
  return out;
}

// `fleetflow replay` of what production recorded, on production's own NATS server: a worker of
// pipelines/jetstream.json (with dead letters) runs while `fleetflow record` captures the
// partitioned subjects, a malformed message among them; the replay of that recording (NATS_URL
// pointing at the same server) into another PostgreSQL gives the independently computed rows, and
// leaves the worker's state bucket, hand-over records, dead letters and membership as they were,
// the worker owning every partition. `record --stream` of the stream afterwards holds the same
// messages, and its replay gives the same rows.
TEST_F(JetStreamE2E, ReplayOfARecordingLeavesTheRunningWorkersStateAndMembershipAlone) {
  const std::string pipeline = WritePipelineVariant(
      kPipeline, "telemetry", R"({"dead_letter": true})", dir_.File("jetstream-dead-letters.json"));
  Engine worker(pipeline, nats_, pg_, dir_.File("worker.log"));
  ASSERT_TRUE(worker.WaitReady()) << worker.process().ReadLog();
  ASSERT_TRUE(WaitFor([&] { return worker.Metric("fleetflow_partitions_owned") == 16; }, 30s));
  const std::string recording = dir_.File("production.ffrc");
  const std::string fleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";
  Process recorder({fleetflow, "record", "--url", nats_.url(), "--subject", "telemetry.*.*.*",
                    "--out", recording},
                   dir_.File("record.log"));
  ASSERT_TRUE(
      WaitFor([&] { return recorder.ReadLog().find("recording") != std::string::npos; }, 30s))
      << recorder.ReadLog();
  nats::ConnectOptions o;
  o.url = nats_.url();
  auto conn = nats::Connection::Connect(o);
  conn->Publish("vehicle.vbad.speed", "not a batch");
  const auto dead_letters = [&] {
    try {
      return Stream(*conn, "DEADLETTER").messages;
    } catch (const std::exception&) {
      return uint64_t{0};
    }
  };
  ASSERT_TRUE(WaitFor([&] { return dead_letters() == 1; }, 30s)) << worker.process().ReadLog();
  const SimRun sim = RunFleetSim(nats_, 10, 6, 7);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  const ExpectedRows& expected = sim.expected;
  ASSERT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 60s))
      << Rows(pg_) << " of " << expected.size() << "\n"
      << worker.process().ReadLog();
  ASSERT_EQ(recorder.Stop(SIGINT, 10s), 0) << recorder.ReadLog();
  // The same messages read back from the stream afterwards (`record --stream`: the whole range).
  const std::string from_stream = dir_.File("production-stream.ffrc");
  const CommandResult ranged = RunCommand(
      {fleetflow, "record", "--url", nats_.url(), "--stream", "TELEMETRY", "--out", from_stream},
      60s);
  ASSERT_EQ(ranged.exit_code, 0) << ranged.err;
  const auto messages = [](const std::string& file) {
    std::multiset<std::pair<std::string, std::vector<uint8_t>>> out;
    recording::Reader reader;
    EXPECT_TRUE(reader.Open(file)) << reader.error();
    recording::Record r;
    while (reader.Next(r) == recording::Reader::Status::kRecord) out.emplace(r.subject, r.payload);
    return out;
  };
  const auto captured = messages(recording);
  ASSERT_GT(captured.size(), 0u);
  EXPECT_EQ(messages(from_stream), captured) << "the stream holds what the live capture saw";

  // The worker's buckets once it is quiet: unchanged for 3 s (three state flushes).
  const auto snapshot = [&] {
    return std::vector<BucketState>{Stream(*conn, "KV_telemetry"),
                                    Stream(*conn, "KV_fleetflow_handover"),
                                    Stream(*conn, "DEADLETTER")};
  };
  auto before = snapshot();
  auto quiet_since = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto now = snapshot();
        if (now != before) {
          before = now;
          quiet_since = std::chrono::steady_clock::now();
        }
        return std::chrono::steady_clock::now() - quiet_since >= 3s;
      },
      60s));
  ASSERT_GT(before[0].messages, 0u);
  const std::set<std::string> members = Stream(*conn, "KV_fleetflow_members").keys;
  ASSERT_EQ(members.size(), 1u);

  PostgresServer replay_pg;
  replay_pg.Start();
  auto env = replay_pg.env();
  env["NATS_URL"] = nats_.url();
  const CommandResult replay =
      RunCommand({fleetflow, "replay", recording, "--pipeline", pipeline}, 120s, env);
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_NE(replay.err.find("replaced node 'telemetry': nats_source by replay_source"),
            std::string::npos)
      << replay.err;
  EXPECT_NE(replay.err.find("replaced node 'last_values': keyed_last_value state: in memory"),
            std::string::npos)
      << replay.err;

  // The malformed message was replayed and rejected, and its dead letter not published again.
  EXPECT_NE(replay.err.find("rejected input node=telemetry subject=vehicle.vbad.speed"),
            std::string::npos)
      << replay.err;
  EXPECT_EQ(snapshot(), before) << "the replay wrote to the worker's buckets";
  EXPECT_EQ(Stream(*conn, "KV_fleetflow_members").keys, members);
  EXPECT_EQ(worker.Metric("fleetflow_partitions_owned"), 16);
  const CheckResult check = CheckRows(replay_pg, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems << replay.err;

  // The range read from the stream replays to the same rows.
  PostgresServer stream_pg;
  stream_pg.Start();
  env = stream_pg.env();
  env["NATS_URL"] = nats_.url();
  const CommandResult replay_range =
      RunCommand({fleetflow, "replay", from_stream, "--pipeline", pipeline}, 120s, env);
  ASSERT_EQ(replay_range.exit_code, 0) << replay_range.err;
  const CheckResult range_check = CheckRows(stream_pg, expected);
  EXPECT_TRUE(range_check.ok()) << range_check.Summary() << "\n"
                                << range_check.first_problems << replay_range.err;
  EXPECT_EQ(snapshot(), before) << "the replay wrote to the worker's buckets";
  EXPECT_EQ(worker.process().Stop(SIGTERM, 30s), 0) << worker.process().ReadLog();
  std::printf(
      "jetstream e2e, replay of a production recording: %s; of a range of the stream: %s; "
      "state bucket seq %llu untouched\n",
      check.Summary().c_str(), range_check.Summary().c_str(),
      static_cast<unsigned long long>(before[0].last_seq));
}

TEST_F(JetStreamE2E, ScaleOutThenScaleInEveryRowOnceExactValuesAwayFromTheHandOvers) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();
  constexpr int kVehicles = 30, kDurationS = 32;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  const auto at_s = [&] { return static_cast<double>(NowNs() - fleet.config.start_ns) / 1e9; };
  ASSERT_TRUE(WaitFor([&] { return Owned(workers) == 16; }, 30s));
  CountWrites(pg_);
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= 4 * kVehicles; }, 30s));

  // Scale out: a third worker joins and takes its share over from the others' records (they
  // give the partitions up where they stopped emitting them).
  workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, 2));
  ASSERT_TRUE(workers[2]->WaitReady()) << workers[2]->process().ReadLog();
  ASSERT_TRUE(WaitFor([&] { return workers[2]->Metric("fleetflow_partitions_owned") >= 5; }, 60s))
      << workers[2]->process().ReadLog();
  const double joined_at_s = at_s();
  const int rows_at_join = Rows(pg_);
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows_at_join + 3 * kVehicles; }, 30s));

  // Scale in: the first worker stops (SIGTERM); the two others take its partitions over.
  const double stopped_at_s = at_s();
  ASSERT_EQ(workers[0]->process().Stop(SIGTERM, 30s), 0) << workers[0]->process().ReadLog();
  workers.erase(workers.begin());
  ASSERT_TRUE(WaitFor([&] { return Owned(workers) == 16; }, 30s)) << Owned(workers);

  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 60s))
      << Rows(pg_) << " of " << expected.size();
  double taken = 0, recovered = 0;
  for (auto& w : workers) {
    taken += w->Metric("fleetflow_partitions_assigned_total");
    recovered += w->Metric("fleetflow_partitions_recovered_total");
  }
  EXPECT_EQ(recovered, 0) << "a partition was taken over without a record";
  for (auto& w : workers) EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  // Every row once, and written once. Values: exact, except (known limit, docs/scaling.md) in
  // the windows of the 3 s around each hand-over, where a sample later than the lateness (a
  // loaded machine) may be missing from the new owner's row.
  const CheckResult all = CheckRows(pg_, expected);
  EXPECT_EQ(all.found, all.expected) << all.Summary() << "\n" << all.first_problems;
  EXPECT_EQ(all.unexpected, 0u) << all.Summary() << "\n" << all.first_problems;
  const WriteCount writes = Writes(pg_);
  EXPECT_LE(writes.PerRow(), 1.02) << writes.writes << " writes of " << writes.rows << " rows";
  ExpectedRows outside = expected;
  std::string band;
  for (const double t : {joined_at_s, stopped_at_s}) {
    const int64_t from = fleet.config.start_ns + static_cast<int64_t>((t - 3) * 1e9);
    const int64_t to = fleet.config.start_ns + static_cast<int64_t>((t + 3) * 1e9);
    std::erase_if(outside, [&](const auto& row) {
      return row.first.second >= from && row.first.second <= to;
    });
    band += (band.empty() ? "" : " OR ") + std::string("(time >= to_timestamp(") +
            std::to_string(from / 1e9) + ") AND time <= to_timestamp(" + std::to_string(to / 1e9) +
            "))";
  }
  pg_.Psql("DELETE FROM vehicle_telemetry WHERE " + band);
  const CheckResult check = CheckRows(pg_, outside);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  std::printf(
      "jetstream e2e, scale out (a third worker took partitions over at t = %.1f s) and "
      "in (the first stopped at t = %.1f s), %.0f partitions assigned to the remaining "
      "workers, %.0f without a record: every row %s; %.3f writes per row; values outside "
      "the 3 s around the hand-overs: %s; value mismatches within them: %zu\n",
      joined_at_s, stopped_at_s, taken, recovered, all.Summary().c_str(), writes.PerRow(),
      check.Summary().c_str(), all.mismatched - check.mismatched);
}

TEST_F(JetStreamE2E, NatsServerRestartedMidRunTheEngineReconnectsAndNothingIsLost) {
  Worker worker(nats_, pg_, dir_, 0);
  ASSERT_TRUE(worker.WaitReady()) << worker.process().ReadLog();
  constexpr int kVehicles = 20, kDurationS = 16;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size() / 3); }, 60s));
  nats_.Restart();  // same port, same store
  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 60s))
      << Rows(pg_) << " of " << expected.size() << "\n"
      << worker.process().ReadLog();
  EXPECT_EQ(worker.process().Stop(SIGTERM, 30s), 0) << worker.process().ReadLog();
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_EQ(check.found, check.expected) << check.Summary() << "\n" << check.first_problems;
  EXPECT_EQ(check.unexpected, 0u) << check.Summary() << "\n" << check.first_problems;
  std::printf("jetstream e2e, nats-server restarted mid-run: %s\n", check.Summary().c_str());
}

}  // namespace
}  // namespace fleetflow::testing

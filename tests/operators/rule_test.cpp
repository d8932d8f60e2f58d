// The rule operator against a real nats-server with JetStream and a real PostgreSQL: each alarm
// event is stored once in the alarm stream, its alarm is one row of the alarm table, and the
// vehicle receives the event and the rule's command; events wait while NATS is down, and the
// vehicles' state is stored only once the events before it are.
#include "rule.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "alarm.hpp"
#include "fleetflow/testkit/harness.hpp"
#include "nats_fixture.hpp"
#include "registry.hpp"

namespace fleetflow::testing {
namespace {

using namespace testkit;
using ::testing::ElementsAre;

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kT0 = 1'700'000'000 * kS;

/// Window `s` (seconds after kT0) of partition 0: one row per vehicle, speed held at `speed`.
Body Window(int64_t s, const std::vector<std::pair<std::string, double>>& rows) {
  WindowBatch b;
  b.window_ns = kT0 + s * kS;
  b.every_ns = kS;
  b.sensors = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"speed"});
  for (const auto& [vehicle, speed] : rows) {
    wire::Point p;
    p.ts_ns = b.window_ns;
    p.value = speed;
    b.AddRow(vehicle, {Slot{p, std::nullopt}});
  }
  return b;
}

/// A registry whose rule nodes keep their partitions' state in `snapshots` (workers sharing it
/// hand partitions over through it).
Registry WithSnapshots(std::shared_ptr<SnapshotStore> snapshots) {
  Registry registry;
  RegisterRule(registry, std::move(snapshots));
  return registry;
}

class RuleTest : public NatsServerTest {
 protected:
  static void SetUpTestSuite() {
    if (!PostgresServer::Available()) return;
    pg_ = new PostgresServer();
    pg_->Start();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  void SetUp() override {
    if (!PostgresServer::Available()) {
      GTEST_SKIP() << "*** PostgreSQL server binaries not found: these integration tests did NOT "
                      "run; run scripts/deps.sh ***";
    }
    NatsServerTest::SetUp();
    table_ = "alarms_" + std::to_string(++tables_);
  }

  std::string Config(const std::string& extra = "") const {
    return R"({"url": ")" + server_.url() + R"(", "conninfo": ")" + pg_->conninfo() +
           R"(", "table": ")" + table_ + R"(",
        "columns": [{"name": "speed", "sensor": "speed"}],
        "rules": [{"name": "fast", "when": "speed > 30", "clear": "speed < 25",
                   "severity": "critical", "value": "speed", "message": "too fast",
                   "on_raise": "rate gps 20", "on_clear": "rate gps 10"}])" +
           extra + "}";
  }

  /// Every event in stream ALARMS, as (subject, event).
  std::vector<std::pair<std::string, AlarmEvent>> Stored() {
    std::vector<std::pair<std::string, AlarmEvent>> out;
    if (!js_->FindStream("ALARMS")) return out;
    auto reader = js_->ReadStream("ALARMS", ">", {1, 0});
    for (uint64_t n = 0; n < reader->total(); ++n) {
      const auto m = reader->Next(5000);
      if (!m) break;
      const auto e =
          ParseAlarmJson(std::string_view(static_cast<const char*>(m->data()), m->size()));
      EXPECT_TRUE(e.has_value());
      if (e) out.emplace_back(std::string(m->subject()), *e);
    }
    return out;
  }

  static inline PostgresServer* pg_ = nullptr;
  static inline int tables_ = 0;
  std::string table_;
};

TEST_F(RuleTest, AnAlarmGoesToTheStreamTheTableAndTheVehicleWithItsCommands) {
  auto to_vehicle = conn_->SubscribeSync("vehicle.v1.cmd.>");
  conn_->Flush(2000);
  OperatorHarness h("rule", Config());
  h.Feed(Window(10, {{"v1", 20}, {"v2", 20}}));
  h.Feed(Window(11, {{"v1", 35}, {"v2", 20}}));  // raised at 11 s
  h.Feed(Window(12, {{"v1", 28}, {"v2", 20}}));  // between the thresholds: still active
  h.Feed(Window(13, {{"v1", 24}, {"v2", 20}}));  // cleared at 13 s
  h.TickAt(kT0 + 15 * kS);

  const auto stored = Stored();
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].first, "alarm.v1.fast");
  EXPECT_TRUE(stored[0].second.raised);
  EXPECT_EQ(stored[0].second.time_ns, kT0 + 11 * kS);
  EXPECT_EQ(stored[0].second.value, 35.0);
  EXPECT_EQ(stored[0].second.severity, "critical");
  EXPECT_EQ(stored[0].second.message, "too fast");
  EXPECT_FALSE(stored[1].second.raised);
  EXPECT_EQ(stored[1].second.time_ns, kT0 + 13 * kS);
  EXPECT_EQ(stored[1].second.raised_ns, kT0 + 11 * kS);

  EXPECT_EQ(pg_->Psql("SET TimeZone = 'UTC'; SELECT vehicle_id, rule, raised, cleared, severity, "
                      "value, clear_value, message FROM " +
                      table_),
            "v1|fast|2023-11-14 22:13:31+00|2023-11-14 22:13:33+00|critical|35|24|too fast");

  std::vector<std::string> got;
  bool no_responders = false;
  for (int i = 0; i < 4; ++i) {
    const auto m = to_vehicle->Next(5000, no_responders);
    ASSERT_TRUE(m) << "message " << i << " to the vehicle";
    got.push_back(std::string(m->subject()) + " " +
                  (m->subject() == "vehicle.v1.cmd.alarm"
                       ? std::string(ParseAlarmJson(m->text())->raised ? "raised" : "cleared")
                       : std::string(m->text())));
  }
  EXPECT_THAT(got, ElementsAre("vehicle.v1.cmd.alarm raised", "vehicle.v1.cmd.rate gps 20",
                               "vehicle.v1.cmd.alarm cleared", "vehicle.v1.cmd.rate gps 10"));
  EXPECT_EQ(h.Counter("alarms_raised"), 1u);
  EXPECT_EQ(h.Counter("alarms_cleared"), 1u);
  EXPECT_EQ(h.Counter("alarm_events_published"), 2u);
  EXPECT_EQ(h.Counter("rule_rows_evaluated"), 8u);
}

TEST_F(RuleTest, EventsEvaluatedAgainAreStoredOnceAndTheTableKeepsOneRowPerAlarm) {
  for (int run = 0; run < 2; ++run) {  // a second worker evaluating the same rows again
    OperatorHarness h("rule", Config());
    h.Feed(Window(10, {{"v1", 40}}));
    h.Feed(Window(11, {{"v1", 10}}));
    h.TickAt(kT0 + 12 * kS, /*drain=*/true);
  }
  EXPECT_EQ(Stored().size(), 2u) << "the stream drops an event it holds (Nats-Msg-Id)";
  EXPECT_EQ(pg_->Psql("SELECT count(*), count(cleared) FROM " + table_), "1|1");
}

TEST_F(RuleTest, EventsWaitWhileNatsIsDownAndTheStateIsNotStoredPastThem) {
  auto snapshots = std::make_shared<MemorySnapshotStore>();
  const Registry registry = WithSnapshots(snapshots);
  HarnessOptions options;
  options.registry = &registry;
  OperatorHarness h("rule", Config(R"(, "flush_ms": 100)"), options);
  h.Feed(Window(10, {{"v1", 20}}));
  h.TickAt(kT0 + 11 * kS);
  ASSERT_EQ(Stored().size(), 0u);
  const size_t saves = snapshots->saves();
  EXPECT_GE(saves, 1u);

  server_.Stop();
  h.Feed(Window(11, {{"v1", 40}}));  // raised while the stream cannot take it
  for (int s = 12; s < 16; ++s) h.TickAt(kT0 + s * kS);
  EXPECT_EQ(snapshots->saves(), saves) << "no state stored past an event not stored";
  EXPECT_GE(h.Counter("alarm_action_failures"), 1u);

  server_.Restart();
  // The next Ticks store the event (retried within 5 s), then the state.
  int64_t s = 16;
  ASSERT_TRUE(WaitFor(
      [&] {
        h.TickAt(kT0 + s++ * kS);
        return !Stored().empty();
      },
      std::chrono::seconds(30), std::chrono::milliseconds(100)));
  ASSERT_EQ(Stored().size(), 1u);
  h.TickAt(kT0 + (s + 1) * kS);
  EXPECT_GT(snapshots->saves(), saves);
  EXPECT_EQ(pg_->Psql("SELECT count(*) FROM " + table_), "1");
}

TEST_F(RuleTest, ARevokedPartitionsStateMovesToItsNextOwner) {
  auto snapshots = std::make_shared<MemorySnapshotStore>();
  const Registry registry = WithSnapshots(snapshots);
  HarnessOptions options;
  options.registry = &registry;
  {
    OperatorHarness a("rule", Config(), options);
    a.Feed(PartitionEvent{PartitionEvent::Kind::kAssigned, 0, std::nullopt, nullptr});
    a.Feed(Window(10, {{"v1", 40}}));
    PartitionEvent revoke{PartitionEvent::Kind::kRevoked, 0, std::nullopt,
                          std::make_shared<Handover>()};
    a.Feed(revoke);
  }
  OperatorHarness b("rule", Config(), options);
  b.Feed(PartitionEvent{PartitionEvent::Kind::kAssigned, 0, std::nullopt, nullptr});
  b.Feed(Window(10, {{"v1", 40}}));  // emitted again by the join: skipped
  b.Feed(Window(11, {{"v1", 40}}));  // still active: nothing
  b.Feed(Window(12, {{"v1", 10}}));  // cleared by the next owner
  b.TickAt(kT0 + 13 * kS);
  const auto stored = Stored();
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_TRUE(stored[0].second.raised);
  EXPECT_FALSE(stored[1].second.raised);
  EXPECT_EQ(stored[1].second.raised_ns, kT0 + 10 * kS);
  EXPECT_EQ(b.Counter("rule_rows_skipped"), 1u);
  EXPECT_EQ(b.Gauge("alarms_active"), 0.0);
}

}  // namespace
}  // namespace fleetflow::testing

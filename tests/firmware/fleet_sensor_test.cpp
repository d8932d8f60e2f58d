// fleet-sensor and fleetctl against a real nats-server: status on/off, commands, link loss
// (server restart) with and without buffer overflow, TLS and NKey connections.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <thread>

#include "jetstream.hpp"
#include "sensor_fixture.hpp"

namespace fleetflow::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;

// Fixed NKey test data: user seeds and the public key of the first.
constexpr char kSeed[] = "SUAACAQDAQCQMBYIBEFAWDANBYHRAEISCMKBKFQXDAMRUGY4DUPB6IC5CQ";
constexpr char kPublicKey[] = "UB43KVROR7TFJ6KAPCYRF2FJROTZAH4FHLTJLPWX4DRZCC5NASLGJBFE";
constexpr char kOtherSeed[] = "SUAGKZTHNBUWU23MNVXG64DROJZXI5LWO54HS6T3PR6X474AQGBIHBH5L4";

nats::ConnectOptions Plain(const NatsServer& server) {
  nats::ConnectOptions o;
  o.url = server.url();
  return o;
}

std::vector<std::string> SensorArgs(const std::string& url, const std::string& vehicle,
                                    std::vector<std::string> more) {
  std::vector<std::string> argv = {
      FirmwareBin("fleet-sensor"), "--vehicle", vehicle, "--nats-url", url,
      "--reconnect-wait-ms",       "100"};
  argv.insert(argv.end(), more.begin(), more.end());
  return argv;
}

CommandResult Fleetctl(const std::string& url, std::vector<std::string> args) {
  args.insert(args.begin(), {FirmwareBin("fleetctl"), "--nats-url", url});
  return RunCommand(args, seconds(15));
}

// The highest seq of `seqs` with every seq from 0 to it present, or -1.
int64_t ContiguousUpTo(const std::set<uint32_t>& seqs) {
  int64_t expect = 0;
  for (uint32_t s : seqs) {
    if (s != expect) break;
    ++expect;
  }
  return expect - 1;
}

class FleetSensorTest : public ::testing::Test {
 protected:
  void SetUp() override { FF_REQUIRE_NATS_SERVER(); }
  /// fleet-sensor as `vehicle` on `url` with the arguments `more`, its output in sensor.log.
  Process Sensor(const std::string& url, const std::string& vehicle,
                 std::vector<std::string> more) const {
    return Process(SensorArgs(url, vehicle, std::move(more)), dir_.File("sensor.log"));
  }
  TempDir dir_{"ff-sensor"};
};

TEST_F(FleetSensorTest, PublishesOnAtStartAndOffAtSigterm) {
  NatsServer server;
  server.Start();
  VehicleCollector collector(Plain(server), "s1");
  Process sensor = Sensor(server.url(), "s1", {"--sensors", "speed=20,gps=10"});
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= 10 && collector.Count("gps") >= 5; },
                      seconds(10)))
      << sensor.ReadLog();
  EXPECT_EQ(collector.Statuses(), std::vector<std::string>{"on"});
  EXPECT_TRUE(collector.Samples("gps").front().has_position);

  EXPECT_EQ(sensor.Stop(SIGTERM), 0) << sensor.ReadLog();
  ASSERT_TRUE(WaitFor([&] { return collector.LastStatus() == "off"; }, seconds(5)));
  EXPECT_EQ(collector.Statuses(), (std::vector<std::string>{"on", "off"}));
  const auto final_status = FinalStatus(sensor.ReadLog());
  ASSERT_TRUE(final_status) << sensor.ReadLog();
  const control::Counters& c = final_status->counters;
  EXPECT_EQ(c.published_samples, c.samples);
  EXPECT_EQ(c.buffered_bytes, 0u);
  EXPECT_EQ(c.dropped_samples, 0u);
  EXPECT_EQ(collector.Seqs("speed").size() + collector.Seqs("gps").size(), c.samples);
}

TEST_F(FleetSensorTest, FleetctlChangesRatesSleepsAndWakes) {
  NatsServer server;
  server.Start();
  const std::string url = server.url();
  VehicleCollector collector(Plain(server), "c1");
  Process sensor = Sensor(url, "c1", {"--sensors", "speed=10,soc=5"});
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= 3; }, seconds(10)))
      << sensor.ReadLog();

  CommandResult r = Fleetctl(url, {"rate", "c1", "speed", "50"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("speed=50"));
  const int64_t changed = WallNs();
  ASSERT_TRUE(
      WaitFor([&] { return collector.NewestTs("speed") >= changed + 2200 * kMs; }, seconds(10)));
  const size_t n = collector.CountBetween("speed", changed + 200 * kMs, changed + 2200 * kMs);
  EXPECT_NEAR(static_cast<double>(n), 100.0, 5.0);  // 50 Hz over 2 s, within 5%
  const auto status = QueryStatus(url, "c1");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->sensors, (std::vector<control::SensorState>{{"speed", 50}, {"soc", 5}}));
  EXPECT_TRUE(status->active);
  EXPECT_GT(status->last_publish_ns, changed);

  r = Fleetctl(url, {"sleep", "c1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("asleep"));
  const int64_t slept = WallNs();
  ASSERT_TRUE(WaitFor([&] { return collector.LastStatus() == "off"; }, seconds(5)));
  std::this_thread::sleep_for(milliseconds(500));  // the time asleep, not a synchronisation
  const int64_t waking = WallNs();
  r = Fleetctl(url, {"wake", "c1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WaitFor([&] { return collector.NewestTs("speed") > waking; }, seconds(5)));
  EXPECT_EQ(collector.CountBetween("speed", slept, waking), 0u);
  EXPECT_EQ(collector.CountBetween("soc", slept, waking), 0u);
  EXPECT_EQ(collector.Statuses(), (std::vector<std::string>{"on", "off", "on"}));

  r = Fleetctl(url, {"rate", "c1", "nope", "5"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("unknown sensor 'nope'"));
  r = Fleetctl(url, {"sleep", "ghost"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("no responders"));
  r = Fleetctl(url, {"--timeout", "300", "status", "c1", "ghost"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.out, HasSubstr("c1"));
  EXPECT_THAT(r.err, HasSubstr("ghost"));
  r = Fleetctl(url, {"--timeout", "500", "status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("c1"));
  EXPECT_EQ(Fleetctl(url, {"rate", "c1", "speed"}).exit_code, 1);

  sensor.Signal(SIGSTOP);  // subscribed but unable to answer
  r = Fleetctl(url, {"--timeout", "300", "wake", "c1"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("no reply from vehicle c1 within 300 ms"));
  sensor.Signal(SIGCONT);
}

size_t Occurrences(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// The engine's alarms on vehicle.<id>.cmd.alarm, published as the engine does (no reply
// subject) or as requests: raised, raised again (a redelivery), cleared, cleared without its
// raise, and payloads that are not an alarm for this vehicle. The status counts them and lists
// the alarms still active; each is logged once; sampling goes on unchanged.
TEST_F(FleetSensorTest, AlarmsAreKeptCountedAndLoggedWithoutChangingSampling) {
  NatsServer server;
  server.Start();
  const std::string url = server.url();
  VehicleCollector collector(Plain(server), "a1");
  Process sensor = Sensor(url, "a1", {"--sensors", "speed=20"});
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= 5; }, seconds(10)))
      << sensor.ReadLog();

  auto engine = nats::Connection::Connect(Plain(server));
  const std::string subject = control::CommandSubject("a1", control::kAlarm);
  const auto request = [&](const std::string& payload) {
    return control::ParseStatusJson(engine->Request(subject, payload, 5000).text());
  };
  control::AlarmEvent overspeed;
  overspeed.vehicle = "a1";
  overspeed.rule = "overspeed";
  overspeed.raised = true;
  overspeed.severity = control::AlarmSeverity::kWarning;
  overspeed.time_ns = overspeed.raised_ns = 1'700'000'005'000'000'000;
  overspeed.value = 41.7;
  overspeed.message = "speed above 38.9 m/s for 5 s";
  // With a reply subject an alarm is answered like any command: the status after it.
  const auto raised = request(control::ToJson(overspeed));
  ASSERT_TRUE(raised);
  EXPECT_TRUE(raised->ok) << raised->error;
  EXPECT_EQ(raised->active_alarms, std::vector<std::string>{"overspeed"});
  EXPECT_EQ(raised->counters.alarms_raised, 1u);

  control::AlarmEvent low_soc = overspeed;
  low_soc.rule = "low_soc";
  low_soc.severity = control::AlarmSeverity::kCritical;
  low_soc.time_ns = low_soc.raised_ns = overspeed.raised_ns + 1;
  low_soc.value.reset();
  low_soc.message.clear();
  control::AlarmEvent cleared = overspeed;
  cleared.raised = false;
  cleared.time_ns = overspeed.raised_ns + 7'000'000'000;
  cleared.value = 37.2;
  control::AlarmEvent brake = cleared;  // its raise never arrives
  brake.rule = "brake_wear";
  brake.raised_ns = overspeed.raised_ns - 60'000'000'000;
  control::AlarmEvent brake_late = brake;  // then it does, after its clear
  brake_late.raised = true;
  brake_late.time_ns = brake.raised_ns;
  for (const control::AlarmEvent& a : {low_soc, overspeed, cleared, brake, brake_late}) {
    engine->Publish(subject, control::ToJson(a));
  }
  engine->Flush(5000);
  const auto garbage = request(R"({"vehicle":"a1","rule":"overspeed","severity":"warning"})");
  ASSERT_TRUE(garbage);
  EXPECT_FALSE(garbage->ok);
  EXPECT_THAT(garbage->error, HasSubstr("bad alarm: no 'event'"));
  control::AlarmEvent elsewhere = overspeed;
  elsewhere.vehicle = "a2";
  const auto misrouted = request(control::ToJson(elsewhere));
  ASSERT_TRUE(misrouted);
  EXPECT_FALSE(misrouted->ok);
  EXPECT_THAT(misrouted->error, HasSubstr("alarm for vehicle 'a2' sent to vehicle 'a1'"));
  // No reply subject: counted; the same reason again within the minute is not logged again.
  engine->Publish(subject, "not json at all");
  engine->Publish(subject, "[\"still not\"]");

  std::optional<control::VehicleStatus> status;
  ASSERT_TRUE(WaitFor(
      [&] {
        status = QueryStatus(url, "a1");
        return status && status->counters.alarms_invalid == 4;
      },
      seconds(10)))
      << sensor.ReadLog();
  const control::Counters& c = status->counters;
  EXPECT_EQ(c.alarms_raised, 2u);     // overspeed, low_soc
  EXPECT_EQ(c.alarms_cleared, 2u);    // overspeed, brake_wear
  EXPECT_EQ(c.alarms_duplicate, 2u);  // overspeed again, brake_wear's late raise
  EXPECT_EQ(status->active_alarms, std::vector<std::string>{"low_soc"});
  // Sampling goes on as it was.
  EXPECT_TRUE(status->active);
  EXPECT_EQ(status->sensors, (std::vector<control::SensorState>{{"speed", 20}}));
  const size_t samples = collector.Count("speed");
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= samples + 10; }, seconds(10)))
      << sensor.ReadLog();

  const CommandResult table = Fleetctl(url, {"status", "a1"});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("ALARMS"));
  EXPECT_THAT(table.out, HasSubstr("low_soc"));

  // One line per alarm raised or cleared, none for the duplicates; each reason refused once.
  const std::string log = sensor.ReadLog();
  EXPECT_EQ(Occurrences(log, " warning alarm raised "), 2u) << log;
  EXPECT_EQ(Occurrences(log, " info alarm cleared "), 2u) << log;
  EXPECT_EQ(Occurrences(log, " warning alarm refused "), 3u) << log;
  EXPECT_THAT(log, HasSubstr("warning alarm raised vehicle=a1 rule=overspeed severity=warning "
                             "value=41.7 raised=2023-11-14T22:13:25.000Z "
                             "raised_ns=1700000005000000000 message=\"speed above 38.9 m/s for "
                             "5 s\""));
  EXPECT_THAT(log, HasSubstr("rule=low_soc severity=critical value=null"));
  EXPECT_THAT(log, HasSubstr("info alarm cleared vehicle=a1 rule=overspeed severity=warning "
                             "value=37.2 raised=2023-11-14T22:13:25.000Z "
                             "raised_ns=1700000005000000000 cleared=2023-11-14T22:13:32.000Z"));
  EXPECT_THAT(log, HasSubstr("rule=brake_wear"));
  EXPECT_THAT(log, HasSubstr("raise_missed=true"));
  EXPECT_THAT(log, HasSubstr("reason=\"no 'event'\""));

  EXPECT_EQ(sensor.Stop(SIGTERM), 0);
  const auto final_status = FinalStatus(sensor.ReadLog());
  ASSERT_TRUE(final_status) << sensor.ReadLog();
  EXPECT_EQ(final_status->active_alarms, std::vector<std::string>{"low_soc"});
  EXPECT_EQ(final_status->counters.alarms_invalid, 4u);
}

// Stops the server for `outage` while the sensor samples, then brings it back. The sensor is
// held (SIGSTOP) until the collector has resubscribed, so nothing it flushes goes unseen.
void Outage(NatsServer& server, VehicleCollector& collector, Process& sensor, milliseconds outage) {
  server.Stop();
  std::this_thread::sleep_for(outage);  // the link is down this long
  sensor.Signal(SIGSTOP);
  server.Start();
  ASSERT_TRUE(WaitFor([&] { return collector.connection().connected(); }, seconds(10)));
  collector.connection().Flush(5000);  // the subscription is back on the server
  sensor.Signal(SIGCONT);
}

TEST_F(FleetSensorTest, BuffersThroughServerRestartAndDeliversEverySample) {
  NatsServer server;
  server.Start();
  VehicleCollector collector(Plain(server), "r1");
  Process sensor = Sensor(server.url(), "r1", {"--sensors", "speed=50"});
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= 25; }, seconds(10)))
      << sensor.ReadLog();
  const int64_t before = ContiguousUpTo(collector.Seqs("speed"));
  Outage(server, collector, sensor, milliseconds(1000));
  // At least the 50 samples of the outage arrive, and no sequence number is missing.
  ASSERT_TRUE(
      WaitFor([&] { return ContiguousUpTo(collector.Seqs("speed")) > before + 60; }, seconds(15)))
      << "contiguous up to " << ContiguousUpTo(collector.Seqs("speed")) << " of "
      << *collector.Seqs("speed").rbegin() << "\n"
      << sensor.ReadLog();
  const auto status = QueryStatus(server.url(), "r1");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->counters.reconnects, 1u);
  EXPECT_EQ(status->counters.dropped_samples, 0u);
  EXPECT_EQ(sensor.Stop(SIGTERM), 0);
}

// Every (sensor, seq) stored in the stream for `vehicle`, and how many messages (copies
// included) hold them; read with a durable consumer of its own.
struct Stored {
  std::map<std::string, std::set<uint32_t>> seqs;  // by sensor
  size_t samples = 0;                              // sample copies, duplicates included
  size_t statuses = 0;
};
Stored ReadStream(nats::JetStream& js, const std::string& vehicle) {
  nats::ConsumerOptions o;
  o.durable = "audit-" + vehicle;
  o.filter_subject = "vehicle." + vehicle + ".*";
  auto reader = js.PullSubscribe(o);
  Stored out;
  for (auto batch = reader->Fetch(1000, 1000); !batch.empty(); batch = reader->Fetch(1000, 1000)) {
    for (const auto& m : batch) {
      const std::string subject(m->subject());
      const wire::Subject parsed = wire::ParseSubject(subject);
      if (parsed.kind == wire::SubjectKind::kStatus) {
        ++out.statuses;
      } else {
        std::vector<wire::Point> points;
        EXPECT_EQ(wire::DecodeBatch(m->data(), m->size(), points), wire::DecodeError::kNone);
        for (const wire::Point& p : points) out.seqs[std::string(parsed.sensor)].insert(p.seq);
        out.samples += points.size();
      }
      m->Ack();
    }
  }
  return out;
}

// --ack jetstream: nats-server killed with SIGKILL under load and restarted on its store, twice:
// once at an arbitrary instant, once after a stall (SIGSTOP) so that messages are certainly on
// their way, unacknowledged, when it dies. Every sample the sensor took is in the stream. A
// second sensor with --ack flush runs alongside, for comparison only: what it loses (the server
// had received but not stored it) is printed.
TEST_F(FleetSensorTest, AcknowledgedSamplesSurviveANatsServerSigkill) {
  NatsServer server;
  server.Start();
  {
    auto conn = nats::Connection::Connect(Plain(server));
    nats::JetStream(*conn).EnsureStream(nats::StreamOptions{});  // TELEMETRY on vehicle.*.*
  }
  const std::vector<std::string> load = {"--sensors", "gps=100,speed=100,soc=100,torque=100",
                                         "--drain-ms", "20000"};
  auto args = [&](const std::string& vehicle, const std::string& ack) {
    std::vector<std::string> more = load;
    more.insert(more.end(), {"--ack", ack, "--ack-timeout-ms", "1000"});
    return SensorArgs(server.url(), vehicle, more);
  };
  Process acked(args("k1", "jetstream"), dir_.File("k1.log"));
  Process flushed(args("k2", "flush"), dir_.File("k2.log"));
  const auto published = [&](const std::string& vehicle) -> uint64_t {
    const auto status = QueryStatus(server.url(), vehicle);
    return status ? status->counters.published_messages : 0;
  };
  // 400 messages a second each: when the server dies, some are always on their way.
  ASSERT_TRUE(WaitFor([&] { return published("k1") >= 800 && published("k2") >= 800; }, seconds(20),
                      milliseconds(200)))
      << acked.ReadLog() << flushed.ReadLog();
  const auto crash = [&](bool stall_first) {
    if (stall_first) {
      server.Signal(SIGSTOP);
      std::this_thread::sleep_for(milliseconds(500));  // the stall, not a synchronisation
    }
    server.Kill();
    std::this_thread::sleep_for(milliseconds(1000));  // the outage, not a synchronisation
    server.Start();                                   // same port, same store
    const uint64_t after_restart = published("k1");
    ASSERT_TRUE(WaitFor([&] { return published("k1") >= after_restart + 800; }, seconds(20),
                        milliseconds(200)))
        << acked.ReadLog();
  };
  crash(false);
  crash(true);
  ASSERT_EQ(acked.Stop(SIGTERM, seconds(30)), 0) << acked.ReadLog();
  ASSERT_EQ(flushed.Stop(SIGTERM, seconds(30)), 0) << flushed.ReadLog();

  const auto k1 = FinalStatus(acked.ReadLog());
  const auto k2 = FinalStatus(flushed.ReadLog());
  ASSERT_TRUE(k1 && k2) << acked.ReadLog() << flushed.ReadLog();
  EXPECT_GE(k1->counters.reconnects, 2u);
  EXPECT_GT(k1->counters.resent_messages, 0u);  // at least those in flight at the second crash
  EXPECT_EQ(k1->counters.dropped_samples, 0u);
  EXPECT_EQ(k1->counters.buffered_bytes, 0u);  // nothing left waiting for an ack
  EXPECT_EQ(k1->counters.published_samples, k1->counters.samples);

  auto conn = nats::Connection::Connect(Plain(server));
  nats::JetStream js(*conn);
  const Stored stored = ReadStream(js, "k1");
  // Every sample taken, by sensor: seq 0 to the last one, none missing.
  uint64_t distinct = 0;
  for (const char* sensor : {"gps", "speed", "soc", "torque"}) {
    const std::set<uint32_t>& seqs =
        stored.seqs.count(sensor) ? stored.seqs.at(sensor) : std::set<uint32_t>{};
    ASSERT_FALSE(seqs.empty()) << sensor;
    EXPECT_EQ(*seqs.rbegin() + 1, seqs.size()) << sensor << ": a gap in the stream";
    distinct += seqs.size();
  }
  EXPECT_EQ(distinct, k1->counters.samples);
  EXPECT_GE(stored.statuses, 2u);  // on, off

  const Stored flush_stored = ReadStream(js, "k2");
  uint64_t flush_distinct = 0;
  for (const auto& [sensor, seqs] : flush_stored.seqs) flush_distinct += seqs.size();
  std::printf(
      "[ info ] 2 SIGKILLs under 400 msgs/s: --ack jetstream %llu samples taken, %llu in the "
      "stream (%zu copies, %llu messages resent); --ack flush %llu confirmed, %llu in the "
      "stream\n",
      static_cast<unsigned long long>(k1->counters.samples),
      static_cast<unsigned long long>(distinct), stored.samples,
      static_cast<unsigned long long>(k1->counters.resent_messages),
      static_cast<unsigned long long>(k2->counters.published_samples),
      static_cast<unsigned long long>(flush_distinct));
}

// Acknowledgements that never arrive (here the vehicle may not subscribe to its inbox): after
// every --ack-timeout-ms the sensor sends the oldest message again, alone (a probe: nothing newer
// leaves before the stream acknowledged it), and the stream keeps one copy of each message
// (Nats-Msg-Id de-duplication); nothing counts as published, the ring keeps everything.
TEST_F(FleetSensorTest, MessagesResentForLostAcksAreStoredOnce) {
  std::ofstream(dir_.File("auth.conf")) << R"(authorization { users = [
    { user: admin, password: admin }
    { user: vehicle, password: secret,
      permissions: { publish: "vehicle.>", subscribe: { deny: "_INBOX.>" } } }
  ] })";
  std::ofstream(dir_.File("admin.pw")) << "admin\n";
  std::ofstream(dir_.File("vehicle.pw")) << "secret\n";
  NatsServer server({}, dir_.File("auth.conf"));
  server.Start();
  nats::ConnectOptions admin = Plain(server);
  admin.user = "admin";
  admin.password_file = dir_.File("admin.pw");
  auto conn = nats::Connection::Connect(admin);
  nats::JetStream js(*conn);
  js.EnsureStream(nats::StreamOptions{});
  const CommandResult r = RunCommand(
      SensorArgs(server.url(), "d3",
                 {"--sensors", "speed=20", "--ack", "jetstream", "--ack-timeout-ms", "100",
                  "--duration", "2", "--drain-ms", "1000", "--quiet"}),
      seconds(15), {{"NATS_USER", "vehicle"}, {"NATS_PASSWORD_FILE", dir_.File("vehicle.pw")}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto status = FinalStatus(r.out);
  ASSERT_TRUE(status) << r.out;
  EXPECT_EQ(status->counters.published_messages, 0u);
  EXPECT_GE(status->counters.resent_messages, 10u);  // 3 s at 100 ms, checked every 200 ms
  EXPECT_GT(status->counters.buffered_bytes, 0u);

  const Stored stored = ReadStream(js, "d3");
  EXPECT_EQ(stored.statuses, 1u);  // `on`, first in the ring: resent, stored once
  ASSERT_TRUE(stored.seqs.count("speed"));
  const std::set<uint32_t>& seqs = stored.seqs.at("speed");
  EXPECT_EQ(*seqs.rbegin() + 1, seqs.size());
  EXPECT_EQ(stored.samples, seqs.size()) << "resends stored twice";
  // What left before the first timeout, not the samples taken after it.
  EXPECT_LT(seqs.size(), status->counters.samples / 2);
}

// --ack jetstream: the stream stores nothing for over 2 s (here it is gone; on a cluster it elects
// its leader) while the vehicle keeps sampling. Once it stores again, what the vehicle kept is
// stored before anything newer: a window join takes the stream's order for event-time progress,
// and newer samples ahead of older ones by more than its lateness would make those late. The
// stream comes back right after the vehicle sent what it kept again, while newer samples keep
// coming: the moment where anything sent behind the oldest would be stored first.
TEST_F(FleetSensorTest, WhatTheStreamDidNotStoreIsStoredBeforeAnythingNewer) {
  NatsServer server;
  server.Start();
  auto conn = nats::Connection::Connect(Plain(server));
  nats::JetStream js(*conn);
  js.EnsureStream(nats::StreamOptions{});
  Process sensor(SensorArgs(server.url(), "o1",
                            {"--sensors", "speed=50", "--ack", "jetstream", "--ack-timeout-ms",
                             "1000", "--drain-ms", "10000"}),
                 dir_.File("o1.log"));
  const auto published = [&]() -> uint64_t {
    const auto status = QueryStatus(server.url(), "o1");
    return status ? status->counters.published_messages : 0;
  };
  ASSERT_TRUE(WaitFor([&] { return published() >= 20; }, seconds(20), milliseconds(200)))
      << sensor.ReadLog();
  const auto resent = [&]() -> uint64_t {
    const auto status = QueryStatus(server.url(), "o1");
    return status ? status->counters.resent_messages : 0;
  };
  conn->Request("$JS.API.STREAM.DELETE.TELEMETRY", "", 5000);
  std::this_thread::sleep_for(milliseconds(2000));  // the outage, not a synchronisation
  const uint64_t resent_before = resent();
  ASSERT_TRUE(WaitFor([&] { return resent() > resent_before; }, seconds(10), milliseconds(10)))
      << sensor.ReadLog();
  js.EnsureStream(nats::StreamOptions{});
  const uint64_t back = published();
  ASSERT_TRUE(WaitFor([&] { return published() >= back + 40; }, seconds(20), milliseconds(200)))
      << sensor.ReadLog();
  ASSERT_EQ(sensor.Stop(SIGTERM, seconds(30)), 0) << sensor.ReadLog();
  const auto final_status = FinalStatus(sensor.ReadLog());
  ASSERT_TRUE(final_status) << sensor.ReadLog();
  EXPECT_GT(final_status->counters.resent_messages, 0u);

  // The stream's speed samples in its order: none older than one stored before it.
  nats::ConsumerOptions o;
  o.durable = "audit-o1";
  o.filter_subject = "vehicle.o1.speed";
  auto reader = js.PullSubscribe(o);
  int64_t newest = -1, older = 0, samples = 0;
  for (auto batch = reader->Fetch(1000, 1000); !batch.empty(); batch = reader->Fetch(1000, 1000)) {
    for (const auto& m : batch) {
      std::vector<wire::Point> points;
      ASSERT_EQ(wire::DecodeBatch(m->data(), m->size(), points), wire::DecodeError::kNone);
      for (const wire::Point& p : points) {
        if (int64_t{p.seq} < newest) ++older;
        newest = std::max<int64_t>(newest, p.seq);
        ++samples;
      }
      m->Ack();
    }
  }
  EXPECT_GT(samples, 100);
  EXPECT_EQ(older, 0) << "samples stored after newer ones, of " << samples;
}

TEST_F(FleetSensorTest, FullBufferDropsOldestAndCountsThem) {
  NatsServer server;
  server.Start();
  VehicleCollector collector(Plain(server), "d1");
  Process sensor(
      SensorArgs(server.url(), "d1", {"--sensors", "speed=50", "--buffer-bytes", "2048"}),
      dir_.File("sensor.log"));
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= 25; }, seconds(10)))
      << sensor.ReadLog();
  Outage(server, collector, sensor, milliseconds(1500));  // ~75 samples, ~5 KB: too many
  std::optional<control::VehicleStatus> status;
  ASSERT_TRUE(WaitFor(
      [&] {
        status = QueryStatus(server.url(), "d1");
        return status && status->counters.reconnects == 1 && status->counters.buffered_bytes < 512;
      },
      seconds(15)));
  const std::set<uint32_t> seqs = collector.Seqs("speed");
  const uint64_t missing = *seqs.rbegin() + 1 - seqs.size();
  const uint64_t dropped = status->counters.dropped_samples;
  EXPECT_GT(missing, 10u);
  // Every missing sample was dropped; a dropped one may still have arrived if it was on the
  // wire, unconfirmed, when the server went away.
  EXPECT_LE(missing, dropped);
  EXPECT_LE(dropped, missing + 25);  // 50 Hz x the 200 ms confirmation interval, and slack
  EXPECT_EQ(status->counters.dropped_messages, dropped);  // one sample per message
  // The newest samples made it: the ring kept the latest ones.
  const uint32_t last_seq = *seqs.rbegin();
  EXPECT_TRUE(seqs.count(last_seq - 1) && seqs.count(last_seq - 10));
  EXPECT_EQ(sensor.Stop(SIGTERM), 0);
}

TEST_F(FleetSensorTest, StartsWhileTheServerIsDownAndDeliversOnceItIsUp) {
  NatsServer server;
  server.Start();
  server.Stop();  // the port is known; the link is down at boot
  Process sensor = Sensor(server.url(), "b1", {"--sensors", "speed=50"});
  std::this_thread::sleep_for(milliseconds(500));  // samples taken while offline
  sensor.Signal(SIGSTOP);                          // held until the collector listens
  server.Start();
  VehicleCollector collector(Plain(server), "b1");
  sensor.Signal(SIGCONT);
  ASSERT_TRUE(WaitFor([&] { return ContiguousUpTo(collector.Seqs("speed")) >= 40; }, seconds(15)))
      << sensor.ReadLog();
  EXPECT_EQ(collector.Statuses().front(), "on");
  EXPECT_THAT(sensor.ReadLog(), HasSubstr("retrying in the background"));
  EXPECT_EQ(sensor.Stop(SIGTERM), 0);
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI.
void MakeCertificates(const TempDir& dir, const std::string& ca, const std::string& name,
                      const std::string& ext) {
  const auto run = [](std::vector<std::string> argv) {
    const CommandResult r = RunCommand(argv, seconds(30));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  };
  const std::string ec = "ec_paramgen_curve:prime256v1";
  if (!std::ifstream(dir.File(ca + ".pem"))) {
    run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", ec, "-nodes", "-keyout",
         dir.File(ca + "-key.pem"), "-out", dir.File(ca + ".pem"), "-days", "2", "-subj",
         "/CN=" + ca});
  }
  std::ofstream(dir.File(name + ".ext")) << ext << "\n";
  run({"openssl", "req", "-newkey", "ec", "-pkeyopt", ec, "-nodes", "-keyout",
       dir.File(name + "-key.pem"), "-out", dir.File(name + ".csr"), "-subj", "/CN=" + name});
  run({"openssl", "x509", "-req", "-in", dir.File(name + ".csr"), "-CA", dir.File(ca + ".pem"),
       "-CAkey", dir.File(ca + "-key.pem"), "-CAcreateserial", "-out", dir.File(name + ".pem"),
       "-days", "2", "-extfile", dir.File(name + ".ext")});
}

TEST_F(FleetSensorTest, TlsWithClientCertificateIsAcceptedOthersRefused) {
  ASSERT_NO_FATAL_FAILURE(
      MakeCertificates(dir_, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost"));
  ASSERT_NO_FATAL_FAILURE(MakeCertificates(dir_, "ca", "client", "extendedKeyUsage=clientAuth"));
  ASSERT_NO_FATAL_FAILURE(
      MakeCertificates(dir_, "rogue-ca", "rogue", "extendedKeyUsage=clientAuth"));
  std::ofstream(dir_.File("tls.conf"))
      << "tls {\n  cert_file: \"" << dir_.File("server.pem") << "\"\n  key_file: \""
      << dir_.File("server-key.pem") << "\"\n  ca_file: \"" << dir_.File("ca.pem")
      << "\"\n  verify: true\n  timeout: 5\n}\n";
  NatsServer server({}, dir_.File("tls.conf"));
  server.Start();
  nats::ConnectOptions tls = Plain(server);
  tls.ca_file = dir_.File("ca.pem");
  tls.cert_file = dir_.File("client.pem");
  tls.key_file = dir_.File("client-key.pem");
  VehicleCollector collector(tls, "t1");

  // Credentials from the environment, as a deployed vehicle would have them.
  Process sensor(
      SensorArgs(server.url(), "t1", {"--sensors", "speed=20"}), dir_.File("sensor.log"),
      {{"NATS_CA", tls.ca_file}, {"NATS_CERT", tls.cert_file}, {"NATS_KEY", tls.key_file}});
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= 5; }, seconds(10)))
      << sensor.ReadLog();
  EXPECT_EQ(sensor.Stop(SIGTERM), 0);
  EXPECT_TRUE(WaitFor([&] { return collector.LastStatus() == "off"; }, seconds(5)));

  const auto refused = [&](std::vector<std::string> flags) {
    const CommandResult r =
        RunCommand(SensorArgs(server.url(), "t2", std::move(flags)), seconds(15));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    return r.err;
  };
  EXPECT_THAT(refused({"--ca", tls.ca_file}), HasSubstr("nats: connect"));  // no client cert
  EXPECT_THAT(refused({"--ca", tls.ca_file, "--cert", dir_.File("rogue.pem"), "--key",
                       dir_.File("rogue-key.pem")}),
              HasSubstr("nats: connect"));
  EXPECT_THAT(
      refused({"--ca", dir_.File("rogue-ca.pem"), "--cert", tls.cert_file, "--key", tls.key_file}),
      HasSubstr("SSL"));  // the server's certificate is not trusted
  EXPECT_EQ(collector.Statuses(), (std::vector<std::string>{"on", "off"}));  // t1's only
}

TEST_F(FleetSensorTest, NKeyIsAcceptedAndAWrongSeedRefused) {
  std::ofstream(dir_.File("auth.conf"))
      << "authorization { users = [ { nkey: " << kPublicKey << " } ] }\n";
  std::ofstream(dir_.File("vehicle.nk")) << kSeed << "\n";
  std::ofstream(dir_.File("other.nk")) << kOtherSeed << "\n";
  NatsServer server({}, dir_.File("auth.conf"));
  server.Start();
  nats::ConnectOptions auth = Plain(server);
  auth.nkey_seed_file = dir_.File("vehicle.nk");
  VehicleCollector collector(auth, "n1");

  Process sensor =
      Sensor(server.url(), "n1", {"--sensors", "speed=20", "--nkey-seed", dir_.File("vehicle.nk")});
  ASSERT_TRUE(WaitFor([&] { return collector.Count("speed") >= 5; }, seconds(10)))
      << sensor.ReadLog();
  EXPECT_EQ(sensor.Stop(SIGTERM), 0);
  EXPECT_TRUE(WaitFor([&] { return collector.LastStatus() == "off"; }, seconds(5)));

  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--nkey-seed", dir_.File("other.nk")},
        std::vector<std::string>{}}) {
    const CommandResult r = RunCommand(SensorArgs(server.url(), "n2", flags), seconds(15));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("Authorization Violation"));
  }
  EXPECT_EQ(collector.Statuses(), (std::vector<std::string>{"on", "off"}));  // n1's only
}

// nats.c 3.4.1 sends no signature when the Ed25519 signature of the server's nonce starts with a
// zero byte (1 nonce in 256), and the server refuses that connection; the wrapper recognises the
// case and shakes hands again (clients/nats_client.cpp, SeedFileSigner). 800 connections meet it
// at least once with a probability of 96%; every one must succeed.
TEST_F(FleetSensorTest, NKeyConnectsWhateverNonceTheServerSends) {
  std::ofstream(dir_.File("auth.conf"))
      << "authorization { users = [ { nkey: " << kPublicKey << " } ] }\n";
  std::ofstream(dir_.File("vehicle.nk")) << kSeed << "\n";
  NatsServer server({}, dir_.File("auth.conf"));
  server.Start();
  nats::ConnectOptions auth = Plain(server);
  auth.nkey_seed_file = dir_.File("vehicle.nk");
  auth.max_reconnect = 0;
  int refused = 0;
  for (int i = 0; i < 800; ++i) {
    try {
      EXPECT_TRUE(nats::Connection::Connect(auth)->connected());
    } catch (const nats::Error& e) {
      ++refused;
      ADD_FAILURE() << "connection " << i << ": " << e.what();
    }
  }
  EXPECT_EQ(refused, 0);
  // Each handshake redone left one refusal in the server's log (the key itself is right).
  const std::string log = server.ReadLog();
  size_t redone = 0;
  for (size_t at = log.find("authentication error"); at != std::string::npos;
       at = log.find("authentication error", at + 1)) {
    ++redone;
  }
  RecordProperty("handshakes_redone", static_cast<int>(redone));
  std::printf(
      "[ info ] 800 NKey connections, %zu handshakes redone after an unsendable "
      "signature\n",
      redone);
}

}  // namespace
}  // namespace fleetflow::testing

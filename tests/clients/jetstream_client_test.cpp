// The JetStream wrapper against a real nats-server behind a TCP proxy that keeps resetting the
// connection: every asynchronous KV write is answered (never pinned by a lost acknowledgement),
// every message of the stream is fetched and acknowledged, and nothing crashes.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "jetstream.hpp"
#include "servers.hpp"
#include "tcp_proxy.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

// Where a message stands, from its acknowledgement subject in both of the server's forms.
TEST(JsMessageTest, ReadsItsPlaceInTheStreamFromEitherReplyForm) {
  FF_REQUIRE_NATS_SERVER();
  NatsServer server;
  server.Start();
  nats::ConnectOptions o;
  o.url = server.url();
  auto conn = nats::Connection::Connect(o);
  const auto message = [&](const char* reply) {
    natsMsg* raw = nullptr;
    EXPECT_EQ(natsMsg_Create(&raw, "vehicle.v1.speed", reply, "x", 1), NATS_OK);
    return std::make_unique<nats::JsMessage>(*conn, nats::Message(raw));
  };
  const auto v1 = message("$JS.ACK.TELEMETRY.fleetflow.2.1234.1200.1700000000123456789.17");
  EXPECT_EQ(v1->delivered(), 2u);
  EXPECT_EQ(v1->stream_sequence(), 1234u);
  EXPECT_EQ(v1->consumer_sequence(), 1200u);
  EXPECT_EQ(v1->stored_ns(), 1'700'000'000'123'456'789);
  EXPECT_EQ(v1->pending(), 17u);
  const auto v2 =
      message("$JS.ACK.hub.ACCOUNTHASH.TELEMETRY.fleetflow.3.99.98.1700000000000000001.5.r4nd");
  EXPECT_EQ(v2->delivered(), 3u);
  EXPECT_EQ(v2->stream_sequence(), 99u);
  EXPECT_EQ(v2->consumer_sequence(), 98u);
  EXPECT_EQ(v2->stored_ns(), 1'700'000'000'000'000'001);
  EXPECT_EQ(v2->pending(), 5u);
  for (const char* odd : {static_cast<const char*>(nullptr), "$JS.ACK.TELEMETRY.fleetflow.2"}) {
    const auto m = message(odd);
    EXPECT_EQ(m->delivered(), odd == nullptr ? 1u : 2u) << (odd ? odd : "no reply");
    EXPECT_EQ(m->stream_sequence(), 0u);
    EXPECT_EQ(m->consumer_sequence(), 0u);
    EXPECT_EQ(m->stored_ns(), 0);
    EXPECT_EQ(m->pending(), 0u);
  }
}

// The consumer a message came from (PullSet's: whose it is), read in the same pass.
TEST(JsMessageTest, ReadsItsConsumerFromEitherReplyForm) {
  using Reply = nats::JsMessage::AckReply;
  const Reply v1 = Reply::Parse("$JS.ACK.TELEMETRY.ff-p3.2.1234.1200.1700000000123456789.17");
  EXPECT_EQ(v1.consumer, "ff-p3");
  EXPECT_EQ(v1.stream_sequence, 1234u);
  const Reply v2 =
      Reply::Parse("$JS.ACK.hub.ACCOUNTHASH.TELEMETRY.ff-p12.3.99.98.1700000000000000001.5.r4nd");
  EXPECT_EQ(v2.consumer, "ff-p12");
  EXPECT_EQ(v2.stream_sequence, 99u);
  for (const char* odd : {"", "$JS.ACK.TELEMETRY", "$JS.ACK.TELEMETRY.ff-p3", "no.dots.here"}) {
    EXPECT_EQ(Reply::Parse(odd).consumer, "") << odd;
  }
  EXPECT_EQ(Reply::Parse("$JS.ACK.TELEMETRY.ff-p3.2").consumer, "ff-p3");
}

TEST(KvAckTest, ParsesAcknowledgementsConflictsAndErrors) {
  auto r = nats::KeyValue::ParseAck(R"({"stream":"KV_telemetry", "seq":42})");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.revision, 42u);
  r = nats::KeyValue::ParseAck(
      R"({"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 41"}})");
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.conflict);
  EXPECT_EQ(r.error, "wrong last sequence: 41");
  r = nats::KeyValue::ParseAck(
      R"({"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}})");
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.conflict);
  EXPECT_EQ(r.error, "maximum messages exceeded");
  for (const char* bad : {"", "{", R"({"stream":"x"})", R"({"seq":-1})", R"({"seq":0})"}) {
    r = nats::KeyValue::ParseAck(bad);
    EXPECT_FALSE(r.ok) << bad;
    EXPECT_FALSE(r.error.empty()) << bad;
  }
}

class JetStreamClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    server_.Start();
  }

  nats::ConnectOptions Options(int port) const {
    nats::ConnectOptions o;
    o.url = "nats://127.0.0.1:" + std::to_string(port);
    o.reconnect_wait_ms = 20;
    return o;
  }

  /// A stream `name` on `<prefix>.>` and the options of a durable consumer "reader" on it.
  static nats::ConsumerOptions StreamAndReader(nats::JetStream& js, const std::string& name,
                                               const std::string& prefix,
                                               int64_t ack_wait_ms = 30'000) {
    js.EnsureStream({.name = name, .subjects = {prefix + ".>"}});
    return {.stream = name,
            .durable = "reader",
            .filter_subject = prefix + ".>",
            .ack_wait_ms = ack_wait_ms};
  }

  /// `count` one-byte messages on `subject`, each with its own message id (`<id>0`, `<id>1`...).
  static void PublishMany(nats::JetStream& js, const std::string& subject, int count,
                          const std::string& id = "") {
    for (int i = 0; i < count; ++i)
      js.Publish(subject, "m", 1, {{"Nats-Msg-Id", id + std::to_string(i)}}, 5000);
  }

  /// Fetches `batch` at a time and acknowledges until `n` messages came, 10 s at most; returns
  /// how many came.
  static size_t FetchAndAckUntil(nats::PullConsumer& pull, size_t n, int batch) {
    size_t total = 0;
    WaitFor(
        [&] {
          for (const auto& m : pull.Fetch(batch, 200)) {
            m->Ack();
            ++total;
          }
          return total >= n;
        },
        10s);
    return total;
  }

  NatsServer server_;
};

/// Scheduling policy of each thread of this process (field 41 of /proc/self/task/<tid>/stat).
std::vector<int> ThreadPolicies() {
  std::vector<int> policies;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t comm_end = stat.rfind(')');  // the name may hold spaces
    if (comm_end == std::string::npos) continue;
    std::istringstream fields(stat.substr(comm_end + 2));  // from field 3 on
    std::string field;
    for (int i = 3; i <= 41 && fields >> field; ++i) {
      if (i == 41) policies.push_back(std::stoi(field));
    }
  }
  return policies;
}

// nats.c's own threads (timers, connection-event callbacks, and the collector that frees every
// received message) run under SCHED_BATCH: woken by a destroyed message, the collector waits for
// the waker's time slice instead of preempting it. The caller's threads keep their policy.
TEST_F(JetStreamClientTest, NatsLibraryThreadsRunUnderSchedBatch) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  const std::vector<int> policies = ThreadPolicies();
  EXPECT_GE(std::count(policies.begin(), policies.end(), SCHED_BATCH), 3)
      << "timer, callback and collector threads";
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  // A connection's own threads (its reader and flusher) are started by the caller: unchanged.
  EXPECT_GE(std::count(policies.begin(), policies.end(), SCHED_OTHER), 3);
}

TEST_F(JetStreamClientTest, FetchReturnsAtMostTheBatchAndNakedMessagesComeAgain) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  auto pull = js.PullSubscribe(StreamAndReader(js, "FETCH", "fetch"));
  PublishMany(js, "fetch.x", 25);
  size_t total = 0;
  for (int round = 0; round < 3; ++round) {
    const auto got = pull->Fetch(10, 2000);
    EXPECT_LE(got.size(), 10u);
    for (const auto& m : got) {
      EXPECT_EQ(m->subject(), "fetch.x");
      EXPECT_EQ(m->delivered(), 1u);
      m->Ack();
    }
    total += got.size();
  }
  EXPECT_EQ(total, 25u);
  EXPECT_TRUE(pull->Fetch(10, 200).empty());  // nothing left
  // A NAKed message comes again, counted as a second delivery.
  js.Publish("fetch.x", "n", 1, {}, 5000);
  auto again = pull->Fetch(1, 2000);
  ASSERT_EQ(again.size(), 1u);
  again[0]->Nak();
  again = pull->Fetch(1, 2000);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0]->delivered(), 2u);
  again[0]->Term();
}

// AckAll: acknowledging a batch's last message acknowledges the whole batch (nothing waits for
// its ack wait; the bench's baseline-ackall measures what the server saves). A consumer's policy
// is fixed: asking for the other one names the conflict instead of acknowledging wrongly.
TEST_F(JetStreamClientTest, AnAckAllConsumerTakesTheLastAcknowledgementForTheBatch) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  nats::ConsumerOptions o = StreamAndReader(js, "ACKALL", "ackall", 1'000);
  o.ack_all = true;
  auto pull = js.PullSubscribe(o);
  PublishMany(js, "ackall.x", 20);
  std::vector<std::shared_ptr<nats::JsMessage>> got;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (auto& m : pull->Fetch(20, 200)) got.push_back(std::move(m));
        return got.size() >= 20;
      },
      10s));
  ASSERT_EQ(got.size(), 20u);
  EXPECT_EQ(js.ConsumerPending("ACKALL", "reader"), std::make_pair(uint64_t{0}, uint64_t{20}));
  got[9]->Ack();  // the first ten
  EXPECT_TRUE(WaitFor([&] { return js.ConsumerPending("ACKALL", "reader").second == 10; }, 5s));
  got.back()->Ack();
  EXPECT_TRUE(WaitFor([&] { return js.ConsumerPending("ACKALL", "reader").second == 0; }, 5s));
  // Past the ack wait (1 s), nothing comes again.
  EXPECT_TRUE(pull->Fetch(20, 1'500).empty());

  o.ack_all = false;
  try {
    js.EnsureConsumer(o);
    ADD_FAILURE() << "an AckAll consumer was taken for an explicit one";
  } catch (const nats::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ack policy cannot change"), std::string::npos)
        << e.what();
  }
  auto explicit_one = StreamAndReader(js, "ACKALL", "ackall");
  explicit_one.durable = "explicit";
  js.EnsureConsumer(explicit_one);
  explicit_one.ack_all = true;
  EXPECT_THROW(js.EnsureConsumer(explicit_one), nats::Error);
}

// A live stream at a low rate: a partial batch is handed on once it arrived, not when the
// request expires (500 ms by default in nats_source, 5 s here).
TEST_F(JetStreamClientTest, APartialBatchIsReturnedAtOnceNotWhenTheRequestExpires) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  auto pull = js.PullSubscribe(StreamAndReader(js, "TRICKLE", "trickle"));
  PublishMany(js, "trickle.x", 3);
  for (int round = 0; round < 2; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    size_t got = 0;
    while (got < 3 && std::chrono::steady_clock::now() - t0 < 4s) {
      for (const auto& m : pull->Fetch(64, 5000)) {
        m->Ack();
        ++got;
      }
    }
    EXPECT_EQ(got, 3u);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "round " << round;
    // The request of the first round is still open at the server: the next messages come on it.
    PublishMany(js, "trickle.x", 3, "round" + std::to_string(round) + "-");
  }
}

TEST_F(JetStreamClientTest, AFetchAheadGetsTheNextBatchAndAReleaseHandsItBackAtOnce) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  // A long ack wait: a message left unacknowledged would not come again within this test.
  const nats::ConsumerOptions o = StreamAndReader(js, "AHEAD", "ahead", 60'000);
  PublishMany(js, "ahead.x", 40);
  {
    auto pull = js.PullSubscribe(o);
    auto got = pull->Fetch(10, 2000, /*ahead=*/true);
    ASSERT_EQ(got.size(), 10u);
    for (const auto& m : got) m->Ack();
    // Two batches more were requested before the first Fetch returned: the server delivers them
    // to this consumer, whether or not it fetches again.
    ASSERT_TRUE(WaitFor(
        [&] {
          const auto [pending, ack_pending] = js.ConsumerPending("AHEAD", "reader");
          return pending == 10 && ack_pending == 20;
        },
        5s));
    pull->Release();  // the 20 fetched ahead go back at once
  }
  auto pull = js.PullSubscribe(o);
  EXPECT_EQ(FetchAndAckUntil(*pull, 30, 20), 30u);
  EXPECT_TRUE(pull->Fetch(10, 200).empty());
}

// The requests sent ahead expire unanswered (the stream has nothing more): each one's expiry
// status says how many of its messages were not sent, so the consumer knows that none is
// outstanding any more and asks again: what is published later comes at once.
TEST_F(JetStreamClientTest, RequestsSentAheadThatExpireAreCountedOffAndTheConsumerAsksAgain) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  auto pull = js.PullSubscribe(StreamAndReader(js, "EXPIRE", "expire", 60'000));
  PublishMany(js, "expire.x", 10);
  auto got = pull->Fetch(10, 300, /*ahead=*/true);  // and two requests of 10 more, for 300 ms
  ASSERT_EQ(got.size(), 10u);
  for (const auto& m : got) m->Ack();
  EXPECT_TRUE(pull->Fetch(10, 1000, /*ahead=*/true).empty());  // the two expire meanwhile
  PublishMany(js, "expire.x", 5, "later-");
  const auto t0 = std::chrono::steady_clock::now();
  got = pull->Fetch(10, 5000);  // on a request made after the expiries
  EXPECT_EQ(got.size(), 5u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  for (const auto& m : got) m->Ack();
}

// Released at once, while the batch requested ahead is still on its way: every message of that
// batch comes back to the stream at once, none is left to its ack wait (60 s here).
TEST_F(JetStreamClientTest, AReleaseRightAfterAFetchAheadHandsBackTheBatchStillOnItsWay) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  const nats::ConsumerOptions o = StreamAndReader(js, "RACE", "race", 60'000);
  PublishMany(js, "race.x", 400);
  for (int round = 0; round < 2; ++round) {
    auto pull = js.PullSubscribe(o);
    auto got = pull->Fetch(100, 2000, /*ahead=*/true);
    ASSERT_EQ(got.size(), 100u);
    for (const auto& m : got) m->Ack();
    pull->Release();
  }
  auto pull = js.PullSubscribe(o);
  EXPECT_EQ(FetchAndAckUntil(*pull, 200, 100), 200u)
      << "of the 200 messages not acknowledged, within 10 s";
}

// One set reads two consumers over one inbox: each message is named by its consumer, and a
// consumer removed while its batch requested ahead is on its way is reported released once its
// requests ended, its messages handed back at once, while the other goes on.
// A consumer nobody answers for (on a cluster, one whose leader is being elected; here one not
// created yet): its requests get "no responders", and the set says it is silent, not caught up,
// until the consumer answers (the reader holds windows back meanwhile).
// nats-server before 2.9.20 (Debian 12 ships 2.9.10) ends a pull request that expires while it is
// delivering without a status: the rest of its batch never comes, nothing says so. Here a stand-in
// takes the set's requests (to stream FAKE) and asks the real consumer for 3 messages of the 10
// asked, on the set's reply subject: 3 messages come, then nothing. The set asks again soon after
// the expiry (kStatusGraceNs), not after the 1 s it gives a request nothing came for, and the
// consumer, which answered, is not taken for silent.
TEST_F(JetStreamClientTest, ARequestEndedWithoutAStatusAfterItsMessagesIsAskedAgainSoon) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureConsumer(StreamAndReader(js, "OLD", "old"));
  PublishMany(js, "old.x", 30, "m");
  auto requests = conn->SubscribeSync("$JS.API.CONSUMER.MSG.NEXT.FAKE.reader");
  conn->Flush(5000);
  std::vector<std::chrono::steady_clock::time_point> asked;
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::thread stand_in([&] {
    while (!stop) {
      bool no_responders = false;
      const auto request = requests->Next(50, no_responders);
      if (!request) continue;
      {
        std::lock_guard lock(mu);
        asked.push_back(std::chrono::steady_clock::now());
      }
      conn->PublishRequest("$JS.API.CONSUMER.MSG.NEXT.OLD.reader", request->reply(),
                           R"({"batch":3})");
    }
  });
  nats::PullSet set(*conn, "FAKE");
  set.Add(1, "reader");
  nats::PullSet::Fetched fetched;
  size_t got = 0;
  const bool twice = WaitFor(
      [&] {
        set.Fetch(10, 200, /*ahead=*/false, fetched);
        for (const auto& [id, m] : fetched.messages) m->Ack();
        got += fetched.messages.size();
        EXPECT_FALSE(set.Silent());
        std::lock_guard lock(mu);
        return asked.size() >= 2;
      },
      10s, 0ms);
  stop = true;
  stand_in.join();
  ASSERT_TRUE(twice);
  EXPECT_GE(got, 3u);
  const auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(asked[1] - asked[0]);
  // Expiry 200 ms + kStatusGraceNs 200 ms, and a Fetch's slice; 1 200 ms before this was known.
  EXPECT_LT(gap.count(), 900) << "asked again " << gap.count() << " ms after the first request";
}

TEST_F(JetStreamClientTest, AConsumerNobodyAnswersForIsSilentNotCaughtUpUntilItAnswers) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "SILENT", .subjects = {"silent.>"}});
  nats::PullSet set(*conn, "SILENT");
  set.Add(1, "not-yet");
  nats::PullSet::Fetched fetched;
  const auto silent_after_fetch = [&] {
    set.Fetch(10, 500, /*ahead=*/true, fetched);
    return set.Silent();
  };
  ASSERT_TRUE(WaitFor(silent_after_fetch, 10s));
  js.EnsureConsumer({.stream = "SILENT", .durable = "not-yet", .filter_subject = "silent.>"});
  ASSERT_TRUE(WaitFor([&] { return !silent_after_fetch(); }, 10s));
}

TEST_F(JetStreamClientTest, APullSetReadsSeveralConsumersAndReleasesOneWhileTheOtherGoesOn) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "SET", .subjects = {"set.>"}});
  for (const std::string p : {"a", "b"}) {
    js.EnsureConsumer({.stream = "SET",
                       .durable = "set-" + p,
                       .filter_subject = "set." + p,
                       .ack_wait_ms = 60'000});
    PublishMany(js, "set." + p, 100, p);
  }
  nats::PullSet set(*conn, "SET");
  set.Add(7, "set-a");
  set.Add(9, "set-b");
  EXPECT_EQ(set.size(), 2u);
  nats::PullSet::Fetched fetched;
  std::map<uint32_t, size_t> got;
  const auto fetch = [&] {
    set.Fetch(10, 2000, /*ahead=*/true, fetched);
    for (const auto& [id, m] : fetched.messages) {
      EXPECT_EQ(m->subject(), id == 7 ? "set.a" : "set.b");
      m->Ack();
      ++got[id];
    }
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        fetch();
        return got[7] >= 10 && got[9] >= 10;
      },
      5s));
  set.Remove(7);
  bool released = false;
  ASSERT_TRUE(WaitFor(
      [&] {
        const size_t before = got[7];
        fetch();
        EXPECT_EQ(got[7], before) << "a message of a removed consumer was returned";
        released = released || std::count(fetched.released.begin(), fetched.released.end(), 7u);
        return released;
      },
      5s));
  EXPECT_EQ(set.size(), 1u);
  // Whatever consumer a had fetched ahead is back in the stream at once (its ack wait is 60 s).
  const size_t acknowledged_a = got[7];
  auto again = js.PullSubscribe({.stream = "SET", .durable = "set-a"});
  EXPECT_EQ(FetchAndAckUntil(*again, 100 - acknowledged_a, 50), 100 - acknowledged_a);
  // b goes on to its end.
  ASSERT_TRUE(WaitFor(
      [&] {
        fetch();
        return got[9] == 100;
      },
      10s));
}

// A set without consumers (a worker that owns no partition yet, or gave all up) waits in Fetch
// for the timeout, or until a consumer is added or the caller interrupts it: it does not return
// at once (its fetch thread spun at a full core until its first partition came).
// A consumer that says it has nothing more to deliver may have delivered its last messages on
// requests of the set that Fetch has not returned yet (a batch fetched ahead, or answers that
// wait in the subscription for the next round): the reader must not take the consumer's word
// alone for "everything is in". Once the requests sent until then are answered, it is.
TEST_F(JetStreamClientTest, OnceTheRequestsSentBeforeAreAnsweredEverythingTheyBroughtWasReturned) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  const nats::ConsumerOptions o = StreamAndReader(js, "ANSWERED", "answered", 60'000);
  js.EnsureConsumer(o);
  constexpr int kMessages = 300;
  PublishMany(js, "answered.x", kMessages);
  nats::PullSet set(*conn, "ANSWERED");
  EXPECT_EQ(set.Asked(1), 0u);
  EXPECT_TRUE(set.Answered(1, 1)) << "a consumer the set does not read has nothing on its way";
  set.Add(1, "reader");
  nats::PullSet::Fetched fetched;
  size_t got = 0;
  const auto fetch = [&] {
    set.Fetch(100, 200, /*ahead=*/true, fetched);
    for (const auto& [id, m] : fetched.messages) {
      m->Ack();
      ++got;
    }
  };
  // The first batch, with two more asked for ahead; the server sends those at once.
  ASSERT_TRUE(WaitFor(
      [&] {
        fetch();
        return got > 0;
      },
      5s));
  ASSERT_LT(got, size_t{kMessages});
  ASSERT_TRUE(WaitFor([&] { return js.Progress("ANSWERED", "reader").pending == 0; }, 5s));
  const uint64_t asked = set.Asked(1);
  EXPECT_GE(asked, size_t{kMessages}) << "the requests sent ahead ask for the rest";
  EXPECT_FALSE(set.Answered(1, asked)) << got << " returned, the rest is on its way";
  ASSERT_TRUE(WaitFor(
      [&] {
        fetch();
        return set.Answered(1, asked);
      },
      5s));
  EXPECT_EQ(got, size_t{kMessages});
}

TEST_F(JetStreamClientTest, AFetchWithoutConsumersWaitsUntilAddOrInterrupt) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "IDLE", .subjects = {"idle.>"}});
  js.EnsureConsumer({.stream = "IDLE", .durable = "idle-a", .filter_subject = "idle.a"});
  PublishMany(js, "idle.a", 3, "a");
  nats::PullSet set(*conn, "IDLE");
  nats::PullSet::Fetched fetched;
  using Clock = std::chrono::steady_clock;
  auto started = Clock::now();
  set.Fetch(10, 300, /*ahead=*/true, fetched);
  EXPECT_TRUE(fetched.messages.empty());
  EXPECT_GE(Clock::now() - started, 250ms) << "returned at once: its caller would spin";

  // Interrupted: returns long before its 20 s.
  std::atomic<bool> returned{false};
  std::thread waiting([&] {
    set.Fetch(10, 20'000, true, fetched);
    returned = true;
  });
  started = Clock::now();
  set.Interrupt();
  EXPECT_TRUE(WaitFor([&] { return returned.load(); }, 5s));
  waiting.join();

  // Added while it waits: it returns, and the next Fetch reads the consumer.
  returned = false;
  std::thread adding([&] {
    set.Fetch(10, 20'000, true, fetched);
    returned = true;
  });
  set.Add(1, "idle-a");
  EXPECT_TRUE(WaitFor([&] { return returned.load(); }, 5s));
  adding.join();
  size_t got = fetched.messages.size();
  ASSERT_TRUE(WaitFor(
      [&] {
        set.Fetch(10, 500, true, fetched);
        for (const auto& [id, m] : fetched.messages) m->Ack();
        got += fetched.messages.size();
        return got >= 3;
      },
      5s));
  EXPECT_EQ(got, 3u);
}

// A caught-up consumer fetched ahead is asked again once per pace (the linger) with a
// request that ends when it has sent what it had, not kept at a large request that the server
// fills one message at a time as they come: a live stream's messages reach the reader together,
// a few reads per pace instead of one per message. Every message still comes once.
TEST_F(JetStreamClientTest, ACaughtUpConsumerIsAskedOncePerPaceAndEachRequestEndsWhenItIsEmpty) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  const nats::ConsumerOptions o = StreamAndReader(js, "PACE", "pace", 60'000);
  js.EnsureConsumer(o);
  auto monitor = nats::Connection::Connect(Options(server_.port()));
  auto requests = monitor->SubscribeSync("$JS.API.CONSUMER.MSG.NEXT.PACE.reader");
  monitor->Flush(2000);

  constexpr int kMessages = 600;  // one per millisecond or a little slower: 0.6 s at least
  constexpr int kLingerMs = 20;   // the pace
  std::thread publisher([&] {
    auto pub = nats::Connection::Connect(Options(server_.port()));
    nats::JetStream pjs(*pub);
    for (int i = 0; i < kMessages; ++i) {
      pjs.Publish("pace.x", "m", 1, {{"Nats-Msg-Id", std::to_string(i)}}, 5000);
      std::this_thread::sleep_for(1ms);  // the offered rate, not a synchronisation
    }
  });
  nats::PullSet set(*conn, "PACE");
  set.Add(1, "reader");
  nats::PullSet::Fetched fetched;
  size_t got = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const bool all = WaitFor(
      [&] {
        set.Fetch(256, 500, /*ahead=*/true, fetched, kLingerMs);
        for (const auto& [id, m] : fetched.messages) {
          m->Ack();
          ++got;
        }
        return got >= kMessages;
      },
      20s);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  publisher.join();
  EXPECT_TRUE(all) << got << " of " << kMessages;
  EXPECT_EQ(got, size_t{kMessages});

  size_t asked = 0, no_wait = 0;
  bool no_responders = false;
  while (auto r = requests->Next(200, no_responders)) {
    ++asked;
    if (r->text().find("\"no_wait\":true") != std::string_view::npos) ++no_wait;
  }
  EXPECT_EQ(no_wait, asked) << "every request of a fetch ahead ends when the consumer is empty";
  // 256 never fills at this rate: one request kept open would do, and would bring the messages
  // one by one. Paced, it is one per 20 ms, give or take the first and the expiries.
  const double paces = seconds / 0.020;
  EXPECT_GE(static_cast<double>(asked), paces / 2) << seconds << " s";
  EXPECT_LE(static_cast<double>(asked), paces * 1.5 + 5) << seconds << " s";
}

// Caught up, a set of several consumers wakes once per round of requests: the answers (and the
// statuses that end the requests, or expire them on a quiet stream) wait in the subscription
// until the next round, instead of waking the thread each. A worker's wake-ups per second are
// its fixed cost, whatever its share of the fleet (docs/scaling.md).
TEST_F(JetStreamClientTest, ACaughtUpSetWakesOncePerRoundNotForEachAnswerOrExpiry) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "WAKE", .subjects = {"wake.>"}});
  constexpr int kConsumers = 4;
  nats::PullSet set(*conn, "WAKE");
  for (int c = 0; c < kConsumers; ++c) {
    js.EnsureConsumer({.stream = "WAKE",
                       .durable = "wake-" + std::to_string(c),
                       .filter_subject = "wake." + std::to_string(c),
                       .ack_wait_ms = 60'000});
    set.Add(static_cast<uint32_t>(c), "wake-" + std::to_string(c));
  }
  constexpr int kMessages = 800;  // one per millisecond or a little slower, over the consumers
  constexpr int kLingerMs = 20;   // a round every 20 ms
  constexpr int kExpiryMs = 100;  // quiet, each consumer's request expires 10 times a second
  const double pace_s = kLingerMs / 1e3;
  std::thread publisher([&] {
    auto pub = nats::Connection::Connect(Options(server_.port()));
    nats::JetStream pjs(*pub);
    for (int i = 0; i < kMessages; ++i) {
      pjs.Publish("wake." + std::to_string(i % kConsumers), "m", 1,
                  {{"Nats-Msg-Id", std::to_string(i)}}, 5000);
      std::this_thread::sleep_for(1ms);  // the offered rate, not a synchronisation
    }
  });
  nats::PullSet::Fetched fetched;
  size_t got = 0;
  const auto fetch = [&] {
    set.Fetch(256, kExpiryMs, /*ahead=*/true, fetched, kLingerMs);
    for (const auto& [id, m] : fetched.messages) {
      m->Ack();
      ++got;
    }
  };
  // Live: a round every pace brings what came meanwhile; its answers are taken at the next
  // round (waited for instead, each round cost more than one wake-up).
  uint64_t waits = set.waits();
  auto t0 = std::chrono::steady_clock::now();
  const bool all = WaitFor(
      [&] {
        fetch();
        return got >= kMessages;
      },
      20s);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  publisher.join();
  ASSERT_TRUE(all) << got << " of " << kMessages;
  EXPECT_EQ(got, size_t{kMessages});
  const double rounds = seconds / pace_s;
  EXPECT_LE(static_cast<double>(set.waits() - waits), rounds * 0.9 + 3)
      << seconds << " s, " << rounds << " rounds";
  // Quiet: the requests expire and are sent again, and the thread wakes every 100 ms at most
  // (taking in Add and Remove), not for each expiry status.
  waits = set.waits();
  t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 1s) fetch();
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(got, size_t{kMessages});
  EXPECT_LE(static_cast<double>(set.waits() - waits), seconds * (1000.0 / kExpiryMs) + 5)
      << "statuses of " << kConsumers << " consumers: " << seconds * kConsumers * 1000 / kExpiryMs;
}

// Quiet, a set's consumers are asked again together once per expiry, in one round, also when
// they were added at different times: each request expires just before one of the thread's looks
// (within timeout_ms), and one sent while a round has a look's time left joins it. Each round
// costs one publish of the connection and a read of the statuses, and a worker's 16 partitions
// one round, not one per group of partitions added together (docs/BENCHMARKS.md, "An idle
// worker").
TEST_F(JetStreamClientTest, AQuietSetAsksAllItsConsumersInOneRoundPerExpiry) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "ROUND", .subjects = {"round.>"}});
  constexpr int kConsumers = 6;
  constexpr int kExpiryMs = 500;
  constexpr int kLingerMs = 75;  // looks every 150 ms
  for (int c = 0; c < kConsumers; ++c) {
    js.EnsureConsumer({.stream = "ROUND",
                       .durable = "round-" + std::to_string(c),
                       .filter_subject = "round." + std::to_string(c),
                       .ack_wait_ms = 60'000});
  }
  // Every request the set sends, seen on another connection with the time it came.
  auto watcher = nats::Connection::Connect(Options(server_.port()));
  auto requests = watcher->SubscribeSync("$JS.API.CONSUMER.MSG.NEXT.ROUND.*");
  watcher->Flush(2000);
  nats::PullSet set(*conn, "ROUND");
  nats::PullSet::Fetched fetched;
  const auto fetch_for = [&](std::chrono::milliseconds how_long) {
    const auto until = std::chrono::steady_clock::now() + how_long;
    while (std::chrono::steady_clock::now() < until) {
      set.Fetch(16, kExpiryMs, /*ahead=*/true, fetched, kLingerMs);
      EXPECT_TRUE(fetched.messages.empty());
    }
  };
  // Added in three groups, at different looks.
  for (int c = 0; c < kConsumers; ++c) {
    set.Add(static_cast<uint32_t>(c), "round-" + std::to_string(c));
    if (c % 2 == 1) fetch_for(std::chrono::milliseconds(170 * (c + 1) / 2));
  }
  fetch_for(1500ms);  // the groups join one round
  // Then: the requests of each 4 s, grouped by the time they came (one round: within 50 ms).
  bool no_responders = false;
  while (requests->Next(0, no_responders)) {
  }
  std::vector<std::pair<double, int>> rounds;  // start (s), requests
  const auto t0 = std::chrono::steady_clock::now();
  std::thread reader([&] {
    bool nr = false;
    while (std::chrono::steady_clock::now() - t0 < 4s) {
      const auto m = requests->Next(100, nr);
      if (!m) continue;
      const double at =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const std::string request(m->text());
      const size_t e = request.find("\"expires\":");
      ASSERT_NE(e, std::string::npos) << request;
      const int64_t expires = std::stoll(request.substr(e + 10));
      EXPECT_LE(expires, int64_t{kExpiryMs} * 1'000'000) << request;
      EXPECT_GE(expires, int64_t{kExpiryMs} * 1'000'000 / 2) << request;
      if (rounds.empty() || at - rounds.back().first > 0.05) rounds.emplace_back(at, 0);
      ++rounds.back().second;
    }
  });
  fetch_for(4000ms);
  reader.join();
  std::string seen;
  for (const auto& [at, n] : rounds) seen += std::to_string(at) + " s: " + std::to_string(n) + "; ";
  // An expiry of 500 ms rounded down to the looks: a round every 450 ms, 8 or 9 in 4 s.
  EXPECT_GE(rounds.size(), 7u) << seen;
  EXPECT_LE(rounds.size(), 10u) << seen;
  for (size_t r = 1; r + 1 < rounds.size(); ++r) {  // the first and last may be cut by the 4 s
    EXPECT_EQ(rounds[r].second, kConsumers) << seen;
  }
}

// A consumer that had nothing in the last rounds is asked again with the others at every round,
// also while they deliver: a partition with one slow vehicle beside busy ones gets its message
// handed on within the bound (the next round, then the gathering), not once every partition of
// the worker happens to be quiet at the same time.
TEST_F(JetStreamClientTest, AQuietConsumerBesideABusyOneIsAskedEveryRound) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "SPARSE", .subjects = {"sparse.>"}});
  nats::PullSet set(*conn, "SPARSE");
  for (const std::string name : {"busy", "quiet"}) {
    js.EnsureConsumer({.stream = "SPARSE",
                       .durable = name,
                       .filter_subject = "sparse." + name,
                       .ack_wait_ms = 60'000});
  }
  set.Add(1, "busy");
  set.Add(2, "quiet");
  constexpr int kLingerMs = 20;  // a round every 20 ms; a message handed on within 40 ms
  // The quiet consumer's first requests expire (each waits this long for a first message)
  // before its one message is published, 1 s in.
  constexpr int kExpiryMs = 200;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> quiet_sent_ns{0};
  std::thread publisher([&] {
    auto pub = nats::Connection::Connect(Options(server_.port()));
    nats::JetStream pjs(*pub);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; !stop.load(); ++i) {
      pjs.Publish("sparse.busy", "m", 1, {{"Nats-Msg-Id", std::to_string(i)}}, 5000);
      if (quiet_sent_ns.load() == 0 && std::chrono::steady_clock::now() - t0 > 1s) {
        pjs.Publish("sparse.quiet", "q", 1, {{"Nats-Msg-Id", "quiet"}}, 5000);
        quiet_sent_ns = std::chrono::steady_clock::now().time_since_epoch().count();
      }
      std::this_thread::sleep_for(1ms);  // the offered rate, not a synchronisation
    }
  });
  nats::PullSet::Fetched fetched;
  int64_t quiet_got_ns = 0;
  size_t busy = 0;
  const bool came = WaitFor(
      [&] {
        set.Fetch(256, kExpiryMs, /*ahead=*/true, fetched, kLingerMs);
        for (const auto& [id, m] : fetched.messages) {
          m->Ack();
          if (id == 2) {
            quiet_got_ns = std::chrono::steady_clock::now().time_since_epoch().count();
          } else {
            ++busy;
          }
        }
        return quiet_got_ns != 0;
      },
      10s);
  stop = true;
  publisher.join();
  ASSERT_TRUE(came) << "the quiet consumer's message never came (" << busy << " busy ones did)";
  const double waited_ms = static_cast<double>(quiet_got_ns - quiet_sent_ns.load()) / 1e6;
  // 40 ms by design; the rest is slack for a busy machine, well below what starving it takes
  // (the busy consumer never pauses: it would be asked again only once the publisher stops).
  EXPECT_LT(waited_ms, 400.0) << busy << " busy messages meanwhile";
  EXPECT_GT(busy, 0u);
}

// What comes for a removed consumer on requests still open reaches the next reader at once, not
// after its ack wait: handed back while those requests are open, the server would send it on
// them again, and once this set is gone nobody would answer (a worker that stops hands its
// partitions over this way).
TEST_F(JetStreamClientTest, WhatComesForARemovedConsumerGoesToTheNextReaderAtOnce) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "OVER", .subjects = {"over.>"}});
  js.EnsureConsumer(
      {.stream = "OVER", .durable = "over", .filter_subject = "over.x", .ack_wait_ms = 60'000});
  PublishMany(js, "over.x", 3, "first");
  size_t acknowledged = 0;
  {
    nats::PullSet set(*conn, "OVER");
    set.Add(1, "over");
    nats::PullSet::Fetched fetched;
    // Requests of 10 that wait up to 3 s at the server: still open after the removal.
    ASSERT_TRUE(WaitFor(
        [&] {
          set.Fetch(10, 3000, /*ahead=*/true, fetched, /*linger_ms=*/0);
          for (const auto& [id, m] : fetched.messages) m->Ack();
          acknowledged += fetched.messages.size();
          return acknowledged == 3;
        },
        5s));
    set.Remove(1);
    PublishMany(js, "over.x", 5, "second");  // they come on the open requests
    bool released = false;
    ASSERT_TRUE(WaitFor(
        [&] {
          set.Fetch(10, 100, true, fetched, 0);
          EXPECT_TRUE(fetched.messages.empty()) << "a message of a removed consumer was returned";
          released = released || !fetched.released.empty();
          return released;
        },
        5s));
  }  // the set is gone, as a stopped worker's
  // Well within the ack wait (60 s): the 5 were handed back, none is waiting for its ack wait.
  auto next = js.PullSubscribe(
      {.stream = "OVER", .durable = "over", .filter_subject = "over.x", .ack_wait_ms = 60'000});
  size_t got = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        for (const auto& m : next->Fetch(10, 200)) {
          m->Ack();
          ++got;
        }
        return got == 5;
      },
      8s))
      << got << " of 5";
}

// The source learns what the consumer still holds from each batch's last message (no request
// to the server) and when the stream stored it, and acknowledges through the reply subject alone
// once the message is freed.
TEST_F(JetStreamClientTest,
       AMessageSaysWhatTheConsumerStillHoldsAndCanBeAcknowledgedAfterItIsFreed) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  const nats::ConsumerOptions o = StreamAndReader(js, "LATER", "later", 60'000);
  const auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t before = now_ns();
  PublishMany(js, "later.x", 10);
  const int64_t after = now_ns();
  auto pull = js.PullSubscribe(o);
  std::vector<nats::DeferredAck> acks;
  {
    const auto got = pull->Fetch(4, 2000);
    ASSERT_EQ(got.size(), 4u);
    EXPECT_EQ(got[0]->pending(), 9u);
    EXPECT_EQ(got.back()->pending(), 6u);
    // When the stream stored them, whenever they are read.
    EXPECT_GE(got[0]->stored_ns(), before);
    EXPECT_LE(got.back()->stored_ns(), after);
    EXPECT_LE(got[0]->stored_ns(), got.back()->stored_ns());
    for (const auto& m : got) acks.push_back(m->AckLater());
  }  // the messages are freed here
  EXPECT_EQ(js.ConsumerPending("LATER", "reader"), std::make_pair(uint64_t{6}, uint64_t{4}));
  for (const auto& ack : acks) ack();
  ASSERT_TRUE(WaitFor(
      [&] {
        return js.ConsumerPending("LATER", "reader") == std::make_pair(uint64_t{6}, uint64_t{0});
      },
      5s));
  const auto rest = pull->Fetch(6, 2000);
  ASSERT_EQ(rest.size(), 6u);
  EXPECT_EQ(rest.back()->pending(), 0u);
  for (const auto& m : rest) m->Ack();
}

// Workers started together all create the same buckets: a bucket that another client is still
// creating is found by its name a little before its stream takes writes. Writing to it at once
// must work (it once failed a worker's start with "no responders").
// Reading from a time less than 0.1 s after a whole second: nats.c 3.4.1 would send 12:00:00.058
// as 12:00:00.58 and start the reader up to 0.9 s late. Every message stored at or after the
// time comes, none before, and the count says so.
TEST_F(JetStreamClientTest, AStreamReadFromATimeJustAfterAWholeSecondStartsThere) {
  auto conn = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream js(*conn);
  js.EnsureStream({.name = "TIMED", .subjects = {"timed.>"}});
  // Published until one is stored less than 0.1 s after a whole second, and 50 after it.
  std::vector<int64_t> stored;  // by sequence - 1
  const auto fraction = [](int64_t ns) { return ns % 1'000'000'000; };
  size_t at = 0;  // the first one stored in the 0.1 s after a whole second, not at the first
  auto all = js.ReadStream("TIMED", "timed.>", {});
  ASSERT_TRUE(WaitFor(
      [&] {
        PublishMany(js, "timed.x", 10, std::to_string(stored.size()) + "-");
        for (int i = 0; i < 10; ++i) {
          auto m = all->Next(5000);
          if (!m) return false;
          stored.push_back(m->stored_ns());
          const size_t k = stored.size() - 1;
          if (at == 0 && k > 0 && fraction(stored[k]) > 0 && fraction(stored[k]) < 100'000'000 &&
              stored[k] > stored[k - 1]) {
            at = k;
          }
        }
        return at != 0 && stored.size() >= at + 50;
      },
      10s, 1ms));
  auto reader = js.ReadStream("TIMED", "timed.>", {.time_ns = stored[at]});
  EXPECT_EQ(reader->total(), stored.size() - at);
  for (size_t i = at; i < stored.size(); ++i) {
    auto m = reader->Next(5000);
    ASSERT_NE(m, nullptr) << i;
    EXPECT_EQ(m->stream_sequence(), i + 1);
    EXPECT_EQ(m->stored_ns(), stored[i]);
  }
}

TEST_F(JetStreamClientTest, ABucketCreatedByManyClientsAtOnceTakesTheirWritesAtOnce) {
  constexpr int kClients = 6, kRounds = 15;
  std::vector<std::unique_ptr<nats::Connection>> conns;
  for (int c = 0; c < kClients; ++c)
    conns.push_back(nats::Connection::Connect(Options(server_.port())));
  for (int round = 0; round < kRounds; ++round) {
    const std::string bucket = "race" + std::to_string(round);
    std::atomic<int> ready{0}, written{0};
    std::vector<std::string> errors(kClients);
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        ++ready;
        while (ready < kClients) std::this_thread::yield();  // start together
        try {
          nats::JetStream js(*conns[c]);
          auto kv = js.EnsureBucket({.name = bucket});
          kv->Put("client" + std::to_string(c), "here");
          ++written;
        } catch (const nats::Error& e) {
          errors[c] = e.what();
        }
      });
    }
    for (auto& t : clients) t.join();
    for (const auto& e : errors) EXPECT_EQ(e, "") << "round " << round;
    ASSERT_EQ(written, kClients) << "round " << round;
  }
}

TEST_F(JetStreamClientTest, KvWritesAndFetchesSurviveRepeatedConnectionResets) {
  constexpr int kKeys = 64, kMessages = 20000;
  TcpProxy link(server_.port());
  auto direct = nats::Connection::Connect(Options(server_.port()));
  nats::JetStream direct_js(*direct);
  nats::StreamOptions stream;
  stream.name = "STRESS";
  stream.subjects = {"stress.>"};
  direct_js.EnsureStream(stream);
  nats::ConsumerOptions consumer;
  consumer.stream = "STRESS";
  consumer.durable = "stress";
  consumer.filter_subject = "stress.>";
  consumer.ack_wait_ms = 2000;

  auto conn = nats::Connection::Connect(Options(link.port()));
  nats::JetStream js(*conn);
  auto kv = js.EnsureBucket({.name = "stress", .storage = "memory"});
  kv->set_write_timeout_ms(1000);
  auto pull = js.PullSubscribe(consumer);
  auto watcher = kv->WatchAll();

  std::atomic<bool> stop{false};
  // Writer: one compare-and-set write per key in flight, as the KV state backend does.
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, uint64_t> revision;
  std::set<std::string> in_flight, conflicted;
  std::atomic<int> answered{0}, ok{0};
  std::thread writer([&] {
    const std::string value(200, 'x');
    std::set<std::string> stale;  // keys whose revision must be read again (conflict)
    while (!stop) {
      kv->ExpireWrites();  // as the KV state backend does on every flush
      for (int k = 0; k < kKeys && !stop; ++k) {
        const std::string key = "v" + std::to_string(k) + ".speed";
        uint64_t expected;
        {
          std::lock_guard lock(mu);
          if (in_flight.count(key)) continue;
          expected = revision[key];
        }
        if (stale.erase(key)) {
          try {
            if (auto e = kv->Get(key)) expected = e->revision;
          } catch (const nats::Error&) {
            stale.insert(key);
            continue;
          }
        }
        {
          std::lock_guard lock(mu);
          in_flight.insert(key);
        }
        kv->UpdateAsync(key, value, expected, [&, key](const nats::KvWriteResult& r) {
          ++answered;
          std::lock_guard lock(mu);
          if (r.ok) {
            ++ok;
            revision[key] = r.revision;
          } else if (r.conflict) {
            conflicted.insert(key);
          }
          in_flight.erase(key);
          cv.notify_all();
        });
        std::lock_guard lock(mu);
        stale.merge(conflicted);
      }
      std::this_thread::yield();
    }
  });
  // Fetcher: acknowledges everything it gets.
  std::mutex seen_mu;
  std::set<std::string> seen;
  std::thread fetcher([&] {
    while (!stop) {
      try {
        for (const auto& m : pull->Fetch(256, 200)) {
          {
            std::lock_guard lock(seen_mu);
            seen.emplace(static_cast<const char*>(m->data()), m->size());
          }
          m->Ack();
        }
      } catch (const nats::Error&) {
        std::this_thread::sleep_for(10ms);  // backoff of a retry loop, not a synchronisation
      }
    }
  });
  std::thread watching([&] {
    nats::KvEntry e;
    while (!stop) {
      try {
        watcher->Next(100, e);
      } catch (const nats::Error&) {
      }
    }
  });
  // Publisher on the direct connection: the stream holds every message.
  for (int i = 0; i < kMessages; ++i) {
    const std::string body = std::to_string(i);
    direct_js.Publish("stress." + std::to_string(i % 100), body.data(), body.size(), {}, 5000);
  }

  // Faults: resets, short stalls and latency, for a while.
  const auto faults_end = std::chrono::steady_clock::now() + 20s;
  int round = 0;
  while (std::chrono::steady_clock::now() < faults_end) {
    switch (round++ % 3) {
      case 0:
        link.ResetAll();
        break;
      case 1:
        link.SetStalled(true);
        std::this_thread::sleep_for(150ms);  // the fault's duration
        link.SetStalled(false);
        break;
      case 2:
        link.SetLatency(50ms);
        std::this_thread::sleep_for(150ms);  // the fault's duration
        link.SetLatency(0ms);
        break;
    }
    std::this_thread::sleep_for(100ms);  // healthy link between two faults
  }
  // Healed: every message fetched, every write answered.
  EXPECT_TRUE(WaitFor(
      [&] {
        std::lock_guard lock(seen_mu);
        return seen.size() == kMessages;
      },
      60s))
      << seen.size() << " of " << kMessages << " messages fetched; the consumer: " << [&] {
           const auto p = direct_js.Progress("STRESS", "stress");
           return std::to_string(p.pending) + " pending, " + std::to_string(p.ack_pending) +
                  " acknowledgements pending, last delivered " + std::to_string(p.delivered) +
                  ", deliveries " + std::to_string(p.deliveries);
         }();
  const int answered_at_heal = answered;
  EXPECT_TRUE(WaitFor([&] { return answered > answered_at_heal + 4 * kKeys; }, 30s))
      << "KV writes stopped being answered after the faults: " << answered - answered_at_heal;
  stop = true;
  watcher->Stop();
  writer.join();
  fetcher.join();
  watching.join();
  EXPECT_TRUE(kv->WaitForWrites(30000));
  {
    std::lock_guard lock(mu);
    EXPECT_TRUE(in_flight.empty()) << in_flight.size() << " KV writes never answered";
  }
  EXPECT_GT(ok, kKeys);
  EXPECT_GT(link.accepted(), 10);
}

}  // namespace
}  // namespace fleetflow::testing

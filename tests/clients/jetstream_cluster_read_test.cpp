// The wrapper's reads on a three-node nats-server 2.10 cluster, through a node that is catching
// up after a restart: a read right after a write must see the write. A direct get (what nats.c's
// kvStore_Get sends) is answered by the node's own replica once it is 90 % caught up, and a watch
// is a consumer the server places on any replica: both may answer from a copy that is behind.
// The take-over of a partition reads its checkpoint, its hand-over record and its state this way
// (docs/scaling.md, "Hand-over of a partition").
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "../operators/nats_fixture.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

// How long the tests read through the follower: 5 s from its restart (its catching up), and on
// a loaded machine on until 100 reads were made, for 30 s at most.
class Reading {
 public:
  bool More(int reads) const {
    const auto now = std::chrono::steady_clock::now();
    return now < start_ + 5s || (reads < 100 && now < start_ + 30s);
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// A three-node 2.10 cluster and a connection to it; CatchUp stops a follower of `stream`, has
// `fill` store what it must catch up on (60 MB in the tests: seconds of catching up), starts it
// again and connects through it.
class JetStreamClusterReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    cluster_.UseServer210();
    cluster_.Start();
    nats::ConnectOptions o;
    o.url = cluster_.url();
    conn_ = nats::Connection::Connect(o);
    js_ = std::make_unique<nats::JetStream>(*conn_);
  }

  // The follower's index; fconn_ and fjs_ reach the cluster through it.
  template <typename Fill>
  int CatchUp(const std::string& stream, Fill fill) {
    leader_ = cluster_.LeaderOf(stream);
    EXPECT_GE(leader_, 0) << "no leader for " << stream;
    const int follower = (std::max(leader_, 0) + 1) % 3;
    cluster_.node(follower).Stop();
    fill();
    cluster_.node(follower).Start();
    nats::ConnectOptions through;
    through.url = cluster_.node(follower).url();
    fconn_ = nats::Connection::Connect(through);
    fjs_ = std::make_unique<nats::JetStream>(*fconn_);
    return follower;
  }

  NatsCluster cluster_{3};
  std::unique_ptr<nats::Connection> conn_, fconn_;
  std::unique_ptr<nats::JetStream> js_, fjs_;
  int leader_ = -1;
  const std::string value_ = std::string(20000, 'x');
};

TEST_F(JetStreamClusterReadTest, ReadsThroughANodeCatchingUpSeeTheLastWrite) {
  auto kv = js_->EnsureBucket({.name = "reads", .replicas = 3});
  const int follower = CatchUp("KV_reads", [&] {
    for (int i = 0; i < 3000; ++i) kv->Put("3.backlog" + std::to_string(i % 50), value_);
  });
  ASSERT_GE(leader_, 0);
  auto reader = fjs_->EnsureBucket({.name = "reads", .replicas = 3});
  // While Reading: write through the cluster, read at once through the follower. Reads that fail
  // (the node not yet serving JetStream) are counted, not stale.
  int reads = 0, stale_gets = 0, stale_watches = 0, failed = 0;
  std::string first_stale;
  const Reading reading;
  for (int i = 0; reading.More(reads); ++i) {
    const std::string key = "3.k" + std::to_string(i % 7);
    const uint64_t revision = kv->Put(key, value_ + std::to_string(i));
    try {
      const auto got = reader->Get(key);
      uint64_t watched = 0;
      reader->ReadCurrent("3.>", 10000, [&](nats::KvEntry& e) {
        if (e.key == key) watched = e.revision;
      });
      ++reads;
      if (!got || got->revision < revision) {
        ++stale_gets;
        if (first_stale.empty()) {
          first_stale = "get " + key + ": revision " +
                        (got ? std::to_string(got->revision) : std::string("none")) +
                        " after a write of " + std::to_string(revision);
        }
      }
      if (watched < revision) ++stale_watches;
    } catch (const std::exception& e) {
      ++failed;
    }
  }
  std::printf(
      "%d reads through n%d right after a write (n%d leads): %d gets and %d watches "
      "stale, %d failed\n",
      reads, follower, leader_, stale_gets, stale_watches, failed);
  EXPECT_GE(reads, 100) << failed << " failed";
  EXPECT_EQ(stale_gets, 0) << first_stale;
  EXPECT_EQ(stale_watches, 0);
  // A deleted key is not found, as before; one never written neither.
  kv->Delete("3.k0");
  EXPECT_FALSE(reader->Get("3.k0").has_value());
  EXPECT_FALSE(reader->Get("3.never").has_value());
}

// A stream read through a node catching up counts and reads that node's copy (the count and the
// ordered consumer are placed by the server): it may miss the message just stored. The leader's
// NextStored does not: it is what the changelog's re-read on a take-over checks what it read
// against (JetStreamReader::Reread).
TEST_F(JetStreamClusterReadTest, TheLeaderTellsTheMessageAReadThroughANodeCatchingUpMissed) {
  nats::JetStream& js = *js_;
  js.EnsureStream(nats::StreamOptions{.name = "S", .subjects = {"p.>"}, .replicas = 3});
  const int follower = CatchUp("S", [&] {
    for (int i = 0; i < 3000; ++i) {
      js.Publish("p.0.backlog", value_.data(), value_.size(), nats::Headers{}, 5000);
    }
  });
  ASSERT_GE(leader_, 0);
  nats::JetStream& fjs = *fjs_;
  int reads = 0, missed = 0, failed = 0, leader_missed = 0;
  const Reading reading;
  while (reading.More(reads)) {
    const uint64_t sequence =
        js.Publish("p.1.x", value_.data(), value_.size(), nats::Headers{}, 5000);
    try {
      const auto reader = fjs.ReadStream("S", "p.1.*", nats::StreamStart{sequence, 0});
      ++reads;
      if (reader->total() < 1) ++missed;
    } catch (const std::exception&) {
      ++failed;  // the node not yet serving JetStream
    }
    if (fjs.NextStored("S", "p.1.*", sequence) != std::optional<uint64_t>(sequence)) {
      ++leader_missed;
    }
  }
  std::printf(
      "%d stream reads through n%d right after a message was stored (n%d leads): %d "
      "missed it, %d failed; the leader missed it %d times\n",
      reads, follower, leader_, missed, failed, leader_missed);
  EXPECT_GE(reads, 100) << failed << " failed";
  EXPECT_EQ(leader_missed, 0);
}

// One nats-server with the stream S on p.>, and a client of it.
class JetStreamNextStoredTest : public NatsServerTest {
 protected:
  void SetUp() override {
    NatsServerTest::SetUp();
    if (!IsSkipped()) js_->EnsureStream(nats::StreamOptions{.name = "S", .subjects = {"p.>"}});
  }
};

// NextStored: the first message on a subject at or after a sequence, as the leader stores it.
TEST_F(JetStreamNextStoredTest, FindsTheNextMessageOfASubject) {
  nats::JetStream& js = *js_;
  for (const char* subject : {"p.1.a", "p.2.a", "p.1.b", "p.2.b"}) {  // sequences 1..4
    js.Publish(subject, "x", 1, nats::Headers{}, 5000);
  }
  EXPECT_EQ(js.NextStored("S", "p.1.*", 1), std::optional<uint64_t>(1));
  EXPECT_EQ(js.NextStored("S", "p.1.*", 2), std::optional<uint64_t>(3));
  EXPECT_EQ(js.NextStored("S", "p.2.>", 4), std::optional<uint64_t>(4));
  EXPECT_EQ(js.NextStored("S", "p.1.*", 4), std::nullopt);
  EXPECT_EQ(js.NextStored("S", "p.3.*", 1), std::nullopt);
}

// GetStored: the message at a sequence, as the leader stores it; none where the stream has none.
TEST_F(JetStreamNextStoredTest, GetsTheMessageAtASequence) {
  nats::JetStream& js = *js_;
  const auto wall_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t before = wall_ns();
  js.Publish("p.1.a", "first", 5, nats::Headers{}, 5000);
  js.Publish("p.2.a", "second", 6, nats::Headers{}, 5000);
  const auto m = js.GetStored("S", 2, 5000);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->subject(), "p.2.a");
  EXPECT_EQ(std::string(static_cast<const char*>(m->data()), m->size()), "second");
  EXPECT_EQ(m->stream_sequence(), 2u);
  EXPECT_GE(m->stored_ns(), before - 1'000'000'000);  // the server's clock, this machine's
  EXPECT_LE(m->stored_ns(), wall_ns() + 1'000'000'000);
  EXPECT_EQ(m->delivered(), 1u);
  m->Ack();  // nothing to acknowledge: no effect
  EXPECT_EQ(js.GetStored("S", 3, 5000), nullptr);
  conn_->Request("$JS.API.STREAM.MSG.DELETE.S", R"({"seq":1})", 5000);
  EXPECT_EQ(js.GetStored("S", 1, 5000), nullptr);
  EXPECT_THROW(js.GetStored("T", 1, 5000), nats::Error);  // no such stream
}

}  // namespace
}  // namespace fleetflow::testing

// EdgeProgress: when the hub's answers about an edge source say that it has caught up.
#include "partitioning/edge_watch.hpp"

#include <gtest/gtest.h>

namespace fleetflow {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kPoll = 250 * kMs;

nats::StreamSourceState Source(int64_t active_ns, uint64_t lag = 0, std::string error = "") {
  return {"EDGE", "$JS.depot1.API", lag, active_ns, std::move(error)};
}

/// Answers every 250 ms from `from` to `to` (excluded), the source's last contact as
/// `contact(t)` returns it (nullopt: the stream did not answer).
template <typename Contact>
int64_t Answer(EdgeProgress& p, int64_t from, int64_t to, Contact contact, uint64_t lag = 0) {
  for (int64_t t = from; t < to; t += kPoll) {
    const std::optional<int64_t> c = contact(t);
    if (!c) {
      p.Observe(t, nullptr);
      continue;
    }
    const auto s = Source(t - *c, lag);
    p.Observe(t, &s);
  }
  return to;
}

/// Heartbeats every second: the last one at or before t.
std::optional<int64_t> Heartbeats(int64_t t) { return t / 1000 / kMs * 1000 * kMs; }

TEST(EdgeProgressTest, BehindFromTheStartUntilHeartbeatsComeFor2s) {
  EdgeProgress p(0, 0);
  EXPECT_TRUE(p.Behind(0));
  Answer(p, 0, 1750 * kMs, Heartbeats);
  EXPECT_TRUE(p.Behind(1750 * kMs)) << "not yet 2 s of answers";
  Answer(p, 1750 * kMs, 2250 * kMs, Heartbeats);
  EXPECT_FALSE(p.Behind(2250 * kMs));
  EXPECT_TRUE(p.CaughtUp());
}

TEST(EdgeProgressTest, QuietForLongerThanAHeartbeatIsBehindAtOnce) {
  EdgeProgress p(0, 0);
  int64_t t = Answer(p, 0, 5000 * kMs, Heartbeats);
  ASSERT_FALSE(p.Behind(t));
  // The link goes down at 5 s: the last contact stays at 5 s.
  t = Answer(p, t, 6250 * kMs, [](int64_t) { return std::optional<int64_t>(5000 * kMs); });
  EXPECT_FALSE(p.Behind(t)) << "1.25 s is within a heartbeat's delay";
  t = Answer(p, t, 6750 * kMs, [](int64_t) { return std::optional<int64_t>(5000 * kMs); });
  EXPECT_TRUE(p.Behind(t)) << "1.5 s without a heartbeat";
}

// While the link is down, the hub tries the source again every 10 s and each try makes
// `active` start from 0: one fresh contact that does not advance is no sign of a live source.
TEST(EdgeProgressTest, TheHubsRetriesWhileTheLinkIsDownAreNoContact) {
  EdgeProgress p(0, 0);
  int64_t t = Answer(p, 0, 5000 * kMs, Heartbeats);
  ASSERT_FALSE(p.Behind(t));
  const auto retries = [](int64_t now) {
    return std::optional<int64_t>(
        std::max<int64_t>(5000 * kMs, (now - 1) / (10'000 * kMs) * (10'000 * kMs)));
  };
  t = Answer(p, t, 7000 * kMs, [](int64_t) { return std::optional<int64_t>(5000 * kMs); });
  ASSERT_TRUE(p.Behind(t));
  for (; t < 60'000 * kMs; t += kPoll) {
    Answer(p, t, t + kPoll, retries);
    EXPECT_TRUE(p.Behind(t + kPoll)) << "at " << (t + kPoll) / kMs << " ms";
  }
}

TEST(EdgeProgressTest, ABacklogIsBehindUntilItsLagIsLive) {
  EdgeProgress p(0, 0);
  int64_t t = Answer(p, 0, 3000 * kMs, Heartbeats, 50'000);
  EXPECT_TRUE(p.Behind(t)) << "50000 messages still at the edge";
  t = Answer(p, t, 6000 * kMs, Heartbeats, EdgeProgress::kLiveLag);
  EXPECT_FALSE(p.Behind(t));
}

TEST(EdgeProgressTest, AnErrorOrNoAnswerIsBehind) {
  EdgeProgress p(0, 0);
  int64_t t = Answer(p, 0, 3000 * kMs, Heartbeats);
  ASSERT_FALSE(p.Behind(t));
  const auto s = Source(100 * kMs, 0, "stream not found");
  p.Observe(t, &s);
  EXPECT_TRUE(p.Behind(t));
  t = Answer(p, t, 6000 * kMs, Heartbeats);
  ASSERT_FALSE(p.Behind(t));
  p.Observe(t, nullptr);
  EXPECT_TRUE(p.Behind(t));
}

TEST(EdgeProgressTest, AnEdgeBehindForLongerThanTheMaximumHoldIsGivenUpUntilItCatchesUp) {
  EdgeProgress p(30'000 * kMs, 0);
  int64_t t = Answer(p, 0, 3000 * kMs, Heartbeats);
  ASSERT_FALSE(p.Behind(t));
  const auto down = [](int64_t) { return std::optional<int64_t>(3000 * kMs); };
  // Behind from the first answer 1.5 s after the last contact, 4.5 s: for 30 s.
  t = Answer(p, t, 34'500 * kMs, down);
  EXPECT_TRUE(p.Behind(t));
  EXPECT_FALSE(p.GivenUp(t));
  t = Answer(p, t, 35'000 * kMs, down);
  EXPECT_FALSE(p.Behind(t));
  EXPECT_TRUE(p.GivenUp(t));
  t = Answer(p, t, 38'000 * kMs, Heartbeats);
  EXPECT_TRUE(p.CaughtUp());
  EXPECT_FALSE(p.GivenUp(t));
  // Behind again: the hold starts afresh.
  t = Answer(p, t, 41'000 * kMs, [](int64_t) { return std::optional<int64_t>(38'000 * kMs); });
  EXPECT_TRUE(p.Behind(t));
  EXPECT_FALSE(p.GivenUp(t));
}

}  // namespace
}  // namespace fleetflow

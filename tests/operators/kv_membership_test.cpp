// AssignPartitions: how the workers share the partitions (every worker computes it alike).
#include "partitioning/kv_membership.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace fleetflow::testing {
namespace {

std::vector<std::string> Workers(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("worker-" + std::to_string(i * 7919 % 1000));
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(KvMembershipAssignTest, SharesDifferByOnePartitionAtMostAndEveryPartitionHasAnOwner) {
  constexpr uint32_t kPartitions = 16;
  for (int n = 1; n <= 20; ++n) {
    const auto owners = AssignPartitions(Workers(n), kPartitions);
    ASSERT_EQ(owners.size(), kPartitions);
    std::vector<int> load(static_cast<size_t>(n), 0);
    for (const size_t o : owners) {
      ASSERT_LT(o, static_cast<size_t>(n));
      ++load[o];
    }
    // Shares differ by one partition at most: nobody is idle while others own two.
    const auto [least, most] = std::minmax_element(load.begin(), load.end());
    EXPECT_LE(*most - *least, 1) << n << " workers";
    EXPECT_LE(*most, static_cast<int>((kPartitions + n - 1) / n)) << n << " workers";
  }
}

TEST(KvMembershipAssignTest, AWorkerJoiningMovesFewPartitions) {
  constexpr uint32_t kPartitions = 64;
  for (int n = 1; n < 8; ++n) {
    const auto before_ids = Workers(n);
    const auto after_ids = Workers(n + 1);
    const auto before = AssignPartitions(before_ids, kPartitions);
    const auto after = AssignPartitions(after_ids, kPartitions);
    int moved = 0;
    for (uint32_t p = 0; p < kPartitions; ++p) {
      moved += before_ids[before[p]] != after_ids[after[p]] ? 1 : 0;
    }
    // The newcomer's share has to move; a modulo assignment would move most of the rest too.
    EXPECT_LE(moved, 2 * static_cast<int>(kPartitions) / (n + 1)) << n << " -> " << n + 1;
  }
}

TEST(EmittedWindowsTest, ARecordsTextHoldsEachNodesWindowAndAReleaseBeforeIsEveryNodes) {
  const EmittedWindows two{{"minutes", 60}, {"windows", 1'700'000'000'000'000'000}};
  EXPECT_EQ(FormatEmittedWindows(two), "minutes=60,windows=1700000000000000000");
  EXPECT_EQ(ParseEmittedWindows(FormatEmittedWindows(two)), two);
  EXPECT_EQ(FormatEmittedWindows({}), "-");
  EXPECT_EQ(ParseEmittedWindows("-"), EmittedWindows{});
  // One window, as a release before per-node records wrote it: every node's.
  const auto before = ParseEmittedWindows("1700000000000000000");
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(EmittedBy(*before, "windows"), 1'700'000'000'000'000'000);
  EXPECT_EQ(EmittedBy(*before, "minutes"), 1'700'000'000'000'000'000);
  EXPECT_EQ(EmittedBy(two, "hours"), std::nullopt);
  for (const char* bad : {"", "x", "=5", "a=", "a=5,", "a=5,b", "a=5x", ",a=5"}) {
    EXPECT_FALSE(ParseEmittedWindows(bad).has_value()) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace fleetflow::testing

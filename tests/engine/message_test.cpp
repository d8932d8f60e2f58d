// PerMessageAllocator: a large block freed (a window's slots, once the sink is done with them) is
// the next large block's memory, so a worker's second window does not take new memory.
#include "message.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <type_traits>
#include <vector>

namespace fleetflow {
namespace {

#if FF_SANITIZED
// Sanitizer builds keep the standard allocator, which the sanitizers check.
TEST(PerMessageAllocatorTest, SanitizerBuildsUseTheStandardAllocator) {
  EXPECT_TRUE((std::is_same_v<PerMessageAllocator<Slot>, std::allocator<Slot>>));
}
#else
constexpr size_t kMiB = size_t{1} << 20;
using Slots = std::vector<Slot, PerMessageAllocator<Slot>>;

TEST(PerMessageAllocatorTest, ALargeBlockFreedIsTheNextLargeBlocksMemory) {
  const size_t slots = 45 * kMiB / sizeof(Slot);  // 100 000 vehicles x 4 sensors
  Slots first;
  first.reserve(slots);
  const Slot* memory = first.data();
  Slots().swap(first);  // freed (the sink is done with the window)
  Slots second;
  second.reserve(slots - 1000);  // a window of a few vehicles fewer
  EXPECT_EQ(second.data(), memory);
  Slots third;
  third.reserve(slots);  // nothing kept now: another block
  EXPECT_NE(third.data(), memory);
}

TEST(PerMessageAllocatorTest, ABlockIsTakenOnlyForARequestItHoldsAndNotTwiceOver) {
  void* block = scalable_malloc(16 * kMiB);
  ASSERT_NE(block, nullptr);
  KeepBlock(block);
  EXPECT_EQ(TakeKeptBlock(20 * kMiB), nullptr);  // too small
  EXPECT_EQ(TakeKeptBlock(5 * kMiB), nullptr);   // more than twice over: kept for its size
  EXPECT_EQ(TakeKeptBlock(9 * kMiB), block);
  EXPECT_EQ(TakeKeptBlock(9 * kMiB), nullptr);  // taken once
  scalable_free(block);
}

TEST(PerMessageAllocatorTest, OnlyTheNewestBlockIsKept) {
  void* older = scalable_malloc(8 * kMiB);
  void* newer = scalable_malloc(8 * kMiB);
  ASSERT_NE(older, nullptr);
  ASSERT_NE(newer, nullptr);
  KeepBlock(older);
  KeepBlock(newer);  // frees the older one
  EXPECT_EQ(TakeKeptBlock(8 * kMiB), newer);
  EXPECT_EQ(TakeKeptBlock(8 * kMiB), nullptr);
  scalable_free(newer);
}

TEST(PerMessageAllocatorTest, SmallBlocksAreNotKept) {
  Slots small;
  small.reserve(1000);
  Slots().swap(small);  // freed
  EXPECT_EQ(TakeKeptBlock(1000 * sizeof(Slot)), nullptr);
}
#endif

}  // namespace
}  // namespace fleetflow

// The archive operators' writer thread (operators/archive/ordered_writer.hpp): jobs in order, a
// failing job tried again before any later one, one given up dropped, waiting and removing.
#include "archive/ordered_writer.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace fleetflow::archive {
namespace {

using namespace std::chrono_literals;

struct Job {
  int id = 0;
  int fail_times = 0;  // how often it throws before it succeeds (-1: always)
  bool give_up = false;
};

class Recorder {
 public:
  void Run(const Job& j) {
    std::lock_guard lock(mu_);
    tries_.push_back(j.id);
    if (j.fail_times < 0 || failed_[j.id] < j.fail_times) {
      ++failed_[j.id];
      throw std::runtime_error("job " + std::to_string(j.id) + " failed");
    }
    done_.push_back(j.id);
  }
  std::vector<int> done() {
    std::lock_guard lock(mu_);
    return done_;
  }
  std::vector<int> tries() {
    std::lock_guard lock(mu_);
    return tries_;
  }

 private:
  std::mutex mu_;
  std::vector<int> tries_, done_;
  std::map<int, int> failed_;
};

TEST(OrderedWriterTest, AFailingJobIsTriedAgainBeforeAnyLaterOne) {
  Recorder r;
  std::atomic<int> failures{0};
  std::atomic<int64_t> retry{0};
  OrderedWriter<Job> w([&](const Job& j) { r.Run(j); },
                       [&](const Job& j, const std::exception&, int64_t ms) {
                         ++failures;
                         retry = ms;
                         return !j.give_up;
                       });
  w.Enqueue({1, 0});
  w.Enqueue({2, 1});  // fails once: tried again after 1 s, before 3
  w.Enqueue({3, 0});
  ASSERT_TRUE(w.WaitDone([](const Job&) { return true; }, 10s));
  EXPECT_EQ(r.done(), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(r.tries(), (std::vector<int>{1, 2, 2, 3}));
  EXPECT_EQ(failures, 1);
  EXPECT_EQ(retry, 1000);
}

TEST(OrderedWriterTest, AJobGivenUpIsDroppedAndTheNextOneRuns) {
  Recorder r;
  OrderedWriter<Job> w([&](const Job& j) { r.Run(j); },
                       [&](const Job& j, const std::exception&, int64_t) { return !j.give_up; });
  w.Enqueue({1, -1, /*give_up=*/true});
  w.Enqueue({2, 0});
  ASSERT_TRUE(w.WaitDone([](const Job&) { return true; }, 10s));
  EXPECT_EQ(r.done(), (std::vector<int>{2}));
  EXPECT_EQ(r.tries(), (std::vector<int>{1, 2}));
}

TEST(OrderedWriterTest, RemoveTakesTheWaitingJobsNotTheRunningOne) {
  Recorder r;
  std::atomic<bool> started{false}, release{false};
  OrderedWriter<Job> w(
      [&](const Job& j) {
        if (j.id == 1) {
          started = true;
          while (!release) std::this_thread::yield();  // a slow write
        }
        r.Run(j);
      },
      [](const Job&, const std::exception&, int64_t) { return true; });
  w.Enqueue({1, 0});
  w.Enqueue({2, 0});
  w.Enqueue({3, 0});
  while (!started) std::this_thread::yield();
  const std::vector<Job> removed = w.Remove([](const Job& j) { return j.id != 2; });
  ASSERT_EQ(removed.size(), 1u);  // 3; not 1, which runs
  EXPECT_EQ(removed[0].id, 3);
  EXPECT_FALSE(w.WaitDone([](const Job& j) { return j.id == 1; }, 10ms)) << "1 still runs";
  release = true;
  ASSERT_TRUE(w.WaitDone([](const Job&) { return true; }, 10s));
  EXPECT_EQ(r.done(), (std::vector<int>{1, 2}));
}

TEST(OrderedWriterTest, AJobWaitingToBeTriedAgainCanBeRemoved) {
  Recorder r;
  OrderedWriter<Job> w([&](const Job& j) { r.Run(j); },
                       [](const Job&, const std::exception&, int64_t) { return true; });
  w.Enqueue({1, -1});  // fails for ever: a disk gone
  w.Enqueue({2, 0});
  EXPECT_FALSE(w.WaitDone([](const Job& j) { return j.id == 1; }, 100ms));
  w.Remove([](const Job& j) { return j.id == 1; });  // given up (a partition revoked)
  ASSERT_TRUE(w.WaitDone([](const Job&) { return true; }, 10s));
  EXPECT_EQ(r.done(), (std::vector<int>{2}));
}

}  // namespace
}  // namespace fleetflow::archive

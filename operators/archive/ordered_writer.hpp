#pragma once
/// The archive operators' writer thread: it runs their jobs (a flush, a log segment, the
/// retention) in order, off the graph's thread, each until it succeeds.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace fleetflow::archive {

/// Runs jobs on a thread of its own, in the order given. A job that throws is tried again —
/// after 1 s, doubling up to 30 s — before any later one, so that nothing after it is committed
/// before it, unless `failed` gives it up.
template <typename Job>
class OrderedWriter {
 public:
  /// `run` does a job, throwing to have it tried again; `failed` hears of each failure with the
  /// time until the next try, and returns whether to try again (false: the job is given up).
  OrderedWriter(std::function<void(const Job&)> run,
                std::function<bool(const Job&, const std::exception&, int64_t retry_ms)> failed)
      : run_(std::move(run)), failed_(std::move(failed)), thread_([this] { Loop(); }) {}

  ~OrderedWriter() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }

  OrderedWriter(const OrderedWriter&) = delete;
  OrderedWriter& operator=(const OrderedWriter&) = delete;

  void Enqueue(Job job) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
    }
    changed_.notify_all();
  }

  /// Waits until `holds(jobs)` for the jobs not done yet (the running one first), at most
  /// `limit`; whether it holds then. It holds at once when the writer is stopping.
  template <typename Holds>
  bool WaitUntil(Holds holds, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, limit, [&] { return stop_ || holds(std::as_const(jobs_)); });
  }

  /// Waits until no job that `matches` is left, at most `limit`; whether none is.
  template <typename Matches>
  bool WaitDone(Matches matches, std::chrono::milliseconds limit) {
    return WaitUntil(
        [&](const std::deque<Job>& jobs) {
          return std::none_of(jobs.begin(), jobs.end(), matches);
        },
        limit);
  }

  /// Removes the waiting jobs that `drop` accepts — one waiting for its next try too, not the
  /// one running; returns them.
  template <typename Drop>
  std::vector<Job> Remove(Drop drop) {
    std::vector<Job> removed;
    {
      std::lock_guard lock(mu_);
      const auto first = jobs_.begin() + (running_ ? 1 : 0);
      const auto kept =
          std::stable_partition(first, jobs_.end(), [&](const Job& j) { return !drop(j); });
      std::move(kept, jobs_.end(), std::back_inserter(removed));
      jobs_.erase(kept, jobs_.end());
    }
    changed_.notify_all();
    return removed;
  }

 private:
  void Loop() {
    int64_t backoff_ms = 0;
    std::unique_lock lock(mu_);
    while (true) {
      changed_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      running_ = true;
      const Job& job = jobs_.front();  // stays while it runs: Remove() leaves it
      lock.unlock();
      bool done = true;
      try {
        run_(job);
        backoff_ms = 0;
      } catch (const std::exception& e) {
        backoff_ms = backoff_ms == 0 ? 1000 : std::min<int64_t>(backoff_ms * 2, 30'000);
        done = !failed_(job, e, backoff_ms);
        if (done) backoff_ms = 0;
      }
      lock.lock();
      running_ = false;
      if (done) jobs_.pop_front();
      changed_.notify_all();
      if (!done) {
        changed_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return stop_; });
      }
    }
  }

  const std::function<void(const Job&)> run_;
  const std::function<bool(const Job&, const std::exception&, int64_t)> failed_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Job> jobs_;  // not done yet; the front one runs while running_
  bool running_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: started once the rest is there
};

}  // namespace fleetflow::archive

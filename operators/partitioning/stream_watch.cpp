#include "stream_watch.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "clock.hpp"
#include "thread_name.hpp"

namespace fleetflow {

StreamWatch::StreamWatch(nats::JetStream& js, std::string stream, std::string node, int quiet_ms)
    : js_(js),
      stream_(std::move(stream)),
      node_(std::move(node)),
      quiet_ns_(int64_t{quiet_ms} * 1'000'000),
      delivered_ns_(SteadyNowNs()) {}

StreamWatch::~StreamWatch() { Stop(); }

void StreamWatch::Start() {
  thread_ = std::thread([this] { Loop(); });
  NameThread(thread_, "ff-stream-watch");
}

void StreamWatch::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool StreamWatch::Quiet(int64_t now_ns) const {
  return now_ns - delivered_ns_.load() > quiet_ns_ ||
         WallClock().NowNs() - stored_ns_.load() > quiet_ns_;
}

bool StreamWatch::Unconfirmed(int64_t now_ns) const {
  return Quiet(now_ns) &&
         now_ns - confirmed_ns_.load() > std::max<int64_t>(3 * quiet_ns_, 1'500'000'000);
}

bool StreamWatch::Unavailable() const { return unavailable_.load(); }

void StreamWatch::Loop() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::nanoseconds(quiet_ns_), [this] { return stopping_; })) {
    if (!Quiet(SteadyNowNs()) && !unavailable_.load()) continue;  // asked until it answers
    lock.unlock();
    Ask();
    lock.lock();
  }
}

void StreamWatch::Ask() {
  const int64_t asked = SteadyNowNs();
  std::string why;
  try {
    const auto found = js_.FindStream(stream_, 1000);
    if (!found) {
      why = "it does not exist";
    } else if (found->replicas > 1 && found->leader.empty()) {
      why = "it has no leader";
    }
  } catch (const nats::Error& e) {
    why = e.what();
  }
  if (why.empty()) {
    confirmed_ns_ = asked;
    if (unavailable_.exchange(false)) {
      spdlog::info("node '{}': stream {} answers again after {} ms", node_, stream_,
                   (asked - unavailable_since_ns_) / 1'000'000);
    }
  } else if (!unavailable_.exchange(true)) {
    unavailable_since_ns_ = asked;
    spdlog::warn(
        "node '{}': stream {} cannot store anything now ({}): windows are held back "
        "until it answers",
        node_, stream_, why);
  }
}

}  // namespace fleetflow

#pragma once
/// Process-wide counters and gauges, exposed in the Prometheus text format.
/// Get* may be called from any thread; the returned references stay valid for the life of the
/// Metrics object, so hot paths look a metric up once and then only touch an atomic.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fleetflow {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void Set(double v) { v_.store(v, std::memory_order_relaxed); }
  void Add(double d);
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

class Metrics {
 public:
  /// `name` without the fleetflow_ prefix; counters get the _total suffix in the exposition.
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});

  /// Sum of a counter over all its label sets (0 when unknown).
  uint64_t CounterSum(const std::string& name) const;
  double GaugeSum(const std::string& name) const;

  /// Runs `collect` at the start of every Exposition(), to refresh gauges that are computed on
  /// demand (process memory, uptime). It may call Get*; it must not call Exposition().
  void AddCollector(std::function<void()> collect);

  /// The Prometheus text exposition format, version 0.0.4.
  std::string Exposition() const;

 private:
  struct Family {
    std::string help;
    bool is_counter = true;
    std::map<std::string, std::unique_ptr<Counter>> counters;  // by rendered label set
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
  };
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::vector<std::function<void()>> collectors_;
};

/// The version of this build (the CMake project version).
std::string_view BuildVersion();

/// Adds the process gauges: resident memory (from /proc/self/statm) and uptime, refreshed at
/// every scrape, and build_info{version} 1. Call once, at startup.
void AddProcessMetrics(Metrics& metrics);

}  // namespace fleetflow

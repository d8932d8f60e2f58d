#pragma once
/// Process-wide counters, gauges and histograms, exposed in the Prometheus text format.
/// Get* may be called from any thread; the returned references stay valid for the life of the
/// Metrics object, so hot paths look a metric up once and then only touch an atomic.
///
/// The exposition is prometheus-cpp's (prometheus::TextSerializer): numbers are printed with 16
/// significant digits, so counts and byte sizes up to 2^53 are exact. Counters and gauges are
/// fleetflow's own relaxed atomics, read into prometheus-cpp's data model at each scrape;
/// histograms are prometheus::Histogram objects of a prometheus::Registry.

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

namespace prometheus {
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace fleetflow {

using Labels = std::vector<std::pair<std::string, std::string>>;

/// Counters and gauges each take a cache line of their own: they are made one after the other
/// (the operators of a pipeline at start) and written by different threads (the source's on the
/// fetch thread, the operators' on the graph's), and sharing a line would make every increment
/// wait for the line to come back from the other core.
inline constexpr size_t kMetricAlign = 64;

class alignas(kMetricAlign) Counter {
 public:
  void Inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class alignas(kMetricAlign) Gauge {
 public:
  void Set(double v) { v_.store(v, std::memory_order_relaxed); }
  void Add(double d);
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

/// A Prometheus histogram: cumulative counts of observations at or below each upper bound,
/// their sum and their count. Observe takes a short lock: record once per batch or write, not
/// once per message.
class Histogram {
 public:
  explicit Histogram(prometheus::Histogram& h, std::vector<double> bounds)
      : h_(h), bounds_(std::move(bounds)) {}
  void Observe(double value);
  /// Records `count` observations of the same value at once (one lock).
  void Observe(double value, uint64_t count);
  /// Observations so far, and their sum.
  uint64_t count() const;
  double sum() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  prometheus::Histogram& h_;
  const std::vector<double> bounds_;
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  /// `name` without the fleetflow_ prefix; counters get the _total suffix in the exposition.
  /// A name is one kind of metric: asking for it as another kind throws std::logic_error.
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  /// `buckets`: the upper bounds, ascending (+Inf is implied). A label set keeps the buckets it
  /// was first asked with. Histogram label names come out in alphabetical order.
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          const std::vector<double>& buckets, const Labels& labels = {});

  /// Removes the label set `labels` of gauge `name` (a series that no longer applies, e.g. a
  /// partition given up); references to it become invalid. No-op when unknown.
  void RemoveGauge(const std::string& name, const Labels& labels);

  /// Sum of a counter over all its label sets (0 when unknown).
  uint64_t CounterSum(const std::string& name) const;
  double GaugeSum(const std::string& name) const;
  /// Observations of a histogram, summed over its label sets (0 when unknown).
  uint64_t HistogramCount(const std::string& name) const;
  /// Every label set of the counter or gauge `name`, as it was given, with its value (empty when
  /// unknown or a histogram). Reads only: asking creates nothing.
  std::vector<std::pair<Labels, double>> Values(const std::string& name) const;

  /// A metric of a standard name, exposed as `name` exactly, without the fleetflow_ prefix: the
  /// process_* metrics every Prometheus client library exports, so that stock dashboards and
  /// alerts find them. Its value is set, typically by a collector; `counter` types it as a
  /// counter (`name` then ends in _total already, and the value only grows), else as a gauge.
  /// Asking again for the same name returns the same metric.
  Gauge& GetStandardMetric(const std::string& name, const std::string& help, bool counter = false);

  /// Runs `collect` at the start of every Exposition(), to refresh gauges that are computed on
  /// demand (process memory, CPU time). It may call Get*; it must not call Exposition().
  void AddCollector(std::function<void()> collect);

  /// The Prometheus text exposition format, version 0.0.4. Families are in the order of their
  /// names, label sets in the order of their rendered labels.
  std::string Exposition() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Family {
    std::string help;
    Kind kind = Kind::kCounter;
    // By rendered label set; each holds the label set as it was given.
    std::map<std::string, std::pair<Labels, std::unique_ptr<Counter>>> counters;
    std::map<std::string, std::pair<Labels, std::unique_ptr<Gauge>>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
    prometheus::Family<prometheus::Histogram>* histogram_family = nullptr;
  };
  Family& FamilyOf(const std::string& name, const std::string& help, Kind kind);  // mu_ held

  mutable std::mutex mu_;
  std::unique_ptr<prometheus::Registry> registry_;  // the histograms
  std::map<std::string, Family> families_;
  struct Standard {
    std::string help;
    bool counter = false;
    std::unique_ptr<Gauge> value;
  };
  std::map<std::string, Standard> standard_;  // by exposed name
  std::vector<std::function<void()>> collectors_;
};

/// The version of this build (the CMake project version).
std::string_view BuildVersion();

/// Adds fleetflow_build_info{version} 1 and the standard process metrics of Prometheus client
/// libraries, unprefixed and refreshed at every scrape: process_cpu_seconds_total,
/// process_resident_memory_bytes, process_virtual_memory_bytes, process_start_time_seconds,
/// process_open_fds and process_max_fds. Call once, at startup.
void AddProcessMetrics(Metrics& metrics);

}  // namespace fleetflow

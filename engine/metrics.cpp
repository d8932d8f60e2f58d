#include "metrics.hpp"

#include <prometheus/client_metric.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace fleetflow {

namespace {

constexpr char kPrefix[] = "fleetflow_";

/// The sum of `value` over the series (`series`: one of a family's maps) of family `name`, under
/// `mu`; 0 when there is no such family.
template <typename Sum, typename Family, typename Series, typename Value>
Sum SumOver(std::mutex& mu, const std::map<std::string, Family>& families, const std::string& name,
            Series Family::*series, Value value) {
  std::lock_guard lock(mu);
  const auto it = families.find(name);
  if (it == families.end()) return 0;
  Sum sum = 0;
  for (const auto& [_, s] : it->second.*series) sum += value(s);
  return sum;
}

std::string RenderLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ',';
    out += labels[i].first + "=\"";
    for (char c : labels[i].second) {
      if (c == '\\' || c == '"') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string RenderLabels(const std::vector<prometheus::ClientMetric::Label>& labels) {
  Labels l;
  l.reserve(labels.size());
  for (const auto& label : labels) l.emplace_back(label.name, label.value);
  return RenderLabels(l);
}

std::vector<prometheus::ClientMetric::Label> ToClientLabels(const Labels& labels) {
  std::vector<prometheus::ClientMetric::Label> out;
  out.reserve(labels.size());
  for (const auto& [name, value] : labels) out.push_back({name, value});
  return out;
}

const char* KindName(int kind) {
  static const char* const kNames[] = {"counter", "gauge", "histogram"};
  return kNames[kind];
}

}  // namespace

void Gauge::Add(double d) {
  double cur = v_.load(std::memory_order_relaxed);
  while (!v_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

void Histogram::Observe(double value) { h_.Observe(value); }

void Histogram::Observe(double value, uint64_t count) {
  if (count == 0) return;
  if (count == 1) return h_.Observe(value);
  // The bucket prometheus::Histogram::Observe picks: the first bound at or above the value.
  const auto bucket = std::find_if(bounds_.begin(), bounds_.end(),
                                   [value](double bound) { return value <= bound; });
  std::vector<double> increments(bounds_.size() + 1, 0.0);
  increments[static_cast<size_t>(bucket - bounds_.begin())] = static_cast<double>(count);
  h_.ObserveMultiple(increments, value * static_cast<double>(count));
}

uint64_t Histogram::count() const { return h_.Collect().histogram.sample_count; }

double Histogram::sum() const { return h_.Collect().histogram.sample_sum; }

Metrics::Metrics() : registry_(std::make_unique<prometheus::Registry>()) {}

Metrics::~Metrics() = default;

Metrics::Family& Metrics::FamilyOf(const std::string& name, const std::string& help, Kind kind) {
  auto [it, added] = families_.try_emplace(name);
  Family& f = it->second;
  if (added) {
    f.kind = kind;
  } else if (f.kind != kind) {
    throw std::logic_error("metric " + name + " is a " + KindName(static_cast<int>(f.kind)) +
                           ", not a " + KindName(static_cast<int>(kind)));
  }
  f.help = help;
  return f;
}

Counter& Metrics::GetCounter(const std::string& name, const std::string& help,
                             const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyOf(name, help, Kind::kCounter);
  auto& slot = f.counters[RenderLabels(labels)];
  if (!slot.second) slot = {labels, std::make_unique<Counter>()};
  return *slot.second;
}

Gauge& Metrics::GetGauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyOf(name, help, Kind::kGauge);
  auto& slot = f.gauges[RenderLabels(labels)];
  if (!slot.second) slot = {labels, std::make_unique<Gauge>()};
  return *slot.second;
}

void Metrics::RemoveGauge(const std::string& name, const Labels& labels) {
  std::lock_guard lock(mu_);
  const auto it = families_.find(name);
  if (it != families_.end()) it->second.gauges.erase(RenderLabels(labels));
}

Histogram& Metrics::GetHistogram(const std::string& name, const std::string& help,
                                 const std::vector<double>& buckets, const Labels& labels) {
  std::lock_guard lock(mu_);
  const bool known = families_.count(name) > 0;
  Family& f = FamilyOf(name, help, Kind::kHistogram);
  if (!known) {
    try {
      f.histogram_family =
          &prometheus::BuildHistogram().Name(kPrefix + name).Help(help).Register(*registry_);
    } catch (...) {
      families_.erase(name);
      throw;
    }
  }
  const std::string key = RenderLabels(labels);
  if (auto it = f.histograms.find(key); it != f.histograms.end()) return *it->second;
  prometheus::Labels prom_labels;
  for (const auto& [k, v] : labels) prom_labels[k] = v;
  // Throws std::invalid_argument for unsorted buckets or an invalid label name.
  prometheus::Histogram& h = f.histogram_family->Add(prom_labels, buckets);
  auto& slot = f.histograms[key];
  slot = std::make_unique<Histogram>(h, buckets);
  return *slot;
}

uint64_t Metrics::CounterSum(const std::string& name) const {
  return SumOver<uint64_t>(mu_, families_, name, &Family::counters,
                           [](const auto& c) { return c.second->value(); });
}

double Metrics::GaugeSum(const std::string& name) const {
  return SumOver<double>(mu_, families_, name, &Family::gauges,
                         [](const auto& g) { return g.second->value(); });
}

uint64_t Metrics::HistogramCount(const std::string& name) const {
  return SumOver<uint64_t>(mu_, families_, name, &Family::histograms,
                           [](const auto& h) { return h->count(); });
}

std::vector<std::pair<Labels, double>> Metrics::Values(const std::string& name) const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<Labels, double>> out;
  auto it = families_.find(name);
  if (it == families_.end()) return out;
  for (const auto& [_, c] : it->second.counters) {
    out.emplace_back(c.first, static_cast<double>(c.second->value()));
  }
  for (const auto& [_, g] : it->second.gauges) out.emplace_back(g.first, g.second->value());
  return out;
}

void Metrics::AddCollector(std::function<void()> collect) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collect));
}

std::string Metrics::Exposition() const {
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard lock(mu_);
    collectors = collectors_;
  }
  for (const auto& collect : collectors) collect();

  std::vector<prometheus::MetricFamily> out;
  {
    std::lock_guard lock(mu_);
    std::unordered_map<std::string, prometheus::MetricFamily> histograms;
    for (auto& family : registry_->Collect()) {
      std::string name = family.name;
      histograms.emplace(std::move(name), std::move(family));
    }
    out.reserve(families_.size());
    for (const auto& [name, f] : families_) {
      prometheus::MetricFamily mf;
      mf.name = kPrefix + name;
      mf.help = f.help;
      switch (f.kind) {
        case Kind::kCounter:
          mf.name += "_total";
          mf.type = prometheus::MetricType::Counter;
          for (const auto& [_, c] : f.counters) {
            prometheus::ClientMetric m;
            m.label = ToClientLabels(c.first);
            m.counter.value = static_cast<double>(c.second->value());
            mf.metric.push_back(std::move(m));
          }
          break;
        case Kind::kGauge:
          mf.type = prometheus::MetricType::Gauge;
          for (const auto& [_, g] : f.gauges) {
            prometheus::ClientMetric m;
            m.label = ToClientLabels(g.first);
            m.gauge.value = g.second->value();
            mf.metric.push_back(std::move(m));
          }
          break;
        case Kind::kHistogram: {
          auto it = histograms.find(mf.name);
          if (it == histograms.end()) continue;
          mf = std::move(it->second);
          // The registry keeps label sets unordered: ordered here as the other families are.
          std::vector<std::pair<std::string, prometheus::ClientMetric>> sorted;
          sorted.reserve(mf.metric.size());
          for (auto& m : mf.metric) sorted.emplace_back(RenderLabels(m.label), std::move(m));
          std::sort(sorted.begin(), sorted.end(),
                    [](const auto& a, const auto& b) { return a.first < b.first; });
          mf.metric.clear();
          for (auto& [_, m] : sorted) mf.metric.push_back(std::move(m));
          break;
        }
      }
      if (!mf.metric.empty()) out.push_back(std::move(mf));
    }
  }
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, out);
  return text.str();
}

std::string_view BuildVersion() { return FF_VERSION; }

void AddProcessMetrics(Metrics& metrics) {
  metrics
      .GetGauge("build_info", "Always 1; the labels describe this build.",
                {{"version", std::string(BuildVersion())}})
      .Set(1);
  Gauge& rss = metrics.GetGauge("process_resident_memory_bytes",
                                "Resident memory of the process (from /proc/self/statm).");
  Gauge& uptime = metrics.GetGauge("process_uptime_seconds", "Seconds since the engine started.");
  const auto start = std::chrono::steady_clock::now();
  const long page = sysconf(_SC_PAGESIZE);
  metrics.AddCollector([&rss, &uptime, start, page] {
    std::ifstream statm("/proc/self/statm");
    uint64_t size = 0, resident = 0;
    if (statm >> size >> resident) rss.Set(static_cast<double>(resident) * page);
    uptime.Set(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  });
}

}  // namespace fleetflow

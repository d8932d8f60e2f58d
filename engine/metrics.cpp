#include "metrics.hpp"

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

namespace fleetflow {

namespace {

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

}  // namespace

void Gauge::Add(double d) {
  double cur = v_.load(std::memory_order_relaxed);
  while (!v_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

Counter& Metrics::GetCounter(const std::string& name, const std::string& help,
                             const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = families_[name];
  f.help = help;
  f.is_counter = true;
  auto& slot = f.counters[RenderLabels(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& Metrics::GetGauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = families_[name];
  f.help = help;
  f.is_counter = false;
  auto& slot = f.gauges[RenderLabels(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

uint64_t Metrics::CounterSum(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  uint64_t sum = 0;
  for (const auto& [_, c] : it->second.counters) sum += c->value();
  return sum;
}

double Metrics::GaugeSum(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  double sum = 0;
  for (const auto& [_, g] : it->second.gauges) sum += g->value();
  return sum;
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
  std::lock_guard lock(mu_);
  std::ostringstream out;
  for (const auto& [name, f] : families_) {
    const std::string full = "fleetflow_" + name + (f.is_counter ? "_total" : "");
    out << "# HELP " << full << ' ' << f.help << '\n';
    out << "# TYPE " << full << (f.is_counter ? " counter\n" : " gauge\n");
    for (const auto& [labels, c] : f.counters) out << full << labels << ' ' << c->value() << '\n';
    for (const auto& [labels, g] : f.gauges) out << full << labels << ' ' << g->value() << '\n';
  }
  return out.str();
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

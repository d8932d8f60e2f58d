#include "metrics.hpp"

#include <prometheus/client_metric.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
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

Gauge& Metrics::GetStandardMetric(const std::string& name, const std::string& help, bool counter) {
  std::lock_guard lock(mu_);
  Standard& m = standard_[name];
  if (!m.value) m = {help, counter, std::make_unique<Gauge>()};
  return *m.value;
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
    for (const auto& [name, m] : standard_) {
      prometheus::MetricFamily mf;
      mf.name = name;
      mf.help = m.help;
      prometheus::ClientMetric cm;
      if (m.counter) {
        mf.type = prometheus::MetricType::Counter;
        cm.counter.value = m.value->value();
      } else {
        mf.type = prometheus::MetricType::Gauge;
        cm.gauge.value = m.value->value();
      }
      mf.metric.push_back(std::move(cm));
      out.push_back(std::move(mf));
    }
    // Families in the order of their names, the standard ones among fleetflow's own.
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  }
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, out);
  return text.str();
}

std::string_view BuildVersion() { return FF_VERSION; }

namespace {

/// When this process started, in seconds since the Unix epoch: its start in clock ticks after
/// boot (/proc/self/stat, field 22) plus the boot time (/proc/stat, btime); now when either
/// cannot be read.
double ProcessStartTime() {
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // The command name (field 2) is in parentheses and may hold spaces: count from its end.
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return now;
  std::istringstream fields(stat.substr(paren + 1));
  std::string field;
  int number = 2;  // the field last read
  while (number < 22 && fields >> field) ++number;
  if (number != 22) return now;
  std::ifstream proc_stat("/proc/stat");
  double boot = -1;
  for (std::string key; proc_stat >> key;) {
    if (key == "btime") {
      proc_stat >> boot;
      break;
    }
  }
  const long ticks = sysconf(_SC_CLK_TCK);
  char* end = nullptr;
  const double start_ticks = std::strtod(field.c_str(), &end);
  if (boot < 0 || ticks <= 0 || end == field.c_str() || *end != '\0') return now;
  return boot + start_ticks / static_cast<double>(ticks);
}

}  // namespace

void AddProcessMetrics(Metrics& metrics) {
  metrics
      .GetGauge("build_info", "Always 1; the labels describe this build.",
                {{"version", std::string(BuildVersion())}})
      .Set(1);
  // The names, meanings and units of the Prometheus client libraries' process collectors.
  Gauge& cpu = metrics.GetStandardMetric("process_cpu_seconds_total",
                                         "Total user and system CPU time spent in seconds.", true);
  Gauge& rss =
      metrics.GetStandardMetric("process_resident_memory_bytes", "Resident memory size in bytes.");
  Gauge& vms =
      metrics.GetStandardMetric("process_virtual_memory_bytes", "Virtual memory size in bytes.");
  metrics
      .GetStandardMetric("process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.")
      .Set(ProcessStartTime());
  Gauge& open_fds =
      metrics.GetStandardMetric("process_open_fds", "Number of open file descriptors.");
  Gauge& max_fds =
      metrics.GetStandardMetric("process_max_fds", "Maximum number of open file descriptors.");
  const long page = sysconf(_SC_PAGESIZE);
  metrics.AddCollector([&cpu, &rss, &vms, &open_fds, &max_fds, page] {
    rusage usage{};
    if (getrusage(RUSAGE_SELF, &usage) == 0) {
      const auto seconds = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
      };
      cpu.Set(seconds(usage.ru_utime) + seconds(usage.ru_stime));
    }
    std::ifstream statm("/proc/self/statm");
    uint64_t size = 0, resident = 0;
    if (statm >> size >> resident) {
      vms.Set(static_cast<double>(size) * page);
      rss.Set(static_cast<double>(resident) * page);
    }
    // The directory's own descriptor, open while it is read, is counted too (as the client
    // libraries count it).
    std::error_code ec;
    size_t fds = 0;
    for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
         it.increment(ec)) {
      ++fds;
    }
    if (!ec) open_fds.Set(static_cast<double>(fds));
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      max_fds.Set(limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                                  : static_cast<double>(limit.rlim_cur));
    }
  });
}

}  // namespace fleetflow

#include "bench_util.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "servers.hpp"

namespace fleetflow::bench {

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

int RunMain(const char* program, int (*main)(int, char**), int argc, char** argv) {
  try {
    return main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
}

void AddOutputOptions(CLI::App& app, Output& out) {
  app.add_option("--scale", out.scale, "Label of this scale in the CSV files")
      ->capture_default_str();
  app.add_option("--csv", out.csv, "Write one row per run (and per median) to this CSV file");
  app.add_option("--summary", out.summary, "Append the headline figures to this summary CSV");
}

void AddFleetSimOptions(CLI::App& app, FleetSimLoad& load, const std::string& duration_help) {
  if (load.program.empty()) load.program = BuildTreeProgram("firmware/fleet-sim");
  app.add_option("--vehicles", load.vehicles, "Vehicles fleet-sim simulates")
      ->capture_default_str();
  app.add_option("--duration", load.duration_s, duration_help)->capture_default_str();
  app.add_option("--fleet-sim", load.program, "Path of fleet-sim (default: this build's)");
}

bool ServersInstalled(bool nats, bool postgres) {
  if (nats && !testing::NatsServer::Available()) {
    std::cerr << "nats-server not found: run scripts/deps.sh\n";
    return false;
  }
  if (postgres && !testing::PostgresServer::Available()) {
    std::cerr << "PostgreSQL server binaries not found: run scripts/deps.sh\n";
    return false;
  }
  return true;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

namespace {

/// Fields of /proc/<pid>/stat after the command name; index 0 is field 3 (state).
std::vector<std::string> StatFields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  std::vector<std::string> out;
  if (paren == std::string::npos) return out;
  std::istringstream fields(text.substr(paren + 2));
  for (std::string f; fields >> f;) out.push_back(f);
  return out;
}

uint64_t StatusKb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1));
  }
  return 0;
}

std::vector<std::string> Cmdline(const std::filesystem::path& proc_dir) {
  std::ifstream in(proc_dir / "cmdline");
  std::vector<std::string> args;
  for (std::string a; std::getline(in, a, '\0');) args.push_back(a);
  return args;
}

pid_t FindByPort(const std::string& binary, int port) {
  const std::string port_text = std::to_string(port);
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto args = Cmdline(entry.path());
    if (args.empty() || args[0].find(binary) == std::string::npos) continue;
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "-p" && args[i + 1] == port_text) return static_cast<pid_t>(std::stoi(name));
    }
  }
  return 0;
}

}  // namespace

double PidCpuSeconds(pid_t pid) {
  if (pid <= 0) return 0;
  const auto f = StatFields(pid);
  if (f.size() < 13) return 0;  // utime is field 14, stime 15
  return (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double PidSystemCpuSeconds(pid_t pid) {
  if (pid <= 0) return 0;
  const auto f = StatFields(pid);
  if (f.size() < 13) return 0;
  return std::stod(f[12]) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

uint64_t PeakRssBytes() { return StatusKb("VmHWM") * 1024; }
uint64_t RssBytes() { return StatusKb("VmRSS") * 1024; }

pid_t FindNatsServerPid(int port) { return FindByPort("nats-server", port); }
pid_t FindPostgresPid(int port) { return FindByPort("postgres", port); }

double TreeCpuSeconds(pid_t root) {
  if (root <= 0) return 0;
  std::map<pid_t, pid_t> parent;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stoi(name));
    const auto f = StatFields(pid);
    if (f.size() > 1) parent[pid] = static_cast<pid_t>(std::stoi(f[1]));
  }
  double total = 0;
  for (const auto& [pid, _] : parent) {
    for (pid_t p = pid; p > 1; p = parent.count(p) ? parent[p] : 0) {
      if (p == root) {
        total += PidCpuSeconds(pid);
        break;
      }
    }
  }
  return total;
}

std::pair<double, double> MachineJiffies() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  double v[8] = {};
  for (double& x : v) in >> x;
  double total = 0;
  for (double x : v) total += x;
  return {total - v[3] - v[4], total};
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(v.size()));
  const size_t i = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(v.size()))) - 1;
  return v[i];
}

void AppendSummary(const std::string& path, const SummaryLine& l) {
  if (path.empty()) return;
  const bool fresh = !std::filesystem::exists(path);
  std::ofstream out(path, std::ios::app);
  if (!out) throw std::runtime_error("cannot write " + path);
  if (fresh) out << "bench,metric,fleetflow,baseline,ratio,goal,met,note\n";
  const double ratio = l.baseline > 0 ? l.value / l.baseline : 0;
  char value[64], base[64], r[32];
  std::snprintf(value, sizeof value, "%.6g", l.value);
  std::snprintf(base, sizeof base, "%.6g", l.baseline);
  std::snprintf(r, sizeof r, "%.4f", ratio);
  out << l.bench << ',' << l.metric << ',' << value << ',' << (l.baseline > 0 ? base : "") << ','
      << (l.baseline > 0 ? r : "") << ',' << l.goal << ',' << l.met << ",\"" << l.note << "\"\n";
}

Csv::Csv(const std::string& path, const std::vector<std::string>& header) {
  if (path.empty()) return;
  out_.open(path);
  if (!out_) throw std::runtime_error("cannot write " + path);
  for (size_t i = 0; i < header.size(); ++i) out_ << (i ? "," : "") << header[i];
  out_ << '\n';
}

namespace {

class CountSamples final : public Operator {
 public:
  explicit CountSamples(Probe& p) : p_(p) {}
  void Process(const Message& in, Emitter&) override {
    if (const auto* b = std::get_if<SampleBatch>(in.get())) {
      p_.batches.fetch_add(1, std::memory_order_relaxed);
      p_.samples.fetch_add(b->points.size(), std::memory_order_relaxed);
      if (b->ack) b->ack->Done();
    } else if (std::holds_alternative<StatusEvent>(*in)) {
      p_.status.fetch_add(1, std::memory_order_relaxed);
    }
  }

 private:
  Probe& p_;
};

class NullRows final : public Operator {
 public:
  explicit NullRows(Probe& p) : p_(p) {}
  void Process(const Message& in, Emitter&) override {
    if (const auto* b = std::get_if<WindowBatch>(in.get())) {
      p_.rows.fetch_add(b->rows.size(), std::memory_order_relaxed);
      p_.windows.fetch_add(1, std::memory_order_relaxed);
    }
  }

 private:
  Probe& p_;
};

}  // namespace

void RegisterBenchSinks(Registry& registry, Probe& probe) {
  OperatorInfo samples;
  samples.name = "bench_count_samples";
  samples.summary = "Benchmark sink: counts sample batches, samples and status events.";
  samples.input = PortKind::kSamples;
  samples.output = PortKind::kNone;
  samples.create = [&probe](const OperatorContext&) {
    return std::make_unique<CountSamples>(probe);
  };
  registry.Add(std::move(samples));

  OperatorInfo rows;
  rows.name = "bench_null_rows";
  rows.summary = "Benchmark sink: counts rows and windows, writes nothing.";
  rows.input = PortKind::kRows;
  rows.output = PortKind::kNone;
  rows.create = [&probe](const OperatorContext&) { return std::make_unique<NullRows>(probe); };
  registry.Add(std::move(rows));
}

Pipeline ParsePipelineOrThrow(const std::string& json, const Registry& registry) {
  LoadResult loaded = ParsePipeline(json, "bench.json", registry);
  if (!loaded.ok()) {
    std::string all;
    for (const auto& d : loaded.errors) all += d.Format() + "\n";
    throw std::runtime_error("bench pipeline invalid:\n" + all);
  }
  return *loaded.pipeline;
}

std::string BuildTreeProgram(const std::string& relative) {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  const auto path = exe.parent_path().parent_path() / relative;
  return std::filesystem::exists(path) ? path.string() : "";
}

bool ParseFleetSimSummary(const std::string& text, FleetSimSummary& out) {
  const size_t at = text.rfind("{\"vehicles\":");
  if (at == std::string::npos) return false;
  const std::string line = text.substr(at, text.find('\n', at) - at);
  auto field = [&](const std::string& key) -> std::string {
    const size_t k = line.find("\"" + key + "\":");
    if (k == std::string::npos) throw std::runtime_error("fleet-sim summary lacks " + key);
    return line.substr(k + key.size() + 3);
  };
  out.vehicles = std::stoll(field("vehicles"));
  out.samples = std::stoll(field("samples"));
  out.messages = std::stoll(field("messages"));
  out.start_ns = std::stoll(field("start_ns"));
  out.end_ns = std::stoll(field("end_ns"));
  out.elapsed_s = std::stod(field("elapsed_s"));
  return true;
}

}  // namespace fleetflow::bench

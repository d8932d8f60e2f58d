#pragma once
/// Helpers shared by the benchmarks in bench/: CPU and memory probes, medians, CSV and the
/// summary lines bench/run.sh collects, counting sinks, pipeline parsing, fleet-sim as publisher.
/// Benchmarks are programs, not tests: nothing here is used by ctest.

#include <sys/types.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "pipeline.hpp"
#include "registry.hpp"

namespace fleetflow::bench {

using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::duration d);

/// A benchmark's main(): runs `main`, and prints an exception as "<program>: <what>" (exit 1).
int RunMain(const char* program, int (*main)(int, char**), int argc, char** argv);

/// Where a benchmark's figures go besides its table on stdout.
struct Output {
  std::string scale = "custom";  ///< the label of this scale in the CSV files
  std::string csv;               ///< one row per run (and per median), when not empty
  std::string summary;           ///< the headline figures are appended here (bench/run.sh)
};
/// --scale, --csv and --summary, into `out`.
void AddOutputOptions(CLI::App& app, Output& out);

/// fleet-sim as a benchmark's load: how many vehicles, for how long, and which program.
struct FleetSimLoad {
  int vehicles = 1000;
  double duration_s = 10;
  std::string program;  ///< this build's fleet-sim unless --fleet-sim names another
};
/// --vehicles, --duration (`duration_help` says what it is) and --fleet-sim, into `load`; its
/// values are the defaults shown.
void AddFleetSimOptions(CLI::App& app, FleetSimLoad& load, const std::string& duration_help);

/// Whether the servers a benchmark starts are installed: nats-server when `nats`, PostgreSQL's
/// server binaries when `postgres`. Says on stderr what is missing and where to get it when not.
bool ServersInstalled(bool nats, bool postgres);

/// User + system CPU seconds of this process (all threads).
double ProcessCpuSeconds();
/// User + system CPU seconds of the calling thread.
double ThreadCpuSeconds();
/// User + system CPU seconds of process `pid` (0 when unknown or gone).
double PidCpuSeconds(pid_t pid);
/// Of PidCpuSeconds, the system (kernel) CPU seconds only.
double PidSystemCpuSeconds(pid_t pid);
/// Peak resident set size of this process (VmHWM), in bytes.
uint64_t PeakRssBytes();
/// Current resident set size of this process (VmRSS), in bytes.
uint64_t RssBytes();

/// The nats-server listening on `port` (the fixture does not expose its pid).
pid_t FindNatsServerPid(int port);
/// The first postgres process whose command line holds "-p <port>" (the postmaster).
pid_t FindPostgresPid(int port);
/// User + system CPU seconds of `pid` and all its descendants still running (postmaster and
/// backends).
double TreeCpuSeconds(pid_t pid);

/// Busy and total jiffies of all cores (/proc/stat).
std::pair<double, double> MachineJiffies();

double Median(std::vector<double> v);
double Percentile(std::vector<double> v, double p);  // p in [0, 100], nearest rank

/// One line of docs/bench/summary_<scale>.csv: a figure of fleetflow next to its baseline.
struct SummaryLine {
  std::string bench;    // e.g. "core_ingest"
  std::string metric;   // e.g. "samples/s"
  double value = 0;     // fleetflow's figure
  double baseline = 0;  // the bare baseline's figure, same run (0: none)
  std::string goal;     // e.g. ">= 80%" (empty: no goal)
  std::string met;      // "yes", "no" or "" (no goal)
  std::string note;     // what was measured, one phrase
};
/// Appends to `path` (creating it with a header when missing); no-op for an empty path.
void AppendSummary(const std::string& path, const SummaryLine& line);

/// Writes a CSV file with a header row; rows are added with Row().
class Csv {
 public:
  Csv(const std::string& path, const std::vector<std::string>& header);
  bool ok() const { return out_.is_open(); }
  template <typename... T>
  void Row(const T&... fields) {
    if (!out_) return;
    bool first = true;
    ((out_ << (first ? "" : ",") << fields, first = false), ...);
    out_ << '\n';
    out_.flush();
  }

 private:
  std::ofstream out_;
};

/// Counters the bench sinks report to.
struct Probe {
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> samples{0};
  std::atomic<uint64_t> status{0};
  std::atomic<uint64_t> rows{0};
  std::atomic<uint64_t> windows{0};
};

/// Registers bench_count_samples (samples in: counts batches, samples, status; acknowledges)
/// and bench_null_rows (rows in: counts rows and windows), both reporting to `probe`.
void RegisterBenchSinks(Registry& registry, Probe& probe);

/// Parses a pipeline JSON (as a file would be); throws std::runtime_error listing the errors.
Pipeline ParsePipelineOrThrow(const std::string& json, const Registry& registry);

/// A program of this executable's build tree: <build>/<relative> (this program is
/// <build>/bench/ff-bench-*), e.g. "firmware/fleet-sim" or "apps/fleetflow"; "" when not found.
std::string BuildTreeProgram(const std::string& relative);

/// What fleet-sim printed as its summary line.
struct FleetSimSummary {
  int64_t vehicles = 0, samples = 0, messages = 0, start_ns = 0, end_ns = 0;
  double elapsed_s = 0;
};
/// Parses fleet-sim's JSON summary line out of `text`; false when absent.
bool ParseFleetSimSummary(const std::string& text, FleetSimSummary& out);

}  // namespace fleetflow::bench

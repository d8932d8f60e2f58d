// Archive bytes per sample (issue 42): the simulated fleet (firmware/signals.hpp, the default
// sensors gps 10 Hz, speed 30 Hz, soc 5 Hz, torque 20 Hz, fixed seed) through the real `archive`
// operator, driven in this process by the operator test kit (testkit/harness.hpp) with the
// operator's defaults except its directory (a temporary one) and stats_subject (""): the
// vehicles split into --partitions partitions by PartitionOf, as the partitioned source splits
// them, one message per vehicle and sensor every --batch-ms (fleet-sim's batching) with a
// sequence per partition, the clock moved on event time and a Tick every simulated second, so
// each partition flushes every flush_ms (600 000: 10 minutes) as in a worker. Then the bytes on
// disk: the chunks (*.csv.zst) by sensor, with their summaries (*.json), and as allocated in
// blocks; per sample of each sensor. For each zstd level (and position_decimals, value_digits)
// asked, with the operator's CPU per sample (the process's CPU, graph and writer threads, less
// the generation of the samples), so the trade-off of size and CPU is visible.
//
// Then the 1 s rows (goal: 16 bytes per row of 5 columns) through the real `row_archive`: the
// same fleet's window rows as window_join emits them (for each vehicle and second, each
// sensor's samples before and after it), one batch per partition and window, with the columns
// of pipelines/jetstream-tiers.json (lat, lon, speed, soc held, torque) and row_archive's
// defaults (value_digits 4), its CPU per row beside them.
//
// --figures FILE writes the default configuration's figures (bytes per sample of each sensor,
// summary bytes per chunk, CPU per sample) into FILE (docs/bench/storage_figures.json), which
// `fleetflow estimate` reads.
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "figures.hpp"
#include "fleetflow/testkit/harness.hpp"
#include "message.hpp"
#include "signals.hpp"

namespace fleetflow::bench {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kMsNs = 1'000'000;
constexpr int64_t kSecondNs = 1'000'000'000;
constexpr int64_t kStartNs = 1'795'824'000 * kSecondNs;  // 2026-11-28T00:00:00Z

struct Settings {
  int vehicles = 200;
  int row_vehicles = 1600;  // a worker's share: the rows' log is synced per partition and second
  std::string only;         // "samples" or "rows": that half only
  double minutes = 60;
  int partitions = 16;
  int batch_ms = 100;
  uint64_t seed = 1;
  std::vector<int> levels = {3, 1, 9, 15, 19};
  std::vector<int> position_decimals = {5};
  std::vector<int> value_digits = {7};
  std::vector<int> row_value_digits = {4, 7};
  std::string dir;  // parent of the temporary archives; "" = the system's temporary directory
  std::string figures;
  Output out;
};

/// The operator's defaults (operators/archive.cpp, Spec()): the configuration whose figures go
/// into --figures.
constexpr int kDefaultLevel = 3;
constexpr int kDefaultDecimals = 5;
constexpr int kDefaultDigits = 7;

/// What one sensor left on disk.
struct OnDisk {
  uint64_t samples = 0;    // fed
  uint64_t chunks = 0;     // *.csv.zst
  uint64_t bytes = 0;      // of the chunks
  uint64_t summary = 0;    // of their summaries (*.json)
  uint64_t allocated = 0;  // blocks of both (st_blocks * 512)
};

struct Result {
  int level = 0, decimals = 0, digits = 0;
  std::map<std::string, OnDisk> sensors;  // and "all"
  uint64_t commit_bytes = 0;              // _commits/ (one record per partition)
  double cpu_s = 0;                       // the operator's (process less generation)
  double generate_cpu_s = 0;
  double wall_s = 0;
};

/// Walks the archive under `root`: each file's sensor from its "sensor=<name>" folder.
void Measure(const fs::path& root, Result& r) {
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), root).string();
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0) continue;
    const auto size = static_cast<uint64_t>(st.st_size);
    if (rel.rfind("_commits/", 0) == 0) {
      r.commit_bytes += size;
      continue;
    }
    std::string sensor;
    if (rel.rfind("sensor=", 0) == 0) {
      sensor = rel.substr(7, rel.find('/') - 7);
    } else if (rel.rfind("rows=", 0) == 0) {
      sensor = "rows";
    } else {
      continue;  // _tmp/: nothing once drained
    }
    OnDisk& d = r.sensors[sensor];
    const auto ends = [&](std::string_view suffix) {
      return rel.size() >= suffix.size() && rel.compare(rel.size() - suffix.size(), suffix.size(),
                                                        suffix.data(), suffix.size()) == 0;
    };
    if (ends(".csv.zst")) {
      ++d.chunks;
      d.bytes += size;
    } else if (ends(".json")) {
      d.summary += size;
    } else {
      continue;
    }
    d.allocated += static_cast<uint64_t>(st.st_blocks) * 512;
  }
}

Result RunOnce(const Settings& s, int level, int decimals, int digits) {
  Result r{level, decimals, digits, {}, 0, 0, 0, 0};
  const fs::path parent = s.dir.empty() ? fs::temp_directory_path() : fs::path(s.dir);
  const fs::path root =
      parent / ("ff-bench-archive-" + std::to_string(::getpid()) + "-z" + std::to_string(level) +
                "-p" + std::to_string(decimals) + "-v" + std::to_string(digits));
  fs::remove_all(root);
  fs::create_directories(root);

  sim::FleetConfig fleet;
  fleet.seed = s.seed;
  fleet.vehicles = s.vehicles;
  fleet.start_ns = kStartNs;
  const int sensors = static_cast<int>(fleet.sensors.size());
  std::vector<std::string> ids;
  std::vector<uint32_t> partition_of;
  for (int v = 0; v < s.vehicles; ++v) {
    ids.push_back(sim::VehicleId(fleet, v));
    partition_of.push_back(PartitionOf(ids.back(), static_cast<uint32_t>(s.partitions)));
  }
  std::vector<int64_t> next_k(static_cast<size_t>(s.vehicles * sensors), 0);
  std::vector<uint64_t> sequence(static_cast<size_t>(s.partitions), 0);
  std::vector<uint64_t> fed(static_cast<size_t>(sensors), 0);

  const std::string config = R"({"directory": ")" + root.string() +
                             R"(", "stats_subject": "", "zstd_level": )" + std::to_string(level) +
                             R"(, "position_decimals": )" + std::to_string(decimals) +
                             R"(, "value_digits": )" + std::to_string(digits) + "}";
  const int64_t end_ns = kStartNs + static_cast<int64_t>(s.minutes * 60) * kSecondNs;
  const int64_t step_ns = s.batch_ms * kMsNs;
  uint64_t total = 0;
  {
    testkit::OperatorHarness h("archive", config);
    h.clock.Set(kStartNs);
    std::vector<SampleBatch> batches;
    const double cpu0 = ProcessCpuSeconds();
    const auto wall0 = SteadyClock::now();
    for (int64_t t = kStartNs; t < end_ns; t += step_ns) {
      const int64_t until = t + step_ns;
      const double g0 = ThreadCpuSeconds();
      batches.clear();
      for (int v = 0; v < s.vehicles; ++v) {
        for (int k = 0; k < sensors; ++k) {
          int64_t& n = next_k[static_cast<size_t>(v * sensors + k)];
          SampleBatch b;
          for (int64_t ts = sim::SampleTime(fleet, v, k, n); ts < until;
               ts = sim::SampleTime(fleet, v, k, ++n)) {
            b.points.push_back(sim::SampleAt(fleet, v, k, ts, static_cast<uint32_t>(n)));
          }
          if (b.points.empty()) continue;
          b.vehicle = ids[static_cast<size_t>(v)];
          b.sensor = fleet.sensors[static_cast<size_t>(k)].name;
          b.partition = partition_of[static_cast<size_t>(v)];
          b.sequence = ++sequence[b.partition];
          b.received_ns = until;
          fed[static_cast<size_t>(k)] += b.points.size();
          total += b.points.size();
          batches.push_back(std::move(b));
        }
      }
      r.generate_cpu_s += ThreadCpuSeconds() - g0;
      h.clock.Set(until);  // a batch arrives at the end of the time it covers
      for (SampleBatch& b : batches) h.Feed(Body(std::move(b)));
      if ((until - kStartNs) % kSecondNs == 0) h.TickAt(until);
    }
    // Every partition's last flush (a tick flush_ms on), written before the drain: the drain
    // waits 60 s at most, and a slow level's last flush may take longer.
    h.TickAt(end_ns + 86'400 * kSecondNs);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(30);
    while (h.Counter("samples_archived") < total) {
      if (h.Counter("flush_failures") > 0) throw std::runtime_error("the archive failed a flush");
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("the archive did not write its last flushes within 30 minutes");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling the counter
    }
    h.TickAt(end_ns + 86'400 * kSecondNs, /*drain=*/true);
    r.cpu_s = ProcessCpuSeconds() - cpu0 - r.generate_cpu_s;
    r.wall_s = Seconds(SteadyClock::now() - wall0);
    if (h.Counter("samples_duplicate") != 0) throw std::runtime_error("duplicates archived");
  }
  Measure(root, r);
  OnDisk all;
  for (int k = 0; k < sensors; ++k) {
    OnDisk& d = r.sensors[fleet.sensors[static_cast<size_t>(k)].name];
    d.samples = fed[static_cast<size_t>(k)];
    all.samples += d.samples;
    all.chunks += d.chunks;
    all.bytes += d.bytes;
    all.summary += d.summary;
    all.allocated += d.allocated;
  }
  r.sensors["all"] = all;
  fs::remove_all(root);
  return r;
}

/// The row set of pipelines/jetstream-tiers.json: the table's columns.
constexpr char kRowColumns[] =
    R"([{"name":"lat","sensor":"gps","field":"lat"},{"name":"lon","sensor":"gps","field":"lon"},)"
    R"({"name":"speed","sensor":"speed"},{"name":"soc","sensor":"soc","interpolation":"previous"},)"
    R"({"name":"torque","sensor":"torque"}])";
constexpr int kDefaultRowLevel = 9;   // row_archive's zstd_level
constexpr int kDefaultRowDigits = 4;  // row_archive's value_digits

/// The fleet's 1 s rows through row_archive; Result::sensors["rows"] has them (samples: rows).
Result RunRowsOnce(const Settings& s, int level, int decimals, int digits) {
  Result r{level, decimals, digits, {}, 0, 0, 0, 0};
  const fs::path parent = s.dir.empty() ? fs::temp_directory_path() : fs::path(s.dir);
  const fs::path root =
      parent / ("ff-bench-rows-" + std::to_string(::getpid()) + "-z" + std::to_string(level) +
                "-p" + std::to_string(decimals) + "-v" + std::to_string(digits));
  fs::remove_all(root);
  fs::create_directories(root);
  sim::FleetConfig fleet;
  fleet.seed = s.seed;
  fleet.vehicles = s.row_vehicles;
  fleet.start_ns = kStartNs;
  const int sensors = static_cast<int>(fleet.sensors.size());
  auto names = std::make_shared<std::vector<std::string>>();
  for (const auto& k : fleet.sensors) names->push_back(k.name);
  std::vector<std::string> ids;
  std::vector<uint32_t> partition_of;
  for (int v = 0; v < s.row_vehicles; ++v) {
    ids.push_back(sim::VehicleId(fleet, v));
    partition_of.push_back(PartitionOf(ids.back(), static_cast<uint32_t>(s.partitions)));
  }
  // Per vehicle and sensor: the index of the newest sample at or before the window.
  std::vector<int64_t> at(static_cast<size_t>(s.row_vehicles * sensors), 0);
  const std::string config =
      R"({"directory": ")" + root.string() + R"(", "stats_subject": "", "zstd_level": )" +
      std::to_string(level) + R"(, "position_decimals": )" + std::to_string(decimals) +
      R"(, "value_digits": )" + std::to_string(digits) + R"(, "columns": )" + kRowColumns + "}";
  const int64_t end_ns = kStartNs + static_cast<int64_t>(s.minutes * 60) * kSecondNs;
  uint64_t total = 0;
  {
    testkit::OperatorHarness h("row_archive", config);
    const double cpu0 = ProcessCpuSeconds();
    const auto wall0 = SteadyClock::now();
    for (int64_t t = kStartNs + kSecondNs; t < end_ns; t += kSecondNs) {
      const double g0 = ThreadCpuSeconds();
      std::vector<WindowBatch> batches(static_cast<size_t>(s.partitions));
      for (size_t p = 0; p < batches.size(); ++p) {
        batches[p].window_ns = t;
        batches[p].sensors = names;
        batches[p].partition = static_cast<uint32_t>(p);
      }
      for (int v = 0; v < s.row_vehicles; ++v) {
        WindowBatch& batch = batches[partition_of[static_cast<size_t>(v)]];
        const std::span<Slot> slots = batch.AddRow(ids[static_cast<size_t>(v)]);
        for (int k = 0; k < sensors; ++k) {
          int64_t& n = at[static_cast<size_t>(v * sensors + k)];
          while (sim::SampleTime(fleet, v, k, n + 1) <= t) ++n;
          const int64_t before = sim::SampleTime(fleet, v, k, n);
          const int64_t after = sim::SampleTime(fleet, v, k, n + 1);
          Slot& slot = slots[static_cast<size_t>(k)];
          if (before <= t)
            slot.before = sim::SampleAt(fleet, v, k, before, static_cast<uint32_t>(n));
          slot.after = sim::SampleAt(fleet, v, k, after, static_cast<uint32_t>(n + 1));
        }
        ++total;
      }
      r.generate_cpu_s += ThreadCpuSeconds() - g0;
      for (WindowBatch& b : batches) {
        if (!b.rows.empty()) h.Feed(Body(std::move(b)));
      }
      h.TickAt(t + 500 * kMsNs);
    }
    h.TickAt(end_ns + 3600 * kSecondNs);
    h.TickAt(end_ns + 3600 * kSecondNs, /*drain=*/true);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(30);
    while (h.Counter("rows_archived") < total) {
      if (h.Counter("flush_failures") > 0) throw std::runtime_error("row_archive failed a write");
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("row_archive did not write its rows within 30 minutes");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling the counter
    }
    r.cpu_s = ProcessCpuSeconds() - cpu0 - r.generate_cpu_s;
    r.wall_s = Seconds(SteadyClock::now() - wall0);
  }
  Measure(root, r);
  r.sensors["rows"].samples = total;
  fs::remove_all(root);
  return r;
}

double Per(uint64_t bytes, uint64_t samples) {
  return samples > 0 ? static_cast<double>(bytes) / static_cast<double>(samples) : 0;
}

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "Archive bytes per sample: the simulated fleet's samples through the archive operator "
      "(its defaults, in this process), bytes on disk per sample of each sensor and the "
      "operator's CPU per sample, for each zstd level asked."};
  app.add_option("--vehicles", s.vehicles, "Vehicles of the simulated fleet")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--minutes", s.minutes, "Simulated minutes of samples")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1440.0));
  app.add_option("--partitions", s.partitions, "Partitions the vehicles are split into")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--batch-ms", s.batch_ms, "Event time of one message (fleet-sim's --batch-ms)")
      ->capture_default_str()
      ->check(CLI::Range(1, 60'000));
  app.add_option("--seed", s.seed, "Seed of the fleet")->capture_default_str();
  app.add_option("--levels", s.levels, "zstd levels (zstd_level), each a run")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 19));
  app.add_option("--position-decimals", s.position_decimals,
                 "position_decimals, each a run (with every level)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 15));
  app.add_option("--value-digits", s.value_digits, "value_digits, each a run (with every level)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 17));
  app.add_option("--row-vehicles", s.row_vehicles,
                 "Vehicles of the rows' runs: rows per partition and second, which the log's "
                 "sync per partition and second is spread over")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--only", s.only, "Run one half: samples (archive) or rows (row_archive)")
      ->check(CLI::IsMember({"samples", "rows"}));
  app.add_option("--row-value-digits", s.row_value_digits,
                 "row_archive's value_digits, each a run of the rows (with every level)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 17));
  app.add_option("--dir", s.dir, "Where the temporary archives are written (default: $TMPDIR)");
  app.add_option("--figures", s.figures,
                 "Write the default configuration's figures (zstd 3, 5 decimals, 7 digits) into "
                 "this JSON file (docs/bench/storage_figures.json), keeping its other figures");
  AddOutputOptions(app, s.out);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  const std::vector<std::string> names = {"gps", "speed", "soc", "torque"};
  std::printf(
      "archive: %d vehicles x %.0f min of the simulated fleet (gps 10, speed 30, soc 5, torque "
      "20 Hz; seed %llu), %d partitions, a message per vehicle and sensor every %d ms, flush_ms "
      "600000, cell_precision 5, period hour\n",
      s.vehicles, s.minutes, static_cast<unsigned long long>(s.seed), s.partitions, s.batch_ms);
  Csv csv(s.out.csv, {"scale", "zstd_level", "position_decimals", "value_digits", "sensor",
                      "samples", "chunks", "chunk_bytes", "summary_bytes", "allocated_bytes",
                      "bytes_per_sample", "bytes_per_sample_with_summaries", "allocated_per_sample",
                      "cpu_seconds", "cpu_us_per_sample", "wall_seconds"});
  std::vector<Result> results;
  for (int decimals : s.only == "rows" ? std::vector<int>{} : s.position_decimals) {
    for (int digits : s.value_digits) {
      for (int level : s.levels) {
        Result r = RunOnce(s, level, decimals, digits);
        const OnDisk& all = r.sensors["all"];
        std::printf(
            "  zstd %2d, %2d decimals, %2d digits: %llu samples, %llu chunks, %.2f B/sample "
            "(gps %.2f), %.3f us CPU/sample, %.1f s\n",
            level, decimals, digits, static_cast<unsigned long long>(all.samples),
            static_cast<unsigned long long>(all.chunks), Per(all.bytes, all.samples),
            Per(r.sensors["gps"].bytes, r.sensors["gps"].samples), 1e6 * r.cpu_s / all.samples,
            r.wall_s);
        std::fflush(stdout);
        for (const auto& name : {"gps", "speed", "soc", "torque", "all"}) {
          const OnDisk& d = r.sensors[name];
          csv.Row(s.out.scale, level, decimals, digits, name, d.samples, d.chunks, d.bytes,
                  d.summary, d.allocated, Per(d.bytes, d.samples),
                  Per(d.bytes + d.summary, d.samples), Per(d.allocated, d.samples), r.cpu_s,
                  1e6 * r.cpu_s / static_cast<double>(all.samples), r.wall_s);
        }
        results.push_back(std::move(r));
      }
    }
  }

  std::printf(
      "\nBytes on disk per sample (chunks *.csv.zst; 'with summaries': and their *.json; "
      "'allocated': both in 4 KiB blocks)\n\n"
      "| zstd level | position decimals | value digits | gps | speed | soc | torque | all | "
      "all with summaries | all allocated | chunks | operator CPU us/sample | wall s |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (Result& r : results) {
    OnDisk& all = r.sensors["all"];
    std::printf(
        "| %d | %d | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %llu | %.3f | %.1f |\n",
        r.level, r.decimals, r.digits, Per(r.sensors["gps"].bytes, r.sensors["gps"].samples),
        Per(r.sensors["speed"].bytes, r.sensors["speed"].samples),
        Per(r.sensors["soc"].bytes, r.sensors["soc"].samples),
        Per(r.sensors["torque"].bytes, r.sensors["torque"].samples), Per(all.bytes, all.samples),
        Per(all.bytes + all.summary, all.samples), Per(all.allocated, all.samples),
        static_cast<unsigned long long>(all.chunks),
        1e6 * r.cpu_s / static_cast<double>(all.samples), r.wall_s);
  }
  std::printf(
      "\n1 s rows through row_archive (%d vehicles; vehicle_id, ts and 5 columns: lat, lon, "
      "speed, soc held, torque; pipelines/jetstream-tiers.json), bytes on disk per row\n\n"
      "| zstd level | position decimals | value digits | rows | chunks | bytes/row | with "
      "summaries | allocated | operator CPU us/row | wall s |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n",
      s.row_vehicles);
  std::vector<Result> row_results;
  for (int decimals : s.only == "samples" ? std::vector<int>{} : s.position_decimals) {
    for (int digits : s.row_value_digits) {
      for (int level : s.levels) {
        Result r = RunRowsOnce(s, level, decimals, digits);
        const OnDisk& d = r.sensors["rows"];
        std::printf("| %d | %d | %d | %llu | %llu | %.2f | %.2f | %.2f | %.3f | %.1f |\n", level,
                    decimals, digits, static_cast<unsigned long long>(d.samples),
                    static_cast<unsigned long long>(d.chunks), Per(d.bytes, d.samples),
                    Per(d.bytes + d.summary, d.samples), Per(d.allocated, d.samples),
                    1e6 * r.cpu_s / static_cast<double>(d.samples), r.wall_s);
        std::fflush(stdout);
        csv.Row(s.out.scale, level, decimals, digits, "rows", d.samples, d.chunks, d.bytes,
                d.summary, d.allocated, Per(d.bytes, d.samples),
                Per(d.bytes + d.summary, d.samples), Per(d.allocated, d.samples), r.cpu_s,
                1e6 * r.cpu_s / static_cast<double>(d.samples), r.wall_s);
        row_results.push_back(std::move(r));
      }
    }
  }
  const Result* def_rows = nullptr;
  for (const Result& r : row_results) {
    if (r.level == kDefaultRowLevel && r.decimals == kDefaultDecimals &&
        r.digits == kDefaultRowDigits) {
      def_rows = &r;
    }
  }
  if (def_rows != nullptr) {
    const OnDisk& d = def_rows->sensors.at("rows");
    const double per = Per(d.bytes, d.samples);
    std::printf("goal: at most 16 bytes per 1 s row of 5 columns at the defaults: %.2f, %s\n", per,
                per <= 16 ? "met" : "not met");
    AppendSummary(s.out.summary,
                  {"archive", "bytes/1 s row", per, 0, "<= 16", per <= 16 ? "yes" : "no",
                   "row_archive's defaults (zstd 9, 5 decimals, 4 digits), simulated fleet"});
  }

  const Result* def = nullptr;
  for (const Result& r : results) {
    if (r.level == kDefaultLevel && r.decimals == kDefaultDecimals && r.digits == kDefaultDigits) {
      def = &r;
    }
  }
  if (def != nullptr) {
    const OnDisk& gps = def->sensors.at("gps");
    const double gps_per = Per(gps.bytes, gps.samples);
    std::printf("goal: at most 8 bytes per gps sample at the defaults: %.2f, %s\n", gps_per,
                gps_per <= 8 ? "met" : "not met");
    AppendSummary(s.out.summary,
                  {"archive", "bytes/gps sample", gps_per, 0, "<= 8", gps_per <= 8 ? "yes" : "no",
                   "the archive operator's defaults (zstd 3, 5 decimals), simulated fleet"});
  }
  if (!s.figures.empty()) {
    if (def == nullptr || def_rows == nullptr) {
      std::fprintf(stderr,
                   "--figures: the default configurations (zstd 3, 5 decimals, 7 digits for the "
                   "samples, row_archive's for the rows) were not both run; nothing written\n");
      return 1;
    }
    const std::string date = TodayUtc(), commit = ShortCommit();
    char how[256];
    std::snprintf(how, sizeof how,
                  "archive operator defaults (zstd %d, %d decimals, %d digits, flush 10 min, "
                  "cells of 5), %d vehicles x %.0f min of the simulated fleet, %d partitions",
                  kDefaultLevel, kDefaultDecimals, kDefaultDigits, s.vehicles, s.minutes,
                  s.partitions);
    std::vector<Figure> figures;
    for (const auto& name : names) {
      const OnDisk& d = def->sensors.at(name);
      figures.push_back({"archive." + name + ".bytes_per_sample", Per(d.bytes, d.samples),
                         "bytes/sample", "ff-bench-archive", date, commit, how});
    }
    const OnDisk& all = def->sensors.at("all");
    figures.push_back({"archive.summary_bytes_per_chunk", Per(all.summary, all.chunks),
                       "bytes/chunk", "ff-bench-archive", date, commit,
                       std::string("the .json beside each chunk; ") + how});
    figures.push_back({"archive.cpu_us_per_sample",
                       1e6 * def->cpu_s / static_cast<double>(all.samples), "us/sample",
                       "ff-bench-archive", date, commit,
                       std::string("operator CPU (graph and writer threads); ") + how});
    if (def_rows != nullptr) {
      const OnDisk& d = def_rows->sensors.at("rows");
      char rows_how[256];
      std::snprintf(rows_how, sizeof rows_how,
                    "row_archive defaults (zstd %d, %d decimals, %d digits, a chunk per "
                    "partition, hour and cell of 5), lat, lon, speed, soc, torque, %d vehicles x "
                    "%.0f min of the simulated fleet, %d partitions",
                    kDefaultRowLevel, kDefaultDecimals, kDefaultRowDigits, s.row_vehicles,
                    s.minutes, s.partitions);
      figures.push_back({"archive.rows.bytes_per_row", Per(d.bytes, d.samples), "bytes/row",
                         "ff-bench-archive", date, commit, rows_how});
      figures.push_back({"archive.rows.summary_bytes_per_chunk", Per(d.summary, d.chunks),
                         "bytes/chunk", "ff-bench-archive", date, commit, rows_how});
      figures.push_back({"archive.rows.cpu_us_per_row",
                         1e6 * def_rows->cpu_s / static_cast<double>(d.samples), "us/row",
                         "ff-bench-archive", date, commit, rows_how});
    }
    MergeFigures(s.figures, figures);
    std::printf("figures: %s\n", s.figures.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-archive", fleetflow::bench::Main, argc, argv);
}

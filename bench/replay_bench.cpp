// Replay throughput: a synthetic recording (fleet-like: vehicles x gps/speed/soc/torque, several
// samples per message) replayed as fast as possible through the default pipeline
// (pipelines/default.json, nats_source replaced by replay_source as `fleetflow replay` does):
//   1. into a null sink registered here (timescale_sink replaced), median of --runs;
//   2. into a real PostgreSQL (the pipeline's timescale_sink), a throwaway server started here
//      with the test fixture, a fresh table per repeat, median of --runs. Each repeat checks that
//      rows in the table == sink_rows_written == the null sink's row count.
// Prints samples/s, rows/s and the PostgreSQL/null ratio; docs/BENCHMARKS.md records the figures.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "builtin.hpp"
#include "clock.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "recording.hpp"
#include "runtime.hpp"
#include "servers.hpp"

namespace {

using namespace fleetflow;

class NullSink final : public Operator {
 public:
  explicit NullSink(const OperatorContext& ctx)
      : rows_(
            ctx.metrics.GetCounter("null_rows", "Rows received by the null sink.", ctx.labels())) {}
  void Process(const Message& in, Emitter&) override {
    if (const auto* b = std::get_if<WindowBatch>(in.get())) rows_.Inc(b->rows.size());
  }

 private:
  Counter& rows_;
};

void RegisterNullSink(Registry& registry) {
  OperatorInfo info;
  info.name = "null_sink";
  info.summary = "Counts rows and drops them (benchmarks).";
  info.input = PortKind::kRows;
  info.output = PortKind::kNone;
  info.create = [](const OperatorContext& ctx) { return std::make_unique<NullSink>(ctx); };
  registry.Add(std::move(info));
}

/// Writes `seconds` of `vehicles` vehicles, sensors at 10/10/1/30 Hz, `per_message` samples per
/// message (receive time = newest sample + 20 ms). Returns the number of samples.
uint64_t MakeRecording(const std::string& path, int vehicles, int seconds, int per_message) {
  constexpr int64_t kT0 = 1'700'000'000'000'000'000;
  const std::pair<const char*, int> sensors[] = {
      {"gps", 10}, {"speed", 10}, {"soc", 1}, {"torque", 30}};
  struct Pending {
    int64_t recv_ns;
    recording::Record r;
  };
  std::vector<recording::Record> records;
  uint64_t samples = 0;
  for (int v = 0; v < vehicles; ++v) {
    char id[16];
    std::snprintf(id, sizeof id, "v%05d", v);
    for (const auto& [sensor, hz] : sensors) {
      const int64_t period = 1'000'000'000 / hz;
      const int n = seconds * hz;
      const int batch = std::min(per_message, hz);
      for (int i = 0; i < n; i += batch) {
        std::vector<wire::Point> pts;
        for (int k = i; k < std::min(n, i + batch); ++k) {
          wire::Point p;
          p.ts_ns = kT0 + k * period + v * 1000;
          p.seq = static_cast<uint32_t>(k);
          p.value = k * 0.5;
          if (std::string_view(sensor) == "gps") {
            p.has_position = true;
            p.lat = 48.0 + k * 1e-6;
            p.lon = 2.0 + k * 1e-6;
          }
          pts.push_back(p);
        }
        samples += pts.size();
        records.push_back({pts.back().ts_ns + 20'000'000, wire::SampleSubject(id, sensor),
                           wire::EncodeBatch(pts)});
      }
    }
  }
  std::stable_sort(records.begin(), records.end(),
                   [](const auto& a, const auto& b) { return a.recv_ns < b.recv_ns; });
  recording::Writer w;
  if (!w.Open(path)) throw std::runtime_error(w.error());
  for (const auto& r : records) w.Append(r);
  w.Close();
  return samples;
}

struct RunResult {
  double seconds = 0;
  uint64_t samples = 0, messages = 0, null_rows = 0, rows_written = 0, rows_dropped = 0,
           retries = 0, batches = 0;
};

/// One replay of the recording through `pipeline`, timed from Runtime::Start to the end of
/// Runtime::Stop (the drain Tick has been handled by every node: for timescale_sink, every
/// buffered row is committed). Operator construction (the sink's connect and CREATE TABLE) is not
/// timed; `setup_s` receives it.
RunResult RunOnce(const Pipeline& pipeline, double* setup_s = nullptr) {
  Metrics metrics;
  ReplayClock clock;
  RuntimeOptions options;
  options.tick_ms = 0;
  options.clock_driver = &clock;
  const auto built = std::chrono::steady_clock::now();
  Runtime runtime(pipeline, metrics, clock, options);
  const auto start = std::chrono::steady_clock::now();
  if (setup_s) *setup_s = std::chrono::duration<double>(start - built).count();
  runtime.Start();
  while (!runtime.InputEnded()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  runtime.Stop();
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.samples = metrics.CounterSum("samples_in");
  r.messages = metrics.CounterSum("messages_in");
  r.null_rows = metrics.CounterSum("null_rows");
  r.rows_written = metrics.CounterSum("sink_rows_written");
  r.rows_dropped = metrics.CounterSum("sink_rows_dropped");
  r.retries = metrics.CounterSum("sink_retries");
  r.batches = metrics.CounterSum("sink_batches");
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// `loaded` with every nats_source replaced by a replay_source on `file` (as `fleetflow replay`
/// does) and, when `null_sink` is set, every timescale_sink replaced by the null sink.
std::optional<Pipeline> ForReplay(const Pipeline& loaded, const Registry& registry,
                                  const std::string& file, bool null_sink) {
  Pipeline p = loaded;
  for (NodeDecl& n : p.nodes) {
    std::string type, json;
    if (n.type == "nats_source" || n.type == "replay_source") {
      type = "replay_source";
      json = "{\"file\": \"" + file + "\"}";
    } else if (null_sink && n.type == "timescale_sink") {
      type = "null_sink";
      json = "{}";
    } else {
      continue;
    }
    const OperatorInfo* info = registry.Find(type);
    Config config;
    const auto errors = ParseOperatorConfig(*info, json, config);
    if (!errors.empty()) {
      std::fprintf(stderr, "%s\n", errors.front().Format().c_str());
      return std::nullopt;
    }
    n.type = type;
    n.info = info;
    n.config = config;
  }
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Replay throughput through a pipeline into a null sink and into PostgreSQL"};
  int vehicles = 2000, seconds = 30, per_message = 10, runs = 3;
  std::string pipeline_file = FF_SOURCE_DIR "/pipelines/default.json";
  bool no_postgres = false;
  app.add_option("--vehicles", vehicles)->capture_default_str();
  app.add_option("--seconds", seconds)->capture_default_str();
  app.add_option("--per-message", per_message, "Samples per message (at most the rate)")
      ->capture_default_str();
  app.add_option("--runs", runs, "Repeats of each measurement; the median is reported")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--pipeline", pipeline_file,
                 "Pipeline file; its nats_source is replaced by replay_source, and its "
                 "timescale_sink by a null sink for the null-sink measurement")
      ->capture_default_str();
  app.add_flag("--no-postgres", no_postgres, "Only the null-sink measurement");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  testing::TempDir dir("ff-bench-replay");
  const std::string path = dir.File("bench.ffrc");
  const uint64_t samples = MakeRecording(path, vehicles, seconds, per_message);
  std::printf("recording: %d vehicles x %d s, %llu samples, %d per message\n", vehicles, seconds,
              static_cast<unsigned long long>(samples), per_message);

  // PostgreSQL first: the pipeline's ${FLEETFLOW_PG} is its conninfo.
  std::unique_ptr<testing::PostgresServer> pg;
  if (!no_postgres) {
    if (!testing::PostgresServer::Available()) {
      std::fprintf(stderr,
                   "PostgreSQL server binaries not found (scripts/deps.sh); only the null sink "
                   "is measured\n");
    } else {
      pg = std::make_unique<testing::PostgresServer>();
      pg->Start();
      std::printf("postgres: %s (%s)\n", pg->conninfo().c_str(),
                  pg->Psql("SHOW server_version").c_str());
    }
  }
  const EnvLookup process_env = ProcessEnv();
  const std::string conninfo = pg ? pg->conninfo() : "";
  const EnvLookup env = [&](const std::string& name) -> std::optional<std::string> {
    if (name == "FLEETFLOW_PG" && !conninfo.empty()) return conninfo;
    return process_env(name);
  };

  Registry registry;
  RegisterBuiltinOperators(registry);
  RegisterNullSink(registry);
  const LoadResult loaded = LoadPipelineFile(pipeline_file, registry, env);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.errors.front().Format().c_str());
    return 2;
  }
  const auto null_pipeline = ForReplay(*loaded.pipeline, registry, path, true);
  const auto pg_pipeline = ForReplay(*loaded.pipeline, registry, path, false);
  if (!null_pipeline || !pg_pipeline) return 2;
  std::vector<std::string> tables;
  for (const NodeDecl& n : pg_pipeline->nodes) {
    if (n.type == "timescale_sink") tables.push_back(n.config.String("table"));
  }
  std::printf("pipeline: %s (%zu timescale_sink)\n", pipeline_file.c_str(), tables.size());

  std::vector<double> null_sps, null_s;
  uint64_t expected_rows = 0;
  for (int run = 0; run < runs; ++run) {
    const RunResult r = RunOnce(*null_pipeline);
    if (r.samples != samples) {
      std::fprintf(stderr, "null sink run %d: %llu samples in, expected %llu\n", run + 1,
                   static_cast<unsigned long long>(r.samples),
                   static_cast<unsigned long long>(samples));
      return 1;
    }
    if (run > 0 && r.null_rows != expected_rows) {
      std::fprintf(stderr, "null sink run %d: %llu rows, run 1 had %llu\n", run + 1,
                   static_cast<unsigned long long>(r.null_rows),
                   static_cast<unsigned long long>(expected_rows));
      return 1;
    }
    expected_rows = r.null_rows;
    null_sps.push_back(static_cast<double>(r.samples) / r.seconds);
    null_s.push_back(r.seconds);
    std::printf("null sink run %d: %.3f s, %.0f samples/s, %.0f messages/s, %llu rows\n", run + 1,
                r.seconds, null_sps.back(), static_cast<double>(r.messages) / r.seconds,
                static_cast<unsigned long long>(r.null_rows));
  }
  const double null_median = Median(null_sps);
  std::printf("null sink: median %.3f s, %.0f samples/s, %.0f rows/s\n", Median(null_s),
              null_median, static_cast<double>(expected_rows) / Median(null_s));
  if (!pg) return 0;
  if (tables.size() != 1) {
    std::fprintf(stderr, "the PostgreSQL measurement needs exactly one timescale_sink\n");
    return 2;
  }
  const std::string table = tables.front();

  std::vector<double> pg_sps, pg_rps, pg_s;
  for (int run = 0; run < runs; ++run) {
    pg->Psql("DROP TABLE IF EXISTS \"" + table + "\"");  // a fresh table per repeat
    double setup_s = 0;
    const RunResult r = RunOnce(*pg_pipeline, &setup_s);
    // Every row must be in the table: Stop() returned after the sink's drain committed the
    // last batch, so the count sees all of them.
    const uint64_t in_table = std::stoull(pg->Psql("SELECT count(*) FROM \"" + table + "\""));
    std::printf(
        "postgres run %d: %.3f s (+%.3f s connect and create table, not timed), %.0f samples/s, "
        "%.0f rows/s, %llu rows written in %llu batches, %llu in the table, %llu retries\n",
        run + 1, r.seconds, setup_s, static_cast<double>(r.samples) / r.seconds,
        static_cast<double>(r.rows_written) / r.seconds,
        static_cast<unsigned long long>(r.rows_written), static_cast<unsigned long long>(r.batches),
        static_cast<unsigned long long>(in_table), static_cast<unsigned long long>(r.retries));
    if (r.samples != samples || r.rows_dropped != 0 || r.rows_written != expected_rows ||
        in_table != expected_rows) {
      std::fprintf(stderr,
                   "postgres run %d: %llu samples in (expected %llu), %llu rows written, %llu "
                   "dropped, %llu in the table; expected %llu rows (the null sink's)\n",
                   run + 1, static_cast<unsigned long long>(r.samples),
                   static_cast<unsigned long long>(samples),
                   static_cast<unsigned long long>(r.rows_written),
                   static_cast<unsigned long long>(r.rows_dropped),
                   static_cast<unsigned long long>(in_table),
                   static_cast<unsigned long long>(expected_rows));
      return 1;
    }
    pg_sps.push_back(static_cast<double>(r.samples) / r.seconds);
    pg_rps.push_back(static_cast<double>(r.rows_written) / r.seconds);
    pg_s.push_back(r.seconds);
  }
  const double pg_median = Median(pg_sps);
  std::printf(
      "postgres: median %.3f s, %.0f samples/s, %.0f rows/s; %.2f x the null sink's samples/s\n",
      Median(pg_s), pg_median, Median(pg_rps), pg_median / null_median);
  return 0;
}

// Replay throughput: a synthetic recording (fleet-like: vehicles x gps/speed/soc/torque, several
// samples per message) replayed as fast as possible through the default pipeline's operators
// (replay_source -> keyed_last_value -> window_join) into a null sink registered here.
// Prints samples/s; docs/BENCHMARKS.md records the figure.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
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
      : rows_(ctx.metrics.GetCounter("null_rows", "Rows received by the null sink.", ctx.labels())) {}
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
  const std::pair<const char*, int> sensors[] = {{"gps", 10}, {"speed", 10}, {"soc", 1}, {"torque", 30}};
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Replay throughput into a null sink"};
  int vehicles = 2000, seconds = 30, per_message = 10, runs = 3;
  app.add_option("--vehicles", vehicles)->capture_default_str();
  app.add_option("--seconds", seconds)->capture_default_str();
  app.add_option("--per-message", per_message, "Samples per message (at most the rate)")
      ->capture_default_str();
  app.add_option("--runs", runs)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  testing::TempDir dir("ff-bench-replay");
  const std::string path = dir.File("bench.ffrc");
  const uint64_t samples = MakeRecording(path, vehicles, seconds, per_message);
  std::printf("recording: %d vehicles x %d s, %llu samples, %d per message\n", vehicles, seconds,
              static_cast<unsigned long long>(samples), per_message);

  Registry registry;
  RegisterBuiltinOperators(registry);
  RegisterNullSink(registry);
  const std::string text = R"({"name": "bench", "nodes": [
    {"id": "in", "type": "replay_source", "config": {"file": ")" + path + R"("}},
    {"id": "state", "type": "keyed_last_value", "inputs": ["in"], "config": {"keep": 4}},
    {"id": "join", "type": "window_join", "inputs": ["state"],
     "config": {"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000}},
    {"id": "out", "type": "null_sink", "inputs": ["join"]}]})";
  const LoadResult loaded = ParsePipeline(text, "bench", registry);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.errors.front().Format().c_str());
    return 2;
  }
  for (int run = 0; run < runs; ++run) {
    Metrics metrics;
    ReplayClock clock;
    RuntimeOptions options;
    options.tick_ms = 0;
    Runtime runtime(*loaded.pipeline, metrics, clock, options);
    const auto start = std::chrono::steady_clock::now();
    runtime.Start();
    while (metrics.GaugeSum("replay_finished") < 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    runtime.Stop();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("run %d: %.3f s, %.0f samples/s, %.0f messages/s, %llu rows\n", run + 1, s,
                static_cast<double>(metrics.CounterSum("samples_in")) / s,
                static_cast<double>(metrics.CounterSum("messages_in")) / s,
                static_cast<unsigned long long>(metrics.CounterSum("null_rows")));
  }
  return 0;
}

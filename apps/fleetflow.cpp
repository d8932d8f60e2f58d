// fleetflow: the engine's command line. Exit codes: 0 success, 1 fatal runtime error,
// 2 invalid pipeline or usage.

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unistd.h>

#include "builtin.hpp"
#include "clock.hpp"
#include "http_server.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "runtime.hpp"

namespace {

using namespace fleetflow;

constexpr int kExitFatal = 1;
constexpr int kExitInvalid = 2;

int Validate(const Registry& registry, const std::vector<std::string>& files) {
  int rc = 0;
  for (const auto& file : files) {
    const LoadResult r = LoadPipelineFile(file, registry);
    if (!r.ok()) {
      for (const auto& e : r.errors) std::cerr << e.Format() << '\n';
      rc = kExitInvalid;
      continue;
    }
    const Pipeline& p = *r.pipeline;
    std::cout << file << ": ok: pipeline '" << p.name << "', " << p.nodes.size() << " nodes:";
    for (size_t i = 0; i < p.nodes.size(); ++i) {
      std::cout << (i == 0 ? " " : " -> ") << p.nodes[i].id << " (" << p.nodes[i].type << ")";
    }
    std::cout << '\n';
  }
  return rc;
}

struct RunArgs {
  std::string pipeline;
  std::string metrics_host = "0.0.0.0";
  int metrics_port = 9464;
  bool progress = false;
  int tick_ms = 100;
};

void PrintProgress(const Metrics& m, double seconds, uint64_t& last_in) {
  const uint64_t in = m.CounterSum("messages_in");
  const double rate = static_cast<double>(in - last_in) / seconds;
  last_in = in;
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::fprintf(stderr, "%smessages in %llu (%.0f/s) | rows written %llu | vehicles active %.0f%s",
               tty ? "\r" : "", static_cast<unsigned long long>(in), rate,
               static_cast<unsigned long long>(m.CounterSum("sink_rows_written")),
               m.GaugeSum("active_vehicles"), tty ? "   " : "\n");
  std::fflush(stderr);
}

int Run(const Registry& registry, const RunArgs& args) {
  const LoadResult r = LoadPipelineFile(args.pipeline, registry);
  if (!r.ok()) {
    for (const auto& e : r.errors) std::cerr << e.Format() << '\n';
    return kExitInvalid;
  }
  // Signals are taken synchronously by this thread; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Metrics metrics;
  WallClock clock;
  try {
    RuntimeOptions options;
    options.tick_ms = args.tick_ms;
    Runtime runtime(*r.pipeline, metrics, clock, options);
    HttpServer http([&metrics] { return metrics.Exposition(); },
                    [&runtime] { return runtime.Ready(); });
    if (args.metrics_port >= 0) {
      http.Start(args.metrics_host, args.metrics_port);
      spdlog::info("metrics on http://{}:{}/metrics", args.metrics_host, http.port());
    }
    runtime.Start();
    spdlog::info("pipeline '{}' running ({} nodes)", r.pipeline->name, r.pipeline->nodes.size());
    uint64_t last_in = 0;
    for (;;) {
      timespec wait{1, 0};
      const int sig = sigtimedwait(&signals, nullptr, &wait);
      if (sig == SIGINT || sig == SIGTERM) {
        if (args.progress) std::fputc('\n', stderr);
        spdlog::info("{}: draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
        break;
      }
      if (args.progress) PrintProgress(metrics, 1.0, last_in);
    }
    runtime.Stop();
    spdlog::info("stopped: {} messages in, {} rows written", metrics.CounterSum("messages_in"),
                 metrics.CounterSum("sink_rows_written"));
    return 0;
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return kExitFatal;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Registry registry;
  RegisterBuiltinOperators(registry);

  CLI::App app{
      "fleetflow: vehicle-fleet telemetry from NATS into PostgreSQL/TimescaleDB, one "
      "time-aligned row per vehicle per window.\nExit codes: 0 ok, 1 fatal runtime error, 2 "
      "invalid pipeline or usage."};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();

  RunArgs run;
  auto* run_cmd = app.add_subcommand(
      "run", "Run a pipeline until SIGINT/SIGTERM, then drain (flush windows and the sink).");
  run_cmd->add_option("pipeline", run.pipeline, "Pipeline file (JSON)")->required();
  run_cmd->add_option("--metrics-port", run.metrics_port,
                      "Port of /metrics, /healthz and /readyz (-1: off, 0: any free port)")
      ->capture_default_str();
  run_cmd->add_option("--metrics-host", run.metrics_host, "Address to serve them on")
      ->capture_default_str();
  run_cmd->add_option("--tick-ms", run.tick_ms, "Clock tick period")
      ->capture_default_str()
      ->check(CLI::Range(10, 10000));
  run_cmd->add_flag("--progress", run.progress,
                    "Print messages in, rows written and active vehicles every second");

  std::vector<std::string> files;
  auto* validate_cmd = app.add_subcommand(
      "validate", "Check pipeline files (schema and graph); print a summary or every error.");
  validate_cmd->add_option("files", files, "Pipeline files")->required();

  auto* schema_cmd = app.add_subcommand(
      "schema", "Print the JSON Schema of pipeline files (schemas/pipeline.schema.json).");

  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");

  if (*validate_cmd) return Validate(registry, files);
  if (*schema_cmd) {
    std::cout << PipelineJsonSchema(registry);
    return 0;
  }
  if (*run_cmd) return Run(registry, run);
  return kExitInvalid;
}

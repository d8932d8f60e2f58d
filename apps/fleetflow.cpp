// fleetflow: the engine's command line (docs/cli.md). Exit codes: 0 success, 1 fatal runtime
// error, 2 invalid pipeline or usage.

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "builtin.hpp"
#include "cli_env.hpp"
#include "clock.hpp"
#include "dump.hpp"
#include "estimate.hpp"
#include "find.hpp"
#include "http_server.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "record_replay.hpp"
#include "reference_docs.hpp"
#include "runtime.hpp"
#include "schema_check.hpp"
#include "stop_signals.hpp"
#include "tap.hpp"
#include "test_runner.hpp"
#include "top.hpp"

namespace {

using namespace fleetflow;

constexpr int kExitFatal = 1;
constexpr int kExitInvalid = 2;

/// Writes `text` to stdout and flushes it: exit 1 with a message when it cannot be written (a
/// full disk, a closed pipe), not 0 with the output lost.
int WriteStdout(const char* command, const std::string& text) {
  errno = 0;
  std::cout << text << std::flush;
  if (std::cout) return 0;
  std::cerr << command << ": cannot write to the standard output"
            << (errno != 0 ? std::string(": ") + std::strerror(errno) : std::string()) << '\n';
  return kExitFatal;
}

void PrintErrors(const std::string& file, const std::vector<Diagnostic>& errors) {
  for (const auto& e : errors) std::cerr << e.Format() << '\n';
  std::cerr << file << ": " << errors.size() << (errors.size() == 1 ? " error\n" : " errors\n");
}

/// How `validate` reports: text for people (errors on stderr, a summary per file on stdout);
/// json, one JSON object per line on stdout for every diagnostic and every valid file; gcc,
/// `file:line:col: error: message` on stdout, what editors and CI annotators parse.
enum class ValidateFormat { kText, kJson, kGcc };

/// One JSON-lines record of `validate --format json` (docs/cli.md, "validate").
class JsonRecord {
 public:
  explicit JsonRecord(const std::string& file) : w_(sb_) {
    w_.StartObject();
    String("file", file);
  }
  JsonRecord& String(const char* key, const std::string& value) {
    w_.Key(key);
    w_.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
    return *this;
  }
  /// A string, or null when empty.
  JsonRecord& Optional(const char* key, const std::string& value) {
    if (!value.empty()) return String(key, value);
    w_.Key(key);
    w_.Null();
    return *this;
  }
  /// A number, or null when 0 (not known).
  JsonRecord& Count(const char* key, size_t value) {
    w_.Key(key);
    if (value == 0) {
      w_.Null();
    } else {
      w_.Uint64(value);
    }
    return *this;
  }
  JsonRecord& Bool(const char* key, bool value) {
    w_.Key(key);
    w_.Bool(value);
    return *this;
  }
  void Print() {
    w_.EndObject();
    std::cout << sb_.GetString() << '\n';
  }

 private:
  rapidjson::StringBuffer sb_;
  rapidjson::Writer<rapidjson::StringBuffer> w_;
};

void PrintDiagnostics(const std::string& file, const std::vector<Diagnostic>& errors,
                      ValidateFormat format) {
  if (format == ValidateFormat::kText) return PrintErrors(file, errors);
  for (const Diagnostic& e : errors) {
    if (format == ValidateFormat::kGcc) {
      std::cout << e.FormatGcc() << '\n';
      continue;
    }
    JsonRecord(file)
        .Bool("ok", false)
        .Count("line", e.line)
        .Count("column", e.column)
        .String("pointer", e.pointer)
        .Optional("node", e.node)
        .String("severity", "error")
        .String("message", e.message)
        .Optional("suggestion", e.Suggestion())
        .Print();
  }
}

/// `validate --connect`: asks each node what it finds on the servers its config names; prints
/// one line (or record) per finding. Returns the number of problems.
int CheckConnections(const std::string& file, const Pipeline& p, ValidateFormat format) {
  int problems = 0;
  for (const NodeDecl& node : p.nodes) {
    if (!node.info->check_connect) continue;
    for (const ConnectFinding& f : node.info->check_connect(node.config)) {
      const bool problem = f.level == ConnectFinding::Level::kProblem;
      problems += problem ? 1 : 0;
      const char* level = f.level == ConnectFinding::Level::kOk     ? "ok"
                          : f.level == ConnectFinding::Level::kNote ? "note"
                                                                    : "PROBLEM";
      if (format == ValidateFormat::kText) {
        std::cout << "  " << node.id << " (" << node.type << "): " << level << ": " << f.message
                  << '\n';
      } else if (format == ValidateFormat::kGcc) {
        // No place in the file: a server's state. Findings that are fine say nothing.
        if (f.level == ConnectFinding::Level::kOk) continue;
        std::cout << file << ": " << (problem ? "error" : "note") << ": (node '" << node.id << "') "
                  << f.message << '\n';
      } else {
        JsonRecord(file)
            .Bool("ok", !problem)
            .String("check", "connect")
            .String("node", node.id)
            .String("severity", problem                                   ? "error"
                                : f.level == ConnectFinding::Level::kNote ? "note"
                                                                          : "ok")
            .String("message", f.message)
            .Print();
      }
    }
  }
  return problems;
}

int Validate(const Registry& registry, const std::vector<std::string>& files, bool connect,
             ValidateFormat format) {
  int rc = 0;
  for (const auto& file : files) {
    const LoadResult r = LoadPipelineFile(file, registry);
    if (!r.ok()) {
      PrintDiagnostics(file, r.errors, format);
      rc = kExitInvalid;
      continue;
    }
    const Pipeline& p = *r.pipeline;
    if (format == ValidateFormat::kText) {
      std::cout << file << ": ok: pipeline '" << p.name << "', " << p.nodes.size() << " nodes:";
      for (size_t i = 0; i < p.nodes.size(); ++i) {
        std::cout << (i == 0 ? " " : " -> ") << p.nodes[i].id << " (" << p.nodes[i].type << ")";
      }
      std::cout << '\n';
    } else if (format == ValidateFormat::kJson) {
      JsonRecord(file)
          .Bool("ok", true)
          .String("pipeline", p.name)
          .Count("nodes", p.nodes.size())
          .Print();
    }
    if (!connect) continue;
    const int problems = CheckConnections(file, p, format);
    if (problems > 0) {
      if (format == ValidateFormat::kText) {
        std::cout << file << ": " << problems << (problems == 1 ? " problem" : " problems")
                  << " on the servers\n";
      }
      rc = std::max(rc, kExitFatal);
    }
  }
  return rc;
}

int Graph(const Registry& registry, const std::string& file) {
  const LoadResult r = LoadPipelineFile(file, registry);
  if (!r.ok()) {
    PrintErrors(file, r.errors);
    return kExitInvalid;
  }
  return WriteStdout("graph", PipelineDot(*r.pipeline));
}

int WriteDocs(const Registry& registry, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const auto pages = OperatorReferencePages(registry);
  for (const auto& [name, text] : pages) {
    const std::string path = dir + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!(out << text) || !(out.flush())) {
      std::cerr << "cannot write " << path << '\n';
      return kExitFatal;
    }
  }
  std::cout << "wrote " << pages.size() << " pages to " << dir << '\n';
  return 0;
}

struct HealthArgs {
  std::string host = "127.0.0.1";
  int port = 9464;
  bool ready = false;
  int timeout_ms = 2000;
};

/// Asks a running engine's /healthz (or /readyz): exit 0 when it answers 200, 1 otherwise (not
/// listening, no answer in time, or 503); one line on stdout says which.
int Health(const HealthArgs& args) {
  const std::string path = args.ready ? "/readyz" : "/healthz";
  const std::string url = "http://" + args.host + ":" + std::to_string(args.port) + path;
  std::string error;
  const auto reply = HttpGet(args.host, args.port, path, args.timeout_ms, error);
  if (!reply) {
    std::cout << url << ": no answer (" << error << ")\n";
    return kExitFatal;
  }
  std::string body = reply->body;
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  std::cout << url << ": " << reply->status << (body.empty() ? "" : " " + body) << '\n';
  return reply->status == 200 ? 0 : kExitFatal;
}

struct RunArgs {
  std::string pipeline;
  std::string metrics_host = "0.0.0.0";
  int metrics_port = 9464;
  bool progress = false;
  int tick_ms = 100;
  int idle_tick_ms = 500;
  int graph_threads = 1;
  bool tap = false;
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
    PrintErrors(args.pipeline, r.errors);
    return kExitInvalid;
  }
  const StopSignals stop;  // before any thread starts: they all inherit the mask

  Metrics metrics;
  AddProcessMetrics(metrics);
  WallClock clock;
  try {
    RuntimeOptions options;
    options.tick_ms = args.tick_ms;
    options.idle_tick_ms = args.idle_tick_ms;
    options.graph_threads = args.graph_threads;
    Runtime runtime(*r.pipeline, metrics, clock, options);
    Gauge& ready = metrics.GetGauge("ready",
                                    "1 while /readyz answers 200: every operator is "
                                    "ready (connected, state restored), else 0.");
    HttpServer http(
        [&metrics, &runtime, &ready] {
          ready.Set(runtime.Ready() ? 1 : 0);
          return metrics.Exposition();
        },
        [&runtime] { return runtime.Ready(); },
        args.tap ? std::function<HttpReply(const QueryParam&)>(
                       [&runtime](const QueryParam& param) { return AnswerTap(runtime, param); })
                 : nullptr);
    if (args.metrics_port >= 0) {
      http.Start(args.metrics_host, args.metrics_port);
      spdlog::info("metrics on http://{}:{}/metrics", args.metrics_host, http.port());
    }
    runtime.Start();
    spdlog::info("pipeline '{}' running ({} nodes)", r.pipeline->name, r.pipeline->nodes.size());
    uint64_t last_in = 0;
    for (;;) {
      const int sig = stop.Wait(std::chrono::seconds(1));
      if (sig != 0) {
        if (args.progress) std::fputc('\n', stderr);
        spdlog::info("{}: draining", StopSignals::Name(sig));
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

/// The environment variables of the options (docs/cli.md#environment): FLEETFLOW_<OPTION> for
/// the global options and run's, FLEETFLOW_<SUBCOMMAND>_<OPTION> for the other subcommands',
/// and these shared or conventional names.
EnvNaming FleetflowEnvNaming() {
  EnvNaming naming;
  naming.prefix = "FLEETFLOW_";
  naming.unprefixed = {"run"};
  naming.names = {
      // The pipeline a container runs; replay and graph take the same file.
      {"run pipeline", "FLEETFLOW_PIPELINE"},
      {"replay --pipeline", "FLEETFLOW_PIPELINE"},
      {"graph pipeline", "FLEETFLOW_PIPELINE"},
      // The engine's metrics endpoint: what run serves, and what health and tap ask (a health
      // check in the engine's container finds its port; a wildcard address such as 0.0.0.0
      // reaches the local host).
      {"replay --metrics-port", "FLEETFLOW_METRICS_PORT"},
      {"health --port", "FLEETFLOW_METRICS_PORT"},
      {"health --host", "FLEETFLOW_METRICS_HOST"},
      {"tap --port", "FLEETFLOW_METRICS_PORT"},
      {"tap --host", "FLEETFLOW_METRICS_HOST"},
      // Conventions of their own, older than this scheme.
      {"record --url", "NATS_URL"},
      {"find --conninfo", "FLEETFLOW_PG"},
      // A mode, not a setting: `test` would stop running tests.
      {"test --schema", ""},
  };
  return naming;
}

/// An example in the --help of fleetflow and of each subcommand (find's and estimate's footers
/// have their own). Call after the subcommands are added: each took a copy of the footer then.
void AddExamples(CLI::App& app) {
  app.footer(app.get_footer() + "\n\nExample:\n  fleetflow run pipelines/default.json --progress");
  const std::map<std::string, std::string> examples = {
      {"run", "fleetflow run pipelines/default.json --progress"},
      {"health", "fleetflow health --ready --port 9464"},
      {"tap", "fleetflow tap windows --count 5 --port 9464"},
      {"top", "fleetflow top 10.0.0.5:9464 10.0.0.6:9464"},
      {"validate", "fleetflow validate pipelines/default.json pipelines/jetstream.json"},
      {"graph", "fleetflow graph pipelines/default.json | dot -Tsvg > pipeline.svg"},
      {"docs", "fleetflow docs --out docs/operators"},
      {"schema", "fleetflow schema > schemas/pipeline.schema.json"},
      {"record", "fleetflow record --out fleet.rec --subject 'vehicle.*.*' --duration 60"},
      {"replay", "fleetflow replay fleet.rec --pipeline pipelines/default.json --speed 0"},
      {"test", "fleetflow test pipelines/*.test.json"},
      {"dump", "fleetflow dump fleet.rec --subject 'vehicle.v42.*' --limit 20"},
  };
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    const auto it = examples.find(sub->get_name());
    if (it == examples.end()) continue;
    const std::string footer = sub->get_footer();
    sub->footer(footer + (footer.empty() ? "" : "\n\n") + "Example:\n  " + it->second);
  }
}

/// "unknown command 'validat': did you mean 'validate'?" when the first word of the command line
/// that is not an option (or an option's value) names no subcommand; "" otherwise.
std::string UnknownCommand(CLI::App& app, int argc, char** argv) {
  if (!app.get_subcommands().empty()) return "";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("-", 0) == 0) {
      // The value of a global option that takes one (--log-level debug) is not a command.
      const CLI::Option* option =
          arg.find('=') == std::string::npos ? app.get_option_no_throw(arg) : nullptr;
      if (option != nullptr && option->get_type_size() != 0) ++i;
      continue;
    }
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      if (!sub->get_name().empty()) names.push_back(sub->get_name());
    }
    if (std::find(names.begin(), names.end(), arg) != names.end()) return "";
    const std::string guess = ClosestName(arg, names);
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    return "unknown command '" + arg + "'" +
           (guess.empty() ? "; the commands are " + list : ": did you mean '" + guess + "'?") +
           "\nRun with --help for more information.";
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  Registry registry;
  RegisterBuiltinOperators(registry);

  CLI::App app{
      "fleetflow: vehicle-fleet telemetry from NATS into PostgreSQL/TimescaleDB, one "
      "time-aligned row per vehicle per window."};
  app.footer(
      "Exit codes:\n"
      "  0  success (run: stopped by SIGINT, SIGTERM or SIGHUP after draining)\n"
      "  1  fatal runtime error (e.g. a source cannot connect, the metrics port is taken);\n"
      "     health: not healthy (or not ready), or no answer;\n"
      "     tap: no answer, taps off, no such node, or the node is tapped already;\n"
      "     top --once or --iterations: an endpoint did not answer;\n"
      "     validate --connect: a problem on the servers; test: a test failed;\n"
      "     record --stream: stopped before the range's end\n"
      "  2  invalid pipeline file or command line; test: an invalid test file;\n"
      "     dump: a file cannot be read or is not a recording\n"
      "  3  replay --strict: a damaged record stopped the replay; dump: a file ends in one\n"
      "Environment: every option can also be set by a variable named beside it, e.g. "
      "FLEETFLOW_LOG_LEVEL, FLEETFLOW_PIPELINE, FLEETFLOW_METRICS_PORT; the command line wins.\n"
      "See docs/cli.md.");
  app.set_version_flag("--version", std::string(BuildVersion()));
  app.require_subcommand(1);
  app.fallthrough();  // the logging options may also follow the subcommand
  std::string log_level = "info";
  std::string log_format = "text";
  app.add_option("--log-level", log_level, "Least severe level logged")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--log-format", log_format,
                 "text, or json: one JSON object per line with ts, level, msg and fields")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));

  RunArgs run;
  auto* run_cmd = app.add_subcommand(
      "run",
      "Run a pipeline until SIGINT, SIGTERM or SIGHUP, then drain (flush windows and the sink).");
  run_cmd->add_option("pipeline", run.pipeline, "Pipeline file (JSON)")->required();
  run_cmd
      ->add_option("--metrics-port", run.metrics_port,
                   "Port of /metrics, /healthz and /readyz (-1: off, 0: any free port)")
      ->capture_default_str();
  run_cmd->add_option("--metrics-host", run.metrics_host, "Address to serve them on")
      ->capture_default_str();
  run_cmd
      ->add_option("--tick-ms", run.tick_ms,
                   "Clock tick period (one due within half of it goes with a burst of input)")
      ->capture_default_str()
      ->check(CLI::Range(10, 10000));
  run_cmd
      ->add_option("--idle-tick-ms", run.idle_tick_ms,
                   "Once no input came for this long, the clock ticks this far apart until input "
                   "comes (an idle worker wakes less; what the clock does while no input comes, "
                   "such as closing the windows of an idle fleet, comes up to this much later). "
                   "At most --tick-ms: always --tick-ms")
      ->capture_default_str()
      ->check(CLI::Range(0, 60000));
  run_cmd
      ->add_option("--graph-threads", run.graph_threads,
                   "Threads that run the pipeline's nodes. 1: one thread of the graph's own, "
                   "asleep while no input comes (a worker's cost follows its share of the "
                   "fleet); more pipeline the nodes on cores the worker has to itself, at the "
                   "cost of oneTBB workers that spin after each burst")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  run_cmd->add_flag("--progress", run.progress,
                    "Print messages in, rows written and active vehicles every second");
  run_cmd->add_flag("--tap", run.tap,
                    "Allow `fleetflow tap` on the metrics port (GET /tap): anyone who reaches the "
                    "port may read samples of the telemetry. Off: /tap answers 404");

  HealthArgs health;
  auto* health_cmd = app.add_subcommand(
      "health",
      "Ask a running engine whether it is alive (/healthz) or, with --ready, ready (/readyz: "
      "connected, state restored). Exit 0: yes; 1: no, or no answer. For container health "
      "checks and scripts.");
  health_cmd->add_option("--host", health.host, "Address of the engine's metrics endpoint")
      ->capture_default_str();
  health_cmd->add_option("--port", health.port, "Its --metrics-port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  health_cmd->add_flag("--ready", health.ready, "Ask /readyz instead of /healthz");
  health_cmd->add_option("--timeout-ms", health.timeout_ms, "Wait this long for the answer")
      ->capture_default_str()
      ->check(CLI::Range(1, 60000));

  TapArgs tap;
  auto* tap_cmd = app.add_subcommand(
      "tap",
      "Print a sample of the messages leaving a node of a running worker (started with --tap) "
      "as JSON lines: sample batches, status events, windows and their rows, partition events.");
  tap_cmd->add_option("node", tap.node, "The node's id in the pipeline file")->required();
  tap_cmd->add_option("--host", tap.host, "Address of the worker's metrics endpoint")
      ->capture_default_str();
  tap_cmd->add_option("--port", tap.port, "Its --metrics-port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  tap_cmd->add_option("--count", tap.count, "Messages to print")
      ->capture_default_str()
      ->check(CLI::Range(1, static_cast<int>(TapOptions::kMaxCount)));
  tap_cmd->add_option("--every", tap.every, "Take every N-th message only")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  tap_cmd
      ->add_option("--timeout-ms", tap.timeout_ms,
                   "Stop waiting for messages after this long (a quiet node prints fewer)")
      ->capture_default_str()
      ->check(CLI::Range(1, static_cast<int>(TapOptions::kMaxTimeout.count())));
  tap_cmd
      ->add_option("--max-list", tap.max_list,
                   "Rows of a window and points of a sample batch printed; the totals are given")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  tap_cmd->add_flag("--ticks", tap.ticks, "Print clock ticks too (ten a second)");
  tap_cmd->add_flag("--follow", tap.follow, "Go on tapping until interrupted");

  TopArgs top;
  auto* top_cmd = AddTopCommand(app, top);

  FindArgs find;
  auto* find_cmd = AddFindCommand(app, find);

  EstimateArgs estimate;
  auto* estimate_cmd = AddEstimateCommand(app, estimate);

  std::vector<std::string> files;
  bool connect = false;
  auto* validate_cmd = app.add_subcommand(
      "validate", "Check pipeline files (schema and graph); print a summary or every error.");
  validate_cmd->add_option("files", files, "Pipeline files")->required();
  validate_cmd->add_flag(
      "--connect", connect,
      "Then connect to the NATS servers and PostgreSQL the pipeline names, with its "
      "credentials, and report what is there, what the engine creates at start, and what is "
      "missing or refused (streams, consumers, buckets, partition mapping, table, columns, "
      "privileges, TimescaleDB). Reads only; changes nothing. Exit 1 when a problem is found");
  std::string validate_format = "text";
  validate_cmd
      ->add_option("--format", validate_format,
                   "text: errors on stderr as file:line:col: /pointer (node 'id'): message, a "
                   "summary per file on stdout; json: one JSON object per line on stdout for "
                   "every error and every valid file (file, ok, line, column, pointer, node, "
                   "severity, message, suggestion); gcc: file:line:col: error: message on "
                   "stdout, for editors and CI annotators")
      ->check(CLI::IsMember({"text", "json", "gcc"}))
      ->capture_default_str();

  std::string graph_file;
  auto* graph_cmd = app.add_subcommand(
      "graph", "Print a pipeline as a Graphviz digraph (fleetflow graph p.json | dot -Tsvg).");
  graph_cmd->add_option("pipeline", graph_file, "Pipeline file (JSON)")->required();

  std::string docs_dir;
  auto* docs_cmd = app.add_subcommand(
      "docs", "Write the operator reference (one Markdown page per operator and an index).");
  docs_cmd->add_option("--out", docs_dir, "Directory to write to (docs/operators in a checkout)")
      ->required();

  auto* schema_cmd = app.add_subcommand(
      "schema", "Print the JSON Schema of pipeline files (schemas/pipeline.schema.json).");

  RecordArgs record;
  auto* record_cmd = app.add_subcommand(
      "record",
      "Capture live NATS messages to a recording file (docs/recording.md) until SIGINT, SIGTERM, "
      "SIGHUP or --duration; or, with --stream, read a range of a JetStream stream into one. The "
      "file is complete either way.");
  record_cmd->add_option("--subject", record.subject,
                         "Subject pattern (default: vehicle.*.*; with --stream, the stream's "
                         "subject)");
  record_cmd->add_option("--out", record.out, "Recording file")->required();
  record_cmd->add_option("--url", record.url, "NATS server (default: NATS_URL)");
  record_cmd->add_option("--duration", record.duration_s, "Seconds to record (0: until stopped)")
      ->check(CLI::NonNegativeNumber);
  record_cmd->add_option("--max-bytes", record.max_bytes,
                         "Stop (or, with --rotate, start FILE.1, FILE.2, ...) once a file has "
                         "this many bytes (0: no limit)");
  record_cmd->add_flag("--rotate", record.rotate,
                       "Rotate files at --max-bytes instead of stopping");
  record_cmd->add_option(
      "--stream", record.stream,
      "Read this JetStream stream (e.g. TELEMETRY) from --from up to --to instead of live "
      "messages, each with the time the stream stored it; no durable consumer, nothing "
      "acknowledged");
  record_cmd->add_option(
      "--from", record.from,
      "First message of the range: a stream sequence (1234), an RFC 3339 time "
      "(2026-11-25T09:00:00Z) or a time ago (-90s, -15m, -2h, -1d); default: the "
      "stream's first");
  record_cmd->add_option("--to", record.to,
                         "End of the range, not included, in the same forms; default: the stream's "
                         "last message when reading starts");

  ReplayArgs replay;
  auto* replay_cmd = app.add_subcommand(
      "replay",
      "Replay recordings through a pipeline, isolated from production (its nats_source nodes "
      "read the files, its state stays in memory), on event time; exits after draining at the "
      "end of the last file.");
  replay_cmd
      ->add_option("files", replay.input.files,
                   "Recording files, replayed in order as one stream (gaps and overlaps between "
                   "them are reported)")
      ->required();
  replay_cmd->add_flag(
      "--rotated", replay.rotated,
      "Each FILE stands for the set `record --rotate` wrote: FILE, FILE.1, FILE.2, ...");
  replay_cmd
      ->add_option("--max-file-gap-ms", replay.input.max_file_gap_ms,
                   "Report a silence longer than this between two files")
      ->capture_default_str();
  replay_cmd->add_option("--pipeline", replay.pipeline, "Pipeline file (JSON)")->required();
  replay_cmd
      ->add_option("--speed", replay.input.speed, "N times real time (0: as fast as possible)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  replay_cmd
      ->add_option("--metrics-port", replay.metrics_port,
                   "Port of /metrics during the replay (-1: off, 0: any free port)")
      ->capture_default_str();
  replay_cmd->add_flag("--strict", replay.strict,
                       "Exit 3 when a truncated or corrupt record stopped the replay");
  replay_cmd->add_option(
      "--out", replay.out,
      "Write the rows the sinks would write as CSV here instead of to PostgreSQL, contacting no "
      "server (rules evaluated in memory, archives left out): a file ('-': stdout), or with "
      "several sinks a directory of <node id>.csv");
  replay_cmd->add_option("--sink", replay.sink, "With --out: only this timescale_sink node's rows");
  replay_cmd->add_option(
      "--alarms-out", replay.alarms_out,
      "With --out: the rule nodes' alarm events as JSON lines here ('-': stdout)");

  DumpArgs dump;
  auto* dump_cmd = AddDumpCommand(app, dump);

  std::vector<std::string> test_files;
  bool test_schema = false;
  auto* test_cmd = app.add_subcommand(
      "test",
      "Run declarative pipeline tests (input messages, expected rows and alarms) on the real "
      "operators, "
      "without NATS or PostgreSQL. Exit 0: all passed; 1: a test failed; 2: an invalid file.");
  test_cmd->add_option("files", test_files, "Test files (JSON)");
  test_cmd->add_flag("--schema", test_schema,
                     "Print the JSON Schema of test files (schemas/test.schema.json)");

  AddExamples(app);
  NameEnvironmentVariables(app, FleetflowEnvNaming());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (const std::string unknown = UnknownCommand(app, argc, argv); !unknown.empty()) {
      std::cerr << unknown << '\n';
      return kExitInvalid;
    }
    if (const std::string note = EnvironmentNote(app, e, argc, argv); !note.empty()) {
      std::cerr << note << '\n';
    }
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitInvalid;
  }
  SetupLogging(*ParseLogFormat(log_format), spdlog::level::from_str(log_level));

  if (*validate_cmd) {
    return Validate(registry, files, connect,
                    validate_format == "json"  ? ValidateFormat::kJson
                    : validate_format == "gcc" ? ValidateFormat::kGcc
                                               : ValidateFormat::kText);
  }
  if (*graph_cmd) return Graph(registry, graph_file);
  if (*docs_cmd) return WriteDocs(registry, docs_dir);
  if (*schema_cmd) return WriteStdout("schema", PipelineJsonSchema(registry));
  if (*health_cmd) return Health(health);
  if (*tap_cmd) return Tap(tap);
  if (*top_cmd) return Top(top);
  if (*find_cmd) return Find(find, std::cout, std::cerr);
  if (*estimate_cmd) return Estimate(estimate, std::cout, std::cerr);
  if (*run_cmd) return Run(registry, run);
  if (*record_cmd) return Record(record);
  if (*replay_cmd) return Replay(registry, replay);
  if (*dump_cmd) return Dump(dump, std::cout, std::cerr);
  if (*test_cmd && test_schema) return WriteStdout("test --schema", TestFileJsonSchema());
  if (*test_cmd && test_files.empty()) {
    std::cerr << "test: give test files, or --schema\n";
    return kExitInvalid;
  }
  if (*test_cmd) return RunPipelineTests(registry, test_files, std::cout, std::cerr);
  return kExitInvalid;
}

#include "record_replay.hpp"

#include <fmt/ranges.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "clock.hpp"
#include "http_server.hpp"
#include "metrics.hpp"
#include "nats_client.hpp"
#include "pipeline.hpp"
#include "recording.hpp"
#include "runtime.hpp"
#include "stop_signals.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

constexpr int kExitFatal = 1;
constexpr int kExitInvalid = 2;
constexpr int kExitDamaged = 3;

/// The replay_source config replacing a source node: the recordings, the speed, and the source's
/// own input validation settings, so a replay rejects what the live source rejected.
std::string ReplayConfigJson(const ReplayInput& input, const Config& source) {
  rapidjson::Document doc(rapidjson::kObjectType);
  auto& alloc = doc.GetAllocator();
  doc.AddMember("file", rapidjson::Value(input.files.front().c_str(), alloc), alloc);
  rapidjson::Value next(rapidjson::kArrayType);
  for (size_t i = 1; i < input.files.size(); ++i) {
    next.PushBack(rapidjson::Value(input.files[i].c_str(), alloc), alloc);
  }
  doc.AddMember("next_files", next, alloc);
  doc.AddMember("max_file_gap_ms", input.max_file_gap_ms, alloc);
  doc.AddMember("speed", input.speed, alloc);
  const auto& json = source.json();
  const auto partitions = json.FindMember("partitions");
  const auto prefix = json.FindMember("partition_prefix");
  const bool partitioned = partitions == json.MemberEnd() || partitions->value.GetInt64() > 0;
  if (prefix != json.MemberEnd() && partitioned) {
    doc.AddMember("partition_prefix", rapidjson::Value(prefix->value, alloc), alloc);
  }
  for (const std::string& name : WireInputFieldNames()) {
    const auto it = source.json().FindMember(name.c_str());
    if (it != source.json().MemberEnd()) {
      doc.AddMember(rapidjson::Value(name.c_str(), alloc), rapidjson::Value(it->value, alloc),
                    alloc);
    }
  }
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> writer(out);
  doc.Accept(writer);
  return out.GetString();
}

std::string RotatedName(const std::string& out, int index) {
  return index == 0 ? out : out + "." + std::to_string(index);
}

std::string Duration(double s) {
  char buf[32];
  if (s < 0 || s > 1e7) return "?";
  const auto t = static_cast<long>(s + 0.5);
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
  } else if (t >= 60) {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lds", t);
  }
  return buf;
}

}  // namespace

int Record(const RecordArgs& args) {
  const StopSignals stop;
  nats::ConnectOptions options = nats::ConnectOptions::FromEnv();
  if (!args.url.empty()) options.url = args.url;
  options.name = "fleetflow-record";

  std::mutex mu;  // guards writer, file_index, full, error
  recording::Writer writer;
  int file_index = 0;
  bool full = false;
  std::string error;
  uint64_t records = 0, bytes_done = 0;
  if (!writer.Open(args.out)) {
    std::cerr << writer.error() << '\n';
    return kExitFatal;
  }
  try {
    auto conn = nats::Connection::Connect(options);
    auto sub = conn->Subscribe(args.subject, "", [&](nats::Message&& m) {
      const int64_t now = WallClock().NowNs();
      std::lock_guard lock(mu);
      if (full || !writer.is_open()) return;
      recording::Record r;
      r.recv_ns = now;
      r.subject = m.subject();
      const auto* p = static_cast<const uint8_t*>(m.data());
      r.payload.assign(p, p + m.size());
      writer.Append(r);
      ++records;
      if (args.max_bytes > 0 && writer.bytes() >= args.max_bytes) {
        bytes_done += writer.bytes();
        if (!writer.Close()) error = writer.error();
        if (!args.rotate) {
          full = true;
          return;
        }
        ++file_index;
        if (!writer.Open(RotatedName(args.out, file_index))) {
          error = writer.error();
          full = true;
        }
      }
    });
    conn->Flush(5000);
    spdlog::info("recording {} from {} to {}", args.subject, options.url, args.out);
    const auto start = std::chrono::steady_clock::now();
    int sig = 0;
    for (;;) {
      sig = stop.Wait(std::chrono::milliseconds(100));
      {
        std::lock_guard lock(mu);
        if (writer.is_open() && !writer.Flush() && error.empty()) error = writer.error();
        if (!error.empty() || full || sig != 0) break;
      }
      if (args.duration_s > 0 && std::chrono::steady_clock::now() - start >=
                                     std::chrono::duration<double>(args.duration_s)) {
        break;
      }
    }
    try {
      sub->Drain(2000);
    } catch (const std::exception& e) {
      spdlog::warn("drain: {}", e.what());
    }
    sub.reset();
  } catch (const std::exception& e) {
    std::lock_guard lock(mu);
    writer.Close();
    std::cerr << "record: " << e.what() << '\n';
    return kExitFatal;
  }
  std::lock_guard lock(mu);
  if (writer.is_open()) {
    bytes_done += writer.bytes();
    if (!writer.Close() && error.empty()) error = writer.error();
  }
  if (!error.empty()) {
    std::cerr << "record: " << error << '\n';
    return kExitFatal;
  }
  std::fprintf(stderr, "recorded %llu messages, %llu bytes in %d file%s (%s%s)\n",
               static_cast<unsigned long long>(records),
               static_cast<unsigned long long>(bytes_done), file_index + 1,
               file_index == 0 ? "" : "s", args.out.c_str(),
               file_index == 0 ? "" : (" .. " + RotatedName(args.out, file_index)).c_str());
  return 0;
}

int IsolateForReplay(Pipeline& pipeline, const Registry& registry, const ReplayInput& input,
                     std::vector<Diagnostic>& errors, std::vector<std::string>& replaced) {
  const OperatorInfo* replay = registry.Find("replay_source");
  int sources = 0;
  for (NodeDecl& n : pipeline.nodes) {
    std::string json;
    std::string what;
    if (n.type == "nats_source" || n.type == "replay_source") {
      json = ReplayConfigJson(input, n.config);
      what = fmt::format("{} by replay_source of {}", n.type, fmt::join(input.files, ", "));
      if (n.type == "nats_source") {
        const Config& c = n.config;
        what +=
            fmt::format(" (no connection to {}; no dead letters", nats::RedactUrl(c.String("url")));
        if (c.Integer("partitions") > 0) {
          what += fmt::format(
              "; {} partitions read unpartitioned: no consumers, no membership in '{}', no "
              "hand-over records in '{}'",
              c.Integer("partitions"), c.String("membership_bucket"), c.String("handover_bucket"));
        }
        what += ")";
      }
    } else if (n.type == "keyed_last_value" && n.config.String("backend") != "memory") {
      rapidjson::Document doc;
      doc.CopyFrom(n.config.json(), doc.GetAllocator());
      doc["backend"].SetString("memory");
      rapidjson::StringBuffer sb;
      rapidjson::Writer<rapidjson::StringBuffer> w(sb);
      doc.Accept(w);
      json = sb.GetString();
      what = fmt::format("keyed_last_value state: in memory instead of {} bucket '{}'",
                         n.config.String("backend"), n.config.String("bucket"));
    } else {
      continue;
    }
    const OperatorInfo* info = n.type == "keyed_last_value" ? n.info : replay;
    Config config;
    const auto problems = ParseOperatorConfig(*info, json, config);
    if (!problems.empty()) {
      errors.insert(errors.end(), problems.begin(), problems.end());
      continue;
    }
    if (info == replay) ++sources;
    replaced.push_back(fmt::format("node '{}': {}", n.id, what));
    n.type = info->name;
    n.info = info;
    n.config = config;
  }
  return sources;
}

std::vector<std::string> RotatedSet(const std::string& file) {
  std::vector<std::string> files = {file};
  for (int i = 1; std::filesystem::exists(RotatedName(file, i)); ++i) {
    files.push_back(RotatedName(file, i));
  }
  return files;
}

int Replay(const Registry& registry, const ReplayArgs& args) {
  const LoadResult loaded = LoadPipelineFile(args.pipeline, registry);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) std::cerr << e.Format() << '\n';
    return kExitInvalid;
  }
  Pipeline pipeline = *loaded.pipeline;
  std::vector<Diagnostic> errors;
  std::vector<std::string> replaced;
  ReplayInput input = args.input;
  if (args.rotated) {
    input.files.clear();
    for (const std::string& f : args.input.files) {
      for (std::string& r : RotatedSet(f)) input.files.push_back(std::move(r));
    }
  }
  const int sources = IsolateForReplay(pipeline, registry, input, errors, replaced);
  if (!errors.empty()) {
    std::cerr << errors.front().Format() << '\n';
    return kExitInvalid;
  }
  if (sources == 0) {
    std::cerr << args.pipeline
              << ": no nats_source or replay_source node to replay the recording into\n";
    return kExitInvalid;
  }
  for (const std::string& line : replaced) spdlog::info("replay: replaced {}", line);
  const StopSignals stop;
  Metrics metrics;
  ReplayClock clock;
  const bool tty = isatty(STDERR_FILENO) != 0;
  try {
    RuntimeOptions options;
    options.tick_ms = 0;  // the replay source ticks on recorded time
    options.clock_driver = &clock;
    Runtime runtime(pipeline, metrics, clock, options);
    HttpServer http([&metrics] { return metrics.Exposition(); },
                    [&runtime] { return runtime.Ready(); });
    if (args.metrics_port >= 0) http.Start(args.metrics_host, args.metrics_port);
    const auto start = std::chrono::steady_clock::now();
    runtime.Start();
    auto last_print = start;
    bool interrupted = false;
    auto progress = [&](bool final) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double done = metrics.GaugeSum("replay_offset_bytes");
      const double total = std::max(metrics.GaugeSum("replay_file_bytes"), 1.0);
      const double frac = std::min(done / total, 1.0);
      const uint64_t samples = metrics.CounterSum("samples_in");
      const double rate = elapsed > 0 ? static_cast<double>(samples) / elapsed : 0;
      const double eta = frac > 0 ? elapsed * (1 - frac) / frac : -1;
      if (tty) {
        constexpr int kWidth = 30;
        const int filled = static_cast<int>(frac * kWidth);
        std::fprintf(stderr,
                     "\r[%s%s] %5.1f%% %llu records, %llu samples, %.0f samples/s, ETA %s  %s",
                     std::string(static_cast<size_t>(filled), '#').c_str(),
                     std::string(static_cast<size_t>(kWidth - filled), '.').c_str(), frac * 100,
                     static_cast<unsigned long long>(metrics.CounterSum("replay_records")),
                     static_cast<unsigned long long>(samples), rate, Duration(eta).c_str(),
                     final ? "\n" : "");
      } else {
        std::fprintf(stderr, "replay: %.1f%% %llu records, %llu samples, %.0f samples/s, ETA %s\n",
                     frac * 100,
                     static_cast<unsigned long long>(metrics.CounterSum("replay_records")),
                     static_cast<unsigned long long>(samples), rate, Duration(eta).c_str());
      }
      std::fflush(stderr);
    };
    for (;;) {
      const int sig = stop.Wait(std::chrono::milliseconds(50));
      if (sig != 0) {
        interrupted = true;
        spdlog::info("{}: stopping the replay and draining", StopSignals::Name(sig));
        break;
      }
      if (runtime.InputEnded()) break;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_print >= std::chrono::milliseconds(tty ? 200 : 5000)) {
        progress(false);
        last_print = now;
      }
    }
    runtime.Stop();
    progress(true);
    const double damaged = metrics.GaugeSum("replay_damaged_offset_bytes");
    const bool is_damaged = damaged > -static_cast<double>(sources);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr,
                 "replayed %llu records (%llu samples) in %.2f s: %.0f samples/s, %llu rows "
                 "written%s\n",
                 static_cast<unsigned long long>(metrics.CounterSum("replay_records")),
                 static_cast<unsigned long long>(metrics.CounterSum("samples_in")), elapsed,
                 static_cast<double>(metrics.CounterSum("samples_in")) / std::max(elapsed, 1e-9),
                 static_cast<unsigned long long>(metrics.CounterSum("sink_rows_written")),
                 interrupted ? " (interrupted)" : "");
    if (is_damaged) {
      std::fprintf(stderr, "%s: stopped at a damaged record at byte offset %.0f\n",
                   fmt::format("{}", fmt::join(input.files, ", ")).c_str(),
                   damaged + (sources - 1));
      if (args.strict) return kExitDamaged;
    }
    return 0;
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return kExitFatal;
  }
}

}  // namespace fleetflow

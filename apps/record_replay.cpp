#include "record_replay.hpp"

#include <fmt/ranges.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

#include "alarm.hpp"
#include "clock.hpp"
#include "http_server.hpp"
#include "jetstream.hpp"
#include "metrics.hpp"
#include "nats_client.hpp"
#include "pipeline.hpp"
#include "recording.hpp"
#include "replay_source.hpp"
#include "row_capture.hpp"
#include "runtime.hpp"
#include "stop_signals.hpp"
#include "timescale_sink.hpp"
#include "utc_time.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

constexpr int kExitFatal = 1;
constexpr int kExitInvalid = 2;
constexpr int kExitDamaged = 3;
/// A stream read that brings nothing this long has failed.
constexpr std::chrono::seconds kStreamIdle{30};
/// A stream read writes its records out this often.
constexpr uint64_t kFlushRecords = 1000;

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

/// The files of a recording: `out`, and once it holds `max_bytes`, with rotation `out`.1,
/// `out`.2, ...; without rotation the recording is full then.
class RecordingFiles {
 public:
  explicit RecordingFiles(const RecordArgs& args) : args_(args) {}

  bool Open() {
    if (writer_.Open(args_.out)) return true;
    error_ = writer_.error();
    return false;
  }
  /// False once the recording is full or a write failed (error()).
  bool Append(const recording::Record& r) {
    if (full_ || !writer_.is_open()) return false;
    writer_.Append(r);
    ++records_;
    if (args_.max_bytes == 0 || writer_.bytes() < args_.max_bytes) return true;
    Close();
    if (!args_.rotate) {
      full_ = true;
      return error_.empty();
    }
    ++index_;
    if (!writer_.Open(RotatedName(args_.out, index_))) {
      if (error_.empty()) error_ = writer_.error();
      full_ = true;
    }
    return error_.empty();
  }
  /// Makes what was appended readable; false when that failed (error()).
  bool Flush() {
    if (writer_.is_open() && !writer_.Flush() && error_.empty()) error_ = writer_.error();
    return error_.empty();
  }
  void Close() {
    if (!writer_.is_open()) return;
    bytes_ += writer_.bytes();
    if (!writer_.Close() && error_.empty()) error_ = writer_.error();
  }
  bool full() const { return full_; }
  uint64_t records() const { return records_; }
  const std::string& error() const { return error_; }
  /// "N messages, B bytes in K files (FILE .. FILE.k)"; call it after Close().
  std::string Summary() const {
    return fmt::format("{} messages, {} bytes in {} file{} ({}{})", records_, bytes_, index_ + 1,
                       index_ == 0 ? "" : "s", args_.out,
                       index_ == 0 ? "" : " .. " + RotatedName(args_.out, index_));
  }

 private:
  const RecordArgs& args_;
  recording::Writer writer_;
  int index_ = 0;
  bool full_ = false;
  uint64_t records_ = 0, bytes_ = 0;
  std::string error_;
};

/// A progress report on stderr: a bar redrawn in place on a terminal, a line of its own
/// starting with `name` otherwise.
void PrintProgress(bool tty, const char* name, double frac, const std::string& text, bool final) {
  frac = std::clamp(frac, 0.0, 1.0);
  if (tty) {
    constexpr int kWidth = 30;
    const auto filled = static_cast<size_t>(frac * kWidth);
    std::fprintf(stderr, "\r[%s%s] %5.1f%% %s  %s", std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, '.').c_str(), frac * 100, text.c_str(),
                 final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s: %.1f%% %s\n", name, frac * 100, text.c_str());
  }
  std::fflush(stderr);
}

int RecordLive(const RecordArgs& args, const nats::ConnectOptions& options, RecordingFiles& files,
               const StopSignals& stop) {
  const std::string subject = args.subject.empty() ? "vehicle.*.*" : args.subject;
  std::mutex mu;  // guards files
  auto conn = nats::Connection::Connect(options);
  auto sub = conn->Subscribe(subject, "", [&](nats::Message&& m) {
    const int64_t now = WallClock().NowNs();
    recording::Record r;
    r.recv_ns = now;
    r.subject = m.subject();
    const auto* p = static_cast<const uint8_t*>(m.data());
    r.payload.assign(p, p + m.size());
    std::lock_guard lock(mu);
    files.Append(r);
  });
  conn->Flush(5000);
  spdlog::info("recording {} from {} to {}", subject, nats::RedactUrl(options.url), args.out);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const int sig = stop.Wait(std::chrono::milliseconds(100));
    {
      std::lock_guard lock(mu);
      if (!files.Flush() || files.full() || sig != 0) break;
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
  return 0;
}

int RecordStream(const RecordArgs& args, const nats::ConnectOptions& options, RecordingFiles& files,
                 const StopSignals& stop) {
  const int64_t now_ns = WallClock().NowNs();
  std::string error;
  const auto from = ParseRangeBound(args.from, now_ns, error);
  const auto to = ParseRangeBound(args.to, now_ns, error);
  if (!from || !to) {
    std::cerr << "record: " << error << '\n';
    return kExitInvalid;
  }
  if ((to->sequence > 0 && to->sequence <= from->sequence) ||
      (to->time_ns != 0 && from->time_ns != 0 && to->time_ns <= from->time_ns)) {
    std::cerr << "record: --to " << args.to << " is not after --from " << args.from << '\n';
    return kExitInvalid;
  }
  auto conn = nats::Connection::Connect(options);
  nats::JetStream js(*conn);
  const auto stream = js.FindStream(args.stream);
  if (!stream) {
    std::cerr << "record: no stream '" << args.stream << "' on " << nats::RedactUrl(options.url)
              << '\n';
    return kExitFatal;
  }
  std::string subject = args.subject;
  if (subject.empty()) {
    if (stream->subjects.size() != 1) {
      std::cerr << fmt::format(
          "record: stream '{}' captures {}: name the one to read with --subject\n", args.stream,
          fmt::join(stream->subjects, ", "));
      return kExitInvalid;
    }
    subject = stream->subjects.front();
  }
  auto reader = js.ReadStream(args.stream, subject, *from);
  uint64_t total = reader->total();
  // The reader counts and reads the copy of a replica the server picks, which may be behind the
  // stream's leader (a node catching up after a restart): what the leader stores now is the end,
  // asked of it again whenever the replica says it has nothing more.
  uint64_t last = 0;
  try {
    last = js.LastStored(args.stream, subject, 5000).sequence;
  } catch (const std::exception& e) {
    spdlog::warn(
        "the stream's leader did not tell its last message ({}): the end is what the "
        "replica read has",
        e.what());
  }
  uint64_t until = 0;  // read on to this sequence: the leader stores more than the replica had
  spdlog::info("recording stream '{}' ({}) from {} on {}{} to {}: {} messages stored from there",
               args.stream, subject, nats::RedactUrl(options.url),
               args.from.empty() ? "its first message" : args.from,
               args.to.empty() ? "" : " up to " + args.to, args.out, total);
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto start = std::chrono::steady_clock::now();
  auto last_message = start, last_print = start, last_check = start;
  uint64_t sequence = 0;
  int64_t stored_ns = 0;
  auto progress = [&](bool final) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double frac =
        total > 0 ? std::min(1.0, static_cast<double>(files.records()) / total) : 1.0;
    PrintProgress(
        tty, "record", frac,
        fmt::format("{} of {} messages, at sequence {} stored {}, {:.0f} messages/s",
                    files.records(), total, sequence, stored_ns != 0 ? FormatUtc(stored_ns) : "-",
                    elapsed > 0 ? files.records() / elapsed : 0),
        final);
  };
  std::string end = "the end of the stream";
  recording::Record r;
  // At the replica's end: whether the leader stores more of the range, up to its last.
  const auto leader_has_more = [&] {
    const uint64_t next = sequence > 0         ? sequence + 1
                          : from->time_ns != 0 ? 0  // a start in time: not asked
                                               : std::max<uint64_t>(from->sequence, 1);
    if (next == 0 || next > last) return false;
    try {
      const auto more = js.NextStored(args.stream, subject, next);
      return more && *more <= last;
    } catch (const std::exception& e) {
      spdlog::warn(
          "the stream's leader did not tell what follows sequence {} ({}): the end is "
          "what the replica read has",
          next - 1, e.what());
      return false;
    }
  };
  for (;;) {
    if (files.records() >= total && sequence >= until) {
      if (!leader_has_more()) break;
      until = last;
      total = std::max(total, files.records() + 1);
    }
    const auto message = reader->Next(100);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_check >= std::chrono::milliseconds(100)) {
      last_check = now;
      if (const int sig = stop.Wait(std::chrono::nanoseconds(0)); sig != 0) {
        end.clear();
        spdlog::warn("{}: stopped after {} of {} messages", StopSignals::Name(sig), files.records(),
                     total);
        break;
      }
      if (now - last_print >= std::chrono::milliseconds(tty ? 200 : 5000)) {
        progress(false);
        last_print = now;
      }
    }
    if (!message) {
      if (now - last_message >= kStreamIdle) {
        std::cerr << fmt::format(
            "record: nothing came from stream '{}' for {} s after {} of {} messages\n", args.stream,
            kStreamIdle.count(), files.records(), total);
        return kExitFatal;
      }
      continue;
    }
    last_message = now;
    if (to->sequence > 0 ? message->stream_sequence() >= to->sequence
                         : to->time_ns != 0 && message->stored_ns() >= to->time_ns) {
      end = "--to " + args.to;
      break;
    }
    sequence = message->stream_sequence();
    stored_ns = message->stored_ns();
    r.recv_ns = stored_ns;
    r.subject = message->subject();
    const auto* p = static_cast<const uint8_t*>(message->data());
    r.payload.assign(p, p + message->size());
    if (!files.Append(r) || (files.records() % kFlushRecords == 0 && !files.Flush())) {
      end = files.error().empty() ? "--max-bytes" : "";
      break;
    }
    // Messages removed meanwhile (the stream's limits) are never sent: at the replica's end
    // (the leader is asked above whether it is the stream's).
    if (message->pending() == 0) total = std::min(total, files.records());
  }
  if (!files.Flush()) return kExitFatal;  // Record reports the error
  progress(true);
  if (end.empty()) return kExitFatal;
  std::fprintf(stderr, "record: read stream '%s' up to %s (sequence %llu, stored %s)\n",
               args.stream.c_str(), end.c_str(), static_cast<unsigned long long>(sequence),
               stored_ns != 0 ? FormatUtc(stored_ns).c_str() : "-");
  return 0;
}

}  // namespace

std::optional<nats::StreamStart> ParseRangeBound(const std::string& text, int64_t now_ns,
                                                 std::string& error) {
  nats::StreamStart bound;
  if (text.empty()) return bound;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (std::all_of(first, last, [](char c) { return c >= '0' && c <= '9'; })) {
    const auto [end, ec] = std::from_chars(first, last, bound.sequence);
    if (ec == std::errc() && end == last && bound.sequence > 0) return bound;
    error = "'" + text + "' is no stream sequence: sequences start at 1";
    return std::nullopt;
  }
  if (text.size() > 2 && text[0] == '-') {
    double amount = 0;
    const auto [end, ec] = std::from_chars(first + 1, last - 1, amount);
    const char unit = text.back();
    const double scale = unit == 's'   ? 1e9
                         : unit == 'm' ? 60e9
                         : unit == 'h' ? 3600e9
                         : unit == 'd' ? 86400e9
                                       : 0;
    if (ec == std::errc() && end == last - 1 && scale > 0 && amount >= 0) {
      bound.time_ns = now_ns - static_cast<int64_t>(amount * scale);
      return bound;
    }
  } else if (const auto ns = ParseRfc3339(text)) {
    bound.time_ns = *ns;
    return bound;
  }
  error = "'" + text +
          "' is neither a stream sequence (1234), an RFC 3339 time (2026-11-25T09:00:00Z) nor a "
          "time ago (-90s, -15m, -2h, -1d)";
  return std::nullopt;
}

int Record(const RecordArgs& args) {
  const StopSignals stop;
  if (args.stream.empty() && (!args.from.empty() || !args.to.empty())) {
    std::cerr << "record: --from and --to read a range of a stream: name it with --stream\n";
    return kExitInvalid;
  }
  if (!args.stream.empty() && args.duration_s > 0) {
    std::cerr << "record: --duration is for live capture; a stream's range ends with --to\n";
    return kExitInvalid;
  }
  nats::ConnectOptions options = nats::ConnectOptions::FromEnv();
  if (!args.url.empty()) options.url = args.url;
  options.name = "fleetflow-record";
  RecordingFiles files(args);
  if (!files.Open()) {
    std::cerr << "record: " << files.error() << '\n';
    return kExitFatal;
  }
  int status = 0;
  try {
    status = args.stream.empty() ? RecordLive(args, options, files, stop)
                                 : RecordStream(args, options, files, stop);
  } catch (const std::exception& e) {
    std::cerr << "record: " << e.what() << '\n';
    status = kExitFatal;
  }
  files.Close();
  if (!files.error().empty()) {
    std::cerr << "record: " << files.error() << '\n';
    return kExitFatal;
  }
  std::fprintf(stderr, "recorded %s\n", files.Summary().c_str());
  return status;
}

namespace {

/// A node whose state lives in a Key/Value bucket (backend jetstream_kv): in memory for a replay.
bool KeepsStateInABucket(const NodeDecl& n) {
  return (n.type == "keyed_last_value" || n.type == "window_aggregate" || n.type == "cell_merge" ||
          n.type == "archive") &&
         n.config.String("backend") != "memory";
}

/// `config` as JSON with the string members `values` set.
std::string WithStrings(const Config& config,
                        std::initializer_list<std::pair<const char*, const char*>> values) {
  rapidjson::Document doc;
  doc.CopyFrom(config.json(), doc.GetAllocator());
  for (const auto& [name, value] : values) doc[name].SetString(value, doc.GetAllocator());
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  return sb.GetString();
}

/// Orders the nodes again so that each comes after its inputs (file order among the ready).
void SortTopologically(Pipeline& pipeline) {
  std::vector<NodeDecl> ordered;
  std::set<std::string> placed;
  while (!pipeline.nodes.empty()) {
    const auto ready = std::find_if(pipeline.nodes.begin(), pipeline.nodes.end(), [&](auto& n) {
      return std::all_of(n.inputs.begin(), n.inputs.end(),
                         [&](const std::string& in) { return placed.count(in) > 0; });
    });
    if (ready == pipeline.nodes.end()) break;  // a cycle: left as it is, the runtime refuses it
    placed.insert(ready->id);
    ordered.push_back(std::move(*ready));
    pipeline.nodes.erase(ready);
  }
  for (NodeDecl& n : pipeline.nodes) ordered.push_back(std::move(n));
  pipeline.nodes = std::move(ordered);
}

/// The stage across workers in one process (docs/semantics.md, "Across vehicles"): the replay
/// reads every vehicle unpartitioned, so the rows fleet_publish would send are a window's whole
/// rows already. Each fleet_source is dropped with the fleet_publish nodes writing its stream,
/// and the nodes after it read what those read (cell_merge passes whole rows on).
void JoinTheStageAcrossWorkers(Pipeline& pipeline, std::vector<Diagnostic>& errors,
                               std::vector<std::string>& replaced) {
  const auto stream_of = [](const NodeDecl& n) {
    return n.config.String("stream") + " " + n.config.String("subject_prefix");
  };
  std::set<std::string> dropped;
  std::map<std::string, std::vector<std::string>> instead;  // fleet_source id -> inputs
  for (const NodeDecl& source : pipeline.nodes) {
    if (source.type != "fleet_source") continue;
    std::vector<std::string>& inputs = instead[source.id];
    std::vector<std::string> publishers;
    for (const NodeDecl& p : pipeline.nodes) {
      if (p.type != "fleet_publish" || stream_of(p) != stream_of(source)) continue;
      publishers.push_back(p.id);
      dropped.insert(p.id);
      for (const std::string& in : p.inputs) {
        if (std::find(inputs.begin(), inputs.end(), in) == inputs.end()) inputs.push_back(in);
      }
    }
    if (publishers.empty()) {
      errors.push_back({pipeline.file, source.pointer, source.id,
                        "fleet_source '" + source.id + "' reads stream " +
                            source.config.String("stream") +
                            ", which no fleet_publish of the pipeline writes: nothing would "
                            "reach it in a replay"});
      continue;
    }
    dropped.insert(source.id);
    replaced.push_back(fmt::format(
        "node '{}' (fleet_source) and {} (fleet_publish): the stage across workers in this "
        "process, the nodes after '{}' read {}",
        source.id, fmt::join(publishers, ", "), source.id, fmt::join(inputs, ", ")));
  }
  if (dropped.empty()) return;
  std::vector<NodeDecl> kept;
  for (NodeDecl& n : pipeline.nodes) {
    if (dropped.count(n.id) > 0) continue;
    std::vector<std::string> inputs;
    for (const std::string& in : n.inputs) {
      const auto it = instead.find(in);
      for (const std::string& x : it == instead.end() ? std::vector<std::string>{in} : it->second) {
        if (std::find(inputs.begin(), inputs.end(), x) == inputs.end()) inputs.push_back(x);
      }
    }
    n.inputs = std::move(inputs);
    kept.push_back(std::move(n));
  }
  pipeline.nodes = std::move(kept);
  SortTopologically(pipeline);
}

}  // namespace

int IsolateForReplay(Pipeline& pipeline, const Registry& registry, const ReplayInput& input,
                     std::vector<Diagnostic>& errors, std::vector<std::string>& replaced) {
  const OperatorInfo* replay = registry.Find(kReplaySourceName);
  int sources = 0;
  for (NodeDecl& n : pipeline.nodes) {
    std::string json;
    std::string what;
    if (n.type == "nats_source" || n.type == kReplaySourceName) {
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
    } else if (n.type == "archive") {
      // It writes its directory (a replay may fill an archive), but talks to no NATS server.
      json = WithStrings(n.config, {{"backend", "memory"}, {"stats_subject", ""}});
      what = fmt::format("archive into {}: checkpoints in memory, no chunk statistics on NATS",
                         n.config.String("directory"));
    } else if (n.type == "row_archive") {
      json = WithStrings(n.config, {{"stats_subject", ""}});
      what = fmt::format("row_archive into {}: no chunk statistics on NATS",
                         n.config.String("directory"));
    } else if (KeepsStateInABucket(n)) {
      json = WithStrings(n.config, {{"backend", "memory"}});
      what = fmt::format("{} state: in memory instead of {} bucket '{}'", n.type,
                         n.config.String("backend"), n.config.String("bucket"));
    } else {
      continue;
    }
    const OperatorInfo* info =
        n.type == kReplaySourceName || n.type == "nats_source" ? replay : n.info;
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
  JoinTheStageAcrossWorkers(pipeline, errors, replaced);
  return sources;
}

std::vector<std::string> RotatedSet(const std::string& file) {
  std::vector<std::string> files = {file};
  for (int i = 1; std::filesystem::exists(RotatedName(file, i)); ++i) {
    files.push_back(RotatedName(file, i));
  }
  return files;
}

namespace {

/// One file `replay --out` writes: a sink's rows as CSV.
struct RowsFile {
  std::string node;
  std::vector<RowColumn> columns;
  std::string path;  // "-": stdout
};

/// The files `replay --out` writes (args.out, or args.out/<node id>.csv for each of several
/// sinks); empty with `error` set when the command line does not fit the pipeline.
std::vector<RowsFile> PlanRowsFiles(const Pipeline& pipeline, const ReplayArgs& args,
                                    std::string& error) {
  std::vector<RowsFile> files;
  std::vector<std::string> ids;
  for (const NodeDecl& n : pipeline.nodes) {
    if (n.type != kTimescaleSinkName) continue;
    ids.push_back(n.id);
    if (args.sink.empty() || args.sink == n.id) files.push_back({n.id, SinkColumns(n.config), ""});
  }
  const std::string list = ids.empty() ? "none" : fmt::format("{}", fmt::join(ids, ", "));
  if (!args.sink.empty() && files.empty()) {
    error = fmt::format("--sink {}: {} has no timescale_sink node of that id (its sinks: {})",
                        args.sink, args.pipeline, list);
  } else if (files.empty() && args.alarms_out.empty()) {
    error = args.pipeline + " has no timescale_sink node, whose rows --out writes";
  } else if (files.size() == 1) {
    files[0].path = args.out;
  } else if (files.size() > 1 && args.out == "-") {
    error = fmt::format(
        "{} has {} timescale_sink nodes ({}): --out names a directory for their CSV files (one "
        "<node id>.csv each), or --sink ID chooses one",
        args.pipeline, files.size(), list);
  } else if (files.size() > 1) {
    std::error_code ec;
    std::filesystem::create_directories(args.out, ec);
    if (ec || !std::filesystem::is_directory(args.out)) {
      error = fmt::format(
          "--out {}: {} has {} timescale_sink nodes ({}), whose CSV files go into a directory, "
          "and this is none{}",
          args.out, args.pipeline, files.size(), list, ec ? " (" + ec.message() + ")" : "");
    }
    for (RowsFile& f : files) {
      f.path = (std::filesystem::path(args.out) / (f.node + ".csv")).string();
    }
  }
  if (!error.empty()) files.clear();
  return files;
}

/// A file opened for writing, or stdout for "-".
class OutputFile {
 public:
  /// False with `error` when `path` cannot be created.
  bool Open(const std::string& path, std::string& error) {
    path_ = path;
    if (path == "-") return true;
    file_.open(path, std::ios::binary | std::ios::trunc);
    if (!file_) error = path + ": cannot create: " + std::strerror(errno);
    return static_cast<bool>(file_);
  }
  std::ostream& stream() { return path_ == "-" ? std::cout : file_; }
  /// Flushes; false with `error` when something could not be written.
  bool Close(std::string& error) {
    stream().flush();
    if (path_ != "-") file_.close();
    if (path_ == "-" ? !std::cout : file_.fail()) {
      error = (path_ == "-" ? "stdout" : path_) + ": cannot write: " + std::strerror(errno);
      return false;
    }
    return true;
  }

 private:
  std::string path_;
  std::ofstream file_;
};

}  // namespace

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
  // replay --out: the sinks and rules captured, as `fleetflow test` runs them (row_capture.hpp).
  Captures captures;
  std::vector<RowsFile> rows_files;
  std::vector<OutputFile> outputs;  // rows_files' files, then alarms_out's
  if (!args.out.empty()) {
    std::string error;
    rows_files = PlanRowsFiles(pipeline, args, error);
    if (!error.empty()) {
      std::cerr << "replay: " << error << '\n';
      return kExitInvalid;
    }
    outputs.resize(rows_files.size() + (args.alarms_out.empty() ? 0 : 1));
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string& path = i < rows_files.size() ? rows_files[i].path : args.alarms_out;
      if (!outputs[i].Open(path, error)) {
        std::cerr << "replay: " << error << '\n';
        return kExitFatal;
      }
    }
    for (const NodeDecl& n : pipeline.nodes) {
      if (n.type == kTimescaleSinkName || n.type == "rule" || n.type == "archive" ||
          n.type == "row_archive") {
        replaced.push_back(
            fmt::format("node '{}': {}", n.id,
                        n.type == "rule" ? "rule evaluated in memory (no alarm table, no NATS)"
                        : n.type == kTimescaleSinkName
                            ? "timescale_sink by a capture of its rows (no PostgreSQL)"
                            : n.type + " left out (it writes files, not rows)"));
      }
    }
    CaptureInstead(pipeline, registry, captures);
  } else if (!args.sink.empty() || !args.alarms_out.empty()) {
    std::cerr << "replay: --sink and --alarms-out go with --out (the rows as CSV)\n";
    return kExitInvalid;
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
      PrintProgress(
          tty, "replay", frac,
          fmt::format("{} records, {} samples, {:.0f} samples/s, ETA {}",
                      metrics.CounterSum("replay_records"), samples, rate, FormatDuration(eta)),
          final);
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
    uint64_t rows_written = metrics.CounterSum("sink_rows_written");
    std::string where = "written";
    if (!args.out.empty()) {
      rows_written = 0;
      std::string error;
      for (size_t i = 0; i < outputs.size(); ++i) {
        if (i < rows_files.size()) {
          const CapturedRows& rows = captures.rows.at(rows_files[i].node);
          WriteRowsCsv(rows_files[i].columns, rows, outputs[i].stream());
          rows_written += rows.size();
        } else {
          for (const auto& [node, events] : captures.alarms) {
            for (const AlarmEvent& e : events) outputs[i].stream() << AlarmJson(e) << '\n';
          }
        }
        if (!outputs[i].Close(error)) {
          std::cerr << "replay: " << error << '\n';
          return kExitFatal;
        }
      }
      where = rows_files.empty() ? "(no timescale_sink)"
              : rows_files.size() == 1
                  ? "to " + (args.out == "-" ? "stdout" : args.out)
                  : fmt::format("to {} files in {}", rows_files.size(), args.out);
    }
    std::fprintf(stderr,
                 "replayed %llu records (%llu samples) in %.2f s: %.0f samples/s, %llu rows "
                 "%s%s\n",
                 static_cast<unsigned long long>(metrics.CounterSum("replay_records")),
                 static_cast<unsigned long long>(metrics.CounterSum("samples_in")), elapsed,
                 static_cast<double>(metrics.CounterSum("samples_in")) / std::max(elapsed, 1e-9),
                 static_cast<unsigned long long>(rows_written), where.c_str(),
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

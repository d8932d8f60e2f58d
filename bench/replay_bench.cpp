// Replay throughput: a synthetic recording (fleet-like: vehicles x gps/speed/soc/torque, several
// samples per message) replayed as fast as possible through the default pipeline
// (pipelines/default.json, nats_source replaced by replay_source as `fleetflow replay` does):
//   1. into a null sink registered here (timescale_sink replaced), median of --runs;
//   2. into a real PostgreSQL (the pipeline's timescale_sink), a throwaway server started here
//      with the test fixture, a fresh table per repeat, median of --runs. Each repeat checks that
//      rows in the table == sink_rows_written == the null sink's row count.
//   3. from a range of a JetStream stream (a throwaway nats-server holding the recording's
//      messages): `fleetflow record --stream` of the whole stream into a file, next to a bare
//      ordered-consumer loop that writes the same file, then the replay of that file into the
//      null sink: the figure of "replay a JetStream range" is both steps.
// Prints samples/s, rows/s and the PostgreSQL/null ratio, the range read's messages/s and CPU per
// message against the bare loop's; docs/BENCHMARKS.md records the figures.
#include <fcntl.h>
#include <nats/nats.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>

#include "bench_util.hpp"
#include "builtin.hpp"
#include "clock.hpp"
#include "jetstream.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "recording.hpp"
#include "runtime.hpp"
#include "servers.hpp"

namespace {

using namespace fleetflow;
using bench::Median;

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
/// message, from `t0` on (receive time = newest sample + 20 ms). Returns the number of samples.
uint64_t MakeRecording(const std::string& path, int vehicles, int seconds, int per_message,
                       int64_t t0 = 1'700'000'000'000'000'000) {
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
          p.ts_ns = t0 + k * period + v * 1000;
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
  return RunResult{
      .seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
      .samples = metrics.CounterSum("samples_in"),
      .messages = metrics.CounterSum("messages_in"),
      .null_rows = metrics.CounterSum("null_rows"),
      .rows_written = metrics.CounterSum("sink_rows_written"),
      .rows_dropped = metrics.CounterSum("sink_rows_dropped"),
      .retries = metrics.CounterSum("sink_retries"),
      .batches = metrics.CounterSum("sink_batches"),
  };
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

/// Publishes the records of `path` to `server` at the pace of their receive times (from now
/// on: the recording starts now), as a fleet would, where stream TELEMETRY (vehicle.*.*, no age
/// limit) keeps them; returns once it holds all `count`.
void FillStream(const testing::NatsServer& server, const std::string& path, uint64_t count) {
  nats::ConnectOptions o;
  o.url = server.url();
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  nats::StreamOptions stream;
  stream.max_age_ms = 0;
  js.EnsureStream(stream);
  recording::Reader reader;
  if (!reader.Open(path)) throw std::runtime_error(reader.error());
  recording::Record r;
  uint64_t n = 0;
  const WallClock wall;
  while (reader.Next(r) == recording::Reader::Status::kRecord) {
    if (const int64_t ahead = r.recv_ns - wall.NowNs(); ahead > 1'000'000) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(ahead));
    }
    conn->Publish(r.subject, r.payload.data(), r.payload.size());
    if (++n % 1000 == 0) conn->Flush(10000);
  }
  conn->Flush(10000);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (js.FindStream(stream.name)->messages < count) {
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("stream not filled");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

struct RangeRun {
  double seconds = 0, cpu_s = 0, server_cpu_s = 0;
  uint64_t messages = 0;
};

/// The bare baseline: nats.c's ordered consumer over the whole stream, each message appended to
/// a recording as `fleetflow record --stream` does, nothing else.
RangeRun BareRangeRead(const testing::NatsServer& server, const std::string& out, uint64_t count) {
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, server.url().c_str()) != NATS_OK) {
    throw std::runtime_error("bare: connect");
  }
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, nc, nullptr);
  const pid_t server_pid = bench::FindNatsServerPid(server.port());
  RangeRun run;
  const double cpu0 = bench::ProcessCpuSeconds(), server0 = bench::PidCpuSeconds(server_pid);
  const auto start = std::chrono::steady_clock::now();
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = "TELEMETRY";
  so.Ordered = true;
  natsSubscription* sub = nullptr;
  if (js_SubscribeSync(&sub, js, "vehicle.*.*", nullptr, &so, nullptr) != NATS_OK) {
    throw std::runtime_error("bare: subscribe");
  }
  recording::Writer writer;
  if (!writer.Open(out)) throw std::runtime_error(writer.error());
  recording::Record r;
  while (run.messages < count) {
    natsMsg* msg = nullptr;
    if (natsSubscription_NextMsg(&msg, sub, 10000) != NATS_OK) {
      throw std::runtime_error("bare: no message for 10 s");
    }
    jsMsgMetaData* meta = nullptr;
    natsMsg_GetMetaData(&meta, msg);
    r.recv_ns = meta->Timestamp;
    r.subject = natsMsg_GetSubject(msg);
    const auto* p = reinterpret_cast<const uint8_t*>(natsMsg_GetData(msg));
    r.payload.assign(p, p + natsMsg_GetDataLength(msg));
    writer.Append(r);
    if (++run.messages % 1000 == 0) writer.Flush();
    jsMsgMetaData_Destroy(meta);
    natsMsg_Destroy(msg);
  }
  writer.Close();
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.cpu_s = bench::ProcessCpuSeconds() - cpu0;
  run.server_cpu_s = bench::PidCpuSeconds(server_pid) - server0;
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return run;
}

/// `fleetflow record --stream TELEMETRY` of the whole stream (from `from`: a sequence past the
/// end measures what a run costs besides the messages), as a child process: its wall time from
/// fork to exit, and its CPU.
RangeRun FleetflowRangeRead(const testing::NatsServer& server, const std::string& fleetflow,
                            const std::string& out, const std::string& from = "1") {
  const pid_t server_pid = bench::FindNatsServerPid(server.port());
  RangeRun run;
  const double server0 = bench::PidCpuSeconds(server_pid);
  const auto start = std::chrono::steady_clock::now();
  const pid_t child = fork();
  if (child == 0) {
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, STDERR_FILENO);
    execl(fleetflow.c_str(), fleetflow.c_str(), "record", "--url", server.url().c_str(), "--stream",
          "TELEMETRY", "--from", from.c_str(), "--out", out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  if (wait4(child, &status, 0, &usage) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("fleetflow record --stream failed (status " + std::to_string(status) +
                             ")");
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.cpu_s = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
              static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  run.server_cpu_s = bench::PidCpuSeconds(server_pid) - server0;
  recording::Reader reader;
  if (!reader.Open(out)) throw std::runtime_error(reader.error());
  recording::Record r;
  while (reader.Next(r) == recording::Reader::Status::kRecord) ++run.messages;
  return run;
}

/// Part 3: a fleet of the same shape publishes into a stream in real time (its samples' times
/// are the wall clock's, as the stream's stored times will be); then the whole stream is read
/// (fleetflow and bare, alternating, `runs` each), and fleetflow's file replayed into the null
/// sink.
int MeasureRange(const std::string& path, int vehicles, int seconds, int per_message,
                 const Pipeline& loaded, const Registry& registry, int runs,
                 const std::string& fleetflow) {
  const uint64_t samples =
      MakeRecording(path, vehicles, seconds, per_message, WallClock().NowNs() + 1'000'000'000);
  recording::Reader reader;
  if (!reader.Open(path)) throw std::runtime_error(reader.error());
  uint64_t count = 0;
  recording::Record r;
  while (reader.Next(r) == recording::Reader::Status::kRecord) ++count;
  testing::NatsServer server;
  server.Start();
  FillStream(server, path, count);
  std::printf("stream: %llu messages on %s\n", static_cast<unsigned long long>(count),
              server.url().c_str());
  const std::string ranged = path + ".range";
  std::vector<double> ff_rate, bare_rate, ff_cpu, bare_cpu, ff_server, bare_server;
  for (int run = 0; run < runs; ++run) {
    const RangeRun bare = BareRangeRead(server, ranged + ".bare", count);
    const RangeRun ff = FleetflowRangeRead(server, fleetflow, ranged);
    if (ff.messages != count) {
      std::fprintf(stderr, "range run %d: fleetflow recorded %llu of %llu messages\n", run + 1,
                   static_cast<unsigned long long>(ff.messages),
                   static_cast<unsigned long long>(count));
      return 1;
    }
    for (const auto& [x, rate, cpu, server_cpu] :
         {std::tuple{&ff, &ff_rate, &ff_cpu, &ff_server},
          std::tuple{&bare, &bare_rate, &bare_cpu, &bare_server}}) {
      rate->push_back(static_cast<double>(count) / x->seconds);
      cpu->push_back(x->cpu_s / static_cast<double>(count) * 1e6);
      server_cpu->push_back(x->server_cpu_s / static_cast<double>(count) * 1e6);
    }
    std::printf(
        "range run %d: record --stream %.3f s (%.0f messages/s, %.2f us CPU/message, server "
        "%.2f us); bare %.3f s (%.0f messages/s, %.2f us, server %.2f us)\n",
        run + 1, ff.seconds, ff_rate.back(), ff_cpu.back(), ff_server.back(), bare.seconds,
        bare_rate.back(), bare_cpu.back(), bare_server.back());
  }
  std::vector<double> fixed_s, fixed_cpu;
  for (int run = 0; run < runs; ++run) {
    const RangeRun empty =
        FleetflowRangeRead(server, fleetflow, ranged + ".empty", std::to_string(count + 1));
    fixed_s.push_back(empty.seconds);
    fixed_cpu.push_back(empty.cpu_s);
  }
  std::printf(
      "record --stream of an empty range (start, connect, consumer, exit): %.3f s, %.3f s "
      "CPU\n",
      Median(fixed_s), Median(fixed_cpu));
  const double ff_median = Median(ff_rate), bare_median = Median(bare_rate);
  const double samples_per_message = static_cast<double>(samples) / static_cast<double>(count);
  std::printf(
      "range read: median %.0f messages/s (%.0f samples/s), %.2f us CPU/message, server %.2f "
      "us; bare %.0f messages/s, %.2f us, server %.2f us; %.2f x the bare rate, %.2f x its CPU\n",
      ff_median, ff_median * samples_per_message, Median(ff_cpu), Median(ff_server), bare_median,
      Median(bare_cpu), Median(bare_server), ff_median / bare_median,
      Median(ff_cpu) / Median(bare_cpu));
  const auto replay = ForReplay(loaded, registry, ranged, true);
  if (!replay) return 2;
  std::vector<double> replay_s;
  for (int run = 0; run < runs; ++run) {
    const RunResult rr = RunOnce(*replay);
    if (rr.samples != samples) {
      std::fprintf(stderr, "replay of the range: %llu samples, expected %llu\n",
                   static_cast<unsigned long long>(rr.samples),
                   static_cast<unsigned long long>(samples));
      return 1;
    }
    replay_s.push_back(rr.seconds);
    std::printf("range replay run %d: %.3f s, %llu samples, %llu rows\n", run + 1, rr.seconds,
                static_cast<unsigned long long>(rr.samples),
                static_cast<unsigned long long>(rr.null_rows));
  }
  const double read_s = static_cast<double>(count) / ff_median;
  std::printf(
      "range replay: read %.3f s + replay %.3f s (null sink): %.0f samples/s from the stream to "
      "rows\n",
      read_s, Median(replay_s), static_cast<double>(samples) / (read_s + Median(replay_s)));
  return 0;
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
  app.add_flag("--no-postgres", no_postgres, "No measurement into PostgreSQL");
  bool no_stream = false;
  std::string fleetflow = FF_BINARY_DIR "/apps/fleetflow";
  app.add_flag("--no-stream", no_stream, "No measurement of a range of a JetStream stream");
  app.add_option("--fleetflow", fleetflow, "The fleetflow binary (record --stream)")
      ->capture_default_str();
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
  if (!no_stream) {
    if (const int status = MeasureRange(dir.File("live.ffrc"), vehicles, seconds, per_message,
                                        *loaded.pipeline, registry, runs, fleetflow);
        status != 0) {
      return status;
    }
  }
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

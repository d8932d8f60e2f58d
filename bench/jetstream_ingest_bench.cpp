// JetStream ingest benchmark: how many messages and samples per second one fleetflow worker
// consumes from a JetStream stream (nats_source delivery "jetstream" -> keyed_last_value backend
// "jetstream_kv" -> window_join -> a null sink), next to a bare fetch+ack loop on the same stream,
// in the same run, on a nats-server started here (free port, store in a temporary directory).
//
// Every contender reads the same messages: the stream is filled once and each run binds a durable
// consumer of its own (DeliverAll). A run ends when its consumer has nothing pending and nothing
// unacknowledged; each contender runs --repeats times, interleaved, and the median is reported.
//
// Contenders:
//   baseline        PullConsumer::Fetch(fetch_batch) + JsMessage::Ack per message, nothing else
//   baseline-asap   the same with ConnectOptions::send_asap = true
//   baseline-ahead  the same with Fetch's `ahead`, as nats_source fetches: two batches stay
//                   requested, so the server never waits for the loop's next request
//   baseline-ackall baseline-ahead on a consumer with AckAll: one acknowledgement per batch (its
//                   last message), not one per message; what that saves the server
//   baseline-held   baseline-ahead holding every acknowledgement until --flush-messages messages
//                   wait (or a fetch comes back empty), then giving them all: fleetflow's
//                   acknowledgement pattern (keyed_last_value acknowledges once a flush made the
//                   samples durable) without its state, graph or KV writes
//   fleetflow       the jetstream pipeline as shipped (no send_asap: pipelines cannot set it)
//   fleetflow-asap  the same with every NATS connection of the process forced to send_asap
//                   (bench-only interposition of natsOptions_SetSendAsap: what a pipeline field
//                   would give)
//   ff-memory       keyed_last_value with backend memory (no KV writes): isolates the KV cost
//   ff-source       nats_source -> a sink that acknowledges at once: source + graph cost only
//   ff-tiers        fleetflow plus the rollup tiers of pipelines/jetstream-tiers.json: two
//                   window_aggregate nodes (1 min, 1 h) on the source's samples, their open
//                   windows as snapshots in the same bucket, each into null rows
//   ff-archive      fleetflow plus an `archive` node on the source's samples and a
//                   `row_archive` node on the join's rows, as in pipelines/jetstream-tiers.json
//                   (the archive's backend jetstream_kv in the source's state bucket, the other
//                   options the defaults: flush_ms 10 minutes, so within a run it only gathers;
//                   its flush and the rows' log are written at the drain, timed apart: "drain")
//   ff-archive-1s   the same with the archive's flush_ms 1000: its writer compresses and writes
//                   a flush every second during the run (more, smaller chunks than shipped)
//   ff-columns      fleetflow whose rows' sink computes eight columns as timescale_sink does
//                   (engine/row_columns: the five of pipelines/jetstream-tiers.json's table and
//                   three derived ones, power_kw, speed_kmh, soc_used) and writes nothing
//   ff-rules        ff-columns plus a `rule` node on the join's rows: ten rules (thresholds,
//                   for_ms, clear conditions, prev_<column> and dt, a derived column of its own),
//                   backend memory (the source is not partitioned), events to the JetStream
//                   stream ALARMS (deleted after each run), no table, nothing to the vehicles;
//                   thresholds that raise an alarm on about one row in a hundred
//   ff-rules-busy   the same with thresholds nearer the middle: about one row in six, for what
//                   the events cost (each stored in the stream before the rows go on)
//
// Output: a table on stdout and, with --csv, one CSV row per run plus one per contender median.

#include <dlfcn.h>
#include <nats/nats.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "builtin.hpp"
#include "clock.hpp"
#include "jetstream.hpp"
#include "metrics.hpp"
#include "nats_client.hpp"
#include "options.hpp"
#include "pipeline.hpp"
#include "registry.hpp"
#include "row_columns.hpp"
#include "runtime.hpp"
#include "servers.hpp"
#include "wire.hpp"

namespace {

/// -1: connections keep their own send_asap; 0 / 1: every connection made meanwhile gets it.
std::atomic<int> g_force_send_asap{-1};

}  // namespace

/// Bench-only interposition: the executable's definition wins over libnats' for every call made
/// from this program (including the operators' connections), and forwards to the real one.
/// Lets the bench measure send_asap on fleetflow without a pipeline field for it.
extern "C" natsStatus natsOptions_SetSendAsap(natsOptions* opts, bool send_asap) {
  using Fn = natsStatus (*)(natsOptions*, bool);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "natsOptions_SetSendAsap"));
  if (real == nullptr) return NATS_ERR;
  const int forced = g_force_send_asap.load();
  return real(opts, forced < 0 ? send_asap : forced != 0);
}

namespace fleetflow::bench {
namespace {

using Clock = SteadyClock;

constexpr const char* kStream = "TELEMETRY";
constexpr const char* kSubject = "vehicle.*.*";  // samples and status, as nats_source defaults to
constexpr const char* kAlarmStream = "ALARMS";   // ff-rules' events

/// What to generate and how to run.
struct Settings {
  int64_t messages = 200'000;
  int vehicles = 1000;
  std::vector<std::string> sensors = {"gps", "speed", "soc", "torque"};
  int min_samples = 1;
  int max_samples = 10;
  int64_t message_span_ms = 500;  // event time covered by one message of a key
  int repeats = 3;
  int fetch_batch = 256;
  int flush_ms = 1000;                // as pipelines/jetstream.json
  int flush_messages = 100'000;       // keyed_last_value's default
  int64_t max_ack_pending = 100'000;  // nats_source's default; every contender's consumer
  int records_per_partition = 64;     // keyed_last_value's default
  std::string storage = "file";
  uint64_t seed = 1;
  std::string scale = "custom";
  std::string csv;
  std::vector<std::string> contenders;  // --contenders
  int timeout_s = 600;
};

/// One run of one contender.
struct RunResult {
  std::string contender;
  bool send_asap = false;
  int rep = 0;
  uint64_t messages = 0;
  uint64_t samples = 0;
  double seconds = 0;         // Start until nothing pending and nothing unacknowledged
  double intake_seconds = 0;  // Start until every message was received
  double first_seconds = 0;   // Start until the first message was received
  uint64_t kv_writes = 0;
  uint64_t rows = 0;
  double cpu_seconds = 0;         // user + system of this process (all its threads) during the run
  double server_cpu_seconds = 0;  // user + system of nats-server during the run
  double machine_busy = 0;        // share of all cores' time not idle during the run (0..1)
  double drain_seconds = 0;       // fleetflow: Runtime::Stop (the drain), not in `seconds`
  double drain_cpu_seconds = 0;   // this process's CPU meanwhile
  uint64_t rule_rows = 0;         // ff-rules: rows the rules were evaluated on
  uint64_t alarms_raised = 0;     // ff-rules: fleetflow_alarms_raised_total, every rule
  uint64_t alarms_cleared = 0;    // ff-rules: fleetflow_alarms_cleared_total
  std::string raised_by_rule;     // ff-rules: "<rule> <n>, ..." by the rules' names
  double msgs_per_s() const { return seconds > 0 ? static_cast<double>(messages) / seconds : 0; }
  double samples_per_s() const { return seconds > 0 ? static_cast<double>(samples) / seconds : 0; }
};

/// CPU use of this process, the server and the machine between construction and Stop().
class CpuMeter {
 public:
  explicit CpuMeter(pid_t server)
      : server_(server),
        self0_(ProcessCpuSeconds()),
        server0_(PidCpuSeconds(server)),
        machine0_(MachineJiffies()) {}
  void Stop(RunResult& r) const {
    r.cpu_seconds = ProcessCpuSeconds() - self0_;
    r.server_cpu_seconds = PidCpuSeconds(server_) - server0_;
    const auto m = MachineJiffies();
    const double total = m.second - machine0_.second;
    r.machine_busy = total > 0 ? (m.first - machine0_.first) / total : 0;
  }

 private:
  pid_t server_;
  double self0_, server0_;
  std::pair<double, double> machine0_;
};

pid_t g_server_pid = 0;

void CheckNats(natsStatus s, const std::string& what) {
  if (s != NATS_OK) throw std::runtime_error(what + ": " + natsStatus_GetText(s));
}

// --- Filling the stream ---

/// Counts of what was published.
struct Filled {
  uint64_t messages = 0;
  uint64_t samples = 0;
};

/// Publishes `messages` FLT1 batches to vehicle.<id>.<sensor> with asynchronous JetStream
/// publishing: round r of every key covers event time [base + r*span, base + (r+1)*span) with
/// 1..10 evenly spaced samples, so event time advances evenly over the whole fleet, ending about
/// now (no future timestamps).
Filled FillStream(const std::string& url, const Settings& s) {
  natsConnection* nc = nullptr;
  CheckNats(natsConnection_ConnectTo(&nc, url.c_str()), "connect (fill)");
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 8192;
  jsCtx* js = nullptr;
  CheckNats(natsConnection_JetStream(&js, nc, &jo), "JetStream context (fill)");

  const int keys = s.vehicles * static_cast<int>(s.sensors.size());
  const int64_t rounds = (s.messages + keys - 1) / keys;
  const int64_t span_ns = s.message_span_ms * 1'000'000;
  const int64_t now_ns = WallClock().NowNs();
  const int64_t base_ns =
      (now_ns - rounds * span_ns - 2'000'000'000) / 1'000'000'000 * 1'000'000'000;
  std::mt19937_64 rng(s.seed);
  std::uniform_int_distribution<int> count(s.min_samples, s.max_samples);
  std::uniform_real_distribution<double> jitter(-0.001, 0.001);

  std::vector<std::string> subjects;
  subjects.reserve(static_cast<size_t>(keys));
  for (int v = 0; v < s.vehicles; ++v) {
    char id[16];
    std::snprintf(id, sizeof id, "v%05d", v);
    for (const auto& sensor : s.sensors) subjects.push_back(wire::SampleSubject(id, sensor));
  }
  std::vector<uint32_t> seq(static_cast<size_t>(keys), 0);

  Filled out;
  std::vector<wire::Point> points;
  for (int64_t i = 0; i < s.messages; ++i) {
    const int64_t round = i / keys;
    const int key = static_cast<int>(i % keys);
    const int vehicle = key / static_cast<int>(s.sensors.size());
    const bool gps = s.sensors[static_cast<size_t>(key) % s.sensors.size()] == "gps";
    const int n = count(rng);
    points.clear();
    for (int k = 0; k < n; ++k) {
      wire::Point p;
      p.ts_ns = base_ns + round * span_ns + span_ns * k / n;
      p.seq = seq[static_cast<size_t>(key)]++;
      if (gps) {
        p.has_position = true;
        p.lat = 48.1 + vehicle * 1e-4 + jitter(rng);
        p.lon = 11.5 + vehicle * 1e-4 + jitter(rng);
      } else {
        p.value = 50.0 + 10.0 * jitter(rng) * 1000.0;
      }
      points.push_back(p);
    }
    const auto bytes = wire::EncodeBatch(points);
    CheckNats(js_PublishAsync(js, subjects[static_cast<size_t>(key)].c_str(), bytes.data(),
                              static_cast<int>(bytes.size()), nullptr),
              "publish");
    ++out.messages;
    out.samples += static_cast<uint64_t>(n);
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60'000;
  CheckNats(js_PublishAsyncComplete(js, &po), "wait for publish acks");

  jsStreamInfo* si = nullptr;
  CheckNats(js_GetStreamInfo(&si, js, kStream, nullptr, nullptr), "stream info");
  const uint64_t stored = si->State.Msgs;
  jsStreamInfo_Destroy(si);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  if (stored != out.messages) {
    throw std::runtime_error("stream holds " + std::to_string(stored) + " messages, expected " +
                             std::to_string(out.messages));
  }
  return out;
}

// --- Durable consumers and buckets ---

/// Administration on a connection of its own: consumers, buckets, and the end-of-run probe.
class Admin {
 public:
  explicit Admin(const std::string& url) {
    nats::ConnectOptions o;
    o.url = url;
    o.name = "bench-admin";
    conn_ = nats::Connection::Connect(o);
    js_ = std::make_unique<nats::JetStream>(*conn_);
    CheckNats(natsConnection_JetStream(&raw_js_, conn_->raw(), nullptr), "JetStream context");
  }
  ~Admin() { jsCtx_Destroy(raw_js_); }
  Admin(const Admin&) = delete;
  Admin& operator=(const Admin&) = delete;

  nats::JetStream& js() { return *js_; }

  /// Creates the durable pull consumer (DeliverAll, explicit ack or `ack_all`) before the clock
  /// starts.
  void CreateConsumer(const std::string& durable, int64_t max_ack_pending, bool ack_all) {
    nats::ConsumerOptions o;
    o.stream = kStream;
    o.durable = durable;
    o.filter_subject = kSubject;
    o.ack_wait_ms = 30'000;
    o.max_ack_pending = max_ack_pending;  // as the pipeline's source asks
    o.ack_all = ack_all;
    js_->PullSubscribe(o);  // creates it; the binding is dropped, the consumer stays
  }

  void DeleteConsumer(const std::string& durable) {
    js_DeleteConsumer(raw_js_, kStream, durable.c_str(), nullptr, nullptr);
  }

  void DeleteBucket(const std::string& bucket) { js_DeleteKeyValue(raw_js_, bucket.c_str()); }

  void DeleteStream(const std::string& stream) {
    js_DeleteStream(raw_js_, stream.c_str(), nullptr, nullptr);
  }

 private:
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  jsCtx* raw_js_ = nullptr;
};

/// Seconds since a run's start: to its first message, to its last, and until the consumer had
/// nothing pending and nothing unacknowledged.
struct RunTimes {
  double first = 0, intake = 0, done = 0;
};

/// Waits until `received()` reaches `total` (polled every millisecond, no server traffic), then
/// until the consumer has nothing pending and nothing unacknowledged (polled every 5 ms).
RunTimes WaitDrained(Admin& admin, const std::string& durable,
                     const std::function<uint64_t()>& received, uint64_t total,
                     Clock::time_point t0, int timeout_s) {
  const auto deadline = t0 + std::chrono::seconds(timeout_s);
  RunTimes t;
  while (received() < total) {
    if (t.first == 0 && received() > 0) t.first = Seconds(Clock::now() - t0);
    if (Clock::now() > deadline) {
      throw std::runtime_error("timeout: " + std::to_string(received()) + " of " +
                               std::to_string(total) + " messages received");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  t.intake = Seconds(Clock::now() - t0);
  if (t.first == 0) t.first = t.intake;
  for (;;) {
    const auto [pending, ack_pending] = admin.js().ConsumerPending(kStream, durable);
    if (pending == 0 && ack_pending == 0) break;
    if (Clock::now() > deadline) {
      throw std::runtime_error("timeout: " + std::to_string(ack_pending) +
                               " messages still unacknowledged");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  t.done = Seconds(Clock::now() - t0);
  return t;
}

// --- The baseline: a bare fetch + ack loop ---

RunResult RunBaseline(const std::string& contender, const std::string& url, Admin& admin,
                      const std::string& durable, const Settings& s, const Filled& filled) {
  const bool send_asap = contender == "baseline-asap";
  const bool held = contender == "baseline-held";
  const bool ack_all = contender == "baseline-ackall";
  const bool ahead = contender == "baseline-ahead" || held || ack_all;
  nats::ConnectOptions o;
  o.url = url;
  o.name = "bench-baseline";
  o.send_asap = send_asap;
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  nats::ConsumerOptions co;
  co.stream = kStream;
  co.durable = durable;
  co.filter_subject = kSubject;
  co.ack_all = ack_all;
  auto consumer = js.PullSubscribe(co);

  std::atomic<uint64_t> received{0};
  std::atomic<bool> stop{false};
  const CpuMeter cpu(g_server_pid);
  const auto t0 = Clock::now();
  std::thread loop([&] {
    std::vector<nats::DeferredAck> waiting;  // baseline-held: given in bursts, as after a flush
    const auto give = [&] {
      for (const auto& ack : waiting) ack();
      waiting.clear();
    };
    while (!stop.load(std::memory_order_relaxed)) {
      const auto batch = consumer->Fetch(s.fetch_batch, 500, ahead);
      if (ack_all && !batch.empty()) {
        batch.back()->Ack();
        received.fetch_add(batch.size(), std::memory_order_relaxed);
        continue;
      }
      for (const auto& m : batch) {
        if (held) {
          waiting.push_back(m->AckLater());
        } else {
          m->Ack();
        }
        received.fetch_add(1, std::memory_order_relaxed);
      }
      if (batch.empty() || waiting.size() >= static_cast<size_t>(s.flush_messages)) give();
    }
  });
  RunTimes t;
  try {
    t = WaitDrained(
        admin, durable, [&] { return received.load(); }, filled.messages, t0, s.timeout_s);
  } catch (...) {
    stop = true;
    loop.join();
    throw;
  }
  RunResult r;
  cpu.Stop(r);
  stop = true;
  loop.join();
  r.contender = contender;
  r.send_asap = send_asap;
  r.messages = filled.messages;
  r.samples = filled.samples;
  r.first_seconds = t.first;
  r.intake_seconds = t.intake;
  r.seconds = t.done;
  return r;
}

// --- fleetflow ---

/// The options of bench_row_values.
struct RowValuesOptions {
  std::vector<RowColumn> columns;
};

const OptionsSpec<RowValuesOptions>& RowValuesSpec() {
  using O = RowValuesOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    OptionsSpec<RowColumn> columns;
    columns.String("name", "The column's name.", &RowColumn::name)
        .Required()
        .Pattern("^[a-z_][a-z0-9_]{0,62}$",
                 "1 to 63 lower-case letters, digits and _, starting with a letter or _");
    DeclareRowColumnFields(columns, /*statistics=*/false, "NULL");
    c.ObjectArray("columns", "The columns computed for each row, as timescale_sink's.", &O::columns,
                  columns)
        .Required()
        .MinItems(1);
    c.Rule("Each column has a sensor or an expression, and each expression compiles.",
           [](const O& o, std::vector<ConfigProblem>& out) { CheckRowColumns(o.columns, out); });
  });
}

/// Benchmark sink: computes the columns of every row as timescale_sink does before it writes
/// them (RowValues of engine/row_columns, the class timescale_sink, row_archive and rule share),
/// counts the rows and writes nothing.
class RowValuesSink final : public Operator {
 public:
  RowValuesSink(const OperatorContext& ctx, const RowValuesOptions& o, Probe& probe)
      : values_(o.columns), probe_(probe) {
    values_.CountErrorsIn(ctx.metrics, ctx.labels());
  }
  void Process(const Message& in, Emitter&) override {
    if (const auto* b = std::get_if<WindowBatch>(in.get())) {
      const RowValues::Values values = values_.Of(*b);
      for (const auto& row : values) {
        for (const auto& v : row) present_ += v.has_value() ? 1 : 0;
      }
      probe_.rows.fetch_add(b->rows.size(), std::memory_order_relaxed);
      probe_.windows.fetch_add(1, std::memory_order_relaxed);
    }
  }

 private:
  RowValues values_;
  Probe& probe_;
  uint64_t present_ = 0;  // non-NULL values: what a sink would write
};

void RegisterRowValuesSink(Registry& registry, Probe& probe) {
  OperatorInfo info;
  info.name = "bench_row_values";
  info.summary = "Benchmark sink: computes the rows' columns as timescale_sink, writes nothing.";
  info.input = PortKind::kRows;
  info.output = PortKind::kNone;
  info.config = RowValuesSpec().config();
  info.create = [&probe](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<RowValuesSink>(ctx, RowValuesSpec().Parse(ctx.config), probe);
  };
  registry.Add(std::move(info));
}

/// ff-columns' and ff-rules' sink columns: the five of pipelines/jetstream-tiers.json's table and
/// three derived ones.
constexpr const char* kSinkColumns = R"json([
      {"name": "lat", "sensor": "gps", "field": "lat"},
      {"name": "lon", "sensor": "gps", "field": "lon"},
      {"name": "speed", "sensor": "speed"},
      {"name": "soc", "sensor": "soc", "interpolation": "previous"},
      {"name": "torque", "sensor": "torque"},
      {"name": "power_kw", "expression": "torque * speed / 0.3 / 1000"},
      {"name": "speed_kmh", "expression": "speed * 3.6"},
      {"name": "soc_used", "expression": "100 - soc"}])json";

/// ff-rules' ten rules: thresholds on speed, soc and torque, two with for_ms, two with a clear
/// condition, two on the change since the previous row (prev_<column>, dt), one on a derived
/// column of the rule's own (power_kw). The bench's generated values are evenly spread over
/// 50 +- 10 for every scalar sensor, independently from sample to sample, so the thresholds sit
/// in the tails of that range: `busy` false (ff-rules) raises an alarm on about one row in a
/// hundred, `busy` true (ff-rules-busy) on about one in six, for the cost of the events.
std::string RulesJson(bool busy) {
  const auto pick = [busy](const char* rare, const char* often) { return busy ? often : rare; };
  std::ostringstream j;
  j << R"json([
      {"name": "overspeed", "when": "speed > )json"
    << pick("59.95", "59.5") << R"json(", "severity": "critical", "value": "speed",
       "message": "speed above the limit"},
      {"name": "low_soc", "when": "soc < )json"
    << pick("40.05", "41") << R"json(", "clear": "soc > )json" << pick("42", "45")
    << R"json(", "value": "soc",
       "message": "state of charge low, cleared some points above"},
      {"name": "torque_high", "when": "torque > )json"
    << pick("59.95", "59.5") << R"json(", "value": "torque"},
      {"name": "stall", "when": "speed < )json"
    << pick("40.5", "41") << R"json( && torque > )json" << pick("59.5", "58")
    << R"json(", "severity": "info"},
      {"name": "sustained_speed", "when": "speed > )json"
    << pick("57", "56") << R"json(", "for_ms": )json" << pick("3000", "2000")
    << R"json(, "value": "speed",
       "message": "fast for a few seconds"},
      {"name": "hard_driving", "when": "torque > )json"
    << pick("55", "52") << R"json( && speed > )json" << pick("55", "52")
    << R"json(", "for_ms": 2000,
       "severity": "info", "value": "torque"},
      {"name": "torque_low", "when": "torque < )json"
    << pick("40.05", "41") << R"json(", "clear": "torque > )json" << pick("42", "45")
    << R"json(", "severity": "info",
       "value": "torque"},
      {"name": "speed_jump", "when": "abs(speed - prev_speed) / dt > )json"
    << pick("19.5", "18") << R"json(", "severity": "info",
       "value": "speed", "message": "speed changed fast"},
      {"name": "soc_jump", "when": "abs(soc - prev_soc) / dt > )json"
    << pick("19.5", "18") << R"json(", "value": "soc",
       "message": "state of charge changed fast"},
      {"name": "high_power", "when": "power_kw > )json"
    << pick("11.8", "11.5") << R"json(", "value": "power_kw"}])json";
  return j.str();
}

/// The archive's directory of a run (ff-archive*): removed after it.
std::filesystem::path ArchiveDir(const std::string& durable) {
  return std::filesystem::temp_directory_path() /
         ("ff-bench-jetstream-" + std::to_string(::getpid()) + "-" + durable);
}

/// The pipeline of a fleetflow contender, as a user would write it.
std::string PipelineJson(const std::string& contender, const std::string& url,
                         const std::string& durable, const std::string& bucket, const Settings& s) {
  std::ostringstream sensors;
  for (size_t i = 0; i < s.sensors.size(); ++i) {
    sensors << (i ? ", " : "") << '"' << s.sensors[i] << '"';
  }
  std::ostringstream j;
  j << R"({"name": "bench-)" << contender << R"(", "nodes": [
  {"id": "telemetry", "type": "nats_source", "config": {
    "url": ")"
    << url << R"(", "delivery": "jetstream", "subject": ")" << kSubject << R"(",
    "stream": ")"
    << kStream << R"(", "create_stream": false, "durable": ")" << durable << R"(", "fetch_batch": )"
    << s.fetch_batch << R"(, "max_ack_pending": )" << s.max_ack_pending;
  const bool kv = contender != "ff-memory" && contender != "ff-source";
  if (kv) j << R"(, "state_bucket": ")" << bucket << '"';
  j << "}}";
  if (contender == "ff-source") {
    j << R"(,
  {"id": "sink", "type": "bench_count_samples", "inputs": ["telemetry"]}]})";
    return j.str();
  }
  j << R"(,
  {"id": "last_values", "type": "keyed_last_value", "inputs": ["telemetry"], "config": {)";
  if (kv) {
    j << R"("url": ")" << url << R"(", "backend": "jetstream_kv", "bucket": ")" << bucket
      << R"(", "bucket_storage": ")" << s.storage << R"(", "flush_ms": )" << s.flush_ms
      << R"(, "flush_messages": )" << s.flush_messages << R"(, "records_per_partition": )"
      << s.records_per_partition << ", ";
  } else {
    j << R"("backend": "memory", )";
  }
  j << R"("keep": 16}},
  {"id": "windows", "type": "window_join", "inputs": ["last_values"], "config": {
    "every_ms": 1000, "allowed_lateness_ms": 1000, "max_gap_ms": 2000,
    "sensors": [)"
    << sensors.str() << R"(]}},
  {"id": "sink", )";
  const bool rules = contender.starts_with("ff-rules");
  if (contender == "ff-columns" || rules) {
    j << R"("type": "bench_row_values", "inputs": ["windows"], "config": {
    "columns": )"
      << kSinkColumns << "}}";
  } else {
    j << R"("type": "bench_null_rows", "inputs": ["windows"]})";
  }
  if (rules) {
    j << R"(,
  {"id": "alarms", "type": "rule", "inputs": ["windows"], "config": {
    "url": ")"
      << url << R"(", "backend": "memory", "stream": ")" << kAlarmStream
      << R"(", "table": "", "notify_vehicle": false,
    "columns": [
      {"name": "speed", "sensor": "speed"},
      {"name": "soc", "sensor": "soc", "interpolation": "previous"},
      {"name": "torque", "sensor": "torque"},
      {"name": "power_kw", "expression": "torque * speed / 0.3 / 1000"}],
    "rules": )"
      << RulesJson(contender == "ff-rules-busy") << "}}";
  }
  if (contender.starts_with("ff-archive")) {
    j << R"(,
  {"id": "archive", "type": "archive", "inputs": ["telemetry"], "config": {
    "directory": ")"
      << ArchiveDir(durable).string() << R"(", "url": ")" << url
      << R"(", "backend": "jetstream_kv", "bucket": ")" << bucket << '"'
      << (contender == "ff-archive-1s" ? R"(, "flush_ms": 1000)" : "") << R"(}},
  {"id": "row_archive", "type": "row_archive", "inputs": ["windows"], "config": {
    "directory": ")"
      << ArchiveDir(durable).string() << R"(", "url": ")" << url << R"("}})";
  }
  if (contender == "ff-tiers") {
    for (const auto& [id, every] : {std::pair{"minutes", "60000"}, {"hours", "3600000"}}) {
      j << R"(,
  {"id": ")"
        << id << R"(", "type": "window_aggregate", "inputs": ["telemetry"], "config": {
    "url": ")"
        << url << R"(", "backend": "jetstream_kv", "bucket": ")" << bucket << R"(", "every_ms": )"
        << every << R"(, "allowed_lateness_ms": 1000, "sensors": [)" << sensors.str() << R"(]}},
  {"id": ")"
        << id << R"(_sink", "type": "bench_null_rows", "inputs": [")" << id << R"("]})";
    }
  }
  j << "]}";
  return j.str();
}

RunResult RunFleetflow(const std::string& contender, const std::string& url, Admin& admin,
                       const std::string& durable, const std::string& bucket, const Settings& s,
                       const Filled& filled) {
  const bool asap = contender == "fleetflow-asap";
  Probe probe;
  Registry registry;
  RegisterBuiltinOperators(registry);
  RegisterBenchSinks(registry, probe);
  RegisterRowValuesSink(registry, probe);
  const std::string name = contender == "fleetflow-asap" ? "fleetflow" : contender;
  const Pipeline pipeline =
      ParsePipelineOrThrow(PipelineJson(name, url, durable, bucket, s), registry);
  Metrics metrics;
  WallClock clock;
  g_force_send_asap = asap ? 1 : -1;
  RunResult r;
  {
    Runtime runtime(pipeline, metrics, clock);  // connects, restores the (empty) bucket
    const CpuMeter cpu(g_server_pid);
    const auto t0 = Clock::now();
    runtime.Start();
    const auto t = WaitDrained(
        admin, durable, [&] { return metrics.CounterSum("messages_in"); }, filled.messages, t0,
        s.timeout_s);
    cpu.Stop(r);
    r.first_seconds = t.first;
    r.intake_seconds = t.intake;
    r.seconds = t.done;
    const double drain_cpu0 = ProcessCpuSeconds();
    const auto drain0 = Clock::now();
    runtime.Stop();  // drain: not in `seconds`; timed apart
    r.drain_seconds = Seconds(Clock::now() - drain0);
    r.drain_cpu_seconds = ProcessCpuSeconds() - drain_cpu0;
  }
  std::filesystem::remove_all(ArchiveDir(durable));
  g_force_send_asap = -1;
  r.contender = contender;
  r.send_asap = asap;
  r.messages = metrics.CounterSum("messages_in");
  r.samples = metrics.CounterSum("samples_in");
  r.kv_writes = metrics.CounterSum("kv_writes");
  r.rows = probe.rows.load();
  r.rule_rows = metrics.CounterSum("rule_rows_evaluated");
  r.alarms_raised = metrics.CounterSum("alarms_raised");
  r.alarms_cleared = metrics.CounterSum("alarms_cleared");
  for (const auto& [labels, value] : metrics.Values("alarms_raised")) {
    for (const auto& [key, rule] : labels) {
      if (key != "rule") continue;
      if (!r.raised_by_rule.empty()) r.raised_by_rule += ", ";
      r.raised_by_rule += rule + " " + std::to_string(static_cast<uint64_t>(value));
    }
  }
  if (r.messages != filled.messages || r.samples != filled.samples) {
    throw std::runtime_error(contender + ": consumed " + std::to_string(r.messages) +
                             " messages / " + std::to_string(r.samples) + " samples, expected " +
                             std::to_string(filled.messages) + " / " +
                             std::to_string(filled.samples));
  }
  return r;
}

// --- Report ---

/// The median run of a contender, by total seconds (its other figures come from that same run).
RunResult MedianRun(const std::vector<RunResult>& runs) {
  std::vector<RunResult> sorted = runs;
  std::sort(sorted.begin(), sorted.end(),
            [](const RunResult& a, const RunResult& b) { return a.seconds < b.seconds; });
  RunResult m = sorted[sorted.size() / 2];
  std::vector<double> secs, intake;
  for (const auto& r : runs) {
    secs.push_back(r.seconds);
    intake.push_back(r.intake_seconds);
  }
  m.seconds = Median(secs);
  m.intake_seconds = Median(intake);
  m.rep = 0;
  return m;
}

void Report(const Settings& s, const Filled& filled,
            const std::map<std::string, std::vector<RunResult>>& runs) {
  std::map<std::string, RunResult> med;
  for (const auto& [name, rs] : runs) med[name] = MedianRun(rs);
  const double base = med.count("baseline") ? med["baseline"].msgs_per_s() : 0;
  const double base_asap = med.count("baseline-asap") ? med["baseline-asap"].msgs_per_s() : 0;

  std::printf(
      "\nJetStream ingest, scale %s: %llu messages, %llu samples (%.2f per message), "
      "%d vehicles x %zu sensors, fetch batch %d, storage %s, median of %d\n\n",
      s.scale.c_str(), static_cast<unsigned long long>(filled.messages),
      static_cast<unsigned long long>(filled.samples),
      static_cast<double>(filled.samples) / static_cast<double>(filled.messages), s.vehicles,
      s.sensors.size(), s.fetch_batch, s.storage.c_str(), s.repeats);
  std::printf("%-15s %4s %8s %8s %9s %10s %7s %7s %9s %7s %7s %6s %6s %5s %7s\n", "contender",
              "asap", "total s", "intake s", "msgs/s", "samples/s", "vs base", "vs asap",
              "kv writes", "msg/kvw", "rows", "cpu", "server", "busy", "us/msg");
  for (const auto& name : s.contenders) {
    if (!med.count(name)) continue;
    const RunResult& m = med[name];
    const double mps = m.msgs_per_s();
    char coalescing[16] = "-";
    if (m.kv_writes > 0) {
      std::snprintf(coalescing, sizeof coalescing, "%.2f",
                    static_cast<double>(m.messages) / static_cast<double>(m.kv_writes));
    }
    std::printf(
        "%-15s %4s %8.3f %8.3f %9.0f %10.0f %6.1f%% %6.1f%% %9llu %7s %7llu %6.2f %6.2f %4.0f%% "
        "%7.1f\n",
        name.c_str(), m.send_asap ? "yes" : "no", m.seconds, m.intake_seconds, mps,
        m.samples_per_s(), base > 0 ? 100 * mps / base : 0,
        base_asap > 0 ? 100 * mps / base_asap : 0, static_cast<unsigned long long>(m.kv_writes),
        coalescing, static_cast<unsigned long long>(m.rows), m.cpu_seconds, m.server_cpu_seconds,
        100 * m.machine_busy,
        1e6 * (m.cpu_seconds + m.server_cpu_seconds) / static_cast<double>(m.messages));
  }
  std::printf(
      "\nvs base / vs asap: msgs/s relative to 'baseline' (send_asap off, as nats_source "
      "connects) / to 'baseline-asap'.\nmsg/kvw: messages consumed per KV write (coalescing "
      "factor). cpu / server: user+system CPU seconds of the bench process / of nats-server.\n"
      "busy: share of all cores busy during the run. us/msg: bench + server CPU per message.\n");
  for (const char* archive : {"ff-archive", "ff-archive-1s"}) {
    if (!med.count(archive) || !med.count("fleetflow") || med["fleetflow"].msgs_per_s() <= 0) {
      continue;
    }
    const RunResult& a = med[archive];
    const RunResult& f = med["fleetflow"];
    const auto per_msg = [](const RunResult& r, double cpu) {
      return 1e6 * cpu / static_cast<double>(r.messages);
    };
    std::printf(
        "\narchive: %s reaches %.1f %% of fleetflow's rate (goal: at least 95 %%); bench CPU "
        "%.2f us/msg against %.2f (%+.1f %%); the drain (not timed) %.3f s, %.2f us/msg of CPU "
        "against %.3f s, %.2f us/msg\n",
        archive, 100 * a.msgs_per_s() / f.msgs_per_s(), per_msg(a, a.cpu_seconds),
        per_msg(f, f.cpu_seconds), 100 * (a.cpu_seconds / f.cpu_seconds - 1), a.drain_seconds,
        per_msg(a, a.drain_cpu_seconds), f.drain_seconds, per_msg(f, f.drain_cpu_seconds));
  }
  for (const char* columns : {"ff-columns", "ff-rules", "ff-rules-busy"}) {
    if (!med.count(columns) || !med.count("fleetflow") || med["fleetflow"].msgs_per_s() <= 0) {
      continue;
    }
    const RunResult& c = med[columns];
    const RunResult& f = med["fleetflow"];
    // Round by round: the contender's rate against fleetflow's of the same round.
    std::string rounds;
    const auto& cr = runs.at(columns);
    const auto& fr = runs.at("fleetflow");
    for (size_t i = 0; i < cr.size() && i < fr.size(); ++i) {
      char one[32];
      std::snprintf(one, sizeof one, "%s%.1f", i ? ", " : "",
                    100 * cr[i].msgs_per_s() / fr[i].msgs_per_s());
      rounds += one;
    }
    std::printf(
        "\n%s: %.1f %% of fleetflow's rate (issue 43, ff-rules: at least 90 %%; per round %s "
        "%%); bench CPU %.2f us/msg against %.2f (%+.1f %%), with the server's %.2f against %.2f\n",
        columns, 100 * c.msgs_per_s() / f.msgs_per_s(), rounds.c_str(),
        1e6 * c.cpu_seconds / static_cast<double>(c.messages),
        1e6 * f.cpu_seconds / static_cast<double>(f.messages),
        100 * (c.cpu_seconds / f.cpu_seconds - 1),
        1e6 * (c.cpu_seconds + c.server_cpu_seconds) / static_cast<double>(c.messages),
        1e6 * (f.cpu_seconds + f.server_cpu_seconds) / static_cast<double>(f.messages));
    if (c.rule_rows > 0) {
      std::printf(
          "  median run: %llu rows evaluated by the rules, %llu alarms raised (%s), %llu "
          "cleared\n",
          static_cast<unsigned long long>(c.rule_rows),
          static_cast<unsigned long long>(c.alarms_raised), c.raised_by_rule.c_str(),
          static_cast<unsigned long long>(c.alarms_cleared));
    }
  }
  if (med.count("ff-tiers") && med.count("fleetflow") && med["fleetflow"].msgs_per_s() > 0) {
    std::printf(
        "\nrollup tiers: ff-tiers reaches %.1f %% of fleetflow's rate (goal: at least 90 %%)\n",
        100 * med["ff-tiers"].msgs_per_s() / med["fleetflow"].msgs_per_s());
  }

  if (s.csv.empty()) return;
  std::ofstream csv(s.csv);
  if (!csv) throw std::runtime_error("cannot write " + s.csv);
  csv << "scale,contender,send_asap,rep,messages,samples,seconds,intake_seconds,msgs_per_s,"
         "samples_per_s,ratio_to_baseline,kv_writes,msgs_per_kv_write,rows,cpu_seconds,"
         "server_cpu_seconds,machine_busy,drain_seconds,drain_cpu_seconds,rule_rows,"
         "alarms_raised,alarms_cleared\n";
  auto line = [&](const RunResult& r, const std::string& rep) {
    const double ratio = base > 0 ? r.msgs_per_s() / base : 0;
    csv << s.scale << ',' << r.contender << ',' << (r.send_asap ? 1 : 0) << ',' << rep << ','
        << r.messages << ',' << r.samples << ',' << r.seconds << ',' << r.intake_seconds << ','
        << static_cast<uint64_t>(r.msgs_per_s()) << ',' << static_cast<uint64_t>(r.samples_per_s())
        << ',' << ratio << ',' << r.kv_writes << ','
        << (r.kv_writes ? static_cast<double>(r.messages) / static_cast<double>(r.kv_writes) : 0)
        << ',' << r.rows << ',' << r.cpu_seconds << ',' << r.server_cpu_seconds << ','
        << r.machine_busy << ',' << r.drain_seconds << ',' << r.drain_cpu_seconds << ','
        << r.rule_rows << ',' << r.alarms_raised << ',' << r.alarms_cleared << '\n';
  };
  for (const auto& name : s.contenders) {
    auto it = runs.find(name);
    if (it == runs.end()) continue;
    for (const auto& r : it->second) line(r, std::to_string(r.rep));
    line(med[name], "median");
  }
  std::printf("CSV: %s\n", s.csv.c_str());
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int Main(int argc, char** argv) {
  Settings s;
  std::string contenders =
      "baseline,baseline-asap,baseline-ahead,baseline-ackall,baseline-held,fleetflow,"
      "fleetflow-asap,ff-memory,ff-source,ff-tiers,ff-archive,ff-archive-1s,ff-columns,ff-rules,"
      "ff-rules-busy";
  std::string sensors = "gps,speed,soc,torque";
  std::string log_level = "warn";
  CLI::App app{
      "JetStream ingest benchmark: a bare fetch+ack loop next to one fleetflow worker "
      "(nats_source jetstream -> keyed_last_value jetstream_kv -> window_join -> null sink) on "
      "the same stream, on a nats-server started here."};
  app.add_option("--messages", s.messages, "Messages in the stream")->check(CLI::Range(1, 1 << 30));
  app.add_option("--vehicles", s.vehicles, "Vehicles")->check(CLI::Range(1, 1'000'000));
  app.add_option("--sensors", sensors, "Sensors, comma-separated (gps carries positions)");
  app.add_option("--min-samples", s.min_samples, "Samples per message, at least")
      ->check(CLI::Range(1, 1000));
  app.add_option("--max-samples", s.max_samples, "Samples per message, at most")
      ->check(CLI::Range(1, 1000));
  app.add_option("--repeats", s.repeats, "Runs per contender (the median is reported)")
      ->check(CLI::Range(1, 99));
  app.add_option("--fetch-batch", s.fetch_batch, "Messages per fetch (both contenders)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--flush-ms", s.flush_ms, "keyed_last_value flush_ms")
      ->check(CLI::Range(10, 60000));
  app.add_option("--max-ack-pending", s.max_ack_pending,
                 "max_ack_pending of every contender's consumer (and of fleetflow's source)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{10'000'000}));
  app.add_option("--flush-messages", s.flush_messages, "keyed_last_value flush_messages")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000'000));
  app.add_option("--records-per-partition", s.records_per_partition,
                 "keyed_last_value records_per_partition (the stream is one partition)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65'536));
  app.add_option("--storage", s.storage, "Stream and bucket storage")
      ->check(CLI::IsMember({"file", "memory"}));
  app.add_option("--contenders", contenders, "Which contenders to run, comma-separated");
  app.add_option("--seed", s.seed, "Seed of the generated samples");
  app.add_option("--scale", s.scale, "Label of this scale in the table and CSV");
  app.add_option("--csv", s.csv, "Write one row per run and per median to this CSV file");
  app.add_option("--timeout", s.timeout_s, "Seconds a run may take at most");
  app.add_option("--log-level", log_level, "spdlog level of the engine")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  CLI11_PARSE(app, argc, argv);
  s.contenders = SplitList(contenders);
  s.sensors = SplitList(sensors);
  for (const char* c : {"ff-columns", "ff-rules", "ff-rules-busy"}) {
    if (std::find(s.contenders.begin(), s.contenders.end(), c) == s.contenders.end()) continue;
    for (const char* sensor : {"speed", "soc", "torque"}) {
      if (std::find(s.sensors.begin(), s.sensors.end(), sensor) == s.sensors.end()) {
        std::cerr << c << "'s columns and rules need the sensor " << sensor << " (--sensors)\n";
        return 2;
      }
    }
  }
  if (s.min_samples > s.max_samples) {
    std::cerr << "--min-samples must not exceed --max-samples\n";
    return 2;
  }
  for (const auto& c : s.contenders) {
    static const std::vector<std::string> known = {
        "baseline",   "baseline-asap",  "baseline-ahead", "baseline-ackall", "baseline-held",
        "fleetflow",  "fleetflow-asap", "ff-memory",      "ff-source",       "ff-tiers",
        "ff-archive", "ff-archive-1s",  "ff-columns",     "ff-rules",        "ff-rules-busy"};
    if (std::find(known.begin(), known.end(), c) == known.end()) {
      std::cerr << "unknown contender '" << c << "'\n";
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (!ServersInstalled(/*nats=*/true, /*postgres=*/false)) return 1;
  testing::NatsServer server;
  server.Start();
  const std::string url = server.url();
  g_server_pid = FindNatsServerPid(server.port());
  std::printf("nats-server %s, store %s\n", url.c_str(), server.store_dir().c_str());

  Admin admin(url);
  nats::StreamOptions so;
  so.name = kStream;
  so.subjects = {kSubject};
  so.storage = s.storage;
  admin.js().EnsureStream(so);
  const auto f0 = Clock::now();
  const Filled filled = FillStream(url, s);
  const double fill_s = Seconds(Clock::now() - f0);
  std::printf("filled %s: %llu messages, %llu samples in %.2f s (%.0f msgs/s, async publish)\n",
              kStream, static_cast<unsigned long long>(filled.messages),
              static_cast<unsigned long long>(filled.samples), fill_s,
              static_cast<double>(filled.messages) / fill_s);

  std::map<std::string, std::vector<RunResult>> runs;
  for (int rep = 1; rep <= s.repeats; ++rep) {
    for (const auto& c : s.contenders) {
      const std::string tag = c + "-r" + std::to_string(rep);
      std::string durable = "bench-" + tag;
      std::string bucket = "bench_kv_" + tag;
      std::replace(bucket.begin(), bucket.end(), '-', '_');
      admin.CreateConsumer(durable, s.max_ack_pending, c == "baseline-ackall");
      RunResult r = c.starts_with("baseline")
                        ? RunBaseline(c, url, admin, durable, s, filled)
                        : RunFleetflow(c, url, admin, durable, bucket, s, filled);
      r.rep = rep;
      std::printf(
          "  %-15s run %d: %7.3f s (first message %6.3f s, intake %7.3f s) %10.0f msgs/s %11.0f "
          "samples/s",
          c.c_str(), rep, r.seconds, r.first_seconds, r.intake_seconds, r.msgs_per_s(),
          r.samples_per_s());
      if (r.kv_writes) {
        std::printf(", %llu kv writes", static_cast<unsigned long long>(r.kv_writes));
      }
      if (r.rule_rows) {
        std::printf(", %llu alarms raised", static_cast<unsigned long long>(r.alarms_raised));
      }
      std::printf(", cpu %.2f s + server %.2f s, busy %.0f%%\n", r.cpu_seconds,
                  r.server_cpu_seconds, 100 * r.machine_busy);
      std::fflush(stdout);
      runs[c].push_back(r);
      admin.DeleteConsumer(durable);
      // Each run of ff-rules* stores its events in a stream of its own.
      if (c.starts_with("ff-rules")) admin.DeleteStream(kAlarmStream);
      if (c != "ff-memory" && c != "ff-source" && !c.starts_with("baseline")) {
        admin.DeleteBucket(bucket);
        admin.DeleteBucket(bucket + "_writers");
      }
    }
  }
  Report(s, filled, runs);
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-jetstream", fleetflow::bench::Main, argc, argv);
}

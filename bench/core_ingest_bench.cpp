// Core-delivery ingest and the reference design, in one run, on one nats-server started here.
//
// Every contender is fed by the same publisher: fleet-sim (firmware/) as a child process,
// --max-rate (as fast as it can publish), --duration seconds of event time ending about now, the
// default sensors and rates (gps 10, speed 30, soc 5, torque 20 Hz, batched every 100 ms). Each
// contender subscribes before fleet-sim starts; each repeat starts a new fleet-sim.
//
// Contenders:
//   bare        a nats.c queue subscriber (the project's wrapper) that only counts messages
//   fleetflow   nats_source (core) -> keyed_last_value (memory) -> a sink that counts samples,
//               one worker (the Runtime, as `fleetflow run` builds it)
//   ff-kv       nats_source (core) -> keyed_last_value (jetstream_kv) -> window_join -> null rows:
//               fleetflow doing what the reference design does (state in a KV bucket, rows)
//   ff-tiers    ff-kv plus the rollup tiers of pipelines/tiers.json: two window_aggregate nodes
//               (1 min and 1 h) on the source's samples, each into null rows; its rate is that of
//               the slowest branch
//   reference   the reference design (../shared/seeds/000): one synchronous KV put per message
//               (key <vehicle>.<sensor>, the payload as value) in a queue subscriber, and an
//               aggregator on its own connection that every second lists all keys of the bucket
//               and gets each one, building one row per vehicle
//
// Rate: what the contender handled divided by the time from the first message it saw to the
// last; a contender that has not handled everything after --timebox seconds is cut there (the
// rest is still queued in its client) and its rate is what it handled so far. Rates are in
// samples/s (a message carries samples/messages of fleet-sim's run on average).
#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "builtin.hpp"
#include "clock.hpp"
#include "jetstream.hpp"
#include "metrics.hpp"
#include "nats_client.hpp"
#include "runtime.hpp"
#include "servers.hpp"
#include "wire.hpp"

namespace fleetflow::bench {
namespace {

struct Settings {
  FleetSimLoad load;  // 1000 vehicles for 10 s
  int repeats = 3;
  double timebox_s = 20;
  int flush_ms = 200;
  Output out;  // --scale, --csv, --summary
  std::vector<std::string> contenders = {"bare", "fleetflow", "ff-kv", "ff-tiers", "reference"};
};

struct RunResult {
  std::string contender;
  int rep = 0;
  uint64_t handled = 0;  // messages (bare, reference) or samples (fleetflow, ff-kv)
  bool in_samples = false;
  bool complete = false;  // handled everything published
  double seconds = 0;     // first message seen to last handled (or the time box)
  double samples_per_s = 0;
  double msgs_per_s = 0;
  double cpu_s = 0, server_cpu_s = 0, busy = 0;
  uint64_t kv_writes = 0, agg_ticks = 0, agg_rows = 0;
  double agg_tick_s = 0;  // reference: median duration of an aggregator tick
};

pid_t g_server_pid = 0;

void Check(natsStatus s, const std::string& what) {
  if (s != NATS_OK) throw std::runtime_error(what + ": " + natsStatus_GetText(s));
}

bool IsStatus(std::string_view subject) { return subject.ends_with(".status"); }

/// A contender between its setup and its teardown: how much it has handled so far.
struct Live {
  std::function<uint64_t()> handled;
  bool in_samples = false;
};

/// The reference design's aggregator: every second, list all keys and get each one.
class Aggregator {
 public:
  Aggregator(const std::string& url, const std::string& bucket) {
    nats::ConnectOptions o;
    o.url = url;
    o.name = "bench-reference-aggregator";
    conn_ = nats::Connection::Connect(o);
    js_ = std::make_unique<nats::JetStream>(*conn_);
    nats::BucketOptions b;
    b.name = bucket;
    kv_ = js_->EnsureBucket(b);
    Check(natsConnection_JetStream(&raw_js_, conn_->raw(), nullptr), "JetStream context");
    Check(js_KeyValue(&raw_kv_, raw_js_, bucket.c_str()), "open bucket");
    thread_ = std::thread([this] { Loop(); });
  }
  ~Aggregator() {
    Stop();
    kvStore_Destroy(raw_kv_);
    jsCtx_Destroy(raw_js_);
  }
  /// Ends the loop; the figures below may be read only after this (the loop appends to tick_s_).
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t ticks() const { return ticks_; }
  uint64_t rows() const { return rows_; }
  double median_tick_s() const { return Median(tick_s_); }

 private:
  void Loop() {
    auto next = SteadyClock::now() + std::chrono::seconds(1);
    std::vector<wire::Point> points;
    while (!stop_) {
      if (SteadyClock::now() < next) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      next += std::chrono::seconds(1);
      const auto t0 = SteadyClock::now();
      kvKeysList keys{};
      if (kvStore_Keys(&keys, raw_kv_, nullptr) != NATS_OK) continue;  // empty bucket: no keys
      std::map<std::string, int> vehicles;  // the row of each vehicle: sensors with a value
      for (int i = 0; i < keys.Count && !stop_; ++i) {
        const std::string key = keys.Keys[i];
        const auto entry = kv_->Get(key);
        if (!entry) continue;
        const std::string vehicle = key.substr(0, key.find('.'));
        points.clear();
        if (!key.ends_with(".status") &&
            wire::DecodeBatch(entry->value.data(), entry->value.size(), points) ==
                wire::DecodeError::kNone &&
            !points.empty()) {
          ++vehicles[vehicle];
        }
      }
      kvKeysList_Destroy(&keys);
      rows_ += vehicles.size();
      ++ticks_;
      tick_s_.push_back(Seconds(SteadyClock::now() - t0));
    }
  }

  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> kv_;
  jsCtx* raw_js_ = nullptr;
  kvStore* raw_kv_ = nullptr;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ticks_{0}, rows_{0};
  std::vector<double> tick_s_;
  std::thread thread_;
};

std::string PipelineJson(const std::string& contender, const std::string& url,
                         const std::string& bucket, const Settings& s) {
  std::string j = R"({"name": "bench-core", "nodes": [
  {"id": "telemetry", "type": "nats_source", "config": {"url": ")" +
                  url +
                  R"(", "delivery": "core", "subject": "vehicle.*.*", "queue_group": "bench"}},
  {"id": "last_values", "type": "keyed_last_value", "inputs": ["telemetry"], "config": {)";
  if (contender == "fleetflow") {
    j += R"("backend": "memory", "keep": 4}},
  {"id": "sink", "type": "bench_count_samples", "inputs": ["last_values"]}]})";
  } else {
    j += R"("url": ")" + url + R"(", "backend": "jetstream_kv", "bucket": ")" + bucket +
         R"(", "flush_ms": )" + std::to_string(s.flush_ms) + R"(, "keep": 4}},
  {"id": "windows", "type": "window_join", "inputs": ["last_values"], "config": {
    "every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000}},
  {"id": "sink", "type": "bench_null_rows", "inputs": ["windows"]})";
    if (contender == "ff-tiers") {
      for (const auto& [id, every] : {std::pair{"minutes", "60000"}, {"hours", "3600000"}}) {
        j += std::string(R"(,
  {"id": ")") +
             id + R"(", "type": "window_aggregate", "inputs": ["telemetry"], "config": {
    "every_ms": )" +
             every + R"(}},
  {"id": ")" +
             id + R"(_sink", "type": "bench_null_rows", "inputs": [")" + id + R"("]})";
      }
    }
    j += "]}";
  }
  return j;
}

/// Runs fleet-sim against `url` while `live` counts; returns the measurement.
RunResult Measure(const std::string& url, const Live& live, const Settings& s,
                  const testing::TempDir& dir, int rep, const std::string& name,
                  FleetSimSummary& published) {
  const int64_t now_ns = WallClock().NowNs();
  const int64_t duration_ns = static_cast<int64_t>(s.load.duration_s * 1e9);
  const int64_t start_ns = (now_ns - duration_ns - 1'000'000'000) / 1'000'000'000 * 1'000'000'000;
  const std::string log = dir.File("fleet-sim-" + name + "-" + std::to_string(rep) + ".log");
  RunResult r;
  r.contender = name;
  r.rep = rep;
  r.in_samples = live.in_samples;
  const double cpu0 = ProcessCpuSeconds();
  const double server0 = PidCpuSeconds(g_server_pid);
  const auto m0 = MachineJiffies();
  testing::Process sim(
      {s.load.program, "--nats-url", url, "--vehicles", std::to_string(s.load.vehicles),
       "--duration", std::to_string(s.load.duration_s), "--start-ns", std::to_string(start_ns),
       "--max-rate", "--quiet"},
      log);
  const auto launched = SteadyClock::now();
  std::optional<SteadyClock::time_point> first, last;
  uint64_t expected = 0;
  bool sim_done = false;
  uint64_t prev = 0;
  for (;;) {
    const uint64_t n = live.handled();
    const auto now = SteadyClock::now();
    if (n > 0 && !first) first = now;
    if (n != prev) last = now;
    prev = n;
    if (!sim_done && !sim.Running()) {
      const auto status = sim.Wait(std::chrono::milliseconds(0));
      if (status && *status != 0) {
        throw std::runtime_error("fleet-sim exited with " + std::to_string(*status) + ": " +
                                 sim.ReadLog());
      }
      if (!ParseFleetSimSummary(sim.ReadLog(), published)) {
        throw std::runtime_error("no summary from fleet-sim: " + sim.ReadLog());
      }
      expected = static_cast<uint64_t>(live.in_samples ? published.samples : published.messages);
      sim_done = true;
    }
    if (sim_done && n >= expected) {
      r.complete = true;
      break;
    }
    if (first && Seconds(now - *first) > s.timebox_s) {
      last = now;
      break;
    }
    if (!first && Seconds(now - launched) > 60) {
      throw std::runtime_error(name + ": no message within 60 s of starting fleet-sim");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (sim.Running()) sim.Stop();
  r.handled = live.handled();
  r.seconds = first && last ? Seconds(*last - *first) : 0;
  r.cpu_s = ProcessCpuSeconds() - cpu0;
  r.server_cpu_s = PidCpuSeconds(g_server_pid) - server0;
  const auto m1 = MachineJiffies();
  r.busy = m1.second > m0.second ? (m1.first - m0.first) / (m1.second - m0.second) : 0;
  if (!sim_done) {
    sim.Wait(std::chrono::seconds(10));
    ParseFleetSimSummary(sim.ReadLog(), published);
  }
  const double per_msg = published.messages > 0 ? static_cast<double>(published.samples) /
                                                      static_cast<double>(published.messages)
                                                : 0;
  if (r.seconds > 0) {
    const double rate = static_cast<double>(r.handled) / r.seconds;
    r.samples_per_s = live.in_samples ? rate : rate * per_msg;
    r.msgs_per_s = live.in_samples ? (per_msg > 0 ? rate / per_msg : 0) : rate;
  }
  return r;
}

RunResult RunContender(const std::string& name, const std::string& url, const Settings& s,
                       const testing::TempDir& dir, int rep, FleetSimSummary& published) {
  const std::string bucket = "bench_core_" + std::to_string(rep) + "_" +
                             (name == "reference" ? std::string("ref") : std::string("ff"));
  if (name == "bare") {
    nats::ConnectOptions o;
    o.url = url;
    o.name = "bench-bare";
    auto conn = nats::Connection::Connect(o);
    std::atomic<uint64_t> count{0};
    auto sub = conn->Subscribe("vehicle.*.*", "bench", [&](nats::Message&& m) {
      if (!IsStatus(m.subject())) count.fetch_add(1, std::memory_order_relaxed);
    });
    conn->Flush(5000);
    return Measure(url, {[&] { return count.load(); }, false}, s, dir, rep, name, published);
  }
  if (name == "reference") {
    nats::ConnectOptions o;
    o.url = url;
    o.name = "bench-reference-subscriber";
    auto conn = nats::Connection::Connect(o);
    nats::JetStream js(*conn);
    nats::BucketOptions b;
    b.name = bucket;
    auto kv = js.EnsureBucket(b);
    Aggregator aggregator(url, bucket);
    std::atomic<uint64_t> count{0};
    auto sub = conn->Subscribe("vehicle.*.*", "bench", [&](nats::Message&& m) {
      const std::string_view subject = m.subject();
      const std::string key(subject.substr(subject.find('.') + 1));  // <vehicle>.<sensor>
      try {
        kv->Put(key, m.text());  // one synchronous put per message, as the reference does
      } catch (const std::exception& e) {
        spdlog::warn("reference put: {}", e.what());
      }
      if (!IsStatus(subject)) count.fetch_add(1, std::memory_order_relaxed);
    });
    conn->Flush(5000);
    RunResult r = Measure(url, {[&] { return count.load(); }, false}, s, dir, rep, name, published);
    sub.reset();  // the messages still queued in the client are dropped
    aggregator.Stop();
    r.agg_ticks = aggregator.ticks();
    r.agg_rows = aggregator.rows();
    r.agg_tick_s = aggregator.median_tick_s();
    r.kv_writes = count.load();
    return r;
  }
  Probe probe;
  Registry registry;
  RegisterBuiltinOperators(registry);
  RegisterBenchSinks(registry, probe);
  const Pipeline pipeline = ParsePipelineOrThrow(PipelineJson(name, url, bucket, s), registry);
  Metrics metrics;
  WallClock clock;
  Runtime runtime(pipeline, metrics, clock);
  runtime.Start();
  // Samples keyed_last_value took in; with tiers, each window_aggregate's too (in a window, late
  // or seen before): the slowest branch's count.
  auto handled = [&] {
    uint64_t least = metrics.CounterSum("samples_accepted") + metrics.CounterSum("samples_stale") +
                     metrics.CounterSum("samples_unknown_sensor");
    std::map<std::string, uint64_t> tiers;
    for (const char* counter : {"samples_aggregated", "late_samples", "samples_duplicate"}) {
      for (const auto& [labels, value] : metrics.Values(counter)) {
        const auto op =
            std::find(labels.begin(), labels.end(),
                      std::pair<std::string, std::string>{"operator", "window_aggregate"});
        if (op == labels.end()) {
          if (std::string(counter) == "samples_duplicate") least += static_cast<uint64_t>(value);
          continue;
        }
        for (const auto& [k, node] : labels) {
          if (k == "node") tiers[node] += static_cast<uint64_t>(value);
        }
      }
    }
    for (const auto& [_, n] : tiers) least = std::min(least, n);
    return least;
  };
  RunResult r = Measure(url, {handled, true}, s, dir, rep, name, published);
  r.kv_writes = metrics.CounterSum("kv_writes");
  runtime.Stop();
  return r;
}

int Main(int argc, char** argv) {
  Settings s;
  std::string contenders = "bare,fleetflow,ff-kv,ff-tiers,reference";
  CLI::App app{
      "Core-delivery ingest: a bare queue subscriber, one fleetflow worker (memory and KV "
      "state) and the reference design (synchronous KV put per message + an aggregator listing "
      "all keys every second), all fed by fleet-sim at its maximum rate, same run."};
  AddFleetSimOptions(app, s.load, "Seconds of event time fleet-sim publishes");
  app.add_option("--repeats", s.repeats, "Runs per contender, interleaved; the median counts")
      ->capture_default_str();
  app.add_option("--timebox", s.timebox_s,
                 "Seconds after its first message a contender is cut off at")
      ->capture_default_str();
  app.add_option("--flush-ms", s.flush_ms, "ff-kv: keyed_last_value flush_ms")
      ->capture_default_str();
  app.add_option("--contenders", contenders, "Comma-separated")->capture_default_str();
  AddOutputOptions(app, s.out);
  CLI11_PARSE(app, argc, argv);
  s.contenders.clear();
  for (size_t a = 0, b; a < contenders.size(); a = b + 1) {
    b = contenders.find(',', a);
    if (b == std::string::npos) b = contenders.size();
    if (b > a) s.contenders.push_back(contenders.substr(a, b - a));
  }
  if (s.load.program.empty()) {
    std::cerr << "fleet-sim not found: build it (ninja fleet-sim) or pass --fleet-sim\n";
    return 1;
  }
  spdlog::set_level(spdlog::level::warn);
  if (!ServersInstalled(/*nats=*/true, /*postgres=*/false)) return 1;
  testing::NatsServer server;
  server.Start();
  g_server_pid = FindNatsServerPid(server.port());
  testing::TempDir dir("ff-bench-core");
  std::printf("nats-server %s; fleet-sim %s: %d vehicles, %.0f s of event time, max rate\n",
              server.url().c_str(), s.load.program.c_str(), s.load.vehicles, s.load.duration_s);

  std::map<std::string, std::vector<RunResult>> runs;
  FleetSimSummary published;
  for (int rep = 1; rep <= s.repeats; ++rep) {
    for (const auto& c : s.contenders) {
      RunResult r = RunContender(c, server.url(), s, dir, rep, published);
      std::printf(
          "  %-10s run %d: %8.3f s %s %10.0f samples/s %9.0f msgs/s, cpu %.2f s + server %.2f "
          "s, busy %.0f%%",
          c.c_str(), rep, r.seconds, r.complete ? "all " : "CUT ", r.samples_per_s, r.msgs_per_s,
          r.cpu_s, r.server_cpu_s, 100 * r.busy);
      if (r.kv_writes) std::printf(", %llu kv writes", (unsigned long long)r.kv_writes);
      if (r.agg_ticks) {
        std::printf(", aggregator %llu ticks, median %.3f s/tick", (unsigned long long)r.agg_ticks,
                    r.agg_tick_s);
      }
      std::printf("\n");
      std::fflush(stdout);
      runs[c].push_back(r);
    }
  }
  std::printf("published per run: %lld messages, %lld samples (%.2f per message)\n",
              (long long)published.messages, (long long)published.samples,
              published.messages ? (double)published.samples / (double)published.messages : 0.0);

  std::map<std::string, double> med;
  Csv csv(s.out.csv, {"scale", "contender", "rep", "complete", "seconds", "samples_per_s",
                      "msgs_per_s", "ratio_to_bare", "cpu_seconds", "server_cpu_seconds",
                      "machine_busy", "kv_writes", "aggregator_ticks", "aggregator_tick_s"});
  for (const auto& c : s.contenders) {
    std::vector<double> v;
    for (const auto& r : runs[c]) v.push_back(r.samples_per_s);
    med[c] = Median(v);
  }
  const double bare = med.count("bare") ? med["bare"] : 0;
  std::printf("\n%-10s %12s %9s %12s %10s\n", "contender", "samples/s", "vs bare", "vs reference",
              "us cpu/msg");
  for (const auto& c : s.contenders) {
    std::vector<double> cpu;
    for (const auto& r : runs[c]) {
      const double msgs = r.msgs_per_s * r.seconds;
      cpu.push_back(msgs > 0 ? 1e6 * r.cpu_s / msgs : 0);
      csv.Row(s.out.scale, c, r.rep, r.complete ? 1 : 0, r.seconds, r.samples_per_s, r.msgs_per_s,
              bare > 0 ? r.samples_per_s / bare : 0, r.cpu_s, r.server_cpu_s, r.busy, r.kv_writes,
              r.agg_ticks, r.agg_tick_s);
    }
    const double ref = med.count("reference") ? med["reference"] : 0;
    std::printf("%-10s %12.0f %8.1f%% %11.1fx %10.2f\n", c.c_str(), med[c],
                bare > 0 ? 100 * med[c] / bare : 0, ref > 0 ? med[c] / ref : 0, Median(cpu));
    csv.Row(s.out.scale, c, "median", "", "", med[c], "", bare > 0 ? med[c] / bare : 0, "", "", "",
            "", "", "");
  }
  if (med.count("fleetflow") && bare > 0) {
    const double ratio = med["fleetflow"] / bare;
    AppendSummary(
        s.out.summary,
        {"core_ingest", "samples/s", med["fleetflow"], bare, ">= 80%", ratio >= 0.8 ? "yes" : "no",
         "nats_source core -> keyed_last_value memory vs bare queue subscriber"});
  }
  if (med.count("ff-tiers") && med.count("ff-kv") && med["ff-kv"] > 0) {
    const double ratio = med["ff-tiers"] / med["ff-kv"];
    AppendSummary(s.out.summary,
                  {"rollup_tiers", "samples/s", med["ff-tiers"], med["ff-kv"], ">= 90%",
                   ratio >= 0.9 ? "yes" : "no",
                   "ff-kv plus window_aggregate 1 min and 1 h (pipelines/tiers.json) vs ff-kv"});
  }
  if (med.count("reference")) {
    for (const char* ff : {"ff-kv", "fleetflow"}) {
      if (!med.count(ff)) continue;
      AppendSummary(
          s.out.summary,
          {"reference_design", std::string("samples/s ") + ff, med[ff], med["reference"], "", "",
           std::string(ff) == "ff-kv"
               ? "fleetflow with KV state + window_join vs sync KV put per message"
               : "fleetflow with memory state vs sync KV put per message"});
    }
  }
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-core", fleetflow::bench::Main, argc, argv);
}

#include "fleet_check.hpp"

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "build_paths.hpp"
#include "jetstream.hpp"
#include "layout.hpp"
#include "nats_client.hpp"
#include "prom_text.hpp"
#include "wire.hpp"

namespace fleetflow::testing {

namespace {

struct Slot {
  std::optional<wire::Point> before, after;
};

// docs/semantics.md, "Which samples a window uses".
Slot SlotAt(const std::vector<wire::Point>& samples, int64_t t, int64_t max_gap) {
  Slot s;
  for (const auto& p : samples) {
    if (p.ts_ns <= t && t - p.ts_ns <= max_gap && (!s.before || p.ts_ns > s.before->ts_ns)) {
      s.before = p;
    }
    if (p.ts_ns > t && p.ts_ns - t <= max_gap && (!s.after || p.ts_ns < s.after->ts_ns)) {
      s.after = p;
    }
  }
  return s;
}

// docs/semantics.md, "Column values".
std::optional<double> Value(const Slot& s, int64_t t, double wire::Point::*field, bool linear) {
  if (s.before && s.after && linear) {
    const double v0 = (*s.before).*field, v1 = (*s.after).*field;
    const double f = double(t - s.before->ts_ns) / double(s.after->ts_ns - s.before->ts_ns);
    return v0 + (v1 - v0) * f;
  }
  if (s.before) return (*s.before).*field;
  if (s.after && linear) return (*s.after).*field;
  return std::nullopt;
}

std::optional<double> ParseCell(const std::string& cell) {
  if (cell.empty()) return std::nullopt;
  return std::stod(cell);
}

bool Near(std::optional<double> a, std::optional<double> b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return std::abs(*a - *b) <= 1e-9 * std::max(1.0, std::abs(*b));
}

std::string Show(std::optional<double> v) {
  if (!v) return "NULL";
  std::ostringstream o;
  o.precision(17);
  o << *v;
  return o.str();
}

}  // namespace

int PublishKnownSamples(const std::string& nats_url, const std::string& prefix, int vehicles,
                        int64_t start_ns, const std::vector<std::string>& sensors, int samples,
                        int64_t period_ns) {
  nats::ConnectOptions options;
  options.url = nats_url;
  auto conn = nats::Connection::Connect(options);
  int messages = 0;
  for (int k = 0; k < samples; ++k) {
    for (int v = 0; v < vehicles; ++v) {
      for (const std::string& sensor : sensors) {
        wire::Point p;
        p.ts_ns = start_ns + k * period_ns;
        p.seq = static_cast<uint32_t>(k);
        p.value = 10.0 * v + k;
        const auto payload = wire::EncodeBatch(std::span<const wire::Point>(&p, 1));
        conn->Publish("vehicle." + prefix + std::to_string(v) + "." + sensor, payload.data(),
                      payload.size());
        ++messages;
      }
    }
  }
  conn->Flush(5000);
  return messages;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ExpectedRows ComputeExpectedRows(const Samples& samples, int64_t every_ns, int64_t max_gap_ns) {
  ExpectedRows rows;
  for (const auto& [vehicle, by_sensor] : samples) {
    int64_t oldest = std::numeric_limits<int64_t>::max(), newest = 0;
    for (const auto& [_, points] : by_sensor) {
      for (const wire::Point& p : points) {
        oldest = std::min(oldest, p.ts_ns);
        newest = std::max(newest, p.ts_ns);
      }
    }
    // The vehicle says off after its last sample: windows up to its newest sample only.
    for (int64_t t = (oldest / every_ns) * every_ns; t <= newest; t += every_ns) {
      std::map<std::string, Slot> slots;
      bool active = false;
      for (const auto& [name, points] : by_sensor) {
        slots[name] = SlotAt(points, t, max_gap_ns);
        active = active || slots[name].before.has_value();
      }
      if (!active) continue;
      ExpectedRow r;
      r.lat = Value(slots["gps"], t, &wire::Point::lat, true);
      r.lon = Value(slots["gps"], t, &wire::Point::lon, true);
      r.speed = Value(slots["speed"], t, &wire::Point::value, true);
      r.soc = Value(slots["soc"], t, &wire::Point::value, false);
      r.torque = Value(slots["torque"], t, &wire::Point::value, true);
      rows[{vehicle, t}] = r;
    }
  }
  return rows;
}

ExpectedRows ComputeExpectedRows(const sim::FleetConfig& fleet, int64_t end_ns, int64_t every_ns,
                                 int64_t max_gap_ns) {
  return ComputeExpectedRows(FleetSamples(fleet, end_ns), every_ns, max_gap_ns);
}

Samples FleetSamples(const sim::FleetConfig& fleet, int64_t end_ns) {
  Samples samples;
  for (int v = 0; v < fleet.vehicles; ++v) {
    auto& by_sensor = samples[sim::VehicleId(fleet, v)];
    for (size_t s = 0; s < fleet.sensors.size(); ++s) {
      for (int64_t k = 0;; ++k) {
        const int64_t ts = sim::SampleTime(fleet, v, static_cast<int>(s), k);
        if (ts >= end_ns) break;
        by_sensor[fleet.sensors[s].name].push_back(
            sim::SampleAt(fleet, v, static_cast<int>(s), ts, static_cast<uint32_t>(k)));
      }
    }
  }
  return samples;
}

Samples SamplesInStream(const std::string& nats_url, const std::string& stream) {
  nats::ConnectOptions o;
  o.url = nats_url;
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  std::unique_ptr<nats::StreamReader> reader;
  // A cluster that just got a node back may take longer than the API's timeout to create the
  // reader's consumer, and a count taken then may be short of what the stream info says: read
  // only once both agree.
  for (int attempt = 1; !reader; ++attempt) {
    try {
      const auto info = js.FindStream(stream, 5000);
      reader = js.ReadStream(stream, ">", {1, 0});
      if (!info || reader->total() < info->messages) {
        if (attempt == 5) {
          throw std::runtime_error(stream + ": the reader counts " +
                                   std::to_string(reader->total()) + " messages, the stream " +
                                   std::to_string(info ? info->messages : 0));
        }
        reader.reset();
      }
    } catch (const nats::Error&) {
      if (attempt == 5) throw;
    }
  }
  std::map<std::pair<std::string, std::string>, std::map<int64_t, wire::Point>> unique;
  for (uint64_t n = 0; n < reader->total(); ++n) {
    const auto m = reader->Next(5000);
    if (!m)
      throw std::runtime_error(stream + ": message " + std::to_string(n + 1) + " of " +
                               std::to_string(reader->total()) + " did not come");
    // [...].<vehicle>.<sensor>; status messages are no Batch
    const std::string subject(m->subject());
    const size_t dot = subject.rfind('.');
    const size_t before = subject.rfind('.', dot - 1);
    std::vector<wire::Point> points;
    if (dot == std::string::npos || before == std::string::npos ||
        wire::DecodeBatch(m->data(), m->size(), points) != wire::DecodeError::kNone) {
      continue;
    }
    auto& series = unique[{subject.substr(before + 1, dot - before - 1), subject.substr(dot + 1)}];
    for (const wire::Point& p : points) series.emplace(p.ts_ns, p);
  }
  Samples samples;
  for (const auto& [key, series] : unique) {
    auto& points = samples[key.first][key.second];
    for (const auto& [_, p] : series) points.push_back(p);
  }
  return samples;
}

size_t CountSamples(const Samples& samples) {
  size_t n = 0;
  for (const auto& [_, by_sensor] : samples) {
    for (const auto& [__, points] : by_sensor) n += points.size();
  }
  return n;
}

CheckResult CheckRows(const PostgresServer& pg, const ExpectedRows& expected) {
  ExpectedTable table;
  for (const auto& [key, e] : expected) table[key] = {e.lat, e.lon, e.speed, e.soc, e.torque};
  return CheckTable(pg, "vehicle_telemetry", {"lat", "lon", "speed", "soc", "torque"}, table);
}

CheckResult CheckTable(const PostgresServer& pg, const std::string& table,
                       const std::vector<std::string>& columns, const ExpectedTable& expected) {
  CheckResult r;
  r.expected = expected.size();
  // Up to 10 lines of each kind: missing rows, unexpected rows, values.
  std::ostringstream missing, unexpected, values;
  int shown_unexpected = 0, shown_values = 0;
  std::set<std::pair<std::string, int64_t>> seen;
  std::string select = "SELECT vehicle_id, (extract(epoch FROM time) * 1000000)::bigint";
  for (const std::string& c : columns) select += ", " + c;
  const std::string rows = pg.Psql(select + " FROM " + table + " ORDER BY 1, 2");
  std::istringstream lines(rows);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, '|')) cells.push_back(cell);
    cells.resize(2 + columns.size());
    const std::pair<std::string, int64_t> key{cells[0], std::stoll(cells[1]) * 1000};
    auto it = expected.find(key);
    if (it == expected.end()) {
      ++r.unexpected;
      r.unexpected_rows.push_back(key);
      if (shown_unexpected++ < 10) unexpected << "unexpected row " << line << '\n';
      continue;
    }
    ++r.found;
    seen.insert(key);
    bool bad = false;
    for (size_t c = 0; c < columns.size(); ++c) {
      const std::optional<double> got = ParseCell(cells[2 + c]);
      std::optional<double> want;
      if (c < it->second.size()) want = it->second[c];
      if (!Near(got, want)) {
        bad = true;
        if (shown_values++ < 10) {
          values << key.first << " @" << key.second << " " << columns[c] << ": got " << Show(got)
                 << ", want " << Show(want) << '\n';
        }
      }
    }
    if (bad) {
      ++r.mismatched;
      r.mismatched_rows.push_back(key);
    }
  }
  r.missing = r.expected > r.found ? r.expected - r.found : 0;
  int shown_missing = 0;
  for (const auto& [key, _] : expected) {
    if (seen.contains(key)) continue;
    r.missing_rows.push_back(key);
    if (shown_missing++ < 10) missing << "missing row " << key.first << " @" << key.second << '\n';
  }
  r.first_problems = missing.str() + unexpected.str() + values.str();
  return r;
}

namespace {

/// Great-circle distance in metres (haversine, mean Earth radius), written here apart from the
/// engine's.
double Haversine(double lat1, double lon1, double lat2, double lon2) {
  const double rad = 3.14159265358979323846 / 180.0;
  const double a =
      std::pow(std::sin((lat2 - lat1) * rad / 2), 2) +
      std::cos(lat1 * rad) * std::cos(lat2 * rad) * std::pow(std::sin((lon2 - lon1) * rad / 2), 2);
  return 2 * 6'371'008.8 * std::asin(std::min(1.0, std::sqrt(a)));
}

}  // namespace

ExpectedTable ComputeExpectedStats(const Samples& samples, int64_t every_ns, int64_t max_gap_ns,
                                   const std::vector<std::string>& sensors,
                                   const std::vector<StatColumn>& columns) {
  struct Window {
    std::vector<wire::Point> points;
    double distance = 0;
  };
  // (vehicle, start) -> sensor -> the window's samples in time order.
  std::map<std::pair<std::string, int64_t>, std::map<std::string, Window>> windows;
  for (const auto& [vehicle, by_sensor] : samples) {
    for (const auto& sensor : sensors) {
      const auto it = by_sensor.find(sensor);
      if (it == by_sensor.end()) continue;
      const wire::Point* previous = nullptr;
      for (const wire::Point& p : it->second) {
        const int64_t start = p.ts_ns / every_ns * every_ns;
        Window& w = windows[{vehicle, start}][sensor];
        if (previous && p.ts_ns - previous->ts_ns <= max_gap_ns && p.has_position &&
            previous->has_position) {
          w.distance += Haversine(previous->lat, previous->lon, p.lat, p.lon);
        }
        w.points.push_back(p);
        previous = &p;
      }
    }
  }
  ExpectedTable out;
  for (const auto& [key, by_sensor] : windows) {
    auto& row = out[key];
    for (const StatColumn& c : columns) {
      const auto it = by_sensor.find(c.sensor);
      if (it == by_sensor.end() || it->second.points.empty()) {
        row.push_back(std::nullopt);
        continue;
      }
      const auto& ps = it->second.points;
      const auto field = [&](const wire::Point& p) {
        return c.field == "lat" ? p.lat : c.field == "lon" ? p.lon : p.value;
      };
      std::optional<double> v;
      if (c.stat == "count") {
        v = static_cast<double>(ps.size());
      } else if (c.stat == "min" || c.stat == "max" || c.stat == "mean") {
        double lo = field(ps[0]), hi = lo, sum = 0;
        for (const auto& p : ps) {
          lo = std::min(lo, field(p));
          hi = std::max(hi, field(p));
          sum += field(p);
        }
        v = c.stat == "min" ? lo : c.stat == "max" ? hi : sum / static_cast<double>(ps.size());
      } else if (c.stat == "first") {
        v = field(ps.front());
      } else if (c.stat == "last") {
        v = field(ps.back());
      } else if (c.stat == "first_time" || c.stat == "last_time") {
        const int64_t ts = (c.stat == "first_time" ? ps.front() : ps.back()).ts_ns;
        v = static_cast<double>(ts / 1000 - key.second / 1000) * 1e-6;
      } else if (c.stat == "distance") {
        v = it->second.distance;
      }
      row.push_back(v);
    }
  }
  return out;
}

bool HasEveryRow(const PostgresServer& pg, const ExpectedRows& expected) {
  return CheckRows(pg, expected).found == expected.size();
}

NatsCluster::NatsCluster(int size) {
  for (int i = 0; i < size; ++i) cluster_ports_.push_back(FreePort());
  for (int i = 0; i < size; ++i) {
    std::string routes;
    for (int j = 0; j < size; ++j) {
      if (j == i) continue;
      routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") +
                std::to_string(cluster_ports_[static_cast<size_t>(j)]);
    }
    nodes_.push_back(std::make_unique<NatsServer>(std::vector<std::string>{
        "-n", "n" + std::to_string(i), "--cluster_name", "fleetflow", "--cluster",
        "nats://127.0.0.1:" + std::to_string(cluster_ports_[static_cast<size_t>(i)]), "--routes",
        routes}));
  }
}

void NatsCluster::MapPartitions(int partitions, const std::string& prefix) {
  for (auto& n : nodes_) n->MapPartitions(partitions, prefix);
}

void NatsCluster::UseServer210() {
  for (auto& n : nodes_) n->UseServer210();
}

void NatsCluster::Start() {
  for (auto& n : nodes_) n->Start();
  std::string last_error;
  const bool ready = WaitFor(
      [&] {
        for (auto& n : nodes_) {
          if (!n->running()) continue;
          try {
            nats::ConnectOptions o;
            o.url = n->url();
            o.max_reconnect = 0;
            auto conn = nats::Connection::Connect(o);
            nats::JetStream(*conn).FindStream("_fleetflow_cluster_ready_");
          } catch (const std::exception& e) {
            last_error = n->url() + ": " + e.what();
            return false;
          }
        }
        return true;
      },
      std::chrono::seconds(30), std::chrono::milliseconds(200));
  if (!ready) throw std::runtime_error("NATS cluster: JetStream not ready in 30 s: " + last_error);
  // A meta leader needs a quorum only: a node whose routes are not up yet answers, but is no
  // peer to place a replica on. Ready once a stream with a replica on every running node can be
  // made (and is deleted again).
  const auto start = std::chrono::steady_clock::now();
  int replicas = 0;
  for (auto& n : nodes_) replicas += n->running() ? 1 : 0;
  const bool placed = WaitFor(
      [&] {
        try {
          nats::ConnectOptions o;
          o.url = url();
          o.max_reconnect = 0;
          auto conn = nats::Connection::Connect(o);
          nats::StreamOptions probe;
          probe.name = "_fleetflow_cluster_ready_";
          probe.subjects = {"_fleetflow.cluster_ready"};
          probe.storage = "memory";
          probe.replicas = replicas;
          nats::JetStream(*conn).EnsureStream(probe);
          conn->Request("$JS.API.STREAM.DELETE." + probe.name, "", 5000);
        } catch (const std::exception& e) {
          last_error = e.what();
          return false;
        }
        return true;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(200));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  if (!placed) {
    throw std::runtime_error("NATS cluster: no stream with " + std::to_string(replicas) +
                             " replicas in 60 s: " + last_error);
  }
  if (took > std::chrono::seconds(5)) {  // what to read when a test on the cluster is slow
    std::fprintf(stderr, "[fleetflow-testing] NATS cluster: %d replicas placed after %lld ms\n",
                 replicas, static_cast<long long>(took.count()));
  }
}

std::string NatsCluster::url() const {
  std::string out;
  for (const auto& n : nodes_) out += (out.empty() ? "" : ",") + n->url();
  return out;
}

namespace {

/// The stream as the servers of `url` answer for it; nullopt when none does.
std::optional<nats::StreamSummary> StreamOnCluster(const std::string& url,
                                                   const std::string& stream) {
  try {
    nats::ConnectOptions o;
    o.url = url;
    o.max_reconnect = 0;
    auto conn = nats::Connection::Connect(o);
    return nats::JetStream(*conn).FindStream(stream);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

int NatsCluster::LeaderOf(const std::string& stream) const {
  const auto info = StreamOnCluster(url(), stream);
  if (!info) return -1;
  for (int i = 0; i < size(); ++i) {
    if (info->leader == "n" + std::to_string(i)) return i;
  }
  return -1;
}

bool NatsCluster::WaitCurrent(const std::string& stream, std::chrono::milliseconds deadline) {
  std::vector<std::string> behind;
  const auto current = [&] {
    const auto info = StreamOnCluster(url(), stream);
    behind = info ? info->behind : std::vector<std::string>{};
    return info && !info->leader.empty() && info->current_replicas == info->replicas;
  };
  const auto poll = std::chrono::milliseconds(200);
  if (WaitFor(current, deadline / 2, poll)) return true;
  for (const std::string& name : behind) {
    for (int i = 0; i < size(); ++i) {
      if (name != "n" + std::to_string(i)) continue;
      std::fprintf(stderr,
                   "[fleetflow-testing] %s: the replica on n%d is still not current after %lld "
                   "ms: restarting n%d\n",
                   stream.c_str(), i, static_cast<long long>((deadline / 2).count()), i);
      node(i).Stop();
      node(i).Start();
    }
  }
  return WaitFor(current, deadline - deadline / 2, poll);
}

int NatsCluster::LeadTogether(const std::string& stream, const std::string& other) {
  for (int attempt = 0; attempt < 30; ++attempt) {
    if (!WaitCurrent(stream, std::chrono::seconds(30)) ||
        !WaitCurrent(other, std::chrono::seconds(30))) {
      return -1;
    }
    const int leader = LeaderOf(stream);
    if (leader >= 0 && LeaderOf(other) == leader) return leader;
    try {
      nats::ConnectOptions o;
      o.url = url();
      auto conn = nats::Connection::Connect(o);
      conn->Request("$JS.API.STREAM.LEADER.STEPDOWN." + other, "", 5000);
    } catch (const std::exception&) {
      // asked again after the wait for a leader
    }
  }
  return -1;
}

Engine::Engine(const std::string& pipeline, const NatsServer& nats, const PostgresServer& pg,
               const std::string& log_path)
    : Engine(
          pipeline,
          [&] {
            auto env = pg.env();
            env["NATS_URL"] = nats.url();
            // The archive of a pipeline that has one: beside the log, shared by the workers of
            // a test as a volume every worker mounts.
            env["FLEETFLOW_ARCHIVE_DIR"] =
                std::filesystem::path(log_path).parent_path().string() + "/archive";
            return env;
          }(),
          log_path) {}

Servers::Servers(const std::string& dir_prefix, int partitions, PostgresServer::Preload preload)
    : dir(dir_prefix), pg(preload) {
  if (partitions > 0) nats.MapPartitions(partitions);
  nats.Start();
  pg.Start();
}

Engine::Engine(const std::string& pipeline, const std::map<std::string, std::string>& env,
               const std::string& log_path, const std::string& program)
    : port_(FreePort()) {
  // FF_ENGINE_WRAPPER runs the engine under a tool, e.g. "/usr/bin/valgrind --error-exitcode=99".
  std::vector<std::string> argv;
  if (const char* wrapper = std::getenv("FF_ENGINE_WRAPPER")) {
    std::istringstream words(wrapper);
    for (std::string w; words >> w;) argv.push_back(w);
  }
  for (std::string a :
       {program.empty() ? ::fleetflow::testing::BinaryDir() + "/apps/fleetflow" : program,
        std::string("run"), pipeline, std::string("--metrics-port"), std::to_string(port_),
        std::string("--metrics-host"), std::string("127.0.0.1")}) {
    argv.push_back(std::move(a));
  }
  process_ = std::make_unique<Process>(argv, log_path, env);
}

bool Engine::WaitReady(std::chrono::milliseconds deadline) {
  bool ready = false;
  WaitFor([&] { return (ready = Get("/readyz").has_value()) || !process_->Running(); }, deadline);
  return ready;
}

std::optional<std::string> Engine::Get(const std::string& path) const {
  httplib::Client http("127.0.0.1", port_);
  http.set_connection_timeout(2);
  http.set_read_timeout(10);
  auto res = http.Get(path.c_str());
  if (!res || res->status != 200) return std::nullopt;
  return res->body;
}

double Engine::Metric(const std::string& name) const {
  const auto body = Get("/metrics");
  return body ? Scrape(*body, name) : -1;
}

std::vector<std::unique_ptr<Process>> StartSensors(const std::string& nats_url, const TempDir& dir,
                                                   int n, int duration_s,
                                                   const std::string& prefix) {
  std::vector<std::unique_ptr<Process>> sensors;
  for (int i = 0; i < n; ++i) {
    sensors.push_back(
        std::make_unique<Process>(std::vector<std::string>{BinaryDir() + "/firmware/fleet-sensor",
                                                           "--vehicle",
                                                           prefix + std::to_string(i),
                                                           "--seed",
                                                           "11",
                                                           "--batch-ms",
                                                           "100",
                                                           "--duration",
                                                           std::to_string(duration_s),
                                                           "--reconnect-wait-ms",
                                                           "100",
                                                           "--drain-ms",
                                                           "20000",
                                                           "--ack",
                                                           "jetstream",
                                                           "--ack-timeout-ms",
                                                           "1000",
                                                           "--nats-url",
                                                           nats_url,
                                                           "--quiet"},
                                  dir.File(prefix + std::to_string(i) + ".log")));
  }
  return sensors;
}

int64_t SensorCounter(const Process& sensor, const std::string& name) {
  std::smatch m;
  const std::string log = sensor.ReadLog();
  return std::regex_search(log, m, std::regex("\"" + name + "\":(\\d+)")) ? std::stoll(m[1]) : -1;
}

std::string StoredLate(const std::string& nats_url, const std::string& vehicle,
                       const std::string& stream) {
  nats::ConnectOptions o;
  o.url = nats_url;
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  auto reader = js.ReadStream(stream, "telemetry.*." + vehicle + ".speed", {1, 0});
  std::string out;
  const auto ms = [](int64_t ns) { return std::to_string(ns / 1'000'000 % 60'000); };
  int64_t first = -1, last = -1, stored = -1;
  const auto flush = [&] {
    if (first >= 0)
      out += vehicle + " " + ms(first) + " - " + ms(last) + " -> " + ms(stored) + "\n";
    first = -1;
  };
  for (uint64_t n = 0; n < reader->total(); ++n) {
    const auto m = reader->Next(5000);
    if (!m) break;
    std::vector<wire::Point> points;
    if (wire::DecodeBatch(m->data(), m->size(), points) != wire::DecodeError::kNone ||
        points.empty() || m->stored_ns() - points.front().ts_ns < 1'000'000'000) {
      flush();
      continue;
    }
    if (first >= 0 && m->stored_ns() / 1'000'000'000 != stored / 1'000'000'000) flush();
    if (first < 0) first = points.front().ts_ns;
    last = points.back().ts_ns;
    stored = m->stored_ns();
  }
  flush();
  return out;
}

int64_t StartNs(int lead_s) { return (NowNs() / kSecond + lead_s) * kSecond + 250'000'000; }

Fleet MakeFleet(int vehicles, int duration_s, uint64_t seed, int lead_s) {
  Fleet f;
  f.config.seed = seed;
  f.config.vehicles = vehicles;
  f.config.start_ns = StartNs(lead_s);
  f.end_ns = f.config.start_ns + duration_s * kSecond;
  return f;
}

std::vector<std::string> SimArgs(const NatsServer& nats, const Fleet& f, int duration_s) {
  return SimArgs(nats.url(), f, duration_s);
}

std::vector<std::string> SimArgs(const std::string& nats_url, const Fleet& f, int duration_s) {
  return {::fleetflow::testing::BinaryDir() + "/firmware/fleet-sim",
          "--nats-url",
          nats_url,
          "--vehicles",
          std::to_string(f.config.vehicles),
          "--seed",
          std::to_string(f.config.seed),
          "--duration",
          std::to_string(duration_s),
          "--start-ns",
          std::to_string(f.config.start_ns),
          "--quiet"};
}

SimRun RunFleetSim(const NatsServer& nats, int vehicles, int duration_s, uint64_t seed) {
  return RunFleetSim(nats.url(), vehicles, duration_s, seed);
}

SimRun RunFleetSim(const std::string& nats_url, int vehicles, int duration_s, uint64_t seed) {
  SimRun run;
  run.fleet = MakeFleet(vehicles, duration_s, seed, 2);
  run.result =
      RunCommand(SimArgs(nats_url, run.fleet, duration_s), std::chrono::seconds(duration_s + 60));
  run.expected = ComputeExpectedRows(run.fleet.config, run.fleet.end_ns);
  return run;
}

int Rows(const PostgresServer& pg) {
  const auto out = pg.TryPsql("SELECT count(*) FROM vehicle_telemetry");
  return out ? std::stoi(*out) : 0;
}

bool WaitForRows(const PostgresServer& pg, size_t rows, std::chrono::milliseconds deadline) {
  return WaitFor([&] { return Rows(pg) == static_cast<int>(rows); }, deadline);
}

void CountWrites(const PostgresServer& pg, const std::vector<std::string>& tables) {
  std::string sql =
      "CREATE TABLE row_writes (tbl text, vehicle_id text, time timestamptz, "
      "written_at timestamptz DEFAULT clock_timestamp());"
      "CREATE FUNCTION log_row_write() RETURNS trigger LANGUAGE plpgsql AS "
      "$$ BEGIN INSERT INTO row_writes VALUES (TG_ARGV[0], "
      "coalesce(to_jsonb(NEW)->>'vehicle_id', to_jsonb(NEW)->>'cell'), NEW.time); "
      "RETURN NULL; END $$;";
  // The table's name as the trigger's argument: TG_TABLE_NAME would name a partition or chunk.
  for (const std::string& table : tables) {
    sql += "CREATE TRIGGER log_row_write AFTER INSERT OR UPDATE ON " + table +
           " FOR EACH ROW EXECUTE FUNCTION log_row_write('" + table + "');";
  }
  pg.Psql(sql);
}

WriteCount Writes(const PostgresServer& pg, const std::string& table) {
  const std::string writes = "(SELECT * FROM row_writes WHERE tbl = '" + table + "') AS w";
  const std::string out = pg.Psql(
      "SELECT count(*) || ' ' || count(DISTINCT (vehicle_id, time)) || ' ' || "
      "coalesce((SELECT max(n) FROM (SELECT count(*) AS n FROM " +
      writes + " GROUP BY vehicle_id, time) AS per_row), 0) FROM " + writes);
  WriteCount w;
  std::istringstream in(out);
  in >> w.writes >> w.rows >> w.most_per_row;
  return w;
}

double Scrape(const std::string& exposition, const std::string& name) {
  double sum = 0;
  bool found = false;
  for (const prom::Sample& sample : prom::ParseText(exposition).samples) {
    if (sample.name != name) continue;
    sum += sample.value;
    found = true;
  }
  return found ? sum : -1;
}

std::string WritePipelineVariant(const std::string& base, const std::string& node_id,
                                 const std::string& overrides, const std::string& out_path) {
  std::ifstream in(base);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  rapidjson::Document doc;
  rapidjson::Document extra;
  if (doc.Parse(text.c_str()).HasParseError() || extra.Parse(overrides.c_str()).HasParseError() ||
      !extra.IsObject()) {
    throw std::runtime_error("WritePipelineVariant: bad JSON in " + base + " or overrides");
  }
  auto& alloc = doc.GetAllocator();
  bool found = false;
  for (auto& node : doc["nodes"].GetArray()) {
    if (node["id"].GetString() != node_id) continue;
    found = true;
    auto& config = node["config"];
    for (auto& m : extra.GetObject()) {
      config.RemoveMember(m.name.GetString());
      config.AddMember(rapidjson::Value(m.name, alloc), rapidjson::Value(m.value, alloc), alloc);
    }
  }
  if (!found) throw std::runtime_error("WritePipelineVariant: no node '" + node_id + "'");
  doc.RemoveMember("$schema");
  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> writer(buf);
  doc.Accept(writer);
  std::ofstream(out_path) << buf.GetString();
  return out_path;
}

std::string CheckResult::Summary() const {
  std::ostringstream o;
  o << "rows expected " << expected << ", found " << found << ", missing " << missing
    << ", unexpected " << unexpected << ", value mismatches " << mismatched;
  return o.str();
}

Tmux::Tmux(const TempDir& dir, const std::string& command)
    : socket_(dir.File("tmux.sock")), session_("fleetflow-" + std::to_string(getpid())) {
  Run({"-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "50", "-s", session_, command});
}

Tmux::~Tmux() { RunCommand({"tmux", "-S", socket_, "kill-server"}, std::chrono::seconds(10)); }

std::string Tmux::Screen() const { return Run({"capture-pane", "-p", "-t", session_}); }

std::string Tmux::Format(const std::string& format) const {
  std::string out = Run({"display-message", "-p", "-t", session_, format});
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void Tmux::Keys(const std::string& keys) const { Run({"send-keys", "-t", session_, keys}); }

std::string Tmux::Run(std::vector<std::string> args) const {
  args.insert(args.begin(), {"tmux", "-S", socket_});
  const CommandResult r = RunCommand(args, std::chrono::seconds(10));
  if (r.exit_code != 0) throw std::runtime_error("tmux " + args[3] + ": " + r.err);
  return r.out;
}

namespace {

std::vector<std::string> SplitCsv(const std::string& line) {
  std::vector<std::string> cells;
  size_t at = 0;
  while (true) {
    const size_t comma = line.find(',', at);
    cells.push_back(line.substr(at, comma == std::string::npos ? comma : comma - at));
    if (comma == std::string::npos) return cells;
    at = comma + 1;
  }
}

/// The lines of a chunk of rows (after its header) into `out`.
void CountRows(const std::string& rel, const std::string& header, std::istream& lines,
               ArchiveCount& out) {
  const std::vector<std::string> columns = SplitCsv(header);
  if (columns.size() < 3 || columns[0] != "vehicle_id" || columns[1] != "ts") {
    out.problems.push_back(rel + ": header '" + header + "'");
    return;
  }
  const std::vector<std::string> values(columns.begin() + 2, columns.end());
  if (out.row_columns.empty()) out.row_columns = values;
  if (values != out.row_columns) out.problems.push_back(rel + ": other columns '" + header + "'");
  ++out.row_chunks;
  std::string line;
  while (std::getline(lines, line)) {
    const std::vector<std::string> cells = SplitCsv(line);
    const auto ts = cells.size() == columns.size() ? archive::ParseTime(cells[1]) : std::nullopt;
    if (!ts) {
      out.problems.push_back(rel + ": line '" + line + "'");
      continue;
    }
    const std::pair<std::string, int64_t> key{cells[0], *ts};
    ++out.rows[key];
    std::vector<std::optional<double>>& v = out.row_values[key];
    v.clear();
    for (size_t c = 2; c < cells.size(); ++c) {
      v.push_back(cells[c].empty() ? std::nullopt : std::optional<double>(std::stod(cells[c])));
    }
  }
}

}  // namespace

ArchiveCount CountArchive(const std::string& root) {
  namespace fs = std::filesystem;
  ArchiveCount out;
  std::error_code ec;
  if (!fs::exists(root, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root, ec)) {
    const std::string rel = fs::relative(e.path(), root).string();
    const auto place = archive::ParseChunkPath(rel);
    if (!e.is_regular_file() || !place) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream data;
    data << in.rdbuf();
    std::string why;
    const auto csv = archive::Decompress(data.str(), &why);
    if (!csv) {
      out.problems.push_back(rel + ": " + why);
      continue;
    }
    std::istringstream lines(*csv);
    std::string line;
    std::getline(lines, line);  // the header
    if (!place->row_set.empty()) {
      out.row_bytes += data.str().size();
      CountRows(rel, line, lines, out);
      continue;
    }
    ++out.chunks;
    out.bytes += data.str().size();
    while (std::getline(lines, line)) {
      const size_t a = line.find(',');
      const size_t b = line.find(',', a + 1);
      const auto ts = a == std::string::npos || b == std::string::npos
                          ? std::nullopt
                          : archive::ParseTime(std::string_view(line).substr(a + 1, b - a - 1));
      if (!ts) {
        out.problems.push_back(rel + ": line '" + line + "'");
        continue;
      }
      ++out.samples[{line.substr(0, a), place->sensor, *ts}];
    }
  }
  return out;
}

std::string CompareArchive(const ArchiveCount& got, const Samples& expected) {
  std::vector<std::string> problems = got.problems;
  std::map<std::tuple<std::string, std::string, int64_t>, int> want;
  for (const auto& [vehicle, sensors] : expected) {
    for (const auto& [sensor, points] : sensors) {
      for (const wire::Point& p : points) ++want[{vehicle, sensor, p.ts_ns / 1000 * 1000}];
    }
  }
  const auto name = [](const auto& key) {
    std::string text = std::get<0>(key) + " " + std::get<1>(key) + " ";
    archive::AppendTime(text, std::get<2>(key));
    return text;
  };
  for (const auto& [key, n] : want) {
    const auto it = got.samples.find(key);
    const int have = it == got.samples.end() ? 0 : it->second;
    if (have != n) {
      problems.push_back(name(key) + ": " + std::to_string(have) + " times in the archive");
    }
  }
  for (const auto& [key, n] : got.samples) {
    if (want.count(key) == 0) problems.push_back(name(key) + ": in the archive, never sent");
  }
  if (problems.empty()) return "";
  std::string out = std::to_string(problems.size()) + " problems:";
  for (size_t i = 0; i < problems.size() && i < 10; ++i) out += "\n  " + problems[i];
  return out;
}

std::string CompareRowArchive(const ArchiveCount& got, const ExpectedRows& expected) {
  std::vector<std::string> problems = got.problems;
  const std::vector<std::string> columns = {"lat", "lon", "speed", "soc", "torque"};
  if (!got.rows.empty() && got.row_columns != columns) {
    problems.push_back("the rows' columns are not lat,lon,speed,soc,torque");
  }
  const auto name = [](const std::pair<std::string, int64_t>& key) {
    std::string text = key.first + " ";
    archive::AppendTime(text, key.second);
    return text;
  };
  // What the archive's rounding allows: half a unit of the last digit written.
  const auto near = [](std::optional<double> got, std::optional<double> want, bool position) {
    if (!got || !want) return got.has_value() == want.has_value();
    const double unit =
        position ? 1e-5
                 : std::pow(10.0, std::floor(std::log10(std::max(std::fabs(*want), 1e-300))) - 3);
    return std::fabs(*got - *want) <= 0.5 * unit * (1 + 1e-9) + 1e-12;
  };
  for (const auto& [key, want] : expected) {
    const auto it = got.rows.find(key);
    const int have = it == got.rows.end() ? 0 : it->second;
    if (have != 1) {
      problems.push_back(name(key) + ": " + std::to_string(have) + " times in the archive");
      continue;
    }
    const std::vector<std::optional<double>>& v = got.row_values.at(key);
    const std::optional<double> w[] = {want.lat, want.lon, want.speed, want.soc, want.torque};
    for (size_t c = 0; c < columns.size() && c < v.size(); ++c) {
      if (!near(v[c], w[c], c < 2)) {
        problems.push_back(name(key) + " " + columns[c] + ": " +
                           (v[c] ? std::to_string(*v[c]) : "empty") + " in the archive, " +
                           (w[c] ? std::to_string(*w[c]) : "none") + " expected");
      }
    }
  }
  for (const auto& [key, n] : got.rows) {
    if (expected.count(key) == 0) problems.push_back(name(key) + ": in the archive, not a row");
  }
  if (problems.empty()) return "";
  std::string out = std::to_string(problems.size()) + " problems:";
  for (size_t i = 0; i < problems.size() && i < 10; ++i) out += "\n  " + problems[i];
  return out;
}

}  // namespace fleetflow::testing

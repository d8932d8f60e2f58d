#include "tier_history.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <stdexcept>

#include "build_paths.hpp"
#include "builtin.hpp"
#include "clock.hpp"
#include "metrics.hpp"

namespace fleetflow::bench {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;

class NoEmit final : public Emitter {
 public:
  void Emit(Message) override {}
};

/// Hands what it is given to `sink`.
class Into final : public Emitter {
 public:
  explicit Into(Operator& sink) : sink_(sink) {}
  void Emit(Message m) override { sink_.Process(m, none_); }

 private:
  Operator& sink_;
  NoEmit none_;
};

/// A vehicle's signals, walking at random from a seeded start.
struct Walk {
  std::mt19937_64 rng;
  double lat, lon, speed = 10, soc = 80, torque = 50;
  explicit Walk(uint64_t seed) : rng(seed) {
    std::uniform_real_distribution<double> d(-0.05, 0.05);
    lat = 48.137 + d(rng);
    lon = 11.575 + d(rng);
  }
  wire::Point Step(int64_t ts, uint32_t seq, bool position) {
    std::normal_distribution<double> n(0, 1);
    speed = std::clamp(speed + n(rng), 0.0, 40.0);
    soc = std::max(5.0, soc - 0.0005 * speed);
    torque = std::clamp(torque + 5 * n(rng), -100.0, 300.0);
    lat += 1e-5 * speed * n(rng);
    lon += 1e-5 * speed * n(rng);
    wire::Point p;
    p.ts_ns = ts;
    p.seq = seq;
    p.value = speed;
    if (position) {
      p.lat = lat;
      p.lon = lon;
      p.has_position = true;
    }
    return p;
  }
};

/// Statistics of one window of `walk`: a sample every `every` of it.
StatsRow StatsOf(const std::string& vehicle, Walk& walk, int64_t start, int64_t length,
                 int64_t every, const std::vector<std::string>& sensors) {
  StatsRow row{vehicle, {}};
  for (size_t s = 0; s < sensors.size(); ++s) {
    SensorStats st;
    const bool gps = sensors[s] == "gps";
    wire::Point previous;
    for (int64_t t = start; t < start + length; t += every) {
      wire::Point p = walk.Step(t, static_cast<uint32_t>(t / kSecondNs), gps);
      if (sensors[s] == "soc") p.value = walk.soc;
      if (sensors[s] == "torque") p.value = walk.torque;
      if (st.count == 0) {
        st.first = p;
        st.min = st.max = p.value;
        st.min_lat = st.max_lat = p.lat;
        st.min_lon = st.max_lon = p.lon;
      }
      st.min = std::min(st.min, p.value);
      st.max = std::max(st.max, p.value);
      st.sum += p.value;
      st.min_lat = std::min(st.min_lat, p.lat);
      st.max_lat = std::max(st.max_lat, p.lat);
      st.min_lon = std::min(st.min_lon, p.lon);
      st.max_lon = std::max(st.max_lon, p.lon);
      if (gps && st.count > 0)
        st.distance_m += std::hypot(p.lat - previous.lat, p.lon - previous.lon) * 111'000;
      st.last = p;
      previous = p;
      ++st.count;
      if (gps) ++st.positions;
    }
    row.sensors.push_back(st);
  }
  return row;
}

const Registry& Builtins() {
  static const Registry registry = [] {
    Registry r;
    RegisterBuiltinOperators(r);
    return r;
  }();
  return registry;
}

}  // namespace

TierSinks::TierSinks(const std::string& conninfo) {
  const EnvLookup env = [&](const std::string& name) -> std::optional<std::string> {
    if (name == "FLEETFLOW_PG") return conninfo;
    return std::nullopt;
  };
  loaded_ = LoadPipelineFile(testing::SourceDir() + "/pipelines/tiers.json", Builtins(), env);
  if (!loaded_.ok()) throw std::runtime_error(loaded_.errors.front().Format());
}

void TierSinks::Write(const TierSpan& t, int vehicles, int64_t end) {
  const NodeDecl* node = nullptr;
  for (const auto& n : loaded_.pipeline->nodes) {
    if (n.id == t.node) node = &n;
  }
  if (node == nullptr) throw std::runtime_error("no node " + t.node + " in tiers.json");
  const std::vector<std::string> sensors = {"gps", "speed", "soc", "torque"};
  const auto names = std::make_shared<const std::vector<std::string>>(sensors);
  Metrics metrics;
  WallClock clock;
  NoEmit out;
  auto sink =
      node->info->create(OperatorContext{node->id, node->type, node->config, metrics, clock});
  // A sink of rows across vehicles gets the minutes through its fleet_aggregate nodes.
  std::vector<std::unique_ptr<Operator>> across;
  for (const auto& input : node->inputs) {
    for (const auto& n : loaded_.pipeline->nodes) {
      if (n.id != input || n.type != "fleet_aggregate") continue;
      across.push_back(n.info->create(OperatorContext{n.id, n.type, n.config, metrics, clock}));
    }
  }
  Into into(*sink);
  const auto write = [&](Message m) {
    if (across.empty()) return sink->Process(m, out);
    for (auto& a : across) a->Process(m, into);
  };
  std::vector<Walk> walks;
  for (int v = 0; v < vehicles; ++v) walks.emplace_back(20261127 + v);
  for (int64_t time = end - t.span_ns; time < end; time += t.step_ns) {
    if (t.step_ns == kSecondNs) {
      WindowBatch b;
      b.window_ns = time;
      b.sensors = names;
      for (int v = 0; v < vehicles; ++v) {
        const std::span<Slot> slots = b.AddRow("v" + std::to_string(100000 + v));
        for (size_t s = 0; s < sensors.size(); ++s) {
          const std::string& sensor = sensors[s];
          wire::Point p = walks[v].Step(time - 100'000'000, 0, sensor == "gps");
          if (sensor == "soc") p.value = walks[v].soc;
          if (sensor == "torque") p.value = walks[v].torque;
          slots[s].before = p;
        }
      }
      write(MakeMessage(std::move(b)));
    } else {
      StatsBatch b;
      b.start_ns = time;
      b.length_ns = t.step_ns;
      b.sensors = names;
      for (int v = 0; v < vehicles; ++v) {
        b.rows.push_back(StatsOf("v" + std::to_string(100000 + v), walks[v], time,
                                 std::min<int64_t>(t.step_ns, 60 * kSecondNs), t.sample_every_ns,
                                 sensors));
      }
      write(MakeMessage(std::move(b)));
    }
  }
  sink->Process(MakeMessage(Tick{clock.NowNs(), true}), out);
}

}  // namespace fleetflow::bench

#include "alarm_check.hpp"

#include <map>
#include <stdexcept>
#include <tuple>

#include "alarm.hpp"
#include "alarms/rule_engine.hpp"
#include "builtin.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "pipeline.hpp"
#include "rule.hpp"
#include "utc_time.hpp"

namespace fleetflow::testing {

std::vector<AlarmEvent> StoredAlarms(const std::string& nats_url, const std::string& stream) {
  nats::ConnectOptions o;
  o.url = nats_url;
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  std::vector<AlarmEvent> out;
  if (!js.FindStream(stream)) return out;
  auto reader = js.ReadStream(stream, ">", {1, 0});
  for (uint64_t n = 0; n < reader->total(); ++n) {
    const auto m = reader->Next(5000);
    if (!m)
      throw std::runtime_error("stream " + stream + ": message " + std::to_string(n + 1) + " of " +
                               std::to_string(reader->total()) + " not read");
    std::string why;
    const auto e =
        ParseAlarmJson(std::string_view(static_cast<const char*>(m->data()), m->size()), &why);
    if (!e) throw std::runtime_error("stream " + stream + ": not an alarm event: " + why);
    out.push_back(*e);
  }
  return out;
}

std::vector<AlarmEvent> ExpectedAlarms(const std::string& pipeline, const std::string& node,
                                       const ExpectedRows& rows, int64_t every_ns) {
  Registry registry;
  RegisterBuiltinOperators(registry);
  const LoadResult loaded = LoadPipelineFile(pipeline, registry);
  if (!loaded.ok()) throw std::runtime_error(pipeline + ": " + loaded.errors.front().Format());
  const NodeDecl* rule = nullptr;
  for (const NodeDecl& n : loaded.pipeline->nodes) {
    if (n.id == node && n.type == "rule") rule = &n;
  }
  if (rule == nullptr) throw std::runtime_error(pipeline + ": no rule node '" + node + "'");
  RuleDefinition d = RuleDefinitionOf(rule->config);
  const std::vector<RowColumn> columns = d.columns;  // interpolated as ComputeExpectedRows does
  alarms::RuleEngine engine(std::move(d.columns), std::move(d.rules));

  std::map<int64_t, std::vector<std::pair<std::string, const ExpectedRow*>>> by_window;
  for (const auto& [key, row] : rows) by_window[key.second].emplace_back(key.first, &row);
  std::vector<AlarmEvent> out;
  if (by_window.empty()) return out;
  const auto field = [](const ExpectedRow& r, const std::string& name) -> std::optional<double> {
    if (name == "lat") return r.lat;
    if (name == "lon") return r.lon;
    if (name == "speed") return r.speed;
    if (name == "soc") return r.soc;
    if (name == "torque") return r.torque;
    return std::nullopt;
  };
  const int64_t last = by_window.rbegin()->first + every_ns;
  for (int64_t t = by_window.begin()->first; t <= last; t += every_ns) {
    std::vector<const std::string*> vehicles;
    RowValues::Values values;
    const auto it = by_window.find(t);
    if (it != by_window.end()) {
      for (const auto& [vehicle, row] : it->second) {
        vehicles.push_back(&vehicle);
        auto& v = values.emplace_back();
        for (const RowColumn& c : columns) v.push_back(field(*row, c.sensor));
        engine.row_values().Derive(vehicle, v);
      }
    }
    engine.OnWindow(0, t, every_ns, vehicles, values, out);
  }
  return out;
}

std::string CompareAlarms(const std::vector<AlarmEvent>& stored,
                          const std::vector<AlarmEvent>& expected) {
  using Key = std::tuple<std::string, std::string, int64_t>;  // vehicle, rule, raised
  struct Seen {
    int raised = 0, cleared = 0;
    int64_t cleared_at = 0;
  };
  const auto tally = [](const std::vector<AlarmEvent>& events) {
    std::map<Key, Seen> m;
    for (const AlarmEvent& e : events) {
      Seen& s = m[{e.vehicle, e.rule, e.raised_ns}];
      if (e.raised) {
        ++s.raised;
      } else {
        ++s.cleared;
        s.cleared_at = e.time_ns;
      }
    }
    return m;
  };
  const auto got = tally(stored), want = tally(expected);
  std::string out;
  int problems = 0;
  const auto name = [](const Key& k) {
    return std::get<0>(k) + " " + std::get<1>(k) + " raised " + FormatUtc(std::get<2>(k));
  };
  for (const auto& [k, w] : want) {
    const auto g = got.find(k);
    std::string why;
    if (g == got.end()) {
      why = "missing";
    } else if (g->second.raised != 1 || g->second.cleared != 1) {
      why = "raised " + std::to_string(g->second.raised) + " times, cleared " +
            std::to_string(g->second.cleared) + " times";
    } else if (g->second.cleared_at != w.cleared_at) {
      why =
          "cleared at " + FormatUtc(g->second.cleared_at) + ", expected " + FormatUtc(w.cleared_at);
    }
    if (!why.empty() && ++problems <= 10) out += name(k) + ": " + why + "\n";
  }
  for (const auto& [k, g] : got) {
    if (want.count(k) == 0 && ++problems <= 10) out += name(k) + ": not expected\n";
  }
  if (problems > 0) {
    out += std::to_string(problems) + " of " + std::to_string(want.size()) + " alarms differ (" +
           std::to_string(stored.size()) + " events stored)\n";
  }
  return out;
}

}  // namespace fleetflow::testing

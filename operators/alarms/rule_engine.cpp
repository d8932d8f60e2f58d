#include "rule_engine.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

namespace fleetflow::alarms {

namespace {

constexpr double kNull = std::numeric_limits<double>::quiet_NaN();
constexpr size_t kRecords = 16;  // the values a partition's vehicles are spread over
constexpr char kProgressKey[] = "progress";
constexpr char kMagic[] = "FLR1";

std::string Number(double v) {
  if (std::isnan(v)) return "n";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return {buf, r.ptr};
}

double ParseNumber(const std::string& s) {
  if (s == "n") return kNull;
  double v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) throw std::invalid_argument(s);
  return v;
}

int64_t ParseInt(const std::string& s) {
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) throw std::invalid_argument(s);
  return v;
}

}  // namespace

const char* SeverityName(Severity s) {
  switch (s) {
    case Severity::kInfo:
      return "info";
    case Severity::kWarning:
      return "warning";
    case Severity::kCritical:
      return "critical";
  }
  return "?";
}

std::string ParseCommand(const std::string& text, Command& out) {
  out = Command{};
  if (text.empty()) return "";
  const size_t space = text.find(' ');
  out.verb = text.substr(0, space);
  out.args = space == std::string::npos ? "" : text.substr(space + 1);
  if (out.verb == "sleep" || out.verb == "wake") {
    if (!out.args.empty()) return out.verb + " takes no arguments, found '" + out.args + "'";
    return "";
  }
  if (out.verb == "rate") {
    const size_t sp = out.args.find(' ');
    double hz = 0;
    const std::string rate = sp == std::string::npos ? "" : out.args.substr(sp + 1);
    const auto r = std::from_chars(rate.data(), rate.data() + rate.size(), hz);
    if (sp == std::string::npos || sp == 0 || r.ec != std::errc() ||
        r.ptr != rate.data() + rate.size() || !(hz > 0 && hz <= 1000)) {
      return "rate takes '<sensor> <hz>' with 0 < hz <= 1000, e.g. \"rate gps 20\"; found '" +
             out.args + "'";
    }
    return "";
  }
  return "unknown command '" + out.verb +
         "': a rule may send sleep, wake or rate <sensor> <hz> (fleetctl's commands)";
}

std::vector<std::string> RuleNames(const std::vector<RowColumn>& columns) {
  std::vector<std::string> names;
  for (const RowColumn& c : columns) names.push_back(c.name);
  for (const RowColumn& c : columns) names.push_back("prev_" + c.name);
  names.push_back("dt");
  return names;
}

void CheckRules(const std::vector<RowColumn>& columns, const std::vector<RuleSpec>& rules,
                std::vector<ConfigProblem>& out) {
  for (size_t c = 0; c < columns.size(); ++c) {
    const std::string& n = columns[c].name;
    if (n == "dt" || n.rfind("prev_", 0) == 0) {
      out.push_back({"/columns/" + std::to_string(c) + "/name",
                     "'" + n +
                         "' is a name the rules give themselves (dt, prev_<column>): name "
                         "the column otherwise"});
    }
  }
  std::set<std::string> names;
  Expressions e(RuleNames(columns));
  for (size_t r = 0; r < rules.size(); ++r) {
    const RuleSpec& rule = rules[r];
    const std::string at = "/rules/" + std::to_string(r);
    if (!names.insert(rule.name).second) {
      out.push_back({at + "/name", "duplicate rule '" + rule.name + "'; rule names are unique"});
    }
    const auto expression = [&](const char* field, const std::string& text) {
      if (text.empty()) return;
      try {
        e.Check(text);
      } catch (const ExpressionError& x) {
        out.push_back({at + "/" + field, "rule '" + rule.name + "': " + x.what()});
      }
    };
    expression("when", rule.when);
    expression("clear", rule.clear);
    expression("value", rule.value);
    Command c;
    if (const std::string why = ParseCommand(rule.on_raise, c); !why.empty()) {
      out.push_back({at + "/on_raise", "rule '" + rule.name + "': " + why});
    }
    if (const std::string why = ParseCommand(rule.on_clear, c); !why.empty()) {
      out.push_back({at + "/on_clear", "rule '" + rule.name + "': " + why});
    }
  }
}

RuleEngine::RuleEngine(std::vector<RowColumn> columns, std::vector<RuleSpec> rules)
    : columns_(std::move(columns)),
      rules_(std::move(rules)),
      row_values_(columns_),
      expressions_(RuleNames(columns_)),
      active_(rules_.size(), 0) {
  for (const RuleSpec& r : rules_) {
    Compiled c;
    const auto add = [&](const std::string& text) {
      try {
        return expressions_.Add(text);
      } catch (const ExpressionError& x) {
        throw ExpressionError("rule '" + r.name + "': " + x.what(), x.position(), x.token());
      }
    };
    c.when = add(r.when);
    if (!r.clear.empty()) c.clear = add(r.clear);
    if (!r.value.empty()) c.value = add(r.value);
    for (const auto& [text, cmd] :
         {std::pair{&r.on_raise, &c.on_raise}, {&r.on_clear, &c.on_clear}}) {
      if (const std::string why = ParseCommand(*text, *cmd); !why.empty()) {
        throw std::invalid_argument("rule '" + r.name + "': " + why);
      }
    }
    c.for_ns = r.for_ms * 1'000'000;
    compiled_.push_back(std::move(c));
  }
}

RuleEngine::~RuleEngine() = default;

void RuleEngine::OnWindow(const WindowBatch& batch, std::vector<AlarmEvent>& out) {
  std::vector<const std::string*> vehicles;
  vehicles.reserve(batch.rows.size());
  for (const WindowRow& r : batch.rows) vehicles.push_back(&r.vehicle);
  OnWindow(batch.partition, batch.window_ns, batch.every_ns, vehicles, row_values_.Of(batch), out);
}

void RuleEngine::OnWindow(const StatsBatch& batch, std::vector<AlarmEvent>& out) {
  std::vector<const std::string*> vehicles;
  vehicles.reserve(batch.rows.size());
  for (const StatsRow& r : batch.rows) vehicles.push_back(&r.vehicle);
  OnWindow(batch.partition.value_or(0), batch.start_ns, batch.length_ns, vehicles,
           row_values_.Of(batch), out);
}

void RuleEngine::OnWindow(uint32_t partition, int64_t t, int64_t every,
                          const std::vector<const std::string*>& vehicles,
                          const RowValues::Values& values, std::vector<AlarmEvent>& out) {
  Partition& p = partitions_[partition];
  if (!p.last_window || t > *p.last_window) {
    // The window closes now: the partition's vehicles without a row in it stopped before it.
    std::unordered_set<std::string_view> present;
    present.reserve(vehicles.size());
    for (const std::string* v : vehicles) present.insert(*v);
    for (auto it = p.vehicles.begin(); it != p.vehicles.end();) {
      if (it->second.last_ns < t && present.count(it->first) == 0) {
        End(it->first, it->second, it->second.last_ns + every, out);
        it = p.vehicles.erase(it);
        p.changed = true;
      } else {
        ++it;
      }
    }
    p.last_window = t;
  }
  for (size_t r = 0; r < vehicles.size(); ++r) Row(p, *vehicles[r], t, every, values[r], out);
}

void RuleEngine::Row(Partition& p, const std::string& id, int64_t t, int64_t every,
                     const std::vector<std::optional<double>>& values,
                     std::vector<AlarmEvent>& out) {
  auto [it, fresh] = p.vehicles.try_emplace(id);
  Vehicle& v = it->second;
  if (fresh) {
    v.rules.resize(rules_.size());
  } else if (t <= v.last_ns) {
    ++skipped_;
    return;
  } else if (t - v.last_ns > every) {
    End(id, v, v.last_ns + every, out);
  }
  const bool follows = !fresh && !v.prev.empty() && t - v.last_ns == every;
  const size_t n = columns_.size();
  double* x = expressions_.values();
  for (size_t c = 0; c < n; ++c) {
    x[c] = values[c].value_or(kNull);
    x[n + c] = follows ? v.prev[c] : kNull;
  }
  x[2 * n] = follows ? static_cast<double>(every) / 1e9 : kNull;
  expressions_.SetVehicle(id);
  ++evaluated_;

  for (size_t r = 0; r < rules_.size(); ++r) {
    const Compiled& c = compiled_[r];
    RuleState& s = v.rules[r];
    const std::optional<bool> when = Test(c.when, r);
    if (!when) continue;
    switch (s.phase) {
      case Phase::kIdle:
      case Phase::kPending:
        if (!*when) {
          s.phase = Phase::kIdle;
          break;
        }
        if (s.phase == Phase::kIdle) {
          s.phase = Phase::kPending;
          s.since_ns = t;
        }
        if (t - s.since_ns >= c.for_ns) {
          s.phase = Phase::kActive;
          s.since_ns = t;
          ++active_[r];
          out.push_back(Event(id, r, true, t, t, true));
        }
        break;
      case Phase::kActive: {
        std::optional<bool> clear = c.clear ? Test(*c.clear, r) : std::optional<bool>(!*when);
        if (clear && *clear) {
          out.push_back(Event(id, r, false, t, s.since_ns, true));
          s = RuleState{};
          --active_[r];
        }
        break;
      }
    }
  }
  v.prev.assign(x, x + n);
  v.last_ns = t;
  p.changed = true;
}

std::optional<bool> RuleEngine::Test(size_t i, size_t rule) {
  const Evaluated e = expressions_.Evaluate(i);
  if (e.error) {
    if (on_error) on_error(rule);
    return std::nullopt;
  }
  return e.value && *e.value != 0;
}

void RuleEngine::End(const std::string& id, Vehicle& v, int64_t at, std::vector<AlarmEvent>& out) {
  for (size_t r = 0; r < v.rules.size(); ++r) {
    if (v.rules[r].phase == Phase::kActive) {
      out.push_back(Event(id, r, false, at, v.rules[r].since_ns, false));
      --active_[r];
    }
    v.rules[r] = RuleState{};
  }
  v.prev.clear();
}

AlarmEvent RuleEngine::Event(const std::string& id, size_t rule, bool raised, int64_t t,
                             int64_t raised_ns, bool with_value) {
  const RuleSpec& r = rules_[rule];
  const Compiled& c = compiled_[rule];
  AlarmEvent e;
  e.vehicle = id;
  e.rule = r.name;
  e.raised = raised;
  e.severity = SeverityName(r.severity);
  e.time_ns = t;
  e.raised_ns = raised_ns;
  if (with_value && c.value) e.value = expressions_.Evaluate(*c.value).value;
  e.message = r.message;
  const Command& cmd = raised ? c.on_raise : c.on_clear;
  e.command_verb = cmd.verb;
  e.command_args = cmd.args;
  return e;
}

std::map<std::string, std::string> RuleEngine::EncodePartition(uint32_t id) const {
  std::map<std::string, std::string> values;
  const auto it = partitions_.find(id);
  if (it == partitions_.end()) return values;
  const Partition& p = it->second;
  values[kProgressKey] =
      std::string(kMagic) + " " + (p.last_window ? std::to_string(*p.last_window) : "-");
  std::vector<std::string> records(kRecords);
  for (const auto& [vehicle, v] : p.vehicles) {
    std::string& rec = records[Fnv1a(vehicle) % kRecords];
    rec += vehicle + " " + std::to_string(v.last_ns) + " " + std::to_string(v.prev.size());
    for (size_t c = 0; c < v.prev.size(); ++c)
      rec += " " + columns_[c].name + "=" + Number(v.prev[c]);
    rec += " " + std::to_string(rules_.size());
    for (size_t r = 0; r < rules_.size(); ++r) {
      rec += " " + rules_[r].name + "=" + std::to_string(static_cast<int>(v.rules[r].phase)) + ":" +
             std::to_string(v.rules[r].since_ns);
    }
    rec += "\n";
  }
  for (size_t k = 0; k < kRecords; ++k) {
    if (!records[k].empty())
      values["r" + std::to_string(k)] = std::string(kMagic) + "\n" + records[k];
  }
  return values;
}

bool RuleEngine::DecodePartition(uint32_t id, const std::map<std::string, std::string>& values) {
  Partition& p = partitions_[id];
  Tally(p, -1);
  p = Partition{};
  bool ok = true;
  for (const auto& [key, value] : values) {
    std::istringstream in(value);
    std::string magic;
    if (!(in >> magic) || magic != kMagic) {
      ok = false;
      continue;
    }
    try {
      if (key == kProgressKey) {
        std::string w;
        in >> w;
        if (w != "-") p.last_window = ParseInt(w);
        continue;
      }
      std::string vehicle, last, field;
      size_t count = 0;
      while (in >> vehicle >> last >> count) {
        Vehicle v;
        v.last_ns = ParseInt(last);
        v.rules.resize(rules_.size());
        std::map<std::string, double> prev;
        for (size_t i = 0; i < count && in >> field; ++i) {
          const size_t eq = field.find('=');
          prev[field.substr(0, eq)] = ParseNumber(field.substr(eq + 1));
        }
        if (!prev.empty()) {
          v.prev.assign(columns_.size(), kNull);
          for (size_t c = 0; c < columns_.size(); ++c) {
            if (const auto f = prev.find(columns_[c].name); f != prev.end()) v.prev[c] = f->second;
          }
        }
        in >> count;
        for (size_t i = 0; i < count && in >> field; ++i) {
          const size_t eq = field.find('='), colon = field.find(':');
          if (eq == std::string::npos || colon == std::string::npos)
            throw std::invalid_argument(field);
          const std::string name = field.substr(0, eq);
          const int phase = static_cast<int>(ParseInt(field.substr(eq + 1, colon - eq - 1)));
          const int64_t since = ParseInt(field.substr(colon + 1));
          for (size_t r = 0; r < rules_.size(); ++r) {
            if (rules_[r].name == name && phase >= 0 && phase <= 2) {
              v.rules[r] = RuleState{static_cast<Phase>(phase), since};
            }
          }
        }
        p.vehicles[vehicle] = std::move(v);
      }
    } catch (const std::invalid_argument&) {
      ok = false;
    }
  }
  Tally(p, +1);
  return ok;
}

void RuleEngine::Drop(uint32_t p) {
  if (const auto it = partitions_.find(p); it != partitions_.end()) {
    Tally(it->second, -1);
    partitions_.erase(it);
  }
}

void RuleEngine::Tally(const Partition& p, int sign) {
  for (const auto& [_, v] : p.vehicles) {
    for (size_t r = 0; r < v.rules.size(); ++r) {
      if (v.rules[r].phase == Phase::kActive) active_[r] += sign;
    }
  }
}

bool RuleEngine::Changed(uint32_t p) const {
  const auto it = partitions_.find(p);
  return it != partitions_.end() && it->second.changed;
}

void RuleEngine::ClearChanged(uint32_t p) {
  if (const auto it = partitions_.find(p); it != partitions_.end()) it->second.changed = false;
}

}  // namespace fleetflow::alarms

#include "rule.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "alarms/alarm_actions.hpp"
#include "alarms/rule_engine.hpp"
#include "logging.hpp"
#include "nats_config.hpp"
#include "options.hpp"
#include "row_columns.hpp"
#include "state/jetstream_kv_snapshots.hpp"

namespace fleetflow {
namespace {

using alarms::AlarmActions;
using alarms::AlarmActionsOptions;
using alarms::RuleEngine;
using alarms::RuleSpec;

constexpr char kName[] = "rule";

/// The options of rule (see Spec()).
struct RuleOptions {
  enum class Backend { kMemory, kJetStreamKv };
  std::vector<RowColumn> columns;
  std::vector<RuleSpec> rules;
  std::string subject_prefix;
  std::string stream;
  int64_t stream_max_age_ms = 0;
  int64_t stream_replicas = 1;
  int64_t duplicate_window_ms = 0;
  bool notify_vehicle = true;
  std::string table;
  std::string conninfo;
  int64_t max_pending_events = 0;
  std::chrono::milliseconds drain_timeout{0};
  Backend backend = Backend::kMemory;
  std::string bucket;
  KvBucketSettings bucket_settings;
  int64_t flush_ms = 0;
  NatsClientOptions nats;
};

class Rule final : public Operator {
 public:
  Rule(const OperatorContext& ctx, const RuleOptions& o,
       std::shared_ptr<SnapshotStore> memory_snapshots)
      : node_(ctx.node_id),
        o_(o),
        engine_(o.columns, o.rules),
        actions_(Actions(o), ctx.node_id, ctx.metrics, ctx.labels()),
        evaluated_(ctx.metrics.GetCounter("rule_rows_evaluated",
                                          "Rows the rules were evaluated on.", ctx.labels())),
        skipped_(ctx.metrics.GetCounter(
            "rule_rows_skipped",
            "Rows of a window a vehicle's state already holds (emitted again): not evaluated.",
            ctx.labels())),
        corrupt_(ctx.metrics.GetCounter(
            "snapshot_values_corrupt",
            "Rule state values that could not be read on taking a partition over: skipped "
            "(their vehicles start without alarms).",
            ctx.labels())),
        dropped_(ctx.metrics.GetCounter(
            "alarm_events_dropped",
            "Alarm events given up on at shutdown: the stream or table unreachable for "
            "drain_timeout_ms.",
            ctx.labels())) {
    for (size_t r = 0; r < o.rules.size(); ++r) {
      Labels l = ctx.labels();
      l.emplace_back("rule", o.rules[r].name);
      raised_.push_back(&ctx.metrics.GetCounter("alarms_raised", "Alarms raised.", l));
      cleared_.push_back(&ctx.metrics.GetCounter("alarms_cleared", "Alarms cleared.", l));
      active_.push_back(&ctx.metrics.GetGauge(
          "alarms_active", "Alarms active now among the vehicles this worker owns.", l));
      errors_.push_back(&ctx.metrics.GetCounter(
          "rule_expression_errors",
          "Rows on which an expression of the rule gave no finite number from finite inputs "
          "(x / 0): the rule's state did not change.",
          l));
    }
    engine_.on_error = [this](size_t r) { errors_[r]->Inc(); };
    engine_.row_values().CountErrorsIn(ctx.metrics, ctx.labels());
    snapshots_ = o.backend == RuleOptions::Backend::kJetStreamKv
                     ? OpenKvSnapshots(ctx, o.nats, o.bucket, o.bucket_settings)
                     : std::move(memory_snapshots);
  }

  void Process(const Message& in, Emitter& out) override {
    std::vector<AlarmEvent> events;
    if (const auto* w = std::get_if<WindowBatch>(in.get())) {
      Restored(w->partition);
      engine_.OnWindow(*w, events);
    } else if (const auto* s = std::get_if<StatsBatch>(in.get())) {
      Restored(s->partition.value_or(0));
      engine_.OnWindow(*s, events);
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      OnTick(*t);
      out.Emit(in);
      return;
    } else if (const auto* e = std::get_if<PartitionEvent>(in.get())) {
      OnPartitionEvent(*e);
      out.Emit(in);
      return;
    } else {
      return;
    }
    Counted();
    if (events.empty()) return;
    for (const AlarmEvent& e : events) {
      const size_t r = RuleIndex(e.rule);
      (e.raised ? raised_ : cleared_)[r]->Inc();
    }
    actions_.Add(std::move(events));
    actions_.Flush(/*force=*/false);
    // Backpressure: the rows wait while too many events do.
    while (actions_.pending() > static_cast<size_t>(o_.max_pending_events) &&
           !actions_.Flush(/*force=*/true)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    UpdateActive();
  }

  bool Ready() const override { return !snapshots_ || snapshots_->Ready(); }

 private:
  static AlarmActionsOptions Actions(const RuleOptions& o) {
    AlarmActionsOptions a;
    a.nats = o.nats;
    a.subject_prefix = o.subject_prefix;
    a.stream = o.stream;
    a.stream_max_age_ms = o.stream_max_age_ms;
    a.stream_replicas = o.stream_replicas;
    a.duplicate_window_ms = o.duplicate_window_ms;
    a.notify_vehicle = o.notify_vehicle;
    a.conninfo = o.conninfo;
    a.table = o.table;
    return a;
  }

  size_t RuleIndex(const std::string& name) const {
    for (size_t r = 0; r < o_.rules.size(); ++r) {
      if (o_.rules[r].name == name) return r;
    }
    return 0;
  }

  void Counted() {
    evaluated_.Inc(engine_.rows_evaluated() - evaluated_seen_);
    skipped_.Inc(engine_.rows_skipped() - skipped_seen_);
    evaluated_seen_ = engine_.rows_evaluated();
    skipped_seen_ = engine_.rows_skipped();
  }

  void UpdateActive() {
    const std::vector<int64_t>& n = engine_.ActiveByRule();
    for (size_t r = 0; r < n.size(); ++r) active_[r]->Set(static_cast<double>(n[r]));
  }

  /// A partition seen for the first time without an assignment (an unpartitioned source):
  /// restored from the store once.
  void Restored(uint32_t p) {
    if (snapshots_ && held_.insert(p).second) Restore(p);
  }

  void Restore(uint32_t p) {
    const SnapshotStore::Snapshot snapshot = snapshots_->Restore(p);
    if (!engine_.DecodePartition(p, snapshot.values)) {
      corrupt_.Inc();
      spdlog::warn("rule '{}': part of partition {}'s state could not be read: skipped", node_, p);
    }
    UpdateActive();
  }

  /// Waits until every event is stored, at most drain_timeout_ms; false when some were not.
  bool FlushAll() {
    const auto until = std::chrono::steady_clock::now() + o_.drain_timeout;
    while (!actions_.Flush(/*force=*/true)) {
      if (std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return true;
  }

  void Save(uint32_t p) {
    snapshots_->Save(p, engine_.EncodePartition(p), 0);
    engine_.ClearChanged(p);
  }

  void OnTick(const Tick& t) {
    if (t.drain) {
      if (!FlushAll()) {
        spdlog::error("rule '{}': {} alarm events could not be stored before shutdown", node_,
                      actions_.pending());
        dropped_.Inc(actions_.pending());
        return;  // the state stays where the stored events are: the next start re-evaluates
      }
    } else {
      actions_.Flush(/*force=*/false);
    }
    UpdateActive();
    if (!snapshots_ || actions_.pending() > 0) return;  // the state never runs ahead of events
    if (!t.drain && t.now_ns < next_save_ns_) return;
    next_save_ns_ = t.now_ns + o_.flush_ms * 1'000'000;
    for (const uint32_t p : held_) {
      if (engine_.Changed(p)) Save(p);
    }
    if (t.drain && !snapshots_->Sync()) {
      spdlog::warn("rule '{}': rule state not stored at the drain", node_);
    }
  }

  /// A revoked partition's events are stored, then its state, before it moves on; an assigned
  /// one restores the state its previous owner stored.
  void OnPartitionEvent(const PartitionEvent& e) {
    if (!snapshots_) return;
    if (e.kind == PartitionEvent::Kind::kRevoked) {
      if (held_.erase(e.partition) == 0) return;
      if (!FlushAll()) {
        spdlog::error(
            "rule '{}': partition {} moves on with {} alarm events not stored; its state stays "
            "before them, so its next owner evaluates them again",
            node_, e.partition, actions_.pending());
      } else {
        Save(e.partition);
        if (!snapshots_->Sync()) {
          spdlog::warn(
              "rule '{}': the state of partition {} was not stored; its next owner "
              "restores the one before",
              node_, e.partition);
        }
      }
      snapshots_->Forget(e.partition);
      engine_.Drop(e.partition);
      UpdateActive();
      return;
    }
    held_.insert(e.partition);
    Restore(e.partition);
  }

  const std::string node_;
  const RuleOptions o_;
  RuleEngine engine_;
  AlarmActions actions_;
  Counter& evaluated_;
  Counter& skipped_;
  Counter& corrupt_;
  Counter& dropped_;
  std::vector<Counter*> raised_, cleared_, errors_;
  std::vector<Gauge*> active_;
  uint64_t evaluated_seen_ = 0, skipped_seen_ = 0;
  std::shared_ptr<SnapshotStore> snapshots_;  // null: nothing kept
  std::set<uint32_t> held_;                   // partitions whose state is here
  int64_t next_save_ns_ = std::numeric_limits<int64_t>::min();
};

const OptionsSpec<RuleOptions>& Spec() {
  using O = RuleOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    OptionsSpec<RowColumn> columns;
    columns
        .String("name",
                "The column's name in the rules' expressions: 1 to 63 lower-case letters, digits "
                "and _, starting with a letter or _; not dt nor prev_<...>.",
                &RowColumn::name)
        .Required()
        .Pattern("^[a-z_][a-z0-9_]{0,62}$",
                 "1 to 63 lower-case letters, digits and _, starting with a letter or _")
        .Example("\"speed\"");
    DeclareRowColumnFields(columns, /*statistics=*/true, "NULL");

    OptionsSpec<RuleSpec> rules;
    rules
        .String("name",
                "The rule's name: the last token of its alarms' subject and its label in the "
                "metrics. 1 to 63 lower-case letters, digits and _, starting with a letter.",
                &RuleSpec::name)
        .Required()
        .Pattern("^[a-z][a-z0-9_]{0,62}$",
                 "1 to 63 lower-case letters, digits and _, starting with a letter")
        .Example("\"overspeed\"");
    rules
        .String("when",
                "The condition that raises the alarm: an expression over the columns, "
                "prev_<column> (the column in the vehicle's row one window before; NULL when it "
                "had none) and dt (seconds since that row). True when not 0; a comparison with "
                "NULL is false.",
                &RuleSpec::when)
        .Required()
        .MinLength(1)
        .Example("\"speed > 38.9\"");
    rules
        .String("clear",
                "The condition that clears the active alarm (hysteresis: e.g. raised below 15 "
                "%, cleared above 20 %). Empty: cleared as soon as `when` is false.",
                &RuleSpec::clear)
        .Default("")
        .Example("\"soc > 20\"");
    rules
        .Integer("for_ms",
                 "How long `when` must hold before the alarm is raised: raised at the first row "
                 "at least this long after the first row it held on (0: at once). A row on which "
                 "it does not hold, or a vehicle whose rows stop, starts it over.",
                 &RuleSpec::for_ms)
        .Default(int64_t{0})
        .Min(0)
        .Max(86'400'000);
    rules
        .Enum("severity", "The alarm's severity, in its events and its table row.",
              &RuleSpec::severity,
              {{"info", alarms::Severity::kInfo},
               {"warning", alarms::Severity::kWarning},
               {"critical", alarms::Severity::kCritical}})
        .Default("warning");
    rules
        .String("value",
                "An expression whose value the events carry (at the raise, at the clear), e.g. "
                "the column the rule watches. Empty: none.",
                &RuleSpec::value)
        .Default("")
        .Example("\"speed\"");
    rules.String("message", "Words for people, carried by the events.", &RuleSpec::message)
        .Default("");
    rules
        .String("on_raise",
                "A command to the vehicle when the alarm is raised, as fleetctl sends it: "
                "\"rate <sensor> <hz>\", \"sleep\" or \"wake\". Empty: none.",
                &RuleSpec::on_raise)
        .Default("")
        .Example("\"rate gps 20\"");
    rules
        .String("on_clear",
                "A command to the vehicle when the alarm clears (e.g. the rate back). Empty: "
                "none.",
                &RuleSpec::on_clear)
        .Default("")
        .Example("\"rate gps 10\"");

    c.ObjectArray("columns",
                  "The row's columns the rules see, computed as timescale_sink computes its "
                  "columns: a sensor's field interpolated at the window time (behind "
                  "window_join), a statistic (behind window_aggregate), or an expression.",
                  &O::columns, columns)
        .MinItems(1)
        .DefaultJson(
            R"([{"name":"lat","sensor":"gps","field":"lat","interpolation":"linear","stat":"none","expression":""},)"
            R"({"name":"lon","sensor":"gps","field":"lon","interpolation":"linear","stat":"none","expression":""},)"
            R"({"name":"speed","sensor":"speed","field":"value","interpolation":"linear","stat":"none","expression":""},)"
            R"({"name":"soc","sensor":"soc","field":"value","interpolation":"previous","stat":"none","expression":""},)"
            R"({"name":"torque","sensor":"torque","field":"value","interpolation":"linear","stat":"none","expression":""}])");
    c.ObjectArray("rules", "The rules, each evaluated on every row.", &O::rules, rules)
        .Required()
        .MinItems(1);
    c.String("subject_prefix",
             "Alarm events go to <subject_prefix>.<vehicle>.<rule> (schemas/alarm.schema.json).",
             &O::subject_prefix)
        .Default("alarm")
        .Pattern("^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$", "NATS subject tokens joined by .");
    c.String("stream",
             "The JetStream stream that stores the events (on <subject_prefix>.>, created when "
             "missing): nothing lost, each event stored once. Empty: core NATS, at most once.",
             &O::stream)
        .Default("ALARMS")
        .Pattern("^([A-Za-z0-9_-]{1,64})?$", "empty, or 1 to 64 of A-Z a-z 0-9 _ -");
    c.Integer("stream_max_age_ms", "How long the stream keeps events (0: for ever).",
              &O::stream_max_age_ms)
        .Default(int64_t{0})
        .Min(0);
    c.Integer("stream_replicas", "Replicas of the stream when it is created (3 on a cluster).",
              &O::stream_replicas)
        .Default(int64_t{1})
        .Min(1)
        .Max(5);
    c.Integer("duplicate_window_ms",
              "How long the stream drops an event it stored already (by its Nats-Msg-Id): "
              "longer than a worker may be down before its partitions are evaluated again.",
              &O::duplicate_window_ms)
        .Default(int64_t{3'600'000})
        .Min(1000);
    c.Boolean("notify_vehicle",
              "Also send each event to the vehicle, on vehicle.<id>.cmd.alarm (core NATS: a "
              "vehicle offline misses it).",
              &O::notify_vehicle)
        .Default(true);
    c.String("table",
             "A PostgreSQL table of the alarms, created when missing: vehicle_id, rule, raised "
             "(the key), cleared (NULL while active), severity, value, clear_value, message; "
             "for Grafana annotations. Empty: none.",
             &O::table)
        .Default("")
        .Pattern("^([a-z_][a-z0-9_]{0,62})?$", "empty, or a valid identifier");
    c.String("conninfo",
             "libpq connection string of the table's database (as timescale_sink's); empty: "
             "libpq's environment.",
             &O::conninfo)
        .Default("");
    c.Integer("max_pending_events",
              "Events held while the stream or the table cannot take them; beyond, the node "
              "holds its rows back (the graph slows down, nothing is lost).",
              &O::max_pending_events)
        .Default(int64_t{10000})
        .Min(1);
    c.Integer("drain_timeout_ms",
              "At shutdown, how long to keep trying to store the events held; those given up "
              "on are counted in alarm_events_dropped (the state is not stored past them, so "
              "the next start evaluates them again).",
              &O::drain_timeout)
        .Default(int64_t{30000})
        .Min(0);
    c.Enum("backend",
           "Where the vehicles' rule state is kept: memory (this process only) or jetstream_kv "
           "(a snapshot per partition in a Key/Value bucket, keys agg.<node>.<partition>.*, "
           "restored by the worker that takes the partition over). Behind a partitioned "
           "source: jetstream_kv.",
           &O::backend,
           {{"memory", O::Backend::kMemory}, {"jetstream_kv", O::Backend::kJetStreamKv}})
        .Default("memory");
    c.String("bucket", "jetstream_kv: the bucket, created when missing.", &O::bucket)
        .Default("telemetry");
    c.Include(&O::bucket_settings, KvBucketSpec());
    c.Integer("flush_ms",
              "jetstream_kv: each partition whose state changed stores it every flush_ms, once "
              "its events are stored; a revoked partition and a drain store theirs at once.",
              &O::flush_ms)
        .Default(int64_t{1000})
        .Min(100)
        .Max(600'000);
    c.Include(&O::nats, NatsClientSpec());
    c.Rule(
        "Column names are unique, each column has a sensor or an expression, rule names are "
        "unique, every expression compiles over the names it may use and every command "
        "parses.",
        [](const O& o, std::vector<ConfigProblem>& out) {
          std::set<std::string> names;
          for (size_t i = 0; i < o.columns.size(); ++i) {
            if (!names.insert(o.columns[i].name).second) {
              out.push_back({"/columns/" + std::to_string(i) + "/name",
                             "duplicate column '" + o.columns[i].name + "'"});
            }
          }
          CheckRowColumns(o.columns, out);
          alarms::CheckRules(o.columns, o.rules, out);
        });
  });
}

std::vector<UpstreamProblem> CheckUpstream(const Config& self, const std::string& self_id,
                                           const std::vector<UpstreamNode>& upstream) {
  const RuleOptions o = Spec().Parse(self);
  std::vector<UpstreamProblem> problems = CheckColumnsFitRows(o.columns, self_id, upstream);
  for (const UpstreamNode& n : upstream) {
    if (n.facts.partitioned && o.backend != RuleOptions::Backend::kJetStreamKv) {
      problems.push_back(
          {n.id, "/partitions",
           "rule '" + self_id +
               "' keeps its vehicles' alarms in memory: a partition moving to another worker "
               "would raise them again or never clear them; set its backend to jetstream_kv "
               "(pipelines/jetstream-alarms.json), or read an unpartitioned source"});
    }
  }
  return problems;
}

std::vector<ConnectFinding> CheckConnect(const Config& config) {
  const RuleOptions o = Spec().Parse(config);
  if (o.backend != RuleOptions::Backend::kJetStreamKv) return {};
  return CheckStateBucket(o.nats, o.bucket, o.bucket_settings, "rule state");
}

}  // namespace

RuleDefinition RuleDefinitionOf(const Config& config) {
  RuleOptions o = Spec().Parse(config);
  return {std::move(o.columns), std::move(o.rules)};
}

void RegisterRule(Registry& registry, std::shared_ptr<SnapshotStore> memory_snapshots) {
  OperatorInfo info;
  info.name = kName;
  info.summary =
      "Alarms over the rows: conditions with a duration and hysteresis, raised and cleared once "
      "per vehicle (partition state), to a JetStream stream, a table and the vehicle, with "
      "commands to it.";
  info.input = PortKind::kRows;
  info.output = PortKind::kNone;
  info.config = Spec().config();
  info.create = [memory_snapshots](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<Rule>(ctx, Spec().Parse(ctx.config), memory_snapshots);
  };
  info.check_upstream = CheckUpstream;
  info.check_connect = CheckConnect;
  registry.Add(std::move(info));
}

}  // namespace fleetflow

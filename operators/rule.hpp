#pragma once
/// rule: alarms over the rows of a window_join or a window_aggregate (docs/alarms.md). Each rule
/// has a condition over the row's columns (expressions: engine/expression.hpp), an optional
/// duration it must hold (for_ms), an optional clear condition (hysteresis), a severity, a value
/// and commands to the vehicle; RuleEngine (operators/alarms/rule_engine.hpp) decides when an
/// alarm of a vehicle is raised and cleared. Each event goes to the alarm stream, the alarm
/// table and the vehicle (AlarmActions, operators/alarms/alarm_actions.hpp).
///
/// The vehicles' rule state is partition state: with backend jetstream_kv a snapshot per
/// partition in a Key/Value bucket, stored only once the events before it are stored (so a
/// worker killed at any point leaves a state its next owner re-evaluates from, and the stream
/// drops the events evaluated twice by their Nats-Msg-Id); a partition revoked stores its state
/// before it moves. An alarm is raised once and cleared once, by whichever worker owns the
/// vehicle then.

#include <memory>

#include "alarms/rule_engine.hpp"
#include "registry.hpp"
#include "state_store.hpp"

namespace fleetflow {

/// A rule node's columns and rules, from its validated config: what `fleetflow test` evaluates
/// with a RuleEngine of its own.
struct RuleDefinition {
  std::vector<RowColumn> columns;
  std::vector<alarms::RuleSpec> rules;
};
RuleDefinition RuleDefinitionOf(const Config& config);

/// `memory_snapshots`: where nodes of the memory backend keep their partitions' state (unit
/// tests: workers sharing one store hand partitions over through it); none: nothing is kept.
void RegisterRule(Registry& registry, std::shared_ptr<SnapshotStore> memory_snapshots = nullptr);

}  // namespace fleetflow

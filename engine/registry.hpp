#pragma once
/// The operator registry: the engine knows operators only through it. Each operator provides
/// one `Register<Name>(Registry&)` function; operators/builtin.cpp lists them all.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "operator.hpp"

namespace fleetflow {

/// What an operator's port carries; see message.hpp.
enum class PortKind { kNone, kSamples, kRows };

std::string_view ToString(PortKind k);

/// What a node states about itself, from its own options, for the checks of the nodes after it
/// (OperatorInfo::facts, OperatorInfo::check_upstream): an operator relies on these, never on
/// another operator's config. Only what some check needs; the defaults state nothing.
struct NodeFacts {
  /// A source that acknowledges a message only once its samples are in state, and whose stream
  /// is the changelog a partition's next owner re-reads (nats_source, delivery jetstream).
  bool at_least_once = false;
  /// With at_least_once: the Key/Value bucket in which the source reads the partitions'
  /// checkpoints (nats_source's state_bucket); nullopt: it names none.
  std::optional<std::string> state_bucket;
  /// A source whose vehicles are split into partitions that move between workers.
  bool partitioned = false;
  /// With partitioned: into how many.
  uint32_t partitions = 0;
  /// Keyed state from which a partition's next owner restores its windows: how far back it
  /// keeps samples, in ms (keyed_last_value's history_ms); nullopt: not such a state.
  std::optional<int64_t> state_history_ms;
  /// What the rows a node emits hold: the samples bracketing a window time (window_join), a
  /// window's statistics (window_aggregate), or partials of rows across vehicles read back from
  /// the workers that made them (fleet_source: a merge completes them); kUnknown: no rows, or
  /// not said.
  enum class Rows { kUnknown, kSlots, kStatistics, kPartials };
  Rows rows = Rows::kUnknown;
  /// Rows across vehicles (fleet_aggregate): behind a partitioned source, each partition's are
  /// partials of the whole, for fleet_publish, not rows to write.
  bool across_vehicles = false;
  /// A node that keeps its partitions' state durably with a checkpoint of its own per partition
  /// (keyed_last_value, window_aggregate with backend jetstream_kv), in the bucket its source
  /// names in state_bucket (its check_upstream sees to that): the key of partition `p`'s
  /// checkpoint there, for node `node`. The source re-reads a partition's changelog from the
  /// oldest checkpoint of the nodes after it. Empty: keeps none.
  std::function<std::string(std::string_view node, uint32_t p)> checkpoint_key;
  /// The only sensors whose samples the node passes on (a source's or keyed_last_value's
  /// sensors), or whose columns its rows hold (window_join, window_aggregate); nullopt: every
  /// sensor it receives. A node that emits rows without saying (fleet_aggregate: columns of its
  /// own) leaves the columns behind it unchecked. Lets a row column's sensor be checked
  /// against what reaches it (CheckColumnsFitRows).
  std::optional<std::vector<std::string>> sensors;
  /// A source: the sensors whose samples carry a position rather than a value (the wire
  /// input's position_sensors); nullopt: not said.
  std::optional<std::vector<std::string>> position_sensors;
};

/// A node of a pipeline as another operator's check sees it (see OperatorInfo::check_upstream).
struct UpstreamNode {
  std::string id;
  std::string type;
  NodeFacts facts;
  std::vector<std::string> inputs;  ///< ids of the nodes it reads from (upstream of it too)
};

/// A problem that check_upstream finds in an upstream node's config.
struct UpstreamProblem {
  std::string node;     // id of the node whose field is wrong
  std::string pointer;  // in that node's config, e.g. /history_ms
  std::string message;
};

/// What `fleetflow validate --connect` found about one thing a node uses (a server, a stream,
/// a bucket, a table, a permission).
struct ConnectFinding {
  enum class Level {
    kOk,       // there, and usable as configured
    kNote,     // not there yet, and the node creates it at start (allowed, as far as one can tell)
    kProblem,  // missing, unreachable or refused: the node would fail or lose data
  };
  Level level = Level::kOk;
  std::string message;
};

struct OperatorInfo {
  std::string name;                   // the "type" of a pipeline node
  std::string summary;                // one line for docs and --help
  PortKind input = PortKind::kNone;   // kNone: a source
  PortKind output = PortKind::kNone;  // kNone: a sink
  ConfigSpec config;
  std::function<std::unique_ptr<Operator>(const OperatorContext&)> create;
  /// Optional: the facts a node of this operator states, from its config (valid, defaults
  /// applied), for the check_upstream of the nodes after it. Without it a node states nothing.
  std::function<NodeFacts(const Config& config)> facts{};
  /// Optional: rules between this node's config and the facts of the nodes it reads from,
  /// directly or not (`upstream`, nearest last), that one node's spec cannot state. Called once
  /// the graph is sound; each problem is reported at the upstream field with its JSON pointer.
  std::function<std::vector<UpstreamProblem>(const Config& self, const std::string& self_id,
                                             const std::vector<UpstreamNode>& upstream)>
      check_upstream{};
  /// Optional: connects to what the node's config names (servers, streams, buckets, tables)
  /// and reports what is there, what the node would create at start and what is missing or
  /// refused, without changing anything (`fleetflow validate --connect`). Never throws.
  std::function<std::vector<ConnectFinding>(const Config& config)> check_connect{};
};

class Registry {
 public:
  /// Throws std::logic_error on a duplicate or empty name, or a config spec with a field that is
  /// neither required nor has a default (programming errors).
  void Add(OperatorInfo info);
  const OperatorInfo* Find(std::string_view name) const;
  const std::vector<OperatorInfo>& all() const { return ops_; }
  std::vector<std::string> Names() const;

 private:
  std::vector<OperatorInfo> ops_;
};

}  // namespace fleetflow

#pragma once
/// The operator registry: the engine knows operators only through it. Each operator provides
/// one `Register<Name>(Registry&)` function; operators/builtin.cpp lists them all.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "operator.hpp"

namespace fleetflow {

/// What an operator's port carries; see message.hpp.
enum class PortKind { kNone, kSamples, kRows };

std::string_view ToString(PortKind k);

/// A node of a pipeline as another operator's check sees it (see OperatorInfo::check_upstream).
struct UpstreamNode {
  std::string id;
  std::string type;
  const Config& config;
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
  /// Optional: rules between this node's config and the nodes it reads from, directly or not
  /// (`upstream`, nearest last), that one node's spec cannot state. Called once the graph is
  /// sound; each problem is reported at the upstream field with its JSON pointer.
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

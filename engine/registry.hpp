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

struct OperatorInfo {
  std::string name;                   // the "type" of a pipeline node
  std::string summary;                // one line for docs and --help
  PortKind input = PortKind::kNone;   // kNone: a source
  PortKind output = PortKind::kNone;  // kNone: a sink
  ConfigSpec config;
  std::function<std::unique_ptr<Operator>(const OperatorContext&)> create;
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

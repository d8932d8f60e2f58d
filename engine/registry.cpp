#include "registry.hpp"

#include <stdexcept>

namespace fleetflow {

std::string_view ToString(PortKind k) {
  switch (k) {
    case PortKind::kNone:
      return "none";
    case PortKind::kSamples:
      return "samples";
    case PortKind::kRows:
      return "rows";
  }
  return "?";
}

void Registry::Add(OperatorInfo info) {
  if (info.name.empty() || !info.create) {
    throw std::logic_error("operator registry: an operator needs a name and a factory");
  }
  if (Find(info.name) != nullptr) {
    throw std::logic_error("operator registry: operator '" + info.name + "' registered twice");
  }
  info.config.CheckComplete(info.name);
  ops_.push_back(std::move(info));
}

const OperatorInfo* Registry::Find(std::string_view name) const {
  for (const auto& op : ops_) {
    if (op.name == name) return &op;
  }
  return nullptr;
}

std::vector<std::string> Registry::Names() const {
  std::vector<std::string> out;
  for (const auto& op : ops_) out.push_back(op.name);
  return out;
}

}  // namespace fleetflow

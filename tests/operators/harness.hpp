#pragma once
/// In-memory harness for operator unit tests: build one operator from its registered spec and a
/// JSON config (validated and defaulted exactly as in a pipeline file), feed it messages,
/// collect what it emits.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "builtin.hpp"
#include "clock.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "registry.hpp"

namespace fleetflow::testing {

class ManualClock final : public Clock {
 public:
  int64_t NowNs() const override { return now_ns; }
  int64_t now_ns = 0;
};

class CollectingEmitter final : public Emitter {
 public:
  void Emit(Message m) override { messages.push_back(std::move(m)); }
  template <typename T>
  std::vector<const T*> Of() const {
    std::vector<const T*> out;
    for (const auto& m : messages) {
      if (const T* t = std::get_if<T>(m.get())) out.push_back(t);
    }
    return out;
  }
  std::vector<Message> messages;
};

/// Validates `config_json` against the operator's spec (as a pipeline file would) and builds it.
class OperatorHarness {
 public:
  OperatorHarness(const std::string& type, const std::string& config_json) {
    RegisterBuiltinOperators(registry_);
    const OperatorInfo* info = registry_.Find(type);
    if (info == nullptr) throw std::invalid_argument("unknown operator " + type);
    Config config;
    const auto errors = ParseOperatorConfig(*info, config_json, config);
    if (!errors.empty()) throw std::invalid_argument(errors.front().Format());
    op_ = info->create(OperatorContext{"op", type, config, metrics, clock});
  }

  /// Feeds one message; returns what the operator emitted for it.
  std::vector<Message> Feed(const Message& m) {
    CollectingEmitter out;
    op_->Process(m, out);
    return out.messages;
  }
  std::vector<Message> Feed(Body body) {
    return Feed(std::make_shared<const Body>(std::move(body)));
  }
  /// Sends a Tick at `now_ns` (and moves the clock there).
  std::vector<Message> TickAt(int64_t now_ns, bool drain = false) {
    clock.now_ns = now_ns;
    return Feed(Tick{now_ns, drain});
  }

  Operator& op() { return *op_; }
  uint64_t Counter(const std::string& name) const { return metrics.CounterSum(name); }

  Metrics metrics;
  ManualClock clock;

 private:
  Registry registry_;
  std::unique_ptr<Operator> op_;
};

/// The messages of type T in `ms`; each result keeps its message alive, so
/// `for (auto b : Only<WindowBatch>(h.TickAt(t)))` is safe.
template <typename T>
std::vector<std::shared_ptr<const T>> Only(const std::vector<Message>& ms) {
  std::vector<std::shared_ptr<const T>> out;
  for (const auto& m : ms) {
    if (const T* t = std::get_if<T>(m.get())) out.emplace_back(m, t);
  }
  return out;
}

}  // namespace fleetflow::testing

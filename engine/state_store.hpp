#pragma once
/// Where keyed state (the newest samples per key) is kept durably. keyed_last_value holds the
/// working copy in memory and writes it through a StateStore; the memory store keeps nothing
/// beyond the process, the JetStream KV store (operators/state/) shares it among workers.
///
/// Calls come from the owning operator's thread, one at a time; the `durable` callbacks may run
/// on any thread.

#include <functional>
#include <string>
#include <vector>

#include "wire.hpp"

namespace fleetflow {

class StateStore {
 public:
  using Visit = std::function<void(const std::string& key, std::vector<wire::Point> samples)>;

  virtual ~StateStore() = default;
  /// Hands over every stored key as it is now; called once, before any other call.
  virtual void Restore(const Visit& visit) = 0;
  /// Makes `samples` (the newest samples of `key`, ascending by time) durable; `durable` runs
  /// once they are. Writes of one key may be coalesced: only the last one need be stored.
  virtual void Write(const std::string& key, const std::vector<wire::Point>& samples,
                     std::function<void()> durable) = 0;
  /// Called on every clock tick: sends the writes that are due (`all`: every pending write,
  /// waiting for them), and hands over what other writers stored since the last call.
  virtual void Sync(bool all, const Visit& changed_elsewhere) = 0;
  /// False while the store cannot take writes (e.g. disconnected).
  virtual bool Ready() const { return true; }
};

/// State that lives only in this process: a write is durable at once.
class MemoryStateStore final : public StateStore {
 public:
  void Restore(const Visit&) override {}
  void Write(const std::string&, const std::vector<wire::Point>&,
             std::function<void()> durable) override {
    if (durable) durable();
  }
  void Sync(bool, const Visit&) override {}
};

}  // namespace fleetflow

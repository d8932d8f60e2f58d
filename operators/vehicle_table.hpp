#pragma once
/// The per-vehicle state of one partition of a windowed operator (window_join,
/// window_aggregate), kept dense: a window's rows are walked in an order the input fixes (a hash
/// map's would change from run to run, Abseil's hash being seeded per process), and a flat index
/// (vehicle id -> place), one probe, serves the samples and Operator::Prefetch.
///
/// An internal helper of those operators, not an operator.

#include <absl/container/flat_hash_map.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fleetflow {

/// `State` has a `std::string id` (the vehicle's) and a constructor State(id, args...).
template <typename State>
class VehicleTable {
 public:
  /// The vehicle's state, made by State(id, args...) when it had none (second: made now).
  template <typename... Args>
  std::pair<State&, bool> Get(const std::string& id, Args&&... args) {
    auto [it, inserted] = index_.try_emplace(id, static_cast<uint32_t>(states_.size()));
    if (inserted) states_.emplace_back(id, std::forward<Args>(args)...);
    return {states_[it->second], inserted};
  }

  /// The vehicle's state, or null.
  State* Find(const std::string& id) {
    const auto it = index_.find(id);
    return it == index_.end() ? nullptr : &states_[it->second];
  }

  /// Starts loading the index's slot of `id` (Operator::Prefetch).
  void Prefetch(const std::string& id) const { index_.prefetch(id); }

  /// Forgets the state at place i: the last one moves into its place (and is at i next).
  void Remove(size_t i) {
    index_.erase(states_[i].id);
    if (i + 1 < states_.size()) {
      states_[i] = std::move(states_.back());
      index_[states_[i].id] = static_cast<uint32_t>(i);
    }
    states_.pop_back();
  }

  size_t size() const { return states_.size(); }
  State& operator[](size_t i) { return states_[i]; }
  const State& operator[](size_t i) const { return states_[i]; }
  auto begin() { return states_.begin(); }
  auto end() { return states_.end(); }
  auto begin() const { return states_.begin(); }
  auto end() const { return states_.end(); }

 private:
  std::vector<State> states_;
  absl::flat_hash_map<std::string, uint32_t> index_;
};

}  // namespace fleetflow

#include "cell_merge.hpp"

#include <algorithm>
#include <utility>

#include "fleet_partial.hpp"

namespace fleetflow {

void MergeStats(SensorStats& into, const SensorStats& from) {
  if (from.count == 0) return;
  if (into.count == 0) {
    into = from;
    return;
  }
  into.min = std::min(into.min, from.min);
  into.max = std::max(into.max, from.max);
  into.sum += from.sum;
  into.count += from.count;
  if (from.first.ts_ns < into.first.ts_ns) into.first = from.first;
  if (from.last.ts_ns > into.last.ts_ns) into.last = from.last;
  if (from.positions > 0) {
    if (into.positions == 0) {
      into.min_lat = from.min_lat;
      into.max_lat = from.max_lat;
      into.min_lon = from.min_lon;
      into.max_lon = from.max_lon;
    } else {
      into.min_lat = std::min(into.min_lat, from.min_lat);
      into.max_lat = std::max(into.max_lat, from.max_lat);
      into.min_lon = std::min(into.min_lon, from.min_lon);
      into.max_lon = std::max(into.max_lon, from.max_lon);
    }
    into.positions += from.positions;
  }
  into.distance_m += from.distance_m;
}

CellMerge::CellMerge(uint32_t origins, std::shared_ptr<const std::vector<std::string>> metrics)
    : metrics_(std::move(metrics)) {
  state_.reached.resize(origins);
}

CellMerge::Taken CellMerge::Add(const Partial& partial) {
  if (partial.origin >= state_.reached.size() || partial.length_ns <= 0 ||
      (state_.length_ns != 0 && partial.length_ns != state_.length_ns)) {
    return Taken::kRefused;
  }
  for (const StatsRow& row : partial.rows) {
    if (row.sensors.size() != metrics_->size()) return Taken::kRefused;
  }
  const int64_t end = partial.start_ns + partial.length_ns;
  std::optional<int64_t>& reached = state_.reached[partial.origin];
  if (reached && end <= *reached) return Taken::kDuplicate;
  reached = end;
  state_.length_ns = partial.length_ns;
  if (partial.rows.empty()) return Taken::kMerged;
  auto& cells = state_.open[partial.start_ns];
  for (const StatsRow& row : partial.rows) {
    std::vector<SensorStats>& merged = cells[row.vehicle];
    if (merged.empty()) merged.resize(metrics_->size());
    for (size_t i = 0; i < merged.size(); ++i) MergeStats(merged[i], row.sensors[i]);
  }
  return Taken::kMerged;
}

std::optional<int64_t> CellMerge::CompleteUpTo() const {
  std::optional<int64_t> upto;
  for (const std::optional<int64_t>& r : state_.reached) {
    if (!r) return std::nullopt;
    upto = upto ? std::min(*upto, *r) : *r;
  }
  return upto;
}

std::vector<StatsBatch> CellMerge::TakeComplete() {
  std::vector<StatsBatch> out;
  const std::optional<int64_t> upto = CompleteUpTo();
  if (!upto) return out;
  for (auto it = state_.open.begin();
       it != state_.open.end() && it->first + state_.length_ns <= *upto;
       it = state_.open.erase(it)) {
    StatsBatch& batch = out.emplace_back();
    batch.start_ns = it->first;
    batch.length_ns = state_.length_ns;
    batch.sensors = metrics_;
    batch.rows.reserve(it->second.size());
    for (auto& [cell, stats] : it->second) batch.rows.push_back({cell, std::move(stats)});
  }
  return out;
}

bool CellMerge::Restore(State restored) {
  if (restored.reached.size() != state_.reached.size()) return false;
  for (const auto& [_, cells] : restored.open) {
    for (const auto& [cell, stats] : cells) {
      if (stats.size() != metrics_->size()) return false;
    }
  }
  state_ = std::move(restored);
  return true;
}

std::string CellMerge::Save() const {
  fleet::MergeState saved;
  saved.origins = static_cast<uint32_t>(state_.reached.size());
  saved.length_ns = state_.length_ns;
  saved.metrics = *metrics_;
  for (uint32_t o = 0; o < state_.reached.size(); ++o) {
    if (state_.reached[o]) saved.reached[o] = *state_.reached[o];
  }
  for (const auto& [start, cells] : state_.open) {
    std::vector<fleet::Row>& rows = saved.windows[start];
    for (const auto& [cell, stats] : cells) {
      fleet::Row& row = rows.emplace_back();
      row.key = cell;
      for (const SensorStats& s : stats) row.stats.push_back({s.count, s.min, s.max, s.sum});
    }
  }
  return fleet::Encode(saved);
}

bool CellMerge::Restore(std::string_view value) {
  fleet::MergeState saved;
  if (!fleet::Decode(value, saved) || saved.metrics != *metrics_ ||
      saved.origins != state_.reached.size()) {
    return false;
  }
  State restored;
  restored.reached.resize(saved.origins);
  for (const auto& [origin, end] : saved.reached) {
    if (origin >= saved.origins) return false;
    restored.reached[origin] = end;
  }
  restored.length_ns = saved.length_ns;
  for (const auto& [start, rows] : saved.windows) {
    auto& cells = restored.open[start];
    for (const fleet::Row& row : rows) {
      std::vector<SensorStats>& stats = cells[row.key];
      for (const fleet::Stats& s : row.stats) {
        SensorStats& st = stats.emplace_back();
        st.count = s.count;
        st.min = s.min;
        st.max = s.max;
        st.sum = s.sum;
      }
    }
  }
  return Restore(std::move(restored));
}

}  // namespace fleetflow

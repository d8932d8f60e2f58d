#include "interpolation.hpp"

#include <cmath>

namespace fleetflow {

std::optional<double> InterpolateSlot(const Slot& slot, ColumnField field, Interpolation mode,
                                      int64_t window_ns) {
  struct Sample {
    int64_t t;
    double v;
  };
  const auto pick = [field](const std::optional<wire::Point>& p) -> std::optional<Sample> {
    if (!p) return std::nullopt;
    switch (field) {
      case ColumnField::kValue:
        return Sample{p->ts_ns, p->value};
      case ColumnField::kLat:
        return p->has_position ? std::optional<Sample>(Sample{p->ts_ns, p->lat}) : std::nullopt;
      case ColumnField::kLon:
        return p->has_position ? std::optional<Sample>(Sample{p->ts_ns, p->lon}) : std::nullopt;
    }
    return std::nullopt;
  };
  const auto before = pick(slot.before);
  const auto after = mode == Interpolation::kLinear ? pick(slot.after) : std::nullopt;
  double out;
  if (before && after) {
    out = after->t == before->t
              ? before->v
              : before->v + (after->v - before->v) * (static_cast<double>(window_ns - before->t) /
                                                      static_cast<double>(after->t - before->t));
  } else if (before) {
    out = before->v;
  } else if (after) {
    out = after->v;
  } else {
    return std::nullopt;
  }
  if (!std::isfinite(out)) return std::nullopt;
  return out;
}

}  // namespace fleetflow

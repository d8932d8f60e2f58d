#include "range_filter.hpp"

#include <algorithm>
#include <iterator>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "options.hpp"

namespace fleetflow {

namespace {

/// The options of range_filter (see Spec()).
struct RangeFilterOptions {
  struct SensorRange {
    std::string sensor;
    double min = 0;
    double max = 0;
  };
  std::vector<SensorRange> ranges;
};

/// One sensor's range, and the count of its samples dropped outside it.
struct Range {
  double min;
  double max;
  Counter* dropped;
  bool Holds(const wire::Point& p) const { return p.value >= min && p.value <= max; }  // NaN: no
};

class RangeFilter final : public Operator {
 public:
  RangeFilter(const OperatorContext& ctx, const RangeFilterOptions& options) {
    for (const auto& range : options.ranges) {
      Labels labels = ctx.labels();
      labels.emplace_back("sensor", range.sensor);
      Counter& dropped = ctx.metrics.GetCounter(
          "samples_out_of_range",
          "Samples dropped by a range filter: their value was outside their sensor's range.",
          labels);
      ranges_.emplace(range.sensor, Range{range.min, range.max, &dropped});
    }
  }

  void Process(const Message& in, Emitter& out) override {
    const auto* batch = std::get_if<SampleBatch>(in.get());
    const auto range = batch != nullptr ? ranges_.find(batch->sensor) : ranges_.end();
    if (range == ranges_.end()) {
      out.Emit(in);  // a sensor without a range, a status, a Tick, a PartitionEvent: as it is
      return;
    }
    const Range& r = range->second;
    const auto holds = [&r](const wire::Point& p) { return r.Holds(p); };
    const auto& points = batch->points;
    const auto kept = static_cast<size_t>(std::count_if(points.begin(), points.end(), holds));
    if (kept == points.size()) {
      out.Emit(in);  // nothing dropped: the message goes on as it is
      return;
    }
    r.dropped->Inc(points.size() - kept);
    if (kept == 0) {
      if (batch->ack) batch->ack->Done();  // nothing left to store: acknowledged here
      return;
    }
    SampleBatch passed{batch->vehicle,  batch->sensor,      {},
                       batch->ack,      batch->received_ns, batch->partition,
                       batch->restored, batch->sequence,    batch->stream_ns};
    passed.points.reserve(kept);
    std::copy_if(points.begin(), points.end(), std::back_inserter(passed.points), holds);
    out.Emit(MakeMessage(std::move(passed)));
  }

 private:
  std::unordered_map<std::string, Range> ranges_;
};

/// One range per sensor, each with min <= max.
void CheckRanges(const RangeFilterOptions& options, std::vector<ConfigProblem>& out) {
  std::set<std::string> sensors;
  for (size_t i = 0; i < options.ranges.size(); ++i) {
    const auto& [sensor, min, max] = options.ranges[i];
    const std::string at = "/ranges/" + std::to_string(i);
    if (!sensors.insert(sensor).second) {
      out.push_back({at + "/sensor",
                     "sensor '" + sensor + "' has a range already; give each sensor one range"});
    }
    if (min > max) {
      out.push_back({at + "/max", "must be at least min (" + FormatNumber(min) + "), found " +
                                      FormatNumber(max)});
    }
  }
}

const OptionsSpec<RangeFilterOptions>& Spec() {
  return StaticSpec<RangeFilterOptions>([](OptionsSpec<RangeFilterOptions>& c) {
    using Item = RangeFilterOptions::SensorRange;
    OptionsSpec<Item> range;
    range.String("sensor", "The sensor whose samples are checked.", &Item::sensor)
        .Required()
        .Pattern(kSensorNamePattern, kSensorNameWords)
        .Example("\"speed\"");
    range.Number("min", "The smallest value kept, in the sensor's unit.", &Item::min)
        .Required()
        .Example("0");
    range.Number("max", "The largest value kept, in the sensor's unit.", &Item::max)
        .Required()
        .Example("90");
    c.ObjectArray("ranges",
                  "The sensors checked, each with the range of its samples' value (scalar "
                  "sensors: the source checks positions). A sample below min, above max or not "
                  "a number is dropped and counted (samples_out_of_range{sensor}); a message "
                  "left without samples is acknowledged at once. Samples of other sensors pass "
                  "unchanged. Put the filter before keyed_last_value, so that such samples "
                  "never reach state or windows.",
                  &RangeFilterOptions::ranges, range)
        .Required()
        .MinItems(1)
        .Example(
            R"([{"sensor": "speed", "min": 0, "max": 90}, {"sensor": "soc", "min": 0, "max": 100}])");
    c.Rule("Each sensor has one range, and its min is at most its max.", CheckRanges);
  });
}

}  // namespace

void RegisterRangeFilter(Registry& registry) {
  registry.Add(TypedOperator<RangeFilter>(
      "range_filter",
      "Drops samples whose value lies outside their sensor's [min, max], counted by sensor; "
      "everything else passes unchanged.",
      PortKind::kSamples, PortKind::kSamples, Spec()));
}

}  // namespace fleetflow

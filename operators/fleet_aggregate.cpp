#include "fleet_aggregate.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "options.hpp"

namespace fleetflow {

std::string Geohash(double lat, double lon, int precision) {
  static constexpr char kBase32[] = "0123456789bcdefghjkmnpqrstuvwxyz";
  double lat_range[2] = {-90.0, 90.0};
  double lon_range[2] = {-180.0, 180.0};
  std::string hash;
  bool even = true;  // the first bit is longitude's
  int bits = 0;
  int value = 0;
  while (static_cast<int>(hash.size()) < precision) {
    double* range = even ? lon_range : lat_range;
    const double x = even ? lon : lat;
    const double mid = (range[0] + range[1]) / 2;
    value <<= 1;
    if (x >= mid) {
      value |= 1;
      range[0] = mid;
    } else {
      range[1] = mid;
    }
    even = !even;
    if (++bits == 5) {
      hash += kBase32[value];
      bits = 0;
      value = 0;
    }
  }
  return hash;
}

namespace {

/// The options of fleet_aggregate (see Spec()).
struct FleetAggregateOptions {
  enum class GroupBy { kCell, kFleet, kCellAndFleet };
  GroupBy group_by = GroupBy::kCell;
  int cell_precision = 5;
  std::string position_sensor;
  std::string speed_sensor;
  std::string soc_sensor;
  double moving_speed = 0;
};

/// The metrics of a fleet row, in the order of its statistics (see the header).
enum Metric : size_t { kVehicles, kMoving, kSpeed, kSpeedMax, kSoc, kMetrics };

const std::shared_ptr<const std::vector<std::string>>& MetricNames() {
  static const auto names = std::make_shared<const std::vector<std::string>>(
      std::vector<std::string>{"vehicles", "moving", "speed", "speed_max", "soc"});
  return names;
}

void Add(SensorStats& s, double value) {
  if (s.count == 0 || value < s.min) s.min = value;
  if (s.count == 0 || value > s.max) s.max = value;
  s.sum += value;
  ++s.count;
}

class FleetAggregate final : public Operator {
 public:
  FleetAggregate(const OperatorContext& ctx, const FleetAggregateOptions& options)
      : o_(options),
        rows_(ctx.metrics.GetCounter("rows_emitted",
                                     "Rows emitted (one per cell with a vehicle in the window, or "
                                     "one for the fleet).",
                                     ctx.labels())),
        vehicles_(ctx.metrics.GetCounter("vehicles_aggregated",
                                         "Vehicle rows of a window counted into a cell's row.",
                                         ctx.labels())),
        unplaced_(ctx.metrics.GetCounter(
            "vehicles_without_position",
            "Vehicle rows of a window without a position (no sample of the position sensor in "
            "the window): in no cell.",
            ctx.labels())) {}

  void Process(const Message& in, Emitter& out) override {
    const auto* batch = std::get_if<StatsBatch>(in.get());
    if (batch == nullptr) {
      out.Emit(in);  // Ticks and partition events go on to the sink
      return;
    }
    const Indexes at = IndexesOf(*batch->sensors);
    std::map<std::string, std::vector<SensorStats>> cells;  // by key, in order
    using GroupBy = FleetAggregateOptions::GroupBy;
    for (const StatsRow& row : batch->rows) {
      if (o_.group_by != GroupBy::kFleet) {
        const SensorStats* position = Of(row, at.position);
        if (position != nullptr && position->last.has_position) {
          Count(row, at, cells[Geohash(position->last.lat, position->last.lon, o_.cell_precision)]);
        } else {
          unplaced_.Inc();
          if (o_.group_by == GroupBy::kCell) continue;
        }
      }
      if (o_.group_by != GroupBy::kCell) Count(row, at, cells[kFleetKey]);
      vehicles_.Inc();
    }
    // A partition's window reports its progress even without a row (StatsBatch::partition).
    if (cells.empty() && !batch->partition) return;
    StatsBatch fleet;
    fleet.start_ns = batch->start_ns;
    fleet.length_ns = batch->length_ns;
    fleet.sensors = MetricNames();
    fleet.partition = batch->partition;
    fleet.in_flight = batch->in_flight;  // stored once fleet_publish's partials are
    fleet.rows.reserve(cells.size());
    for (auto& [key, metrics] : cells) fleet.rows.push_back({key, std::move(metrics)});
    rows_.Inc(fleet.rows.size());
    out.Emit(MakeMessage(std::move(fleet)));
  }

 private:
  static constexpr size_t kNone = SIZE_MAX;
  static constexpr char kFleetKey[] = "fleet";
  /// Where the position, speed and state of charge are among a batch's sensors.
  struct Indexes {
    size_t position = kNone, speed = kNone, soc = kNone;
  };

  /// Counts a vehicle's row into the metrics of a cell (or of the fleet).
  void Count(const StatsRow& row, const Indexes& at, std::vector<SensorStats>& metrics) const {
    if (metrics.empty()) metrics.resize(kMetrics);
    Add(metrics[kVehicles], 1.0);
    if (const SensorStats* speed = Of(row, at.speed)) {
      Add(metrics[kMoving], speed->max >= o_.moving_speed ? 1.0 : 0.0);
      Add(metrics[kSpeed], speed->sum / static_cast<double>(speed->count));
      Add(metrics[kSpeedMax], speed->max);
    }
    if (const SensorStats* soc = Of(row, at.soc)) Add(metrics[kSoc], soc->last.value);
  }

  Indexes IndexesOf(const std::vector<std::string>& sensors) const {
    const auto find = [&](const std::string& name) {
      const auto it = std::find(sensors.begin(), sensors.end(), name);
      return it == sensors.end() ? kNone : static_cast<size_t>(it - sensors.begin());
    };
    return {find(o_.position_sensor), find(o_.speed_sensor), find(o_.soc_sensor)};
  }

  /// The row's statistics of the sensor at `index`; nullptr without a sample in the window.
  static const SensorStats* Of(const StatsRow& row, size_t index) {
    if (index >= row.sensors.size() || row.sensors[index].count == 0) return nullptr;
    return &row.sensors[index];
  }

  const FleetAggregateOptions o_;
  Counter& rows_;
  Counter& vehicles_;
  Counter& unplaced_;
};

const OptionsSpec<FleetAggregateOptions>& Spec() {
  using O = FleetAggregateOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Enum("group_by",
           "cell: one row per geohash cell of the vehicles' last positions in the window (the "
           "row's key is the geohash; vehicles without a position in the window are in no "
           "cell, counted in vehicles_without_position); fleet: one row for every vehicle, "
           "keyed \"fleet\"; cell_and_fleet: both in one batch (one stage across workers "
           "carries both).",
           &O::group_by,
           {{"cell", O::GroupBy::kCell},
            {"fleet", O::GroupBy::kFleet},
            {"cell_and_fleet", O::GroupBy::kCellAndFleet}})
        .Default("cell");
    c.Integer("cell_precision",
              "Characters of the geohash: 4 is about 39 x 20 km, 5 about 4.9 x 4.9 km, 6 about "
              "1.2 x 0.6 km (at the equator; narrower east-west towards the poles).",
              &O::cell_precision)
        .Default(int64_t{5})
        .Min(1)
        .Max(12);
    c.String("position_sensor", "The sensor whose last position in the window places a vehicle.",
             &O::position_sensor)
        .Default("gps")
        .Pattern(kSensorNamePattern, kSensorNameWords);
    c.String("speed_sensor",
             "The sensor of the speed: its mean and largest value in the window make the "
             "vehicle's speed and speed_max, and whether it moved.",
             &O::speed_sensor)
        .Default("speed")
        .Pattern(kSensorNamePattern, kSensorNameWords);
    c.String("soc_sensor", "The sensor of the state of charge: its last value in the window.",
             &O::soc_sensor)
        .Default("soc")
        .Pattern(kSensorNamePattern, kSensorNameWords);
    c.Number("moving_speed",
             "A vehicle moved in a window when its largest speed there is at least this, in the "
             "speed sensor's unit.",
             &O::moving_speed)
        .Default(1.0)
        .Min(0);
  });
}

/// Its input is a window_aggregate's rows, one batch per window (behind a partitioned source one
/// per partition: partials, which the sink refuses and fleet_publish sends to the merge).
std::vector<UpstreamProblem> CheckUpstream(const Config&, const std::string& self_id,
                                           const std::vector<UpstreamNode>& upstream) {
  std::vector<UpstreamProblem> problems;
  NodeFacts::Rows rows = NodeFacts::Rows::kUnknown;
  std::string rows_node;
  for (const UpstreamNode& n : upstream) {
    if (n.facts.rows != NodeFacts::Rows::kUnknown) {
      rows = n.facts.rows;  // the nearest node that emits rows comes last
      rows_node = n.id;
    }
  }
  if (rows == NodeFacts::Rows::kSlots) {
    problems.push_back({rows_node, "",
                        "fleet_aggregate '" + self_id +
                            "' reads the statistics of a "
                            "window_aggregate, not the interpolated rows of window_join '" +
                            rows_node + "'"});
  }
  return problems;
}

}  // namespace

void RegisterFleetAggregate(Registry& registry) {
  OperatorInfo info = TypedOperator<FleetAggregate>(
      "fleet_aggregate",
      "Across vehicles: per window, one row per geohash cell of the vehicles' last positions (or "
      "one for the fleet) with the vehicles active and moving, their mean and largest speed and "
      "their state of charge, from a window_aggregate's rows.",
      PortKind::kRows, PortKind::kRows, Spec());
  info.facts = [](const Config&) {
    NodeFacts f;
    f.rows = NodeFacts::Rows::kStatistics;
    f.across_vehicles = true;
    return f;
  };
  info.check_upstream = CheckUpstream;
  registry.Add(std::move(info));
}

}  // namespace fleetflow

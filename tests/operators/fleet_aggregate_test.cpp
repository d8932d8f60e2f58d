// fleet_aggregate on the test kit: the geohash against published values, and the rows of cells
// and of the fleet from one window's vehicle rows, computed by hand (docs/semantics.md, "Across
// vehicles").
#include "fleet_aggregate.hpp"

#include <gtest/gtest.h>

#include <map>

#include "fleetflow/testkit/harness.hpp"

namespace fleetflow::testkit {
namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kStart = 1'700'000'040 * kS;

TEST(GeohashTest, MatchesPublishedValues) {
  EXPECT_EQ(Geohash(57.64911, 10.40744, 11), "u4pruydqqvj");  // the format's own example
  EXPECT_EQ(Geohash(57.64911, 10.40744, 5), "u4pru");
  EXPECT_EQ(Geohash(48.8566, 2.3522, 6), "u09tvw");     // Paris
  EXPECT_EQ(Geohash(-33.8688, 151.2093, 6), "r3gx2f");  // Sydney
  EXPECT_EQ(Geohash(0, 0, 4), "s000");
  EXPECT_EQ(Geohash(-90, -180, 3), "000");
  EXPECT_EQ(Geohash(90, 180, 3), "zzz");
}

/// Statistics of a sensor with `values` (first and last: the first and last of them).
SensorStats Stats(std::vector<double> values, std::optional<std::pair<double, double>> at = {}) {
  SensorStats s;
  for (double v : values) {
    if (s.count == 0 || v < s.min) s.min = v;
    if (s.count == 0 || v > s.max) s.max = v;
    s.sum += v;
    ++s.count;
  }
  if (!values.empty()) {
    s.first.value = values.front();
    s.last.value = values.back();
  }
  if (at) {
    s.positions = s.count;
    s.last.lat = at->first;
    s.last.lon = at->second;
    s.last.has_position = true;
  }
  return s;
}

/// One window's vehicle rows with sensors gps, speed, soc.
Body Window(std::vector<StatsRow> rows) {
  StatsBatch b;
  b.start_ns = kStart;
  b.length_ns = 60 * kS;
  b.sensors = std::make_shared<const std::vector<std::string>>(
      std::vector<std::string>{"gps", "speed", "soc"});
  b.rows = std::move(rows);
  return b;
}

/// The rows of `out` by key: metric name -> its statistics.
std::map<std::string, std::map<std::string, SensorStats>> Rows(const std::vector<Message>& out) {
  std::map<std::string, std::map<std::string, SensorStats>> rows;
  for (const auto& b : Only<StatsBatch>(out)) {
    EXPECT_EQ(b->start_ns, kStart);
    EXPECT_EQ(b->length_ns, 60 * kS);
    for (const StatsRow& row : b->rows) {
      for (size_t i = 0; i < row.sensors.size(); ++i)
        rows[row.vehicle][(*b->sensors)[i]] = row.sensors[i];
    }
  }
  return rows;
}

const std::pair<double, double> kParis{48.8566, 2.3522};     // cell u09tv
const std::pair<double, double> kParisToo{48.8570, 2.3530};  // the same cell
const std::pair<double, double> kLyon{45.7640, 4.8357};      // another

TEST(FleetAggregateTest, VehiclesAreCountedInTheCellOfTheirLastPosition) {
  OperatorHarness h("fleet_aggregate", R"({"moving_speed": 1})");
  const auto out = h.Feed(Window({
      {"a", {Stats({0}, kParis), Stats({10, 20}), Stats({80, 78})}},  // moving, mean 15
      {"b", {Stats({0}, kParisToo), Stats({0, 0.5}), Stats({50})}},   // standing, mean 0.25
      {"c", {Stats({0}, kLyon), Stats({30}), Stats({})}},             // moving, no soc
      {"d", {Stats({}), Stats({40}), Stats({90})}},                   // no position: no cell
  }));
  const auto rows = Rows(out);
  ASSERT_EQ(rows.size(), 2u);
  const auto& paris = rows.at(Geohash(kParis.first, kParis.second, 5));
  EXPECT_EQ(paris.at("vehicles").count, 2u);
  EXPECT_EQ(paris.at("moving").sum, 1.0);
  EXPECT_EQ(paris.at("moving").count, 2u);
  EXPECT_DOUBLE_EQ(paris.at("speed").sum / 2, (15 + 0.25) / 2);
  EXPECT_EQ(paris.at("speed").min, 0.25);
  EXPECT_EQ(paris.at("speed_max").max, 20);
  EXPECT_EQ(paris.at("soc").sum, 78 + 50);  // the last of each
  EXPECT_EQ(paris.at("soc").min, 50);
  const auto& lyon = rows.at(Geohash(kLyon.first, kLyon.second, 5));
  EXPECT_EQ(lyon.at("vehicles").count, 1u);
  EXPECT_EQ(lyon.at("moving").sum, 1.0);
  EXPECT_EQ(lyon.at("soc").count, 0u) << "no soc in the window: NULL";
  EXPECT_EQ(h.Counter("vehicles_without_position"), 1u);
  EXPECT_EQ(h.Counter("vehicles_aggregated"), 3u);
  EXPECT_EQ(h.Counter("rows_emitted"), 2u);
}

TEST(FleetAggregateTest, TheFleetRowCountsEveryVehiclePlacedOrNot) {
  OperatorHarness h("fleet_aggregate", R"({"group_by": "fleet", "moving_speed": 5})");
  const auto rows = Rows(h.Feed(Window({
      {"a", {Stats({0}, kParis), Stats({10, 20}), Stats({80})}},
      {"b", {Stats({}), Stats({1, 4}), Stats({60})}},
      {"c", {Stats({0}, kLyon), Stats({}), Stats({70})}},  // no speed: neither moving nor not
  })));
  ASSERT_EQ(rows.size(), 1u);
  const auto& fleet = rows.at("fleet");
  EXPECT_EQ(fleet.at("vehicles").count, 3u);
  EXPECT_EQ(fleet.at("moving").count, 2u);
  EXPECT_EQ(fleet.at("moving").sum, 1.0) << "b's largest speed 4 is below 5";
  EXPECT_EQ(fleet.at("speed_max").max, 20);
  EXPECT_DOUBLE_EQ(fleet.at("soc").sum / fleet.at("soc").count, 70);
}

// cell_and_fleet (one stage across workers carries both) gives in one batch the rows `cell` and
// `fleet` give apart: a vehicle without a position is in the fleet's row only.
TEST(FleetAggregateTest, CellAndFleetGiveTheRowsOfBothInOneBatch) {
  const auto rows = [] {
    return Window({{"a", {Stats({0}, kParis), Stats({10}), Stats({80})}},
                   {"b", {Stats({0}, kParisToo), Stats({0.5}), Stats({60})}},
                   {"c", {Stats({0}, kLyon), Stats({20}), Stats({})}},
                   {"d", {Stats({}), Stats({30}), Stats({50})}}});
  };
  std::map<std::string, std::vector<std::vector<double>>> apart, together;
  const auto take = [](const std::string& config, Body body, auto& into) {
    OperatorHarness h("fleet_aggregate", config);
    for (const auto& b : Only<StatsBatch>(h.Feed(std::move(body)))) {
      for (const StatsRow& r : b->rows) {
        for (const SensorStats& s : r.sensors) {
          into[r.vehicle].push_back({static_cast<double>(s.count), s.sum, s.min, s.max});
        }
      }
    }
    return h.Counter("vehicles_without_position");
  };
  EXPECT_EQ(take(R"({"group_by": "cell"})", rows(), apart), 1u);
  take(R"({"group_by": "fleet"})", rows(), apart);
  EXPECT_EQ(take(R"({"group_by": "cell_and_fleet"})", rows(), together), 1u);
  EXPECT_EQ(together, apart);
  EXPECT_EQ(together.size(), 3u) << "u09tv, u05kq and fleet";
  EXPECT_EQ(together.at("fleet")[0][0], 4) << "every vehicle, d without a position too";
}

TEST(FleetAggregateTest, TicksPassAndAWindowWithoutVehiclesEmitsNothing) {
  OperatorHarness h("fleet_aggregate", "{}");
  EXPECT_TRUE(
      Only<StatsBatch>(h.Feed(Window({{"d", {Stats({}), Stats({1}), Stats({})}}}))).empty());
  EXPECT_EQ(Only<Tick>(h.TickAt(kStart)).size(), 1u);
}

// Behind a partitioned window_aggregate the rows of a batch are one partition's: the cells'
// rows are that partition's partials, with its number, and a window without a vehicle placed
// still reports the partition's progress (an empty batch), for the stage across workers.
TEST(FleetAggregateTest, APartitionsRowsArePartialsWithItsNumberAndAnEmptyWindowIsReported) {
  OperatorHarness h("fleet_aggregate", "{}");
  Body with = Window({{"a", {Stats({0}, kParis), Stats({10}), Stats({80})}}});
  std::get<StatsBatch>(with).partition = 7;
  const auto token = std::make_shared<int>(0);
  std::get<StatsBatch>(with).in_flight = token;
  const auto partials = Only<StatsBatch>(h.Feed(std::move(with)));
  ASSERT_EQ(partials.size(), 1u);
  EXPECT_EQ(partials[0]->partition, std::optional<uint32_t>(7));
  EXPECT_EQ(partials[0]->in_flight, token) << "the window's token goes on with its partials";
  ASSERT_EQ(partials[0]->rows.size(), 1u);
  EXPECT_EQ(partials[0]->rows[0].vehicle, "u09tv");

  Body unplaced = Window({{"d", {Stats({}), Stats({1}), Stats({})}}});
  std::get<StatsBatch>(unplaced).partition = 7;
  const auto empty = Only<StatsBatch>(h.Feed(std::move(unplaced)));
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0]->partition, std::optional<uint32_t>(7));
  EXPECT_EQ(empty[0]->start_ns, kStart);
  EXPECT_TRUE(empty[0]->rows.empty());
  Body none = Window({});
  std::get<StatsBatch>(none).partition = 2;
  EXPECT_EQ(Only<StatsBatch>(h.Feed(std::move(none))).size(), 1u);
}

}  // namespace
}  // namespace fleetflow::testkit

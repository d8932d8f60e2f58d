#include "builtin.hpp"

#include "archive.hpp"
#include "cell_merge.hpp"
#include "fleet_aggregate.hpp"
#include "fleet_publish.hpp"
#include "fleet_source.hpp"
#include "keyed_last_value.hpp"
#include "nats_source.hpp"
#include "range_filter.hpp"
#include "replay_source.hpp"
#include "row_archive.hpp"
#include "rule.hpp"
#include "timescale_sink.hpp"
#include "window_aggregate.hpp"
#include "window_join.hpp"

namespace fleetflow {

void RegisterBuiltinOperators(Registry& registry) {
  RegisterNatsSource(registry);
  RegisterReplaySource(registry);
  RegisterRangeFilter(registry);
  RegisterKeyedLastValue(registry);
  RegisterWindowJoin(registry);
  RegisterWindowAggregate(registry);
  RegisterFleetAggregate(registry);
  RegisterFleetPublish(registry);
  RegisterFleetSource(registry);
  RegisterCellMerge(registry);
  RegisterTimescaleSink(registry);
  RegisterArchive(registry);
  RegisterRowArchive(registry);
  RegisterRule(registry);
}

}  // namespace fleetflow

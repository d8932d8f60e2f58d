#pragma once
/// replay_source: feeds the messages of a recording (docs/recording.md, written by
/// `fleetflow record`), or of several replayed as one stream (`file`, then `next_files`; a gap or
/// an overlap between two is logged as a warning), into a pipeline in place of nats_source. Each
/// message is decoded, validated and counted exactly as nats_source would have
/// (operators/wire_input.hpp), with the recorded receive time as the engine clock.
///
/// When the engine runs on a clock that follows the input (`fleetflow replay`: a ReplayClock,
/// whose driver the runtime hands to the sources), the source advances that clock to each
/// record's receive time and puts a Tick into its stream every `tick_ms` of recorded
/// time, so windows close on the same event-time progress as live and a replay is deterministic.
/// On any other clock it only feeds the messages (a backlog, windowed on event time). At the
/// end of the file (or at a damaged record) it says its input ended, which is how the runtime
/// (Runtime::InputEnded()) and so `fleetflow replay` know the replay is complete.
///
/// Progress is published as metrics: replay_records_total, replay_offset_bytes,
/// replay_file_bytes, replay_recorded_time_seconds, replay_finished (1 once the file ended or a
/// damaged record stopped it) and replay_damaged_offset_bytes (-1 unless damaged).

#include "registry.hpp"

namespace fleetflow {

/// The operator's type name, which `fleetflow replay` puts in place of a source node's.
inline constexpr char kReplaySourceName[] = "replay_source";

void RegisterReplaySource(Registry& registry);

}  // namespace fleetflow

#pragma once
// `fleetflow record` and `fleetflow replay` (docs/cli.md, docs/recording.md).

#include <cstdint>
#include <string>
#include <vector>

#include "pipeline.hpp"
#include "registry.hpp"

namespace fleetflow {

struct RecordArgs {
  std::string subject = "vehicle.*.*";
  std::string out;
  std::string url;         // empty: NATS_URL or the default
  double duration_s = 0;   // 0: until SIGINT/SIGTERM
  uint64_t max_bytes = 0;  // 0: no limit
  bool rotate = false;
};

/// Captures live core-NATS messages to a recording; returns the exit status.
int Record(const RecordArgs& args);

struct ReplayArgs {
  std::string file;
  std::string pipeline;
  double speed = 0;  // 0: as fast as possible
  int metrics_port = -1;
  std::string metrics_host = "127.0.0.1";
  bool strict = false;
};

/// Makes `pipeline` run apart from production, as `fleetflow replay` and `fleetflow test` run it:
/// every nats_source and replay_source node becomes a replay_source reading `file` at `speed`
/// (0: as fast as possible) with the source's own input validation settings (a partitioned
/// source reads its recorded partition subjects unpartitioned: no consumers, no membership, no
/// hand-over records; no dead letters are published), and every keyed_last_value keeps its state
/// in memory instead of a KV bucket. Appends one line per replaced node to `replaced` (for the
/// log) and returns the number of sources replaced; a config refused goes to `errors`.
int IsolateForReplay(Pipeline& pipeline, const Registry& registry, const std::string& file,
                     double speed, std::vector<Diagnostic>& errors,
                     std::vector<std::string>& replaced);

/// Replays a recording through a pipeline (its nats_source nodes replaced by replay_source) on
/// the replay clock, drains, and returns the exit status.
int Replay(const Registry& registry, const ReplayArgs& args);

}  // namespace fleetflow

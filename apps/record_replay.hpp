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

/// What the replay sources read: `files` in order as one stream, at `speed` (0: as fast as
/// possible); a silence longer than `max_file_gap_ms` between two files is reported.
struct ReplayInput {
  std::vector<std::string> files;
  double speed = 0;
  int64_t max_file_gap_ms = 1000;
};

struct ReplayArgs {
  ReplayInput input;
  bool rotated = false;  // each file stands for its rotated set FILE, FILE.1, FILE.2, ...
  std::string pipeline;
  int metrics_port = -1;
  std::string metrics_host = "127.0.0.1";
  bool strict = false;
};

/// Makes `pipeline` run apart from production, as `fleetflow replay` and `fleetflow test` run it:
/// every nats_source and replay_source node becomes a replay_source reading `input` with the
/// source's own input validation settings (a partitioned source reads its recorded partition
/// subjects unpartitioned: no consumers, no membership, no hand-over records; no dead letters are
/// published), and every keyed_last_value keeps its state in memory instead of a KV bucket. Appends
/// one line per replaced node to `replaced` (for the log) and returns the number of sources
/// replaced; a config refused goes to `errors`.
int IsolateForReplay(Pipeline& pipeline, const Registry& registry, const ReplayInput& input,
                     std::vector<Diagnostic>& errors, std::vector<std::string>& replaced);

/// `file` and the files `fleetflow record --rotate` continued it in (FILE.1, FILE.2, ...) that
/// exist, in order.
std::vector<std::string> RotatedSet(const std::string& file);

/// Replays a recording through a pipeline (its nats_source nodes replaced by replay_source) on
/// the replay clock, drains, and returns the exit status.
int Replay(const Registry& registry, const ReplayArgs& args);

}  // namespace fleetflow

#pragma once
// `fleetflow record` and `fleetflow replay` (docs/cli.md, docs/recording.md).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "jetstream.hpp"
#include "pipeline.hpp"
#include "registry.hpp"

namespace fleetflow {

struct RecordArgs {
  std::string subject;  // empty: vehicle.*.* live; the stream's subject with `stream`
  std::string out;
  std::string url;         // empty: NATS_URL or the default
  double duration_s = 0;   // live: 0 until SIGINT/SIGTERM
  uint64_t max_bytes = 0;  // 0: no limit
  bool rotate = false;
  /// A JetStream stream to read a range of instead of live messages: from `from` (empty: its
  /// first message) up to `to` (exclusive; empty: its last message when the reading started),
  /// each a bound as ParseRangeBound reads it.
  std::string stream;
  std::string from;
  std::string to;
};

/// Captures live core-NATS messages, or a range of a JetStream stream (each message with the
/// time the stream stored it as its receive time), to a recording; returns the exit status.
int Record(const RecordArgs& args);

/// A bound of a stream's range: a stream sequence (`1234`), an RFC 3339 time, or a time before
/// `now_ns` (`-90s`, `-15m`, `-2h`, `-1d`); an empty text is no bound (both fields 0). nullopt
/// and `error` for anything else.
std::optional<nats::StreamStart> ParseRangeBound(const std::string& text, int64_t now_ns,
                                                 std::string& error);

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
  /// Not empty: the rows go to CSV instead of the sinks' PostgreSQL (docs/recording.md), the rule
  /// nodes' alarms are only computed and the archives left out, as `fleetflow test` runs it: no
  /// server is contacted. With one sink (or `sink`) a file, "-" for stdout; with several a
  /// directory, one <node id>.csv each.
  std::string out;
  std::string sink;        ///< with `out`: write only this timescale_sink node's rows
  std::string alarms_out;  ///< with `out`: the rule nodes' alarm events as JSON lines ("-": stdout)
};

/// Makes `pipeline` run apart from production, as `fleetflow replay` and `fleetflow test` run it:
/// every nats_source and replay_source node becomes a replay_source reading `input` with the
/// source's own input validation settings (a partitioned source reads its recorded partition
/// subjects unpartitioned: no consumers, no membership, no hand-over records; no dead letters are
/// published), every keyed_last_value, window_aggregate and cell_merge keeps its state in memory
/// instead of a KV bucket, and the stage across workers runs in this process (each fleet_source
/// is dropped with the fleet_publish nodes writing its stream: the nodes after it read what those
/// read). Appends one line per replaced node to `replaced` (for the log) and returns the number
/// of sources replaced; a config refused, or a fleet_source that no fleet_publish feeds, goes to
/// `errors`.
int IsolateForReplay(Pipeline& pipeline, const Registry& registry, const ReplayInput& input,
                     std::vector<Diagnostic>& errors, std::vector<std::string>& replaced);

/// `file` and the files `fleetflow record --rotate` continued it in (FILE.1, FILE.2, ...) that
/// exist, in order.
std::vector<std::string> RotatedSet(const std::string& file);

/// Replays a recording through a pipeline (its nats_source nodes replaced by replay_source) on
/// the replay clock, drains, and returns the exit status.
int Replay(const Registry& registry, const ReplayArgs& args);

}  // namespace fleetflow

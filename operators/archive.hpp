#pragma once
/// archive: every sample kept for years at a known cost (docs/archive.md). It writes the samples
/// its source delivers into a directory in an open layout (operators/archive/layout.hpp:
/// zstd-compressed CSV by sensor, period and geohash cell, each chunk with a summary), which
/// DuckDB, Polars, Spark or Athena read without fleetflow and `fleetflow find --archive` searches.
///
/// Exactly once behind a JetStream source: each partition's samples are gathered in memory and
/// written every flush_ms (and when the partition is revoked, and on a drain) as one *flush*: its
/// chunks are written under temporary names and synced, then the partition's commit record
/// (`_commits/<node>/p<partition>.json`: the flush's last stream sequence and its files) replaces
/// the previous one atomically, then the chunks are renamed into place. The commit record is
/// the truth: a partition's next owner finishes the renames of the last flush (a crash between
/// them), deletes what no record names, and skips the messages up to its sequence; the
/// checkpoint in the state bucket (`agg.<node>.<partition>.checkpoint`, stored after the
/// record) tells the source where to re-read from.

#include <memory>

#include "registry.hpp"
#include "state_store.hpp"

namespace fleetflow {

/// Registers archive; `memory_snapshots`: the checkpoint store of its memory backend (operator
/// tests; none: nothing is kept).
void RegisterArchive(Registry& registry, std::shared_ptr<SnapshotStore> memory_snapshots = nullptr);

}  // namespace fleetflow

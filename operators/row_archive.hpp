#pragma once
/// row_archive: the aligned rows of a window join kept for years at a known cost
/// (docs/archive.md, "Rows"). It writes each window's rows, interpolated exactly as
/// timescale_sink writes them (engine/interpolation.hpp), into a directory in the archive's open
/// layout (operators/archive/layout.hpp): zstd-compressed CSV under rows=<row set>, by period and
/// geohash cell, sorted by vehicle then time, each chunk with a summary.
///
/// Exactly once, as the sink's rows: each partition appends the rows of every window it closes
/// to its log in the directory (`_commits/<node>/p<partition>-<segment>.log`, synced at each
/// Tick: what a worker killed had not synced is what the window join emits again from the
/// state's history, as for the sink), one log segment per period. Once the partition's windows
/// reach the next period (or the partition is revoked, or on a drain) the segment is written as
/// that period's chunks, and committed like the archive's flushes (operators/archive/commit.hpp):
/// the commit record names the last window in the archive and the segment written. A
/// partition's next owner, after a crash, writes the segments left and begins a new one: rows of
/// windows they hold or that are committed are not logged again; a row emitted again with other
/// values (a late sample's correction) replaces the logged one, unless its period was written
/// already (counted as late).

#include "registry.hpp"

namespace fleetflow {

void RegisterRowArchive(Registry& registry);

}  // namespace fleetflow

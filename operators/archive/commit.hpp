#pragma once
/// How the archive operators (archive, row_archive) make files visible exactly once, and what
/// else they share: a partition's flush writes its files under temporary names and syncs them,
/// stores its commit record (an atomic rename: the commit point), then renames the files into
/// place. A partition's next owner reads the record, finishes the renames and deletes the
/// temporary files no record names (docs/archive.md, "Exactly once").

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jetstream.hpp"
#include "layout.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "nats_config.hpp"
#include "operator.hpp"

namespace fleetflow::archive {

/// Writes `data` to `path` and syncs it; throws std::runtime_error.
void WriteSynced(const std::filesystem::path& path, std::string_view data);
/// Syncs a directory, so that the names created or renamed in it are stored; throws.
void SyncDirectory(const std::filesystem::path& dir);

/// A file written to its temporary name and synced, and its place once committed (both
/// relative to the root).
struct Staged {
  std::string from;
  std::string to;
};

/// A partition's commit record: how far it is archived (named numbers: the last stream
/// sequence, the last window) and the files of its last flush.
struct CommitRecord {
  std::map<std::string, uint64_t> marks;
  std::vector<Staged> files;
};

/// The commit records of one node's partitions (<root>/_commits/<node>/p<partition>.json) and
/// the staged files (<root>/_tmp/<node>.p<partition>.*).
class Commits {
 public:
  Commits(std::filesystem::path root, std::string node);

  const std::filesystem::path& root() const { return root_; }
  const std::filesystem::path& dir() const { return dir_; }
  /// The staged name (relative to the root) of a partition's file `name`.
  std::string StagedName(uint32_t partition, std::string_view name) const;

  /// The partition's record, nullopt when it has none. An unreadable record is logged and taken
  /// as none (`unreadable` set).
  std::optional<CommitRecord> Read(uint32_t partition, bool* unreadable = nullptr) const;
  /// Stores the record (the commit point of the flush whose files it names); throws.
  void Store(uint32_t partition, const CommitRecord& record) const;
  /// Renames the record's files that are still staged into place; how many it moved; throws.
  size_t Apply(const CommitRecord& record) const;
  /// Deletes the partition's staged files that `record` does not name (a flush whose record was
  /// never stored: not in the archive).
  void RemoveUnnamed(uint32_t partition, const std::optional<CommitRecord>& record) const;
  /// Reads the partition's record and finishes it (Apply, RemoveUnnamed), logging what it did.
  std::optional<CommitRecord> Recover(uint32_t partition) const;

 private:
  std::filesystem::path root_;
  std::string node_;
  std::filesystem::path dir_;
  std::filesystem::path staging_;
};

/// Deletes the day folders under <root>/<top> wholly older than `keep_from_ns` (`top`: a folder,
/// "rows=telemetry_1s", or every one of a kind, "sensor="); the folders deleted. Throws when one
/// cannot be deleted.
std::vector<std::filesystem::path> ExpireDays(const std::filesystem::path& root,
                                              std::string_view top, int64_t keep_from_ns);

/// Publishes each committed chunk's summary on a subject (core NATS: a chunk committed is in
/// the archive whether or not anyone hears of it), counted in the node's metrics.
class StatsPublisher {
 public:
  /// `subject` empty: publishes nothing.
  StatsPublisher(const OperatorContext& ctx, const NatsClientOptions& nats, std::string subject);
  /// {"node", "sensor" or "rows", "period", "cell", "partition", "vehicles", "samples" or
  /// "rows", "bytes", "path"}.
  void Publish(const Summary& summary, int64_t period_start_ns, std::string_view cell,
               std::string_view path);

 private:
  std::string node_;
  std::string subject_;
  std::optional<nats::ConnectOptions> connect_;
  std::unique_ptr<nats::Connection> conn_;
  RateLimitedLog log_;
  Counter& published_;
  Counter& failures_;
};

}  // namespace fleetflow::archive

#pragma once
// `fleetflow dump` (docs/recording.md, docs/cli.md): a recording as JSON lines, one per record,
// read without NATS or a pipeline.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace fleetflow {

struct DumpArgs {
  std::vector<std::string> files;
  bool rotated = false;  ///< each file stands for its rotated set FILE, FILE.1, FILE.2, ...
  /// Only records whose subject matches this NATS subject pattern (`*` one token, `>` the rest);
  /// empty: all.
  std::string subject;
  uint64_t limit = 0;  ///< at most this many records printed, over all files; 0: no limit
};

/// Adds the `dump` subcommand, its options filling `args`.
CLI::App* AddDumpCommand(CLI::App& app, DumpArgs& args);

/// Prints each record of `args.files` as one JSON object per line to `out`, and problems with
/// the files to `err`. Returns 0; 3 when a file ends in a truncated or corrupt record (a last
/// line says where, the next file is read); 2 when a file cannot be read, is not a recording or
/// has an unknown version (the reason on `err`; the other files are read).
int Dump(const DumpArgs& args, std::ostream& out, std::ostream& err);

/// Whether NATS subject `subject` matches `pattern` (tokens split on '.'; `*` matches one token,
/// a final `>` one or more).
bool SubjectMatches(const std::string& pattern, const std::string& subject);

}  // namespace fleetflow

#pragma once
// `fleetflow test` (docs/cli.md): declarative pipeline tests, run without NATS or PostgreSQL.
//
// A test file names a pipeline and gives tests: input messages (or a recording) and the rows the
// pipeline's timescale_sink nodes must write (by sink node id when it has several). The real
// pipeline runs on the real Runtime and operators, with its sources replaced by a replay of the
// inputs in arrival order (as `fleetflow replay` does), keyed_last_value on its memory backend,
// and each sink replaced by a capture that computes its rows with the sink's own row computation
// (RowValues; apps/row_capture.hpp, which `fleetflow replay --out` uses too). Partitioned sources
// run unpartitioned.

#include <ostream>
#include <string>
#include <vector>

#include "registry.hpp"

namespace fleetflow {

/// The JSON Schema of test files (schemas/test.schema.json; pretty JSON).
std::string TestFileJsonSchema();

/// Runs the tests of `files`, printing PASS / FAIL lines, the differences and a summary to
/// `out` and problems with the files to `err`. Returns 0 when every test passed, 1 when one
/// failed (or could not run), 2 when a file is invalid.
int RunPipelineTests(const Registry& registry, const std::vector<std::string>& files,
                     std::ostream& out, std::ostream& err);

/// Writes the inputs of the test named `test_name` in `test_file` as a recording at `out`: the
/// messages `fleetflow test` replays, in arrival order. False, with the problems printed to
/// `err`, when the file is invalid or has no such test with inputs.
bool WriteTestInputs(const Registry& registry, const std::string& test_file,
                     const std::string& test_name, const std::string& out, std::ostream& err);

}  // namespace fleetflow

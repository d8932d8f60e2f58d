// Fuzz target: the pipeline loader (JSON text -> validated graph, with ${VAR} expansion and the
// operators' config schemas). It must never crash, only return diagnostics.
// Input: the text of a pipeline file. It is also expanded with ExpandEnv, and given as the
// config of one operator to ParseOperatorConfig; the sources of a loaded pipeline build their
// input validation (WireInput) from their configs. Invariants checked: a result is either a
// pipeline or errors, every node comes after its inputs, and diagnostics format.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "clock.hpp"
#include "fuzz_check.hpp"
#include "pipeline.hpp"
#include "registry.hpp"
#include "wire.hpp"
#include "wire_input.hpp"

namespace {

class NoClock final : public fleetflow::Clock {
 public:
  int64_t NowNs() const override { return 0; }
};

/// A fixed environment, so runs are reproducible: some variables set, one set but empty.
std::optional<std::string> Env(const std::string& name) {
  static const std::map<std::string, std::string> env = {{"NATS_URL", "nats://127.0.0.1:4222"},
                                                         {"FLEETFLOW_PG", "host=/tmp dbname=x"},
                                                         {"EMPTY", ""},
                                                         {"SUBJECT", "vehicle.*.*"},
                                                         {"N", "7"}};
  auto it = env.find(name);
  if (it == env.end()) return std::nullopt;
  return it->second;
}

void CheckResult(const fleetflow::LoadResult& r) {
  FF_FUZZ_CHECK(r.ok() == r.errors.empty());
  for (const auto& e : r.errors) FF_FUZZ_CHECK(!e.Format().empty() && !e.message.empty());
  if (!r.ok()) return;
  std::set<std::string> seen;
  for (const auto& n : r.pipeline->nodes) {
    FF_FUZZ_CHECK(n.info != nullptr && n.info->name == n.type);
    for (const auto& in : n.inputs) FF_FUZZ_CHECK(seen.count(in) == 1);
    FF_FUZZ_CHECK(seen.insert(n.id).second);
  }
  FF_FUZZ_CHECK(!fleetflow::PipelineDot(*r.pipeline).empty());
  // What a source builds from its config before it connects: the decode and validation settings
  // (out-of-range values must not overflow), fed one sample far in the past and future.
  static fleetflow::Metrics metrics;
  static NoClock clock;
  for (const auto& n : r.pipeline->nodes) {
    if (n.type != "nats_source" && n.type != "replay_source") continue;
    fleetflow::WireInput input(fleetflow::OperatorContext{n.id, n.type, n.config, metrics, clock});
    static const auto payload = fleetflow::wire::EncodeBatch(std::vector<fleetflow::wire::Point>{
        {.ts_ns = INT64_MAX, .value = 1}, {.ts_ns = 1, .value = 2}});
    for (int64_t now : {INT64_MIN, int64_t{0}, INT64_MAX}) {
      std::shared_ptr<fleetflow::Body> body;
      input.Decode("vehicle.v1.speed", payload.data(), payload.size(), now, body);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fleetflow::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // pipeline files are small; keep iterations fast
  const std::string text(reinterpret_cast<const char*>(data), size);
  CheckResult(fleetflow::ParsePipeline(text, "fuzz.json", fleetflow::fuzz::Builtins(), Env));

  std::string expanded, error;
  if (!fleetflow::ExpandEnv(text, Env, expanded, error)) FF_FUZZ_CHECK(!error.empty());

  const auto& ops = fleetflow::fuzz::Builtins().all();
  fleetflow::Config config;
  for (const auto& e : fleetflow::ParseOperatorConfig(ops[size % ops.size()], text, config, Env)) {
    FF_FUZZ_CHECK(!e.Format().empty());
  }
  return 0;
}

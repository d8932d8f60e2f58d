#pragma once
/// Shared by the fuzz targets: an invariant check that crashes (so libFuzzer keeps the input and
/// the corpus test fails), quiet logging so rejects do not flood the fuzzer's output, and source
/// configs built exactly as a pipeline file's.

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "builtin.hpp"
#include "config.hpp"
#include "pipeline.hpp"
#include "registry.hpp"

#define FF_FUZZ_CHECK(cond)                                                                  \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

namespace fleetflow::fuzz {

inline void QuietLogs() { spdlog::set_level(spdlog::level::off); }

inline const Registry& Builtins() {
  static const Registry registry = [] {
    Registry r;
    RegisterBuiltinOperators(r);
    return r;
  }();
  return registry;
}

/// The validated, defaulted config of a replay_source node with `extra` settings (JSON members,
/// e.g. `"max_past_ms": 0`): what WireInput reads.
inline Config SourceConfig(const std::string& extra = "") {
  Config config;
  const std::string json = R"({"file": "fuzz.ffrc")" + (extra.empty() ? "" : ", " + extra) + "}";
  const auto errors = ParseOperatorConfig(*Builtins().Find("replay_source"), json, config,
                                          [](const std::string&) { return std::nullopt; });
  if (!errors.empty()) {
    std::fprintf(stderr, "fuzz source config: %s\n", errors.front().Format().c_str());
    std::abort();
  }
  return config;
}

}  // namespace fleetflow::fuzz

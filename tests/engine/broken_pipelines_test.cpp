// Every broken pipeline file under tests/data/broken gives exactly the diagnostics, with their
// lines and columns, that tests/data/broken/expected.txt lists: mistakes a new user makes, each
// refused with where it is and what to change.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "build_paths.hpp"
#include "builtin.hpp"
#include "pipeline.hpp"
#include "servers.hpp"

namespace fleetflow {
namespace {

/// The cases: every *.json there (directory.json is a directory), and a file that is not.
std::vector<std::string> Cases(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 5 && name.substr(name.size() - 5) == ".json") names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  names.push_back("missing.json");
  return names;
}

TEST(BrokenPipelinesTest, EachGivesTheListedDiagnostics) {
  Registry registry;
  RegisterBuiltinOperators(registry);
  const std::string dir = testing::SourceDir() + "/tests/data/broken";
  const auto no_env = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  std::string actual;
  for (const std::string& name : Cases(dir)) {
    const LoadResult r = LoadPipelineFile(dir + "/" + name, registry, no_env);
    EXPECT_FALSE(r.ok()) << name << " loads: a broken file must be refused";
    for (const Diagnostic& d : r.errors) {
      std::string line = d.Format();
      if (line.rfind(dir + "/", 0) == 0) line = line.substr(dir.size() + 1);
      // The directory's message names its path: relative, as in expected.txt.
      for (size_t at; (at = line.find(dir + "/")) != std::string::npos;) {
        line.erase(at, dir.size() + 1);
      }
      actual += line + "\n";
    }
  }
  std::string expected;
  std::istringstream in(testing::ReadFile(dir + "/expected.txt"));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') expected += line + "\n";
  }
  EXPECT_EQ(expected, actual) << "The diagnostics of tests/data/broken/*.json changed; if they "
                                 "are right, write them into tests/data/broken/expected.txt";
}

}  // namespace
}  // namespace fleetflow

// docs/writing_operators.md cannot drift from the code: every block it quotes appears verbatim in
// the file it names, and its pipeline is valid.
#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "build_paths.hpp"
#include "builtin.hpp"
#include "pipeline.hpp"

namespace fleetflow {
namespace {

constexpr const char* kGuide = "docs/writing_operators.md";

std::string Read(const std::string& relative) {
  std::ifstream in(::fleetflow::testing::SourceDir() + "/" + relative, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A fenced block of the guide, with the file named by a `<!-- from: PATH -->` line right above
/// its opening fence (empty when none).
struct Block {
  std::string lang;
  std::string source;
  std::string text;
  int line = 0;  // of the opening fence
};

std::vector<Block> Blocks(const std::string& markdown) {
  std::vector<Block> blocks;
  std::istringstream in(markdown);
  const std::string from = "<!-- from: ";
  std::string source;
  std::optional<Block> open;
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (open) {
      if (line == "```") {
        if (!open->text.empty()) open->text.pop_back();  // the last newline
        blocks.push_back(*open);
        open.reset();
      } else {
        open->text += line + "\n";
      }
    } else if (line.starts_with("```")) {
      open = Block{line.substr(3), source, "", n};
      source.clear();
    } else if (line.starts_with(from) && line.ends_with(" -->")) {
      source = line.substr(from.size(), line.size() - from.size() - 4);
    } else {
      source.clear();
    }
  }
  return blocks;
}

TEST(WritingOperatorsDocTest, EveryQuotedBlockAppearsVerbatimInTheFileItNames) {
  const auto blocks = Blocks(Read(kGuide));
  int quoted = 0;
  for (const auto& b : blocks) {
    if (b.lang == "cpp") {
      EXPECT_FALSE(b.source.empty())
          << kGuide << ":" << b.line << ": a C++ block without a <!-- from: PATH --> line above it";
    }
    if (b.source.empty()) continue;
    ++quoted;
    const std::string file = Read(b.source);
    ASSERT_FALSE(file.empty()) << kGuide << ":" << b.line << ": cannot read " << b.source;
    EXPECT_NE(file.find(b.text), std::string::npos)
        << kGuide << ":" << b.line << ": this block is no longer in " << b.source
        << "; quote the file as it is now:\n"
        << b.text;
  }
  EXPECT_GE(quoted, 12) << "the guide quotes fewer blocks than it did";
}

TEST(WritingOperatorsDocTest, ItsPipelineIsValid) {
  Registry registry;
  RegisterBuiltinOperators(registry);
  int pipelines = 0;
  for (const auto& b : Blocks(Read(kGuide))) {
    if (b.lang != "json") continue;
    ++pipelines;
    const LoadResult r = ParsePipeline(b.text, kGuide, registry);
    EXPECT_TRUE(r.ok()) << kGuide << ":" << b.line << ": "
                        << (r.errors.empty() ? "" : r.errors.front().Format());
  }
  EXPECT_EQ(pipelines, 1);
}

TEST(WritingOperatorsDocTest, TheReadmeLinksIt) {
  EXPECT_NE(Read("README.md").find("(docs/writing_operators.md)"), std::string::npos);
}

}  // namespace
}  // namespace fleetflow

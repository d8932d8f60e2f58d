// Runs every file of one fuzz target's committed corpus (tests/fuzz/corpus/<target>/) through
// the target's entry point, in the normal build: the seeds and every crash input kept there are
// checked wherever the suite runs, fuzzer or not. A crash or failed invariant aborts the test;
// the file being run is printed first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

TEST(FuzzCorpus, EveryFileRunsCleanly) {
  const std::filesystem::path dir = FF_FUZZ_CORPUS;
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir << " is missing";
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 5u) << dir << " should hold the committed seed corpus";

  int argc = 1;
  char name[] = "corpus_test";
  char* args[] = {name, nullptr};
  char** argv = args;
  LLVMFuzzerInitialize(&argc, &argv);
  for (const auto& f : files) {
    std::fprintf(stderr, "corpus: %s\n", f.filename().c_str());
    std::ifstream in(f, std::ios::binary);
    ASSERT_TRUE(in) << f;
    const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
    // A fresh heap copy of exactly the input's size, as libFuzzer passes it (so ASan sees
    // reads past the end).
    auto copy = std::make_unique<uint8_t[]>(std::max<size_t>(data.size(), 1));
    std::copy(data.begin(), data.end(), copy.get());
    EXPECT_EQ(LLVMFuzzerTestOneInput(copy.get(), data.size()), 0) << f;
  }
  std::fprintf(stderr, "corpus: %zu files from %s ran cleanly\n", files.size(), dir.c_str());
}

}  // namespace

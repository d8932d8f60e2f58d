// Fuzz target: the recording reader (FFRC files, schemas/recording.hpp) and what replay does
// with each record: WireInput::Decode at the recorded receive time.
// Input: the bytes of a recording file. It is read as given, then once more with the CRC of every
// complete record frame recomputed, so mutations past the CRC reach the record and replay paths.
// Invariants checked: the reader ends (end, truncated or corrupt), offsets only grow and stay
// within the file, and each record re-encodes to the bytes it was read from.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "clock.hpp"
#include "fuzz_check.hpp"
#include "metrics.hpp"
#include "operator.hpp"
#include "recording.hpp"
#include "wire_input.hpp"

namespace {

/// The reader opens paths; the input lives in an in-memory file reopened through /proc.
class MemFile {
 public:
  MemFile() : fd_(memfd_create("ff-recording-fuzz", 0)) { FF_FUZZ_CHECK(fd_ >= 0); }
  std::string Write(const uint8_t* data, size_t size) {
    FF_FUZZ_CHECK(ftruncate(fd_, 0) == 0);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      FF_FUZZ_CHECK(n > 0);
      done += static_cast<size_t>(n);
    }
    return "/proc/self/fd/" + std::to_string(fd_);
  }

 private:
  int fd_;
};

class NoClock final : public fleetflow::Clock {
 public:
  int64_t NowNs() const override { return 0; }
};

/// `data` with the CRC field of every complete record frame set to the CRC of its body.
std::vector<uint8_t> FixCrcs(const uint8_t* data, size_t size) {
  std::vector<uint8_t> out(data, data + size);
  size_t off = fleetflow::recording::kHeaderSize;
  while (off + 8 <= size) {
    const uint32_t len =
        static_cast<uint32_t>(out[off]) | (static_cast<uint32_t>(out[off + 1]) << 8) |
        (static_cast<uint32_t>(out[off + 2]) << 16) | (static_cast<uint32_t>(out[off + 3]) << 24);
    if (len > size - off - 8) break;
    const uint32_t crc = fleetflow::recording::Crc32(out.data() + off + 8, len);
    for (int i = 0; i < 4; ++i) out[off + 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
    off += 8 + len;
  }
  return out;
}

void ReadAll(const uint8_t* data, size_t size) {
  static MemFile file;
  static fleetflow::Metrics metrics;
  static NoClock clock;
  static fleetflow::WireInput input(fleetflow::OperatorContext{
      "fuzz", "replay_source", fleetflow::fuzz::SourceConfig(), metrics, clock});

  fleetflow::recording::Reader reader;
  if (!reader.Open(file.Write(data, size))) {
    FF_FUZZ_CHECK(!reader.error().empty());
    return;
  }
  FF_FUZZ_CHECK(reader.file_size() == size);
  fleetflow::recording::Record r;
  for (;;) {
    const uint64_t before = reader.offset();
    const auto status = reader.Next(r);
    if (status != fleetflow::recording::Reader::Status::kRecord) {
      FF_FUZZ_CHECK(reader.offset() == before);
      if (status == fleetflow::recording::Reader::Status::kEnd) {
        FF_FUZZ_CHECK(before == size);
      } else {
        FF_FUZZ_CHECK(!reader.error().empty() && before < size);
      }
      break;
    }
    FF_FUZZ_CHECK(reader.offset() > before && reader.offset() <= size);
    std::vector<uint8_t> encoded;
    fleetflow::recording::EncodeRecord(r, encoded);
    FF_FUZZ_CHECK(encoded.size() == reader.offset() - before);
    FF_FUZZ_CHECK(std::equal(encoded.begin(), encoded.end(), data + before));
    std::shared_ptr<fleetflow::Body> body;
    input.Decode(r.subject, r.payload.data(), r.payload.size(), r.recv_ns, body);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fleetflow::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ReadAll(data, size);
  const auto fixed = FixCrcs(data, size);
  if (!std::equal(fixed.begin(), fixed.end(), data)) ReadAll(fixed.data(), fixed.size());
  return 0;
}

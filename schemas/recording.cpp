#include "recording.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace fleetflow::recording {

namespace {

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = MakeCrcTable();

void Put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}
void Put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Put64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t Get(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

uint32_t Crc32(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::vector<uint8_t> EncodeHeader() {
  std::vector<uint8_t> h(kMagic.begin(), kMagic.end());
  Put16(h, kVersion);
  Put16(h, 0);
  return h;
}

void EncodeRecord(const Record& r, std::vector<uint8_t>& out) {
  const size_t subject_len = std::min<size_t>(r.subject.size(), UINT16_MAX);
  const size_t body_len = 8 + 2 + subject_len + r.payload.size();
  const size_t start = out.size();
  Put32(out, static_cast<uint32_t>(body_len));
  Put32(out, 0);  // CRC, filled in below
  Put64(out, static_cast<uint64_t>(r.recv_ns));
  Put16(out, static_cast<uint16_t>(subject_len));
  out.insert(out.end(), r.subject.begin(),
             r.subject.begin() + static_cast<std::ptrdiff_t>(subject_len));
  out.insert(out.end(), r.payload.begin(), r.payload.end());
  const uint32_t crc = Crc32(out.data() + start + 8, body_len);
  for (int i = 0; i < 4; ++i) out[start + 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

Writer::~Writer() { Close(); }

bool Writer::Open(const std::string& path) {
  Close();
  error_.clear();
  file_ = std::fopen(path.c_str(), "wb");
  if (file_ == nullptr) {
    error_ = path + ": cannot create: " + std::strerror(errno);
    return false;
  }
  buffer_ = EncodeHeader();
  written_ = 0;
  records_ = 0;
  return Flush();
}

void Writer::Append(const Record& r) {
  EncodeRecord(r, buffer_);
  ++records_;
}

bool Writer::Flush() {
  if (file_ == nullptr) return false;
  if (!buffer_.empty()) {
    const size_t n = std::fwrite(buffer_.data(), 1, buffer_.size(), file_);
    written_ += n;
    const bool ok = n == buffer_.size();
    buffer_.clear();
    if (!ok) {
      error_ = std::string("write failed: ") + std::strerror(errno);
      return false;
    }
  }
  if (std::fflush(file_) != 0) {
    error_ = std::string("flush failed: ") + std::strerror(errno);
    return false;
  }
  return true;
}

bool Writer::Close() {
  if (file_ == nullptr) return true;
  bool ok = Flush();
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  return ok;
}

Reader::~Reader() {
  if (file_ != nullptr) std::fclose(file_);
}

bool Reader::Open(const std::string& path) {
  error_.clear();
  file_ = std::fopen(path.c_str(), "rb");
  if (file_ == nullptr) {
    error_ = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::fseek(file_, 0, SEEK_END);
  file_size_ = static_cast<uint64_t>(std::ftell(file_));
  std::fseek(file_, 0, SEEK_SET);
  uint8_t h[kHeaderSize];
  if (std::fread(h, 1, kHeaderSize, file_) != kHeaderSize ||
      std::memcmp(h, kMagic.data(), kMagic.size()) != 0) {
    error_ = path + ": not a fleetflow recording (no FFRC header)";
    return false;
  }
  version_ = static_cast<uint16_t>(Get(h + 4, 2));
  if (version_ != kVersion) {
    error_ = path + ": recording format version " + std::to_string(version_) +
             " is not supported (this build reads version " + std::to_string(kVersion) +
             "); use a fleetflow release that supports it";
    return false;
  }
  offset_ = kHeaderSize;
  return true;
}

Reader::Status Reader::Next(Record& out) {
  uint8_t head[8];
  const size_t got = std::fread(head, 1, sizeof head, file_);
  if (got == 0 && std::feof(file_)) return Status::kEnd;
  if (got < sizeof head) {
    error_ = "truncated record header at byte offset " + std::to_string(offset_);
    return Status::kTruncated;
  }
  const auto len = static_cast<uint32_t>(Get(head, 4));
  const auto crc = static_cast<uint32_t>(Get(head + 4, 4));
  if (len < 10 || len > kMaxBody) {
    error_ = "corrupt record at byte offset " + std::to_string(offset_) + " (length " +
             std::to_string(len) + ")";
    return Status::kCorrupt;
  }
  body_.resize(len);
  if (std::fread(body_.data(), 1, len, file_) != len) {
    error_ = "truncated record at byte offset " + std::to_string(offset_) + " (" +
             std::to_string(len) + "-byte body, file ends at " + std::to_string(file_size_) + ")";
    return Status::kTruncated;
  }
  const uint32_t actual = Crc32(body_.data(), len);
  const auto subject_len = static_cast<size_t>(Get(body_.data() + 8, 2));
  if (actual != crc || 10 + subject_len > len) {
    error_ = "corrupt record at byte offset " + std::to_string(offset_) + " (CRC " + Hex(actual) +
             ", expected " + Hex(crc) + ")";
    return Status::kCorrupt;
  }
  out.recv_ns = static_cast<int64_t>(Get(body_.data(), 8));
  out.subject.assign(reinterpret_cast<const char*>(body_.data() + 10), subject_len);
  out.payload.assign(body_.begin() + static_cast<std::ptrdiff_t>(10 + subject_len), body_.end());
  offset_ += 8 + len;
  return Status::kRecord;
}

}  // namespace fleetflow::recording

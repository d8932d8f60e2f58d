#pragma once
/// The recording file format (docs/recording.md): what `fleetflow record` writes and
/// replay_source reads. Shared, no engine dependencies.
///
///   file   = header record*
///   header = "FFRC" (4 bytes) | version u16 LE (= 1) | flags u16 LE (= 0)
///   record = body_len u32 LE | crc32 u32 LE (CRC-32/ISO-HDLC of body) | body
///   body   = recv_ns i64 LE | subject_len u16 LE | subject bytes | payload bytes (the rest)
///
/// A record is written whole or not at all (one buffered write, then a flush per batch), so a
/// file cut by a crash ends at a record boundary or inside one record: the reader stops there
/// and reports the byte offset of the damaged record.

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow::recording {

inline constexpr std::string_view kMagic = "FFRC";
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderSize = 8;
inline constexpr size_t kRecordOverhead = 8 + 8 + 2;  // len, crc, recv_ns, subject_len
/// A body larger than this is treated as corruption (NATS payloads are at most 64 MiB).
inline constexpr uint32_t kMaxBody = 64u << 20;

struct Record {
  int64_t recv_ns = 0;  // when the recorder received it, ns since the Unix epoch
  std::string subject;
  std::vector<uint8_t> payload;

  bool operator==(const Record&) const = default;
};

/// CRC-32 (ISO-HDLC, as zlib's crc32) of `size` bytes, continuing from `crc`.
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

/// Appends the encoding of `r` (length, CRC, body) to `out`.
void EncodeRecord(const Record& r, std::vector<uint8_t>& out);
/// The 8-byte file header of the current version.
std::vector<uint8_t> EncodeHeader();

/// Writes a recording. Not thread-safe. Records are buffered and written whole by Flush().
class Writer {
 public:
  Writer() = default;
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  /// Creates (truncates) `path` and writes the header; false with error() on failure.
  bool Open(const std::string& path);
  void Append(const Record& r);
  /// Writes the buffered records to the file and fflush()es; false with error() on failure.
  bool Flush();
  /// Flushes and closes; safe to call more than once.
  bool Close();
  bool is_open() const { return file_ != nullptr; }
  /// Bytes in the file once flushed (header included).
  uint64_t bytes() const { return written_ + buffer_.size(); }
  uint64_t records() const { return records_; }
  const std::string& error() const { return error_; }

 private:
  std::FILE* file_ = nullptr;
  std::vector<uint8_t> buffer_;
  uint64_t written_ = 0;
  uint64_t records_ = 0;
  std::string error_;
};

/// Reads a recording sequentially.
class Reader {
 public:
  enum class Status {
    kRecord,     // `out` holds the next record
    kEnd,        // clean end of file
    kTruncated,  // the file ends inside a record (offset() is where it starts)
    kCorrupt,    // a record fails its CRC or has an impossible length (offset() is where)
  };

  Reader() = default;
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  /// Opens `path` and checks the header; false with error() when the file cannot be read, is
  /// not a recording, or has a version this build does not know.
  bool Open(const std::string& path);
  Status Next(Record& out);
  /// Byte offset of the next record to read; after kTruncated / kCorrupt, of the damaged one.
  uint64_t offset() const { return offset_; }
  uint64_t file_size() const { return file_size_; }
  uint16_t version() const { return version_; }
  /// What went wrong (Open failed, or the last Next returned kTruncated / kCorrupt).
  const std::string& error() const { return error_; }

 private:
  std::FILE* file_ = nullptr;
  uint64_t offset_ = 0;
  uint64_t file_size_ = 0;
  uint16_t version_ = 0;
  std::vector<uint8_t> body_;
  std::string error_;
};

}  // namespace fleetflow::recording

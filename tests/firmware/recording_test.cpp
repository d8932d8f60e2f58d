// The recording file format (schemas/recording.hpp, docs/recording.md): round trip, a file cut
// short, a damaged byte, an unknown version.
#include "recording.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <iterator>

namespace fleetflow::recording {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/ff-recording-" + name;
}

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void WriteAll(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::vector<Record> Sample() {
  std::vector<Record> rs;
  for (int i = 0; i < 5; ++i) {
    Record r;
    r.recv_ns = 1'700'000'000'000'000'000 + i * 1'000'000;
    r.subject = "vehicle.v" + std::to_string(i) + ".speed";
    r.payload.assign(static_cast<size_t>(10 + i), static_cast<uint8_t>(i));
    rs.push_back(r);
  }
  rs.push_back(Record{42, "vehicle.v1.status", {'o', 'f', 'f'}});
  rs.push_back(Record{43, "vehicle.v1.gps", {}});  // an empty payload is a valid record
  return rs;
}

std::string WriteSample(const std::string& name) {
  const std::string path = TempPath(name);
  Writer w;
  EXPECT_TRUE(w.Open(path)) << w.error();
  for (const auto& r : Sample()) w.Append(r);
  EXPECT_TRUE(w.Close()) << w.error();
  return path;
}

/// Reads until the reader stops; returns the records and the final status.
std::pair<std::vector<Record>, Reader::Status> ReadBack(Reader& reader) {
  std::vector<Record> out;
  Record r;
  for (;;) {
    const auto s = reader.Next(r);
    if (s != Reader::Status::kRecord) return {out, s};
    out.push_back(r);
  }
}

/// Reading `path` back stops with `status` after `records_read` records, at byte `offset`, with
/// an error that says `error_text`.
void ExpectReadStops(const std::string& path, Reader::Status status, size_t records_read,
                     size_t offset, const std::string& error_text) {
  Reader reader;
  ASSERT_TRUE(reader.Open(path));
  const auto [records, stopped] = ReadBack(reader);
  EXPECT_EQ(stopped, status);
  EXPECT_EQ(records.size(), records_read);
  EXPECT_EQ(reader.offset(), offset);
  EXPECT_NE(reader.error().find(error_text), std::string::npos) << reader.error();
}

TEST(Recording, RoundTrip) {
  const std::string path = WriteSample("roundtrip");
  Reader reader;
  ASSERT_TRUE(reader.Open(path)) << reader.error();
  EXPECT_EQ(reader.version(), kVersion);
  const auto [records, status] = ReadBack(reader);
  EXPECT_EQ(status, Reader::Status::kEnd);
  EXPECT_EQ(records, Sample());
  EXPECT_EQ(reader.offset(), reader.file_size());
}

TEST(Recording, HeaderIsMagicAndVersion) {
  const auto bytes = ReadAll(WriteSample("header"));
  ASSERT_GE(bytes.size(), kHeaderSize);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "FFRC");
  EXPECT_EQ(bytes[4] | (bytes[5] << 8), kVersion);
}

TEST(Recording, CrcIsTheStandardCrc32) {
  EXPECT_EQ(Crc32("123456789", 9), 0xCBF43926u);  // the CRC-32/ISO-HDLC check value
}

TEST(Recording, TruncatedFileStopsAtTheDamagedRecordWithItsOffset) {
  const std::string path = WriteSample("truncated");
  auto bytes = ReadAll(path);
  // Offset of record 3: header + the encodings of records 0..2.
  std::vector<uint8_t> prefix = EncodeHeader();
  for (int i = 0; i < 3; ++i) EncodeRecord(Sample()[static_cast<size_t>(i)], prefix);
  ASSERT_EQ(
      std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(prefix.size())),
      prefix);
  for (size_t cut : {prefix.size() + 3, prefix.size() + 12}) {  // inside the header, the body
    WriteAll(path,
             std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(cut)));
    ExpectReadStops(path, Reader::Status::kTruncated, 3, prefix.size(),
                    "byte offset " + std::to_string(prefix.size()));
  }
}

TEST(Recording, CorruptedByteFailsTheCrcOfItsRecord) {
  const std::string path = WriteSample("corrupt");
  auto bytes = ReadAll(path);
  std::vector<uint8_t> prefix = EncodeHeader();
  for (int i = 0; i < 2; ++i) EncodeRecord(Sample()[static_cast<size_t>(i)], prefix);
  bytes[prefix.size() + 20] ^= 0x01;  // a byte of record 2's subject
  WriteAll(path, bytes);
  ExpectReadStops(path, Reader::Status::kCorrupt, 2, prefix.size(),
                  "corrupt record at byte offset");
}

TEST(Recording, ImpossibleLengthIsCorruption) {
  const std::string path = WriteSample("length");
  auto bytes = ReadAll(path);
  bytes[kHeaderSize + 3] = 0xFF;  // record 0's length > 4 GiB / 64 MiB limit
  WriteAll(path, bytes);
  Reader reader;
  ASSERT_TRUE(reader.Open(path));
  Record r;
  EXPECT_EQ(reader.Next(r), Reader::Status::kCorrupt);
  EXPECT_EQ(reader.offset(), kHeaderSize);
}

TEST(Recording, UnknownVersionIsRefusedWithAClearMessage) {
  const std::string path = WriteSample("version");
  auto bytes = ReadAll(path);
  bytes[4] = 9;
  WriteAll(path, bytes);
  Reader reader;
  EXPECT_FALSE(reader.Open(path));
  EXPECT_NE(reader.error().find("recording format version 9 is not supported"), std::string::npos)
      << reader.error();
}

TEST(Recording, NotARecordingIsRefused) {
  const std::string path = TempPath("garbage");
  WriteAll(path, {'{', '"', 'a', '"', ':', '1', '}', '\n', ' '});
  Reader reader;
  EXPECT_FALSE(reader.Open(path));
  EXPECT_NE(reader.error().find("not a fleetflow recording"), std::string::npos);
  Reader missing;
  EXPECT_FALSE(missing.Open(TempPath("does-not-exist")));
  EXPECT_NE(missing.error().find("cannot open"), std::string::npos);
}

TEST(Recording, HeaderOnlyFileIsEmpty) {
  const std::string path = TempPath("empty");
  Writer w;
  ASSERT_TRUE(w.Open(path));
  ASSERT_TRUE(w.Close());
  Reader reader;
  ASSERT_TRUE(reader.Open(path));
  Record r;
  EXPECT_EQ(reader.Next(r), Reader::Status::kEnd);
}

}  // namespace
}  // namespace fleetflow::recording

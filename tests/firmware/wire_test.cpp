#include "wire.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace fleetflow::wire {
namespace {

std::vector<Point> SomePoints() {
  Point gps{.ts_ns = 1'700'000'000'123'456'789,
            .seq = 7,
            .lat = 48.8566,
            .lon = 2.3522,
            .has_position = true};
  Point speed{.ts_ns = 1'700'000'000'200'000'000, .seq = 4'000'000'000u, .value = 13.25};
  Point negative{.ts_ns = -5, .seq = 0, .value = -42.5};
  return {gps, speed, negative};
}

// Decoding must fail with `expected` (or any error when kNone) and leave `out` untouched.
void ExpectRejected(const std::vector<uint8_t>& buf, DecodeError expected = DecodeError::kNone) {
  std::vector<Point> out = {Point{.ts_ns = 1}};
  const DecodeError err = DecodeBatch(buf.data(), buf.size(), out);
  if (expected == DecodeError::kNone) {
    EXPECT_NE(err, DecodeError::kNone) << "size " << buf.size();
  } else {
    EXPECT_EQ(err, expected) << ToString(err);
  }
  ASSERT_EQ(out.size(), 1u);
}

TEST(Wire, BatchRoundTripKeepsValuesAndPositions) {
  const std::vector<Point> in = SomePoints();
  const std::vector<uint8_t> buf = EncodeBatch(in);
  ASSERT_GE(buf.size(), 8u);
  EXPECT_EQ(std::memcmp(buf.data() + 4, "FLT1", 4), 0);
  std::vector<Point> out;
  ASSERT_EQ(DecodeBatch(buf.data(), buf.size(), out), DecodeError::kNone);
  EXPECT_EQ(out, in);
}

// nats.c hands payloads over at arbitrary addresses; decoding must not depend on alignment
// (a sanitizer build reports misaligned reads here).
TEST(Wire, DecodesPayloadAtOddAddress) {
  const std::vector<uint8_t> buf = EncodeBatch(SomePoints());
  std::vector<uint8_t> shifted(buf.size() + 1);
  std::memcpy(shifted.data() + 1, buf.data(), buf.size());
  std::vector<Point> out;
  ASSERT_EQ(DecodeBatch(shifted.data() + 1, buf.size(), out), DecodeError::kNone);
  EXPECT_EQ(out, SomePoints());
}

TEST(Wire, DecodeAppendsToOutput) {
  const std::vector<uint8_t> buf = EncodeBatch(SomePoints());
  std::vector<Point> out = {Point{.ts_ns = 1}};
  ASSERT_EQ(DecodeBatch(buf.data(), buf.size(), out), DecodeError::kNone);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].ts_ns, 1);
  EXPECT_EQ(out[1], SomePoints()[0]);
}

TEST(Wire, EmptyBatchRoundTrips) {
  const std::vector<uint8_t> buf = EncodeBatch({});
  std::vector<Point> out;
  EXPECT_EQ(DecodeBatch(buf.data(), buf.size(), out), DecodeError::kNone);
  EXPECT_TRUE(out.empty());
}

TEST(Wire, EmptyPayloadIsEmpty) {
  std::vector<Point> out;
  EXPECT_EQ(DecodeBatch(nullptr, 0, out), DecodeError::kEmpty);
  const uint8_t byte = 0;
  EXPECT_EQ(DecodeBatch(&byte, 0, out), DecodeError::kEmpty);
  EXPECT_TRUE(out.empty());
}

TEST(Wire, OtherFileIdentifierIsRejected) {
  std::vector<uint8_t> buf = EncodeBatch(SomePoints());
  std::memcpy(buf.data() + 4, "XYZ9", 4);
  ExpectRejected(buf, DecodeError::kBadIdentifier);
}

TEST(Wire, TruncatedBuffersAreRejected) {
  const std::vector<uint8_t> full = EncodeBatch(SomePoints());
  for (size_t n = 1; n < full.size(); ++n) {
    ExpectRejected(std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(n)));
  }
}

TEST(Wire, RandomGarbageIsRejected) {
  std::mt19937_64 rng(20240601);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> buf(1 + rng() % 256);
    for (uint8_t& b : buf) b = static_cast<uint8_t>(rng());
    ExpectRejected(buf);
    if (buf.size() >= 8) {  // garbage that claims to be FLT1 must not get past the verifier
      std::memcpy(buf.data() + 4, "FLT1", 4);
      ExpectRejected(buf);
    }
  }
}

TEST(Wire, CorruptedBytesNeverCrash) {
  const std::vector<uint8_t> full = EncodeBatch(SomePoints());
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> buf = full;
    buf[rng() % buf.size()] = static_cast<uint8_t>(rng());
    std::vector<Point> out;
    if (DecodeBatch(buf.data(), buf.size(), out) != DecodeError::kNone) {
      ASSERT_TRUE(out.empty());
    }
  }
}

TEST(Wire, SubjectsAreBuiltFromTokens) {
  EXPECT_EQ(SampleSubject("v00001", "speed"), "vehicle.v00001.speed");
  EXPECT_EQ(StatusSubject("v00001"), "vehicle.v00001.status");
}

TEST(Wire, ParseSubjectAcceptsSamplesAndStatus) {
  const Subject sample = ParseSubject("vehicle.v1.speed");
  EXPECT_EQ(sample.kind, SubjectKind::kSample);
  EXPECT_EQ(sample.vehicle, "v1");
  EXPECT_EQ(sample.sensor, "speed");

  const Subject status = ParseSubject("vehicle.v1.status");
  EXPECT_EQ(status.kind, SubjectKind::kStatus);
  EXPECT_EQ(status.vehicle, "v1");
  EXPECT_TRUE(status.sensor.empty());

  EXPECT_EQ(ParseSubject("vehicle.truck_7-b.soc").kind, SubjectKind::kSample);
}

TEST(Wire, ParseSubjectRejectsMalformedSubjects) {
  for (const char* s : {"vehicle.v1", "vehicle.v1.a.b", "vehicle..x", "vehicle.v$.speed",
                        "other.v1.speed", "vehicle.v1.", "", "vehicle", "vehicle.v1.sp eed"}) {
    EXPECT_EQ(ParseSubject(s).kind, SubjectKind::kInvalid) << '"' << s << '"';
  }
  const std::string long_id(65, 'a');
  EXPECT_EQ(ParseSubject("vehicle." + long_id + ".speed").kind, SubjectKind::kInvalid);
}

TEST(Wire, ParseStatusAcceptsOnAndOff) {
  bool on = false;
  EXPECT_TRUE(ParseStatus("on", on));
  EXPECT_TRUE(on);
  EXPECT_TRUE(ParseStatus(" off\n", on));
  EXPECT_FALSE(on);
  EXPECT_FALSE(ParseStatus("ON", on));
  EXPECT_FALSE(ParseStatus("", on));
}

}  // namespace
}  // namespace fleetflow::wire

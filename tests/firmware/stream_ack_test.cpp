#include "stream_ack.hpp"

#include <gtest/gtest.h>

namespace fleetflow::firmware {
namespace {

TEST(StreamAck, StoredDuplicateAndRefused) {
  StreamAck a = ParseStreamAck(R"({"stream":"TELEMETRY","seq":42})");
  EXPECT_TRUE(a.stored);
  EXPECT_EQ(a.seq, 42u);
  EXPECT_FALSE(a.duplicate);

  a = ParseStreamAck(R"({"stream":"TELEMETRY","seq":18446744073709551615,"duplicate":true})");
  EXPECT_TRUE(a.stored);
  EXPECT_EQ(a.seq, 18446744073709551615u);
  EXPECT_TRUE(a.duplicate);

  a = ParseStreamAck(R"({"stream":"TELEMETRY", "seq":1,"duplicate": true})");  // 2.9.10's text
  EXPECT_TRUE(a.stored);
  EXPECT_EQ(a.seq, 1u);
  EXPECT_TRUE(a.duplicate);

  a = ParseStreamAck(R"({ "stream" : "T", "domain":"hub", "seq" : 7 })");
  EXPECT_TRUE(a.stored);
  EXPECT_EQ(a.seq, 7u);

  a = ParseStreamAck(
      R"({"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}})");
  EXPECT_FALSE(a.stored);
  EXPECT_EQ(a.error, "maximum messages exceeded");
}

TEST(StreamAck, AnythingElseIsNotAnAck) {
  for (const char* bad :
       {"", "{}", "+OK", R"({"stream":"T"})", R"({"seq":3})", R"({"stream":"T","seq":"3"})",
        R"({"stream":"T","seq":-1})", R"({"error":{}})"}) {
    const StreamAck a = ParseStreamAck(bad);
    EXPECT_FALSE(a.stored) << bad;
    EXPECT_FALSE(a.error.empty()) << bad;
  }
}

TEST(StreamAck, RecordIdsComeFromTheInboxSubject) {
  const std::string inbox = "_INBOX.vehicle.v1.AbC123";
  EXPECT_EQ(AckRecordId(inbox + ".0", inbox), 0u);
  EXPECT_EQ(AckRecordId(inbox + ".123456", inbox), 123456u);
  EXPECT_EQ(AckRecordId(inbox, inbox), std::nullopt);
  EXPECT_EQ(AckRecordId(inbox + ".", inbox), std::nullopt);
  EXPECT_EQ(AckRecordId(inbox + ".12x", inbox), std::nullopt);
  EXPECT_EQ(AckRecordId(inbox + "X.12", inbox), std::nullopt);
  EXPECT_EQ(AckRecordId("_INBOX.vehicle.v2.AbC123.5", inbox), std::nullopt);
}

TEST(StreamAck, MessageIdIsTheInboxTokenAndTheRecordId) {
  EXPECT_EQ(MessageId("_INBOX.vehicle.v1.AbC123", 77), "AbC123-77");
  EXPECT_EQ(MessageId("_INBOX.vehicle.v1.AbC123", 77), MessageId("_INBOX.vehicle.v1.AbC123", 77));
  EXPECT_NE(MessageId("_INBOX.vehicle.v1.AbC123", 77), MessageId("_INBOX.vehicle.v1.XyZ789", 77));
}

}  // namespace
}  // namespace fleetflow::firmware

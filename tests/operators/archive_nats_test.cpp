// The archive operator on a real nats-server: each committed chunk's summary on
// fleetflow.archive.stats, and a partition's checkpoint in the source's state bucket.
#include <rapidjson/document.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "fleetflow/testkit/harness.hpp"
#include "layout.hpp"
#include "nats_fixture.hpp"

namespace fleetflow::testing {
namespace {

namespace fs = std::filesystem;
using testkit::OperatorHarness;
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kBase = 1'795'000'000 * kS;

SampleBatch Gps(const std::string& vehicle, int64_t ts, double lat, double lon, uint64_t sequence) {
  wire::Point p{ts, static_cast<uint32_t>(sequence), 0.0};
  p.lat = lat;
  p.lon = lon;
  p.has_position = true;
  SampleBatch b;
  b.vehicle = vehicle;
  b.sensor = "gps";
  b.points = {p};
  b.partition = 3;
  b.sequence = sequence;
  return b;
}

class ArchiveNatsTest : public NatsServerTest {
 protected:
  void TearDown() override { fs::remove_all(dir_); }
  const fs::path dir_ =
      fs::temp_directory_path() / ("ff-archive-nats-" + std::to_string(::getpid()));
};

TEST_F(ArchiveNatsTest, EachCommittedChunkPublishesItsSummaryOnTheStatsSubject) {
  auto sub = conn_->SubscribeSync("fleetflow.archive.stats");
  conn_->Flush(5000);
  OperatorHarness h(
      "archive", R"({"directory": ")" + dir_.string() + R"(", "url": ")" + server_.url() + R"("})");
  h.Feed(Gps("v1", kBase, 48.8566, 2.3522, 1));  // Paris
  h.Feed(Gps("v2", kBase, 48.8566, 2.3522, 2));
  h.Feed(Gps("v1", kBase + kS, 48.137, 11.575, 3));  // Munich
  h.TickAt(kBase, /*drain=*/true);

  std::map<std::string, rapidjson::Document> by_cell;
  bool no_responders = false;
  while (by_cell.size() < 2) {
    const auto m = sub->Next(10'000, no_responders);
    ASSERT_TRUE(m) << "a chunk's summary was not published";
    rapidjson::Document d;
    d.Parse(std::string(m->text()).c_str());
    ASSERT_TRUE(d.IsObject()) << m->text();
    by_cell[d["cell"].GetString()] = std::move(d);
  }
  const auto& paris = by_cell.at(archive::Geohash(48.8566, 2.3522, 5));
  EXPECT_STREQ(paris["sensor"].GetString(), "gps");
  EXPECT_EQ(paris["samples"].GetUint64(), 2u);
  EXPECT_EQ(paris["vehicles"].GetUint64(), 2u);
  EXPECT_EQ(paris["partition"].GetUint(), 3u);
  const fs::path chunk = dir_ / paris["path"].GetString();
  ASSERT_TRUE(fs::exists(chunk)) << chunk;
  EXPECT_EQ(paris["bytes"].GetUint64(), fs::file_size(chunk));
  EXPECT_EQ(by_cell.at(archive::Geohash(48.137, 11.575, 5))["samples"].GetUint64(), 1u);
  EXPECT_EQ(h.Counter("archive_stats_published"), 2u);
  EXPECT_EQ(h.Counter("archive_stats_failures"), 0u);
}

TEST_F(ArchiveNatsTest, AFlushStoresThePartitionsCheckpointInTheStateBucketAfterItsRecord) {
  testkit::HarnessOptions o;
  o.node_id = "arch";
  OperatorHarness h("archive",
                    R"({"directory": ")" + dir_.string() + R"(", "url": ")" + server_.url() +
                        R"(", "stats_subject": "", "backend": "jetstream_kv", "bucket": "state"})",
                    o);
  h.Feed(Gps("v1", kBase, 48.8566, 2.3522, 41));
  h.Feed(Gps("v1", kBase + kS, 48.8566, 2.3522, 42));
  h.TickAt(kBase, /*drain=*/true);
  auto kv = js_->OpenBucket("state");
  const auto checkpoint = kv->Get("agg.arch.3.checkpoint");
  ASSERT_TRUE(checkpoint);
  EXPECT_EQ(checkpoint->value, "42");
  std::ifstream record(dir_ / "_commits" / "arch" / "p3.json");
  std::stringstream text;
  text << record.rdbuf();
  EXPECT_NE(text.str().find("\"last_sequence\":42"), std::string::npos) << text.str();
}

}  // namespace
}  // namespace fleetflow::testing

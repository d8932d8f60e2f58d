// JetStreamReader's re-read of a partition's changelog on taking it over, against a real
// nats-server: when the stream read it makes (two consumers) fails, as it did for 32 s with a
// node of a cluster out, the messages come from the stream leader's gets instead, each once, in
// order, only those of the partition's subjects within the range.
#include "partitioning/jetstream_reader.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fleet_check.hpp"
#include "metrics.hpp"
#include "servers.hpp"

namespace fleetflow {
namespace {

using namespace std::chrono_literals;

TEST(JetStreamReaderTest, AChangelogTheStreamReadCannotReadComesFromTheLeadersGets) {
  FF_REQUIRE_NATS_SERVER();
  testing::TempDir dir("ff-reader-test");
  // The reader's user may not create the consumers a stream read makes (ephemeral ones); it
  // may ask the leader (STREAM.MSG.GET) and everything else.
  const std::string config = dir.File("server.conf");
  std::ofstream(config) << R"(authorization {
  users = [
    {user: admin, password: admin}
    {user: reader, password: reader, permissions: {
      publish: {allow: [">"], deny: ["$JS.API.CONSUMER.CREATE.S", "$JS.API.CONSUMER.CREATE.S.>"]}
      subscribe: {allow: [">"]}
    }}
  ]
}
)";
  std::ofstream(dir.File("admin.pw")) << "admin";
  std::ofstream(dir.File("reader.pw")) << "reader";
  testing::NatsServer server({}, config);
  server.Start();
  nats::ConnectOptions o;
  o.url = server.url();
  o.user = "admin";
  o.password_file = dir.File("admin.pw");
  auto admin = nats::Connection::Connect(o);
  nats::JetStream admin_js(*admin);
  admin_js.EnsureStream(nats::StreamOptions{.name = "S", .subjects = {"p.>"}});
  // Sequences 1..12: partition 0's messages at the odd ones.
  for (int i = 0; i < 6; ++i) {
    const std::string value = std::to_string(i);
    admin_js.Publish("p.0.v" + value, value.data(), value.size(), nats::Headers{}, 5000);
    admin_js.Publish("p.1.v" + value, value.data(), value.size(), nats::Headers{}, 5000);
  }
  JetStreamReaderOptions options;
  options.node = "source";
  options.consumer.stream = "S";
  options.consumer.durable = "d";
  options.consumer.filter_subject = "p.0.*";
  admin_js.EnsureConsumer(options.consumer);

  o.user = "reader";
  o.password_file = dir.File("reader.pw");
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  EXPECT_THROW(js.ReadStream("S", "p.0.*", nats::StreamStart{1, 0}), nats::Error);

  struct Delivered {
    std::string subject;
    uint64_t sequence;
    bool reread;
  };
  std::vector<Delivered> delivered;
  Metrics metrics;
  JetStreamReader reader(
      options, *conn, js,
      [&](uint32_t, nats::JsMessage& m, bool reread) {
        delivered.push_back({std::string(m.subject()), m.stream_sequence(), reread});
      },
      metrics, {});
  std::atomic<bool> assigned = false;
  std::thread assign([&] {
    reader.Assign(Assignment{.partition = 0, .emitted = {}, .reread = ChangelogRange{2, 9}});
    assigned = true;
  });
  const bool reread_whole = testing::WaitFor([&] { return assigned.load(); }, 30s);
  if (!reread_whole) reader.Stop();  // the re-read gives up once the reader stops
  assign.join();
  ASSERT_TRUE(reread_whole) << "the changelog was not re-read within 30 s";
  ASSERT_EQ(delivered.size(), 4u);
  for (size_t i = 0; i < delivered.size(); ++i) {
    EXPECT_EQ(delivered[i].sequence, 3 + 2 * i);
    EXPECT_EQ(delivered[i].subject, "p.0.v" + std::to_string(i + 1));
    EXPECT_TRUE(delivered[i].reread);
  }
  const auto reread = metrics.Values("changelog_messages_reread");
  ASSERT_EQ(reread.size(), 1u);
  EXPECT_EQ(reread[0].second, 4);
}

}  // namespace
}  // namespace fleetflow

// The NATS connection fields every operator shares: pipeline fields override the environment,
// secrets are paths, send_asap reaches the connection options.
#include "nats_config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace fleetflow::testing {
namespace {

NatsClientOptions Parsed(const std::string& fields) {
  const auto& spec = NatsClientSpec();
  return spec.Parse(Config::Parse("{" + fields + "}", spec.config(), "nats connection"));
}

TEST(NatsConfigTest, PipelineFieldsOverrideTheEnvironment) {
  setenv("NATS_URL", "nats://from-env:4222", 1);
  setenv("NATS_USER", "env-user", 1);
  const auto o = NatsConnectOptions(Parsed(R"("url": "nats://a:1,nats://b:2", "user": "engine",
                "password_file": "/run/secrets/nats-password", "send_asap": true)"),
                                    "fleetflow:test");
  EXPECT_EQ(o.url, "nats://a:1,nats://b:2");
  EXPECT_EQ(o.user, "engine");
  EXPECT_EQ(o.password_file, "/run/secrets/nats-password");
  EXPECT_TRUE(o.send_asap);
  EXPECT_EQ(o.name, "fleetflow:test");
  EXPECT_TRUE(o.on_connection_change != nullptr);
  unsetenv("NATS_URL");
  unsetenv("NATS_USER");
}

TEST(NatsConfigTest, EmptyFieldsLeaveTheEnvironmentsValues) {
  setenv("NATS_URL", "nats://from-env:4222", 1);
  setenv("NATS_TOKEN_FILE", "/run/secrets/token", 1);
  const auto o = NatsConnectOptions(Parsed(""), "fleetflow:test");
  EXPECT_EQ(o.url, "nats://from-env:4222");
  EXPECT_EQ(o.token_file, "/run/secrets/token");
  EXPECT_FALSE(o.send_asap);
  unsetenv("NATS_URL");
  unsetenv("NATS_TOKEN_FILE");
}

TEST(NatsConfigTest, PasswordsAndTokensInUrlsAreRedacted) {
  EXPECT_EQ(nats::RedactUrl("nats://engine:s3cret@db:4222"), "nats://engine:***@db:4222");
  EXPECT_EQ(nats::RedactUrl("tls://t0ken@a:1,nats://b:2,nats://u:p@c:3/x"),
            "tls://***@a:1,nats://b:2,nats://u:***@c:3/x");
  EXPECT_EQ(nats::RedactUrl("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
  EXPECT_EQ(nats::RedactUrl("nats://h:1/path@x"), "nats://h:1/path@x");  // no user info
  EXPECT_EQ(nats::RedactUrl(""), "");
}

}  // namespace
}  // namespace fleetflow::testing

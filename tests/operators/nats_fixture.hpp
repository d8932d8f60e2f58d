#pragma once
/// Fixture of the operator tests that need NATS: a nats-server of their own (JetStream on, free
/// port, temporary store), started per test, with a connection and a JetStream context on it.

#include <gtest/gtest.h>

#include <memory>

#include "jetstream.hpp"
#include "nats_client.hpp"
#include "servers.hpp"

namespace fleetflow::testing {

class NatsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    server_.Start();
    nats::ConnectOptions o;
    o.url = server_.url();
    conn_ = nats::Connection::Connect(o);
    js_ = std::make_unique<nats::JetStream>(*conn_);
  }

  NatsServer server_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
};

}  // namespace fleetflow::testing

#pragma once
/// The GoogleTest fixture of the end-to-end tests that share their servers across a test body.

#include <gtest/gtest.h>

#include <string>

#include "servers.hpp"

namespace fleetflow::testing {

/// A nats-server mapping the vehicles' subjects to `partitions` partitions (docs/scaling.md) and
/// a PostgreSQL, started in SetUp (the test is skipped when either is not installed), and a
/// temporary directory. A test suite derives from it, naming its directory:
/// `FaultsE2E() : PartitionedServersTest("fleetflow-faults-e2e") {}`.
class PartitionedServersTest : public ::testing::Test {
 protected:
  explicit PartitionedServersTest(const std::string& dir_prefix, int partitions = 16)
      : dir_(dir_prefix), partitions_(partitions) {}

  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    FF_REQUIRE_POSTGRES();
    nats_.MapPartitions(partitions_);
    nats_.Start();
    pg_.Start();
  }

  NatsServer nats_;
  PostgresServer pg_;
  TempDir dir_;

 private:
  int partitions_;
};

}  // namespace fleetflow::testing

// One worker per core queue group (docs/scaling.md): the guard against a real nats-server.
#include "partitioning/queue_group_guard.hpp"

#include <gtest/gtest.h>

#include "servers.hpp"

namespace fleetflow {
namespace {

class QueueGroupGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    server_.Start();
  }

  std::unique_ptr<nats::Connection> Connect() const {
    nats::ConnectOptions o;
    o.url = "nats://127.0.0.1:" + std::to_string(server_.port());
    return nats::Connection::Connect(o);
  }

  testing::NatsServer server_;
};

TEST_F(QueueGroupGuardTest, ASecondClaimOfTheSameGroupAndSubjectIsRefusedNamingTheFirst) {
  auto a = Connect(), b = Connect();
  QueueGroupGuard first(*a, "fleetflow", "vehicle.*.*", "telemetry");
  first.Claim(300);
  QueueGroupGuard second(*b, "fleetflow", "vehicle.*.*", "other");
  try {
    second.Claim(2000);
    FAIL() << "the second claim was taken";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("queue group 'fleetflow' on vehicle.*.* is read already by node "
                        "'telemetry' on host "),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("pipelines/jetstream.json"), std::string::npos) << what;
  }
}

TEST_F(QueueGroupGuardTest, OtherGroupsAndSubjectsAreFreeAndAGroupIsFreeOnceItsGuardIsGone) {
  auto a = Connect(), b = Connect();
  auto first = std::make_unique<QueueGroupGuard>(*a, "fleetflow", "vehicle.*.*", "telemetry");
  first->Claim(300);
  QueueGroupGuard other_group(*b, "other", "vehicle.*.*", "n");
  EXPECT_NO_THROW(other_group.Claim(300));
  QueueGroupGuard other_subject(*b, "fleetflow", "vehicle.*.status", "n");
  EXPECT_NO_THROW(other_subject.Claim(300));
  first.reset();
  QueueGroupGuard next(*b, "fleetflow", "vehicle.*.*", "n");
  EXPECT_NO_THROW(next.Claim(300));
}

}  // namespace
}  // namespace fleetflow

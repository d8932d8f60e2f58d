#include "queue_group_guard.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <stdexcept>

namespace fleetflow {

namespace {

/// A random token that tells this guard's own ask from another worker's.
std::string RandomToken() {
  std::random_device rd;
  return std::to_string(rd()) + std::to_string(rd());
}

/// "node 'telemetry' on host h1 (pid 42)".
std::string Who(const std::string& node) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return "node '" + node + "' on host " + host + " (pid " + std::to_string(getpid()) + ")";
}

}  // namespace

QueueGroupGuard::QueueGroupGuard(nats::Connection& conn, std::string group, std::string subject,
                                 const std::string& node)
    : conn_(conn),
      group_(std::move(group)),
      subject_(std::move(subject)),
      who_(Who(node)),
      token_(RandomToken()) {}

QueueGroupGuard::~QueueGroupGuard() = default;

std::string QueueGroupGuard::Ask() const { return group_ + "\n" + subject_ + "\n" + token_; }

void QueueGroupGuard::Claim(int wait_ms) {
  const std::string mine = Ask();
  const std::string same_group = group_ + "\n" + subject_ + "\n";
  // Answering first: a worker that starts at the same moment hears this one even when its ask
  // comes first (then both refuse, and whoever is started again alone runs).
  answering_ = conn_.Subscribe(kSubject, "", [this, mine, same_group](nats::Message&& m) {
    const std::string_view ask = m.text();
    if (ask == mine || !ask.starts_with(same_group) || m.reply().empty()) return;
    spdlog::error(
        "another worker asked to read queue group '{}' on {}, which {} reads: it refuses to "
        "start (one worker per core queue group; several need pipelines/jetstream.json)",
        group_, subject_, who_);
    try {
      conn_.Publish(m.reply(), who_);
    } catch (const std::exception& e) {
      spdlog::warn("queue group '{}': answering another worker: {}", group_, e.what());
    }
  });
  const std::string inbox = conn_.NewPrefixedInbox();
  auto answers = conn_.SubscribeSync(inbox);
  conn_.PublishRequest(kSubject, inbox, mine);
  conn_.Flush(5000);
  if (const std::string error = conn_.LastError();
      error.find("Permissions Violation") != std::string::npos) {
    spdlog::warn(
        "queue group '{}': this NATS user may not use {} ({}), so a second worker reading the "
        "group would not be noticed: allow it publish and subscribe there",
        group_, kSubject, error);
    return;
  }
  bool no_responders = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          until - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return;
    const auto answer = answers->Next(static_cast<int>(left), no_responders);
    if (!answer || answer->text().empty()) continue;
    throw std::runtime_error(
        "queue group '" + group_ + "' on " + subject_ + " is read already by " +
        std::string(answer->text()) +
        ": core NATS would share each vehicle's samples between the two workers, and both would "
        "write wrong rows. Run one worker per core queue group, or several on "
        "pipelines/jetstream.json (JetStream with partitions: each worker reads whole vehicles; "
        "docs/scaling.md)");
  }
}

}  // namespace fleetflow

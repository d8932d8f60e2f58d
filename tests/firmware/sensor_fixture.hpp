// Helpers of the fleet-sensor / fleetctl integration tests: a NATS subscriber that decodes and
// keeps what a vehicle publishes, and the paths of the firmware binaries.
#pragma once

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "build_paths.hpp"
#include "control.hpp"
#include "nats_client.hpp"
#include "servers.hpp"
#include "wire.hpp"

namespace fleetflow::testing {

inline std::string FirmwareBin(const std::string& name) {
  return ::fleetflow::testing::BinaryDir() + "/firmware/" + name;
}

inline int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Subscribes to vehicle.<vehicle>.> and keeps every decoded sample and status payload.
/// Reconnects quickly (50 ms) and resubscribes on its own after a server restart.
class VehicleCollector {
 public:
  VehicleCollector(nats::ConnectOptions options, const std::string& vehicle) {
    options.name = "collector";
    options.reconnect_wait_ms = 50;
    options.max_reconnect = -1;
    conn_ = nats::Connection::Connect(options);
    sub_ = conn_->Subscribe("vehicle." + vehicle + ".>", "",
                            [this](nats::Message&& m) { OnMessage(m); });
    conn_->Flush(5000);
  }

  /// Samples of one sensor in arrival order.
  std::vector<wire::Point> Samples(const std::string& sensor) const {
    const std::lock_guard lk(mu_);
    const auto it = samples_.find(sensor);
    return it == samples_.end() ? std::vector<wire::Point>() : it->second;
  }
  size_t Count(const std::string& sensor) const { return Samples(sensor).size(); }
  /// Distinct sequence numbers received for a sensor.
  std::set<uint32_t> Seqs(const std::string& sensor) const {
    std::set<uint32_t> seqs;
    for (const wire::Point& p : Samples(sensor)) seqs.insert(p.seq);
    return seqs;
  }
  /// Status payloads in arrival order.
  std::vector<std::string> Statuses() const {
    const std::lock_guard lk(mu_);
    return statuses_;
  }
  std::string LastStatus() const {
    const auto s = Statuses();
    return s.empty() ? "" : s.back();
  }
  /// Samples of `sensor` with start <= ts_ns < end.
  size_t CountBetween(const std::string& sensor, int64_t start, int64_t end) const {
    const auto points = Samples(sensor);
    return std::count_if(points.begin(), points.end(),
                         [&](const wire::Point& p) { return p.ts_ns >= start && p.ts_ns < end; });
  }
  int64_t NewestTs(const std::string& sensor) const {
    int64_t newest = 0;
    for (const wire::Point& p : Samples(sensor)) newest = std::max(newest, p.ts_ns);
    return newest;
  }
  nats::Connection& connection() { return *conn_; }

 private:
  void OnMessage(const nats::Message& m) {
    const std::string subject(m.subject());
    const wire::Subject parsed = wire::ParseSubject(subject);
    const std::lock_guard lk(mu_);
    if (parsed.kind == wire::SubjectKind::kStatus) {
      statuses_.emplace_back(m.text());
    } else if (parsed.kind == wire::SubjectKind::kSample) {
      wire::DecodeBatch(m.data(), m.size(), samples_[std::string(parsed.sensor)]);
    }
  }

  mutable std::mutex mu_;
  std::map<std::string, std::vector<wire::Point>> samples_;
  std::vector<std::string> statuses_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::Subscription> sub_;
};

/// The last line of `log` that parses as a vehicle status (fleet-sensor's final line).
inline std::optional<control::VehicleStatus> FinalStatus(const std::string& log) {
  std::optional<control::VehicleStatus> last;
  size_t start = 0;
  while (start < log.size()) {
    const size_t end = std::min(log.find('\n', start), log.size());
    if (auto s = control::ParseStatusJson(std::string_view(log).substr(start, end - start))) {
      last = std::move(s);
    }
    start = end + 1;
  }
  return last;
}

/// Asks a vehicle for its status with fleetctl; nullopt when it does not answer.
inline std::optional<control::VehicleStatus> QueryStatus(
    const std::string& url, const std::string& vehicle,
    const std::map<std::string, std::string>& env = {}) {
  const CommandResult r =
      RunCommand({FirmwareBin("fleetctl"), "--nats-url", url, "--json", "status", vehicle},
                 std::chrono::seconds(10), env);
  if (r.exit_code != 0) return std::nullopt;
  return control::ParseStatusJson(r.out.substr(0, r.out.find('\n')));
}

}  // namespace fleetflow::testing

#pragma once
/// The vehicle side of fleetflow: samples a vehicle's sensors at their rates, publishes them
/// over NATS, keeps them through link loss, and obeys control commands (control.hpp).
///
/// Threads: a sampler (wakes at each sensor's tick, reads the source, encodes, appends to the
/// offline buffer; never waits for the network) and a sender (publishes what the buffer holds
/// while the link is up and releases what is confirmed; what was not confirmed is sent again).
/// Commands and acknowledgements run on nats.c's delivery threads. All share one mutex, held
/// only for bookkeeping, never across a network call.
///
/// Two ways of confirming (AckMode):
/// - kFlush: every confirm_ms a PING/PONG round trip (Flush) confirms everything published
///   before it. The server has received those messages; a server killed before its stream
///   stored them loses them.
/// - kJetStream: each message goes out with a reply subject on this process's private inbox and
///   a Nats-Msg-Id header, and stays in the buffer until the stream answers that it stored it
///   (the sender takes the answers whenever it wakes: at the next sample, or within 50 ms).
///   At most max_in_flight messages wait for their acknowledgement; when none came for
///   ack_timeout_ms, or the connection was re-established since they left, every message in
///   flight is sent again (the stream drops the resends it already has, by Nats-Msg-Id, within
///   its duplicate window). Needs a stream capturing vehicle.<id>.*.
///   The stream stores one connection's messages in order, so nothing new may overtake what it
///   lost (a cluster electing the stream's leader answers nothing for seconds, then stores what
///   comes): once the oldest message in flight has waited half of ack_timeout_ms, nothing new
///   leaves until it is acknowledged or sent again; an acknowledgement for a later message
///   while the oldest still waits (over 100 ms) means the stream lost it: it is sent again at
///   once. Whatever goes out again, only the oldest message leaves until the stream has stored
///   it (a probe): a stream that comes back while a whole window is on its way would store the
///   window's newer messages before its older ones.
///
/// Alarms (`vehicle.<id>.cmd.alarm`, control::AlarmEvent): the agent keeps, per rule, the newest
/// alarm it heard of and whether it is active, logs one line per alarm raised (warning) and
/// cleared (info), and counts them. A raise no newer than the rule's newest (the same raised_ns
/// again, or an older one) and a clear of an alarm already cleared or superseded are duplicates:
/// counted, not logged, nothing changes. A clear ends the alarm whose raised_ns it names, and
/// also one it has not heard raised (the raise was lost); a newer raise supersedes the rule's
/// active alarm. A payload that is not an alarm event for this vehicle is counted and refused
/// (logged at most once a minute per reason). Alarms do not change sampling. With one process
/// per sensor (shared_vehicle), only the one publishing the status takes alarms.
///
/// Delivery is at least once across link loss: a message cut off with its connection is sent
/// again, so a consumer may see a (sensor, seq) twice, never a gap unless the buffer overflowed
/// (then dropped_samples says how many). Status `on` / `off` travel through the same buffer, in
/// order with the samples.

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "control.hpp"
#include "nats_client.hpp"
#include "offline_buffer.hpp"
#include "rate_scheduler.hpp"
#include "sensor_source.hpp"
#include "signals.hpp"

namespace fleetflow::firmware {

enum class AckMode { kFlush, kJetStream };
enum class LogLevel { kInfo, kWarning };

struct AgentConfig {
  std::string vehicle;
  std::vector<sim::SensorRate> sensors;
  int batch_ms = 0;               ///< 0: one message per sample, sent when taken
  size_t buffer_bytes = 1 << 20;  ///< offline buffer capacity
  bool publish_status = true;     ///< publish `on` / `off` on vehicle.<id>.status
  bool shared_vehicle = false;    ///< other processes run this vehicle's other sensors
  int confirm_ms = 200;           ///< interval of flush confirmations (and of ack checks)
  int drain_ms = 2000;            ///< how long Stop() tries to deliver what is buffered
  AckMode ack = AckMode::kFlush;
  int ack_timeout_ms = 2000;             ///< kJetStream: send again when no ack came for this long
  size_t max_in_flight = 256;            ///< kJetStream: messages waiting for their ack at most
  LogLevel log_level = LogLevel::kInfo;  ///< alarm lines (on stderr) below it are not written
};

class SensorAgent {
 public:
  /// `source` and `conn` must outlive the agent. Throws std::invalid_argument on a bad config.
  SensorAgent(AgentConfig config, SensorSource& source, nats::Connection& conn);
  ~SensorAgent();
  SensorAgent(const SensorAgent&) = delete;
  SensorAgent& operator=(const SensorAgent&) = delete;

  /// Publishes `on`, subscribes to vehicle.<id>.cmd.* and fleet.cmd.status, and starts
  /// sampling. Call once.
  void Start();
  /// Stops taking commands and sampling, sends the open batches and `off` (unless asleep), and
  /// waits up to drain_ms for the buffer to be delivered. Idempotent; the destructor calls it.
  void Stop();

  /// Runs a command as if it came over NATS; nullopt when it is meant for another process of a
  /// shared vehicle (a rate for a sensor this one does not run; an alarm, unless this one
  /// publishes the status).
  std::optional<control::VehicleStatus> Execute(std::string_view verb, std::string_view payload);
  control::VehicleStatus Status() const;

 private:
  static constexpr uint16_t kStatusTag = 0xFFFF;

  void SamplerLoop();
  void SenderLoop();
  void AckSenderLoop();
  void OnCommand(nats::Message&& msg);
  std::optional<control::VehicleStatus> ExecuteAlarm(std::string_view payload);
  // Applies a valid alarm to alarms_ and the counters; returns its log line ("" for none).
  std::string ApplyAlarm(const control::AlarmEvent& alarm, LogLevel& level);
  // The log line of a refused alarm payload, or "" when its reason was logged within the minute.
  std::string RefusedAlarmLine(const std::string& why, std::string_view payload);
  void Log(LogLevel level, const std::string& line) const;
  // kJetStream: hands everything in flight back to be sent again, the oldest first and alone.
  void SendAgain();
  // Takes the acknowledgements received so far, without waiting, and releases what they
  // confirm; `lk` holds mu_ and is released while taking them.
  void TakeAcks(std::unique_lock<std::mutex>& lk, std::vector<nats::Message>& received);
  // The helpers below expect mu_ held.
  void Sample(int sensor, int64_t wall_ns);
  void FlushBatches();
  void FlushBatch(int sensor);
  void PushStatus(std::string_view on_off);
  control::VehicleStatus StatusLocked() const;
  // Flushes the connection and checks no reconnection happened since `reconnects`; without mu_.
  bool Confirm(uint64_t reconnects);
  // The connection's reconnections so far, or nullopt when they cannot be read; without mu_.
  std::optional<uint64_t> Reconnects() const;

  const AgentConfig config_;
  SensorSource& source_;
  nats::Connection& conn_;
  const int64_t batch_ns_;
  std::vector<std::string> subjects_;  // by sensor index
  const std::string status_subject_;

  mutable std::mutex mu_;
  std::condition_variable sampler_cv_, sender_cv_;
  RateScheduler scheduler_;
  OfflineBuffer buffer_;
  std::vector<std::vector<wire::Point>> batches_;  // by sensor: samples not yet encoded
  std::vector<uint32_t> seq_;
  int64_t batch_deadline_ = 0;  // steady ns when the open batches are due
  bool active_ = true;
  bool stopping_ = false;
  bool sampler_done_ = false;
  bool sampler_poke_ = false;  // a command changed what the sampler waits for
  int64_t drain_deadline_ = 0;
  int64_t last_publish_ns_ = 0;
  control::Counters counters_;
  struct AlarmState {
    int64_t raised_ns = 0;  // the newest alarm of the rule heard of
    bool active = false;
  };
  std::map<std::string, AlarmState, std::less<>> alarms_;  // by rule
  struct RefusalLog {
    int64_t logged_ns = 0;  // steady ns of the last line
    uint64_t suppressed = 0;
  };
  std::map<std::string, RefusalLog, std::less<>> refusals_;  // by reason (a fixed text)
  // kJetStream: acknowledgements come to <ack_inbox_>.<record id>.
  std::string ack_inbox_;
  int64_t ack_progress_ns_ = 0;  // steady ns of the last release, or when the first left
  bool ack_gap_ = false;         // a later message was acknowledged while the oldest waits
  bool probing_ = false;         // sent again: only the oldest is out until the stream stores it

  std::unique_ptr<nats::Subscription> commands_, fleet_status_;
  // Taken by the sender when it wakes anyway: no thread hand-off per acknowledgement.
  std::unique_ptr<nats::SyncSubscription> acks_;
  std::thread sampler_, sender_;
  bool started_ = false, stopped_ = false;
};

}  // namespace fleetflow::firmware

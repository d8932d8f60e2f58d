#include "sensor_agent.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>

#include "stream_ack.hpp"
#include "wire.hpp"

namespace fleetflow::firmware {
namespace {

constexpr size_t kMaxSamplesPerMessage = 1024;
constexpr int kConfirmTimeoutMs = 2000;
constexpr auto kLinkPoll = std::chrono::milliseconds(50);
// --ack jetstream: how soon acknowledgements are taken when no sample wakes the sender first.
constexpr int64_t kAckPollNs = 50'000'000;
// --ack jetstream: an acknowledgement out of order this long after the oldest left (or the last
// release) is a lost message, not acknowledgements of a resend still on their way.
constexpr int64_t kAckGapNs = 100'000'000;

using SteadyClock = std::chrono::steady_clock;

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

SteadyClock::time_point SteadyAt(int64_t ns) {
  return SteadyClock::time_point(std::chrono::nanoseconds(ns));
}

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A refused alarm payload's reason is logged at most once in this interval.
constexpr int64_t kRefusalLogNs = 60'000'000'000;
// Rules whose alarm state is kept; past it, cleared ones are forgotten (oldest first).
constexpr size_t kMaxAlarmRules = 256;
// How much of a refused payload its log line shows.
constexpr size_t kPayloadExcerpt = 120;

control::VehicleStatus Refusal(const std::string& vehicle, std::string why) {
  control::VehicleStatus s;
  s.ok = false;
  s.vehicle = vehicle;
  s.error = std::move(why);
  return s;
}

// Appends " key=value": bare when value is a plain token, else a JSON string (one line always).
void AppendField(std::string& out, std::string_view key, std::string_view value) {
  out.append(" ").append(key).append("=");
  const bool bare = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("_-.:+").find(c) != std::string_view::npos;
  });
  if (bare) {
    out.append(value);
  } else {
    control::AppendJsonString(out, value);
  }
}

std::vector<double> RatesOf(const std::vector<sim::SensorRate>& sensors) {
  std::vector<double> hz;
  for (const sim::SensorRate& s : sensors) hz.push_back(s.hz);
  return hz;
}

}  // namespace

SensorAgent::SensorAgent(AgentConfig config, SensorSource& source, nats::Connection& conn)
    : config_(std::move(config)),
      source_(source),
      conn_(conn),
      batch_ns_(static_cast<int64_t>(config_.batch_ms) * 1'000'000),
      status_subject_(wire::StatusSubject(config_.vehicle)),
      scheduler_(RatesOf(config_.sensors), SteadyNs()),
      buffer_(config_.buffer_bytes),
      batches_(config_.sensors.size()),
      seq_(config_.sensors.size(), 0) {
  if (!wire::IsValidToken(config_.vehicle)) {
    throw std::invalid_argument("vehicle id '" + config_.vehicle +
                                "' must be 1-64 of A-Z a-z 0-9 _ -");
  }
  if (config_.sensors.empty() || config_.sensors.size() >= kStatusTag) {
    throw std::invalid_argument("a vehicle needs at least one sensor");
  }
  if (config_.ack == AckMode::kJetStream &&
      (config_.ack_timeout_ms <= 0 || config_.max_in_flight == 0)) {
    throw std::invalid_argument("acknowledgements need a positive timeout and window");
  }
  for (const sim::SensorRate& s : config_.sensors) {
    subjects_.push_back(wire::SampleSubject(config_.vehicle, s.name));
  }
  counters_.buffer_bytes = buffer_.capacity();
}

SensorAgent::~SensorAgent() { Stop(); }

void SensorAgent::Start() {
  {
    const std::lock_guard lk(mu_);
    started_ = true;
    PushStatus("on");
  }
  const auto handler = [this](nats::Message&& m) { OnCommand(std::move(m)); };
  commands_ = conn_.Subscribe(control::CommandSubject(config_.vehicle, "*"), "", handler);
  fleet_status_ = conn_.Subscribe(control::kFleetStatusSubject, "", handler);
  const bool acked = config_.ack == AckMode::kJetStream;
  if (acked) {
    ack_inbox_ = conn_.NewPrefixedInbox();
    acks_ = conn_.SubscribeSync(ack_inbox_ + ".*");
  }
  sampler_ = std::thread(&SensorAgent::SamplerLoop, this);
  sender_ = std::thread(acked ? &SensorAgent::AckSenderLoop : &SensorAgent::SenderLoop, this);
  pthread_setname_np(sampler_.native_handle(), "ff-sampler");
  pthread_setname_np(sender_.native_handle(), "ff-sender");
}

void SensorAgent::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  commands_.reset();  // each waits for a command being handled
  fleet_status_.reset();
  {
    const std::lock_guard lk(mu_);
    stopping_ = true;
  }
  sampler_cv_.notify_all();
  sampler_.join();
  {
    const std::lock_guard lk(mu_);
    FlushBatches();
    if (active_) PushStatus("off");
    sampler_done_ = true;
    drain_deadline_ = SteadyNs() + static_cast<int64_t>(config_.drain_ms) * 1'000'000;
  }
  sender_cv_.notify_all();
  sender_.join();
  acks_.reset();
}

void SensorAgent::SamplerLoop() {
  std::vector<int> due;
  std::unique_lock lk(mu_);
  while (!stopping_) {
    if (!active_) {
      sampler_cv_.wait(lk, [&] { return stopping_ || active_; });
      continue;
    }
    int64_t wake = scheduler_.next_due();
    if (batch_ns_ > 0 && batch_deadline_ > 0) wake = std::min(wake, batch_deadline_);
    if (sampler_cv_.wait_until(lk, SteadyAt(wake), [&] { return stopping_ || sampler_poke_; })) {
      sampler_poke_ = false;
      continue;
    }
    const int64_t now = SteadyNs();
    due.clear();
    scheduler_.PopDue(now, due);
    const int64_t wall = WallNs();
    for (int sensor : due) Sample(sensor, wall);
    if (batch_ns_ > 0 && batch_deadline_ > 0 && now >= batch_deadline_) FlushBatches();
    if (buffer_.has_unsent()) sender_cv_.notify_one();  // once per wake-up, not per message
  }
}

void SensorAgent::Sample(int sensor, int64_t wall_ns) {
  wire::Point p;
  p.seq = seq_[sensor];
  try {
    if (!source_.Read(sensor, wall_ns, p)) return;
  } catch (const std::exception&) {
    return;  // a source failing at run time (e.g. a recording edited meanwhile) yields no sample
  }
  p.ts_ns = wall_ns;
  p.seq = seq_[sensor]++;
  ++counters_.samples;
  std::vector<wire::Point>& batch = batches_[sensor];
  batch.push_back(p);
  if (batch_ns_ == 0 || batch.size() >= kMaxSamplesPerMessage) {
    FlushBatch(sensor);
  } else if (batch_deadline_ == 0) {
    batch_deadline_ = SteadyNs() + batch_ns_;
  }
}

void SensorAgent::FlushBatch(int sensor) {
  std::vector<wire::Point>& batch = batches_[sensor];
  if (batch.empty()) return;
  const std::vector<uint8_t> payload = wire::EncodeBatch(batch);
  buffer_.Push({static_cast<uint16_t>(sensor), static_cast<uint32_t>(batch.size())}, payload);
  batch.clear();
}

void SensorAgent::FlushBatches() {
  for (int s = 0; s < static_cast<int>(batches_.size()); ++s) FlushBatch(s);
  batch_deadline_ = 0;
}

void SensorAgent::PushStatus(std::string_view on_off) {
  if (!config_.publish_status) return;
  const auto* bytes = reinterpret_cast<const uint8_t*>(on_off.data());
  buffer_.Push({kStatusTag, 0}, {bytes, on_off.size()});
  sender_cv_.notify_one();
}

bool SensorAgent::Confirm(uint64_t reconnects) {
  try {
    conn_.Flush(kConfirmTimeoutMs);
    return conn_.stats().reconnects == reconnects;
  } catch (const nats::Error&) {
    return false;
  }
}

std::optional<uint64_t> SensorAgent::Reconnects() const {
  try {
    return conn_.stats().reconnects;
  } catch (const nats::Error&) {
    return std::nullopt;
  }
}

void SensorAgent::SenderLoop() {
  std::vector<uint8_t> payload;
  OfflineBuffer::Record record;
  uint64_t reconnects = 0;  // when the messages in flight were published
  int64_t last_confirm = SteadyNs();
  const int64_t confirm_ns = static_cast<int64_t>(config_.confirm_ms) * 1'000'000;
  std::unique_lock lk(mu_);
  while (!(sampler_done_ && (buffer_.bytes() == 0 || SteadyNs() >= drain_deadline_))) {
    if (!conn_.connected()) {
      sender_cv_.wait_for(lk, kLinkPoll);
      continue;
    }
    bool failed = false;
    if (buffer_.has_unsent() && !buffer_.has_in_flight()) {
      lk.unlock();
      try {
        reconnects = conn_.stats().reconnects;
      } catch (const nats::Error&) {
        failed = true;
      }
      lk.lock();
    }
    while (!failed && buffer_.NextUnsent(record, payload)) {
      const std::string& subject =
          record.tag == kStatusTag ? status_subject_ : subjects_.at(record.tag);
      lk.unlock();
      try {
        conn_.Publish(subject, payload.data(), payload.size());
      } catch (const nats::Error&) {
        failed = true;  // the link went down meanwhile: send again once it is back
      }
      lk.lock();
    }
    const int64_t now = SteadyNs();
    if (failed) {
      counters_.resent_messages += buffer_.Rewind();
      sender_cv_.wait_for(lk, kLinkPoll);
    } else if (buffer_.has_in_flight() && (sampler_done_ || now - last_confirm >= confirm_ns)) {
      lk.unlock();
      const bool confirmed = Confirm(reconnects);
      lk.lock();
      last_confirm = now;
      if (!confirmed) {
        counters_.resent_messages += buffer_.Rewind();
        continue;
      }
      const OfflineBuffer::Committed done = buffer_.Commit();
      counters_.published_messages += done.records;
      counters_.published_samples += done.samples;
      if (done.records > 0) last_publish_ns_ = WallNs();
    } else {
      const int64_t until = buffer_.has_in_flight() ? last_confirm + confirm_ns : now + confirm_ns;
      sender_cv_.wait_until(lk, SteadyAt(until),
                            [&] { return buffer_.has_unsent() || sampler_done_; });
    }
  }
}

void SensorAgent::AckSenderLoop() {
  std::vector<uint8_t> payload;
  OfflineBuffer::Record record;
  nats::Headers headers = {{"Nats-Msg-Id", ""}};
  // Reconnections at the last check: one since then may have cost the messages in flight their
  // acknowledgements (read every check_ns only, not per message: it takes nats.c's lock).
  std::optional<uint64_t> reconnects = Reconnects();
  int64_t last_check = SteadyNs();
  const int64_t check_ns = static_cast<int64_t>(config_.confirm_ms) * 1'000'000;
  const int64_t timeout_ns = static_cast<int64_t>(config_.ack_timeout_ms) * 1'000'000;
  // Nothing new overtakes what waits too long: the stream may have lost it (see the header).
  const auto sendable = [&] {
    return buffer_.has_unsent() &&
           buffer_.in_flight_records() < (probing_ ? 1 : config_.max_in_flight) &&
           !(buffer_.has_in_flight() && SteadyNs() - ack_progress_ns_ >= timeout_ns / 2);
  };
  std::vector<nats::Message> received;
  bool link_was_down = false;
  std::unique_lock lk(mu_);
  while (!(sampler_done_ && (buffer_.bytes() == 0 || SteadyNs() >= drain_deadline_))) {
    if (!conn_.connected()) {
      link_was_down = true;
      sender_cv_.wait_for(lk, kLinkPoll);
      continue;
    }
    if (link_was_down) {  // back: check at once, before anything new leaves
      link_was_down = false;
      last_check = SteadyNs() - check_ns;
    }
    if (buffer_.has_in_flight()) {
      TakeAcks(lk, received);
      if (sampler_done_ && buffer_.bytes() == 0) break;
    }
    int64_t now = SteadyNs();
    // What waited too long for its acknowledgement, or left before a reconnection (its ack may
    // never come: a server that crashed forgot it), goes out again. Checked with nothing in
    // flight too, so that the count of reconnections is current when something leaves.
    if (now - last_check >= check_ns) {
      last_check = now;
      lk.unlock();
      const std::optional<uint64_t> now_reconnects = Reconnects();
      lk.lock();
      const bool reconnected = !now_reconnects || now_reconnects != reconnects;
      reconnects = now_reconnects;
      if (buffer_.has_in_flight() && (reconnected || SteadyNs() - ack_progress_ns_ >= timeout_ns)) {
        SendAgain();
      }
    }
    // The stream lost the oldest in flight (it acknowledged a later one): at once, oldest first.
    if (ack_gap_ && buffer_.has_in_flight() && SteadyNs() - ack_progress_ns_ >= kAckGapNs) {
      SendAgain();
    }
    ack_gap_ = false;
    if (sendable() && !buffer_.has_in_flight()) ack_progress_ns_ = SteadyNs();
    bool failed = false;
    while (!failed && sendable() && buffer_.NextUnsent(record, payload)) {
      const std::string& subject =
          record.tag == kStatusTag ? status_subject_ : subjects_.at(record.tag);
      const std::string reply = ack_inbox_ + "." + std::to_string(record.id);
      headers[0].second = MessageId(ack_inbox_, record.id);
      lk.unlock();
      try {
        conn_.PublishRequest(subject, reply, payload.data(), payload.size(), headers);
      } catch (const nats::Error&) {
        failed = true;  // the link went down meanwhile: send again once it is back
      }
      lk.lock();
    }
    if (failed) {
      SendAgain();
      sender_cv_.wait_for(lk, kLinkPoll);
      continue;
    }
    // Until there is something to send and room for it, or acknowledgements are to be taken
    // (the next sample usually comes first), or the next check is due.
    now = SteadyNs();
    int64_t until = now + check_ns;
    if (buffer_.has_in_flight()) until = std::min(last_check + check_ns, now + kAckPollNs);
    if (sampler_done_) until = std::min(until, drain_deadline_);
    sender_cv_.wait_until(lk, SteadyAt(until), sendable);
  }
}

void SensorAgent::SendAgain() {
  counters_.resent_messages += buffer_.Rewind();
  probing_ = true;
}

void SensorAgent::TakeAcks(std::unique_lock<std::mutex>& lk, std::vector<nats::Message>& received) {
  uint64_t no_responders = 0;
  lk.unlock();
  for (bool more = true; more;) {
    bool no_stream = false;
    std::optional<nats::Message> m = acks_->Next(0, no_stream);
    if (m) {
      received.push_back(std::move(*m));
    } else if (no_stream) {
      ++no_responders;  // no stream captures the subject (nor anyone else listens)
    } else {
      more = false;
    }
  }
  lk.lock();
  // An error or no responders keeps the message in flight: sent again after ack_timeout_ms.
  counters_.ack_errors += no_responders;
  for (const nats::Message& m : received) {
    const std::optional<uint64_t> id = AckRecordId(m.subject(), ack_inbox_);
    if (!id) continue;
    if (!ParseStreamAck(m.text()).stored) {
      ++counters_.ack_errors;
      continue;
    }
    const OfflineBuffer::Committed done = buffer_.Ack(*id);
    ack_gap_ = ack_gap_ || done.behind;
    if (done.records == 0) continue;
    probing_ = false;  // the stream stores again, from the oldest on
    counters_.published_messages += done.records;
    counters_.published_samples += done.samples;
    last_publish_ns_ = WallNs();
    ack_progress_ns_ = SteadyNs();
  }
  received.clear();
}

void SensorAgent::OnCommand(nats::Message&& msg) {
  const std::optional<control::VehicleStatus> reply =
      Execute(control::CommandVerb(msg.subject()), msg.text());
  if (!reply || msg.reply().empty()) return;
  try {
    conn_.Publish(msg.reply(), control::ToJson(*reply));
  } catch (const nats::Error&) {
    // The requester times out; nothing else to do on a vehicle.
  }
}

std::optional<control::VehicleStatus> SensorAgent::Execute(std::string_view verb,
                                                           std::string_view payload) {
  if (verb == control::kAlarm) return ExecuteAlarm(payload);
  const std::lock_guard lk(mu_);
  const auto refuse = [&](std::string why) { return Refusal(config_.vehicle, std::move(why)); };
  if (verb == control::kSleep) {
    if (active_) {
      FlushBatches();
      PushStatus("off");
      active_ = false;
    }
  } else if (verb == control::kWake) {
    if (!active_) {
      active_ = true;
      scheduler_.Restart(SteadyNs());
      PushStatus("on");
    }
  } else if (verb == control::kRate) {
    std::string name;
    double hz = 0;
    if (std::string error = control::ParseRateArgs(payload, name, hz); !error.empty()) {
      return refuse(std::move(error));
    }
    const auto it = std::find_if(config_.sensors.begin(), config_.sensors.end(),
                                 [&](const sim::SensorRate& s) { return s.name == name; });
    if (it == config_.sensors.end()) {
      if (config_.shared_vehicle) return std::nullopt;
      std::string known;
      for (const sim::SensorRate& s : config_.sensors)
        known += (known.empty() ? "" : ", ") + s.name;
      return refuse("unknown sensor '" + name + "' (this vehicle has " + known + ")");
    }
    scheduler_.SetRate(static_cast<int>(it - config_.sensors.begin()), hz, SteadyNs());
  } else if (verb != control::kStatus) {
    return refuse("unknown command '" + std::string(verb) +
                  "': use sleep, wake, rate, status or alarm");
  }
  sampler_poke_ = true;
  sampler_cv_.notify_all();
  sender_cv_.notify_one();
  return StatusLocked();
}

std::optional<control::VehicleStatus> SensorAgent::ExecuteAlarm(std::string_view payload) {
  if (config_.shared_vehicle && !config_.publish_status) return std::nullopt;
  std::string why;
  std::optional<control::AlarmEvent> alarm = control::ParseAlarmJson(payload, &why);
  std::string error = "bad alarm: " + why;
  if (alarm && alarm->vehicle != config_.vehicle) {
    why = "alarm for another vehicle";
    error = "alarm for vehicle '" + alarm->vehicle + "' sent to vehicle '" + config_.vehicle + "'";
    alarm.reset();
  }
  std::string line;
  LogLevel level = LogLevel::kWarning;
  control::VehicleStatus reply;
  {
    const std::lock_guard lk(mu_);
    if (alarm) {
      line = ApplyAlarm(*alarm, level);
      reply = StatusLocked();
    } else {
      ++counters_.alarms_invalid;
      line = RefusedAlarmLine(why, payload);
      reply = Refusal(config_.vehicle, std::move(error));
    }
  }
  if (!line.empty()) Log(level, line);
  return reply;
}

std::string SensorAgent::ApplyAlarm(const control::AlarmEvent& a, LogLevel& level) {
  auto it = alarms_.find(a.rule);
  const bool heard = it != alarms_.end();
  if (heard && (a.raised_ns < it->second.raised_ns ||
                (a.raised_ns == it->second.raised_ns && (a.raised || !it->second.active)))) {
    ++counters_.alarms_duplicate;
    return "";
  }
  if (!heard) {
    if (alarms_.size() >= kMaxAlarmRules) {
      auto oldest = alarms_.end();
      for (auto i = alarms_.begin(); i != alarms_.end(); ++i) {
        if (!i->second.active &&
            (oldest == alarms_.end() || i->second.raised_ns < oldest->second.raised_ns)) {
          oldest = i;
        }
      }
      if (oldest != alarms_.end()) alarms_.erase(oldest);
    }
    it = alarms_.emplace(a.rule, AlarmState{}).first;
  }
  // A raise while the rule's alarm was active supersedes it; a clear without the raise heard.
  const bool superseded = a.raised && it->second.active;
  const bool raise_missed =
      !a.raised && !(it->second.active && it->second.raised_ns == a.raised_ns);
  it->second = {a.raised_ns, a.raised};
  if (a.raised) {
    ++counters_.alarms_raised;
  } else {
    ++counters_.alarms_cleared;
  }
  level = a.raised ? LogLevel::kWarning : LogLevel::kInfo;
  std::string line = a.raised ? "alarm raised" : "alarm cleared";
  AppendField(line, "vehicle", config_.vehicle);
  AppendField(line, "rule", a.rule);
  AppendField(line, "severity", control::SeverityName(a.severity));
  std::string value = "null";
  if (a.value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.15g", *a.value);
    value = text;
  }
  AppendField(line, "value", value);
  AppendField(line, "raised", control::FormatUtcTime(a.raised_ns));
  AppendField(line, "raised_ns", std::to_string(a.raised_ns));
  if (!a.raised) AppendField(line, "cleared", control::FormatUtcTime(a.time_ns));
  if (superseded) AppendField(line, "superseded", "true");
  if (raise_missed) AppendField(line, "raise_missed", "true");
  if (!a.message.empty()) AppendField(line, "message", a.message);
  return line;
}

std::string SensorAgent::RefusedAlarmLine(const std::string& why, std::string_view payload) {
  const int64_t now = SteadyNs();
  auto it = refusals_.find(why);
  if (it == refusals_.end()) {
    it = refusals_.emplace(why, RefusalLog{now - kRefusalLogNs, 0}).first;
  }
  RefusalLog& log = it->second;
  if (now - log.logged_ns < kRefusalLogNs) {
    ++log.suppressed;
    return "";
  }
  std::string line = "alarm refused";
  AppendField(line, "vehicle", config_.vehicle);
  AppendField(line, "reason", why);
  AppendField(line, "payload", payload.substr(0, kPayloadExcerpt));
  AppendField(line, "invalid_total", std::to_string(counters_.alarms_invalid));
  if (log.suppressed > 0) AppendField(line, "suppressed", std::to_string(log.suppressed));
  log = {now, 0};
  return line;
}

void SensorAgent::Log(LogLevel level, const std::string& line) const {
  if (level < config_.log_level) return;
  std::fprintf(stderr, "%s %s %s\n", control::FormatUtcTime(WallNs()).c_str(),
               level == LogLevel::kWarning ? "warning" : "info", line.c_str());
}

control::VehicleStatus SensorAgent::Status() const {
  const std::lock_guard lk(mu_);
  return StatusLocked();
}

control::VehicleStatus SensorAgent::StatusLocked() const {
  control::VehicleStatus s;
  s.vehicle = config_.vehicle;
  s.active = active_;
  for (int i = 0; i < scheduler_.sensors(); ++i) {
    s.sensors.push_back({config_.sensors[i].name, scheduler_.hz(i)});
  }
  s.last_publish_ns = last_publish_ns_;
  for (const auto& [rule, alarm] : alarms_) {
    if (alarm.active) s.active_alarms.push_back(rule);  // sorted: alarms_ is
  }
  s.counters = counters_;
  s.counters.dropped_samples = buffer_.counters().dropped_samples;
  s.counters.dropped_messages = buffer_.counters().dropped_records;
  s.counters.buffered_bytes = buffer_.bytes();
  s.counters.skipped_ticks = scheduler_.skipped();
  try {
    s.counters.reconnects = conn_.stats().reconnects;
  } catch (const nats::Error&) {
  }
  return s;
}

}  // namespace fleetflow::firmware

#include "alarm_actions.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "alarm.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "pg_client.hpp"

namespace fleetflow::alarms {

namespace {

std::string Literal(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return "NULL";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", *v);
  return buf;
}

std::string Timestamp(int64_t ns) { return pg::QuoteLiteral(pg::FormatTimestamp(ns)); }

}  // namespace

struct AlarmActions::Clients {
  std::unique_ptr<nats::Connection> nats;
  std::unique_ptr<nats::JetStream> js;
  std::unique_ptr<pg::Connection> pg;
  bool stream_ready = false;
};

AlarmActions::AlarmActions(AlarmActionsOptions options, const std::string& node, Metrics& metrics,
                           const Labels& labels)
    : o_(std::move(options)),
      node_(node),
      published_(metrics.GetCounter("alarm_events_published",
                                    "Alarm events stored in the alarm stream (or published on "
                                    "core NATS without one).",
                                    labels)),
      table_rows_(metrics.GetCounter("alarm_table_writes",
                                     "Alarm events written to the alarm table.", labels)),
      told_(metrics.GetCounter("alarm_vehicle_messages",
                               "Alarms and commands sent to vehicles (vehicle.<id>.cmd.<verb>).",
                               labels)),
      failures_(metrics.GetCounter(
          "alarm_action_failures",
          "Failed attempts to store alarm events in the stream or the table (tried again).",
          labels)),
      clients_(std::make_unique<Clients>()) {}

AlarmActions::~AlarmActions() {
  if (!pending_.empty()) {
    spdlog::error("rule '{}': {} alarm events were never stored (no drain reached the node)", node_,
                  pending_.size());
  }
}

std::string AlarmActions::CreateTableSql(const std::string& table) {
  const std::string t = pg::QuoteIdent(table);
  return "CREATE TABLE IF NOT EXISTS " + t +
         " (vehicle_id text NOT NULL, rule text NOT NULL, raised timestamptz NOT NULL, "
         "cleared timestamptz, severity text NOT NULL, value double precision, "
         "clear_value double precision, message text, PRIMARY KEY (vehicle_id, rule, raised)); "
         "CREATE INDEX IF NOT EXISTS " +
         pg::QuoteIdent(table + "_raised_idx") + " ON " + t +
         " (raised); "
         // The active ones (a dashboard's "Active alarms") without reading the past.
         "CREATE INDEX IF NOT EXISTS " +
         pg::QuoteIdent(table + "_active_idx") + " ON " + t + " (raised) WHERE cleared IS NULL";
}

void AlarmActions::Add(std::vector<AlarmEvent> events) {
  for (AlarmEvent& e : events) pending_.push_back({std::move(e), false});
}

void AlarmActions::Connect() {
  if (!clients_->nats) {
    // nats.c reconnects a connection by itself from then on.
    clients_->nats = nats::Connection::Connect(NatsConnectOptions(o_.nats, "fleetflow:" + node_));
  }
  if (!o_.stream.empty() && !clients_->stream_ready) {
    if (!clients_->js) clients_->js = std::make_unique<nats::JetStream>(*clients_->nats);
    {
      nats::StreamOptions s;
      s.name = o_.stream;
      s.subjects = {o_.subject_prefix + ".>"};
      s.max_age_ms = o_.stream_max_age_ms;
      s.replicas = static_cast<int>(o_.stream_replicas);
      s.duplicate_window_ms = o_.duplicate_window_ms;
      clients_->js->EnsureStream(s);
      clients_->stream_ready = true;
    }
  }
  if (!o_.table.empty() && !clients_->pg) {
    clients_->pg = pg::Connection::Connect(o_.conninfo);
    clients_->pg->Exec(CreateTableSql(o_.table));
  }
}

void AlarmActions::Store(Pending& p) {
  const AlarmEvent& e = p.event;
  const std::string subject = o_.subject_prefix + "." + e.vehicle + "." + e.rule;
  const std::string body = AlarmJson(e);
  if (clients_->js) {
    const std::string id = e.vehicle + "." + e.rule + "." + std::to_string(e.raised_ns) + "." +
                           (e.raised ? "raised" : "cleared");
    clients_->js->Publish(subject, body.data(), body.size(), {{"Nats-Msg-Id", id}},
                          static_cast<int>(o_.publish_timeout_ms));
  } else {
    clients_->nats->Publish(subject, body);
  }
  p.stored = true;
  published_.Inc();
}

void AlarmActions::WriteTable(size_t n) {
  const std::string t = pg::QuoteIdent(o_.table);
  std::vector<std::string> statements;
  for (size_t i = 0; i < n; ++i) {
    const AlarmEvent& e = pending_[i].event;
    const std::string key = pg::QuoteLiteral(e.vehicle) + ", " + pg::QuoteLiteral(e.rule) + ", " +
                            Timestamp(e.raised_ns);
    const std::string rest = pg::QuoteLiteral(e.severity) + ", " +
                             (e.message.empty() ? "NULL" : pg::QuoteLiteral(e.message));
    if (e.raised) {
      statements.push_back("INSERT INTO " + t +
                           " (vehicle_id, rule, raised, severity, message, value) VALUES (" + key +
                           ", " + rest + ", " + Literal(e.value) +
                           ") ON CONFLICT (vehicle_id, rule, raised) DO UPDATE SET value = "
                           "EXCLUDED.value, severity = EXCLUDED.severity, message = "
                           "EXCLUDED.message");
    } else {
      statements.push_back("INSERT INTO " + t +
                           " (vehicle_id, rule, raised, severity, message, cleared, clear_value) "
                           "VALUES (" +
                           key + ", " + rest + ", " + Timestamp(e.time_ns) + ", " +
                           Literal(e.value) +
                           ") ON CONFLICT (vehicle_id, rule, raised) DO UPDATE SET cleared = "
                           "EXCLUDED.cleared, clear_value = EXCLUDED.clear_value");
    }
  }
  clients_->pg->ExecInTransaction(statements);
  table_rows_.Inc(n);
}

void AlarmActions::Tell(const AlarmEvent& e) {
  try {
    if (o_.notify_vehicle) {
      clients_->nats->Publish("vehicle." + e.vehicle + ".cmd.alarm", AlarmJson(e));
      told_.Inc();
    }
    if (!e.command_verb.empty()) {
      clients_->nats->Publish("vehicle." + e.vehicle + ".cmd." + e.command_verb, e.command_args);
      told_.Inc();
    }
  } catch (const std::exception& x) {
    // At most once: a vehicle misses what the link loses.
    spdlog::warn("rule '{}': alarm {} of vehicle {} not sent to the vehicle: {}", node_, e.rule,
                 e.vehicle, x.what());
  }
}

bool AlarmActions::Flush(bool force) {
  if (pending_.empty()) return true;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now < next_attempt_) return false;
  try {
    Connect();
    for (Pending& p : pending_) {
      if (!p.stored) Store(p);
    }
    if (!o_.table.empty()) WriteTable(pending_.size());
    for (const Pending& p : pending_) Tell(p.event);
    pending_.clear();
    backoff_ = std::chrono::milliseconds(100);
    return true;
  } catch (const std::exception& e) {
    failures_.Inc();
    spdlog::warn("rule '{}': {} alarm events wait; storing them failed (next attempt in {} ms): {}",
                 node_, pending_.size(), backoff_.count(), e.what());
    if (clients_->pg && !clients_->pg->IsOpen()) clients_->pg.reset();
    next_attempt_ = now + backoff_;
    backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(5000));
    return false;
  }
}

}  // namespace fleetflow::alarms

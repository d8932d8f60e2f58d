// fleetctl: controls vehicles running fleet-sensor over NATS request/reply (control.hpp).

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "control.hpp"
#include "nats_client.hpp"
#include "wire.hpp"

namespace {

namespace control = fleetflow::control;
namespace nats = fleetflow::nats;

constexpr int kExitNoReply = 3;
constexpr int kExitRefused = 4;
// After every named vehicle answered a status request, how long to wait for more replies of a
// vehicle run by one process per sensor.
constexpr auto kGrace = std::chrono::milliseconds(100);

// What came back for one request.
struct Outcome {
  std::vector<std::string> replies;  // raw status JSON, as parsed below
  std::vector<control::VehicleStatus> statuses;
  bool no_responders = false;
};

// Sends one request per subject, each with its own reply subject, and gathers the replies:
// until every request has a status reply (then for `grace` more) or until `timeout`.
// Replies that are not a vehicle status (e.g. a JetStream acknowledgement, if a stream captures
// the command subjects) are ignored.
std::vector<Outcome> Gather(nats::Connection& conn, const std::vector<std::string>& subjects,
                            std::string_view payload, std::chrono::milliseconds timeout,
                            bool until_timeout, std::chrono::milliseconds grace) {
  std::vector<Outcome> out(subjects.size());
  std::mutex mu;
  std::condition_variable cv;
  size_t answered = 0;
  const std::string inbox = nats::Connection::NewInbox();
  auto sub = conn.Subscribe(inbox + ".*", "", [&](nats::Message&& m) {
    const std::string_view subject = m.subject();
    size_t index = 0;
    const std::string_view suffix = subject.substr(subject.rfind('.') + 1);
    if (std::from_chars(suffix.data(), suffix.data() + suffix.size(), index).ec != std::errc() ||
        index >= out.size()) {
      return;
    }
    const std::lock_guard lk(mu);
    Outcome& o = out[index];
    if (m.no_responders()) {
      o.no_responders = true;
      ++answered;
    } else if (auto status = control::ParseStatusJson(m.text())) {
      if (o.statuses.empty()) ++answered;
      o.statuses.push_back(std::move(*status));
      o.replies.emplace_back(m.text());
    }
    cv.notify_all();
  });
  for (size_t i = 0; i < subjects.size(); ++i) {
    conn.PublishRequest(subjects[i], inbox + "." + std::to_string(i), payload);
  }
  conn.Flush(static_cast<int>(timeout.count()));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Gathering from every vehicle ends at the timeout, or at once when nobody listens.
  const auto finished = [&] {
    return until_timeout ? out.front().no_responders : answered == out.size();
  };
  std::unique_lock lk(mu);
  if (cv.wait_until(lk, deadline, finished) && !until_timeout) {
    cv.wait_for(lk, grace, [] { return false; });
  }
  lk.unlock();
  sub.reset();
  return out;
}

std::string FormatTime(int64_t ns) { return ns <= 0 ? "never" : control::FormatUtcTime(ns); }

std::string FormatRates(const control::VehicleStatus& s) {
  std::string out;
  char hz[32];
  for (const control::SensorState& sensor : s.sensors) {
    std::snprintf(hz, sizeof hz, "%g", sensor.hz);
    out += (out.empty() ? "" : " ") + sensor.name + "=" + hz;
  }
  return out;
}

// Merges the replies of the processes of one vehicle (one per sensor, with --only).
control::VehicleStatus Merge(const std::vector<control::VehicleStatus>& parts) {
  control::VehicleStatus m = parts.front();
  for (size_t i = 1; i < parts.size(); ++i) {
    const control::VehicleStatus& p = parts[i];
    m.active = m.active || p.active;
    m.sensors.insert(m.sensors.end(), p.sensors.begin(), p.sensors.end());
    m.last_publish_ns = std::max(m.last_publish_ns, p.last_publish_ns);
    m.counters.samples += p.counters.samples;
    m.counters.published_samples += p.counters.published_samples;
    m.counters.published_messages += p.counters.published_messages;
    m.counters.dropped_samples += p.counters.dropped_samples;
    m.counters.dropped_messages += p.counters.dropped_messages;
    m.counters.buffered_bytes += p.counters.buffered_bytes;
    m.counters.buffer_bytes += p.counters.buffer_bytes;
    m.counters.reconnects += p.counters.reconnects;
    m.counters.skipped_ticks += p.counters.skipped_ticks;
    m.counters.resent_messages += p.counters.resent_messages;
    m.counters.ack_errors += p.counters.ack_errors;
    m.counters.alarms_raised += p.counters.alarms_raised;
    m.counters.alarms_cleared += p.counters.alarms_cleared;
    m.counters.alarms_duplicate += p.counters.alarms_duplicate;
    m.counters.alarms_invalid += p.counters.alarms_invalid;
    m.active_alarms.insert(m.active_alarms.end(), p.active_alarms.begin(), p.active_alarms.end());
  }
  std::sort(m.active_alarms.begin(), m.active_alarms.end());
  m.active_alarms.erase(std::unique(m.active_alarms.begin(), m.active_alarms.end()),
                        m.active_alarms.end());
  return m;
}

int PrintStatus(const std::vector<std::string>& vehicles, const std::vector<Outcome>& outcomes,
                bool json) {
  std::map<std::string, std::vector<control::VehicleStatus>> by_vehicle;
  int missing = 0;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    for (const auto& s : outcomes[i].statuses) by_vehicle[s.vehicle].push_back(s);
    if (json) {
      for (const auto& r : outcomes[i].replies) std::printf("%s\n", r.c_str());
    }
    if (!vehicles.empty() && outcomes[i].statuses.empty()) {
      ++missing;
      std::fprintf(stderr, "fleetctl: no reply from vehicle %s%s\n", vehicles[i].c_str(),
                   outcomes[i].no_responders ? " (no responders: it is not running)" : "");
    }
  }
  if (by_vehicle.empty()) {
    if (vehicles.empty()) std::fprintf(stderr, "fleetctl: no vehicle answered\n");
    return kExitNoReply;
  }
  if (!json) {
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    std::printf("%-16s %-8s %-24s %8s  %-36s %10s %8s  %s\n", "VEHICLE", "STATE", "LAST PUBLISH",
                "AGE", "RATES (HZ)", "BUFFERED", "DROPPED", "ALARMS");
    for (const auto& [vehicle, parts] : by_vehicle) {
      const control::VehicleStatus s = Merge(parts);
      char age[32] = "-";
      if (s.last_publish_ns > 0) {
        std::snprintf(age, sizeof age, "%.1fs", static_cast<double>(now - s.last_publish_ns) / 1e9);
      }
      std::string alarms;
      for (const std::string& rule : s.active_alarms) alarms += (alarms.empty() ? "" : ",") + rule;
      std::printf("%-16s %-8s %-24s %8s  %-36s %10" PRIu64 " %8" PRIu64 "  %s\n", vehicle.c_str(),
                  s.active ? "active" : "asleep", FormatTime(s.last_publish_ns).c_str(), age,
                  FormatRates(s).c_str(), s.counters.buffered_bytes, s.counters.dropped_samples,
                  alarms.empty() ? "-" : alarms.c_str());
    }
  }
  return missing > 0 ? kExitNoReply : 0;
}

// sleep, wake and rate: one vehicle, the first status reply counts.
int RunCommand(nats::Connection& conn, const std::string& vehicle, std::string_view verb,
               const std::string& payload, std::chrono::milliseconds timeout, bool json) {
  const std::vector<Outcome> out =
      Gather(conn, {control::CommandSubject(vehicle, verb)}, payload, timeout, false, {});
  const Outcome& o = out.front();
  if (o.statuses.empty()) {
    if (o.no_responders) {
      std::fprintf(stderr, "fleetctl: vehicle %s is not listening (no responders on %s)\n",
                   vehicle.c_str(), control::CommandSubject(vehicle, verb).c_str());
    } else {
      std::fprintf(stderr, "fleetctl: no reply from vehicle %s within %lld ms\n", vehicle.c_str(),
                   static_cast<long long>(timeout.count()));
    }
    return kExitNoReply;
  }
  const control::VehicleStatus& s = o.statuses.front();
  if (!s.ok) {
    std::fprintf(stderr, "fleetctl: vehicle %s refused %s: %s\n", vehicle.c_str(),
                 std::string(verb).c_str(), s.error.c_str());
    return kExitRefused;
  }
  if (json) {
    std::printf("%s\n", o.replies.front().c_str());
  } else {
    std::printf("%s: %s, %s\n", vehicle.c_str(), s.active ? "active" : "asleep",
                FormatRates(s).c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  nats::ConnectOptions nats_options = nats::ConnectOptions::FromEnv();
  int timeout_ms = 1000;
  bool json = false;
  std::string vehicle, sensor;
  double hz = 0;
  std::vector<std::string> vehicles;

  CLI::App app{
      "Controls vehicles running fleet-sensor over NATS request/reply "
      "(vehicle.<id>.cmd.<command>).",
      "fleetctl"};
  app.footer(
      "Environment: every option can also come from the variable named beside it, "
      "FLEETCTL_<OPTION> "
      "(the NATS options: NATS_URL, NATS_CREDS, NATS_NKEY_SEED, NATS_CA, NATS_CERT, NATS_KEY); the "
      "command line wins.\n"
      "Exit status: 0 done, 1 usage error, 2 NATS error (cannot connect), 3 no reply (the "
      "vehicle is not running: no responders, or it did not answer in time), 4 the vehicle "
      "refused the command.");
  app.require_subcommand(1);
  fleetflow::firmware::AddNatsOptions(app, nats_options);
  app.add_option("--timeout", timeout_ms, "How long to wait for replies, in ms")
      ->capture_default_str()
      ->check(CLI::Range(1, 600'000));
  app.add_flag("--json", json, "Print the vehicles' replies as JSON lines");

  const auto vehicle_check = CLI::Validator(
      [](std::string& id) {
        return fleetflow::wire::IsValidToken(id) ? "" : "'" + id + "' is not a vehicle id";
      },
      "VEHICLE", "vehicle");
  CLI::App* sleep = app.add_subcommand("sleep", "Stop a vehicle's sampling; it publishes 'off'");
  sleep->add_option("vehicle", vehicle, "Vehicle id")->required()->check(vehicle_check);
  CLI::App* wake = app.add_subcommand("wake", "Resume a vehicle's sampling; it publishes 'on'");
  wake->add_option("vehicle", vehicle, "Vehicle id")->required()->check(vehicle_check);
  CLI::App* rate = app.add_subcommand("rate", "Change the sampling rate of one sensor");
  rate->add_option("vehicle", vehicle, "Vehicle id")->required()->check(vehicle_check);
  rate->add_option("sensor", sensor, "Sensor name")->required();
  rate->add_option("hz", hz, "New rate in Hz, in (0, 1000]")
      ->required()
      ->check(CLI::Range(0.0, 1000.0));
  CLI::App* status = app.add_subcommand(
      "status",
      "List vehicles with their state, last publish time, rates, buffer and active alarms; without "
      "ids, every vehicle that answers within --timeout (asked on fleet.cmd.status)");
  status->add_option("vehicles", vehicles, "Vehicle ids")->check(vehicle_check);
  // An example in each --help; the subcommands took a copy of the footer when they were added.
  for (const auto& [sub, example] :
       {std::pair{sleep, "fleetctl sleep v00001"}, std::pair{wake, "fleetctl wake v00001"},
        std::pair{rate, "fleetctl rate v00001 gps 1"},
        std::pair{status, "fleetctl --json status v00001 v00002"}}) {
    sub->footer(sub->get_footer() + "\nExample:\n  " + example);
  }
  app.footer(app.get_footer() + "\nExample:\n  fleetctl --timeout 2000 status");
  fleetflow::firmware::NameEnvironment(app, "FLEETCTL_");
  try {
    app.parse(argc, argv);
    if (rate->parsed() && !(hz > 0)) throw CLI::ValidationError("hz", "must be more than 0");
  } catch (const CLI::ParseError& e) {
    return fleetflow::firmware::ExitForParseError(app, e, argc, argv);
  }

  nats_options.name = "fleetctl";
  nats_options.max_reconnect = 0;
  const auto timeout = std::chrono::milliseconds(timeout_ms);
  try {
    const auto conn = nats::Connection::Connect(nats_options);
    if (status->parsed()) {
      std::vector<std::string> subjects;
      for (const std::string& v : vehicles) {
        subjects.push_back(control::CommandSubject(v, control::kStatus));
      }
      if (vehicles.empty()) subjects.emplace_back(control::kFleetStatusSubject);
      return PrintStatus(vehicles, Gather(*conn, subjects, "", timeout, vehicles.empty(), kGrace),
                         json);
    }
    if (rate->parsed()) {
      char text[32];
      const auto [end, ec] = std::to_chars(text, text + sizeof text, hz);
      return RunCommand(*conn, vehicle, control::kRate, sensor + " " + std::string(text, end),
                        timeout, json);
    }
    return RunCommand(*conn, vehicle, sleep->parsed() ? control::kSleep : control::kWake, "",
                      timeout, json);
  } catch (const nats::Error& e) {
    std::fprintf(stderr, "fleetctl: %s\n", e.what());
    return fleetflow::firmware::kExitNats;
  }
}

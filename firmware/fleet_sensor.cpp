// fleet-sensor: the vehicle-side client. Samples a vehicle's sensors at their rates and
// publishes them over NATS, surviving link loss within a fixed memory bound (sensor_agent.hpp).

#include <pthread.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "control.hpp"
#include "nats_client.hpp"
#include "sensor_agent.hpp"
#include "sensor_source.hpp"
#include "stop_signals.hpp"

namespace {

namespace firmware = fleetflow::firmware;
namespace nats = fleetflow::nats;

constexpr int kExitSource = 3;

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Connects; when no server can be reached yet (the link is down at boot), keeps trying in the
// background while sampling starts. A server that refuses us (credentials, TLS) is fatal.
std::unique_ptr<nats::Connection> ConnectVehicle(nats::ConnectOptions options, bool quiet) {
  try {
    return nats::Connection::Connect(options);
  } catch (const nats::Error& e) {
    if (!e.unreachable()) throw;
    if (!quiet) {
      std::fprintf(stderr, "fleet-sensor: %s; buffering and retrying in the background\n",
                   e.what());
    }
  }
  options.retry_on_failed_connect = true;
  return nats::Connection::Connect(options);
}

}  // namespace

int main(int argc, char** argv) {
  const fleetflow::StopSignals stop;  // first: every thread started later inherits the mask

  firmware::AgentConfig config;
  nats::ConnectOptions nats_options = nats::ConnectOptions::FromEnv();
  std::string rates = "gps=10,speed=30,soc=5,torque=20";
  std::string only, csv, ack = "flush";
  bool csv_loop = false, no_status = false, quiet = false;
  uint64_t seed = 1;
  double duration_s = 0;

  CLI::App app{
      "The vehicle-side client: samples a vehicle's sensors at their own rates and publishes "
      "them over NATS, samples on vehicle.<id>.<sensor> (FlatBuffers FLT1 Batch), 'on' at start "
      "and 'off' at the end on vehicle.<id>.status. While the link is down it keeps sampling "
      "into a fixed-size buffer (dropping the oldest messages, counted, when full) and delivers "
      "it on reconnection. Obeys fleetctl commands on vehicle.<id>.cmd.{sleep,wake,rate,status} "
      "and takes the engine's alarms on vehicle.<id>.cmd.alarm (logged on stderr, counted, the "
      "active ones in its status).",
      "fleet-sensor"};
  app.footer(
      "Sources: simulated signals (the fleet-sim model, seeded by --seed and the vehicle id) by "
      "default, or --csv FILE replaying rows 'time_ms,sensor,value,lat,lon'.\n"
      "One process per sensor: run one fleet-sensor per sensor with --only SENSOR and the same "
      "--vehicle; give --no-status to all but one of them (that one takes the alarms).\n"
      "At the end (SIGINT, SIGTERM, SIGHUP or --duration) it prints its status as one JSON line on "
      "stdout (the reply format of 'fleetctl status').\n"
      "With --ack jetstream the vehicle subscribes to its own inbox (--inbox-prefix) for the "
      "stream's acknowledgements; give it that permission (deploy/nats/generate-users.mjs does).\n"
      "Environment: every option can also come from the variable named beside it, "
      "FLEET_SENSOR_<OPTION> "
      "(the NATS options: NATS_URL, NATS_CREDS, NATS_NKEY_SEED, NATS_CA, NATS_CERT, NATS_KEY); the "
      "command line wins.\n"
      "Exit status: 0 stopped, 1 usage error, 2 NATS refused the connection (credentials, "
      "TLS), 3 the sensor source cannot be read.\n"
      "Example:\n  fleet-sensor --vehicle v00001 --sensors gps=10,speed=30 --nats-url "
      "nats://127.0.0.1:4222");
  app.add_option("--vehicle", config.vehicle, "Vehicle id (1-64 of A-Z a-z 0-9 _ -)")->required();
  app.add_option("--sensors", rates, "Sensors and rates, SENSOR=HZ,... with HZ in (0, 1000]")
      ->capture_default_str()
      ->check(firmware::RatesValidator());
  app.add_option("--only", only, "Run only this sensor of --sensors (one process per sensor)");
  app.add_option("--batch-ms", config.batch_ms,
                 "Send each sensor's samples as one Batch every MS ms; 0 = one message per sample")
      ->capture_default_str()
      ->check(CLI::Range(0, 60'000));
  app.add_option("--buffer-bytes", config.buffer_bytes,
                 "Offline buffer size: messages kept while the link is down")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  app.add_option("--csv", csv, "Replay this recording instead of simulating")
      ->check(CLI::ExistingFile);
  app.add_flag("--csv-loop", csv_loop, "Start the recording over at its end (else hold values)");
  app.add_option("--seed", seed, "Seed of the simulated signals")->capture_default_str();
  app.add_flag("--no-status", no_status, "Do not publish on vehicle.<id>.status");
  app.add_option("--duration", duration_s,
                 "Stop after this many seconds; 0 = at SIGINT, SIGTERM or SIGHUP")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  app.add_option("--ack", ack,
                 "When a message counts as delivered and leaves the buffer: 'flush' once the "
                 "server answered a PING/PONG round trip sent after it (any server; a server "
                 "crash can lose what its stream had not stored yet), 'jetstream' once the stream "
                 "acknowledged storing it (needs a stream on vehicle.<id>.*; resends are "
                 "de-duplicated by Nats-Msg-Id)")
      ->capture_default_str()
      ->check([](const std::string& v) {
        return v == "flush" || v == "jetstream" ? std::string() : "flush or jetstream, not " + v;
      });
  app.add_option("--ack-timeout-ms", config.ack_timeout_ms,
                 "--ack jetstream: send again what waited this long for its acknowledgement")
      ->capture_default_str()
      ->check(CLI::Range(10, 600'000));
  app.add_option("--inbox-prefix", nats_options.inbox_prefix,
                 "Subject prefix of this vehicle's reply inboxes (acknowledgements); the server "
                 "must let it subscribe to PREFIX.> (default _INBOX.vehicle.<id>)");
  app.add_option("--drain-ms", config.drain_ms,
                 "At the end, how long to try delivering what is still buffered")
      ->capture_default_str()
      ->check(CLI::Range(0, 600'000));
  nats_options.reconnect_wait_ms = 1000;
  app.add_option("--reconnect-wait-ms", nats_options.reconnect_wait_ms,
                 "Wait between reconnection attempts (nats.c adds up to 100 ms of jitter)")
      ->capture_default_str()
      ->check(CLI::Range(10, 600'000));
  firmware::AddNatsOptions(app, nats_options);
  app.add_flag("--quiet", quiet,
               "Print nothing but errors, warnings (alarms raised, alarm payloads refused) and "
               "the final status line");
  firmware::NameEnvironment(app, "FLEET_SENSOR_");
  try {
    app.parse(argc, argv);
    firmware::ParseRates(rates, config.sensors);
    if (!only.empty()) {
      std::erase_if(config.sensors, [&](const auto& s) { return s.name != only; });
      if (config.sensors.empty()) {
        throw CLI::ValidationError("--only", "'" + only + "' is not one of --sensors " + rates);
      }
      config.shared_vehicle = true;
    }
    if (!fleetflow::wire::IsValidToken(config.vehicle)) {
      throw CLI::ValidationError("--vehicle",
                                 "'" + config.vehicle + "' must be 1-64 of A-Z a-z 0-9 _ -");
    }
  } catch (const CLI::ParseError& e) {
    return firmware::ExitForParseError(app, e, argc, argv);
  }
  config.publish_status = !no_status;
  config.log_level = quiet ? firmware::LogLevel::kWarning : firmware::LogLevel::kInfo;
  config.ack = ack == "jetstream" ? firmware::AckMode::kJetStream : firmware::AckMode::kFlush;
  if (nats_options.inbox_prefix.empty()) {
    nats_options.inbox_prefix = "_INBOX.vehicle." + config.vehicle;
  }

  std::vector<std::string> names;
  for (const auto& s : config.sensors) names.push_back(s.name);
  const int64_t start_ns = WallNs();
  std::unique_ptr<firmware::SensorSource> source;
  try {
    if (csv.empty()) {
      source = std::make_unique<firmware::SimulatedSource>(seed, config.vehicle, names, start_ns);
    } else {
      source = std::make_unique<firmware::CsvReplaySource>(csv, names, start_ns, csv_loop);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fleet-sensor: %s\n", e.what());
    return kExitSource;
  }

  // nats.c's own reconnect buffer only covers the moment between a link check and a publish;
  // the offline buffer holds everything else, so drops are counted there.
  nats_options.reconnect_buffer_bytes = 64 << 10;
  nats_options.max_reconnect = -1;
  nats_options.send_asap = true;  // a few messages per tick: write them now, no flusher wake-ups
  nats_options.name = "fleet-sensor " + config.vehicle;
  try {
    const auto conn = ConnectVehicle(nats_options, quiet);
    firmware::SensorAgent agent(config, *source, *conn);
    if (!quiet) {
      std::fprintf(stderr,
                   "fleet-sensor: vehicle %s, sensors %s, batch %d ms, buffer %zu bytes, "
                   "ack %s, %s\n",
                   config.vehicle.c_str(), rates.c_str(), config.batch_ms, config.buffer_bytes,
                   ack.c_str(), nats_options.url.c_str());
    }
    agent.Start();
    stop.Wait(duration_s > 0 ? std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::duration<double>(duration_s))
                             : std::chrono::nanoseconds(-1));
    agent.Stop();
    std::printf("%s\n", fleetflow::control::ToJson(agent.Status()).c_str());
    std::fflush(stdout);
    return 0;
  } catch (const nats::Error& e) {
    std::fprintf(stderr, "fleet-sensor: %s\n", e.what());
    return firmware::kExitNats;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "fleet-sensor: %s\n", e.what());
    return firmware::kExitUsage;
  }
}

// fleet-sim: many simulated vehicles in one process, publishing deterministic telemetry (see
// signals.hpp) over NATS in real time, with the wire format of schemas/wire.hpp.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "cli_options.hpp"
#include "nats_client.hpp"
#include "signals.hpp"
#include "wire.hpp"

namespace {

namespace firmware = fleetflow::firmware;
namespace nats = fleetflow::nats;
namespace sim = fleetflow::sim;
namespace wire = fleetflow::wire;

constexpr int kFlushTimeoutMs = 10'000;
constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr size_t kMaxSamplesPerMessage = 1024;  // keeps catch-up batches far below max_payload
constexpr double kMaxScaledHz = 100'000;

volatile std::sig_atomic_t g_stop = 0;

void OnStopSignal(int) { g_stop = 1; }

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Sleeps until wall-clock time t_ns, waking every 100 ms to notice SIGINT/SIGTERM. Returns false
// when asked to stop.
bool SleepUntil(int64_t t_ns) {
  while (g_stop == 0) {
    const int64_t left = t_ns - NowNs();
    if (left <= 0) return true;
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<int64_t>(left, kNsPerSec / 10)));
  }
  return false;
}

struct Options {
  nats::ConnectOptions nats = nats::ConnectOptions::FromEnv();
  sim::FleetConfig fleet;
  int first_vehicle = 0;
  double duration_s = 0;
  int batch_ms = 100;
  bool max_rate = false;  // no pacing: event time runs as fast as samples can be sent
  double mean_on_s = 0;   // > 0 with mean_off_s: vehicles switch on and off (sim::Trips)
  double mean_off_s = 0;
  bool quiet = false;
  bool progress = false;
};

struct Summary {
  int64_t samples = 0;
  int64_t messages = 0;  // sample messages; status messages are not counted
  int64_t bytes = 0;     // sample payload bytes
  int64_t start_ns = 0;
  int64_t end_ns = 0;    // exclusive bound of the published sample times
  double elapsed_s = 0;  // wall time from the first publish to the final flush
  // The most a batch was sent after its time (in real time; 0 with max_rate): a process starved
  // of CPU sends late, and an engine whose input paused longer than its idle_ms closed those
  // windows on the clock before the samples came.
  int64_t max_late_ns = 0;
};

// Publishes the fleet's samples in real time (or as fast as possible with max_rate): a min-heap
// of (next event time, stream) tells which vehicle+sensor stream is due next, so each tick costs
// O(due streams * log streams). With trips, one more stream per vehicle carries its switches.
class FleetRunner {
 public:
  FleetRunner(const Options& opt, nats::Connection& conn)
      : opt_(opt),
        fleet_(opt.fleet),
        conn_(conn),
        batch_ns_(static_cast<int64_t>(opt.batch_ms) * 1'000'000),
        end_ns_(opt.duration_s > 0 ? fleet_.start_ns + std::llround(opt.duration_s * 1e9)
                                   : INT64_MAX),
        trips_enabled_(opt.mean_on_s > 0 && opt.mean_off_s > 0) {
    const int sensors = static_cast<int>(fleet_.sensors.size());
    streams_.reserve(static_cast<size_t>(fleet_.vehicles) * (sensors + 1));
    for (int v = opt.first_vehicle; v < opt.first_vehicle + fleet_.vehicles; ++v) {
      const std::string id = sim::VehicleId(fleet_, v);
      status_subjects_.push_back(wire::StatusSubject(id));
      for (int s = 0; s < sensors; ++s) {
        AddStream(v, s, wire::SampleSubject(id, fleet_.sensors[s].name),
                  sim::SampleTime(fleet_, v, s, 0));
      }
      if (trips_enabled_) {
        AddStream(v, kSwitchStream, "",
                  sim::Trips(fleet_, v, opt.mean_on_s, opt.mean_off_s).until_ns());
      }
    }
    std::make_heap(heap_.begin(), heap_.end(), std::greater<>());
  }

  Summary Run() {
    Summary sum;
    sum.start_ns = fleet_.start_ns;
    PublishStatus(fleet_.start_ns);
    int64_t published_until = fleet_.start_ns;
    first_publish_ns_ = NowNs();
    if (opt_.max_rate || SleepUntil(fleet_.start_ns)) {
      first_publish_ns_ = last_report_ns_ = NowNs();
      while (!heap_.empty() && g_stop == 0) {
        const int64_t next = heap_.front().ts;
        const int64_t tick = std::min(batch_ns_ > 0 ? GridFloor(next) + batch_ns_ : next, end_ns_);
        if (!opt_.max_rate && !SleepUntil(tick)) break;
        const int64_t now = opt_.max_rate ? tick : NowNs();
        const int64_t until = now >= end_ns_ ? end_ns_ : batch_ns_ > 0 ? GridFloor(now) : now + 1;
        while (!heap_.empty() && heap_.front().ts < until) {
          std::pop_heap(heap_.begin(), heap_.end(), std::greater<>());
          const Due due = heap_.back();
          heap_.pop_back();
          PublishDue(due, until);
        }
        if (!opt_.max_rate) sum.max_late_ns = std::max(sum.max_late_ns, NowNs() - tick);
        published_until = until;
        if (opt_.progress) ReportProgress();
      }
    }
    // Completed duration runs published every sample before end_ns_.
    sum.end_ns = heap_.empty() ? end_ns_ : published_until;
    conn_.Flush(kFlushTimeoutMs);
    sum.elapsed_s = static_cast<double>(NowNs() - first_publish_ns_) / 1e9;
    for (const std::string& subject : status_subjects_) conn_.Publish(subject, "off");
    conn_.Flush(kFlushTimeoutMs);
    sum.samples = samples_;
    sum.messages = messages_;
    sum.bytes = bytes_;
    return sum;
  }

 private:
  static constexpr int kSwitchStream = -1;  // Stream::sensor of a vehicle's on/off switches

  struct Stream {
    int vehicle;
    int sensor;  // kSwitchStream: the vehicle's trips
    int64_t k;   // next sample index
    uint32_t seq;
    std::string subject;
    sim::Trips trips;
  };
  struct Due {
    int64_t ts;
    uint32_t stream;
    bool operator>(const Due& o) const { return ts != o.ts ? ts > o.ts : stream > o.stream; }
  };

  void AddStream(int vehicle, int sensor, std::string subject, int64_t first) {
    if (first < end_ns_) heap_.push_back({first, static_cast<uint32_t>(streams_.size())});
    streams_.push_back({vehicle, sensor, 0, 0, std::move(subject),
                        sim::Trips(fleet_, vehicle, trips_enabled_ ? opt_.mean_on_s : 1,
                                   trips_enabled_ ? opt_.mean_off_s : 1)});
  }

  // The batch ticks are start_ns + j * batch_ns; samples due in [tick - batch, tick) go at tick.
  int64_t GridFloor(int64_t t) const {
    return fleet_.start_ns + (t - fleet_.start_ns) / batch_ns_ * batch_ns_;
  }

  // Publishes the samples of one stream due before `until`, in order, then re-queues it (a
  // stream far behind, e.g. after a past --start-ns, is re-queued due and sent in pieces).
  // Samples that fall while the vehicle is parked are skipped.
  void PublishDue(Due due, int64_t until) {
    Stream& st = streams_[due.stream];
    if (st.sensor == kSwitchStream) return PublishSwitch(due);
    points_.clear();
    int64_t ts = due.ts;
    while (ts < until && points_.size() < kMaxSamplesPerMessage) {
      if (trips_enabled_) {
        st.trips.Seek(ts);
        if (!st.trips.on()) {
          const int64_t first = sim::SampleTime(fleet_, st.vehicle, st.sensor, 0);
          const int64_t period = sim::PeriodNs(fleet_.sensors[st.sensor]);
          st.k = std::max(st.k, (st.trips.until_ns() - first + period - 1) / period);
          ts = sim::SampleTime(fleet_, st.vehicle, st.sensor, st.k);
          continue;
        }
      }
      const int64_t parked = trips_enabled_ ? st.trips.parked_ns() : 0;
      wire::Point p = sim::SampleAt(fleet_, st.vehicle, st.sensor, ts - parked, st.seq++);
      p.ts_ns = ts;
      points_.push_back(p);
      ts = sim::SampleTime(fleet_, st.vehicle, st.sensor, ++st.k);
    }
    if (batch_ns_ > 0) {
      Send(st.subject, points_);
    } else {
      for (const wire::Point& p : points_) Send(st.subject, {&p, 1});
    }
    Requeue(due.stream, ts);
  }

  void PublishSwitch(Due due) {
    Stream& st = streams_[due.stream];
    st.trips.Seek(due.ts);
    conn_.Publish(status_subjects_[st.vehicle - opt_.first_vehicle], st.trips.on() ? "on" : "off");
    Requeue(due.stream, st.trips.until_ns());
  }

  void Requeue(uint32_t stream, int64_t ts) {
    if (ts >= end_ns_) return;
    heap_.push_back({ts, stream});
    std::push_heap(heap_.begin(), heap_.end(), std::greater<>());
  }

  void Send(const std::string& subject, std::span<const wire::Point> points) {
    if (points.empty()) return;
    const std::vector<uint8_t> payload = wire::EncodeBatch(points);
    conn_.Publish(subject, payload.data(), payload.size());
    samples_ += static_cast<int64_t>(points.size());
    bytes_ += static_cast<int64_t>(payload.size());
    ++messages_;
  }

  // Every vehicle's state at `ts_ns`: "on", or "off" for vehicles parked then.
  void PublishStatus(int64_t ts_ns) {
    for (size_t i = 0; i < status_subjects_.size(); ++i) {
      bool on = true;
      if (trips_enabled_) {
        sim::Trips trips(fleet_, opt_.first_vehicle + static_cast<int>(i), opt_.mean_on_s,
                         opt_.mean_off_s);
        trips.Seek(ts_ns);
        on = trips.on();
      }
      conn_.Publish(status_subjects_[i], on ? "on" : "off");
    }
  }

  void ReportProgress() {
    const int64_t now = NowNs();
    if (now - last_report_ns_ < kNsPerSec) return;
    const double secs = static_cast<double>(now - last_report_ns_) / 1e9;
    std::fprintf(stderr,
                 "fleet-sim: %d vehicles, %" PRId64 " samples sent, %.0f msgs/s, %.0f samples/s\n",
                 fleet_.vehicles, samples_, static_cast<double>(messages_ - last_messages_) / secs,
                 static_cast<double>(samples_ - last_samples_) / secs);
    last_messages_ = messages_;
    last_samples_ = samples_;
    last_report_ns_ = now;
  }

  const Options& opt_;
  const sim::FleetConfig& fleet_;
  nats::Connection& conn_;
  const int64_t batch_ns_;
  const int64_t end_ns_;
  const bool trips_enabled_;
  std::vector<Stream> streams_;
  std::vector<std::string> status_subjects_;
  std::vector<Due> heap_;
  std::vector<wire::Point> points_;  // reused for every message
  int64_t samples_ = 0, messages_ = 0, bytes_ = 0;
  int64_t first_publish_ns_ = 0;
  int64_t last_samples_ = 0, last_messages_ = 0, last_report_ns_ = 0;
};

// Multiplies every rate so that the fleet sends `target` samples/s in all.
void ScaleRates(double target, sim::FleetConfig& fleet) {
  double nominal = 0;
  for (const sim::SensorRate& s : fleet.sensors) nominal += s.hz * fleet.vehicles;
  for (sim::SensorRate& s : fleet.sensors) {
    s.hz *= target / nominal;
    if (s.hz > kMaxScaledHz) {
      throw CLI::ValidationError("--target-rate", "needs " + s.name + " at " +
                                                      std::to_string(s.hz) +
                                                      " Hz per vehicle; use more --vehicles");
    }
  }
}

void ParseOnOff(const std::string& spec, Options& opt) {
  const size_t comma = spec.find(',');
  try {
    size_t used_on = 0, used_off = 0;
    opt.mean_on_s = std::stod(spec.substr(0, comma), &used_on);
    opt.mean_off_s = comma == std::string::npos ? 0 : std::stod(spec.substr(comma + 1), &used_off);
    if (used_on == comma && used_off == spec.size() - comma - 1 && opt.mean_on_s > 0 &&
        opt.mean_off_s > 0) {
      return;
    }
  } catch (const std::exception&) {
  }
  throw CLI::ValidationError("--on-off", "'" + spec + "' is not ON_S,OFF_S, e.g. 300,60");
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::string rates = "gps=10,speed=30,soc=5,torque=20";
  int64_t start_ns = -1;
  double target_rate = 0;
  std::string on_off;

  CLI::App app{
      "Simulates a fleet of vehicles in one process and publishes their telemetry over "
      "NATS in real time: samples on vehicle.<id>.<sensor> (FlatBuffers FLT1 Batch), "
      "'on' / 'off' on vehicle.<id>.status. Signals are deterministic for a seed.",
      "fleet-sim"};
  app.footer(
      "Vehicle ids are <id-prefix><index, zero-padded to 5 digits>, e.g. v00007; indexes run from "
      "--first-vehicle, so several processes can split one fleet.\n"
      "Units: gps in WGS84 degrees, speed in m/s, soc in %, torque in Nm; other sensor names "
      "get a generic smooth signal.\n"
      "At the end (--duration reached, SIGINT or SIGTERM) fleet-sim flushes, publishes 'off', "
      "and prints one JSON line to stdout:\n"
      "  {\"vehicles\":N,\"samples\":S,\"messages\":M,\"start_ns\":T0,\"end_ns\":T1,"
      "\"bytes\":B,\"elapsed_s\":E,\"samples_per_s\":R,\"max_late_ms\":L}\n"
      "where messages counts sample messages (not status ones), bytes their payloads, every "
      "sample with start_ns <= time < end_ns was published (but those of parked vehicles, with "
      "--on-off), R = S / E, E being the wall time from the first publish to the final "
      "flush, and L the most a batch was sent after its due time (a process starved of CPU "
      "falls behind and sends what is due at once; 0 with --max-rate).\n"
      "Load: --target-rate R scales every sensor's rate so that the fleet sends R samples/s in "
      "real time; --max-rate drops the pacing, so event time runs ahead of the wall clock as "
      "fast as samples can be sent (for throughput measurements; an engine would see future "
      "timestamps).\n"
      "Environment: every option can also come from the variable named beside it, "
      "FLEET_SIM_<OPTION> "
      "(the NATS options: NATS_URL, NATS_CREDS, NATS_NKEY_SEED, NATS_CA, NATS_CERT, NATS_KEY); the "
      "command line wins.\n"
      "Exit status: 0 done, 1 usage error, 2 NATS error (cannot connect, publish or flush).\n"
      "Example:\n  fleet-sim --vehicles 100 --duration 60 --rates gps=10,speed=30");
  firmware::AddNatsOptions(app, opt.nats);
  app.add_option("--vehicles", opt.fleet.vehicles, "Number of vehicles in this process")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--first-vehicle", opt.first_vehicle, "Index of the first vehicle")
      ->capture_default_str()
      ->check(CLI::Range(0, 100'000'000));
  app.add_option("--seed", opt.fleet.seed, "Seed of the signals and sample phases")
      ->capture_default_str();
  app.add_option("--rates", rates, "Sensors and their rates, SENSOR=HZ,... with HZ in (0, 1000]")
      ->capture_default_str()
      ->check(firmware::RatesValidator());
  app.add_option("--duration", opt.duration_s,
                 "Seconds of event time to publish from --start-ns; 0 = until SIGINT/SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e8));
  app.add_option("--batch-ms", opt.batch_ms,
                 "Send each vehicle+sensor's due samples as one Batch every MS milliseconds; "
                 "0 = one message per sample, sent when due")
      ->capture_default_str()
      ->check(CLI::Range(0, 60'000));
  app.add_option("--start-ns", start_ns,
                 "Fleet time origin, ns since the Unix epoch (default: now rounded up to the next "
                 "whole second); the fleet waits until then, or catches up if it is past")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--id-prefix", opt.fleet.id_prefix, "Prefix of vehicle ids")
      ->capture_default_str();
  app.add_option("--target-rate", target_rate,
                 "Aggregate samples/s to send: scales every rate of --rates to reach it")
      ->check(CLI::Range(1.0, 1e9));
  app.add_flag("--max-rate", opt.max_rate,
               "Send as fast as possible instead of in real time (event time runs ahead)")
      ->excludes("--target-rate");
  app.add_option("--on-off", on_off,
                 "Vehicles switch on and off: driving about ON_S seconds, parked about OFF_S "
                 "(each period 0.5-1.5 times its mean, deterministic per seed); 'on'/'off' "
                 "published at each switch, parked vehicles send nothing and do not move")
      ->type_name("ON_S,OFF_S");
  app.add_flag("--quiet", opt.quiet, "Print nothing but errors and the summary line");
  app.add_flag("--progress", opt.progress,
               "Print a progress line to stderr every second (vehicles, samples sent, msgs/s, "
               "samples/s)");
  firmware::NameEnvironment(app, "FLEET_SIM_");
  try {
    app.parse(argc, argv);
    firmware::ParseRates(rates, opt.fleet.sensors);
    if (target_rate > 0) ScaleRates(target_rate, opt.fleet);
    if (!on_off.empty()) ParseOnOff(on_off, opt);
    const std::string last_id =
        sim::VehicleId(opt.fleet, opt.first_vehicle + opt.fleet.vehicles - 1);
    if (!wire::IsValidToken(opt.fleet.id_prefix) || !wire::IsValidToken(last_id)) {
      throw CLI::ValidationError(
          "--id-prefix", "vehicle ids such as '" + last_id + "' must be 1-64 of A-Z a-z 0-9 _ -");
    }
  } catch (const CLI::ParseError& e) {
    return firmware::ExitForParseError(app, e, argc, argv);
  }
  opt.fleet.start_ns = start_ns >= 0 ? start_ns : (NowNs() / kNsPerSec + 1) * kNsPerSec;
  opt.nats.name = "fleet-sim";

  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
  try {
    const auto conn = nats::Connection::Connect(opt.nats);
    if (!opt.quiet) {
      std::fprintf(stderr,
                   "fleet-sim: %d vehicles from %s, sensors %s, seed %" PRIu64 ", start_ns %" PRId64
                   ", publishing to %s\n",
                   opt.fleet.vehicles, sim::VehicleId(opt.fleet, opt.first_vehicle).c_str(),
                   rates.c_str(), opt.fleet.seed, opt.fleet.start_ns, opt.nats.url.c_str());
    }
    FleetRunner runner(opt, *conn);
    const Summary sum = runner.Run();
    std::printf("{\"vehicles\":%d,\"samples\":%" PRId64 ",\"messages\":%" PRId64
                ",\"start_ns\":%" PRId64 ",\"end_ns\":%" PRId64 ",\"bytes\":%" PRId64
                ",\"elapsed_s\":%.3f,\"samples_per_s\":%.0f,\"max_late_ms\":%.1f}\n",
                opt.fleet.vehicles, sum.samples, sum.messages, sum.start_ns, sum.end_ns, sum.bytes,
                sum.elapsed_s,
                sum.elapsed_s > 0 ? static_cast<double>(sum.samples) / sum.elapsed_s : 0.0,
                static_cast<double>(sum.max_late_ns) / 1e6);
    std::fflush(stdout);
    return 0;
  } catch (const nats::Error& e) {
    std::fprintf(stderr, "fleet-sim: %s\n", e.what());
    return firmware::kExitNats;
  }
}

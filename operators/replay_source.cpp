#include "replay_source.hpp"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "recording.hpp"
#include "thread_name.hpp"
#include "utc_time.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

/// The options of replay_source (see Spec()).
struct ReplaySourceOptions {
  std::string file;
  std::vector<std::string> next_files;
  int64_t max_file_gap_ms = 0;
  double speed = 0;  ///< 0: as fast as possible
  int64_t tick_ms = 0;
  std::string partition_prefix;  ///< empty: subjects as recorded
  WireInputOptions input;
};

class ReplaySource final : public Operator {
 public:
  ReplaySource(const OperatorContext& ctx, const ReplaySourceOptions& options)
      : id_(ctx.node_id),
        files_(Files(options)),
        max_file_gap_ns_(options.max_file_gap_ms * 1'000'000),
        speed_(options.speed),
        tick_ns_(options.tick_ms * 1'000'000),
        partition_prefix_(options.partition_prefix),
        clock_driver_(ctx.clock_driver),
        input_ended_(ctx.input_ended),
        input_(ctx, options.input),
        records_(ctx.metrics.GetCounter("replay_records", "Records read from the recording.",
                                        ctx.labels())),
        offset_(ctx.metrics.GetGauge("replay_offset_bytes",
                                     "Bytes of the recordings read so far (all files).",
                                     ctx.labels())),
        size_(ctx.metrics.GetGauge("replay_file_bytes", "Size of the recordings (all files).",
                                   ctx.labels())),
        recorded_(ctx.metrics.GetGauge("replay_recorded_time_seconds",
                                       "Receive time of the last record replayed, Unix seconds.",
                                       ctx.labels())),
        finished_(ctx.metrics.GetGauge("replay_finished",
                                       "1 once the recording is replayed to its end or to damage.",
                                       ctx.labels())),
        damaged_(ctx.metrics.GetGauge(
            "replay_damaged_offset_bytes",
            "Byte offset of the truncated or corrupt record that stopped the replay (-1: none).",
            ctx.labels())) {
    damaged_.Set(-1);
    // Opened here so a missing file or an unknown version fails before anything starts.
    uint64_t total = 0;
    for (const std::string& file : files_) {
      readers_.push_back(std::make_unique<recording::Reader>());
      if (!readers_.back()->Open(file)) throw std::runtime_error(readers_.back()->error());
      total += readers_.back()->file_size();
    }
    size_.Set(static_cast<double>(total));
  }

  ~ReplaySource() override { Stop(); }

  void Start(Emitter& out) override {
    out_ = &out;
    spdlog::info("node '{}': replaying {} ({} bytes){}", id_, fmt::join(files_, ", "),
                 static_cast<uint64_t>(size_.value()),
                 speed_ > 0 ? fmt::format(" at x{}", speed_) : std::string(" as fast as possible"));
    thread_ = std::thread([this] { Run(); });
    NameThread(thread_, "ff-replay");
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static std::vector<std::string> Files(const ReplaySourceOptions& options) {
    std::vector<std::string> files = {options.file};
    files.insert(files.end(), options.next_files.begin(), options.next_files.end());
    return files;
  }

  void Run() {
    recording::Record r;
    std::shared_ptr<Body> body;
    std::string unmapped;
    const auto wall_start = std::chrono::steady_clock::now();
    int64_t first_ns = 0;
    int64_t next_tick = 0;
    int64_t previous_last_ns = 0;  // last receive time of the previous file
    bool stopped = false;
    uint64_t n = 0;
    for (size_t k = 0; k < readers_.size() && !stopped; ++k) {
      recording::Reader& reader = *readers_[k];
      for (uint64_t in_file = 0;; ++n, ++in_file) {
        if ((n & 255) == 0) {
          std::lock_guard lock(mu_);
          if (stopping_) {
            stopped = true;
            break;
          }
        }
        const auto status = reader.Next(r);
        if (status != recording::Reader::Status::kRecord) {
          if (status != recording::Reader::Status::kEnd) {
            damaged_.Set(static_cast<double>(reader.offset()));
            spdlog::error("node '{}': {}: {}; replayed the {} records before it", id_, files_[k],
                          reader.error(), records_.value());
            stopped = true;
          }
          break;
        }
        if (n == 0) first_ns = r.recv_ns;
        if (in_file == 0 && k > 0) CheckContinuity(k, previous_last_ns, r.recv_ns);
        previous_last_ns = r.recv_ns;
        if (speed_ > 0 && !Pace(wall_start, static_cast<double>(r.recv_ns - first_ns) / speed_)) {
          stopped = true;
          break;
        }
        if (clock_driver_ != nullptr) {
          // Ticks at multiples of tick_ms of recorded time: everything received up to a tick
          // enters before it, as the live ticker would have stamped it.
          const int64_t boundary = ((r.recv_ns - 1) / tick_ns_) * tick_ns_;
          if (next_tick == 0) next_tick = boundary + tick_ns_;
          if (boundary >= next_tick) {
            clock_driver_->AdvanceTo(boundary);
            out_->Emit(MakeMessage(Tick{boundary, false}));
            next_tick = boundary + tick_ns_;
          }
          clock_driver_->AdvanceTo(r.recv_ns);
        }
        body.reset();
        const std::string_view subject =
            partition_prefix_.empty() ? std::string_view(r.subject)
                                      : UnmapPartitioned(r.subject, partition_prefix_, unmapped);
        if (input_.Decode(subject, r.payload.data(), r.payload.size(), r.recv_ns, body) ==
            WireInput::Outcome::kEmit) {
          out_->Emit(std::move(body));
        }
        records_.Inc();
        if ((n & 63) == 0) Publish(r.recv_ns, reader.offset());
      }
      done_bytes_ += reader.offset();
    }
    Publish(r.recv_ns, 0);
    finished_.Set(1);
    input_ended_();
  }

  /// Warns when file k starts before file k - 1 ended (an overlap) or more than max_file_gap_ms
  /// after it (a gap).
  void CheckContinuity(size_t k, int64_t previous_last_ns, int64_t first_ns) const {
    if (first_ns < previous_last_ns) {
      spdlog::warn("node '{}': overlap: {} starts at {} before {} ended at {} ({:.3f} s earlier)",
                   id_, files_[k], FormatUtc(first_ns), files_[k - 1], FormatUtc(previous_last_ns),
                   (previous_last_ns - first_ns) / 1e9);
    } else if (first_ns - previous_last_ns > max_file_gap_ns_) {
      spdlog::warn("node '{}': gap: {} starts at {}, {:.3f} s after {} ended at {}", id_, files_[k],
                   FormatUtc(first_ns), (first_ns - previous_last_ns) / 1e9, files_[k - 1],
                   FormatUtc(previous_last_ns));
    }
  }

  /// `offset`: in the file being replayed.
  void Publish(int64_t recv_ns, uint64_t offset) {
    offset_.Set(static_cast<double>(done_bytes_ + offset));
    recorded_.Set(static_cast<double>(recv_ns) / 1e9);  // base unit: seconds
  }

  /// Waits until `recorded_s` of recorded time (scaled by speed) have passed since the start;
  /// false when stopped meanwhile.
  bool Pace(std::chrono::steady_clock::time_point start, double recorded_ns) {
    const auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(recorded_ns));
    std::unique_lock lock(mu_);
    return !cv_.wait_until(lock, due, [this] { return stopping_; });
  }

  const std::string id_;
  const std::vector<std::string> files_;
  const int64_t max_file_gap_ns_;
  const double speed_;
  const int64_t tick_ns_;
  const std::string partition_prefix_;
  ClockDriver* const clock_driver_;  // replay clock: ticks on recorded time; else none
  const std::function<void()> input_ended_;
  WireInput input_;
  Counter& records_;
  Gauge& offset_;
  Gauge& size_;
  Gauge& recorded_;
  Gauge& finished_;
  Gauge& damaged_;
  std::vector<std::unique_ptr<recording::Reader>> readers_;
  uint64_t done_bytes_ = 0;  // bytes of the files replayed to their end
  Emitter* out_ = nullptr;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

const OptionsSpec<ReplaySourceOptions>& Spec() {
  using O = ReplaySourceOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.String("file", "The recording to replay (docs/recording.md).", &O::file)
        .Required()
        .Example(R"("recordings/fleet.ffrc")");
    c.StringArray("next_files",
                  "Recordings replayed after file, in order, as one stream (a rotated set: "
                  "FILE.1, FILE.2, ...). A file that starts before the previous one ended, or "
                  "more than max_file_gap_ms after it, is reported.",
                  &O::next_files)
        .DefaultJson("[]");
    c.Integer("max_file_gap_ms",
              "next_files: a longer silence between the end of one file and the start of the "
              "next is reported as a gap.",
              &O::max_file_gap_ms)
        .Default(int64_t{1000})
        .Min(0);
    c.Number("speed",
             "0: as fast as the pipeline takes it; N > 0: N times the recorded pace (1: real "
             "time).",
             &O::speed)
        .Default(0.0)
        .Min(0);
    c.Integer("tick_ms",
              "With the replay clock (fleetflow replay): a Tick enters the stream every tick_ms "
              "of recorded time, as the engine's ticker does live.",
              &O::tick_ms)
        .Default(int64_t{100})
        .Min(10)
        .Max(10000);
    c.String("partition_prefix",
             "Read a subject <partition_prefix>.<n>.<vehicle>.<sensor> (recorded from a "
             "partitioned stream) as vehicle.<vehicle>.<sensor>, as the partitioned nats_source "
             "does; empty: subjects as recorded.",
             &O::partition_prefix)
        .Default("");
    c.Include(&O::input, WireInputSpec());
  });
}

}  // namespace

void RegisterReplaySource(Registry& registry) {
  OperatorInfo info = TypedOperator<ReplaySource>(
      kReplaySourceName,
      "Replays a recording (fleetflow record) in place of nats_source: the same samples and "
      "status, decoded and validated the same way, with the recorded receive times as the clock.",
      PortKind::kNone, PortKind::kSamples, Spec());
  info.facts = [](const Config& config) {
    NodeFacts facts;
    SetWireInputFacts(Spec().Parse(config).input, facts);
    return facts;
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

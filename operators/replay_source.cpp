#include "replay_source.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "recording.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

class ReplaySource final : public Operator {
 public:
  explicit ReplaySource(const OperatorContext& ctx)
      : id_(ctx.node_id),
        file_(ctx.config.String("file")),
        speed_(ctx.config.Number("speed")),
        tick_ns_(ctx.config.Integer("tick_ms") * 1'000'000),
        partition_prefix_(ctx.config.String("partition_prefix")),
        clock_driver_(ctx.clock_driver),
        input_ended_(ctx.input_ended),
        input_(ctx),
        records_(ctx.metrics.GetCounter("replay_records", "Records read from the recording.",
                                        ctx.labels())),
        offset_(ctx.metrics.GetGauge("replay_offset_bytes", "Bytes of the recording read so far.",
                                     ctx.labels())),
        size_(ctx.metrics.GetGauge("replay_file_bytes", "Size of the recording.", ctx.labels())),
        recorded_(ctx.metrics.GetGauge("replay_recorded_time_ns",
                                       "Receive time of the last record replayed.", ctx.labels())),
        finished_(ctx.metrics.GetGauge("replay_finished",
                                       "1 once the recording is replayed to its end or to damage.",
                                       ctx.labels())),
        damaged_(ctx.metrics.GetGauge(
            "replay_damaged_offset_bytes",
            "Byte offset of the truncated or corrupt record that stopped the replay (-1: none).",
            ctx.labels())) {
    damaged_.Set(-1);
    // Opened here so a missing file or an unknown version fails before anything starts.
    if (!reader_.Open(file_)) throw std::runtime_error(reader_.error());
    size_.Set(static_cast<double>(reader_.file_size()));
  }

  ~ReplaySource() override { Stop(); }

  void Start(Emitter& out) override {
    out_ = &out;
    spdlog::info("node '{}': replaying {} ({} bytes){}", id_, file_, reader_.file_size(),
                 speed_ > 0 ? fmt::format(" at x{}", speed_) : std::string(" as fast as possible"));
    thread_ = std::thread([this] { Run(); });
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
  void Run() {
    recording::Record r;
    std::shared_ptr<Body> body;
    std::string unmapped;
    const auto wall_start = std::chrono::steady_clock::now();
    int64_t first_ns = 0;
    int64_t next_tick = 0;
    for (uint64_t n = 0;; ++n) {
      if ((n & 255) == 0) {
        std::lock_guard lock(mu_);
        if (stopping_) break;
      }
      const auto status = reader_.Next(r);
      if (status != recording::Reader::Status::kRecord) {
        if (status != recording::Reader::Status::kEnd) {
          damaged_.Set(static_cast<double>(reader_.offset()));
          spdlog::error("node '{}': {}: {}; replayed the {} records before it", id_, file_,
                        reader_.error(), records_.value());
        }
        break;
      }
      if (n == 0) first_ns = r.recv_ns;
      if (speed_ > 0 && !Pace(wall_start, static_cast<double>(r.recv_ns - first_ns) / speed_)) {
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
      if ((n & 63) == 0) Publish(r.recv_ns);
    }
    Publish(r.recv_ns);
    finished_.Set(1);
    input_ended_();
  }

  void Publish(int64_t recv_ns) {
    offset_.Set(static_cast<double>(reader_.offset()));
    recorded_.Set(static_cast<double>(recv_ns));
  }

  /// Waits until `recorded_s` of recorded time (scaled by speed) have passed since the start;
  /// false when stopped meanwhile.
  bool Pace(std::chrono::steady_clock::time_point start, double recorded_ns) {
    const auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(recorded_ns));
    std::unique_lock lock(mu_);
    return !cv_.wait_until(lock, due, [this] { return stopping_; });
  }

  const std::string id_;
  const std::string file_;
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
  recording::Reader reader_;
  Emitter* out_ = nullptr;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace

void RegisterReplaySource(Registry& registry) {
  OperatorInfo info;
  info.name = "replay_source";
  info.summary =
      "Replays a recording (fleetflow record) in place of nats_source: the same samples and "
      "status, decoded and validated the same way, with the recorded receive times as the clock.";
  info.input = PortKind::kNone;
  info.output = PortKind::kSamples;
  auto& c = info.config;
  c.String("file", "The recording to replay (docs/recording.md).")
      .Required()
      .Example(R"("recordings/fleet.ffrc")");
  c.Number("speed",
           "0: as fast as the pipeline takes it; N > 0: N times the recorded pace (1: real time).")
      .Default(0.0)
      .Min(0);
  c.Integer("tick_ms",
            "With the replay clock (fleetflow replay): a Tick enters the stream every tick_ms of "
            "recorded time, as the engine's ticker does live.")
      .Default(int64_t{100})
      .Min(10)
      .Max(10000);
  c.String("partition_prefix",
           "Read a subject <partition_prefix>.<n>.<vehicle>.<sensor> (recorded from a partitioned "
           "stream) as vehicle.<vehicle>.<sensor>, as the partitioned nats_source does; empty: "
           "subjects as recorded.")
      .Default("");
  AddWireInputFields(c);
  info.create = [](const OperatorContext& ctx) { return std::make_unique<ReplaySource>(ctx); };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

#include "fleet_publish.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fleet_partial.hpp"
#include "jetstream.hpp"
#include "logging.hpp"
#include "nats_config.hpp"
#include "options.hpp"

namespace fleetflow {
namespace {

/// The options of fleet_publish (see Spec()).
struct FleetPublishOptions {
  NatsClientOptions nats;
  std::string stream;
  std::string subject_prefix;
  int64_t shards = 16;
  int64_t partitions = 16;
  int64_t stream_replicas = 1;
  int64_t stream_max_age_ms = 0;
  int64_t publish_timeout_ms = 0;
  int64_t max_pending = 0;
};

/// One message of partials to publish.
struct Outgoing {
  uint32_t partition = 0;
  std::string subject;
  std::string msg_id;
  std::string payload;
  InFlight in_flight;  // of the window's rows (InFlight): let go once published
};

class FleetPublish final : public Operator {
 public:
  FleetPublish(const OperatorContext& ctx, const FleetPublishOptions& options)
      : node_(ctx.node_id),
        o_(options),
        connect_(NatsConnectOptions(options.nats, "fleetflow:" + ctx.node_id)),
        published_(ctx.metrics.GetCounter(
            "partials_published", "Messages of partial rows stored in the stream.", ctx.labels())),
        failures_(ctx.metrics.GetCounter(
            "partials_publish_failures",
            "Publishes of partial rows the stream did not acknowledge (sent again).",
            ctx.labels())),
        refused_(ctx.metrics.GetCounter(
            "partials_refused",
            "Batches of rows without a partition (not behind a partitioned source): not sent.",
            ctx.labels())),
        pending_gauge_(ctx.metrics.GetGauge("partials_pending",
                                            "Messages of partial rows waiting to be published.",
                                            ctx.labels())) {}

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<StatsBatch>(in.get())) {
      Queue(*b);
      Publish(/*force=*/false);
      while (pending_.size() > static_cast<size_t>(o_.max_pending) && !Publish(/*force=*/true)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the graph waits here
      }
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      Publish(/*force=*/false);
      if (t->drain) WaitPublished("the drain", std::nullopt);
      out.Emit(in);
    } else if (const auto* e = std::get_if<PartitionEvent>(in.get())) {
      if (e->kind == PartitionEvent::Kind::kRevoked) {
        WaitPublished("partition " + std::to_string(e->partition) + " being revoked", e->partition);
      }
      out.Emit(in);
    }
  }

  bool Ready() const override { return !conn_ || conn_->connected(); }

 private:
  /// One message per shard of the batch's partition and window.
  void Queue(const StatsBatch& b) {
    if (!b.partition) {
      refused_.Inc();
      return;
    }
    const uint32_t shards = static_cast<uint32_t>(o_.shards);
    std::vector<fleet::Partial> by_shard(shards);
    for (uint32_t s = 0; s < shards; ++s) {
      fleet::Partial& p = by_shard[s];
      p.node = node_;
      p.origin = *b.partition;
      p.origins = static_cast<uint32_t>(o_.partitions);
      p.start_ns = b.start_ns;
      p.length_ns = b.length_ns;
      if (b.sensors) p.metrics = *b.sensors;
    }
    for (const StatsRow& row : b.rows) {
      fleet::Row& r = by_shard[PartitionOf(row.vehicle, shards)].rows.emplace_back();
      r.key = row.vehicle;
      for (const SensorStats& s : row.sensors) r.stats.push_back({s.count, s.min, s.max, s.sum});
    }
    for (uint32_t s = 0; s < shards; ++s) {
      pending_.push_back(
          {*b.partition,
           o_.subject_prefix + "." + std::to_string(s) + "." + std::to_string(*b.partition),
           node_ + "." + std::to_string(*b.partition) + "." + std::to_string(b.start_ns) + "." +
               std::to_string(s),
           fleet::Encode(by_shard[s]), b.in_flight});
    }
    pending_gauge_.Set(static_cast<double>(pending_.size()));
  }

  /// Publishes what waits, oldest first, until one fails; after a failure the next attempt
  /// waits (100 ms doubling up to 5 s) unless `force`. True when nothing waits.
  bool Publish(bool force) {
    if (pending_.empty()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (!force && now < next_attempt_) return false;
    try {
      if (!conn_) {
        conn_ = nats::Connection::Connect(connect_);
        js_ = std::make_unique<nats::JetStream>(*conn_);
        nats::StreamOptions s;
        s.name = o_.stream;
        s.subjects = {o_.subject_prefix + ".*.*"};
        s.max_age_ms = o_.stream_max_age_ms;
        s.replicas = static_cast<int>(o_.stream_replicas);
        js_->EnsureStream(s);
      }
      while (!pending_.empty()) {
        const Outgoing& m = pending_.front();
        js_->Publish(m.subject, m.payload.data(), m.payload.size(), {{"Nats-Msg-Id", m.msg_id}},
                     static_cast<int>(o_.publish_timeout_ms));
        published_.Inc();
        pending_.pop_front();
      }
      backoff_ms_ = 0;
    } catch (const nats::Error& e) {
      failures_.Inc();
      backoff_ms_ = backoff_ms_ == 0 ? 100 : std::min<int64_t>(backoff_ms_ * 2, 5000);
      next_attempt_ = now + std::chrono::milliseconds(backoff_ms_);
      failure_log_.Log("publish", spdlog::level::warn,
                       "fleet_publish '" + node_ + "': " + std::to_string(pending_.size()) +
                           " messages of partial rows wait: " + e.what());
    }
    pending_gauge_.Set(static_cast<double>(pending_.size()));
    return pending_.empty();
  }

  /// Publishes everything of `partition` (every partition's: nullopt) before going on, trying
  /// for publish_timeout_ms at most; says what is left unpublished then.
  void WaitPublished(const std::string& why, std::optional<uint32_t> partition) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(o_.publish_timeout_ms);
    const auto waiting = [&] {
      for (const Outgoing& m : pending_) {
        if (!partition || m.partition == *partition) return true;
      }
      return false;
    };
    while (waiting() && std::chrono::steady_clock::now() < deadline) {
      if (!Publish(/*force=*/true)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (waiting()) {
      spdlog::error(
          "fleet_publish '{}': {}: {} messages of partial rows not stored in stream {}; the "
          "merge waits for them (the partition's next owner sends only the windows after its "
          "snapshot)",
          node_, why, pending_.size(), o_.stream);
    }
  }

  const std::string node_;
  const FleetPublishOptions o_;
  const nats::ConnectOptions connect_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::deque<Outgoing> pending_;
  std::chrono::steady_clock::time_point next_attempt_{};
  int64_t backoff_ms_ = 0;
  RateLimitedLog failure_log_;
  Counter& published_;
  Counter& failures_;
  Counter& refused_;
  Gauge& pending_gauge_;
};

const OptionsSpec<FleetPublishOptions>& Spec() {
  using O = FleetPublishOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Include(&O::nats, NatsClientSpec());
    c.String("stream", "The JetStream stream of the partials, created when missing.", &O::stream)
        .Default("FLEET");
    c.String("subject_prefix",
             "Partials go to <subject_prefix>.<shard>.<partition>; the stream captures "
             "<subject_prefix>.*.*.",
             &O::subject_prefix)
        .Default("fleet");
    c.Integer("shards",
              "Shards of the cells: the merge of the cells of one shard is one worker's. Each "
              "partition's window is one message per shard.",
              &O::shards)
        .Default(int64_t{16})
        .Min(1)
        .Max(1024);
    c.Integer("partitions",
              "Partitions of the vehicles' stream (the source's partitions): the merge waits for "
              "each of them.",
              &O::partitions)
        .Default(int64_t{16})
        .Min(1)
        .Max(4096);
    c.Integer("stream_replicas", "Replicas of the stream when it is created.", &O::stream_replicas)
        .Default(int64_t{1})
        .Min(1)
        .Max(5);
    c.Integer("stream_max_age_ms",
              "How long the stream keeps partials when it is created: at least as long as a "
              "merging worker may be down. 0: unlimited.",
              &O::stream_max_age_ms)
        .Default(int64_t{86'400'000})
        .Min(0);
    c.Integer("publish_timeout_ms",
              "A publish not acknowledged within this is sent again later; a revoked partition "
              "or a drain waits this long at most for its partials to be stored.",
              &O::publish_timeout_ms)
        .Default(int64_t{5000})
        .Min(100)
        .Max(600'000);
    c.Integer("max_pending",
              "Messages of partials held while the stream cannot store them; beyond it the graph "
              "waits.",
              &O::max_pending)
        .Default(int64_t{100'000})
        .Min(1);
  });
}

/// Its input is a fleet_aggregate's rows behind a partitioned source of as many partitions as it
/// says the merge waits for.
std::vector<UpstreamProblem> CheckUpstream(const Config& self, const std::string& self_id,
                                           const std::vector<UpstreamNode>& upstream) {
  const FleetPublishOptions o = Spec().Parse(self);
  std::vector<UpstreamProblem> problems;
  const UpstreamNode* source = nullptr;
  bool across = false;
  for (const UpstreamNode& n : upstream) {
    if (n.facts.partitioned) source = &n;
    across = across || n.facts.across_vehicles;
  }
  if (source == nullptr || !across) {
    problems.push_back({self_id, "",
                        "fleet_publish '" + self_id +
                            "' sends the partials of a fleet_aggregate behind a partitioned "
                            "source (nats_source with partitions); without both there is "
                            "nothing to merge across workers: write the rows with a "
                            "timescale_sink"});
  } else if (source->facts.partitions != static_cast<uint32_t>(o.partitions)) {
    problems.push_back({self_id, "/partitions",
                        "source '" + source->id + "' has " +
                            std::to_string(source->facts.partitions) +
                            " partitions: the merge waits for each, set \"partitions\": " +
                            std::to_string(source->facts.partitions)});
  }
  return problems;
}

}  // namespace

void RegisterFleetPublish(Registry& registry) {
  OperatorInfo info = TypedOperator<FleetPublish>(
      "fleet_publish",
      "Across workers: sends each partition's partial fleet rows of a window (fleet_aggregate "
      "behind a partitioned source) over JetStream to the worker that merges their cells, one "
      "message per shard of the cells.",
      PortKind::kRows, PortKind::kNone, Spec());
  info.check_upstream = CheckUpstream;
  info.check_connect = [](const Config& config) {
    const FleetPublishOptions o = Spec().Parse(config);
    std::vector<ConnectFinding> out;
    CheckPartialsStream(o.nats, o.stream, o.subject_prefix + ".*.*",
                        static_cast<int>(o.stream_replicas), out);
    return out;
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

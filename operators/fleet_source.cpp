#include "fleet_source.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "fleet_partial.hpp"
#include "jetstream.hpp"
#include "logging.hpp"
#include "nats_client.hpp"
#include "nats_config.hpp"
#include "options.hpp"
#include "partitioning/coordinator.hpp"
#include "partitioning/jetstream_reader.hpp"
#include "partitioning/kv_membership.hpp"
#include "state/jetstream_kv_store.hpp"

namespace fleetflow {
namespace {

/// The options of fleet_source (see Spec()).
struct FleetSourceOptions {
  NatsClientOptions nats;
  std::string stream;
  std::string subject_prefix;
  int64_t shards = 16;
  int64_t stream_replicas = 1;
  int64_t stream_max_age_ms = 0;
  std::string durable;
  std::string membership_bucket;
  std::string handover_bucket;
  std::string state_bucket;
  int64_t heartbeat_ms = 1000;
  int64_t member_timeout_ms = 4000;
  int64_t ack_wait_ms = 10'000;
  int64_t fetch_batch = 64;
  int64_t fetch_expiry_ms = 500;
  int64_t fetch_linger_ms = 20;
};

const OptionsSpec<FleetSourceOptions>& Spec();

/// Reads the shards of the partials this worker merges (a JetStream reader driven by the
/// partition coordinator, as nats_source's partitions are) and emits each partial as a StatsBatch
/// of its shard (StatsBatch::partition) and origin (StatsBatch::origin).
class FleetSource final : public Operator {
 public:
  FleetSource(const OperatorContext& ctx, const FleetSourceOptions& options)
      : id_(ctx.node_id),
        o_(options),
        metrics_(ctx.metrics),
        labels_(ctx.labels()),
        connect_(NatsConnectOptions(options.nats, "fleetflow:" + ctx.node_id)),
        checkpoint_keys_(ctx.checkpoint_keys),
        read_(ctx.metrics.GetCounter("partials_read", "Messages of partial rows read and emitted.",
                                     ctx.labels())),
        rejected_(ctx.metrics.GetCounter(
            "partials_rejected",
            "Messages in the partials' stream that are not a well-formed FLP1 Partial: "
            "terminated (never delivered again).",
            ctx.labels())) {}

  void Start(Emitter& out) override {
    out_ = &out;
    conn_ = nats::Connection::Connect(connect_);
    js_ = std::make_unique<nats::JetStream>(*conn_);
    nats::StreamOptions s;
    s.name = o_.stream;
    s.subjects = {o_.subject_prefix + ".*.*"};  // as fleet_publish creates it
    s.max_age_ms = o_.stream_max_age_ms;
    s.replicas = static_cast<int>(o_.stream_replicas);
    js_->EnsureStream(s);
    checkpoints_ = std::make_unique<JetStreamKvCheckpoints>(js_->OpenBucket(o_.state_bucket),
                                                            checkpoint_keys_);
    nats::ConsumerOptions consumer;
    consumer.stream = o_.stream;
    consumer.durable = o_.durable;
    consumer.ack_wait_ms = o_.ack_wait_ms;
    consumer.max_ack_pending = 10'000;
    JetStreamReaderOptions r;
    r.node = id_;
    r.consumer = consumer;
    r.partitions = static_cast<uint32_t>(o_.shards);
    r.prefix = o_.subject_prefix;
    r.tail = "*";  // <prefix>.<shard>.<origin>
    r.fetch_batch = static_cast<int>(o_.fetch_batch);
    r.fetch_expiry_ms = static_cast<int>(o_.fetch_expiry_ms);
    r.fetch_linger_ms = static_cast<int>(o_.fetch_linger_ms);
    const auto stream = js_->FindStream(o_.stream);
    r.watch_stream = stream && stream->replicas > 1;
    reader_ = std::make_unique<JetStreamReader>(
        std::move(r), *conn_, *js_,
        [this](uint32_t shard, nats::JsMessage& m, bool reread) { Handle(shard, m, reread); },
        metrics_, labels_);
    MembershipOptions membership;
    membership.connection = NatsConnectOptions(o_.nats, "fleetflow:" + id_ + ":members");
    membership.bucket = o_.membership_bucket;
    membership.handover_bucket = o_.handover_bucket;
    membership.heartbeat_ms = static_cast<int>(o_.heartbeat_ms);
    membership.timeout_ms = static_cast<int>(o_.member_timeout_ms);
    membership.replicas = static_cast<int>(o_.stream_replicas);
    membership_ = std::make_unique<KvMembership>(membership, metrics_, labels_);
    spdlog::info(
        "node '{}': {} shards of the partials in stream {} ({}.<shard>.<partition>), shared by "
        "the workers of {} on {}",
        id_, o_.shards, o_.stream, o_.subject_prefix, o_.membership_bucket,
        nats::RedactUrl(connect_.url));
    reader_->Start(out);
    coordinator_ = std::make_unique<PartitionCoordinator>(
        CoordinatorOptions{id_, static_cast<uint32_t>(o_.shards), o_.member_timeout_ms * 1'000'000,
                           o_.heartbeat_ms * 1'000'000, o_.ack_wait_ms * 1'000'000},
        *membership_, *reader_, checkpoints_.get(), metrics_, labels_);
    coordinator_->Start();
  }

  /// Every shard is given up; its kRevoked event follows its last partial.
  void Stop() override {
    if (coordinator_) coordinator_->Stop();
    if (reader_) reader_->Stop();
  }

  /// Everything emitted has passed the graph: the hand-over records are stored, then the worker
  /// leaves the membership.
  void Finish() override {
    if (coordinator_) coordinator_->Finish();
    coordinator_.reset();
    membership_.reset();
  }

  ~FleetSource() override {
    Stop();
    Finish();
  }

  bool Ready() const override { return conn_ && conn_->connected(); }

  // Nothing after this source takes the clock as progress (a merge completes a window when
  // every partition's partial of it or of a later one is in): what it has not read yet holds
  // nobody back, and a Tick of the whole graph is not held back for it.

 private:
  void Handle(uint32_t shard, nats::JsMessage& m, bool reread) {
    fleet::Partial partial;
    if (!fleet::Decode(std::string_view(static_cast<const char*>(m.data()), m.size()), partial) ||
        partial.origin >= partial.origins || partial.length_ns <= 0) {
      if (!reread) {
        rejected_.Inc();
        reject_log_.Log(
            "partial", spdlog::level::warn,
            "fleet_source '" + id_ + "': message " + std::to_string(m.stream_sequence()) + " on " +
                std::string(m.subject()) + " is not a well-formed FLP1 Partial: terminated");
        m.Term();
      }
      return;
    }
    StatsBatch b;
    b.start_ns = partial.start_ns;
    b.length_ns = partial.length_ns;
    if (!metrics_names_ || *metrics_names_ != partial.metrics) {
      metrics_names_ = std::make_shared<const std::vector<std::string>>(std::move(partial.metrics));
    }
    b.sensors = metrics_names_;
    b.rows.reserve(partial.rows.size());
    for (fleet::Row& row : partial.rows) {
      StatsRow& r = b.rows.emplace_back();
      r.vehicle = std::move(row.key);
      r.sensors.reserve(row.stats.size());
      for (const fleet::Stats& s : row.stats) {
        SensorStats& st = r.sensors.emplace_back();
        st.count = s.count;
        st.min = s.min;
        st.max = s.max;
        st.sum = s.sum;
      }
    }
    b.partition = shard;
    b.origin = StatsBatch::Origin{partial.origin, partial.origins};
    b.sequence = m.stream_sequence();
    if (!reread) b.ack = MakeAck(m.AckLater());  // once merged
    read_.Inc();
    out_->Emit(MakeMessage(std::move(b)));
  }

  const std::string id_;
  const FleetSourceOptions o_;
  Metrics& metrics_;
  const Labels labels_;
  const nats::ConnectOptions connect_;
  /// Shard s's checkpoint keys of the nodes after this source (cell_merge's).
  const std::vector<std::function<std::string(uint32_t)>> checkpoint_keys_;
  Counter& read_;
  Counter& rejected_;
  RateLimitedLog reject_log_;
  std::shared_ptr<const std::vector<std::string>> metrics_names_;  // the fetch thread's
  Emitter* out_ = nullptr;
  // Destroyed in reverse: the coordinator drives the reader, which reads on the connection.
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<CheckpointStore> checkpoints_;
  std::unique_ptr<JetStreamReader> reader_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<PartitionCoordinator> coordinator_;
};

const OptionsSpec<FleetSourceOptions>& Spec() {
  using O = FleetSourceOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Include(&O::nats, NatsClientSpec());
    c.String("stream",
             "The stream of the partials (fleet_publish's), created when missing as fleet_publish "
             "creates it: whichever starts first.",
             &O::stream)
        .Default("FLEET");
    c.String("subject_prefix",
             "The partials of shard s are on <subject_prefix>.<s>.<partition> (fleet_publish's "
             "subject_prefix).",
             &O::subject_prefix)
        .Default("fleet")
        .Pattern("^[A-Za-z0-9_-]{1,64}$", "one subject token: 1 to 64 letters, digits, - and _");
    c.Integer("shards",
              "Shards of the cells, as fleet_publish's shards: each has its durable consumer "
              "<durable>-<s>, and the workers share them (membership in membership_bucket). At "
              "most this many workers merge.",
              &O::shards)
        .Default(int64_t{16})
        .Min(1)
        .Max(1024);
    c.Integer("stream_replicas",
              "Replicas of the stream and of the membership and hand-over buckets when created.",
              &O::stream_replicas)
        .Default(int64_t{1})
        .Min(1)
        .Max(5);
    c.Integer("stream_max_age_ms",
              "How long a created stream keeps partials (as fleet_publish's). 0: unlimited.",
              &O::stream_max_age_ms)
        .Default(int64_t{86'400'000})
        .Min(0);
    c.String("durable", "The durable consumers, one per shard: <durable>-<s>.", &O::durable)
        .Default("fleet-merge");
    c.String("membership_bucket",
             "The KV bucket where the merging workers heartbeat (not the vehicles' source's: "
             "the shards are shared on their own).",
             &O::membership_bucket)
        .Default("fleet_members");
    c.String("handover_bucket", "The KV bucket of the shards' hand-over records.",
             &O::handover_bucket)
        .Default("fleet_handover");
    c.String("state_bucket",
             "The KV bucket of cell_merge's snapshots (its bucket): a worker taking a shard "
             "over re-reads the partials after the snapshot's checkpoint.",
             &O::state_bucket)
        .Default("fleet");
    c.Integer("heartbeat_ms", "How often a worker renews its membership.", &O::heartbeat_ms)
        .Default(int64_t{1000})
        .Min(100)
        .Max(60'000);
    c.Integer("member_timeout_ms",
              "A worker silent this long is gone and its shards move; a worker taking a shard "
              "over waits this long at most for the previous owner's record.",
              &O::member_timeout_ms)
        .Default(int64_t{4000})
        .Min(500)
        .Max(600'000);
    c.Integer("ack_wait_ms",
              "A partial not acknowledged within this is delivered again (the merge drops it "
              "as a duplicate when it was merged); a shard of a worker that crashed is taken "
              "over after this.",
              &O::ack_wait_ms)
        .Default(int64_t{10'000})
        .Min(1000);
    c.Integer("fetch_batch", "Messages per fetch request.", &O::fetch_batch)
        .Default(int64_t{64})
        .Min(1)
        .Max(10'000);
    c.Integer("fetch_expiry_ms", "How long a pull request waits for messages.", &O::fetch_expiry_ms)
        .Default(int64_t{500})
        .Min(10)
        .Max(60'000);
    c.Integer("fetch_linger_ms",
              "Once a message came, how long the fetch gathers more before handing them on.",
              &O::fetch_linger_ms)
        .Default(int64_t{20})
        .Min(0)
        .Max(1000);
  });
}

}  // namespace

void RegisterFleetSource(Registry& registry) {
  OperatorInfo info = TypedOperator<FleetSource>(
      "fleet_source",
      "Across workers: reads the partial fleet rows fleet_publish stores, the shards of the cells "
      "shared by the workers as partitions, for cell_merge.",
      PortKind::kNone, PortKind::kRows, Spec());
  info.facts = [](const Config& config) {
    const FleetSourceOptions o = Spec().Parse(config);
    NodeFacts f;
    f.at_least_once = true;
    f.partitioned = true;
    f.partitions = static_cast<uint32_t>(o.shards);
    f.state_bucket = o.state_bucket;
    f.rows = NodeFacts::Rows::kPartials;
    return f;
  };
  info.check_connect = [](const Config& config) {
    const FleetSourceOptions o = Spec().Parse(config);
    std::vector<ConnectFinding> out;
    const auto conn = CheckPartialsStream(o.nats, o.stream, o.subject_prefix + ".*.*",
                                          static_cast<int>(o.stream_replicas), out);
    if (!conn) return out;
    try {
      nats::JetStream js(*conn);
      const int replicas = static_cast<int>(o.stream_replicas);
      CheckBucket(*conn, js, o.membership_bucket, "membership of the merging workers", replicas,
                  out);
      CheckBucket(*conn, js, o.handover_bucket, "hand-over records of the shards", replicas, out);
    } catch (const std::exception& e) {
      out.push_back({ConnectFinding::Level::kProblem, NatsFailure(e, *conn)});
    }
    return out;
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

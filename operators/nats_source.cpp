#include "nats_source.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

#include "dead_letter.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "nats_config.hpp"
#include "partitioning/coordinator.hpp"
#include "partitioning/edge_watch.hpp"
#include "partitioning/jetstream_reader.hpp"
#include "partitioning/kv_membership.hpp"
#include "partitioning/mapping.hpp"
#include "partitioning/queue_group_guard.hpp"
#include "state/jetstream_kv_store.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

constexpr int64_t kDeadLetterRetryMs = 1000;
/// How long a core source waits for a worker already reading its queue group to answer: many
/// round trips to a managed server.
constexpr int kQueueGroupClaimMs = 500;
enum class Delivery { kCore, kJetStream };

/// The settings as the spec declares them (Spec()), one member per field.
struct NatsSourceSettings {
  Delivery delivery = Delivery::kCore;
  NatsClientOptions nats;
  std::string subject;
  std::string queue_group;
  std::string stream;
  bool create_stream = true;
  std::string stream_retention;
  int64_t stream_max_age_ms = 0;
  std::string stream_storage;
  int stream_replicas = 1;
  std::string durable;
  uint32_t partitions = 0;
  std::string partition_prefix;
  PartitionMapping partition_mapping = PartitionMapping::kAuto;
  bool check_mapping = true;
  std::string membership_bucket;
  std::string handover_bucket;
  std::string state_bucket;
  int heartbeat_ms = 1000;
  int member_timeout_ms = 4000;
  int fetch_batch = 256;
  int fetch_expiry_ms = 500;
  int fetch_linger_ms = 75;
  int64_t ack_wait_ms = 30'000;
  int64_t max_ack_pending = 100'000;
  std::vector<std::string> edge_domains;
  std::string edge_stream;
  int64_t edge_max_hold_ms = 120'000;
  WireInputOptions wire;
  DeadLetterOptions dead_letters;
};

const OptionsSpec<NatsSourceSettings>& Spec();

/// What the source makes of its settings: the stream, consumer and membership it uses.
struct NatsSourceOptions {
  NatsSourceSettings settings;
  bool jetstream = false;
  nats::StreamOptions stream;
  nats::ConsumerOptions consumer;
  int fetch_batch = 256;
  MembershipOptions membership;
};

/// The stream's sources: the stream `edge_stream` of each edge domain, its vehicles' subjects
/// stored partitioned as the stream's own are (the source's subject transform), or as they are.
std::vector<EdgeWatch::Edge> EdgesOf(const NatsSourceSettings& s) {
  std::vector<EdgeWatch::Edge> out;
  for (const auto& domain : s.edge_domains) {
    nats::StreamSource source{s.edge_stream, "$JS." + domain + ".API"};
    if (s.partitions > 0) source.transform = PartitionTransform(s.partition_prefix, s.partitions);
    out.push_back({domain, std::move(source)});
  }
  return out;
}

PartitionLayout Layout(const NatsSourceSettings& s) {
  return {s.partition_prefix, s.partitions, s.partition_mapping, s.check_mapping, s.create_stream};
}

NatsSourceOptions MakeOptions(const NatsSourceSettings& s, const std::string& node) {
  NatsSourceOptions o;
  o.settings = s;
  o.jetstream = s.delivery == Delivery::kJetStream;
  o.stream.name = s.stream;
  o.stream.subjects = {s.subject};  // partitioned: SettlePartitionedStream decides
  o.stream.retention = s.stream_retention;
  o.stream.max_age_ms = s.stream_max_age_ms;
  o.stream.storage = s.stream_storage;
  o.stream.replicas = s.stream_replicas;
  o.consumer.stream = s.stream;
  o.consumer.durable = s.durable;
  o.consumer.filter_subject = s.subject;
  o.consumer.ack_wait_ms = s.ack_wait_ms;
  o.consumer.max_ack_pending = s.max_ack_pending;
  // A request for more than max_ack_pending could never be filled (newer servers refuse it with
  // 409 Exceeded MaxAckPending).
  o.fetch_batch = static_cast<int>(std::min<int64_t>(s.fetch_batch, s.max_ack_pending));
  if (s.partitions > 0) {
    o.membership.connection = NatsConnectOptions(s.nats, "fleetflow:" + node + ":members");
    o.membership.bucket = s.membership_bucket;
    o.membership.handover_bucket = s.handover_bucket;
    o.membership.heartbeat_ms = s.heartbeat_ms;
    o.membership.timeout_ms = s.member_timeout_ms;
    o.membership.replicas = s.stream_replicas;
  }
  return o;
}

/// The source: a core-NATS queue-group subscription, or a JetStream reader driven by the
/// partition coordinator (partitioned) or by the source itself (one consumer). It decodes what
/// the readers hand it and emits it; the partition protocol is the coordinator's.
class NatsSource final : public Operator {
 public:
  NatsSource(const OperatorContext& ctx, const NatsSourceSettings& settings)
      : id_(ctx.node_id),
        o_(MakeOptions(settings, ctx.node_id)),
        clock_(ctx.clock),
        metrics_(ctx.metrics),
        labels_(ctx.labels()),
        input_(ctx, settings.wire),
        dead_letters_(ctx, settings.dead_letters),
        connect_(NatsConnectOptions(settings.nats, "fleetflow:" + ctx.node_id)),
        connected_(ctx.metrics.GetGauge("nats_connected", "1 while connected to NATS.", labels_)),
        checkpoint_keys_(ctx.checkpoint_keys) {}

  void Start(Emitter& out) override {
    out_ = &out;
    conn_ = nats::Connection::Connect(connect_);
    if (!o_.jetstream) {
      dead_letters_.Start(*conn_, nullptr, false);
      if (!s_.queue_group.empty()) {
        // Before subscribing: a worker that refuses must not have taken any of the group's
        // messages (core NATS would not send them again).
        guard_ = std::make_unique<QueueGroupGuard>(*conn_, s_.queue_group, s_.subject, id_);
        guard_->Claim(kQueueGroupClaimMs);
      }
      sub_ = conn_->Subscribe(s_.subject, s_.queue_group, [this](nats::Message&& m) {
        Handle(m.subject(), m.data(), m.size(), nullptr, false, 0);
      });
      conn_->Flush(5000);  // the subscription is registered on the server before we say ready
      spdlog::info("node '{}': subscribed to {} in queue group '{}' on {}", id_, s_.subject,
                   s_.queue_group, nats::RedactUrl(connect_.url));
      connected_.Set(1);
      return;
    }
    js_ = std::make_unique<nats::JetStream>(*conn_);
    if (s_.partitions > 0) {
      SettlePartitionedStream(*conn_, *js_, o_.stream, Layout(s_));
    } else if (s_.create_stream) {
      js_->EnsureStream(o_.stream);
    }
    if (!s_.edge_domains.empty()) {
      SettleEdgeSources(*js_, s_.stream, EdgesOf(s_), s_.create_stream, id_);
      edges_ = std::make_unique<EdgeWatch>(*js_, s_.stream, EdgesOf(s_), id_, s_.edge_max_hold_ms,
                                           metrics_, labels_);
      edges_->Start();
    }
    dead_letters_.Start(*conn_, js_.get(), s_.create_stream, s_.stream_replicas);
    if (!s_.state_bucket.empty()) {
      checkpoints_ = std::make_unique<JetStreamKvCheckpoints>(js_->OpenBucket(s_.state_bucket),
                                                              checkpoint_keys_);
    }
    const auto stream = js_->FindStream(o_.consumer.stream);
    reader_ = std::make_unique<JetStreamReader>(
        JetStreamReaderOptions{id_, o_.consumer, s_.partitions, s_.partition_prefix, o_.fetch_batch,
                               s_.fetch_expiry_ms, s_.fetch_linger_ms,
                               stream && stream->replicas > 1},
        *conn_, *js_,
        [this](uint32_t p, nats::JsMessage& m, bool reread) {
          Handle(m.subject(), m.data(), m.size(), &m, reread, p);
        },
        metrics_, labels_);
    if (s_.partitions == 0) {
      reader_->Prepare(0);
      Assignment whole;
      if (checkpoints_) whole.reread = ChangelogTail(*checkpoints_, 0, reader_->Delivered(0));
      reader_->Start(out);
      reader_->Assign(whole);
      spdlog::info("node '{}': pulling {} from stream {} as durable consumer '{}' on {}", id_,
                   s_.subject, o_.stream.name, o_.consumer.durable, nats::RedactUrl(connect_.url));
      return;
    }
    membership_ = std::make_unique<KvMembership>(o_.membership, metrics_, labels_);
    spdlog::info(
        "node '{}': {} partitions of stream {} ({}.<n>.<vehicle>.<sensor>), shared by the "
        "workers of {} on {}",
        id_, s_.partitions, o_.stream.name, s_.partition_prefix, o_.membership.bucket,
        nats::RedactUrl(connect_.url));
    reader_->Start(out);
    coordinator_ = std::make_unique<PartitionCoordinator>(
        CoordinatorOptions{id_, s_.partitions, int64_t{o_.membership.timeout_ms} * 1'000'000,
                           int64_t{o_.membership.heartbeat_ms} * 1'000'000,
                           o_.consumer.ack_wait_ms * 1'000'000},
        *membership_, *reader_, checkpoints_.get(), metrics_, labels_);
    coordinator_->Start();
    reader_->SetStallCheck([c = coordinator_.get()] { c->ConfirmLeases(); });
  }

  /// Stops intake: every partition is given up and its kRevoked event follows its last message.
  /// The connection stays open until Finish: messages in the graph are acknowledged once in state.
  void Stop() override {
    if (sub_) {
      try {
        sub_->Drain(5000);
      } catch (const std::exception& e) {
        spdlog::warn("node '{}': drain: {}", id_, e.what());
      }
      sub_.reset();
    }
    guard_.reset();  // the group is free for the next worker
    if (coordinator_) {
      coordinator_->Stop();
    } else if (reader_) {
      reader_->Revoke(0, nullptr);
    }
    if (reader_) reader_->Stop();
    if (edges_) edges_->Stop();
    connected_.Set(0);
  }

  /// Everything emitted has passed the graph: the hand-over records are stored, then the worker
  /// leaves the membership.
  void Finish() override {
    if (coordinator_) coordinator_->Finish();
    coordinator_.reset();
    membership_.reset();
  }

  ~NatsSource() override {
    Stop();
    Finish();
  }

  bool Ready() const override { return conn_ && conn_->connected(); }

  /// JetStream keeps what arrives while the worker is cut off; core NATS does not (nothing is
  /// held back for it: it is lost). Messages the consumer has not delivered yet are held back
  /// too (JetStreamReader::HoldsBack), and so are the partitions this worker waits to take over.
  bool HoldsBackInput() const override {
    if (!reader_) return false;
    // In this order: the coordinator lets go only once the reader holds back.
    if (coordinator_ && coordinator_->Waiting()) return true;
    return reader_->HoldsBack() || CutOffFromInput();
  }
  /// JetStream: JetStreamReader::InputDelayNs; core NATS hands on what comes at once.
  int64_t InputDelayNs() const override { return reader_ ? reader_->InputDelayNs() : 0; }
  /// The stream cannot store (StreamWatch), or an edge stored what the stream does not have yet
  /// (EdgeWatch: its link is down, or the stream is catching up with it).
  bool CutOffFromInput() const override {
    return (reader_ && reader_->CutOff()) || (edges_ && edges_->Behind());
  }

 private:
  /// One message from either delivery; `js` is set for JetStream, which is acknowledged once
  /// the samples are in state, or terminated (never redelivered) when it is bad input and its
  /// dead letter, if configured, is stored; `reread` for a message of a partition's changelog
  /// read again on taking it over: it is neither acknowledged nor dead-lettered again. A
  /// partitioned subject (`<prefix>.<n>.<vehicle>.<sensor>`) is read as the vehicle's own.
  void Handle(std::string_view subject, const void* data, size_t size, nats::JsMessage* js,
              bool reread, uint32_t partition) {
    thread_local std::vector<InputReject> rejects;  // a reader's thread at a time
    std::string_view wire_subject = subject;
    thread_local std::string unmapped;
    if (s_.partitions > 0) {
      wire_subject = UnmapPartitioned(subject, s_.partition_prefix, unmapped);
      if (wire_subject.data() == unmapped.data() && IsMappingProbe(wire_subject)) {
        if (js && !reread) js->Term();  // a mapping probe: not telemetry
        return;
      }
    }
    std::shared_ptr<Body> body;
    const auto outcome = input_.Decode(wire_subject, data, size, clock_.NowNs(), body, &rejects);
    if (reread) {
      rejects.clear();  // dead-lettered when it was first read
    } else if (!rejects.empty() && !dead_letters_.Publish(subject, data, size, rejects) && js) {
      js->Nak(kDeadLetterRetryMs);  // kept until its dead letter can be stored
      return;
    }
    if (outcome != WireInput::Outcome::kEmit) {
      if (js && !reread) js->Term();  // bad input is never redelivered
      return;
    }
    const uint64_t sequence = js ? js->stream_sequence() : 0;
    // Acknowledged once in state; the message is freed once handled, only its reply subject is
    // kept until then.
    Ack ack = js && !reread ? MakeAck(js->AckLater()) : nullptr;
    if (auto* batch = std::get_if<SampleBatch>(body.get())) {
      batch->partition = partition;
      batch->sequence = sequence;
      if (js && js->stored_ns() != 0) batch->stream_ns = js->stored_ns();
      batch->ack = std::move(ack);
      out_->Emit(std::move(body));
      return;
    }
    auto& status = std::get<StatusEvent>(*body);
    status.partition = partition;
    status.sequence = sequence;
    // A status carries no time of its own: the stream's says when it was published, also when
    // a backlog is read long after (the engine's clock would put an `on` after the samples
    // that followed it).
    if (js && js->stored_ns() > 0) status.at_ns = js->stored_ns();
    status.ack = std::move(ack);
    out_->Emit(std::move(body));
  }

  const std::string id_;
  const NatsSourceOptions o_;
  const NatsSourceSettings& s_ = o_.settings;
  const Clock& clock_;
  Metrics& metrics_;
  const Labels labels_;
  WireInput input_;
  DeadLetters dead_letters_;
  const nats::ConnectOptions connect_;
  Gauge& connected_;
  /// Partition p's checkpoint keys of the nodes after this source (state_bucket).
  const std::vector<std::function<std::string(uint32_t)>> checkpoint_keys_;
  Emitter* out_ = nullptr;
  // Destroyed in reverse: the coordinator drives the reader, which reads on the connection.
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<QueueGroupGuard> guard_;  // core, in a queue group: answers while it runs
  std::unique_ptr<nats::Subscription> sub_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<CheckpointStore> checkpoints_;  // state_bucket: the partitions' checkpoints
  std::unique_ptr<EdgeWatch> edges_;  // edge_domains: whether the stream has what they stored
  std::unique_ptr<JetStreamReader> reader_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<PartitionCoordinator> coordinator_;
};

/// `fleetflow validate --connect`: the server, the subscription permission (core) or the
/// stream, consumers, buckets and partition mapping (jetstream) the source would use.
std::vector<ConnectFinding> CheckConnect(const Config& config) {
  const NatsSourceSettings c = Spec().Parse(config);
  using Level = ConnectFinding::Level;
  std::vector<ConnectFinding> out;
  auto conn = ConnectForCheck(c.nats, out);
  if (!conn) return out;
  const std::string subject = c.subject;
  if (c.delivery != Delivery::kJetStream) {
    // Not in the queue group: a plain subscription gets copies for a moment and takes nothing
    // from the running workers.
    try {
      auto sub = conn->SubscribeSync(subject);
      conn->Flush(5000);
      const std::string error = conn->LastError();
      if (error.find("Permissions Violation") != std::string::npos) {
        out.push_back({Level::kProblem, "may not subscribe to " + subject + ": " + error});
      } else {
        out.push_back({Level::kOk, "may subscribe to " + subject});
      }
    } catch (const std::exception& e) {
      out.push_back({Level::kProblem, "subscribe to " + subject + ": " + NatsFailure(e, *conn)});
    }
    return out;
  }
  const auto partitions = c.partitions;
  const std::string stream = c.stream;
  try {
    nats::JetStream js(*conn);
    const auto info = js.FindStream(stream);
    if (partitions > 0) {
      CheckPartitionsForConnect(*conn, js, stream, info, Layout(c), out);
    } else if (info) {
      out.push_back(StreamCaptures(stream, *info, subject));
    } else {
      out.push_back(c.create_stream
                        ? ConnectFinding{Level::kNote, "stream " + stream +
                                                           " does not exist: created at start on " +
                                                           subject}
                        : ConnectFinding{Level::kProblem,
                                         "stream " + stream +
                                             " does not exist and create_stream is false: create "
                                             "it on " +
                                             subject + ", or set \"create_stream\": true"});
    }
    if (info) {
      CheckReplicas("stream " + stream, *info, c.stream_replicas, out);
      const std::string durable = c.durable;
      std::vector<std::string> absent;
      for (uint32_t p = 0; p < std::max<uint32_t>(partitions, 1); ++p) {
        const std::string name = partitions > 0 ? durable + "-" + std::to_string(p) : durable;
        if (!js.HasConsumer(stream, name)) absent.push_back(name);
      }
      if (absent.empty()) {
        out.push_back({Level::kOk, partitions > 0
                                       ? "the " + std::to_string(partitions) +
                                             " durable consumers " + durable + "-<n> exist"
                                       : "durable consumer " + durable + " exists"});
      } else {
        out.push_back(
            {Level::kNote, "durable consumers not there yet, created at start: " + Join(absent)});
      }
    }
    if (partitions > 0) {
      CheckBucket(*conn, js, c.membership_bucket, "membership", c.stream_replicas, out);
      CheckBucket(*conn, js, c.handover_bucket, "hand-over records", c.stream_replicas, out);
    }
  } catch (const std::exception& e) {
    out.push_back({Level::kProblem, "stream " + stream + ": " + NatsFailure(e, *conn)});
  }
  return out;
}

}  // namespace

namespace {

/// The settings: each declared once, bound to its member (engine/options.hpp).
const OptionsSpec<NatsSourceSettings>& Spec() {
  using S = NatsSourceSettings;
  return StaticSpec<S>([](OptionsSpec<S>& c) {
    c.Enum("delivery",
           "core: a core-NATS subscription read by one worker (at most once; messages sent "
           "while it does not run are lost). jetstream: a durable pull consumer on a stream, "
           "shared by all workers (by partitions); a message is acknowledged once its samples "
           "are in state, so nothing is lost while workers are down or restart.",
           &S::delivery, {{"core", Delivery::kCore}, {"jetstream", Delivery::kJetStream}})
        .Default("core");
    c.Include(&S::nats, NatsClientSpec());
    c.String("subject",
             "Subject pattern to subscribe to: vehicle.*.* takes samples and status, not the "
             "vehicles' command subjects (vehicle.<id>.cmd.*).",
             &S::subject)
        .Default("vehicle.*.*");
    c.String("queue_group",
             "core: the queue group the worker reads in. One worker per group: core NATS would "
             "share each vehicle's samples between several, and each would write wrong rows, so "
             "a worker that finds the group read already (asked on fleetflow.queue_group) "
             "refuses to start. Several workers: delivery jetstream with partitions. Empty: a "
             "plain subscription, unchecked (each worker gets every message).",
             &S::queue_group)
        .Default("fleetflow");
    c.String("stream", "jetstream: the stream holding the subject.", &S::stream)
        .Default("TELEMETRY");
    c.Boolean("create_stream", "jetstream: create the stream on `subject` when it does not exist.",
              &S::create_stream)
        .Default(true);
    c.String("stream_retention", "jetstream: retention of a created stream.", &S::stream_retention)
        .Default("limits")
        .OneOf({"limits", "workqueue", "interest"});
    c.Integer("stream_max_age_ms",
              "jetstream: how long a created stream keeps messages (0: no "
              "limit).",
              &S::stream_max_age_ms)
        .Default(int64_t{86'400'000})
        .Min(0);
    c.String("stream_storage", "jetstream: storage of a created stream.", &S::stream_storage)
        .Default("file")
        .OneOf({"file", "memory"});
    c.Integer("stream_replicas",
              "jetstream: replicas of what the source creates: the stream, the dead-letter stream, "
              "the membership and hand-over buckets (3 on a 3-node NATS cluster: any one node "
              "may go down).",
              &S::stream_replicas)
        .Default(int64_t{1})
        .Min(1)
        .Max(5);
    c.String("durable",
             "jetstream: the durable consumer every worker of the pipeline binds; with partitions, "
             "partition n has its own, <durable>-<n>.",
             &S::durable)
        .Default("fleetflow");
    c.Integer("partitions",
              "jetstream: 0: one consumer on `subject`, read by one worker. P > 0: the NATS server "
              "maps vehicle.<id>.<sensor> to <partition_prefix>.<n>.<id>.<sensor> with n = "
              "partition(P, id) (every subject of a vehicle in one partition: the server's account "
              "mapping or the stream's subject transform, see partition_mapping), each "
              "partition has its own durable consumer, and the "
              "workers share the partitions (membership in membership_bucket): a worker reads, "
              "stores and joins only the vehicles of its partitions. At most P workers do work. "
              "See docs/scaling.md.",
              &S::partitions)
        .Default(int64_t{0})
        .Min(0)
        .Max(1024);
    c.String("partition_prefix", "partitions: the first token of the partitioned subjects.",
             &S::partition_prefix)
        .Default("telemetry")
        .Pattern("^[A-Za-z0-9_-]{1,64}$", "one subject token: 1 to 64 letters, digits, - and _");
    c.Enum("partition_mapping",
           "partitions: who partitions the subjects. account: the account mapping of the "
           "server's configuration (any nats-server; the stream holds "
           "<partition_prefix>.*.*.*). stream: the stream's own subject transform, which the "
           "engine creates with the stream (nats-server 2.10 or later; a managed NATS account "
           "needs no server configuration). auto: what an existing stream does; a new stream "
           "takes the account mapping when the server has one (or check_mapping is false), "
           "else the transform when the server can, else the engine stops naming both ways.",
           &S::partition_mapping,
           {{"auto", PartitionMapping::kAuto},
            {"account", PartitionMapping::kAccount},
            {"stream", PartitionMapping::kStream}})
        .Default("auto");
    c.Boolean("check_mapping",
              "partitions: at start, check with a probe message (never stored) that the server "
              "maps the vehicles' subjects into `partitions` partitions; a missing mapping stops "
              "the engine with the configuration lines to add.",
              &S::check_mapping)
        .Default(true);
    c.String("membership_bucket",
             "partitions: the KV bucket where the workers heartbeat (keys expire after ten "
             "member timeouts).",
             &S::membership_bucket)
        .Default("fleetflow_members");
    c.String("handover_bucket",
             "partitions: the KV bucket (without TTL) of the hand-over records, key "
             "partition.<n>: the last window the previous owner emitted; and of the partitions' "
             "leases, key lease.<n>: the worker that reads it.",
             &S::handover_bucket)
        .Default("fleetflow_handover");
    c.String("state_bucket",
             "jetstream: the KV bucket of the keyed_last_value and window_aggregate nodes "
             "(backend jetstream_kv) this source feeds; required with them. A message is "
             "acknowledged once its samples are in the worker's state, and the stream is each "
             "partition's changelog: a worker taking a partition over reads the checkpoints "
             "those nodes keep in this bucket and re-reads the messages after the oldest before "
             "pulling new ones (docs/scaling.md). Needs stream_retention limits. Empty: no state "
             "stored downstream.",
             &S::state_bucket)
        .Default("");
    c.Integer("heartbeat_ms", "partitions: how often a worker renews its membership.",
              &S::heartbeat_ms)
        .Default(int64_t{1000})
        .Min(100)
        .Max(60'000);
    c.Integer("member_timeout_ms",
              "partitions: a worker silent this long is gone and its partitions move; a worker "
              "taking a partition over waits this long at most for the previous owner's record.",
              &S::member_timeout_ms)
        .Default(int64_t{4000})
        .Min(500)
        .Max(600'000);
    c.Integer("fetch_batch",
              "jetstream: messages per fetch request. After a full batch, requests go out before "
              "the batch is handled until two batches are asked for: the server sends the next "
              "one meanwhile and has the one after at hand. At most max_ack_pending (a larger "
              "request could never be filled).",
              &S::fetch_batch)
        .Default(int64_t{256})
        .Min(1)
        .Max(10000);
    c.Integer("fetch_expiry_ms",
              "jetstream: how long a pull request waits for messages, at most (a slow stream's "
              "messages do not wait for it to expire: see fetch_linger_ms). A worker whose "
              "partitions are all quiet asks them again together once per expiry: longer, an "
              "idle worker costs less (one publish and one read of statuses per expiry), and a "
              "consumer without a leader is noticed later (its request's expiry + 1 s).",
              &S::fetch_expiry_ms)
        .Default(int64_t{500})
        .Min(10)
        .Max(60000);
    c.Integer("fetch_linger_ms",
              "jetstream: once a message came, how long the fetch gathers more (up to fetch_batch, "
              "over every partition the worker reads) before handing them on together. Partitions "
              "that have sent all they had are asked again together this often, each request "
              "ending once its partition is empty: their messages come in bursts, not one by one, "
              "and each round's are handed on at the next. A message stored is handed on within "
              "twice this (the next request, then the round after). Longer: fewer wake-ups per "
              "second per worker whatever its share of the fleet, so N workers cost closer to what "
              "one does (docs/scaling.md); keep it well below the window join's "
              "allowed_lateness_ms. The windows of vehicles that fell silent close on the clock "
              "2 × this + 100 ms later (the source's input delay: docs/semantics.md).",
              &S::fetch_linger_ms)
        .Default(int64_t{75})
        .Min(0)
        .Max(1000);
    c.Integer("ack_wait_ms",
              "jetstream: a message not acknowledged within this time is delivered again. So "
              "are deliveries lost on their way (the connection lost with its node), and what a "
              "consumer delivered after them waits for them; after a reconnect, windows close "
              "on event time only for this long (docs/semantics.md): keep it a few seconds on a "
              "cluster.",
              &S::ack_wait_ms)
        .Default(int64_t{30'000})
        .Min(1000);
    c.Integer("max_ack_pending",
              "jetstream: messages delivered but not yet acknowledged, at most (flow control).",
              &S::max_ack_pending)
        .Default(int64_t{100'000})
        .Min(1);
    c.StringArray("edge_domains",
                  "jetstream: the JetStream domains of edge leaf nodes (a depot's or a vehicle's "
                  "nats-server, docs/deploy.md \"Edge leaf nodes\"): the stream sources each "
                  "one's stream edge_stream (added to the stream when create_stream), its "
                  "vehicle.<id>.<sensor> subjects stored as the stream's own (partitioned with "
                  "partitions). While the hub lacks what an edge stored (its link is down, or the "
                  "stream is catching up with it) the source is cut off from its input: windows "
                  "wait, and the backlog is windowed as it was live (docs/semantics.md, \"An edge "
                  "catching up\"). nats-server 2.10 or later.",
                  &S::edge_domains)
        .DefaultJson("[]")
        .UniqueItems();
    c.String("edge_stream", "edge_domains: the stream each edge stores its vehicles' subjects in.",
             &S::edge_stream)
        .Default("EDGE")
        .Pattern("^[A-Za-z0-9_-]{1,64}$", "a stream name: 1 to 64 letters, digits, - and _");
    c.Integer("edge_max_hold_ms",
              "edge_domains: how long one edge may hold windows back at most (the windows of "
              "every vehicle wait meanwhile, and the samples of those that keep sending are "
              "held in memory); after that its backlog comes late (fleetflow_late_samples_total). "
              "0: for as long as it is behind.",
              &S::edge_max_hold_ms)
        .Default(int64_t{120'000})
        .Min(0);
    c.Include(&S::wire, WireInputSpec());
    c.Include(&S::dead_letters, DeadLetterSpec());
    c.Rule("partitions > 0 needs delivery jetstream (one durable consumer per partition).",
           [](const S& o, std::vector<ConfigProblem>& out) {
             if (o.partitions > 0 && o.delivery != Delivery::kJetStream) {
               out.push_back({"/partitions",
                              "a partitioned source needs delivery \"jetstream\" (one durable "
                              "consumer per partition); set \"delivery\": \"jetstream\" or "
                              "\"partitions\": 0"});
             }
           });
    c.Rule("edge_domains needs delivery jetstream; each domain is one subject token.",
           [](const S& o, std::vector<ConfigProblem>& out) {
             if (o.edge_domains.empty()) return;
             if (o.delivery != Delivery::kJetStream) {
               out.push_back({"/edge_domains",
                              "edge_domains are sourced into the stream: set \"delivery\": "
                              "\"jetstream\""});
             }
             for (size_t i = 0; i < o.edge_domains.size(); ++i) {
               const std::string& d = o.edge_domains[i];
               const bool token =
                   !d.empty() && d.size() <= 64 && std::all_of(d.begin(), d.end(), [](char ch) {
                     return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
                   });
               if (!token) {
                 out.push_back({"/edge_domains/" + std::to_string(i),
                                "'" + d +
                                    "' is not a JetStream domain: 1 to 64 letters, digits, "
                                    "- and _"});
               }
             }
           });
    c.Rule("state_bucket needs delivery jetstream and stream_retention limits.",
           [](const S& o, std::vector<ConfigProblem>& out) {
             if (o.state_bucket.empty()) return;
             if (o.delivery != Delivery::kJetStream) {
               out.push_back({"/state_bucket",
                              "state_bucket is for delivery \"jetstream\" (core NATS keeps no "
                              "changelog to re-read)"});
             } else if (o.stream_retention != "limits") {
               out.push_back({"/stream_retention",
                              "with a state_bucket the stream is the partitions' changelog: a new "
                              "owner re-reads acknowledged messages, which \"" +
                                  o.stream_retention + "\" retention deletes; use \"limits\""});
             }
           });
  });
}

}  // namespace

void RegisterNatsSource(Registry& registry) {
  OperatorInfo info = TypedOperator<NatsSource>(
      "nats_source",
      "Reads samples (vehicle.<id>.<sensor>) and status (vehicle.<id>.status) from NATS: core "
      "NATS for one worker, or a JetStream stream shared by several through partitions.",
      PortKind::kNone, PortKind::kSamples, Spec());
  info.check_connect = CheckConnect;
  info.facts = [](const Config& config) {
    const NatsSourceSettings s = Spec().Parse(config);
    NodeFacts facts;
    facts.at_least_once = s.delivery == Delivery::kJetStream;
    facts.partitioned = s.partitions > 0;
    facts.partitions = s.partitions;
    if (!s.state_bucket.empty()) facts.state_bucket = s.state_bucket;
    SetWireInputFacts(s.wire, facts);
    return facts;
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

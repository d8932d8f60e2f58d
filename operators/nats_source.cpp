#include "nats_source.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "dead_letter.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "nats_config.hpp"
#include "state/jetstream_kv_store.hpp"
#include "state/kv_membership.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

constexpr int64_t kDeadLetterRetryMs = 1000;
/// The coordinator looks at the membership this often while a partition waits to be taken
/// over, and otherwise every kIdleRebalanceMs (a member gone silent) or when a heartbeat, leave
/// or hand-over record arrives.
constexpr int kRebalanceMs = 100;
constexpr int kIdleRebalanceMs = 1000;
/// A previous owner that still runs is waited for this many member timeouts at most for its
/// hand-over record (a worker that heartbeats but never gives the partition up is wedged).
constexpr int64_t kRecordWaitTimeouts = 10;
/// The vehicle id of the probe that checks the server's partition mapping at start.
constexpr std::string_view kProbeVehicle = "_fleetflow_probe";

/// Checks that the server maps the vehicles' subjects into partitions as configured: a probe
/// published on vehicle.<probe>.probe must come back on <prefix>.<n>.<probe>.probe, n as
/// computed here. The probe is refused by JetStream (it expects a stream that does not
/// exist), so it is never stored.
void CheckPartitionMapping(nats::Connection& conn, const std::string& prefix, uint32_t partitions) {
  const std::string probe_subject = wire::SampleSubject(kProbeVehicle, "probe");
  auto sub = conn.SubscribeSync(prefix + ".*." + std::string(kProbeVehicle) + ".probe");
  conn.Flush(5000);
  conn.Publish(probe_subject, "", 0, {{"Nats-Expected-Stream", "_fleetflow_no_stream_"}});
  conn.Flush(5000);
  bool no_responders = false;
  const auto m = sub->Next(2000, no_responders);
  const uint32_t expected = PartitionOf(kProbeVehicle, partitions);
  const std::string mapping = "mappings = { \"vehicle.*.*\": \"" + prefix + ".{{partition(" +
                              std::to_string(partitions) +
                              ",1)}}.{{wildcard(1)}}.{{wildcard(2)}}\" }";
  if (!m) {
    throw std::runtime_error(
        "partitions: the NATS server does not map vehicle.<id>.<sensor> to " + prefix +
        ".<partition>.<id>.<sensor> (a probe on " + probe_subject +
        " did not come back). Add to the account of the vehicles and the engine in the "
        "server's configuration: " +
        mapping + " (docs/scaling.md), or check that the engine may publish " + probe_subject +
        " and subscribe to " + prefix + ".*." + std::string(kProbeVehicle) +
        ".probe. Set \"check_mapping\": false to skip this check.");
  }
  const std::string_view got = m->subject();
  const std::string want =
      prefix + "." + std::to_string(expected) + "." + std::string(kProbeVehicle) + ".probe";
  if (got != want) {
    throw std::runtime_error("partitions: the NATS server maps " + probe_subject + " to " +
                             std::string(got) + ", expected " + want + " for " +
                             std::to_string(partitions) +
                             " partitions: the mapping's partition count must equal the "
                             "pipeline's \"partitions\". Expected mapping: " +
                             mapping);
  }
}
/// fetch_batch_messages' buckets (docs/metrics.md): 0 counts the empty fetches; up to fetch_batch's
/// largest value.
const std::vector<double> kFetchBuckets = {0,   1,   2,   4,    8,    16,   32,   64,
                                           128, 256, 512, 1024, 2048, 4096, 10000};

/// A revoked partition's hand-over: stored for the next owner once the event has passed every
/// node (its last reference goes), so the record follows the rows and the state it speaks of.
class RecordOnRelease final : public Handover {
 public:
  RecordOnRelease(std::shared_ptr<KvMembership> membership, uint32_t partition)
      : membership_(std::move(membership)), partition_(partition) {}
  ~RecordOnRelease() override { membership_->RecordHandover(partition_, last_window_ns); }

 private:
  std::shared_ptr<KvMembership> membership_;
  const uint32_t partition_;
};

class NatsSource final : public Operator {
 public:
  explicit NatsSource(const OperatorContext& ctx)
      : id_(ctx.node_id),
        subject_(ctx.config.String("subject")),
        queue_group_(ctx.config.String("queue_group")),
        jetstream_(ctx.config.String("delivery") == "jetstream"),
        create_stream_(ctx.config.Boolean("create_stream")),
        partitions_(static_cast<uint32_t>(ctx.config.Integer("partitions"))),
        prefix_(ctx.config.String("partition_prefix")),
        check_mapping_(ctx.config.Boolean("check_mapping")),
        state_bucket_(ctx.config.String("state_bucket")),
        // A request for more than max_ack_pending could never be filled (newer servers refuse
        // it with 409 Exceeded MaxAckPending).
        fetch_batch_(static_cast<int>(
            std::min(ctx.config.Integer("fetch_batch"), ctx.config.Integer("max_ack_pending")))),
        fetch_expiry_ms_(static_cast<int>(ctx.config.Integer("fetch_expiry_ms"))),
        fetch_linger_ms_(static_cast<int>(ctx.config.Integer("fetch_linger_ms"))),
        timeout_ms_(static_cast<int>(ctx.config.Integer("member_timeout_ms"))),
        clock_(ctx.clock),
        metrics_(ctx.metrics),
        labels_(ctx.labels()),
        input_(ctx),
        dead_letters_(ctx),
        connected_(ctx.metrics.GetGauge("nats_connected", "1 while connected to NATS.", labels_)),
        consumer_pending_(ctx.metrics.GetGauge(
            "consumer_pending",
            "JetStream: messages of the stream not yet delivered (summed over the partitions "
            "this worker reads).",
            labels_)),
        consumer_ack_pending_(ctx.metrics.GetGauge(
            "consumer_ack_pending",
            "JetStream: messages delivered but not yet acknowledged (asked every 30 s while "
            "messages flow, every 2 s after an empty fetch; summed over the partitions).",
            labels_)),
        owned_gauge_(ctx.metrics.GetGauge(
            "partitions_owned", "Partitions this worker reads (partitioned sources).", labels_)),
        assigned_(ctx.metrics.GetCounter(
            "partitions_assigned",
            "Partitions taken over (at start too), with or without a hand-over record.", labels_)),
        recovered_(ctx.metrics.GetCounter(
            "partitions_recovered",
            "Partitions taken over without a record from a previous owner that held them (it "
            "crashed, or stayed wedged): the windows their restored state computes are written "
            "again.",
            labels_)),
        revoked_(ctx.metrics.GetCounter("partitions_revoked",
                                        "Partitions given up (stop, or moved to another worker).",
                                        labels_)),
        reread_(ctx.metrics.GetCounter(
            "changelog_messages_reread",
            "JetStream with state_bucket: messages read again on taking a partition over, after "
            "its state's checkpoint (acknowledged by the previous owner, maybe not yet stored).",
            labels_)),
        fetch_sizes_(ctx.metrics.GetHistogram(
            "fetch_batch_messages",
            "JetStream: messages per fetch (0: the fetch expired empty), over the partitions.",
            kFetchBuckets, labels_)) {
    stream_.name = ctx.config.String("stream");
    stream_.subjects = {partitions_ > 0 ? prefix_ + ".*.*.*" : subject_};
    stream_.retention = ctx.config.String("stream_retention");
    stream_.max_age_ms = ctx.config.Integer("stream_max_age_ms");
    stream_.storage = ctx.config.String("stream_storage");
    stream_.replicas = static_cast<int>(ctx.config.Integer("stream_replicas"));
    consumer_.stream = stream_.name;
    consumer_.durable = ctx.config.String("durable");
    consumer_.filter_subject = subject_;
    consumer_.ack_wait_ms = ctx.config.Integer("ack_wait_ms");
    consumer_.max_ack_pending = ctx.config.Integer("max_ack_pending");
    options_ = NatsConnectOptions(ctx.config, "fleetflow:" + ctx.node_id);
    if (partitions_ > 0) {
      ctx.metrics
          .GetGauge("partitions",
                    "The pipeline's partitions (the partitions setting): what the workers' "
                    "partitions_owned add up to once settled.",
                    labels_)
          .Set(static_cast<double>(partitions_));
      membership_options_.connection =
          NatsConnectOptions(ctx.config, "fleetflow:" + id_ + ":members");
      membership_options_.bucket = ctx.config.String("membership_bucket");
      membership_options_.handover_bucket = ctx.config.String("handover_bucket");
      membership_options_.heartbeat_ms = static_cast<int>(ctx.config.Integer("heartbeat_ms"));
      membership_options_.timeout_ms = timeout_ms_;
    }
  }

  void Start(Emitter& out) override {
    out_ = &out;
    conn_ = nats::Connection::Connect(options_);
    if (!jetstream_) {
      dead_letters_.Start(*conn_, nullptr, false);
      sub_ = conn_->Subscribe(subject_, queue_group_, [this](nats::Message&& m) {
        Handle(m.subject(), m.data(), m.size(), nullptr, false, 0, rejects_);
      });
      conn_->Flush(5000);  // the subscription is registered on the server before we say ready
      spdlog::info("node '{}': subscribed to {} in queue group '{}' on {}", id_, subject_,
                   queue_group_, nats::RedactUrl(options_.url));
      connected_.Set(1);
      return;
    }
    js_ = std::make_unique<nats::JetStream>(*conn_);
    if (create_stream_) js_->EnsureStream(stream_);
    dead_letters_.Start(*conn_, js_.get(), create_stream_);
    connected_.Set(1);
    pulls_ = std::make_unique<nats::PullSet>(*conn_, stream_.name);
    if (!state_bucket_.empty()) state_kv_ = js_->OpenBucket(state_bucket_);
    if (partitions_ == 0) {
      js_->EnsureConsumer(consumer_);
      Reread(0, ChangelogTail(0));
      StartReading(0, consumer_.durable);
      fetcher_ = std::thread([this] { FetchLoop(); });
      spdlog::info("node '{}': pulling {} from stream {} as durable consumer '{}' on {}", id_,
                   subject_, stream_.name, consumer_.durable, nats::RedactUrl(options_.url));
      return;
    }
    if (check_mapping_) CheckMapping();
    membership_ = std::make_shared<KvMembership>(membership_options_, metrics_, labels_);
    membership_->SetOnChange([this] {
      {
        std::lock_guard lock(stop_mu_);
        membership_changed_ = true;
      }
      stop_cv_.notify_all();
    });
    spdlog::info(
        "node '{}': {} partitions of stream {} ({}.<n>.<vehicle>.<sensor>), shared by "
        "the workers of {} on {}",
        id_, partitions_, stream_.name, prefix_, membership_options_.bucket,
        nats::RedactUrl(options_.url));
    fetcher_ = std::thread([this] { FetchLoop(); });
    Rebalance(true);
    coordinator_ = std::thread([this] { Coordinate(); });
  }

  void Stop() override {
    if (sub_) {
      try {
        sub_->Drain(5000);
      } catch (const std::exception& e) {
        spdlog::warn("node '{}': drain: {}", id_, e.what());
      }
      sub_.reset();
      conn_.reset();
    }
    {
      std::lock_guard lock(stop_mu_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
    if (coordinator_.joinable()) coordinator_.join();
    if (membership_) membership_->SetOnChange(nullptr);  // it may outlive this source
    // Every partition is given up; the connection stays open: messages in the graph are
    // acknowledged once in state, and the hand-over records are written once they have passed.
    Revoke(std::vector<uint32_t>(owned_.begin(), owned_.end()));
    fetcher_stop_ = true;
    if (pulls_) pulls_->Interrupt();
    if (fetcher_.joinable()) fetcher_.join();  // once every partition was handed back
    membership_.reset();                       // the last hand-over to pass the graph lets it leave
    connected_.Set(0);
  }

  ~NatsSource() override { Stop(); }

  bool Ready() const override { return conn_ && conn_->connected(); }

  /// JetStream keeps what arrives while the worker is cut off; core NATS does not (nothing is
  /// held back for it: it is lost). Messages the consumer has not delivered yet (a backlog
  /// throttled by max_ack_pending, or the redelivery of messages after ack_wait_ms) are held
  /// back too: a fetch that comes back empty then does not mean that nothing was sent. So are
  /// the partitions this worker waits to take over, those taken over that the fetch thread
  /// has not taken in yet (their backlog is unknown; window_join has their restored state only),
  /// and those given up until their kRevoked event is out (their messages are handed back).
  bool HoldsBackInput() const override {
    if (!jetstream_) return false;
    // In this order: each lets go only once the next one holds back (Rebalance, FetchLoop).
    if (waiting_.load() > 0 || releasing_.load() > 0) return true;
    // The fetch thread has not come back for longer than a fetch lasts: handing on waits for
    // room, or the process stood still and the thread has not yet seen what waits meanwhile.
    if (SteadyNowNs() - fetch_alive_ns_.load() > StallNs()) return true;
    const uint64_t started = started_.load();
    return taken_in_.load() != started || held_back_.load() || !conn_ || !conn_->connected();
  }

 private:
  /// What the fetch thread knows of a partition it reads (or, unpartitioned, of the consumer).
  struct Reading {
    int64_t since_ns = 0;      // steady: when the last message came, or the reading began
    int64_t info_ns = 0;       // steady: when the consumer was last asked (0: never)
    bool known = false;        // its backlog is known (from a message or the consumer)
    uint64_t pending = 0;      // messages the consumer has not delivered yet
    uint64_t ack_pending = 0;  // delivered, not acknowledged (asked)
    const nats::JsMessage* last = nullptr;  // its last message of the current batch
  };

  /// One message from either delivery; `js` is set for JetStream, which is acknowledged once
  /// the samples are in state, or terminated (never redelivered) when it is bad input and its
  /// dead letter, if configured, is stored; `reread` for a message of a partition's changelog
  /// read again on taking it over (Reread): it is neither acknowledged nor dead-lettered
  /// again. A partitioned subject (`<prefix>.<n>.<vehicle>.<sensor>`) is read as the vehicle's
  /// own.
  void Handle(std::string_view subject, const void* data, size_t size, nats::JsMessage* js,
              bool reread, uint32_t partition, std::vector<InputReject>& rejects) {
    std::string_view wire_subject = subject;
    thread_local std::string unmapped;
    if (partitions_ > 0) {
      wire_subject = UnmapPartitioned(subject, prefix_, unmapped);
      const std::string_view rest = wire_subject.data() == unmapped.data()
                                        ? wire_subject.substr(wire::kSubjectRoot.size() + 1)
                                        : std::string_view();
      if (rest.starts_with(kProbeVehicle) && rest.substr(kProbeVehicle.size()).starts_with('.')) {
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

  /// The sequences of partition `p`'s changelog (unpartitioned: 0) that its previous owner
  /// acknowledged and may not have stored in its state: after the state's checkpoint, up to the
  /// last message its consumer delivered (docs/scaling.md, "State"); empty when none. Asked
  /// before the partition's kAssigned event goes out; throws when the server does not answer
  /// (the partition waits, and the next round asks again).
  struct Tail {
    uint64_t first = 0, last = 0;
  };
  std::optional<Tail> ChangelogTail(uint32_t p) {
    if (!state_kv_) return std::nullopt;
    const std::string key = JetStreamKvStore::CheckpointKey(p);
    const uint64_t delivered = js_->ConsumerDelivered(stream_.name, DurableOf(p));
    const auto entry = state_kv_->Get(key);
    uint64_t checkpoint = 0;
    if (!entry || entry->deleted ||
        std::from_chars(entry->value.data(), entry->value.data() + entry->value.size(), checkpoint)
                .ec != std::errc()) {
      // No checkpoint yet: the partition is new, or its state was kept before checkpoints were
      // (each message acknowledged once stored). From here on the store moves it on.
      if (entry && !entry->deleted) {
        spdlog::warn("node '{}': {} in bucket {} is not a sequence ({}); set to {}", id_, key,
                     state_bucket_, entry->value, delivered);
      }
      state_kv_->Put(key, std::to_string(delivered));
      return std::nullopt;
    }
    if (delivered <= checkpoint) return std::nullopt;
    return Tail{checkpoint + 1, delivered};
  }

  /// Reads partition `p`'s changelog tail from the stream and hands it on, on the calling
  /// thread, after its kAssigned event and before the messages pulled from its consumer. A
  /// failure reads on from where it stopped (the stream keeps the messages) until it is done or
  /// the source stops.
  void Reread(uint32_t p, const std::optional<Tail>& tail) {
    if (!tail) return;
    const std::string filter =
        partitions_ > 0 ? prefix_ + "." + std::to_string(p) + ".*.*" : consumer_.filter_subject;
    std::vector<InputReject> rejects;
    uint64_t next = tail->first, reread = 0;
    int backoff_ms = 100;
    while (next <= tail->last) {
      try {
        auto reader = js_->ReadStream(stream_.name, filter, nats::StreamStart{next, 0});
        for (uint64_t n = 0; n < reader->total() && next <= tail->last; ++n) {
          const auto m = reader->Next(5000);
          if (!m) throw std::runtime_error("no message within 5 s");
          next = m->stream_sequence() + 1;
          if (m->stream_sequence() > tail->last) break;
          Handle(m->subject(), m->data(), m->size(), m.get(), true, p, rejects);
          ++reread;
        }
        break;  // read up to the last, or the stream holds no more of them
      } catch (const std::exception& e) {
        spdlog::warn("node '{}': partition {}: re-reading its changelog from {}: {}", id_, p, next,
                     e.what());
        std::unique_lock lock(stop_mu_);
        if (stop_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                              [this] { return stopping_; })) {
          spdlog::error("node '{}': partition {}: stopped before its changelog was re-read", id_,
                        p);
          return;
        }
        backoff_ms = std::min(backoff_ms * 2, 5000);
      }
    }
    reread_.Inc(reread);
    spdlog::info("node '{}': partition {}: re-read {} messages after its state's checkpoint", id_,
                 p, reread);
  }

  /// Starts reading partition `p` (unpartitioned: 0) from its durable consumer, which exists.
  void StartReading(uint32_t p, const std::string& durable) {
    owned_.insert(p);
    pulls_->Add(p, durable);
    ++started_;  // held back until the fetch thread's held_back_ counts it
    owned_gauge_.Set(static_cast<double>(partitions_ > 0 ? owned_.size() : 0));
  }

  /// The one fetch thread of a JetStream source: every partition this worker reads comes
  /// through it (PullSet), so its cost follows the messages, not the partition count. A
  /// partition given up leaves with its kRevoked event after its last message. Ends once stopped
  /// and every partition is handed back.
  void FetchLoop() {
    nats::PullSet::Fetched fetched;
    int backoff_ms = 50;
    bool failing = false;
    while (!fetcher_stop_.load() || pulls_->size() > 0) {
      const uint64_t started = started_.load();  // partitions this Fetch takes in, at least
      try {
        // Requests ahead: the server sends the next batch while this one is handled.
        pulls_->Fetch(fetch_batch_, fetch_expiry_ms_, true, fetched, fetch_linger_ms_);
        failing = false;
        backoff_ms = 50;
        connected_.Set(1);
      } catch (const nats::Error& e) {
        failing = true;
        held_back_ = true;
        connected_.Set(conn_->connected() ? 1 : 0);
        spdlog::warn("node '{}': {} (retrying in {} ms)", id_, e.what(), backoff_ms);
        std::unique_lock lock(stop_mu_);
        stop_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                          [&] { return fetcher_stop_.load(); });
        backoff_ms = std::min(backoff_ms * 2, 5000);
        continue;
      }
      const int64_t now = SteadyNowNs();
      // The thread came back far later than a fetch lasts (in the fetch or anywhere in this
      // loop): the process stood still (starved of CPU, stopped), the requests ended meanwhile
      // and what was published since waits at the server. What each consumer holds is unknown
      // until a message or the consumer tells. Held back before the thread says it is back
      // (HoldsBackInput): a Tick in between would see neither the stall nor what waits, and a
      // window join whose input paused longer than its idle_ms would close windows on the clock
      // before their samples are in.
      const bool stood_still = now - fetch_alive_ns_.load() > StallNs();
      if (stood_still) held_back_ = true;
      fetch_alive_ns_ = now;
      fetch_sizes_.Observe(static_cast<double>(fetched.messages.size()));
      // Held back while the batch is handed on: its samples are not in yet, and handing on may
      // wait for a full graph.
      if (!fetched.messages.empty()) held_back_ = true;
      {
        const Emitter::Burst burst(*out_);  // the graph is woken once for the batch
        for (const auto& [p, m] : fetched.messages) {
          Reading& r = ReadingOf(p, now);
          r.last = m.get();
          Handle(m->subject(), m->data(), m->size(), m.get(), false, p, rejects_);
        }
      }
      for (auto& [p, r] : reading_) {
        if (r.last == nullptr) continue;
        // What the consumer still holds, as of its last message: free.
        r.pending = r.last->pending();
        r.known = true;
        r.since_ns = now;
        r.last = nullptr;
      }
      // Handing the batch on waited for the graph (backpressure) longer than a request lives:
      // the requests may have ended meanwhile and what was published since waits at the
      // server, so what each consumer holds is unknown again until a message or the consumer
      // tells. Held back until then: the windows must not close on the clock before it is in.
      if (stood_still || SteadyNowNs() - now > int64_t{fetch_expiry_ms_} * 1'000'000) {
        for (auto& [p, r] : reading_) r.known = false;
      }
      for (const uint32_t p : fetched.released) Released(p);
      for (const uint32_t p : fetched.added) ReadingOf(p, now);  // its backlog unknown yet
      AskQuietConsumers(now);
      bool held_back = failing;
      uint64_t pending = 0, ack_pending = 0;
      for (const auto& [p, r] : reading_) {
        held_back = held_back || !r.known || r.pending > 0;
        pending += r.pending;
        ack_pending += r.ack_pending;
      }
      held_back_ = held_back;
      taken_in_ = started;
      consumer_pending_.Set(static_cast<double>(pending));
      if (partitions_ > 0) {
        for (const auto& [p, r] : reading_) PartitionPending(p).Set(static_cast<double>(r.pending));
      }
      consumer_ack_pending_.Set(static_cast<double>(ack_pending));
    }
    held_back_ = false;
  }

  /// Longer than a fetch lasts (its expiry and linger) by a second.
  int64_t StallNs() const {
    return (int64_t{fetch_expiry_ms_} + fetch_linger_ms_ + 1000) * 1'000'000;
  }

  Reading& ReadingOf(uint32_t p, int64_t now) {
    auto [it, added] = reading_.try_emplace(p);
    if (added) it->second.since_ns = now;
    return it->second;
  }

  /// Asking a consumer costs the server a count over the stream (tens of ms with 100 000
  /// messages awaiting acknowledgement, more on a large stream), and the fetch thread waits for
  /// the answer: only for a partition quiet for a request's expiry whose backlog is unknown or
  /// was not empty (throttled by max_ack_pending, or just taken over), at most every 2 s; and
  /// every 30 s for the ack-pending gauge.
  void AskQuietConsumers(int64_t now) {
    for (auto& [p, r] : reading_) {
      const int64_t since_info = now - r.info_ns;
      const bool quiet = now - r.since_ns > int64_t{fetch_expiry_ms_} * 1'000'000;
      const bool ask = (quiet && (!r.known || r.pending > 0) && since_info > 2'000'000'000) ||
                       since_info > 30'000'000'000;
      if (!ask) continue;
      try {
        const auto [pending, ack_pending] = js_->ConsumerPending(stream_.name, DurableOf(p));
        r.pending = pending;
        r.ack_pending = ack_pending;
        r.known = true;
      } catch (const nats::Error& e) {
        spdlog::debug("node '{}': {}", id_, e.what());
      }
      r.info_ns = SteadyNowNs();  // after the answer: never back to back
    }
  }

  /// Partition `p`'s requests have ended: its kRevoked event follows its last message.
  /// The lag gauge of partition `p`, made when first asked (the fetch thread's only).
  Gauge& PartitionPending(uint32_t p) {
    Gauge*& g = partition_pending_[p];
    if (g == nullptr) {
      g = &metrics_.GetGauge("partition_pending",
                             "JetStream: messages of one partition's consumer not yet delivered, "
                             "while this worker reads the partition.",
                             PartitionLabels(p));
    }
    return *g;
  }

  Labels PartitionLabels(uint32_t p) const {
    Labels labels = labels_;
    labels.emplace_back("partition", std::to_string(p));
    return labels;
  }

  void Released(uint32_t p) {
    reading_.erase(p);
    // Held back from Revoke until its kRevoked event is in the graph: meanwhile the partition's
    // messages were handed back unread, and its windows must not close on the clock without
    // them (docs/scaling.md, "Hand-over of a partition", step 1).
    if (partitions_ == 0) {
      --releasing_;
      return;
    }
    if (partition_pending_.erase(p) > 0)
      metrics_.RemoveGauge("partition_pending", PartitionLabels(p));
    PartitionEvent revoked;
    revoked.kind = PartitionEvent::Kind::kRevoked;
    revoked.partition = p;
    revoked.handover = std::make_shared<RecordOnRelease>(membership_, p);
    out_->Emit(MakeMessage(std::move(revoked)));
    --releasing_;
    revoked_.Inc();
  }

  std::string DurableOf(uint32_t p) const {
    return partitions_ > 0 ? consumer_.durable + "-" + std::to_string(p) : consumer_.durable;
  }

  void CheckMapping() { CheckPartitionMapping(*conn_, prefix_, partitions_); }

  void Coordinate() {
    std::unique_lock lock(stop_mu_);
    for (;;) {
      const int period_ms = gaining_.empty() ? kIdleRebalanceMs : kRebalanceMs;
      stop_cv_.wait_for(lock, std::chrono::milliseconds(period_ms),
                        [this] { return stopping_ || membership_changed_; });
      if (stopping_) return;
      membership_changed_ = false;
      lock.unlock();
      try {
        Rebalance(false);
      } catch (const std::exception& e) {
        spdlog::warn("node '{}': rebalance: {}", id_, e.what());
      }
      lock.lock();
    }
  }

  /// Takes the partitions the membership gives this worker and gives up the others (on the
  /// coordinator thread, and once at Start). A partition gained waits for its previous owner's
  /// hand-over record while that owner runs, or for member_timeout_ms after it left cleanly;
  /// without a record (the previous owner crashed) it is recovered: the windows its restored
  /// state computes are emitted again.
  void Rebalance(bool first) {
    const auto [members, generation] = membership_->Members();
    if (generation != generation_) {
      generation_ = generation;
      const auto owners = KvMembership::Assign(members, partitions_);
      const size_t self =
          std::find(members.begin(), members.end(), membership_->id()) - members.begin();
      std::vector<uint32_t> lost;
      for (uint32_t p = 0; p < partitions_; ++p) {
        const bool mine = owners[p] == self;
        if (!mine) {
          if (owned_.count(p) > 0) lost.push_back(p);
          if (gaining_.erase(p) > 0) --waiting_;
          continue;
        }
        if (owned_.count(p) > 0 || gaining_.count(p) > 0) continue;
        // Who had it: at this worker's start, the owner among the others (nobody when alone).
        std::string previous;
        if (!first && previous_owners_.size() == partitions_) {
          previous = previous_members_[previous_owners_[p]];
        } else if (first && members.size() > 1) {
          std::vector<std::string> others = members;
          others.erase(others.begin() + static_cast<std::ptrdiff_t>(self));
          previous = others[KvMembership::Assign(others, partitions_)[p]];
        }
        gaining_[p] = Gaining{SteadyNowNs(), std::move(previous), 0, false, std::nullopt};
        ++waiting_;
      }
      Revoke(lost);
      previous_members_ = members;
      previous_owners_ = owners;
    }
    const int64_t now = SteadyNowNs();
    const int64_t timeout = int64_t{timeout_ms_} * 1'000'000;
    const int64_t heartbeat = int64_t{membership_options_.heartbeat_ms} * 1'000'000;
    for (auto it = gaining_.begin(); it != gaining_.end();) {
      const uint32_t p = it->first;
      Gaining& g = it->second;
      if (ensured_.count(p) == 0) {
        // Its consumer first: a failure leaves the partition waiting here, its record unclaimed,
        // and the next round tries again.
        nats::ConsumerOptions c = consumer_;
        c.durable = DurableOf(p);
        c.filter_subject = prefix_ + "." + std::to_string(p) + ".*.*";
        js_->EnsureConsumer(c);
        ensured_.insert(p);
      }
      std::optional<std::optional<int64_t>> record;
      if (g.decided) {
        record = g.record;  // decided before reading its changelog failed
      } else {
        record = membership_->ClaimHandover(p);
      }
      if (!record && !g.previous.empty() && !g.decided) {
        // A previous owner that holds the partition records it once it has given it up (however
        // long its graph takes), and its heartbeat drops the partition only then; one that does
        // not hold it (it had not taken it yet), or left cleanly, has nothing to wait for but
        // the watches; one that went silent crashed.
        const auto standing = membership_->StandingOf(g.previous);
        const bool held = membership_->Holds(g.previous, p);
        const int64_t waited = now - g.since_ns;
        const bool wait = standing == KvMembership::Standing::kAlive
                              ? waited < (held ? kRecordWaitTimeouts * timeout : heartbeat)
                              : standing == KvMembership::Standing::kLeft && waited < timeout;
        if (wait) {
          ++it;
          continue;
        }
        if (held) {
          // Its messages delivered to the previous owner and never acknowledged come again
          // ack_wait_ms after their delivery, which was before now: read from then on, the
          // partition gets them first (the server redelivers before it sends new messages),
          // not after the windows they belong to closed on the newer messages' event time.
          if (g.recover_at_ns == 0) g.recover_at_ns = now + consumer_.ack_wait_ms * 1'000'000;
          if (now < g.recover_at_ns) {
            ++it;
            continue;
          }
        }
        // The record may be written and its watch behind the heartbeat that dropped the
        // partition.
        record = membership_->ClaimHandover(p, true);
        if (!record && held) {
          recovered_.Inc();
          spdlog::warn(
              "node '{}': partition {} taken over without a hand-over record from {}: "
              "the windows of its restored state are written again",
              id_, p, g.previous);
        }
      }
      std::optional<Tail> tail;
      try {
        tail = ChangelogTail(p);
      } catch (const std::exception& e) {
        spdlog::warn("node '{}': partition {}: reading its changelog: {} (trying again)", id_, p,
                     e.what());
        g.decided = true;
        g.record = record;
        ++it;
        continue;
      }
      PartitionEvent assigned;
      assigned.partition = p;
      if (record) assigned.emitted_until_ns = *record;
      Assign(assigned, tail);  // held back by started_ before waiting_ lets go
      it = gaining_.erase(it);
      --waiting_;
    }
  }

  void Assign(const PartitionEvent& assigned, const std::optional<Tail>& tail) {
    const uint32_t p = assigned.partition;
    membership_->Hold(p);
    out_->Emit(MakeMessage(PartitionEvent(assigned)));  // before the partition's messages
    Reread(p, tail);
    StartReading(p, DurableOf(p));
    assigned_.Inc();
  }

  /// Stops reading `partitions`: the fetch thread hands back what was fetched ahead and sends
  /// each one's kRevoked event after its last message, once its requests have ended.
  void Revoke(const std::vector<uint32_t>& partitions) {
    for (const uint32_t p : partitions) {
      owned_.erase(p);
      ++releasing_;  // before the fetch thread can release it (Released lets go)
      pulls_->Remove(p);
    }
    owned_gauge_.Set(static_cast<double>(partitions_ > 0 ? owned_.size() : 0));
  }

  struct Gaining {
    int64_t since_ns;           // steady clock
    std::string previous;       // the previous owner; empty: nobody had it
    int64_t recover_at_ns = 0;  // steady: taken without a record from then (0: not decided)
    bool decided = false;       // its record claimed (or known absent) in `record`
    std::optional<std::optional<int64_t>> record;
  };

  const std::string id_;
  const std::string subject_;
  const std::string queue_group_;
  const bool jetstream_;
  const bool create_stream_;
  const uint32_t partitions_;
  const std::string prefix_;
  const bool check_mapping_;
  const std::string state_bucket_;
  const int fetch_batch_;
  const int fetch_expiry_ms_;
  const int fetch_linger_ms_;
  const int timeout_ms_;
  const Clock& clock_;
  Metrics& metrics_;
  const Labels labels_;
  std::map<uint32_t, Gauge*> partition_pending_;  // the fetch thread's
  WireInput input_;
  DeadLetters dead_letters_;
  std::vector<InputReject> rejects_;  // the one thread that reads: subscription or fetch
  nats::ConnectOptions options_;
  MembershipOptions membership_options_;
  Gauge& connected_;
  Gauge& consumer_pending_;
  Gauge& consumer_ack_pending_;
  Gauge& owned_gauge_;
  Counter& assigned_;
  Counter& recovered_;
  Counter& revoked_;
  Counter& reread_;
  Histogram& fetch_sizes_;
  nats::StreamOptions stream_;
  nats::ConsumerOptions consumer_;
  Emitter* out_ = nullptr;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::Subscription> sub_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> state_kv_;  // state_bucket: the partitions' checkpoints
  std::shared_ptr<KvMembership> membership_;  // partitioned; hand-overs on their way hold it too
  std::unique_ptr<nats::PullSet> pulls_;      // JetStream: the consumers of the partitions read
  std::set<uint32_t> owned_;                  // partitions read (coordinator's; 0 unpartitioned)
  std::set<uint32_t> ensured_;                // partitions whose consumer exists (coordinator's)
  std::map<uint32_t, Reading> reading_;       // the fetch thread's, by partition
  std::thread fetcher_;
  std::atomic<bool> fetcher_stop_{false};
  std::map<uint32_t, Gaining> gaining_;  // partitions waiting for a hand-over record
  std::atomic<int> waiting_{0};          // gaining_.size()
  std::atomic<int> releasing_{0};        // revoked, their kRevoked event not yet emitted
  std::atomic<bool> held_back_{true};    // by the fetch thread (see HoldsBackInput)
  std::atomic<int64_t> fetch_alive_ns_{SteadyNowNs()};  // steady: the fetch thread's last Fetch
  std::atomic<uint64_t> started_{0};                    // partitions started (PullSet::Add), ever
  std::atomic<uint64_t> taken_in_{0};  // of them, those held_back_ counts (fetch thread)
  std::vector<std::string> previous_members_;
  std::vector<size_t> previous_owners_;
  uint64_t generation_ = 0;
  std::thread coordinator_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  bool membership_changed_ = false;  // a heartbeat, leave or record came: the coordinator looks
};

/// True when NATS subject pattern `pattern` matches every subject `subject` matches (`*` one
/// token, `>` the rest); `subject` may hold wildcards itself.
bool Covers(std::string_view pattern, std::string_view subject) {
  for (;;) {
    const size_t pe = pattern.find('.');
    const size_t se = subject.find('.');
    const std::string_view p = pattern.substr(0, pe);
    const std::string_view t = subject.substr(0, se);
    if (p == ">") return true;
    if (t == ">" || (p != "*" && p != t)) return false;
    if (pe == std::string_view::npos || se == std::string_view::npos) {
      return pe == std::string_view::npos && se == std::string_view::npos;
    }
    pattern.remove_prefix(pe + 1);
    subject.remove_prefix(se + 1);
  }
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

/// `fleetflow validate --connect`: the server, the subscription permission (core) or the
/// stream, consumers, buckets and partition mapping (jetstream) the source would use.
std::vector<ConnectFinding> CheckConnect(const Config& c) {
  using Level = ConnectFinding::Level;
  std::vector<ConnectFinding> out;
  auto conn = ConnectForCheck(c, out);
  if (!conn) return out;
  const std::string subject = c.String("subject");
  if (c.String("delivery") != "jetstream") {
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
  const auto partitions = static_cast<uint32_t>(c.Integer("partitions"));
  const std::string prefix = c.String("partition_prefix");
  const std::string stream = c.String("stream");
  const std::string wanted = partitions > 0 ? prefix + ".*.*.*" : subject;
  try {
    nats::JetStream js(*conn);
    if (const auto info = js.FindStream(stream)) {
      const bool covered = std::any_of(info->subjects.begin(), info->subjects.end(),
                                       [&](const std::string& p) { return Covers(p, wanted); });
      out.push_back({covered ? Level::kOk : Level::kProblem,
                     "stream " + stream + " (" + std::to_string(info->messages) +
                         " messages) captures " + Join(info->subjects) +
                         (covered ? "" : ", not " + wanted + ", which the source reads")});
      const std::string durable = c.String("durable");
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
    } else if (c.Boolean("create_stream")) {
      out.push_back(
          {Level::kNote, "stream " + stream + " does not exist: created at start on " + wanted});
    } else {
      out.push_back({Level::kProblem, "stream " + stream +
                                          " does not exist and create_stream is false: create it "
                                          "on " +
                                          wanted + ", or set \"create_stream\": true"});
    }
    if (partitions > 0) {
      CheckBucket(*conn, js, c.String("membership_bucket"), "membership", out);
      CheckBucket(*conn, js, c.String("handover_bucket"), "hand-over records", out);
    }
  } catch (const std::exception& e) {
    out.push_back({Level::kProblem, "stream " + stream + ": " + NatsFailure(e, *conn)});
  }
  if (partitions > 0 && c.Boolean("check_mapping")) {
    try {
      CheckPartitionMapping(*conn, prefix, partitions);
      out.push_back({Level::kOk, "the server maps vehicle.*.* into " + std::to_string(partitions) +
                                     " partitions (" + prefix + ".<n>.<id>.<sensor>)"});
    } catch (const std::exception& e) {
      out.push_back({Level::kProblem, e.what()});
    }
  }
  return out;
}

}  // namespace

void RegisterNatsSource(Registry& registry) {
  OperatorInfo info;
  info.name = "nats_source";
  info.summary =
      "Reads samples (vehicle.<id>.<sensor>) and status (vehicle.<id>.status) from NATS as a "
      "member of a queue group.";
  info.input = PortKind::kNone;
  info.output = PortKind::kSamples;
  auto& c = info.config;
  c.String("delivery",
           "core: a core-NATS queue-group subscription (at most once; messages sent while no "
           "worker runs are lost). jetstream: a durable pull consumer on a stream, shared by all "
           "workers; a message is acknowledged once its samples are in state, so nothing is lost "
           "while workers are down or restart.")
      .Default("core")
      .OneOf({"core", "jetstream"});
  AddNatsConnectionFields(c);
  c.String("subject",
           "Subject pattern to subscribe to: vehicle.*.* takes samples and status, not the "
           "vehicles' command subjects (vehicle.<id>.cmd.*).")
      .Default("vehicle.*.*");
  c.String("queue_group", "Queue group shared by every worker of this pipeline.")
      .Default("fleetflow");
  c.String("stream", "jetstream: the stream holding the subject.").Default("TELEMETRY");
  c.Boolean("create_stream", "jetstream: create the stream on `subject` when it does not exist.")
      .Default(true);
  c.String("stream_retention", "jetstream: retention of a created stream.")
      .Default("limits")
      .OneOf({"limits", "workqueue", "interest"});
  c.Integer("stream_max_age_ms",
            "jetstream: how long a created stream keeps messages (0: no "
            "limit).")
      .Default(int64_t{86'400'000})
      .Min(0);
  c.String("stream_storage", "jetstream: storage of a created stream.")
      .Default("file")
      .OneOf({"file", "memory"});
  c.Integer("stream_replicas", "jetstream: replicas of a created stream.")
      .Default(int64_t{1})
      .Min(1)
      .Max(5);
  c.String("durable",
           "jetstream: the durable consumer every worker of the pipeline binds; with partitions, "
           "partition n has its own, <durable>-<n>.")
      .Default("fleetflow");
  c.Integer("partitions",
            "jetstream: 0: one consumer on `subject`, read by one worker. P > 0: the NATS server "
            "maps vehicle.<id>.<sensor> to <partition_prefix>.<n>.<id>.<sensor> with n = "
            "partition(P, id) (every subject of a vehicle in one partition); the stream holds "
            "<partition_prefix>.*.*.*, each partition has its own durable consumer, and the "
            "workers share the partitions (membership in membership_bucket): a worker reads, "
            "stores and joins only the vehicles of its partitions. At most P workers do work. "
            "See docs/scaling.md.")
      .Default(int64_t{0})
      .Min(0)
      .Max(1024);
  c.String("partition_prefix",
           "partitions: the first token of the partitioned subjects (the server's mapping "
           "writes them).")
      .Default("telemetry")
      .Pattern("^[A-Za-z0-9_-]{1,64}$", "one subject token: 1 to 64 letters, digits, - and _");
  c.Boolean("check_mapping",
            "partitions: at start, check with a probe message (never stored) that the server "
            "maps the vehicles' subjects into `partitions` partitions; a missing mapping stops "
            "the engine with the configuration lines to add.")
      .Default(true);
  c.String("membership_bucket",
           "partitions: the KV bucket where the workers heartbeat (keys expire after ten "
           "member timeouts).")
      .Default("fleetflow_members");
  c.String("handover_bucket",
           "partitions: the KV bucket (without TTL) of the hand-over records, key "
           "partition.<n>: the last window the previous owner emitted.")
      .Default("fleetflow_handover");
  c.String("state_bucket",
           "jetstream: the KV bucket of the keyed_last_value (backend jetstream_kv) this source "
           "feeds; required with it. A message is acknowledged once its samples are in the "
           "worker's state, and the stream is each partition's changelog: a worker taking a "
           "partition over reads the partition's checkpoint from this bucket and re-reads the "
           "messages after it before pulling new ones (docs/scaling.md). Needs "
           "stream_retention limits. Empty: no keyed state stored downstream.")
      .Default("");
  c.Integer("heartbeat_ms", "partitions: how often a worker renews its membership.")
      .Default(int64_t{1000})
      .Min(100)
      .Max(60'000);
  c.Integer("member_timeout_ms",
            "partitions: a worker silent this long is gone and its partitions move; a worker "
            "taking a partition over waits this long at most for the previous owner's record.")
      .Default(int64_t{4000})
      .Min(500)
      .Max(600'000);
  c.Integer("fetch_batch",
            "jetstream: messages per fetch request. After a full batch, requests go out before "
            "the batch is handled until two batches are asked for: the server sends the next "
            "one meanwhile and has the one after at hand. At most max_ack_pending (a larger "
            "request could never be filled).")
      .Default(int64_t{256})
      .Min(1)
      .Max(10000);
  c.Integer("fetch_expiry_ms",
            "jetstream: how long a pull request waits for messages (a slow stream's messages do "
            "not wait for it to expire: see fetch_linger_ms).")
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
            "allowed_lateness_ms.")
      .Default(int64_t{75})
      .Min(0)
      .Max(1000);
  c.Integer("ack_wait_ms",
            "jetstream: a message not acknowledged within this time is delivered again.")
      .Default(int64_t{30'000})
      .Min(1000);
  c.Integer("max_ack_pending",
            "jetstream: messages delivered but not yet acknowledged, at most (flow control).")
      .Default(int64_t{100'000})
      .Min(1);
  AddWireInputFields(c);
  AddDeadLetterFields(c);
  c.Rule("partitions > 0 needs delivery jetstream (one durable consumer per partition).",
         [](const Config& config, std::vector<ConfigProblem>& out) {
           if (config.Integer("partitions") > 0 && config.String("delivery") != "jetstream") {
             out.push_back({"/partitions",
                            "a partitioned source needs delivery \"jetstream\" (one durable "
                            "consumer per partition); set \"delivery\": \"jetstream\" or "
                            "\"partitions\": 0"});
           }
         });
  c.Rule("state_bucket needs delivery jetstream and stream_retention limits.",
         [](const Config& config, std::vector<ConfigProblem>& out) {
           if (config.String("state_bucket").empty()) return;
           if (config.String("delivery") != "jetstream") {
             out.push_back({"/state_bucket",
                            "state_bucket is for delivery \"jetstream\" (core NATS keeps no "
                            "changelog to re-read)"});
           } else if (config.String("stream_retention") != "limits") {
             out.push_back({"/stream_retention",
                            "with a state_bucket the stream is the partitions' changelog: a new "
                            "owner re-reads acknowledged messages, which \"" +
                                config.String("stream_retention") +
                                "\" retention deletes; use \"limits\""});
           }
         });
  info.create = [](const OperatorContext& ctx) { return std::make_unique<NatsSource>(ctx); };
  info.check_connect = CheckConnect;
  info.facts = [](const Config& config) {
    NodeFacts facts;
    facts.at_least_once = config.String("delivery") == "jetstream";
    facts.partitioned = config.Integer("partitions") > 0;
    if (const std::string bucket = config.String("state_bucket"); !bucket.empty()) {
      facts.state_bucket = bucket;
    }
    return facts;
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

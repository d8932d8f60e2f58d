#include "nats_source.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "dead_letter.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "nats_config.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

constexpr int64_t kDeadLetterRetryMs = 1000;

class NatsSource final : public Operator {
 public:
  explicit NatsSource(const OperatorContext& ctx)
      : id_(ctx.node_id),
        subject_(ctx.config.String("subject")),
        queue_group_(ctx.config.String("queue_group")),
        jetstream_(ctx.config.String("delivery") == "jetstream"),
        create_stream_(ctx.config.Boolean("create_stream")),
        fetch_batch_(static_cast<int>(ctx.config.Integer("fetch_batch"))),
        fetch_expiry_ms_(static_cast<int>(ctx.config.Integer("fetch_expiry_ms"))),
        clock_(ctx.clock),
        labels_(ctx.labels()),
        input_(ctx),
        dead_letters_(ctx),
        connected_(ctx.metrics.GetGauge("nats_connected", "1 while connected to NATS.", labels_)),
        consumer_pending_(ctx.metrics.GetGauge(
            "consumer_pending", "JetStream: messages of the stream not yet delivered.", labels_)),
        consumer_ack_pending_(ctx.metrics.GetGauge(
            "consumer_ack_pending",
            "JetStream: messages delivered but not yet acknowledged (asked every 30 s while "
            "messages flow, every 2 s after an empty fetch).",
            labels_)) {
    stream_.name = ctx.config.String("stream");
    stream_.subjects = {subject_};
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
  }

  void Start(Emitter& out) override {
    out_ = &out;
    conn_ = nats::Connection::Connect(options_);
    if (!jetstream_) {
      dead_letters_.Start(*conn_, nullptr, false);
      sub_ = conn_->Subscribe(subject_, queue_group_, [this](nats::Message&& m) {
        Handle(m.subject(), m.data(), m.size(), nullptr);
      });
      conn_->Flush(5000);  // the subscription is registered on the server before we say ready
      spdlog::info("node '{}': subscribed to {} in queue group '{}' on {}", id_, subject_,
                   queue_group_, options_.url);
    } else {
      js_ = std::make_unique<nats::JetStream>(*conn_);
      if (create_stream_) js_->EnsureStream(stream_);
      dead_letters_.Start(*conn_, js_.get(), create_stream_);
      consumer_sub_ = js_->PullSubscribe(consumer_);
      fetcher_ = std::thread([this] { FetchLoop(); });
      spdlog::info("node '{}': pulling {} from stream {} as durable consumer '{}' on {}", id_,
                   subject_, stream_.name, consumer_.durable, options_.url);
    }
    connected_.Set(1);
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
    if (fetcher_.joinable()) {
      {
        std::lock_guard lock(stop_mu_);
        stopping_ = true;
      }
      stop_cv_.notify_all();
      fetcher_.join();
      consumer_sub_->Release();  // what was fetched ahead goes back to the stream at once
      // The connection stays open: messages in the graph are acknowledged once in state.
    }
    connected_.Set(0);
  }

  ~NatsSource() override { Stop(); }

  bool Ready() const override { return conn_ && conn_->connected(); }

  /// JetStream keeps what arrives while the worker is cut off; core NATS does not (nothing is
  /// held back for it: it is lost). Messages the consumer has not delivered yet (a backlog
  /// throttled by max_ack_pending, or the redelivery of another worker's messages after
  /// ack_wait_ms) are held back too: a fetch that comes back empty then does not mean that
  /// nothing was sent.
  bool HoldsBackInput() const override {
    return jetstream_ &&
           (fetch_failing_.load() || undelivered_.load() || !conn_ || !conn_->connected());
  }

 private:
  /// One message from either delivery; `js` is set for JetStream, which is acknowledged once
  /// the samples are in state, or terminated (never redelivered) when it is bad input and its
  /// dead letter, if configured, is stored. Runs on one thread (the subscription's or the
  /// fetcher's).
  void Handle(std::string_view subject, const void* data, size_t size,
              const std::shared_ptr<nats::JsMessage>& js) {
    std::shared_ptr<Body> body;
    const auto outcome = input_.Decode(subject, data, size, clock_.NowNs(), body, &rejects_);
    if (!rejects_.empty() && !dead_letters_.Publish(subject, data, size, rejects_) && js) {
      js->Nak(kDeadLetterRetryMs);  // kept until its dead letter can be stored
      return;
    }
    if (outcome != WireInput::Outcome::kEmit) {
      if (js) js->Term();  // bad input is never redelivered
      return;
    }
    if (auto* batch = std::get_if<SampleBatch>(body.get())) {
      // The message is freed once handled: while its samples wait for the state's next write
      // (up to a second), only its reply subject is kept.
      if (js) batch->ack = MakeAck(js->AckLater());
      out_->Emit(std::move(body));
      return;
    }
    out_->Emit(std::move(body));
    if (js) js->Ack();
  }

  void FetchLoop() {
    auto last_info = std::chrono::steady_clock::time_point{};
    int backoff_ms = 50;
    for (;;) {
      {
        std::lock_guard lock(stop_mu_);
        if (stopping_) return;
      }
      try {
        // Requests ahead: the server sends the next batch while this one is handled.
        const auto batch = consumer_sub_->Fetch(fetch_batch_, fetch_expiry_ms_, true);
        for (const auto& m : batch) Handle(m->subject(), m->data(), m->size(), m);
        fetch_failing_ = false;
        connected_.Set(1);
        backoff_ms = 50;
        if (!batch.empty()) {
          // What the consumer still holds for the group, as of its last message: free.
          const uint64_t pending = batch.back()->pending();
          undelivered_ = pending > 0;
          consumer_pending_.Set(static_cast<double>(pending));
        }
        // Asking the consumer costs the server a count over the stream (tens of ms with
        // 100 000 messages awaiting acknowledgement, more on a large stream), and the fetch
        // waits for the answer: only when a fetch came back empty (idle, or throttled by
        // max_ack_pending: the last count may be stale), at most every 2 s, and every 30 s for
        // the ack-pending gauge.
        const auto since = std::chrono::steady_clock::now() - last_info;
        if (since > std::chrono::seconds(batch.empty() ? 2 : 30)) {
          const auto [pending, ack_pending] = js_->ConsumerPending(stream_.name, consumer_.durable);
          last_info = std::chrono::steady_clock::now();  // after the answer: never back to back
          undelivered_ = pending > 0;
          consumer_pending_.Set(static_cast<double>(pending));
          consumer_ack_pending_.Set(static_cast<double>(ack_pending));
        }
      } catch (const nats::Error& e) {
        fetch_failing_ = true;
        connected_.Set(conn_->connected() ? 1 : 0);
        spdlog::warn("node '{}': {} (retrying in {} ms)", id_, e.what(), backoff_ms);
        std::unique_lock lock(stop_mu_);
        stop_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                          [this] { return stopping_; });
        backoff_ms = std::min(backoff_ms * 2, 5000);
      }
    }
  }

  const std::string id_;
  const std::string subject_;
  const std::string queue_group_;
  const bool jetstream_;
  const bool create_stream_;
  const int fetch_batch_;
  const int fetch_expiry_ms_;
  const Clock& clock_;
  const Labels labels_;
  WireInput input_;
  DeadLetters dead_letters_;
  std::vector<InputReject> rejects_;
  nats::ConnectOptions options_;
  Gauge& connected_;
  Gauge& consumer_pending_;
  Gauge& consumer_ack_pending_;
  nats::StreamOptions stream_;
  nats::ConsumerOptions consumer_;
  Emitter* out_ = nullptr;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::Subscription> sub_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::PullConsumer> consumer_sub_;
  std::thread fetcher_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::atomic<bool> fetch_failing_{false};
  std::atomic<bool> undelivered_{true};  // the consumer holds messages not yet delivered (from
                                         // each batch's last message, or asked; unknown, so held
                                         // back, until the first batch or answer)
};

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
  c.String("durable", "jetstream: the durable consumer every worker of the pipeline binds.")
      .Default("fleetflow");
  c.Integer("fetch_batch",
            "jetstream: messages per fetch request. After a full batch, requests go out before "
            "the batch is handled until two batches are asked for: the server sends the next "
            "one meanwhile and has the one after at hand.")
      .Default(int64_t{256})
      .Min(1)
      .Max(10000);
  c.Integer("fetch_expiry_ms",
            "jetstream: how long a pull request waits for messages. A fetch hands on what came "
            "within 10 ms of its first message: a slow stream's messages do not wait for the "
            "request to expire.")
      .Default(int64_t{500})
      .Min(10)
      .Max(60000);
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
  info.create = [](const OperatorContext& ctx) { return std::make_unique<NatsSource>(ctx); };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

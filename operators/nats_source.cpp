#include "nats_source.hpp"

#include <spdlog/spdlog.h>

#include <cmath>
#include <map>
#include <mutex>

#include "nats_client.hpp"

namespace fleetflow {

namespace {

class NatsSource final : public Operator {
 public:
  explicit NatsSource(const OperatorContext& ctx)
      : id_(ctx.node_id),
        subject_(ctx.config.String("subject")),
        queue_group_(ctx.config.String("queue_group")),
        max_future_ns_(ctx.config.Integer("max_future_ms") * 1'000'000),
        clock_(ctx.clock),
        metrics_(ctx.metrics),
        labels_(ctx.labels()),
        messages_(ctx.metrics.GetCounter("messages_in", "Messages received.", labels_)),
        samples_(ctx.metrics.GetCounter("samples_in", "Valid samples decoded.", labels_)),
        status_(ctx.metrics.GetCounter("status_in", "Vehicle status messages received.", labels_)),
        connected_(ctx.metrics.GetGauge("nats_connected", "1 while connected to NATS.", labels_)) {
    options_ = nats::ConnectOptions::FromEnv();
    options_.name = "fleetflow:" + ctx.node_id;
    auto set = [&](const char* key, std::string& target) {
      const std::string v = ctx.config.String(key);
      if (!v.empty()) target = v;
    };
    set("url", options_.url);
    set("creds_file", options_.creds_file);
    set("nkey_seed_file", options_.nkey_seed_file);
    set("ca_file", options_.ca_file);
    set("cert_file", options_.cert_file);
    set("key_file", options_.key_file);
  }

  void Start(Emitter& out) override {
    out_ = &out;
    conn_ = nats::Connection::Connect(options_);
    sub_ = conn_->Subscribe(subject_, queue_group_, [this](nats::Message&& m) { Handle(m); });
    conn_->Flush(5000);  // the subscription is registered on the server before we say ready
    connected_.Set(1);
    spdlog::info("node '{}': subscribed to {} in queue group '{}' on {}", id_, subject_,
                 queue_group_, options_.url);
  }

  void Stop() override {
    if (sub_) {
      try {
        sub_->Drain(5000);
      } catch (const std::exception& e) {
        spdlog::warn("node '{}': drain: {}", id_, e.what());
      }
      sub_.reset();
    }
    conn_.reset();
    connected_.Set(0);
  }

  bool Ready() const override { return conn_ && conn_->connected(); }

 private:
  void Handle(const nats::Message& m) {
    messages_.Inc();
    const wire::Subject subject = wire::ParseSubject(m.subject());
    if (subject.kind == wire::SubjectKind::kInvalid) {
      Reject("bad_subject", m.subject());
      return;
    }
    if (subject.kind == wire::SubjectKind::kStatus) {
      bool on = false;
      const std::string_view payload(static_cast<const char*>(m.data()), m.size());
      if (!wire::ParseStatus(payload, on)) {
        Reject("bad_status", m.subject());
        return;
      }
      status_.Inc();
      out_->Emit(MakeMessage(StatusEvent{std::string(subject.vehicle), on, clock_.NowNs()}));
      return;
    }
    SampleBatch batch;
    const wire::DecodeError err = wire::DecodeBatch(m.data(), m.size(), batch.points);
    if (err != wire::DecodeError::kNone) {
      Reject(std::string(wire::ToString(err)), m.subject());
      return;
    }
    const int64_t horizon = clock_.NowNs() + max_future_ns_;
    std::erase_if(batch.points, [&](const wire::Point& p) {
      const char* reason = Invalid(p, horizon);
      if (reason != nullptr) Reject(reason, m.subject());
      return reason != nullptr;
    });
    if (batch.points.empty()) return;
    samples_.Inc(batch.points.size());
    batch.vehicle = subject.vehicle;
    batch.sensor = subject.sensor;
    out_->Emit(MakeMessage(std::move(batch)));
  }

  static const char* Invalid(const wire::Point& p, int64_t horizon) {
    if (p.ts_ns <= 0) return "bad_timestamp";
    if (p.ts_ns > horizon) return "future_timestamp";
    if (p.has_position) {
      if (!std::isfinite(p.lat) || !std::isfinite(p.lon) || std::abs(p.lat) > 90 ||
          std::abs(p.lon) > 180) {
        return "bad_position";
      }
    } else if (!std::isfinite(p.value)) {
      return "non_finite_value";
    }
    return nullptr;
  }

  /// Counts by reason; logs the first few of each reason, then one in 1000.
  void Reject(const std::string& reason, std::string_view subject) {
    Counter* c;
    {
      std::lock_guard lock(reject_mu_);
      auto& slot = rejected_[reason];
      if (slot == nullptr) {
        Labels l = labels_;
        l.emplace_back("reason", reason);
        slot = &metrics_.GetCounter("input_rejected", "Messages or samples rejected, by reason.",
                                    l);
      }
      c = slot;
    }
    c->Inc();
    const uint64_t n = c->value();
    if (n <= 5 || n % 1000 == 0) {
      spdlog::warn("node '{}': rejected input on {}: {} ({} so far)", id_, subject, reason, n);
    }
  }

  const std::string id_;
  const std::string subject_;
  const std::string queue_group_;
  const int64_t max_future_ns_;
  const Clock& clock_;
  Metrics& metrics_;
  const Labels labels_;
  nats::ConnectOptions options_;
  Counter& messages_;
  Counter& samples_;
  Counter& status_;
  Gauge& connected_;
  std::mutex reject_mu_;
  std::map<std::string, Counter*> rejected_;
  Emitter* out_ = nullptr;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::Subscription> sub_;
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
           "worker runs are lost).")
      .Default("core")
      .OneOf({"core"});
  c.String("url", "NATS server URL(s), comma-separated. Empty: $NATS_URL, else "
                  "nats://127.0.0.1:4222.")
      .Default("")
      .Example(R"("${NATS_URL:-nats://127.0.0.1:4222}")");
  c.String("subject", "Subject pattern to subscribe to.").Default("vehicle.>");
  c.String("queue_group", "Queue group shared by every worker of this pipeline.")
      .Default("fleetflow");
  c.String("creds_file", "Path of a .creds file (JWT and NKey seed). Empty: $NATS_CREDS.")
      .Default("");
  c.String("nkey_seed_file", "Path of an NKey seed file. Empty: $NATS_NKEY_SEED.").Default("");
  c.String("ca_file", "TLS: trusted CA certificate file; enables TLS. Empty: $NATS_CA.")
      .Default("");
  c.String("cert_file", "TLS: client certificate file. Empty: $NATS_CERT.").Default("");
  c.String("key_file", "TLS: client private key file. Empty: $NATS_KEY.").Default("");
  c.Integer("max_future_ms",
            "Samples whose event time is more than this ahead of the engine clock are rejected "
            "(reason future_timestamp).")
      .Default(int64_t{300'000})
      .Min(0);
  info.create = [](const OperatorContext& ctx) { return std::make_unique<NatsSource>(ctx); };
  registry.Add(std::move(info));
}

}  // namespace fleetflow

#pragma once
/// The JetStream reader of nats_source: one fetch thread pulls every partition this worker
/// reads (nats::PullSet), so its cost follows the messages, not the partition count. Without
/// partitions it reads one consumer, as partition 0, and emits no partition events.
///
/// It only reads: what it reads and when is the coordinator's (coordinator.hpp) or, unpartitioned,
/// the source's (Assign at start). It hands each message to the source's `Deliver` (decode,
/// acknowledge later, emit) and emits the partition events itself, in order with the messages.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "coordinator.hpp"
#include "delivery_order.hpp"
#include "jetstream.hpp"
#include "metrics.hpp"
#include "operator.hpp"
#include "stream_watch.hpp"

namespace fleetflow {

struct JetStreamReaderOptions {
  std::string node;                  // the source's node id, for logs
  nats::ConsumerOptions consumer;    // stream, durable (per partition: <durable>-<n>), limits
  uint32_t partitions = 0;           // 0: one consumer on consumer.filter_subject
  std::string prefix = "telemetry";  // partitioned subjects: <prefix>.<n>.<vehicle>.<sensor>
  int fetch_batch = 256;
  int fetch_expiry_ms = 500;
  int fetch_linger_ms = 75;
  /// The stream has replicas (a cluster): it may lose its leader while the connection stays, and
  /// StreamWatch asks it while nothing comes. A stream of one replica stores whenever its server
  /// answers at all.
  bool watch_stream = false;
  /// The tokens after <prefix>.<n> of a partition's subjects.
  std::string tail = "*.*";
};

class JetStreamReader final : public PartitionReader {
 public:
  /// Hands one message on: `reread` for a message of a partition's changelog read again on
  /// taking it over (neither acknowledged nor dead-lettered again). On the fetch thread, or on
  /// the coordinator's for a re-read.
  using Deliver = std::function<void(uint32_t partition, nats::JsMessage& m, bool reread)>;

  /// `conn` and `js` must outlive the reader.
  JetStreamReader(JetStreamReaderOptions options, nats::Connection& conn, nats::JetStream& js,
                  Deliver deliver, Metrics& metrics, const Labels& labels);
  /// Stop().
  ~JetStreamReader() override;

  /// Starts the fetch thread; partition events go to `out`.
  void Start(Emitter& out);
  /// `check` runs on the fetch thread when it comes back after standing still (the process
  /// stopped or starved), before what that fetch brought is handed on; the messages it brought of
  /// partitions revoked by the time `check` returns are handed back (NAK) to their new owner.
  /// The coordinator's ConfirmLeases. Thread-safe.
  void SetStallCheck(std::function<void()> check);
  /// Once every partition was revoked: waits until each has handed back what it held and
  /// emitted its kRevoked event, and ends the fetch thread. Idempotent.
  void Stop();

  void Prepare(uint32_t p) override;
  uint64_t Delivered(uint32_t p) override;
  void Assign(const Assignment& a) override;
  void Revoke(uint32_t p, std::shared_ptr<Handover> handover) override;

  /// True while input that exists may not have been handed on (Operator::HoldsBackInput): a
  /// consumer with undelivered messages or an unknown backlog, a partition taken over that the
  /// fetch thread has not taken in, one given up whose kRevoked event is not out, a fetch thread
  /// that stood still, a failing fetch, nothing delivered while the stream has not said that it
  /// has a leader (StreamWatch), messages waiting behind lost deliveries (DeliveryOrder), a quiet
  /// consumer whose "nothing pending" the stream's leader contradicts (ConfirmWithStream).
  /// Thread-safe.
  bool HoldsBack() const;
  /// True while the stream itself says it cannot store (Operator::CutOffFromInput): a stream
  /// with replicas answering nobody or no leader since it was asked while quiet (StreamWatch).
  /// A lost connection or a failing fetch only holds input back: the stream may store on
  /// meanwhile; so does a consumer that answers nobody (electing its own leader). Thread-safe.
  bool CutOff() const;

  /// How long a message stored waits at most before it is handed on: the next paced request,
  /// then gathered with others for up to fetch_linger_ms (the fetch's two rounds), plus 100 ms
  /// for the threads to be run (Operator::InputDelayNs).
  int64_t InputDelayNs() const { return (2 * int64_t{options_.fetch_linger_ms} + 100) * 1'000'000; }

  /// The durable consumer of partition `p` (unpartitioned: the durable).
  std::string DurableOf(uint32_t p) const;

 private:
  /// What the fetch thread knows of a partition it reads (or, unpartitioned, of the consumer).
  struct Reading {
    int64_t since_ns = 0;  // steady: when the last message came, or the reading began
    int64_t info_ns = 0;   // steady: when the consumer was last asked (0: never)
    bool known = false;    // its backlog is known (from a message or the consumer)
    uint64_t pending = 0;  // messages the consumer has not delivered yet
    // The consumer told its backlog; known once the requests sent before have been answered
    // (PullSet::Answered): what it delivered on them until then may still be on its way.
    std::optional<uint64_t> told_at_asked;
    uint64_t ack_pending = 0;               // delivered, not acknowledged (asked)
    const nats::JsMessage* last = nullptr;  // its last message of the current batch
    DeliveryOrder<nats::JsMessage> order;   // after deliveries lost on their way
    uint64_t received_seq = 0;    // the highest stream sequence received (or known passed)
    int stream_asks = 0;          // the stream's leader asked since the last message came
    int64_t stream_asked_ns = 0;  // steady: when the stream's leader was last asked (0: never)
    int64_t stored_ns = 0;        // wall: when the stream stored its last message received
    // The last message the stream's leader stored for it when its consumer neither had
    // delivered it nor counted it as pending (the consumer's leader's copy of the stream is
    // behind; ConfirmWithStream): held back until it is received or passed over, however the
    // consumer counts meanwhile (0: none).
    uint64_t behind_until = 0;
    bool behind() const { return received_seq < behind_until; }
  };

  void FetchLoop();
  /// After the stall check: hands back what `fetched` holds of partitions revoked.
  void HandBackRevoked(nats::PullSet::Fetched& fetched);
  /// Hands on what waited behind lost deliveries (DeliveryOrder::Due).
  void HandOnWaiting(uint32_t p, Reading& r, int64_t now);
  /// After the connection came back, or a consumer answered again after a silence: deliveries
  /// lost meanwhile show as a gap only once a later one comes, which a quiet partition may not
  /// get before the consumer sends them again. Input is held back until surely they did
  /// (LostDeliveriesDueNs after `now`).
  void NoteInterruption(int64_t now);
  /// How long the consumer takes at most to send a lost delivery again: ack_wait_ms after it
  /// first sent it, plus a fetch's expiry and the stall margin.
  int64_t LostDeliveriesDueNs() const;
  void Reread(uint32_t p, const ChangelogRange& range);
  /// Reread's second way: the messages of `filter` from `next` to `last`, one get of the
  /// stream's leader each (no consumer); `next` and `reread` advance with each one handed on.
  void RereadFromLeader(uint32_t p, const std::string& filter, uint64_t last, uint64_t& next,
                        uint64_t& reread);
  int64_t StallNs() const;
  Reading& ReadingOf(uint32_t p, int64_t now);
  void AskQuietConsumers(int64_t now);
  void ConfirmWithStream(int64_t now);
  /// The connection's last error is the server refusing $JS.API.STREAM.MSG.GET (users generated
  /// before the engine needed it).
  bool MsgGetRefused() const;
  /// The subjects of partition `p`'s consumer (unpartitioned: the consumer's filter).
  std::string FilterOf(uint32_t p) const;
  Gauge& PartitionPending(uint32_t p);
  Labels PartitionLabels(uint32_t p) const;
  void Released(uint32_t p);

  const JetStreamReaderOptions options_;
  nats::Connection& conn_;
  bool confirm_refused_ = false;  // the server refuses ConfirmWithStream's request (the fetch
                                  // thread's)
  nats::JetStream& js_;
  const Deliver deliver_;
  Metrics& metrics_;
  const Labels labels_;
  nats::PullSet pulls_;
  Emitter* out_ = nullptr;
  Gauge& connected_;
  Gauge& consumer_pending_;
  Gauge& consumer_ack_pending_;
  Counter& reread_;
  Counter& redelivered_;
  Histogram& fetch_sizes_;

  std::mutex handovers_mu_;
  std::map<uint32_t, std::shared_ptr<Handover>> handovers_;  // revoked, by partition
  std::map<uint32_t, Reading> reading_;                      // the fetch thread's
  std::map<uint32_t, Gauge*> partition_pending_;             // the fetch thread's
  std::thread fetcher_;
  StreamWatch watch_;  // whether the stream stores anything while nothing comes
  std::atomic<bool> stopping_{false};
  std::mutex wait_mu_;  // for backoffs (Stop interrupts them), and stall_check_
  std::function<void()> stall_check_;
  std::condition_variable wait_cv_;
  std::atomic<int> releasing_{0};        // revoked, their kRevoked event not yet emitted
  std::atomic<bool> held_back_{true};    // by the fetch thread (see HoldsBack)
  std::atomic<bool> silent_{false};      // PullSet::Silent after the fetch thread's last Fetch
  std::atomic<int64_t> fetch_alive_ns_;  // steady: the fetch thread's last return from Fetch
  // steady: held back until then after the connection came back or a consumer answered again
  // (NoteInterruption)
  std::atomic<int64_t> interrupted_until_ns_{0};
  uint64_t reconnects_seen_ = 0;       // the connection's reconnects, as the fetch thread last saw
  bool was_silent_ = false;            // the fetch thread's
  std::atomic<uint64_t> started_{0};   // partitions started (PullSet::Add), ever
  std::atomic<uint64_t> taken_in_{0};  // of them, those held_back_ counts (fetch thread)
};

}  // namespace fleetflow

#include "jetstream_reader.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "clock.hpp"
#include "thread_name.hpp"

namespace fleetflow {

namespace {

/// fetch_batch_messages' buckets (docs/metrics.md): 0 counts the empty fetches; up to
/// fetch_batch's largest value.
const std::vector<double> kFetchBuckets = {0,   1,   2,   4,    8,    16,   32,   64,
                                           128, 256, 512, 1024, 2048, 4096, 10000};

/// How long ConfirmWithStream waits for the stream's answer: the fetch thread waits with it.
constexpr int kConfirmTimeoutMs = 1000;
// A consumer that delivers stale messages saying nothing is after them: the stream's leader asked
// at most this often (JetStreamReader::ConfirmWithStream).
constexpr int64_t kStaleAskNs = 1'000'000'000;

}  // namespace

JetStreamReader::JetStreamReader(JetStreamReaderOptions options, nats::Connection& conn,
                                 nats::JetStream& js, Deliver deliver, Metrics& metrics,
                                 const Labels& labels)
    : options_(std::move(options)),
      conn_(conn),
      js_(js),
      deliver_(std::move(deliver)),
      metrics_(metrics),
      labels_(labels),
      pulls_(conn, options_.consumer.stream),
      connected_(metrics.GetGauge("nats_connected", "1 while connected to NATS.", labels)),
      consumer_pending_(metrics.GetGauge(
          "consumer_pending",
          "JetStream: messages of the stream not yet delivered (summed over the partitions "
          "this worker reads).",
          labels)),
      consumer_ack_pending_(metrics.GetGauge(
          "consumer_ack_pending",
          "JetStream: messages delivered but not yet acknowledged (asked every 30 s while "
          "messages flow, every 2 s after an empty fetch; summed over the partitions).",
          labels)),
      reread_(metrics.GetCounter(
          "changelog_messages_reread",
          "JetStream with state_bucket: messages read again on taking a partition over, after "
          "its state's checkpoint (acknowledged by the previous owner, maybe not yet stored).",
          labels)),
      redelivered_(metrics.GetCounter(
          "messages_redelivered",
          "JetStream: messages the server delivered again (not acknowledged within ack_wait_ms, "
          "or their first delivery was lost); samples of them that came after their windows "
          "closed count as late.",
          labels)),
      fetch_sizes_(metrics.GetHistogram(
          "fetch_batch_messages",
          "JetStream: messages per fetch (0: the fetch expired empty), over the partitions.",
          kFetchBuckets, labels)),
      watch_(js, options_.consumer.stream, options_.node, options_.fetch_expiry_ms),
      fetch_alive_ns_(SteadyNowNs()) {}

JetStreamReader::~JetStreamReader() { Stop(); }

void JetStreamReader::Start(Emitter& out) {
  out_ = &out;
  connected_.Set(1);
  reconnects_seen_ = conn_.stats().reconnects;
  fetcher_ = std::thread([this] { FetchLoop(); });
  NameThread(fetcher_, "ff-fetch");
  if (options_.watch_stream) watch_.Start();
}

void JetStreamReader::Stop() {
  {
    std::lock_guard lock(wait_mu_);
    stopping_ = true;
  }
  wait_cv_.notify_all();
  pulls_.Interrupt();
  if (fetcher_.joinable()) fetcher_.join();  // once every partition was handed back
  watch_.Stop();
  connected_.Set(0);
}

std::string JetStreamReader::DurableOf(uint32_t p) const {
  const auto& durable = options_.consumer.durable;
  return options_.partitions > 0 ? durable + "-" + std::to_string(p) : durable;
}

std::string JetStreamReader::FilterOf(uint32_t p) const {
  return options_.partitions > 0 ? options_.prefix + "." + std::to_string(p) + "." + options_.tail
                                 : options_.consumer.filter_subject;
}

void JetStreamReader::Prepare(uint32_t p) {
  nats::ConsumerOptions c = options_.consumer;
  c.durable = DurableOf(p);
  c.filter_subject = FilterOf(p);
  js_.EnsureConsumer(c);
}

uint64_t JetStreamReader::Delivered(uint32_t p) {
  return js_.ConsumerDelivered(options_.consumer.stream, DurableOf(p));
}

void JetStreamReader::Assign(const Assignment& a) {
  if (options_.partitions > 0) {
    PartitionEvent assigned;
    assigned.partition = a.partition;
    assigned.emitted = a.emitted;
    out_->Emit(MakeMessage(std::move(assigned)));  // before the partition's messages
  }
  if (a.reread) Reread(a.partition, *a.reread);
  pulls_.Add(a.partition, DurableOf(a.partition));
  ++started_;  // held back until the fetch thread's held_back_ counts it
}

void JetStreamReader::Revoke(uint32_t p, std::shared_ptr<Handover> handover) {
  {
    std::lock_guard lock(handovers_mu_);
    handovers_[p] = std::move(handover);
  }
  ++releasing_;  // before the fetch thread can release it (Released lets go)
  pulls_.Remove(p);
}

bool JetStreamReader::HoldsBack() const {
  // In this order: each lets go only once the next one holds back (Assign, FetchLoop).
  if (releasing_.load() > 0) return true;
  // The fetch thread has not come back for longer than a fetch lasts: handing on waits for
  // room, or the process stood still and the thread has not yet seen what waits meanwhile.
  if (SteadyNowNs() - fetch_alive_ns_.load() > StallNs()) return true;
  const uint64_t started = started_.load();
  // A consumer that does not answer (a cluster electing its leader) may hold anything.
  return taken_in_.load() != started || held_back_.load() || silent_.load() || !conn_.connected() ||
         SteadyNowNs() < interrupted_until_ns_.load() || CutOff() ||
         (options_.watch_stream && watch_.Unconfirmed(SteadyNowNs()));
}

bool JetStreamReader::CutOff() const { return watch_.Unavailable(); }

/// Reads partition `p`'s changelog range from the stream and hands it on, on the calling thread.
/// A failure reads on from where it stopped (the stream keeps the messages) until it is done or
/// the reader stops.
void JetStreamReader::Reread(uint32_t p, const ChangelogRange& range) {
  const std::string filter = FilterOf(p);
  uint64_t next = range.first, reread = 0;
  int backoff_ms = 100;
  bool from_leader = false;
  while (next <= range.last) {
    try {
      if (from_leader) {
        RereadFromLeader(p, filter, range.last, next, reread);
        break;
      }
      auto reader = js_.ReadStream(options_.consumer.stream, filter, nats::StreamStart{next, 0});
      for (uint64_t n = 0; n < reader->total() && next <= range.last; ++n) {
        const auto m = reader->Next(5000);
        if (!m) throw std::runtime_error("no message within 5 s");
        next = m->stream_sequence() + 1;
        if (m->stream_sequence() > range.last) break;
        deliver_(p, *m, true);
        ++reread;
      }
      // The reader reads the copy of the replica the server placed it on, which may be behind
      // the leader (a node catching up after a restart): what it did not find, the leader may
      // store.
      if (next <= range.last) {
        std::optional<uint64_t> more;
        try {
          more = js_.NextStored(options_.consumer.stream, filter, next);
        } catch (const nats::Error&) {
          if (!MsgGetRefused()) throw;  // asked again
          spdlog::error(
              "node '{}': partition {}: the server refuses to tell whether stream {} stores more "
              "of it than the replica read ({}): taken as read whole (allow "
              "$JS.API.STREAM.MSG.GET.{} to the engine's user: generate-users.mjs does)",
              options_.node, p, options_.consumer.stream, conn_.LastError(),
              options_.consumer.stream);
        }
        if (more && *more <= range.last) {
          throw std::runtime_error("the stream's leader stores sequence " + std::to_string(*more) +
                                   " that the replica read did not have yet");
        }
      }
      break;  // read up to the last, or the stream holds no more of them
    } catch (const std::exception& e) {
      spdlog::warn("node '{}': partition {}: re-reading its changelog from {}{}: {}", options_.node,
                   p, next, from_leader ? " (the stream leader's gets)" : "", e.what());
      // With a node of the cluster out, the consumers a stream read makes may not answer for
      // long (6 timeouts, 32 s, seen in a test); the leader's gets make none. Taken in turns,
      // should the leader not answer either, unless the server refuses the gets.
      from_leader = !from_leader && !MsgGetRefused();
      std::unique_lock lock(wait_mu_);
      if (wait_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                            [this] { return stopping_.load(); })) {
        spdlog::error("node '{}': partition {}: stopped before its changelog was re-read",
                      options_.node, p);
        return;
      }
      backoff_ms = std::min(backoff_ms * 2, 5000);
    }
  }
  reread_.Inc(reread);
  spdlog::info("node '{}': partition {}: re-read {} messages after its state's checkpoint",
               options_.node, p, reread);
}

void JetStreamReader::RereadFromLeader(uint32_t p, const std::string& filter, uint64_t last,
                                       uint64_t& next, uint64_t& reread) {
  const std::string& stream = options_.consumer.stream;
  while (next <= last) {
    const std::optional<uint64_t> at = js_.NextStored(stream, filter, next);
    if (!at || *at > last) return;
    const auto m = js_.GetStored(stream, *at, 5000);
    if (m) {  // else expired meanwhile: gone from the stream for every reader
      deliver_(p, *m, true);
      ++reread;
    }
    next = *at + 1;
  }
}

void JetStreamReader::FetchLoop() {
  nats::PullSet::Fetched fetched;
  int backoff_ms = 50;
  bool failing = false;
  while (!stopping_.load() || pulls_.size() > 0) {
    const uint64_t started = started_.load();  // partitions this Fetch takes in, at least
    try {
      // Requests ahead: the server sends the next batch while this one is handled.
      pulls_.Fetch(options_.fetch_batch, options_.fetch_expiry_ms, true, fetched,
                   options_.fetch_linger_ms);
      silent_ = pulls_.Silent();
      failing = false;
      backoff_ms = 50;
      connected_.Set(1);
    } catch (const nats::Error& e) {
      failing = true;
      held_back_ = true;
      connected_.Set(conn_.connected() ? 1 : 0);
      spdlog::warn("node '{}': {} (retrying in {} ms)", options_.node, e.what(), backoff_ms);
      std::unique_lock lock(wait_mu_);
      wait_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                        [this] { return stopping_.load(); });
      backoff_ms = std::min(backoff_ms * 2, 5000);
      continue;
    }
    const int64_t now = SteadyNowNs();
    const bool silent = silent_.load();
    if (const uint64_t reconnects = conn_.stats().reconnects;
        reconnects != reconnects_seen_ || (was_silent_ && !silent)) {
      reconnects_seen_ = reconnects;
      NoteInterruption(now);
    }
    was_silent_ = silent;
    // The thread came back far later than a fetch lasts (in the fetch or anywhere in this loop):
    // the process stood still (starved of CPU, stopped), the requests ended meanwhile and what
    // was published since waits at the server. What each consumer holds is unknown until a
    // message or the consumer tells. Held back before the thread says it is back (HoldsBack): a
    // Tick in between would see neither the stall nor what waits, and a window join whose input
    // paused longer than its idle_ms would close windows on the clock before their samples are in.
    const bool stood_still = now - fetch_alive_ns_.load() > StallNs();
    if (stood_still) {
      held_back_ = true;
      // Other workers may have taken this one for gone meanwhile and read some of its
      // partitions now: what this worker would acknowledge of them, their new owners never get.
      std::function<void()> check;
      {
        std::lock_guard lock(wait_mu_);
        check = stall_check_;
      }
      if (check) {
        check();
        HandBackRevoked(fetched);
      }
    }
    fetch_alive_ns_ = now;
    fetch_sizes_.Observe(static_cast<double>(fetched.messages.size()));
    // Held back while the batch is handed on: its samples are not in yet, and handing on may
    // wait for a full graph.
    if (!fetched.messages.empty()) {
      held_back_ = true;
      int64_t stored_ns = 0;
      for (const auto& [p, m] : fetched.messages) stored_ns = std::max(stored_ns, m->stored_ns());
      watch_.Delivered(now, stored_ns);
    }
    {
      const Emitter::Burst burst(*out_);  // the graph is woken once for the batch
      for (const auto& [p, m] : fetched.messages) {
        Reading& r = ReadingOf(p, now);
        r.last = m.get();
        r.received_seq = std::max(r.received_seq, m->stream_sequence());
        if (m->delivered() > 1) redelivered_.Inc();
        const auto taken = r.order.Take(m, now);
        if (taken.lost > 0) {
          spdlog::info(
              "node '{}': partition {}: {} deliveries lost on their way; delivery {} and "
              "what follows wait until they come again",
              options_.node, p, taken.lost, m->consumer_sequence());
        }
        if (taken.now) deliver_(p, *m, false);
      }
      for (auto& [p, r] : reading_) HandOnWaiting(p, r, now);
    }
    for (auto& [p, r] : reading_) {
      if (r.last == nullptr) continue;
      // What the consumer still holds, as of its last message: free.
      r.pending = r.last->pending();
      r.stored_ns = std::max(r.stored_ns, r.last->stored_ns());
      r.known = true;
      r.told_at_asked.reset();
      r.since_ns = now;
      r.last = nullptr;
      r.stream_asks = 0;
    }
    // Handing the batch on waited for the graph (backpressure) longer than a request lives: the
    // requests may have ended meanwhile and what was published since waits at the server, so
    // what each consumer holds is unknown again until a message or the consumer tells. Held
    // back until then: the windows must not close on the clock before it is in.
    if (stood_still || SteadyNowNs() - now > int64_t{options_.fetch_expiry_ms} * 1'000'000) {
      for (auto& [p, r] : reading_) {
        r.known = false;
        r.told_at_asked.reset();
      }
    }
    for (const uint32_t p : fetched.released) Released(p);
    for (const uint32_t p : fetched.added) ReadingOf(p, now);  // its backlog unknown yet
    AskQuietConsumers(now);
    for (auto& [p, r] : reading_) {
      if (r.told_at_asked && pulls_.Answered(p, *r.told_at_asked)) {
        r.known = true;
        r.told_at_asked.reset();
      }
    }
    ConfirmWithStream(now);  // what a consumer told is confirmed before it lets input go
    bool held_back = failing;
    uint64_t pending = 0, ack_pending = 0;
    for (const auto& [p, r] : reading_) {
      held_back = held_back || !r.known || r.pending > 0 || r.order.waiting() || r.behind();
      pending += r.pending;
      ack_pending += r.ack_pending;
    }
    held_back_ = held_back;
    taken_in_ = started;
    consumer_pending_.Set(static_cast<double>(pending));
    if (options_.partitions > 0) {
      for (const auto& [p, r] : reading_) PartitionPending(p).Set(static_cast<double>(r.pending));
    }
    consumer_ack_pending_.Set(static_cast<double>(ack_pending));
  }
  held_back_ = false;
}

void JetStreamReader::SetStallCheck(std::function<void()> check) {
  std::lock_guard lock(wait_mu_);
  stall_check_ = std::move(check);
}

void JetStreamReader::HandBackRevoked(nats::PullSet::Fetched& fetched) {
  std::map<uint32_t, size_t> handed_back;
  {
    std::lock_guard lock(handovers_mu_);
    std::erase_if(fetched.messages, [&](const auto& pm) {
      if (handovers_.count(pm.first) == 0) return false;
      pm.second->Nak();
      ++handed_back[pm.first];
      return true;
    });
    // And what waited behind lost deliveries, which HandOnWaiting would hand on.
    for (auto& [p, r] : reading_) {
      if (handovers_.count(p) == 0) continue;
      for (const auto& m : r.order.TakeAll()) {
        m->Nak();
        ++handed_back[p];
      }
    }
  }
  for (const auto& [p, n] : handed_back) {
    spdlog::warn(
        "node '{}': partition {}: {} messages fetched as this worker came back after standing "
        "still handed back: the partition was given up meanwhile",
        options_.node, p, n);
  }
}

int64_t JetStreamReader::LostDeliveriesDueNs() const {
  return (options_.consumer.ack_wait_ms + int64_t{options_.fetch_expiry_ms}) * 1'000'000 +
         StallNs();
}

void JetStreamReader::NoteInterruption(int64_t now) {
  interrupted_until_ns_ = now + LostDeliveriesDueNs();
  spdlog::info(
      "node '{}': reading again after an interruption (connection or consumer): windows close "
      "on event time only for {} ms, until what was lost on the way came again",
      options_.node, LostDeliveriesDueNs() / 1'000'000);
}

void JetStreamReader::HandOnWaiting(uint32_t p, Reading& r, int64_t now) {
  // Sent again at the latest ack_wait_ms after their first delivery, before the gap was seen.
  const int64_t wait_ns = LostDeliveriesDueNs();
  uint64_t gave_up = 0;
  const auto due = r.order.Due(now, wait_ns, gave_up);
  if (gave_up > 0) {
    spdlog::warn(
        "node '{}': partition {}: {} lost deliveries did not come again within {} ms; "
        "handing on the {} messages after them",
        options_.node, p, gave_up, wait_ns / 1'000'000, due.size());
  }
  for (const auto& m : due) deliver_(p, *m, false);
}

/// Longer than a fetch lasts (its expiry and linger) by a second.
int64_t JetStreamReader::StallNs() const {
  return (int64_t{options_.fetch_expiry_ms} + options_.fetch_linger_ms + 1000) * 1'000'000;
}

JetStreamReader::Reading& JetStreamReader::ReadingOf(uint32_t p, int64_t now) {
  auto [it, added] = reading_.try_emplace(p);
  if (added) it->second.since_ns = now;
  return it->second;
}

/// Asking a consumer costs the server a count over the stream (tens of ms with 100 000 messages
/// awaiting acknowledgement, more on a large stream), and the fetch thread waits for the answer:
/// only for a partition quiet for a request's expiry whose backlog is unknown or was not empty
/// (throttled by max_ack_pending, or just taken over), at most every 2 s; and every 30 s for the
/// ack-pending gauge.
void JetStreamReader::AskQuietConsumers(int64_t now) {
  for (auto& [p, r] : reading_) {
    const int64_t since_info = now - r.info_ns;
    const bool quiet = now - r.since_ns > int64_t{options_.fetch_expiry_ms} * 1'000'000;
    const bool ask = (quiet && (!r.known || r.pending > 0) && since_info > 2'000'000'000) ||
                     since_info > 30'000'000'000;
    if (!ask) continue;
    try {
      const auto [pending, ack_pending] =
          js_.ConsumerPending(options_.consumer.stream, DurableOf(p));
      r.pending = pending;
      r.ack_pending = ack_pending;
      // Messages it delivered before it answered may still be on their way here, behind the
      // answer (the server sends them on another path): known once the requests sent until
      // now are answered, a Fetch or two later.
      r.known = false;
      r.told_at_asked = pulls_.Asked(p);
    } catch (const nats::Error& e) {
      spdlog::debug("node '{}': {}", options_.node, e.what());
    }
    r.info_ns = SteadyNowNs();  // after the answer: never back to back
  }
}

/// A consumer's count of what it has not delivered is its leader's: a node restarted after a
/// crash may lead it while its copy of the stream is still behind, and then it says nothing is
/// pending and delivers nothing, or only what its copy holds so far, while the stream stores on
/// (docs/testing.md, "Known flaky tests"). So a partition that went quiet with nothing pending is
/// confirmed with the stream's leader once it has been quiet for a fetch's expiry (well before a
/// join's idle_ms, 2 s by default, closes its windows on the clock), then after 1, 3, 7, 15... s
/// more, while it has been quiet for less than LostDeliveriesDueNs (an idle partition costs
/// nothing after that). The first time a reading's consumer says nothing is pending (on start or
/// a take-over), it is confirmed at once. One that delivers with nothing pending messages stored
/// longer ago than a fetch's expiry beyond the input delay is asked at once, at most once a second
/// (a leader catching up delivers what its copy holds so far, and says nothing is pending after
/// each). A message stored a fetch's expiry ago or earlier that this reader did not receive, and
/// after the last the consumer delivered or passed over (a partition's previous owner received it),
/// holds the partition back until it is received or passed over, whatever the consumer's counts say
/// meanwhile (they are its leader's, still behind), or until the consumer has delivered nothing for
/// LostDeliveriesDueNs.
void JetStreamReader::ConfirmWithStream(int64_t now) {
  if (confirm_refused_) return;
  const int64_t expiry_ns = int64_t{options_.fetch_expiry_ms} * 1'000'000;
  const int64_t wall_ns = WallClock().NowNs();
  for (auto& [p, r] : reading_) {
    const int64_t quiet_ns = now - r.since_ns;
    if (quiet_ns > LostDeliveriesDueNs()) {
      if (r.behind()) {
        spdlog::warn(
            "node '{}': partition {}: its consumer delivered nothing for {} ms while "
            "the stream stores messages it did not deliver; no longer held back",
            options_.node, p, quiet_ns / 1'000'000);
        r.behind_until = 0;
      }
      continue;
    }
    const int64_t due_ns =
        expiry_ns + ((int64_t{1} << std::min(r.stream_asks, 20)) - 1) * 1'000'000'000;
    const bool first = r.stream_asked_ns == 0;
    const bool stale = r.stream_asks == 0 && r.stored_ns > 0 &&
                       wall_ns - r.stored_ns > expiry_ns + InputDelayNs() &&
                       now - r.stream_asked_ns >= kStaleAskNs;
    if (!r.known || r.pending > 0 || (quiet_ns <= due_ns && !first && !stale)) continue;
    ++r.stream_asks;
    r.stream_asked_ns = now;
    try {
      const auto stored = js_.LastStored(options_.consumer.stream, FilterOf(p), kConfirmTimeoutMs);
      if (stored.sequence <= r.received_seq) {
        r.behind_until = 0;  // received (or stored no more: removed by the stream's limits)
        continue;
      }
      if (stored.time_ns > wall_ns - expiry_ns) continue;  // may be on its way
      const uint64_t delivered = js_.Progress(options_.consumer.stream, DurableOf(p)).delivered;
      if (stored.sequence <= delivered) {
        r.received_seq = stored.sequence;  // passed over: not asked of the consumer again
        r.behind_until = 0;
        continue;
      }
      if (!r.behind()) {
        spdlog::warn(
            "node '{}': partition {}: its consumer says it has nothing more, but the "
            "stream stores up to sequence {}, the consumer delivered up to {} and this "
            "worker received up to {} (the consumer's leader has not caught up with the "
            "stream?): held back until it is received",
            options_.node, p, stored.sequence, delivered, r.received_seq);
      }
      r.behind_until = stored.sequence;
    } catch (const nats::Error& e) {
      if (MsgGetRefused()) {
        // Users generated before this request was needed (deploy/nats/generate-users.mjs).
        spdlog::error(
            "node '{}': the server refuses to tell the last message of stream {} ({}): a quiet "
            "consumer's \"nothing pending\" is taken at its word from now on (allow "
            "$JS.API.STREAM.MSG.GET.{} to the engine's user: generate-users.mjs does)",
            options_.node, options_.consumer.stream, conn_.LastError(), options_.consumer.stream);
        confirm_refused_ = true;
        return;
      }
      spdlog::debug("node '{}': {}", options_.node, e.what());
    }
  }
}

bool JetStreamReader::MsgGetRefused() const {
  const std::string refused = conn_.LastError();
  return refused.find("Permissions Violation") != std::string::npos &&
         refused.find("STREAM.MSG.GET") != std::string::npos;
}

/// The lag gauge of partition `p`, made when first asked (the fetch thread's only).
Gauge& JetStreamReader::PartitionPending(uint32_t p) {
  Gauge*& g = partition_pending_[p];
  if (g == nullptr) {
    g = &metrics_.GetGauge("partition_pending",
                           "JetStream: messages of one partition's consumer not yet delivered, "
                           "while this worker reads the partition.",
                           PartitionLabels(p));
  }
  return *g;
}

Labels JetStreamReader::PartitionLabels(uint32_t p) const {
  Labels labels = labels_;
  labels.emplace_back("partition", std::to_string(p));
  return labels;
}

/// Partition `p`'s requests have ended: its kRevoked event follows its last message.
void JetStreamReader::Released(uint32_t p) {
  reading_.erase(p);
  std::shared_ptr<Handover> handover;
  {
    std::lock_guard lock(handovers_mu_);
    const auto it = handovers_.find(p);
    if (it != handovers_.end()) {
      handover = std::move(it->second);
      handovers_.erase(it);
    }
  }
  // Held back from Revoke until its kRevoked event is in the graph: meanwhile the partition's
  // messages were handed back unread, and its windows must not close on the clock without them
  // (docs/scaling.md, "Hand-over of a partition", step 1).
  if (options_.partitions > 0) {
    if (partition_pending_.erase(p) > 0) {
      metrics_.RemoveGauge("partition_pending", PartitionLabels(p));
    }
    PartitionEvent revoked;
    revoked.kind = PartitionEvent::Kind::kRevoked;
    revoked.partition = p;
    revoked.handover = std::move(handover);
    out_->Emit(MakeMessage(std::move(revoked)));
  }
  --releasing_;
}

}  // namespace fleetflow

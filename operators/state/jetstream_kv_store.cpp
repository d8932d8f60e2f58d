#include "jetstream_kv_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>

#include "clock.hpp"

namespace fleetflow {

namespace {

constexpr size_t kMaxPendingSamples = 1024;  // per key between two writes, at most
/// kv_write_seconds' buckets (docs/metrics.md): 0.5 ms to the 5 s write timeout and beyond.
const std::vector<double> kWriteBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,  0.5,    1,     2.5,  5,     10};

void SortByTime(std::vector<wire::Point>& samples) {
  std::sort(samples.begin(), samples.end(),
            [](const wire::Point& a, const wire::Point& b) { return a.ts_ns < b.ts_ns; });
}

}  // namespace

KvMetrics::KvMetrics(Metrics& metrics, const Labels& labels)
    : writes(metrics.GetCounter("kv_writes", "KV writes acknowledged by the server.", labels)),
      write_errors(
          metrics.GetCounter("kv_write_errors", "KV writes that failed and are retried.", labels)),
      checkpoints(metrics.GetCounter(
          "kv_checkpoints",
          "Checkpoints stored: a partition's stream sequence up to which its state is in the "
          "bucket.",
          labels)),
      restored_keys(metrics.GetCounter(
          "kv_keys_restored", "Keys read from the bucket on taking a partition over.", labels)) {}

std::optional<uint64_t> ParseCheckpoint(std::string_view value) {
  uint64_t sequence = 0;
  const char* end = value.data() + value.size();
  if (const auto r = std::from_chars(value.data(), end, sequence);
      r.ec != std::errc() || r.ptr != end) {
    return std::nullopt;
  }
  return sequence;
}

JetStreamKvStore::JetStreamKvStore(JetStreamKvOptions options, Metrics& metrics,
                                   const Labels& labels)
    : options_(std::move(options)),
      retention_{options_.keep, options_.history_ns},
      kv_metrics_(metrics, labels),
      writes_(kv_metrics_.writes),
      conflicts_(metrics.GetCounter(
          "kv_conflicts",
          "KV compare-and-set conflicts (another worker wrote the key since our last write).",
          labels)),
      restored_keys_(kv_metrics_.restored_keys),
      write_errors_(kv_metrics_.write_errors),
      checkpoints_(kv_metrics_.checkpoints),
      pending_keys_(metrics.GetGauge("kv_pending_keys",
                                     "Keys with samples not yet durable in the bucket.", labels)),
      write_seconds_(metrics.GetHistogram(
          "kv_write_seconds",
          "KV write batches (the keys of one flush): from sending to the last answer, in seconds.",
          kWriteBuckets, labels)) {
  last_flush_ns_ = SteadyNowNs();
  conn_ = nats::Connection::Connect(options_.connection);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  kv_ = js_->EnsureBucket(options_.bucket);
}

JetStreamKvStore::~JetStreamKvStore() { kv_->WaitForWrites(2000); }

std::vector<state::Series> JetStreamKvStore::Decode(std::string_view key,
                                                    const std::string& value) {
  std::vector<state::Series> out;
  if (state::DecodeRecord(value, out)) {
    // `<vehicle>.<sensor>` in a record of this layout; `<sensor>` in one per vehicle, whose key
    // is `<partition>.<vehicle>`.
    const std::string_view partition = key.substr(0, key.find('.'));
    for (auto& s : out) {
      s.name = s.name.find('.') != std::string::npos ? std::string(partition) + "." + s.name
                                                     : std::string(key) + "." + s.name;
      SortByTime(s.samples);
    }
    return out;
  }
  // Stored per state key, before records: a Batch under <partition>.<vehicle>.<sensor>.
  std::vector<wire::Point> samples;
  if (std::count(key.begin(), key.end(), '.') < 2 ||
      wire::DecodeBatch(value.data(), value.size(), samples) != wire::DecodeError::kNone) {
    return {};
  }
  SortByTime(samples);
  out.push_back({std::string(key), std::move(samples)});
  return out;
}

std::pair<std::string, std::string> JetStreamKvStore::RecordOf(std::string_view state_key,
                                                               size_t records) {
  const size_t first = state_key.find('.');
  const std::string_view partition = state_key.substr(0, first);
  const std::string_view name = state_key.substr(first == std::string_view::npos ? 0 : first + 1);
  const std::string_view vehicle = name.substr(0, name.rfind('.'));
  const size_t k = RecordOfVehicle(vehicle, records);
  return {std::string(partition) + ".r" + std::to_string(k), std::string(name)};
}

JetStreamKvStore::RecordNode& JetStreamKvStore::RecordAt(const std::string& key) {
  auto [it, added] = records_.try_emplace(key);
  if (added) {
    uint32_t p = 0;
    std::from_chars(key.data(), key.data() + key.size(), p);
    it->second.partition = p;
  }
  return *it;
}

void JetStreamKvStore::MergeInto(Record& record, const std::string& name,
                                 const std::vector<wire::Point>& samples, bool foreign) {
  auto it = std::find_if(record.series.begin(), record.series.end(),
                         [&](const Series& mine) { return mine.name == name; });
  if (it == record.series.end()) {
    record.series.push_back(Series{name, samples, foreign, SIZE_MAX});
    return;
  }
  it->held = Merge(std::move(it->held), samples, kMaxPendingSamples);
  it->foreign = it->foreign || foreign;
}

std::optional<uint64_t> JetStreamKvStore::Restore(const std::string& prefix, const Visit& visit) {
  std::map<std::string, std::vector<wire::Point>> restored;  // by state key
  std::unordered_map<std::string, uint64_t> revisions;       // by KV key
  std::optional<uint64_t> checkpoint;
  const std::string checkpoint_key = prefix + "checkpoint";  // as CheckpointKey
  const int again = kv_->ReadCurrent(
      prefix.empty() ? "" : prefix + ">", options_.restore_timeout_ms, [&](nats::KvEntry& e) {
        if (e.key == checkpoint_key) {
          checkpoint = ParseCheckpoint(e.value);
          return;
        }
        restored_keys_.Inc();
        for (state::Series& s : Decode(e.key, e.value)) {
          // A state key stored twice (under a key of a layout before too) is merged by event time.
          std::vector<wire::Point>& samples = restored[s.name];
          samples = Merge(std::move(samples), s.samples, kMaxPendingSamples);
        }
        revisions[e.key] = e.revision;  // the base of our next write, if it is a key we write
      });
  if (again > 0) {
    spdlog::info("bucket {}: {}> read {} more times: the replica read was behind the leader",
                 options_.bucket.name, prefix, again);
  }
  for (auto& [key, samples] : restored) {
    retention_.Apply(samples);
    auto [record_key, name] = RecordOf(key, options_.records_per_partition);
    {
      std::lock_guard lock(mu_);
      Record& r = RecordAt(record_key).second;
      if (const auto rev = revisions.find(record_key); rev != revisions.end()) {
        r.revision = std::max(r.revision, rev->second);
      }
      MergeInto(r, name, samples, false);  // held until the state's key is written (Slot)
    }
    visit(key, std::move(samples));
  }
  return checkpoint;
}

void JetStreamKvStore::Forget(const std::string& prefix) {
  std::lock_guard lock(mu_);
  uint32_t p = 0;
  std::from_chars(prefix.data(), prefix.data() + prefix.size(), p);
  changelogs_.erase(p);
  for (auto it = records_.begin(); it != records_.end();) {
    if (!it->first.starts_with(prefix) || it->second.in_flight || it->second.dirty) {
      ++it;  // a write still on its way keeps its key (Sync(true) normally waited for it)
      continue;
    }
    for (const Series& s : it->second.series) {
      if (s.slot == SIZE_MAX) continue;
      slots_[s.slot] = SlotRef{};
      free_slots_.push_back(s.slot);
    }
    it = records_.erase(it);
  }
  // A record whose write is still on its way keeps the state's last samples of its keys: the
  // state forgets them now, and the record may be written again (a failed write).
  for (auto& [key, r] : records_) {
    if (!key.starts_with(prefix)) continue;
    for (Series& s : r.series) {
      if (s.slot == SIZE_MAX) continue;
      s.held = SamplesOf(s);
      slots_[s.slot] = SlotRef{};
      free_slots_.push_back(s.slot);
      s.slot = SIZE_MAX;
    }
  }
}

size_t JetStreamKvStore::Slot(const std::string& key) {
  auto record = RecordOf(key, options_.records_per_partition);
  std::string& name = record.second;  // a structured binding could not be captured below
  std::lock_guard lock(mu_);
  RecordNode& node = RecordAt(record.first);
  auto& series = node.second.series;
  auto it =
      std::find_if(series.begin(), series.end(), [&](const Series& s) { return s.name == name; });
  if (it == series.end())
    it = series.insert(series.end(), Series{std::move(name), {}, false, SIZE_MAX});
  if (it->slot == SIZE_MAX) {
    // Restored: the state holds what the store read (StateStore::Restore's visit) from now on.
    // Another writer's samples stay held: the state never saw them.
    if (!it->foreign) it->held.clear();
    if (free_slots_.empty()) {
      it->slot = slots_.size();
      slots_.emplace_back();
    } else {
      it->slot = free_slots_.back();
      free_slots_.pop_back();
    }
  }
  // Series are looked up by index: a record's series only ever grow at the end.
  slots_[it->slot] = SlotRef{&node, static_cast<size_t>(it - series.begin())};
  return it->slot;
}

void JetStreamKvStore::Write(size_t slot, uint64_t sequence) {
  std::lock_guard lock(mu_);
  auto& [key, record] = *slots_.at(slot).record;
  Changelog& changelog = changelogs_[record.partition];
  if (sequence != 0) {
    if (record.pending_seq == 0 || sequence < record.pending_seq) record.pending_seq = sequence;
    changelog.applied = std::max(changelog.applied, sequence);
    checkpoint_due_ = true;
  }
  // What this partition's next owner would re-read (or, without a stream, lose) grows by one.
  if (++changelog.since_flush >= options_.flush_messages) reread_due_ = true;
  wrote_since_sync_ = wrote_since_flush_ = true;
  if (!record.dirty) {
    record.dirty = true;
    dirty_.push_back(key);
  }
}

std::vector<wire::Point> JetStreamKvStore::SamplesOf(Series& s) const {
  const std::vector<wire::Point>* state =
      s.slot != SIZE_MAX && options_.current ? options_.current(s.slot) : nullptr;
  if (state != nullptr && s.held.empty()) return *state;  // the usual case: the state's alone
  // Another writer's samples beside the state's: kept, merged, as long as state retains them.
  if (state != nullptr) s.held = Merge(std::move(s.held), *state, kMaxPendingSamples);
  retention_.Apply(s.held);  // a merge of what was read from the bucket is not retained yet
  return s.held;
}

JetStreamKvStore::Outgoing JetStreamKvStore::Prepare(const std::string& key, Record& r) {
  r.dirty = false;
  r.in_flight = true;
  ++in_flight_;
  r.in_flight_seq = r.pending_seq;
  r.pending_seq = 0;
  Outgoing out{key, {}, r.revision};
  out.series.reserve(r.series.size());
  for (Series& s : r.series) out.series.push_back({s.name, SamplesOf(s)});
  return out;
}

void JetStreamKvStore::Send(std::vector<Outgoing> writes) {
  if (writes.empty()) return;
  auto batch = std::make_shared<WriteBatch>(WriteBatch{SteadyNowNs(), writes.size()});
  for (Outgoing& w : writes) {
    const std::string value = state::EncodeRecord(w.series);
    kv_->UpdateAsync(
        w.key, value, w.revision,
        [this, key = w.key, batch](const nats::KvWriteResult& r) { Done(key, r, *batch); });
  }
}

void JetStreamKvStore::Done(const std::string& key, const nats::KvWriteResult& r,
                            WriteBatch& batch) {
  {
    std::lock_guard lock(mu_);
    checkpoint_due_ = true;
    if (--batch.unanswered == 0) {
      write_seconds_.Observe(static_cast<double>(SteadyNowNs() - batch.sent_ns) * 1e-9);
    }
    Record& rec = RecordAt(key).second;
    rec.in_flight = false;
    --in_flight_;
    if (r.ok) {
      writes_.Inc();
      rec.revision = std::max(rec.revision, r.revision);
      rec.in_flight_seq = 0;
    } else {
      (r.conflict ? conflicts_ : write_errors_).Inc();
      rec.conflict = r.conflict;
      // What the write carried is not stored: the checkpoint stays before it until it is. The
      // next write carries it again (the state, or `held`, still has it; after a conflict, with
      // the other writer's samples merged in).
      if (rec.in_flight_seq != 0 && (rec.pending_seq == 0 || rec.in_flight_seq < rec.pending_seq)) {
        rec.pending_seq = rec.in_flight_seq;
      }
      rec.in_flight_seq = 0;
      if (!rec.dirty) {
        rec.dirty = true;
        dirty_.push_back(key);
      }
      if (!r.conflict) {
        // One line per key would flood the log when a whole flush fails (a lost connection).
        std::string line = "bucket " + options_.bucket.name + ": write " + key + ": " + r.error;
        if (r.error.find("ayload") != std::string::npos) {
          line += " (a record of " + std::to_string(rec.series.size()) +
                  " series is larger than the server's max_payload: raise "
                  "records_per_partition, or lower keep or history_ms)";
        }
        write_errors_log_.Log("write", spdlog::level::warn, line);
      }
    }
  }
}

void JetStreamKvStore::Checkpoint() {
  std::vector<std::pair<uint32_t, uint64_t>> due;
  {
    std::lock_guard lock(mu_);
    if (!checkpoint_due_) return;
    checkpoint_due_ = false;
    // Per partition, the lowest sequence whose samples are not stored yet: every message
    // written into the state before it is in the bucket.
    std::unordered_map<uint32_t, uint64_t> lowest;
    for (const auto& [key, r] : records_) {
      for (const uint64_t seq : {r.pending_seq, r.in_flight_seq}) {
        if (seq == 0) continue;
        auto [it, added] = lowest.try_emplace(r.partition, seq);
        if (!added) it->second = std::min(it->second, seq);
      }
    }
    for (auto& [p, c] : changelogs_) {
      const auto low = lowest.find(p);
      const uint64_t upto = low == lowest.end() ? c.applied : low->second - 1;
      if (c.writing || upto <= c.stored) {
        if (c.writing) checkpoint_due_ = true;  // again once it is answered
        continue;
      }
      c.writing = true;
      due.emplace_back(p, upto);
    }
  }
  for (const auto& [p, upto] : due) {
    kv_->PutAsync(JetStreamKvStore::CheckpointKey(p), std::to_string(upto),
                  [this, p = p, upto = upto](const nats::KvWriteResult& r) {
                    std::lock_guard lock(mu_);
                    checkpoint_due_ = true;
                    const auto c = changelogs_.find(p);
                    if (c == changelogs_.end()) return;  // forgotten meanwhile
                    c->second.writing = false;
                    if (r.ok) {
                      c->second.stored = std::max(c->second.stored, upto);
                      checkpoints_.Inc();
                    } else {
                      write_errors_.Inc();
                      write_errors_log_.Log("write", spdlog::level::warn,
                                            "bucket " + options_.bucket.name + ": write " +
                                                JetStreamKvStore::CheckpointKey(p) + ": " +
                                                r.error);
                    }
                  });
  }
}

void JetStreamKvStore::Flush() {
  kv_->ExpireWrites();  // a write whose acknowledgement was lost is retried, never pinned
  std::vector<std::string> conflicted;
  std::vector<Outgoing> writes;
  {
    std::lock_guard lock(mu_);
    std::vector<std::string> still_dirty;
    for (const std::string& key : dirty_) {
      Record& rec = RecordAt(key).second;
      if (!rec.dirty) continue;
      if (rec.in_flight) {
        still_dirty.push_back(key);  // one write per key in flight; this one goes next time
      } else if (rec.conflict) {
        conflicted.push_back(key);
      } else {
        writes.push_back(Prepare(key, rec));
      }
    }
    dirty_.swap(still_dirty);
    pending_keys_.Set(static_cast<double>(dirty_.size() + conflicted.size() + in_flight_));
  }
  Send(std::move(writes));
  // Conflicts: read what the other writer stored, merge by event time, write again.
  writes.clear();
  for (const std::string& key : conflicted) {
    std::optional<nats::KvEntry> current;
    try {
      current = kv_->Get(key);
    } catch (const nats::Error& e) {
      spdlog::warn("bucket {}: get {}: {}", options_.bucket.name, key, e.what());
    }
    std::lock_guard lock(mu_);
    Record& rec = RecordAt(key).second;
    if (current) {
      for (const state::Series& s : Decode(key, current->value)) {
        MergeInto(rec, RecordOf(s.name, options_.records_per_partition).second, s.samples, true);
      }
      rec.revision = current->revision;
    }
    rec.conflict = false;
    if (rec.in_flight) {
      rec.dirty = true;
      dirty_.push_back(key);
    } else {
      writes.push_back(Prepare(key, rec));
    }
  }
  Send(std::move(writes));
}

void JetStreamKvStore::Sync(bool all) {
  const int64_t now = SteadyNowNs();
  bool due = all || now - last_flush_ns_ >= options_.flush_ms * 1'000'000;
  {
    std::lock_guard lock(mu_);
    // A tick without a Write: the input paused and there is nothing more to coalesce, so what
    // waits is written now and its messages are acknowledged without waiting out flush_ms.
    due = due || (!wrote_since_sync_ && wrote_since_flush_);
    // A partition took many messages in since the last flush (a backlog read fast): that
    // bounds what its next owner re-reads after a crash.
    due = due || reread_due_;
    wrote_since_sync_ = false;
    if (due) {
      wrote_since_flush_ = reread_due_ = false;
      for (auto& [p, c] : changelogs_) c.since_flush = 0;
    }
  }
  if (due) {
    last_flush_ns_ = now;
    Flush();
  }
  Checkpoint();  // the writes answered since the last tick
  if (!all) return;
  // Drain, or a partition handed over: every write answered (conflicts retried a few times),
  // then the checkpoints they make true.
  for (int round = 0; round < 5; ++round) {
    kv_->WaitForWrites(5000);
    {
      std::lock_guard lock(mu_);
      if (dirty_.empty() && in_flight_ == 0) break;
    }
    Flush();
  }
  Checkpoint();
  kv_->WaitForWrites(5000);
  std::lock_guard lock(mu_);
  if (!dirty_.empty() || in_flight_ > 0) {
    spdlog::error(
        "bucket {}: {} keys not written; the next owner of their partitions re-reads their "
        "messages from the stream",
        options_.bucket.name, dirty_.size() + static_cast<size_t>(in_flight_));
  }
}

bool JetStreamKvStore::Ready() const { return conn_->connected(); }

std::vector<wire::Point> JetStreamKvStore::Merge(std::vector<wire::Point> a,
                                                 const std::vector<wire::Point>& b, size_t keep) {
  const auto before = [](const wire::Point& x, const wire::Point& y) {
    return x.ts_ns != y.ts_ns ? x.ts_ns < y.ts_ns : x.seq < y.seq;
  };
  // The usual case, samples that came in order after the stored ones, needs no sort: checking
  // that the whole list is strictly ascending is one pass.
  a.insert(a.end(), b.begin(), b.end());
  const bool in_order =
      std::adjacent_find(a.begin(), a.end(), [&](const wire::Point& x, const wire::Point& y) {
        return !before(x, y);
      }) == a.end();
  if (!in_order) {
    std::sort(a.begin(), a.end(), before);
    a.erase(std::unique(a.begin(), a.end(),
                        [](const wire::Point& x, const wire::Point& y) {
                          return x.ts_ns == y.ts_ns && x.seq == y.seq;
                        }),
            a.end());
  }
  if (a.size() > keep) a.erase(a.begin(), a.end() - static_cast<std::ptrdiff_t>(keep));
  return a;
}

JetStreamKvCheckpoints::JetStreamKvCheckpoints(
    std::unique_ptr<nats::KeyValue> bucket, std::vector<std::function<std::string(uint32_t)>> keys)
    : kv_(std::move(bucket)), keys_(std::move(keys)) {}

std::optional<uint64_t> JetStreamKvCheckpoints::Read(const std::string& key) {
  const auto entry = kv_->Get(key);
  if (!entry || entry->deleted) return std::nullopt;
  const auto sequence = ParseCheckpoint(entry->value);
  if (!sequence) {
    spdlog::warn("{} in bucket {} is not a sequence ({}); taken as none", key, kv_->bucket(),
                 entry->value);
  }
  return sequence;
}

std::optional<uint64_t> JetStreamKvCheckpoints::Checkpoint(uint32_t p) {
  std::optional<uint64_t> oldest;
  for (const auto& key : keys_) {
    const auto sequence = Read(key(p));
    if (sequence && (!oldest || *sequence < *oldest)) oldest = sequence;
  }
  return oldest;
}

void JetStreamKvCheckpoints::Begin(uint32_t p, uint64_t sequence) {
  for (const auto& key : keys_) {
    const std::string k = key(p);
    if (!Read(k)) kv_->Put(k, std::to_string(sequence));
  }
}

}  // namespace fleetflow

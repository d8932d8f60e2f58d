#pragma once
/// JetStream through the one NATS wrapper: streams, durable pull consumers and Key/Value buckets.
///
/// Thread-safety: a JetStream, its consumers and buckets may be used from several threads;
/// JsMessage acknowledgements and KeyValue::UpdateAsync callbacks are thread-safe. Callbacks run
/// on a nats.c thread, or with an error on the thread that called UpdateAsync, ExpireWrites or
/// WaitForWrites; never block in them.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nats_client.hpp"

struct __jsCtx;
struct __kvStore;
struct __kvWatcher;

namespace fleetflow::nats {

/// A stream's subject transform (nats-server 2.10 or later): a message published on a subject
/// matching `source` is stored under `destination`, written with the functions of an account's
/// subject mapping ({{wildcard(n)}}, {{partition(n,...)}}).
struct SubjectTransform {
  std::string source;
  std::string destination;
  bool operator==(const SubjectTransform&) const = default;
};

/// A stream that another stream sources (nats-server 2.10 or later for `transform`): here a
/// stream of an edge leaf node in its own JetStream domain, reached through `api_prefix`
/// ("$JS.<domain>.API"). The sourcing stream stores each message once, in the edge's order,
/// from where it stopped, whenever the edge can be reached.
struct StreamSource {
  std::string name;
  std::string api_prefix;                                    // empty: a stream of the same domain
  std::optional<SubjectTransform> transform = std::nullopt;  // its subjects, stored as
  bool operator==(const StreamSource&) const = default;
};

/// How far a stream's source has got, as the sourcing stream reports it (stream info).
struct StreamSourceState {
  std::string name;
  std::string api_prefix;
  uint64_t lag = 0;        // messages of the source not yet stored, as of its last message
  int64_t active_ns = -1;  // since the source last sent anything, heartbeats included (-1: never)
  std::string error;       // the source's last error (empty: none)
};

/// The defaults of StreamOptions and ConsumerOptions are those of nats_source's config spec
/// (operators/nats_source.cpp), which sets every field from its validated config; they serve
/// tools and tests.
struct StreamOptions {
  std::string name = "TELEMETRY";
  std::vector<std::string> subjects = {"vehicle.*.*"};
  std::string retention = "limits";  // limits | workqueue | interest
  int64_t max_age_ms = 86'400'000;   // 0: unlimited
  std::string storage = "file";      // file | memory
  int replicas = 1;
  /// How long the stream drops a message whose Nats-Msg-Id it stored (0: the server's 2 min;
  /// at most max_age).
  int64_t duplicate_window_ms = 0;
  std::optional<SubjectTransform> transform = std::nullopt;
  std::vector<StreamSource> sources = {};
};

struct ConsumerOptions {
  std::string stream = "TELEMETRY";
  std::string durable = "fleetflow";
  std::string filter_subject = "vehicle.*.*";
  int64_t ack_wait_ms = 30'000;
  int64_t max_ack_pending = 100'000;
  /// AckAll: acknowledging a message acknowledges every earlier one the consumer delivered (one
  /// acknowledgement per batch); otherwise each message is acknowledged on its own. Fixed when
  /// the consumer is created: EnsureConsumer refuses an existing consumer with the other policy.
  bool ack_all = false;
};

/// Acknowledges a JetStream message later without keeping the message (and its payload) alive:
/// it holds only the reply subject. A copy acknowledges the same message: call one of them once.
class DeferredAck {
 public:
  void operator()() const;

 private:
  friend class JsMessage;
  DeferredAck(Connection& connection, std::string_view reply) : conn_(&connection), reply_(reply) {}

  Connection* conn_;
  std::string reply_;
};

/// A message from a pull consumer. Ack/Nak/Term are idempotent: only the first one counts.
/// The connection it came on must outlive it (and every DeferredAck of it).
class JsMessage {
 public:
  /// What an acknowledgement subject says: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream
  /// seq>.<consumer seq>.<time>.<pending>`, or with `<domain>.<account hash>` before the stream
  /// and a random token at the end (12 tokens or more). Each number as its accessor says when
  /// the subject does not have it.
  struct AckReply {
    std::string_view consumer;  // into the subject read; empty when it does not name one
    uint64_t delivered = 1;
    uint64_t stream_sequence = 0;
    uint64_t consumer_sequence = 0;
    int64_t stored_ns = 0;
    uint64_t pending = 0;
    /// Reads `reply` in one pass.
    static AckReply Parse(std::string_view reply);
  };

  /// Reads the numbers of its reply subject once, here: they are asked for several times on
  /// every message's way (its order, its partition's progress, its batch's stream time).
  JsMessage(Connection& connection, Message message);
  /// `reply` is AckReply::Parse of the message's reply subject, read already (PullSet: the
  /// consumer it names says whose the message is).
  JsMessage(Connection& connection, Message message, const AckReply& reply);
  JsMessage(const JsMessage&) = delete;
  JsMessage& operator=(const JsMessage&) = delete;

  std::string_view subject() const { return msg_.subject(); }
  const void* data() const { return msg_.data(); }
  size_t size() const { return msg_.size(); }
  /// How often the server has delivered it (1 on first delivery), from its reply subject.
  uint64_t delivered() const { return reply_.delivered; }
  /// Messages of the stream the consumer had not delivered yet when it sent this one, from its
  /// reply subject (0 when the subject does not say).
  uint64_t pending() const { return reply_.pending; }
  /// When the stream stored it (ns since the Unix epoch), from its reply subject (0 when the
  /// subject does not say): the time it was published, however late it is read.
  int64_t stored_ns() const { return reply_.stored_ns; }
  /// Its sequence in the stream, from its reply subject (0 when the subject does not say).
  uint64_t stream_sequence() const { return reply_.stream_sequence; }
  /// Its delivery's sequence in the consumer (every delivery, redeliveries too, has its own),
  /// from its reply subject (0 when the subject does not say).
  uint64_t consumer_sequence() const { return reply_.consumer_sequence; }

  void Ack();
  /// For an acknowledgement after this message is freed (once its data was decoded).
  DeferredAck AckLater() const { return {conn_, msg_.reply()}; }
  /// Asks for redelivery, after `delay_ms` (0: at once).
  void Nak(int64_t delay_ms = 0);
  /// Never redeliver (bad input).
  void Term();

 private:
  void Answer(std::string_view body);

  Connection& conn_;
  Message msg_;
  AckReply reply_;
  std::atomic<bool> done_{false};
};

/// Pulls from several durable pull consumers of one stream (a worker's partitions) over one
/// inbox, on the caller's thread: however many consumers, one thread waits for their messages,
/// and a message costs no hand-over between threads on its way. Pull requests go to each
/// consumer's API subject with a reply subject of its own under the inbox (its statuses say
/// which consumer they end); a message names its consumer in its acknowledgement subject.
/// (Not nats.c's pull subscription: its fetch in nats.c 3.4.1 can return more messages than the
/// batch it allocated room for, writing past the array.)
///
/// Thread-safety: Add and Remove may be called from any thread; Fetch from one thread at a time.
class PullSet {
 public:
  /// `connection` must outlive the set and every message it returned.
  PullSet(Connection& connection, std::string stream);
  PullSet(const PullSet&) = delete;
  PullSet& operator=(const PullSet&) = delete;
  /// Hands back what it still holds and, until every request it sent has expired, what still
  /// comes (NAK): a message sent to an inbox nobody listens to would wait for its ack wait.
  ~PullSet();

  /// Starts pulling from the durable consumer `durable` (it must exist: JetStream::EnsureConsumer),
  /// named `id` in Fetch's results. Takes effect at the next Fetch.
  void Add(uint32_t id, const std::string& durable);
  /// Stops pulling from consumer `id`: none of its messages is returned after the Fetch that
  /// takes the removal in. Its messages received already, and those still coming for its
  /// outstanding requests, are handed back to the server (NAK), not left to their ack wait,
  /// once its requests have ended (their last message or expiry status, 2 s at most): handed
  /// back earlier, the server would send them again on those requests. Then a Fetch reports it
  /// in `released`, and it is gone.
  void Remove(uint32_t id);
  /// A Fetch under way returns at once, possibly empty (the caller is stopping).
  void Interrupt();

  struct Fetched {
    /// In the order received; each with its consumer's id.
    std::vector<std::pair<uint32_t, std::shared_ptr<JsMessage>>> messages;
    std::vector<uint32_t> added;     // consumers taken in by this call
    std::vector<uint32_t> released;  // removed consumers whose requests have all ended
  };
  /// Fills `out` (cleared first) with up to `batch` messages of any consumers, waiting at most
  /// timeout_ms for the first; returns early, possibly empty, when Add or Remove is called or
  /// a removed consumer is released. Once one message is there, the rest of the batch is
  /// gathered for linger_ms at most: with `ahead`, by polling (not woken by every message: a
  /// slow stream's messages are handed on together, and a worker's wake-ups follow its share of
  /// the load), every kPollMs or, when the batch fills sooner at the rate seen, when it should
  /// be full; without, waiting for each (its one request ends sooner). Messages that
  /// arrive later are kept for the next call. Each consumer without an outstanding request gets one
  /// of `batch` messages (waiting up to timeout_ms at the server).
  /// `ahead`: requests end when the consumer has nothing more to send (no_wait), so the server
  /// does not send a caught-up consumer's messages one by one as they come (one socket read
  /// each). The caught-up consumers are asked again together, once per linger_ms (the pace),
  /// and polled then: what came meanwhile arrives together, and the wake-ups per second of the
  /// set and of its connection follow the pace, not the number of messages or consumers. A
  /// consumer whose last request was filled (a backlog) is kept at two batches requested
  /// instead, so the server sends the next batch while the caller handles this one. While every
  /// consumer is caught up, the answers are not waited for: they wait in the subscription until
  /// the next round, when the thread wakes anyway, and are handed on then with those of the
  /// round before: the thread wakes once per round, not for each answer or expiry status, and a
  /// message stored is handed on within two rounds (the next request, then its answer taken
  /// at the round after). While every consumer also has a request open (a quiet set: no round
  /// is due), the thread looks every two rounds (100 ms at least) for what they brought: the
  /// same bound, fewer wake-ups of an idle worker. The looks keep to one grid across calls (a
  /// call returns at its last look before timeout_ms), and a quiet set's requests expire just
  /// before a look, all in one round (RoundExpiryNs): one publish and one read of statuses per
  /// expiry. Throws Error when a request cannot be sent (the caller retries).
  void Fetch(int batch, int timeout_ms, bool ahead, Fetched& out, int linger_ms = kLingerMs);
  /// Consumers added and not yet released.
  size_t size() const;
  /// Messages asked of consumer `id` so far, by every request sent (0 when it is not read). With
  /// Answered, tells when everything the consumer sent to this set up to some moment is in:
  /// what a request brings comes before the status that ends it. Fetch's thread only.
  uint64_t Asked(uint32_t id) const;
  /// Every message of the first `asked` asked of consumer `id` came (and was returned by a
  /// Fetch, or handed back) or will not come (a status ended its request, or the request
  /// expired); true when the consumer is not read. Fetch's thread only.
  bool Answered(uint32_t id, uint64_t asked) const;
  /// A consumer's requests ended without an answer since its last message or status: no
  /// responders (the consumer has no leader: a NATS cluster electing one after a node loss;
  /// nats.c does not say whose request it was, so every consumer counts), or nothing by the
  /// request's expiry + 1 s. What it holds is unknown: not "nothing". Fetch's thread only.
  bool Silent() const;
  /// Times Fetch waited (for a message, a poll, the next round, or a consumer): the fetching
  /// thread's wake-ups. Fetch's thread only.
  uint64_t waits() const { return waits_; }

  static constexpr int kLingerMs = 10;
  /// A removed consumer's requests are waited for this long at most (ns).
  static constexpr int64_t kReleaseNs = 2'000'000'000;
  static constexpr int kPollMs = 5;
  static constexpr int64_t kQuietDozeNs = 100'000'000;
  /// Once its consumer delivered, how long after a request's expiry its status is waited for
  /// (then the rest of its batch is no longer counted on and the consumer is asked again);
  /// 1 s when nothing came.
  static constexpr int64_t kStatusGraceNs = 200'000'000;
  /// A round's requests expire this long before a look: their statuses are in by then.
  static constexpr int64_t kRoundMarginNs = 10'000'000;
  static constexpr int64_t kFirstPollNs = 1'000'000;  // the first poll, before a rate is seen
  static constexpr int64_t kMinPollNs = 200'000;      // a fast stream's polls, at most this often

 private:
  struct Member {
    uint32_t id = 0;
    std::string durable;
    std::string request_subject;       // $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>
    std::string reply;                 // <inbox>.<id>
    uint64_t asked = 0;                // messages asked for by its requests, ever
    uint64_t answered = 0;             // of them, those that came or will not come
    int64_t expires_ns = 0;            // steady: when its last request expires
    int64_t outstanding_until_ns = 0;  // steady: when they have surely ended (expiry + margin)
    int64_t silent_after_ns = 0;       // steady: nothing heard since a request by then: silent
    bool delivered = false;            // a message came in this Fetch
    bool caught_up = true;             // its last request ended with a status, not filled
    bool refused = false;  // that status was 409: e.g. max_ack_pending reached, a backlog waits
    bool silent = false;   // see Silent()
    bool removing = false;
    int64_t release_until_ns = 0;  // removing: released at the latest then
    std::vector<Message> held;     // removing: what came meanwhile, handed back on release
  };
  /// Messages its outstanding requests may still bring.
  static uint64_t Outstanding(const Member& m) { return m.asked - m.answered; }
  struct Command {
    bool add;
    uint32_t id;
    std::string durable;
  };

  /// Takes Add's and Remove's commands in (a consumer added again while it was being removed
  /// counts as released first). False when nothing was commanded since the previous call.
  bool ApplyCommands(Fetched& out);
  /// Sends a request to each active consumer that has none outstanding; with `ahead`, once the
  /// pace allows (next_paced_ns_), to all of them together: also to those that brought nothing
  /// lately (their last request expired), or they would wait for a round in which no consumer
  /// of the set delivers.
  void RequestWhereNone(int batch, int timeout_ms, bool ahead);
  /// With `ahead`: nanoseconds until the paced requests are due (0: due now), or `cap` when no
  /// active consumer is without a request.
  int64_t NsUntilPaced(int64_t cap) const;
  /// Every consumer caught up and asked (a quiet set): how long the thread sleeps before it
  /// looks for what their requests brought. A message stored meanwhile waits that long at most
  /// in the subscription: twice the pace (the bound of a paced round: its request, then the
  /// round after), at least kQuietDozeNs.
  int64_t QuietDozeNs() const;
  /// Every active consumer's last request ended with a status saying it sent all it had (not
  /// refused: a consumer held back by max_ack_pending has a backlog, whose first answer is
  /// waited for).
  bool CaughtUp() const;
  /// Sleeps `ns`, or until Add, Remove or Interrupt.
  void Doze(int64_t ns);
  /// Takes the next message for us, waiting wait_ms at most; false when nothing came. A message
  /// of an active consumer goes to `out`, one of a removed consumer back to the server; a
  /// status that ends a request is counted off its consumer's outstanding messages.
  bool Receive(int wait_ms, Fetched& out);
  /// `no_wait`: the request ends once the consumer has sent what it had; it waits expiry_ns at
  /// most for a first message.
  void Request(Member& m, int batch, int64_t expiry_ns, bool no_wait);
  /// The next look of a quiet set after `now` (steady ns): looks keep to a grid of
  /// QuietDozeNs, the same across calls of Fetch.
  int64_t NextLookNs(int64_t now) const;
  /// The expiry of a paced request sent at `now`: its round ends kRoundMarginNs before the last
  /// look at most timeout_ms away, so every status of the round is in when the thread looks and
  /// its consumers are asked again together; a request sent while a round has a look's time
  /// left joins it (consumers asked at different looks end up in one round). timeout_ms when
  /// that would be less than half of it.
  int64_t RoundExpiryNs(int64_t now, int timeout_ms);
  /// Counts the requests that have surely ended as answered, marks the consumers nothing was
  /// heard of as silent, and moves the removed consumers whose requests ended into out.released.
  void Settle(Fetched& out);
  /// A message or a status of consumer `m` came: not silent.
  static void Heard(Member& m);
  Member* ByConsumer(std::string_view durable);
  /// NAKs `messages` (the server sends them again at once) and clears it.
  void HandBack(std::vector<Message>& messages);

  Connection& conn_;
  const std::string stream_;
  const std::string inbox_;
  std::unique_ptr<SyncSubscription> sub_;  // <inbox>.*
  std::map<uint32_t, Member> members_;     // Fetch's thread only
  int64_t requests_until_ns_ = 0;          // steady: every request sent has expired by then
  int64_t pace_ns_ = 0;                    // the current Fetch's linger
  int64_t next_paced_ns_ = 0;              // steady: the caught-up consumers' next requests
  int64_t last_round_ns_ = 0;              // steady: when the last paced requests went out
  int64_t round_ends_ns_ = 0;              // steady: when the paced requests' round expires
  uint64_t waits_ = 0;
  std::mutex commands_mu_;
  std::condition_variable commanded_cv_;  // Fetch sleeps here (Doze, or without consumers)
  std::vector<Command> commands_;
  std::atomic<bool> commanded_{false};
  std::atomic<size_t> size_{0};
};

/// One durable pull consumer read on the caller's thread: a PullSet of one.
class PullConsumer {
 public:
  /// `connection` must outlive the consumer and every message it returned.
  PullConsumer(Connection& connection, const std::string& stream, const std::string& durable);

  /// Up to `batch` messages, waiting at most timeout_ms for the first (PullSet::Fetch); empty
  /// when none arrived in time. Without `ahead`, a request goes out only when none is
  /// outstanding.
  std::vector<std::shared_ptr<JsMessage>> Fetch(int batch, int timeout_ms, bool ahead = false);
  /// No more Fetch: what was fetched ahead goes back to the server at once (NAK); waits for the
  /// end of the requests still outstanding, at most 2 s.
  void Release();

  static constexpr int kLingerMs = PullSet::kLingerMs;

 private:
  PullSet set_;
  PullSet::Fetched fetched_;
  bool released_ = false;
};

/// Where a StreamReader starts: at a stream sequence, or at the first message stored at or after
/// a time; neither: at the stream's first message.
struct StreamStart {
  uint64_t sequence = 0;
  int64_t time_ns = 0;  // ns since the Unix epoch
};

/// Reads a stream in order from a start on, through an ordered consumer: ephemeral, in the
/// server's memory, acknowledging nothing, deleted when the reader goes (and by the server once
/// it is idle, should the reader die); should a message go missing on the way, nats.c recreates
/// it from the next sequence. The stream and its durable consumers are left as they are.
class StreamReader {
 public:
  ~StreamReader();
  StreamReader(const StreamReader&) = delete;
  StreamReader& operator=(const StreamReader&) = delete;

  /// The messages matching the filter from the start on, as the server counted them just before
  /// the reader was created (later ones are not counted).
  uint64_t total() const { return total_; }
  /// The next message (its stream_sequence, stored_ns and pending say where it stands), waiting
  /// at most timeout_ms; nullptr when none came. Throws Error when the subscription failed.
  std::unique_ptr<JsMessage> Next(int timeout_ms);

 private:
  friend class JetStream;
  StreamReader(Connection& connection, __natsSubscription* sub, uint64_t total);
  /// Reads past the messages stored before `time_ns` (the consumer started at the second
  /// before it, see SetStart), taking them off the total; keeps the first one after.
  void SkipStoredBefore(int64_t time_ns, const std::string& what);

  Connection& conn_;
  __natsSubscription* sub_;
  std::unique_ptr<SyncSubscription> owner_;  // unsubscribes (deleting the consumer), frees sub_
  uint64_t total_ = 0;
  std::unique_ptr<JsMessage> next_;  // read by SkipStoredBefore, not returned yet
};

struct KvEntry {
  std::string key;
  std::string value;
  uint64_t revision = 0;
  bool deleted = false;
};

/// The outcome of an asynchronous compare-and-set write.
struct KvWriteResult {
  bool ok = false;
  bool conflict = false;  // the key's revision was not the expected one
  uint64_t revision = 0;  // the new revision when ok
  std::string error;
};

class KvWatcher {
 public:
  explicit KvWatcher(__kvWatcher* w) : w_(w) {}
  ~KvWatcher();
  KvWatcher(const KvWatcher&) = delete;
  KvWatcher& operator=(const KvWatcher&) = delete;

  enum class Event { kEntry, kInitialDone, kTimeout };
  /// The next update. kInitialDone once, after the values present at the start.
  Event Next(int timeout_ms, KvEntry& entry);
  /// Wakes a blocked Next(); later calls fail.
  void Stop();

 private:
  __kvWatcher* w_;
};

class KeyValue {
 public:
  /// Takes ownership of `kv`. Writes go out on `connection` (which must outlive this) with
  /// their acknowledgements gathered by one subscription of this bucket's own.
  KeyValue(Connection& connection, __kvStore* kv, std::string bucket);
  ~KeyValue();
  KeyValue(const KeyValue&) = delete;
  KeyValue& operator=(const KeyValue&) = delete;

  const std::string& bucket() const { return bucket_; }
  /// The key's value as the stream's leader stores it; nullopt when it has none or it was
  /// deleted. Not a direct get: on a cluster any replica answers one from its own copy, which
  /// may be behind (a node catching up after a restart).
  std::optional<KvEntry> Get(const std::string& key);
  /// The key's last entry as the stream's leader stores it, a delete marker too (`deleted`, its
  /// revision set): what a compare-and-set after a delete expects. nullopt when it has none.
  std::optional<KvEntry> Last(const std::string& key);
  /// Stores `value` unconditionally; returns the new revision.
  uint64_t Put(const std::string& key, std::string_view value);
  /// Leaves a delete marker for the key.
  void Delete(const std::string& key);
  /// Leaves a delete marker for the key if its current revision is `revision`; false when it is
  /// not (another writer wrote or deleted the key since), throws on other errors. Of several
  /// callers that read the same revision, one deletes it.
  bool DeleteIf(const std::string& key, uint64_t revision);
  /// Stores `value` if the key's current revision is `revision` (0: the key has no entry, not
  /// even a delete marker), and waits for it; returns its new revision, nullopt when the key was
  /// not at `revision`, throws on other errors. Of several callers that read the same revision,
  /// one stores its value.
  std::optional<uint64_t> PutIf(const std::string& key, std::string_view value, uint64_t revision);
  /// Writes `value` if the key's current revision is `expected_revision` (0: the key must not
  /// exist), without waiting; `done` runs once, on a nats.c thread when the server answered, or
  /// with an error once the write waited longer than write_timeout_ms (see ExpireWrites). A write
  /// answered by a timeout may still have been stored: the next compare-and-set then conflicts.
  /// At most one write per key should be in flight.
  void UpdateAsync(const std::string& key, std::string_view value, uint64_t expected_revision,
                   std::function<void(const KvWriteResult&)> done);
  /// Writes `value` whatever the key's revision, without waiting; `done` as for UpdateAsync.
  void PutAsync(const std::string& key, std::string_view value,
                std::function<void(const KvWriteResult&)> done);
  /// Answers the writes older than write_timeout_ms with a timeout error. Their acknowledgement
  /// may never come: a connection lost after the write left loses the answer, not the write.
  void ExpireWrites();
  /// Waits until every asynchronous write was answered and its callback returned (expiring old
  /// ones), at most timeout_ms.
  bool WaitForWrites(int timeout_ms);
  std::unique_ptr<KvWatcher> WatchAll();
  /// Watches the keys matching `keys` (a key or a pattern with * and >).
  std::unique_ptr<KvWatcher> Watch(const std::string& keys);
  /// Hands `visit` every key matching `keys` (empty: all) that has a value, as the bucket holds
  /// them now: a watch read to the end of its initial values, never a key listing. The watch's
  /// consumer reads the copy of whichever replica the server placed it on: what it read is
  /// handed on only once the stream's leader stores nothing newer for these keys, else it is
  /// read again (a replica catching up with the leader); returns how many times it was. Throws
  /// std::runtime_error when that takes longer than `timeout_ms`, nats::Error when the watch
  /// cannot be made or the leader does not answer.
  int ReadCurrent(const std::string& keys, int64_t timeout_ms,
                  const std::function<void(KvEntry&)>& visit);
  /// The outcome of a JetStream publish acknowledgement (the JSON the stream answers with).
  static KvWriteResult ParseAck(std::string_view json);
  /// How long an asynchronous write waits for its acknowledgement (default 5000 ms).
  void set_write_timeout_ms(int64_t ms) { write_timeout_ms_ = ms; }

 private:
  struct PendingWrite {
    std::function<void(const KvWriteResult&)> done;
    int64_t deadline_ns;
  };
  /// DeleteIf and PutIf: publishes `value` with `headers` if the key is at `revision`; the new
  /// revision, nullopt when it was not.
  std::optional<uint64_t> PublishIf(const std::string& key, std::string_view value,
                                    uint64_t revision,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    const std::string& what);
  void OnReply(Message&& reply);
  void Answer(uint64_t id, const KvWriteResult& result);
  /// UpdateAsync with `expected_revision`, PutAsync without (nullptr).
  void WriteAsync(const std::string& key, std::string_view value, const uint64_t* expected_revision,
                  std::function<void(const KvWriteResult&)> done);

  Connection& conn_;
  __kvStore* kv_;
  __jsCtx* js_ = nullptr;  // for Get
  std::string bucket_;
  std::string stream_;          // KV_<bucket>
  std::string subject_prefix_;  // $KV.<bucket>.
  std::string reply_prefix_;    // <inbox>.
  std::atomic<int64_t> write_timeout_ms_{5000};
  std::mutex mu_;
  std::condition_variable answered_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, PendingWrite> pending_;
  int answering_ = 0;  // callbacks running now (WaitForWrites waits for them too)
  std::unique_ptr<Subscription> replies_;  // last member: unsubscribed before the rest goes
};

struct BucketOptions {
  std::string name = "telemetry";
  int history = 1;
  int64_t ttl_ms = 0;
  std::string storage = "file";
  int replicas = 1;
};

/// What a read-only look at a stream tells.
struct StreamSummary {
  std::vector<std::string> subjects;
  std::optional<SubjectTransform> transform;  // never set by a server older than 2.10
  int replicas = 1;
  std::string leader;        // on a cluster: the server that leads it (empty while none does)
  int current_replicas = 1;  // on a cluster: replicas up to date, the leader's included
  std::vector<std::string> behind;  // on a cluster: the servers whose replica is not current
  uint64_t messages = 0;
  uint64_t bytes = 0;
  uint64_t consumers = 0;
  std::vector<StreamSource> sources;             // configured
  std::vector<StreamSourceState> source_states;  // reported (stream info only)
};

class JetStream {
 public:
  explicit JetStream(Connection& connection);
  ~JetStream();
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;

  /// Creates the stream when it does not exist; an existing stream is left as it is. Returns
  /// the stream as the server holds it (a server older than 2.10 ignores a subject transform:
  /// see TransformsSubjects).
  StreamSummary EnsureStream(const StreamOptions& options);
  /// Adds to an existing stream the sources of `sources` it lacks (a stream update keeping the
  /// rest of its configuration); returns the stream as the server holds it then. Throws Error
  /// when it does not exist or the server refuses the update (a server older than 2.10 refuses
  /// sources with subject transforms).
  StreamSummary AddSources(const std::string& name, const std::vector<StreamSource>& sources);
  /// Whether the server stores messages under a stream's subject transform (nats-server 2.10 or
  /// later): creates a stream of its own, kTransformProbeStream (in memory, on a subject nobody
  /// publishes to), reads the transform back from the server's answer and deletes it. Throws
  /// Error when the server refuses to create or delete it (permissions).
  bool TransformsSubjects();
  static constexpr const char* kTransformProbeStream = "FLEETFLOW_TRANSFORM_PROBE";
  /// Creates the durable pull consumer when missing (never deletes it: its position in the
  /// stream outlives every worker); throws when a push consumer has that name.
  void EnsureConsumer(const ConsumerOptions& options);
  /// EnsureConsumer, then a PullConsumer on it; every worker that binds the same durable shares
  /// its messages.
  std::unique_ptr<PullConsumer> PullSubscribe(const ConsumerOptions& options);
  /// Opens the bucket, creating it when missing.
  std::unique_ptr<KeyValue> EnsureBucket(const BucketOptions& options);
  /// Opens a bucket that exists; throws Error when it does not.
  std::unique_ptr<KeyValue> OpenBucket(const std::string& name);
  /// Publishes to a subject some stream captures and waits for the stream's acknowledgement;
  /// returns the stream sequence. Throws Error when no stream took it within timeout_ms.
  uint64_t Publish(std::string_view subject, const void* data, size_t size, const Headers& headers,
                   int timeout_ms);
  /// Read-only: the stream's subjects, transform and size; nullopt when it does not exist.
  /// Throws Error otherwise (no answer within timeout_ms: JetStream off, no permission for the
  /// JetStream API, or on a cluster a stream electing its leader).
  std::optional<StreamSummary> FindStream(const std::string& name, int timeout_ms = 5000);
  /// Read-only: whether the durable consumer exists. Throws Error as FindStream.
  bool HasConsumer(const std::string& stream, const std::string& durable);
  /// Reads `stream` from `start` on, only the subjects matching `subject` (one of the stream's
  /// subjects or a subset of them). Throws Error when the stream is missing or refuses the
  /// consumer.
  std::unique_ptr<StreamReader> ReadStream(const std::string& stream, const std::string& subject,
                                           const StreamStart& start);
  /// Where a durable consumer stands, from one consumer info request.
  struct ConsumerProgress {
    uint64_t pending = 0;      // messages not yet delivered
    uint64_t ack_pending = 0;  // delivered, not yet acknowledged
    uint64_t delivered = 0;    // the stream sequence of the last message delivered (0: none)
    uint64_t deliveries = 0;   // the consumer sequence of the last delivery (0: none)
  };
  ConsumerProgress Progress(const std::string& stream, const std::string& durable);
  /// Messages not yet delivered plus delivered but unacknowledged, of a durable consumer.
  std::pair<uint64_t, uint64_t> ConsumerPending(const std::string& stream,
                                                const std::string& durable);
  /// The stream sequence of the last message a durable consumer delivered (0: none yet).
  uint64_t ConsumerDelivered(const std::string& stream, const std::string& durable);
  /// A message a stream stores, as LastStored() finds it.
  struct Stored {
    uint64_t sequence = 0;  // 0: none
    int64_t time_ns = 0;    // when the stream stored it (wall clock)
  };
  /// The last message `stream` stores on `subject` (wildcards allowed), as the stream's leader
  /// knows it; sequence 0 when it stores none. A consumer led by a node whose copy
  /// of the stream is behind (restarted after a crash, catching up) reports nothing pending and
  /// delivers nothing: this is how to tell. Waits `timeout_ms` at most for the answer (a stream
  /// without a leader answers nobody).
  Stored LastStored(const std::string& stream, const std::string& subject, int timeout_ms);
  /// The sequence of the first message on `subject` (wildcards allowed) at or after `from`
  /// that `stream` stores, as its leader knows it; nullopt when there is none. What a reader
  /// placed on a replica (ReadStream) did not find may still be there: this tells.
  std::optional<uint64_t> NextStored(const std::string& stream, const std::string& subject,
                                     uint64_t from);
  /// The message `stream` stores at `sequence`, as its leader answers (no consumer made): a
  /// JsMessage with its subject, data, stream_sequence and stored_ns, delivered once, nothing to
  /// acknowledge. nullptr when the stream stores none there (deleted, expired, or past its end).
  /// Waits `timeout_ms` at most for the answer.
  std::unique_ptr<JsMessage> GetStored(const std::string& stream, uint64_t sequence,
                                       int timeout_ms);

 private:
  Connection& conn_;
  __jsCtx* js_ = nullptr;
};

}  // namespace fleetflow::nats

#include "jetstream.hpp"

#include <nats/nats.h>
#include <oneapi/tbb/scalable_allocator.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <iterator>
#include <optional>
#include <thread>

#include "nats_status.hpp"

namespace fleetflow::nats {

using detail::Check;
using detail::Throw;

namespace {

constexpr const char* kExpectedLastSubjectSeq = "Nats-Expected-Last-Subject-Sequence";

/// " (JetStream error N)" when the server said why, for an error message.
std::string JsError(jsErrCode err) {
  return err != 0 ? " (JetStream error " + std::to_string(err) + ")" : "";
}

/// The start time nats.c can send: it writes the fraction of a second without its leading zeros
/// (3.4.1: 12:00:00.058 goes out as 12:00:00.58), so a time less than 0.1 s after a whole second
/// would start the consumer up to 0.9 s late. Such a time starts at the whole second instead,
/// and the reader skips what was stored before the time asked (StreamReader::SkipStoredBefore).
int64_t SendableStartTime(int64_t time_ns) {
  const int64_t fraction = ((time_ns % 1'000'000'000) + 1'000'000'000) % 1'000'000'000;
  return fraction != 0 && fraction < 100'000'000 ? time_ns - fraction : time_ns;
}

/// Where a consumer starts reading.
void SetStart(jsConsumerConfig& c, const StreamStart& start) {
  if (start.sequence > 0) {
    c.DeliverPolicy = js_DeliverByStartSequence;
    c.OptStartSeq = start.sequence;
  } else if (start.time_ns != 0) {
    c.DeliverPolicy = js_DeliverByStartTime;
    c.OptStartTime = SendableStartTime(start.time_ns);
  }
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

jsStorageType Storage(const std::string& s) {
  return s == "memory" ? js_MemoryStorage : js_FileStorage;
}

/// Runs a synchronous write to a bucket again while the server answers "no responders", for up
/// to 5 s: a bucket that another client is creating at this moment is found by its name a
/// little before its stream listens to the bucket's subjects. (A failed dead letter, the other
/// synchronous publish, is not retried here: its message simply comes again.)
template <typename Request>
natsStatus RetryWhileNoResponders(Request request) {
  const int64_t give_up = NowNs() + 5'000'000'000;
  auto pause = std::chrono::milliseconds(5);
  natsStatus s = request();
  while (s == NATS_NO_RESPONDERS && NowNs() < give_up) {
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(200));
    s = request();
  }
  return s;
}

/// nats.c's JetStream options with only the wait for an answer set.
jsOptions Waiting(int timeout_ms) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = timeout_ms;
  return o;
}

/// The JetStream API's error codes this wrapper tells apart.
constexpr int kStreamNotFound = 10059;
constexpr int kStoreFailed = 10049;         // "error creating store for stream"
constexpr int kNoPeers = 10005;             // "no suitable peers for placement"
constexpr int kClusterUnavailable = 10008;  // "JetStream system temporarily unavailable"
/// How long a create refused by a cluster that is forming is asked again: nodes started together
/// on a loaded machine may take this long to route to each other and elect their meta leader.
constexpr int64_t kFormingNs = 30'000'000'000;
constexpr int kApiTimeoutMs = 5000;
constexpr int kNoMessageFound = 10037;

/// nats.c 3.4.1 predates subject transforms (nats-server 2.10), so streams are created and read
/// through the JetStream API's JSON here: `$JS.API.STREAM.<verb>` with `request`. Returns the
/// answer; throws Error when none came or the server answered an error other than `tolerated`
/// (an err_code; that answer is returned as it is).
rapidjson::Document StreamApi(Connection& conn, const std::string& verb, const std::string& request,
                              const std::string& what, int tolerated = -1,
                              int timeout_ms = kApiTimeoutMs) {
  Message reply = [&] {
    try {
      return conn.Request("$JS.API.STREAM." + verb, request, timeout_ms);
    } catch (const Error& e) {
      Throw(e.status(), what);
    }
  }();
  rapidjson::Document doc;
  doc.Parse(static_cast<const char*>(reply.data()), reply.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    throw Error("nats: " + what + ": the server's answer is not JSON", NATS_ERR);
  }
  if (const auto e = doc.FindMember("error"); e != doc.MemberEnd() && e->value.IsObject()) {
    const auto code = e->value.FindMember("err_code");
    if (code != e->value.MemberEnd() && code->value.IsInt() && code->value.GetInt() == tolerated) {
      return doc;
    }
    const auto text = e->value.FindMember("description");
    const int api_code =
        code != e->value.MemberEnd() && code->value.IsInt() ? code->value.GetInt() : 0;
    throw Error("nats: " + what + ": " +
                    (text != e->value.MemberEnd() && text->value.IsString()
                         ? std::string(text->value.GetString())
                         : std::string("refused")) +
                    (api_code != 0 ? " (JetStream error " + std::to_string(api_code) + ")" : ""),
                NATS_ERR, api_code);
  }
  return doc;
}

/// The sequence of the message that STREAM.MSG.GET `request` (JSON) finds in `stream`, nullopt
/// when there is none. Answered by the stream's leader: a direct get, or a consumer placed on a
/// replica, reads that replica's copy, which may be behind the leader (a node catching up after
/// a restart answers from it once it is 90 % there).
std::optional<uint64_t> LeaderSequence(Connection& conn, const std::string& stream,
                                       const std::string& request, const std::string& what) {
  const rapidjson::Document doc =
      StreamApi(conn, "MSG.GET." + stream, request, what, kNoMessageFound);
  if (doc.HasMember("error")) return std::nullopt;
  const auto m = doc.FindMember("message");
  if (m == doc.MemberEnd() || !m->value.IsObject() || !m->value.HasMember("seq") ||
      !m->value["seq"].IsUint64()) {
    throw Error("nats: " + what + ": no sequence in the server's answer", NATS_ERR);
  }
  return m->value["seq"].GetUint64();
}

/// A STREAM.MSG.GET request: `fields` of strings, and `seq` when not 0.
std::string MsgGetRequest(std::initializer_list<std::pair<const char*, std::string>> fields,
                          uint64_t seq = 0) {
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  if (seq != 0) {
    w.Key("seq");
    w.Uint64(seq);
  }
  for (const auto& [key, value] : fields) {
    w.Key(key);
    w.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
  }
  w.EndObject();
  return out.GetString();
}

/// One source of a stream's configuration, as JSON.
std::string SourceConfig(const StreamSource& source) {
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("name");
  w.String(source.name.c_str());
  if (!source.api_prefix.empty()) {
    w.Key("external");
    w.StartObject();
    w.Key("api");
    w.String(source.api_prefix.c_str());
    w.Key("deliver");
    w.String("");
    w.EndObject();
  }
  if (source.transform) {
    w.Key("subject_transforms");
    w.StartArray();
    w.StartObject();
    w.Key("src");
    w.String(source.transform->source.c_str());
    w.Key("dest");
    w.String(source.transform->destination.c_str());
    w.EndObject();
    w.EndArray();
  }
  w.EndObject();
  return out.GetString();
}

/// A stream's configuration as the server takes it (it fills in the rest).
std::string StreamConfig(const StreamOptions& o) {
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("name");
  w.String(o.name.c_str());
  w.Key("subjects");
  w.StartArray();
  for (const auto& subject : o.subjects) w.String(subject.c_str());
  w.EndArray();
  w.Key("retention");  // the server's names: limits, interest, workqueue
  w.String(o.retention.c_str());
  w.Key("max_age");
  w.Int64(o.max_age_ms * 1'000'000);
  w.Key("storage");  // file, memory
  w.String(o.storage.c_str());
  w.Key("num_replicas");
  w.Int(o.replicas);
  if (o.duplicate_window_ms > 0) {
    w.Key("duplicate_window");
    w.Int64(o.duplicate_window_ms * 1'000'000);
  }
  if (o.transform) {
    w.Key("subject_transform");
    w.StartObject();
    w.Key("src");
    w.String(o.transform->source.c_str());
    w.Key("dest");
    w.String(o.transform->destination.c_str());
    w.EndObject();
  }
  if (!o.sources.empty()) {
    w.Key("sources");
    w.StartArray();
    for (const auto& source : o.sources) {
      const std::string json = SourceConfig(source);
      w.RawValue(json.c_str(), json.size(), rapidjson::kObjectType);
    }
    w.EndArray();
  }
  w.EndObject();
  return out.GetString();
}

std::string StringAt(const rapidjson::Value& object, const char* key) {
  const auto m = object.FindMember(key);
  return m != object.MemberEnd() && m->value.IsString() ? m->value.GetString() : "";
}

uint64_t NumberAt(const rapidjson::Value& object, const char* key) {
  const auto m = object.FindMember(key);
  return m != object.MemberEnd() && m->value.IsUint64() ? m->value.GetUint64() : 0;
}

/// A stream info or create answer: {"config": {...}, "state": {...}}.
int64_t IntegerAt(const rapidjson::Value& object, const char* key, int64_t otherwise) {
  const auto m = object.FindMember(key);
  return m != object.MemberEnd() && m->value.IsInt64() ? m->value.GetInt64() : otherwise;
}

/// "external": {"api": ...} of a source (configured or reported).
std::string ApiPrefixOf(const rapidjson::Value& source) {
  const auto e = source.FindMember("external");
  return e != source.MemberEnd() && e->value.IsObject() ? StringAt(e->value, "api") : "";
}

StreamSource SourceOf(const rapidjson::Value& v) {
  StreamSource out{StringAt(v, "name"), ApiPrefixOf(v)};
  if (const auto t = v.FindMember("subject_transforms");
      t != v.MemberEnd() && t->value.IsArray() && !t->value.Empty() && t->value[0].IsObject()) {
    out.transform = SubjectTransform{StringAt(t->value[0], "src"), StringAt(t->value[0], "dest")};
  }
  return out;
}

StreamSummary StreamOf(const rapidjson::Value& answer) {
  StreamSummary out;
  static const rapidjson::Value kEmpty(rapidjson::kObjectType);
  const auto config = answer.FindMember("config");
  const rapidjson::Value& c =
      config != answer.MemberEnd() && config->value.IsObject() ? config->value : kEmpty;
  if (const auto subjects = c.FindMember("subjects");
      subjects != c.MemberEnd() && subjects->value.IsArray()) {
    for (const auto& subject : subjects->value.GetArray()) {
      if (subject.IsString()) out.subjects.emplace_back(subject.GetString());
    }
  }
  if (const auto r = c.FindMember("num_replicas"); r != c.MemberEnd() && r->value.IsInt()) {
    out.replicas = r->value.GetInt();
  }
  if (const auto t = c.FindMember("subject_transform");
      t != c.MemberEnd() && t->value.IsObject() && !StringAt(t->value, "dest").empty()) {
    out.transform = SubjectTransform{StringAt(t->value, "src"), StringAt(t->value, "dest")};
  }
  if (const auto sources = c.FindMember("sources");
      sources != c.MemberEnd() && sources->value.IsArray()) {
    for (const auto& v : sources->value.GetArray()) {
      if (v.IsObject()) out.sources.push_back(SourceOf(v));
    }
  }
  if (const auto sources = answer.FindMember("sources");
      sources != answer.MemberEnd() && sources->value.IsArray()) {
    for (const auto& v : sources->value.GetArray()) {
      if (!v.IsObject()) continue;
      StreamSourceState state{StringAt(v, "name"), ApiPrefixOf(v), NumberAt(v, "lag"),
                              IntegerAt(v, "active", -1), ""};
      if (const auto e = v.FindMember("error"); e != v.MemberEnd() && e->value.IsObject()) {
        state.error = StringAt(e->value, "description");
        if (state.error.empty()) state.error = "error";
      }
      out.source_states.push_back(std::move(state));
    }
  }
  out.current_replicas = out.replicas;
  if (const auto cluster = answer.FindMember("cluster");
      cluster != answer.MemberEnd() && cluster->value.IsObject()) {
    out.leader = StringAt(cluster->value, "leader");
    out.current_replicas = out.leader.empty() ? 0 : 1;
    if (const auto peers = cluster->value.FindMember("replicas");
        peers != cluster->value.MemberEnd() && peers->value.IsArray()) {
      for (const auto& peer : peers->value.GetArray()) {
        if (!peer.IsObject()) continue;
        const auto current = peer.FindMember("current");
        if (current != peer.MemberEnd() && current->value.IsTrue()) {
          ++out.current_replicas;
        } else {
          out.behind.push_back(StringAt(peer, "name"));
        }
      }
    }
  }
  if (const auto state = answer.FindMember("state");
      state != answer.MemberEnd() && state->value.IsObject()) {
    out.messages = NumberAt(state->value, "messages");
    out.bytes = NumberAt(state->value, "bytes");
    out.consumers = NumberAt(state->value, "consumer_count");
  }
  return out;
}

}  // namespace

// --- JsMessage ---

JsMessage::JsMessage(Connection& connection, Message message)
    : conn_(connection), msg_(std::move(message)), reply_(AckReply::Parse(msg_.reply())) {}

JsMessage::JsMessage(Connection& connection, Message message, const AckReply& reply)
    : conn_(connection), msg_(std::move(message)), reply_(reply) {}

JsMessage::AckReply JsMessage::AckReply::Parse(std::string_view reply) {
  // Where the first 11 tokens start: the consumer is token 3 (9 tokens) or 5 (12 or more), the
  // numbers tokens 4 to 8 or 6 to 10. A number is read up to the next '.', as from_chars stops
  // there.
  constexpr size_t kKept = 11;
  std::array<size_t, kKept> start{};
  size_t tokens = 1;
  for (size_t i = 0; i < reply.size(); ++i) {
    if (reply[i] != '.') continue;
    if (tokens < kKept) start[tokens] = i + 1;
    ++tokens;
  }
  AckReply n;
  const size_t first = tokens >= 12 ? 6 : 4;
  if (first < tokens)
    n.consumer = reply.substr(start[first - 1], start[first] - 1 - start[first - 1]);
  const auto number = [&](size_t at, auto& out) {
    if (at < tokens) std::from_chars(reply.data() + start[at], reply.data() + reply.size(), out);
  };
  number(first, n.delivered);
  number(first + 1, n.stream_sequence);
  number(first + 2, n.consumer_sequence);
  number(first + 3, n.stored_ns);
  number(first + 4, n.pending);
  return n;
}

// A failed answer is not an error of ours: the server redelivers after ack_wait.
void JsMessage::Answer(std::string_view body) {
  const std::string_view reply = msg_.reply();
  if (reply.empty()) return;
  try {
    conn_.Publish(reply, body.data(), body.size());
  } catch (const Error&) {
  }
}

// Like JsMessage::Answer: a failed acknowledgement means a redelivery, not an error.
void DeferredAck::operator()() const {
  if (reply_.empty()) return;
  try {
    conn_->Publish(reply_, "+ACK");
  } catch (const Error&) {
  }
}

void JsMessage::Ack() {
  if (!done_.exchange(true)) Answer("+ACK");
}
void JsMessage::Nak(int64_t delay_ms) {
  if (done_.exchange(true)) return;
  Answer(delay_ms > 0 ? "-NAK {\"delay\":" + std::to_string(delay_ms * 1'000'000) + "}" : "-NAK");
}
void JsMessage::Term() {
  if (!done_.exchange(true)) Answer("+TERM");
}

// --- PullSet ---

namespace {

/// Freed on another thread (the graph's): oneTBB's allocator serves that pattern far better than
/// glibc's (docs/BENCHMARKS.md §2); sanitizer builds keep the standard one, which they check.
std::shared_ptr<JsMessage> MakeMessage(Connection& connection, Message&& message,
                                       const JsMessage::AckReply& reply) {
#if FF_SANITIZED
  return std::make_shared<JsMessage>(connection, std::move(message), reply);
#else
  return std::allocate_shared<JsMessage>(tbb::scalable_allocator<JsMessage>(), connection,
                                         std::move(message), reply);
#endif
}

}  // namespace

PullSet::PullSet(Connection& connection, std::string stream)
    : conn_(connection),
      stream_(std::move(stream)),
      inbox_(Connection::NewInbox()),
      sub_(conn_.SubscribeSync(inbox_ + ".*")) {}

PullSet::~PullSet() {
  // What is held and queued goes back, and so does what comes until the last request has
  // expired at the server: handed back while a request of this set is open, a message would be
  // sent on it again, and what comes once the subscription is gone would only come back after
  // its ack wait, behind what followed it.
  // As for a removed consumer, 2 s at most.
  const int64_t until_ns = std::min(requests_until_ns_, NowNs() + kReleaseNs);
  std::vector<Message> back;
  for (auto& [id, m] : members_) std::move(m.held.begin(), m.held.end(), std::back_inserter(back));
  bool no_responders = false;
  for (;;) {
    const int64_t left_ms = (until_ns - NowNs()) / 1'000'000;
    auto m = sub_->Next(static_cast<int>(std::max<int64_t>(left_ms, 0)), no_responders);
    if (m && m->reply().starts_with("$JS.ACK.")) back.push_back(std::move(*m));
    if (!m && left_ms <= 0) break;
  }
  HandBack(back);
}

void PullSet::HandBack(std::vector<Message>& messages) {
  for (Message& m : messages) JsMessage(conn_, std::move(m)).Nak();
  messages.clear();
}

void PullSet::Add(uint32_t id, const std::string& durable) {
  {
    std::lock_guard lock(commands_mu_);
    commands_.push_back({true, id, durable});
    ++size_;
    commanded_ = true;
  }
  commanded_cv_.notify_one();
}

void PullSet::Remove(uint32_t id) {
  {
    std::lock_guard lock(commands_mu_);
    commands_.push_back({false, id, {}});
    commanded_ = true;
  }
  commanded_cv_.notify_one();
}

void PullSet::Interrupt() {
  {
    std::lock_guard lock(commands_mu_);
    commanded_ = true;
  }
  commanded_cv_.notify_one();
}

size_t PullSet::size() const { return size_.load(); }

uint64_t PullSet::Asked(uint32_t id) const {
  const auto it = members_.find(id);
  return it == members_.end() ? 0 : it->second.asked;
}

bool PullSet::Answered(uint32_t id, uint64_t asked) const {
  const auto it = members_.find(id);
  return it == members_.end() || it->second.answered >= asked;
}

bool PullSet::Silent() const {
  return std::any_of(members_.begin(), members_.end(),
                     [](const auto& m) { return !m.second.removing && m.second.silent; });
}

bool PullSet::ApplyCommands(Fetched& out) {
  if (!commanded_.exchange(false)) return false;
  std::vector<Command> commands;
  {
    std::lock_guard lock(commands_mu_);
    commands.swap(commands_);
  }
  for (Command& c : commands) {
    auto it = members_.find(c.id);
    if (c.add) {
      if (it != members_.end()) {
        if (!it->second.removing) {
          --size_;  // added twice: one consumer
          continue;
        }
        HandBack(it->second.held);
        out.released.push_back(c.id);  // its removal is over: it is added anew
        --size_;
      }
      Member& m = members_[c.id];
      m = Member{};
      m.id = c.id;
      m.durable = std::move(c.durable);
      m.request_subject = "$JS.API.CONSUMER.MSG.NEXT." + stream_ + "." + m.durable;
      m.reply = inbox_ + "." + std::to_string(c.id);
      out.added.push_back(c.id);
      continue;
    }
    if (it == members_.end() || it->second.removing) continue;
    it->second.removing = true;
    // Its requests end with their last message or their expiry status; 2 s at most.
    it->second.release_until_ns = std::min(it->second.outstanding_until_ns, NowNs() + kReleaseNs);
  }
  return true;
}

PullSet::Member* PullSet::ByConsumer(std::string_view durable) {
  for (auto& [id, m] : members_) {
    if (m.durable == durable) return &m;
  }
  return nullptr;
}

bool PullSet::Receive(int wait_ms, Fetched& out) {
  bool no_responders = false;
  std::optional<Message> msg = sub_->Next(wait_ms, no_responders);
  if (no_responders) {
    for (auto& [id, m] : members_) m.silent = true;
    return true;
  }
  if (!msg) return false;
  const std::string_view subject = msg->subject();
  if (msg->reply().starts_with("$JS.ACK.")) {
    const JsMessage::AckReply reply = JsMessage::AckReply::Parse(msg->reply());
    Member* m = ByConsumer(reply.consumer);
    // Every message asked for came: the consumer may have more (a backlog).
    if (m != nullptr && Outstanding(*m) > 0 && ++m->answered == m->asked) m->caught_up = false;
    if (m != nullptr) {
      Heard(*m);
      // Delivering, the server may end the request at its expiry without a status (nats-server
      // before 2.9.20 drops the rest of its batch unannounced): not waited for long after that.
      m->outstanding_until_ns = std::min(m->outstanding_until_ns, m->expires_ns + kStatusGraceNs);
    }
    if (m == nullptr) {
      JsMessage(conn_, std::move(*msg)).Nak();  // not ours any more: back to the stream at once
      return true;
    }
    if (m->removing) {
      m->held.push_back(std::move(*msg));  // handed back once its requests have ended
      return true;
    }
    m->delivered = true;
    out.messages.emplace_back(m->id, MakeMessage(conn_, std::move(*msg), reply));
    return true;
  }
  // A status on <inbox>.<id>: 404, 408 or 409 ends a request (no messages, expired, or refused)
  // with this many of its messages not sent; without the count, none of its consumer's
  // requests is counted on.
  if (!subject.starts_with(inbox_) || subject.size() <= inbox_.size() + 1) return true;
  uint32_t id = 0;
  const std::string_view token = subject.substr(inbox_.size() + 1);
  if (std::from_chars(token.data(), token.data() + token.size(), id).ec != std::errc()) return true;
  auto it = members_.find(id);
  if (it == members_.end()) return true;
  if (const std::string status = msg->header("Status");
      status == "404" || status == "408" || status == "409") {
    const std::string left = msg->header("Nats-Pending-Messages");
    size_t n = 0;
    const bool known = !left.empty() &&
                       std::from_chars(left.data(), left.data() + left.size(), n).ec == std::errc();
    Member& m = it->second;
    m.answered = known ? m.answered + std::min<uint64_t>(Outstanding(m), n) : m.asked;
    m.caught_up = true;
    m.refused = status == "409";
    Heard(m);
  }
  return true;  // a heartbeat or anything else: not a message for the caller
}

void PullSet::Request(Member& m, int batch, int64_t expiry_ns, bool no_wait) {
  // no_wait with expires (nats-server 2.9): waits up to expires for the first message, and
  // ends (408) once the consumer has nothing more to send.
  const std::string request = "{\"batch\":" + std::to_string(batch) +
                              ",\"expires\":" + std::to_string(expiry_ns) +
                              (no_wait ? ",\"no_wait\":true}" : "}");
  conn_.PublishRequest(m.request_subject, m.reply, request);
  const int64_t now = NowNs();
  m.asked += static_cast<uint64_t>(batch);
  requests_until_ns_ = std::max(requests_until_ns_, now + expiry_ns + 100'000'000);
  // A status that never comes (the connection dropped) must not pin the requests for ever.
  m.expires_ns = now + expiry_ns;
  m.outstanding_until_ns = m.expires_ns + 1'000'000'000;
  if (m.silent_after_ns == 0) m.silent_after_ns = m.outstanding_until_ns;
}

void PullSet::Heard(Member& m) {
  m.silent = false;
  m.silent_after_ns = 0;
}

int64_t PullSet::NextLookNs(int64_t now) const {
  const int64_t q = QuietDozeNs();
  return (now / q + 1) * q;
}

int64_t PullSet::RoundExpiryNs(int64_t now, int timeout_ms) {
  const int64_t full_ns = int64_t{timeout_ms} * 1'000'000;
  const int64_t q = QuietDozeNs();
  // Joins the round under way while it has a look's time left: consumers asked at different
  // looks (added later, or a status that came just after a look) end up in one round.
  if (round_ends_ns_ - now >= q && round_ends_ns_ - now <= full_ns) return round_ends_ns_ - now;
  // The last look at most timeout_ms away, less the time the statuses take to come.
  const int64_t ends = (now + full_ns) / q * q - kRoundMarginNs;
  if (ends - now < full_ns / 2) return full_ns;  // an expiry shorter than a look or two
  round_ends_ns_ = ends;
  return ends - now;
}

void PullSet::RequestWhereNone(int batch, int timeout_ms, bool ahead) {
  const int64_t now = NowNs();
  if (ahead && now < next_paced_ns_) return;
  bool sent = false;
  for (auto& [id, m] : members_) {
    if (m.removing || Outstanding(m) > 0) continue;
    Request(m, batch, ahead ? RoundExpiryNs(now, timeout_ms) : int64_t{timeout_ms} * 1'000'000,
            ahead);
    sent = true;
  }
  if (ahead && sent) {
    last_round_ns_ = now;
    next_paced_ns_ = now + pace_ns_;
  }
}

bool PullSet::CaughtUp() const {
  for (const auto& [id, m] : members_) {
    if (!m.removing && (!m.caught_up || m.refused)) return false;
  }
  return true;
}

void PullSet::Doze(int64_t ns) {
  ++waits_;
  std::unique_lock lock(commands_mu_);
  commanded_cv_.wait_for(lock, std::chrono::nanoseconds(std::max<int64_t>(ns, 0)),
                         [this] { return commanded_.load(); });
}

int64_t PullSet::QuietDozeNs() const { return std::max(kQuietDozeNs, 2 * pace_ns_); }

int64_t PullSet::NsUntilPaced(int64_t cap) const {
  for (const auto& [id, m] : members_) {
    if (!m.removing && Outstanding(m) == 0) {
      return std::clamp<int64_t>(next_paced_ns_ - NowNs(), 0, cap);
    }
  }
  return cap;
}

void PullSet::Settle(Fetched& out) {
  const int64_t now = NowNs();
  for (auto it = members_.begin(); it != members_.end();) {
    Member& m = it->second;
    if (Outstanding(m) > 0 && now > m.outstanding_until_ns) m.answered = m.asked;
    if (m.silent_after_ns != 0 && now > m.silent_after_ns) m.silent = true;
    if (m.removing && (Outstanding(m) == 0 || now > m.release_until_ns)) {
      HandBack(m.held);
      out.released.push_back(it->first);
      it = members_.erase(it);
      --size_;
      continue;
    }
    ++it;
  }
}

void PullSet::Fetch(int batch, int timeout_ms, bool ahead, Fetched& out, int linger_ms) {
  out.messages.clear();
  out.added.clear();
  out.released.clear();
  const size_t want = static_cast<size_t>(batch);
  pace_ns_ = int64_t{linger_ms} * 1'000'000;
  const bool commanded = ApplyCommands(out);
  Settle(out);
  for (auto& [id, m] : members_) m.delivered = false;
  const auto drain = [&] {
    while (out.messages.size() < want && Receive(0, out)) {
    }
  };
  drain();  // messages of earlier requests (sent ahead, or given up) come first
  if (members_.empty()) {
    // Nothing to read (no partition owned yet, or all given up): waits for Add or Interrupt,
    // not a busy loop.
    if (!commanded) {
      ++waits_;
      std::unique_lock lock(commands_mu_);
      commanded_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                             [this] { return commanded_.load(); });
    }
    return;
  }
  RequestWhereNone(batch, timeout_ms, ahead);
  // The first message: waited for in slices, so that Add and Remove are taken in at once, and
  // a consumer whose request expired asks again at once. Ahead with every consumer caught up,
  // the answers are not waited for: they wait in the subscription while the thread sleeps until
  // the next round, so it wakes once per round, not for each answer or expiry status. What
  // they bring is gathered from the round that asked for it.
  int64_t gathered_from_ns = 0;
  bool dozed = false;
  const int64_t first_until = NowNs() + int64_t{timeout_ms} * 1'000'000;
  while (out.messages.empty() && !members_.empty() && !commanded_.load()) {
    const int64_t left_ns = first_until - NowNs();
    if (left_ns < 1'000'000) break;
    if (ahead && CaughtUp()) {
      // The looks keep to one grid across calls: a call ends at its last look before
      // timeout_ms, not with a wake-up of its own, and the rounds' requests expire just
      // before a look (RoundExpiryNs).
      const int64_t now = NowNs();
      const int64_t look_ns = NsUntilPaced(NextLookNs(now) - now);
      if (look_ns > left_ns && dozed) break;
      const int64_t round_ns = last_round_ns_;
      Doze(std::min(left_ns, look_ns));
      dozed = true;
      drain();
      gathered_from_ns = round_ns;
    } else {
      const int64_t slice_ms = std::min<int64_t>(
          left_ns / 1'000'000, ahead ? (NsUntilPaced(100'000'000) + 999'999) / 1'000'000 : 100);
      ++waits_;
      if (Receive(static_cast<int>(slice_ms), out)) drain();
      gathered_from_ns = NowNs();
    }
    Settle(out);
    if (!out.messages.empty() || !out.released.empty()) break;
    RequestWhereNone(batch, timeout_ms, ahead);
  }
  // Ahead: a consumer that delivered a whole batch (a backlog) stays at two batches asked for,
  // so the server has the second at hand when it has sent the first, without waiting for the
  // next request; also while the rest of a batch is gathered, so the server never waits for
  // this thread. The caught-up ones are asked again together when the pace allows.
  // Returns true when every consumer that delivered is caught up (only the pace brings more).
  const auto top_up = [&] {
    if (!ahead) return false;
    bool paced_only = true;
    for (auto& [id, m] : members_) {
      if (!m.delivered || m.removing || m.caught_up) continue;
      paced_only = false;
      while (Outstanding(m) < 2 * want) Request(m, batch, int64_t{timeout_ms} * 1'000'000, true);
    }
    RequestWhereNone(batch, timeout_ms, true);
    return paced_only;
  };
  // The rest of the batch: gathered by polling, so a slow stream's messages wake this thread
  // once per poll, not once each. Caught up, a poll comes with the paced requests. With a
  // backlog, a poll comes when the batch should be full at the rate seen since the first poll,
  // kPollMs at most, so the polls never cap what the server can send.
  if (!out.messages.empty()) {
    // Came before any wait: on the last round when caught up.
    if (gathered_from_ns == 0) gathered_from_ns = ahead && CaughtUp() ? last_round_ns_ : NowNs();
    const int64_t full_until = gathered_from_ns + int64_t{linger_ms} * 1'000'000;
    int64_t first_poll_ns = 0;
    size_t first_poll_count = 0;
    for (;;) {
      drain();
      const int64_t now = NowNs();
      const int64_t left_ns = full_until - now;
      if (out.messages.size() >= want || left_ns <= 0 || commanded_.load()) break;
      if (!ahead) {
        // One request at a time: the rest of its batch is waited for, not polled (a poll that
        // sleeps past its end keeps the server waiting for the next request).
        if (!Receive(static_cast<int>((left_ns + 999'999) / 1'000'000), out)) break;
        continue;
      }
      int64_t wait_ns = kFirstPollNs;
      if (top_up()) {
        // Only the next paced requests bring more: polled then (the answers to these requests
        // come meanwhile), or a whole pace later when none went out (all are still asked).
        wait_ns = std::max(next_paced_ns_ > now ? next_paced_ns_ - now : pace_ns_, kMinPollNs);
      } else if (first_poll_ns == 0) {
        first_poll_ns = now;
        first_poll_count = out.messages.size();
      } else {
        wait_ns = int64_t{kPollMs} * 1'000'000;
        if (const size_t came = out.messages.size() - first_poll_count; came > 0) {
          const int64_t fill_ns = (now - first_poll_ns) / static_cast<int64_t>(came) *
                                  static_cast<int64_t>(want - out.messages.size());
          wait_ns = std::clamp(fill_ns, kMinPollNs, wait_ns);
        }
      }
      Doze(std::min(left_ns, wait_ns));
    }
  }
  top_up();
  Settle(out);
}

// --- PullConsumer ---

PullConsumer::PullConsumer(Connection& connection, const std::string& stream,
                           const std::string& durable)
    : set_(connection, stream) {
  set_.Add(0, durable);
}

std::vector<std::shared_ptr<JsMessage>> PullConsumer::Fetch(int batch, int timeout_ms, bool ahead) {
  std::vector<std::shared_ptr<JsMessage>> out;
  if (released_) return out;
  set_.Fetch(batch, timeout_ms, ahead, fetched_);
  out.reserve(fetched_.messages.size());
  for (auto& [id, m] : fetched_.messages) out.push_back(std::move(m));
  return out;
}

void PullConsumer::Release() {
  if (released_) return;
  released_ = true;
  set_.Remove(0);
  // Until its requests ended (2 s at most): what they bring goes back at once.
  while (set_.size() > 0) {
    set_.Fetch(1, 100, false, fetched_);
    for (auto& [id, m] : fetched_.messages) m->Nak();
  }
}

// --- StreamReader ---

StreamReader::StreamReader(Connection& connection, natsSubscription* sub, uint64_t total)
    : conn_(connection),
      sub_(sub),
      owner_(std::make_unique<SyncSubscription>(sub, connection.raw())),
      total_(total) {}

StreamReader::~StreamReader() = default;

void StreamReader::SkipStoredBefore(int64_t time_ns, const std::string& what) {
  // At most the messages of the 0.1 s before the time: they are stored, so they come at once.
  const int64_t give_up = NowNs() + 30'000'000'000;
  while (total_ > 0) {
    auto m = Next(100);
    if (!m) {
      if (NowNs() > give_up) Throw(NATS_TIMEOUT, what + ": messages counted did not come in 30 s");
      continue;
    }
    if (m->stored_ns() >= time_ns) {
      next_ = std::move(m);
      return;
    }
    --total_;
  }
}

std::unique_ptr<JsMessage> StreamReader::Next(int timeout_ms) {
  if (next_) return std::move(next_);
  natsMsg* msg = nullptr;
  const natsStatus s = natsSubscription_NextMsg(&msg, sub_, timeout_ms);
  if (s == NATS_TIMEOUT) return nullptr;
  Check(s, "read stream");
  return std::make_unique<JsMessage>(conn_, Message(msg));
}

// --- KvWatcher ---

KvWatcher::~KvWatcher() {
  kvWatcher_Stop(w_);
  kvWatcher_Destroy(w_);
}

KvWatcher::Event KvWatcher::Next(int timeout_ms, KvEntry& entry) {
  kvEntry* e = nullptr;
  const natsStatus s = kvWatcher_Next(&e, w_, timeout_ms);
  if (s == NATS_TIMEOUT) return Event::kTimeout;
  Check(s, "watch bucket");
  if (e == nullptr) return Event::kInitialDone;
  entry.key = kvEntry_Key(e);
  entry.value.assign(static_cast<const char*>(kvEntry_Value(e)),
                     static_cast<size_t>(kvEntry_ValueLen(e)));
  entry.revision = kvEntry_Revision(e);
  entry.deleted = kvEntry_Operation(e) != kvOp_Put;
  kvEntry_Destroy(e);
  return Event::kEntry;
}

void KvWatcher::Stop() { kvWatcher_Stop(w_); }

// --- KeyValue ---

KeyValue::KeyValue(Connection& connection, kvStore* kv, std::string bucket)
    : conn_(connection),
      kv_(kv),
      bucket_(std::move(bucket)),
      stream_("KV_" + bucket_),
      subject_prefix_("$KV." + bucket_ + "."),
      reply_prefix_(Connection::NewInbox() + ".") {
  try {
    Check(natsConnection_JetStream(&js_, conn_.raw(), nullptr), "JetStream context");
    replies_ = conn_.Subscribe(reply_prefix_ + "*", "",
                               [this](Message&& reply) { OnReply(std::move(reply)); });
  } catch (...) {
    jsCtx_Destroy(js_);
    kvStore_Destroy(kv_);
    throw;
  }
}

KeyValue::~KeyValue() {
  WaitForWrites(2000);
  replies_.reset();  // no OnReply after this
  jsCtx_Destroy(js_);
  kvStore_Destroy(kv_);
}

std::optional<KvEntry> KeyValue::Get(const std::string& key) {
  auto entry = Last(key);
  if (entry && entry->deleted) entry.reset();
  return entry;
}

std::optional<KvEntry> KeyValue::Last(const std::string& key) {
  // Asked of the stream's leader, not with nats.c's direct get (LeaderSequence says why).
  natsMsg* msg = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const std::string subject = subject_prefix_ + key;
  const natsStatus s = js_GetLastMsg(&msg, js_, stream_.c_str(), subject.c_str(), nullptr, &err);
  if (s == NATS_NOT_FOUND && err != JSStreamNotFoundErr) return std::nullopt;
  if (s != NATS_OK) Throw(s, "get " + bucket_ + "/" + key + JsError(err));
  const char* operation = nullptr;
  KvEntry out;
  out.key = key;
  out.deleted = natsMsgHeader_Get(msg, "KV-Operation", &operation) == NATS_OK &&
                operation != nullptr &&
                (std::string_view(operation) == "DEL" || std::string_view(operation) == "PURGE");
  if (!out.deleted) {
    out.value.assign(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
  }
  out.revision = natsMsg_GetSequence(msg);
  natsMsg_Destroy(msg);
  return out;
}

uint64_t KeyValue::Put(const std::string& key, std::string_view value) {
  uint64_t rev = 0;
  Check(RetryWhileNoResponders([&] {
          return kvStore_Put(&rev, kv_, key.c_str(), value.data(), static_cast<int>(value.size()));
        }),
        "put " + bucket_ + "/" + key);
  return rev;
}

void KeyValue::Delete(const std::string& key) {
  Check(RetryWhileNoResponders([&] { return kvStore_Delete(kv_, key.c_str()); }),
        "delete " + bucket_ + "/" + key);
}

bool KeyValue::DeleteIf(const std::string& key, uint64_t revision) {
  return PublishIf(key, {}, revision, {{"KV-Operation", "DEL"}},
                   "delete " + bucket_ + "/" + key + " at revision " + std::to_string(revision))
      .has_value();
}

std::optional<uint64_t> KeyValue::PutIf(const std::string& key, std::string_view value,
                                        uint64_t revision) {
  return PublishIf(key, value, revision, {},
                   "put " + bucket_ + "/" + key + " at revision " + std::to_string(revision));
}

std::optional<uint64_t> KeyValue::PublishIf(
    const std::string& key, std::string_view value, uint64_t revision,
    const std::vector<std::pair<std::string, std::string>>& headers, const std::string& what) {
  const std::string subject = subject_prefix_ + key;
  // Set as a header, not as jsPubOptions' ExpectLastSubjectSeq, which nats.c leaves out at 0.
  auto all = headers;
  all.emplace_back(kExpectedLastSubjectSeq, std::to_string(revision));
  jsErrCode jerr = static_cast<jsErrCode>(0);
  uint64_t stored = 0;
  const natsStatus s = RetryWhileNoResponders([&] {
    natsMsg* msg = detail::NewMessage(subject, nullptr, value.data(), value.size(), all);
    jsPubAck* ack = nullptr;
    const natsStatus st = js_PublishMsg(&ack, js_, msg, nullptr, &jerr);
    if (ack != nullptr) stored = ack->Sequence;
    natsMsg_Destroy(msg);
    jsPubAck_Destroy(ack);
    return st;
  });
  if (s != NATS_OK && jerr == JSStreamWrongLastSequenceErr) return std::nullopt;
  Check(s, what);
  return stored;
}

void KeyValue::UpdateAsync(const std::string& key, std::string_view value,
                           uint64_t expected_revision,
                           std::function<void(const KvWriteResult&)> done) {
  WriteAsync(key, value, &expected_revision, std::move(done));
}

void KeyValue::PutAsync(const std::string& key, std::string_view value,
                        std::function<void(const KvWriteResult&)> done) {
  WriteAsync(key, value, nullptr, std::move(done));
}

void KeyValue::WriteAsync(const std::string& key, std::string_view value,
                          const uint64_t* expected_revision,
                          std::function<void(const KvWriteResult&)> done) {
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = ++next_id_;
    pending_[id] = {std::move(done), NowNs() + write_timeout_ms_.load() * 1'000'000};
  }
  const std::string subject = subject_prefix_ + key;
  const std::string reply = reply_prefix_ + std::to_string(id);
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject.c_str(), reply.c_str(), value.data(),
                                static_cast<int>(value.size()));
  if (s == NATS_OK && expected_revision != nullptr) {
    s = natsMsgHeader_Set(msg, kExpectedLastSubjectSeq, std::to_string(*expected_revision).c_str());
  }
  if (s == NATS_OK) s = natsConnection_PublishMsg(conn_.raw(), msg);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) {
    KvWriteResult r;
    r.error = natsStatus_GetText(s);
    Answer(id, r);
  }
}

// A JetStream publish acknowledgement: {"stream":"KV_b","seq":12} or
// {"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 11"}, ...}.
KvWriteResult KeyValue::ParseAck(std::string_view json) {
  const auto number_after = [&](std::string_view field) -> std::optional<uint64_t> {
    const size_t at = json.find(field);
    if (at == std::string_view::npos) return std::nullopt;
    size_t i = at + field.size();
    while (i < json.size() && json[i] == ' ') ++i;
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(json.data() + i, json.data() + json.size(), n);
    if (ec != std::errc() || end == json.data() + i) return std::nullopt;
    return n;
  };
  KvWriteResult r;
  if (json.find("\"error\"") != std::string_view::npos) {
    const auto code = number_after("\"err_code\":");
    r.conflict = code && *code == static_cast<uint64_t>(JSStreamWrongLastSequenceErr);
    const size_t d = json.find("\"description\":\"");
    r.error = d == std::string_view::npos
                  ? std::string(json)
                  : std::string(json.substr(d + 15, json.find('"', d + 15) - (d + 15)));
  } else if (const auto seq = number_after("\"seq\":"); seq && *seq > 0) {
    r.ok = true;
    r.revision = *seq;
  } else {
    r.error = "unexpected acknowledgement: " + std::string(json.substr(0, 200));
  }
  return r;
}

void KeyValue::OnReply(Message&& reply) {
  uint64_t id = 0;
  const std::string_view subject = reply.subject();
  const std::string_view token = subject.substr(std::min(subject.size(), reply_prefix_.size()));
  if (std::from_chars(token.data(), token.data() + token.size(), id).ec != std::errc()) return;
  KvWriteResult r;
  if (reply.no_responders()) {
    r.error = "no stream answered (is the bucket's stream available?)";
  } else {
    r = ParseAck({static_cast<const char*>(reply.data()), reply.size()});
  }
  Answer(id, r);
}

void KeyValue::Answer(uint64_t id, const KvWriteResult& r) {
  std::function<void(const KvWriteResult&)> done;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // answered already (expired, or a duplicate reply)
    done = std::move(it->second.done);
    pending_.erase(it);
    ++answering_;
  }
  if (done) done(r);
  {
    std::lock_guard lock(mu_);
    --answering_;
  }
  answered_.notify_all();
}

void KeyValue::ExpireWrites() {
  const int64_t now = NowNs();
  std::vector<uint64_t> expired;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, w] : pending_) {
      if (w.deadline_ns <= now) expired.push_back(id);
    }
  }
  KvWriteResult r;
  r.error = "no acknowledgement within " + std::to_string(write_timeout_ms_.load()) + " ms";
  for (uint64_t id : expired) Answer(id, r);
}

bool KeyValue::WaitForWrites(int timeout_ms) {
  const int64_t deadline = NowNs() + int64_t{timeout_ms} * 1'000'000;
  for (;;) {
    ExpireWrites();
    std::unique_lock lock(mu_);
    if (pending_.empty() && answering_ == 0) return true;
    const int64_t now = NowNs();
    if (now >= deadline) return false;
    answered_.wait_for(lock,
                       std::chrono::nanoseconds(std::min<int64_t>(deadline - now, 50'000'000)));
  }
}

std::unique_ptr<KvWatcher> KeyValue::WatchAll() {
  kvWatcher* w = nullptr;
  Check(kvStore_WatchAll(&w, kv_, nullptr), "watch bucket " + bucket_);
  return std::make_unique<KvWatcher>(w);
}

std::unique_ptr<KvWatcher> KeyValue::Watch(const std::string& keys) {
  kvWatcher* w = nullptr;
  Check(kvStore_Watch(&w, kv_, keys.c_str(), nullptr), "watch " + bucket_ + "/" + keys);
  return std::make_unique<KvWatcher>(w);
}

int KeyValue::ReadCurrent(const std::string& keys, int64_t timeout_ms,
                          const std::function<void(KvEntry&)>& visit) {
  const std::string pattern = keys.empty() ? ">" : keys;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const auto left_ms = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now())
        .count();
  };
  const auto too_long = [&] {
    return std::runtime_error("bucket " + bucket_ + ": keys " + pattern + " not read within " +
                              std::to_string(timeout_ms) + " ms");
  };
  // The watch is a consumer the server places on any replica, which reads its own copy: what it
  // read is handed on once the stream's leader stores nothing newer for these keys; else it is
  // read again (a replica catching up). A stream electing its leader is asked again.
  const auto newest_stored = [&] {
    for (int64_t wait_ms = 100;; wait_ms = std::min<int64_t>(wait_ms * 2, 1000)) {
      try {
        return LeaderSequence(conn_, stream_,
                              MsgGetRequest({{"last_by_subj", subject_prefix_ + pattern}}),
                              "last key " + pattern + " of bucket " + bucket_)
            .value_or(0);
      } catch (const Error&) {
        if (left_ms() <= wait_ms) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    }
  };
  int64_t backoff_ms = 20;
  for (int attempt = 1;; ++attempt) {
    const uint64_t newest = newest_stored();
    const auto watcher = keys.empty() ? WatchAll() : Watch(keys);
    std::vector<KvEntry> entries;
    uint64_t seen = 0;  // the newest revision read, deletes included
    KvEntry e;
    for (;;) {
      const int64_t ms = left_ms();
      if (ms <= 0) throw too_long();
      const auto ev = watcher->Next(static_cast<int>(std::min<int64_t>(ms, 500)), e);
      if (ev == KvWatcher::Event::kInitialDone) break;
      if (ev != KvWatcher::Event::kEntry) continue;
      seen = std::max(seen, e.revision);
      if (!e.deleted) entries.push_back(std::move(e));
    }
    if (seen >= newest) {
      for (KvEntry& entry : entries) visit(entry);
      return attempt - 1;
    }
    if (left_ms() <= backoff_ms) throw too_long();
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 1000);
  }
}

// --- JetStream ---

JetStream::JetStream(Connection& connection) : conn_(connection) {
  Check(natsConnection_JetStream(&js_, conn_.raw(), nullptr), "JetStream context");
}

JetStream::~JetStream() { jsCtx_Destroy(js_); }

StreamSummary JetStream::EnsureStream(const StreamOptions& o) {
  const int64_t start = NowNs();
  for (int attempt = 1;; ++attempt) {
    if (auto found = FindStream(o.name)) return *found;
    try {
      return StreamOf(
          StreamApi(conn_, "CREATE." + o.name, StreamConfig(o), "create stream " + o.name));
    } catch (const Error& e) {
      if (auto found = FindStream(o.name)) return *found;  // another worker created it meanwhile
      // "error creating store for stream": the server hides the cause (its log has it); seen
      // with nats-server 2.10 on a loaded machine, and gone when asked again. No answer in
      // time: a replicated stream's group may still be electing its leader; asking again with
      // the same configuration answers with the stream once it is there. A cluster that is
      // forming (no meta leader yet, not every peer known for the replicas) may refuse it for
      // longer: asked again for up to kFormingNs.
      const bool again =
          (e.api_code() == kStoreFailed || e.status() == NATS_TIMEOUT) && attempt < 3;
      const bool forming = (e.api_code() == kNoPeers || e.api_code() == kClusterUnavailable) &&
                           NowNs() - start < kFormingNs;
      if (!again && !forming) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(250 * attempt, 1000)));
    }
  }
}

StreamSummary JetStream::AddSources(const std::string& name,
                                    const std::vector<StreamSource>& sources) {
  rapidjson::Document info = StreamApi(conn_, "INFO." + name, "", "stream info " + name);
  const auto config = info.FindMember("config");
  if (config == info.MemberEnd() || !config->value.IsObject()) {
    throw Error("nats: stream info " + name + ": no configuration in the answer", NATS_ERR);
  }
  rapidjson::Value& c = config->value;
  auto& alloc = info.GetAllocator();
  if (!c.HasMember("sources") || !c["sources"].IsArray()) {
    c.RemoveMember("sources");
    c.AddMember("sources", rapidjson::Value(rapidjson::kArrayType), alloc);
  }
  rapidjson::Value& list = c["sources"];
  bool added = false;
  for (const auto& source : sources) {
    const bool present = std::any_of(list.Begin(), list.End(), [&](const rapidjson::Value& v) {
      return v.IsObject() && StringAt(v, "name") == source.name &&
             ApiPrefixOf(v) == source.api_prefix;
    });
    if (present) continue;
    rapidjson::Document one;
    one.Parse(SourceConfig(source).c_str());
    list.PushBack(rapidjson::Value(one, alloc), alloc);
    added = true;
  }
  if (!added) return StreamOf(info);
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  c.Accept(w);
  StreamApi(conn_, "UPDATE." + name, out.GetString(), "update stream " + name);
  // The update's answer has no source states yet: the stream as it is now.
  return StreamOf(StreamApi(conn_, "INFO." + name, "", "stream info " + name));
}

bool JetStream::TransformsSubjects() {
  // Subjects of its own: nothing is ever stored in it. Workers that start together create the
  // same stream (the server answers each as if it had created it) and each deletes it.
  const std::string probe = kTransformProbeStream;
  StreamOptions o;
  o.name = probe;
  o.subjects = {"_fleetflow.transform_probe.*"};
  o.storage = "memory";
  o.max_age_ms = 60'000;
  o.transform = SubjectTransform{o.subjects[0], "_fleetflow.transform_probe.{{partition(2,1)}}"};
  const bool transforms =
      StreamOf(StreamApi(conn_, "CREATE." + probe, StreamConfig(o), "create stream " + probe))
          .transform == o.transform;
  StreamApi(conn_, "DELETE." + probe, "", "delete stream " + probe, kStreamNotFound);
  return transforms;
}

uint64_t JetStream::Publish(std::string_view subject, const void* data, size_t size,
                            const Headers& headers, int timeout_ms) {
  const std::string subj(subject);
  natsMsg* msg = detail::NewMessage(subj, nullptr, data, size, headers);
  jsPubOptions opts;
  jsPubOptions_Init(&opts);
  opts.MaxWait = timeout_ms;
  jsPubAck* ack = nullptr;
  const natsStatus s = js_PublishMsg(&ack, js_, msg, &opts, nullptr);
  natsMsg_Destroy(msg);
  const uint64_t seq = ack != nullptr ? ack->Sequence : 0;
  jsPubAck_Destroy(ack);
  if (s != NATS_OK) Throw(s, "JetStream publish to " + subj);
  return seq;
}

void JetStream::EnsureConsumer(const ConsumerOptions& o) {
  // The consumer is created here, not by the subscription, so that closing a subscription never
  // deletes it: its position in the stream outlives every worker.
  jsConsumerInfo* ci = nullptr;
  if (js_GetConsumerInfo(&ci, js_, o.stream.c_str(), o.durable.c_str(), nullptr, nullptr) ==
      NATS_OK) {
    const bool push = ci->Config != nullptr && ci->Config->DeliverSubject != nullptr &&
                      *ci->Config->DeliverSubject != '\0';
    const jsAckPolicy policy = ci->Config != nullptr ? ci->Config->AckPolicy : js_AckExplicit;
    jsConsumerInfo_Destroy(ci);
    if (push) {
      throw Error("nats: consumer " + o.durable + " on stream " + o.stream +
                      " is a push consumer; a pull consumer of that name is needed",
                  NATS_INVALID_ARG);
    }
    if (policy != (o.ack_all ? js_AckAll : js_AckExplicit)) {
      throw Error("nats: consumer " + o.durable + " on stream " + o.stream +
                      (policy == js_AckAll ? " acknowledges all before a message (AckAll)"
                                           : " does not acknowledge all before a message") +
                      "; a consumer's ack policy cannot change: delete it, or use another name",
                  NATS_INVALID_ARG);
    }
  } else {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = o.durable.c_str();
    cc.FilterSubject = o.filter_subject.c_str();
    cc.AckPolicy = o.ack_all ? js_AckAll : js_AckExplicit;
    cc.AckWait = o.ack_wait_ms * 1'000'000;
    cc.MaxAckPending = o.max_ack_pending;
    cc.DeliverPolicy = js_DeliverAll;
    jsErrCode err = static_cast<jsErrCode>(0);
    const natsStatus s = js_AddConsumer(&ci, js_, o.stream.c_str(), &cc, nullptr, &err);
    if (s == NATS_OK) {
      jsConsumerInfo_Destroy(ci);
    } else if (err != JSConsumerNameExistErr) {  // else another worker just created it
      Throw(s, "create consumer " + o.durable + " on stream " + o.stream + JsError(err));
    }
  }
}

std::unique_ptr<PullConsumer> JetStream::PullSubscribe(const ConsumerOptions& o) {
  EnsureConsumer(o);
  return std::make_unique<PullConsumer>(conn_, o.stream, o.durable);
}

std::unique_ptr<KeyValue> JetStream::EnsureBucket(const BucketOptions& o) {
  kvStore* kv = nullptr;
  kvConfig cfg;
  kvConfig_Init(&cfg);
  cfg.Bucket = o.name.c_str();
  cfg.History = static_cast<uint8_t>(o.history);
  cfg.TTL = o.ttl_ms * 1'000'000;
  cfg.StorageType = Storage(o.storage);
  cfg.Replicas = o.replicas;
  // On a NATS cluster, a replicated bucket that another worker is creating at this moment may
  // not answer within the API's 5 s while its replicas form: asked again, for up to 30 s. A
  // cluster that is forming may refuse the create itself (no meta leader yet, not every peer
  // known for the replicas): created again, for up to kFormingNs.
  const int64_t start = NowNs();
  natsStatus s = NATS_TIMEOUT;
  std::optional<Error> refused;  // why the last create failed, in the server's words
  for (;;) {
    s = js_KeyValue(&kv, js_, o.name.c_str());
    if (s == NATS_NOT_FOUND) {
      const natsStatus created = js_CreateKeyValue(&kv, js_, &cfg);
      if (created != NATS_OK) refused = detail::Failure(created, "create bucket " + o.name);
      s = created == NATS_OK ? NATS_OK : js_KeyValue(&kv, js_, o.name.c_str());  // another's
    }
    const int64_t waited = NowNs() - start;
    if (s == NATS_TIMEOUT && waited < 30'000'000'000) continue;
    if (s != NATS_NOT_FOUND || waited >= kFormingNs) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (s == NATS_NOT_FOUND && refused) throw *refused;
  Check(s, "bucket " + o.name);
  return std::make_unique<KeyValue>(conn_, kv, o.name);
}

std::unique_ptr<KeyValue> JetStream::OpenBucket(const std::string& name) {
  kvStore* kv = nullptr;
  Check(js_KeyValue(&kv, js_, name.c_str()), "bucket " + name);
  return std::make_unique<KeyValue>(conn_, kv, name);
}

std::optional<StreamSummary> JetStream::FindStream(const std::string& name, int timeout_ms) {
  const auto answer =
      StreamApi(conn_, "INFO." + name, "", "stream info " + name, kStreamNotFound, timeout_ms);
  if (!answer.IsObject() || answer.HasMember("error")) return std::nullopt;
  return StreamOf(answer);
}

bool JetStream::HasConsumer(const std::string& stream, const std::string& durable) {
  jsConsumerInfo* ci = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetConsumerInfo(&ci, js_, stream.c_str(), durable.c_str(), nullptr, &err);
  if (s == NATS_NOT_FOUND || err == JSConsumerNotFoundErr) return false;
  Check(s, "consumer info " + durable);
  jsConsumerInfo_Destroy(ci);
  return true;
}

std::unique_ptr<StreamReader> JetStream::ReadStream(const std::string& stream,
                                                    const std::string& subject,
                                                    const StreamStart& start) {
  const std::string what = "read stream " + stream + " (" + subject + ")";
  // The count comes from a consumer of its own, created and deleted before the reading starts:
  // asking the ordered consumer while it delivers (nats.c 3.4.1, nats-server 2.9) could leave
  // its deliveries crawling at a thousand messages a second, the server busy, on a loaded host.
  jsConsumerConfig count;
  jsConsumerConfig_Init(&count);
  count.FilterSubject = subject.c_str();
  count.AckPolicy = js_AckNone;
  count.MemoryStorage = true;
  count.InactiveThreshold = 10'000'000'000;  // should its delete get lost
  SetStart(count, start);
  jsConsumerInfo* ci = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_AddConsumer(&ci, js_, stream.c_str(), &count, nullptr, &err);
  if (s != NATS_OK) Throw(s, what + JsError(err));
  const uint64_t total = ci->NumPending;
  js_DeleteConsumer(js_, stream.c_str(), ci->Name, nullptr, nullptr);
  jsConsumerInfo_Destroy(ci);

  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Ordered = true;
  SetStart(so.Config, start);
  natsSubscription* sub = nullptr;
  s = js_SubscribeSync(&sub, js_, subject.c_str(), nullptr, &so, &err);
  if (s != NATS_OK) Throw(s, what + JsError(err));
  std::unique_ptr<StreamReader> reader(new StreamReader(conn_, sub, total));
  if (start.sequence == 0 && start.time_ns != 0 &&
      SendableStartTime(start.time_ns) != start.time_ns) {
    reader->SkipStoredBefore(start.time_ns, what);
  }
  return reader;
}

JetStream::ConsumerProgress JetStream::Progress(const std::string& stream,
                                                const std::string& durable) {
  jsConsumerInfo* ci = nullptr;
  Check(js_GetConsumerInfo(&ci, js_, stream.c_str(), durable.c_str(), nullptr, nullptr),
        "consumer info " + durable);
  const ConsumerProgress out{ci->NumPending, static_cast<uint64_t>(ci->NumAckPending),
                             ci->Delivered.Stream, ci->Delivered.Consumer};
  jsConsumerInfo_Destroy(ci);
  return out;
}

std::pair<uint64_t, uint64_t> JetStream::ConsumerPending(const std::string& stream,
                                                         const std::string& durable) {
  const auto p = Progress(stream, durable);
  return {p.pending, p.ack_pending};
}

uint64_t JetStream::ConsumerDelivered(const std::string& stream, const std::string& durable) {
  return Progress(stream, durable).delivered;
}

std::optional<uint64_t> JetStream::NextStored(const std::string& stream, const std::string& subject,
                                              uint64_t from) {
  return LeaderSequence(
      conn_, stream, MsgGetRequest({{"next_by_subj", subject}}, from),
      "next message of " + subject + " in stream " + stream + " from " + std::to_string(from));
}

std::unique_ptr<JsMessage> JetStream::GetStored(const std::string& stream, uint64_t sequence,
                                                int timeout_ms) {
  natsMsg* msg = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  jsOptions o = Waiting(timeout_ms);
  const natsStatus s = js_GetMsg(&msg, js_, stream.c_str(), sequence, &o, &err);  // the leader's
  if (s == NATS_NOT_FOUND && err != JSStreamNotFoundErr) return nullptr;
  if (s != NATS_OK) {
    Throw(s, "message " + std::to_string(sequence) + " of stream " + stream + JsError(err));
  }
  JsMessage::AckReply stored;
  stored.stream_sequence = natsMsg_GetSequence(msg);
  stored.stored_ns = natsMsg_GetTime(msg);
  return std::make_unique<JsMessage>(conn_, Message(msg), stored);
}

JetStream::Stored JetStream::LastStored(const std::string& stream, const std::string& subject,
                                        int timeout_ms) {
  natsMsg* msg = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  jsOptions o = Waiting(timeout_ms);
  // STREAM.MSG.GET with last_by_subj, answered by the stream's leader (not a direct get, which
  // any replica answers from its own copy).
  const natsStatus s = js_GetLastMsg(&msg, js_, stream.c_str(), subject.c_str(), &o, &err);
  if (s == NATS_NOT_FOUND && err != JSStreamNotFoundErr) return {};
  if (s != NATS_OK) Throw(s, "last message of " + subject + " in stream " + stream + JsError(err));
  const Stored out{natsMsg_GetSequence(msg), natsMsg_GetTime(msg)};
  natsMsg_Destroy(msg);
  return out;
}

}  // namespace fleetflow::nats

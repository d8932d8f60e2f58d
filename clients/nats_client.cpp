#include "nats_client.hpp"

#include <nats/nats.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "nats_status.hpp"

namespace fleetflow::nats {
namespace {

constexpr int kPendingMsgsLimit = 1'000'000;
constexpr int kPendingBytesLimit = 512 * 1024 * 1024;

// nats.c's status text, plus its thread-local detail when that says more (a TLS or file error).
std::string StatusText(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  const char* raw = nats_GetLastError(&last);
  std::string_view detail = raw == nullptr ? "" : raw;
  if (detail.starts_with('(')) {  // drop nats.c's "(conn.c:2088): " source location
    const size_t end = detail.find("): ");
    if (end != std::string_view::npos) detail.remove_prefix(end + 3);
  }
  if (last == s && !detail.empty() && detail != text) text.append(" (").append(detail).append(")");
  return text;
}

using detail::Check;

/// nats.c starts its own threads with the library: the timers, the connection-event callbacks
/// and the garbage collector, which frees every received message a caller destroys (woken by
/// the first destroy after it went idle). Started from a thread under SCHED_BATCH, they inherit
/// it: woken, they wait for the waker's time slice to end instead of preempting it, so a burst
/// of destroyed messages is freed in one pass instead of one wake-up and two context switches
/// each. Same CPU share as any thread otherwise (SCHED_BATCH is not a lower priority).
void StartLibrary() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::thread([] {
      pthread_setname_np(pthread_self(), "ff-nats");  // nats.c's timer and collector inherit it
      sched_param none{};
      sched_setscheduler(0, SCHED_BATCH, &none);  // best effort: unchanged where refused
      nats_Open(-1);
    }).join();
  });
}
using detail::Throw;

using OptionsPtr = std::unique_ptr<natsOptions, decltype(&natsOptions_Destroy)>;

// --- NKey: nats.c signs with the seed but needs the public key too; derive it from the seed. ---

constexpr char kBase32Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr uint8_t kSeedPrefixByte = 18 << 3;  // 'S'

std::optional<std::vector<uint8_t>> Base32Decode(std::string_view text) {
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    uint32_t v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= '2' && c <= '7') {
      v = c - '2' + 26;
    } else {
      return std::nullopt;
    }
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  return out;
}

std::string Base32Encode(std::span<const uint8_t> data) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : data) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out.push_back(kBase32Alphabet[(acc >> bits) & 31]);
    }
  }
  if (bits > 0) out.push_back(kBase32Alphabet[(acc << (5 - bits)) & 31]);
  return out;
}

uint16_t Crc16(std::span<const uint8_t> data) {  // CRC-16/XMODEM, as in the nkeys format
  uint16_t crc = 0;
  for (uint8_t b : data) {
    crc ^= static_cast<uint16_t>(b << 8);
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

// The public key ("U..." for a user) of an encoded seed ("SU..."), or nullopt if `token` is not
// a valid seed.
std::optional<std::string> PublicKeyOfSeed(std::string_view token) {
  auto raw = Base32Decode(token);
  if (!raw) return std::nullopt;
  std::optional<std::string> result;
  if (raw->size() == 36 && ((*raw)[0] & 0xF8) == kSeedPrefixByte &&
      Crc16(std::span(*raw).first(34)) == ((*raw)[34] | ((*raw)[35] << 8))) {
    const uint8_t prefix = static_cast<uint8_t>((((*raw)[0] & 7) << 5) | ((*raw)[1] >> 3));
    EVP_PKEY* key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, raw->data() + 2, 32);
    std::vector<uint8_t> pub(35);
    size_t len = 32;
    if (key != nullptr && EVP_PKEY_get_raw_public_key(key, pub.data() + 1, &len) == 1 &&
        len == 32) {
      pub[0] = prefix;
      const uint16_t pub_crc = Crc16(std::span(pub).first(33));
      pub[33] = static_cast<uint8_t>(pub_crc & 0xFF);
      pub[34] = static_cast<uint8_t>(pub_crc >> 8);
      result = Base32Encode(pub);
    }
    EVP_PKEY_free(key);
  }
  OPENSSL_cleanse(raw->data(), raw->size());
  return result;
}

// Reads the seed file (a bare seed, `nk -gen user -pubout` output or a decorated .nk file) and
// returns the first valid seed in it with its public key; nullopt when there is none or the file
// cannot be read. The caller wipes the seed (OPENSSL_cleanse) once it is done with it.
struct SeedAndKey {
  std::string seed;
  std::string public_key;
};
std::optional<SeedAndKey> ReadSeedFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::optional<SeedAndKey> found;
  size_t pos = 0;
  while (!found && pos < content.size()) {
    const size_t start = content.find_first_not_of(" \t\r\n", pos);
    if (start == std::string::npos) break;
    const size_t end = std::min(content.find_first_of(" \t\r\n", start), content.size());
    if (content[start] == 'S') {
      const std::string_view token = std::string_view(content).substr(start, end - start);
      if (std::optional<std::string> pub = PublicKeyOfSeed(token)) {
        found = SeedAndKey{std::string(token), std::move(*pub)};
      }
    }
    pos = end;
  }
  OPENSSL_cleanse(content.data(), content.size());
  return found;
}

std::string PublicKeyOfSeedFile(const std::string& path) {
  if (!std::ifstream(path)) {
    throw Error("nats: cannot read NKey seed file " + path, NATS_INVALID_ARG);
  }
  std::optional<SeedAndKey> found = ReadSeedFile(path);
  if (!found) throw Error("nats: no valid NKey seed in " + path, NATS_INVALID_ARG);
  OPENSSL_cleanse(found->seed.data(), found->seed.size());
  return found->public_key;
}

// Signs the server's nonce with the seed of an NKey seed file, read at each (re)connection as
// nats.c's own handler does. It replaces natsOptions_SetNKeyFromSeed for one reason: nats.c
// 3.4.1 (Debian 12) base64-encodes the signature with a function that takes a first byte of 0 for
// an empty input, so for 1 nonce in 256 (an Ed25519 signature starting with 0x00) its CONNECT
// carries no "sig" and the server refuses the connection ("Authorization Violation"). That cannot
// be avoided from a callback (nats.c encodes what it returns), but it can be recognised: the
// signer counts such signatures, and Connect() starts the handshake again (a new nonce) when a
// refusal followed one. A refusal after a complete signature (a wrong key) is never retried.
struct SeedFileSigner {
  std::string path;
  std::atomic<uint64_t> zero_first_byte{0};  // signatures nats.c 3.4.1 cannot send
};

natsStatus SignNonceWithSeedFile(char** custom_error, unsigned char** signature, int* length,
                                 const char* nonce, void* closure) {
  auto* signer = static_cast<SeedFileSigner*>(closure);
  std::optional<SeedAndKey> found = ReadSeedFile(signer->path);
  if (!found) {
    *custom_error = strdup(("no valid NKey seed in " + signer->path).c_str());
    return NATS_ERR;
  }
  const natsStatus s = nats_Sign(found->seed.c_str(), nonce, signature, length);
  OPENSSL_cleanse(found->seed.data(), found->seed.size());
  if (s == NATS_OK && *length > 0 && (*signature)[0] == 0) signer->zero_first_byte.fetch_add(1);
  return s;
}

// Like the state callbacks: nats.c may call the signer on its reconnect thread after the
// connection was destroyed, so signers live for the whole process (one per connection made).
SeedFileSigner* NewSeedFileSigner(const std::string& path) {
  static auto* mu = new std::mutex;
  static auto* registry = new std::vector<std::unique_ptr<SeedFileSigner>>;
  auto signer = std::make_unique<SeedFileSigner>();
  signer->path = path;
  std::lock_guard lock(*mu);
  registry->push_back(std::move(signer));
  return registry->back().get();
}

// The first line of a secret file (password, token), without its line end. Errors name the file,
// never its content.
std::string ReadSecretFile(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in)
    throw Error(std::string("nats: cannot read ") + what + " file " + path, NATS_INVALID_ARG);
  std::string secret;
  std::getline(in, secret);
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  if (secret.empty()) {
    throw Error(std::string("nats: ") + what + " file " + path + " is empty", NATS_INVALID_ARG);
  }
  return secret;
}

// --- options ---

std::vector<std::string> SplitServers(std::string_view urls) {
  std::vector<std::string> out;
  while (!urls.empty()) {
    const size_t comma = urls.find(',');
    std::string_view url = urls.substr(0, comma);
    while (!url.empty() && url.front() == ' ') url.remove_prefix(1);
    while (!url.empty() && url.back() == ' ') url.remove_suffix(1);
    if (!url.empty()) out.emplace_back(url);
    if (comma == std::string_view::npos) break;
    urls.remove_prefix(comma + 1);
  }
  return out;
}

void OnBackgroundConnect(natsConnection*, void*) {}

}  // namespace

/// The user's callback, silenced once the connection is being closed on purpose. nats.c calls
/// connection callbacks on a thread of its own, possibly after natsConnection_Destroy returned
/// (and for a connect that failed), so these are never freed: they live in a registry for the
/// life of the process (a few per Connection ever made).
struct Connection::StateCallback {
  std::function<void(bool)> fn;
  std::atomic<bool> closing{false};
  void operator()(bool connected) const {
    if (!closing.load()) fn(connected);
  }
};

namespace {

void OnDisconnected(natsConnection*, void* closure) {
  (*static_cast<Connection::StateCallback*>(closure))(false);
}

void OnReconnected(natsConnection*, void* closure) {
  (*static_cast<Connection::StateCallback*>(closure))(true);
}

/// Options that go in pairs: both given or neither; `what` names them ("a user (NATS_USER) and
/// its password file (NATS_PASSWORD_FILE)").
void RequireTogether(const std::string& a, const std::string& b, const std::string& what) {
  if (a.empty() != b.empty())
    throw Error("nats: " + what + " must be given together", NATS_INVALID_ARG);
}

Connection::StateCallback* NewStateCallback(std::function<void(bool)> fn) {
  // Never destroyed, not even at exit: nats.c's threads may still call in then.
  static auto* mu = new std::mutex;
  static auto* registry = new std::vector<std::unique_ptr<Connection::StateCallback>>;
  auto cb = std::make_unique<Connection::StateCallback>();
  cb->fn = std::move(fn);
  std::lock_guard lock(*mu);
  registry->push_back(std::move(cb));
  return registry->back().get();
}

OptionsPtr MakeOptions(const ConnectOptions& o, SeedFileSigner** signer) {
  natsOptions* raw = nullptr;
  Check(natsOptions_Create(&raw), "create options");
  OptionsPtr opts(raw, &natsOptions_Destroy);

  const std::vector<std::string> servers = SplitServers(o.url);
  if (servers.empty()) throw Error("nats: no server URL given", NATS_INVALID_ARG);
  if (servers.size() == 1) {
    Check(natsOptions_SetURL(raw, servers[0].c_str()), "server URL " + RedactUrl(o.url));
  } else {
    std::vector<const char*> list;
    for (const std::string& s : servers) list.push_back(s.c_str());
    Check(natsOptions_SetServers(raw, list.data(), static_cast<int>(list.size())),
          "server URLs " + RedactUrl(o.url));
  }
  Check(natsOptions_SetName(raw, o.name.c_str()), "client name");

  const int methods =
      !o.creds_file.empty() + !o.nkey_seed_file.empty() + !o.user.empty() + !o.token_file.empty();
  if (methods > 1) {
    throw Error(
        "nats: give one way to authenticate: credentials, NKey seed, user and password, or "
        "token",
        NATS_INVALID_ARG);
  }
  if (!o.creds_file.empty()) {
    Check(natsOptions_SetUserCredentialsFromFiles(raw, o.creds_file.c_str(), nullptr),
          "credentials " + o.creds_file);
  }
  if (!o.nkey_seed_file.empty()) {
    const std::string pub = PublicKeyOfSeedFile(o.nkey_seed_file);
    *signer = NewSeedFileSigner(o.nkey_seed_file);
    Check(natsOptions_SetNKey(raw, pub.c_str(), SignNonceWithSeedFile, *signer),
          "NKey seed " + o.nkey_seed_file);
  }

  RequireTogether(o.user, o.password_file,
                  "a user (NATS_USER) and its password file (NATS_PASSWORD_FILE)");
  if (!o.user.empty()) {
    const std::string password = ReadSecretFile(o.password_file, "password");
    Check(natsOptions_SetUserInfo(raw, o.user.c_str(), password.c_str()), "user " + o.user);
  }
  if (!o.token_file.empty()) {
    const std::string token = ReadSecretFile(o.token_file, "token");
    Check(natsOptions_SetToken(raw, token.c_str()), "token from " + o.token_file);
  }

  RequireTogether(o.cert_file, o.key_file,
                  "a client certificate (NATS_CERT) and its key (NATS_KEY)");
  if (!o.ca_file.empty()) {
    Check(natsOptions_LoadCATrustedCertificates(raw, o.ca_file.c_str()), "CA file " + o.ca_file);
    Check(natsOptions_SetSecure(raw, true), "enable TLS");
  }
  if (!o.cert_file.empty()) {
    Check(natsOptions_LoadCertificatesChain(raw, o.cert_file.c_str(), o.key_file.c_str()),
          "client certificate " + o.cert_file + " / key " + o.key_file);
    Check(natsOptions_SetSecure(raw, true), "enable TLS");
  }

  Check(natsOptions_SetMaxReconnect(raw, o.max_reconnect), "max reconnect");
  Check(natsOptions_SetReconnectWait(raw, o.reconnect_wait_ms), "reconnect wait");
  const int64_t buf = std::min<int64_t>(o.reconnect_buffer_bytes, INT_MAX);
  Check(natsOptions_SetReconnectBufSize(raw, static_cast<int>(buf)), "reconnect buffer size");
  Check(natsOptions_SetTimeout(raw, o.connect_timeout_ms), "connect timeout");
  // A non-null callback makes nats.c retry in the background instead of blocking in Connect.
  Check(natsOptions_SetRetryOnFailedConnect(
            raw, o.retry_on_failed_connect,
            o.retry_on_failed_connect ? OnBackgroundConnect : nullptr, nullptr),
        "retry on failed connect");
  Check(natsOptions_SetSendAsap(raw, o.send_asap), "send asap");
  if (!o.inbox_prefix.empty()) {
    Check(natsOptions_SetCustomInboxPrefix(raw, o.inbox_prefix.c_str()),
          "inbox prefix " + o.inbox_prefix);
  }
  return opts;
}

void OnMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) noexcept {
  (*static_cast<MessageHandler*>(closure))(Message(msg));
}

void OnSubscriptionComplete(void* closure) {
  auto* completed = static_cast<std::atomic<bool>*>(closure);
  completed->store(true);
  completed->notify_all();
}

}  // namespace

namespace detail {

Error Failure(int status, std::string_view operation) {
  return Error(
      "nats: " + std::string(operation) + ": " + StatusText(static_cast<natsStatus>(status)),
      status);
}

[[noreturn]] void Throw(int status, std::string_view operation) {
  throw Failure(status, operation);
}

void Check(int status, std::string_view operation) {
  if (status != NATS_OK) Throw(status, operation);
}

__natsMsg* NewMessage(const std::string& subject, const char* reply, const void* data, size_t size,
                      const Headers& headers) {
  natsMsg* msg = nullptr;
  Check(natsMsg_Create(&msg, subject.c_str(), reply, static_cast<const char*>(data),
                       static_cast<int>(size)),
        "create message");
  natsStatus s = NATS_OK;
  for (const auto& [name, value] : headers) {
    if (s == NATS_OK) s = natsMsgHeader_Add(msg, name.c_str(), value.c_str());
  }
  if (s != NATS_OK) {
    natsMsg_Destroy(msg);
    Throw(s, "set the headers of a message to " + subject);
  }
  return msg;
}

}  // namespace detail

bool Error::unreachable() const { return status_ == NATS_NO_SERVER; }

ConnectOptions ConnectOptions::FromEnv() {
  ConnectOptions o;
  const auto set = [](std::string& field, const char* name) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') field = v;
  };
  set(o.url, "NATS_URL");
  set(o.creds_file, "NATS_CREDS");
  set(o.nkey_seed_file, "NATS_NKEY_SEED");
  set(o.user, "NATS_USER");
  set(o.password_file, "NATS_PASSWORD_FILE");
  set(o.token_file, "NATS_TOKEN_FILE");
  set(o.ca_file, "NATS_CA");
  set(o.cert_file, "NATS_CERT");
  set(o.key_file, "NATS_KEY");
  return o;
}

// --- Message ---

Message& Message::operator=(Message&& o) noexcept {
  if (this != &o) {
    natsMsg_Destroy(msg_);
    msg_ = o.msg_;
    o.msg_ = nullptr;
  }
  return *this;
}

Message::~Message() { natsMsg_Destroy(msg_); }

std::string_view Message::subject() const {
  const char* s = natsMsg_GetSubject(msg_);
  return s == nullptr ? std::string_view() : std::string_view(s);
}

std::string_view Message::reply() const {
  const char* s = natsMsg_GetReply(msg_);
  return s == nullptr ? std::string_view() : std::string_view(s);
}

const void* Message::data() const { return natsMsg_GetData(msg_); }

size_t Message::size() const { return static_cast<size_t>(natsMsg_GetDataLength(msg_)); }

bool Message::no_responders() const { return natsMsg_IsNoResponders(msg_); }

std::string Message::header(const char* name) const {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg_, name, &value) == NATS_OK && value != nullptr ? value : "";
}

// --- Subscription ---

namespace {

/// Unsubscribes `sub`; once this returns, nats.c's read loop no longer holds it. nats.c before
/// 3.6 (nats.c#637, fixed by #638) looks a message's subscription up, then locks it without
/// holding a reference: a subscription freed in between made the read loop lock a destroyed
/// mutex, and nats.c abort()s on that. The read loop handles the server's PONG after any message
/// it was handing over, so a flush round trip after the unsubscribe waits that out.
void UnsubscribeAndSettle(natsSubscription* sub, natsConnection* conn) {
  // Fails harmlessly if already drained (a drain settles by a flush of its own) or closed.
  if (natsSubscription_Unsubscribe(sub) == NATS_OK && conn != nullptr &&
      natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED) {  // else no read loop runs
    natsConnection_FlushTimeout(conn, 2000);
  }
}

}  // namespace

Subscription::~Subscription() {
  UnsubscribeAndSettle(sub_, conn_);
  completed_.wait(false);
  natsSubscription_Destroy(sub_);
}

void Subscription::Drain(int timeout_ms) {
  Check(natsSubscription_Drain(sub_), "drain");
  Check(natsSubscription_WaitForDrainCompletion(sub_, timeout_ms), "wait for drain");
}

int Subscription::pending() const {
  int msgs = 0;
  return natsSubscription_GetPending(sub_, &msgs, nullptr) == NATS_OK ? msgs : 0;
}

// --- SyncSubscription ---

SyncSubscription::~SyncSubscription() {
  UnsubscribeAndSettle(sub_, conn_);
  natsSubscription_Destroy(sub_);
}

std::optional<Message> SyncSubscription::Next(int timeout_ms, bool& no_responders) {
  no_responders = false;
  int queued = 0;
  // Not waiting and nothing queued: nats.c would format a timeout error text for nothing.
  if (timeout_ms <= 0 && natsSubscription_GetPending(sub_, &queued, nullptr) == NATS_OK &&
      queued == 0) {
    return std::nullopt;
  }
  natsMsg* msg = nullptr;
  const natsStatus s = natsSubscription_NextMsg(&msg, sub_, timeout_ms);
  no_responders = s == NATS_NO_RESPONDERS;
  if (s != NATS_OK) return std::nullopt;
  return Message(msg);
}

// --- Connection ---

std::unique_ptr<Connection> Connection::Connect(const ConnectOptions& options) {
  StartLibrary();
  SeedFileSigner* signer = nullptr;
  OptionsPtr opts = MakeOptions(options, &signer);
  StateCallback* on_change = nullptr;
  if (options.on_connection_change) {
    on_change = NewStateCallback(options.on_connection_change);
    Check(natsOptions_SetDisconnectedCB(opts.get(), OnDisconnected, on_change),
          "disconnected callback");
    Check(natsOptions_SetReconnectedCB(opts.get(), OnReconnected, on_change),
          "reconnected callback");
  }
  natsConnection* conn = nullptr;
  natsStatus s = NATS_OK;
  // At most 3 handshakes, and a second only after a signature nats.c could not send (see
  // SeedFileSigner): all three hit that by chance once in 16 million connections.
  for (int handshake = 1;; ++handshake) {
    const uint64_t unsendable = signer != nullptr ? signer->zero_first_byte.load() : 0;
    s = natsConnection_Connect(&conn, opts.get());
    if (s != NATS_CONNECTION_AUTH_FAILED || signer == nullptr || handshake == 3 ||
        signer->zero_first_byte.load() == unsendable) {
      break;
    }
  }
  const bool pending = s == NATS_NOT_YET_CONNECTED && options.retry_on_failed_connect;
  if (s != NATS_OK && !pending) Throw(s, "connect to " + options.url);  // no connection: ours
  return std::unique_ptr<Connection>(new Connection(
      conn, on_change, options.inbox_prefix.empty() ? "_INBOX" : options.inbox_prefix));
}

Connection::Connection(natsConnection* c, StateCallback* on_change, std::string inbox_prefix)
    : conn_(c), on_change_(on_change), inbox_prefix_(std::move(inbox_prefix)) {}

Connection::~Connection() {
  if (on_change_ != nullptr) on_change_->closing = true;  // never freed (see StateCallback)
  // What was published last (acknowledgements, and messages handed back at a hand-over) is
  // sent before the connection closes: closing does not flush, and a lost NAK would keep its
  // message from the next owner for the whole ack wait.
  if (natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED) {
    natsConnection_FlushTimeout(conn_, kCloseFlushMs);
  }
  natsConnection_Destroy(conn_);
}

void Connection::Publish(std::string_view subject, const void* data, size_t size) {
  thread_local std::string subj;  // nats.c wants a C string; reuse one buffer per thread
  subj.assign(subject);
  const natsStatus s = natsConnection_Publish(conn_, subj.c_str(), data, static_cast<int>(size));
  if (s != NATS_OK) Throw(s, "publish to " + subj);
}

void Connection::Publish(std::string_view subject, const void* data, size_t size,
                         const Headers& headers) {
  const std::string subj(subject);
  natsMsg* msg = detail::NewMessage(subj, nullptr, data, size, headers);
  const natsStatus s = natsConnection_PublishMsg(conn_, msg);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) Throw(s, "publish to " + subj);
}

void Connection::PublishRequest(std::string_view subject, std::string_view reply,
                                std::string_view payload) {
  const std::string subj(subject);
  const std::string inbox(reply);
  Check(natsConnection_PublishRequest(conn_, subj.c_str(), inbox.c_str(), payload.data(),
                                      static_cast<int>(payload.size())),
        "publish request to " + subj);
}

void Connection::PublishRequest(std::string_view subject, std::string_view reply, const void* data,
                                size_t size, const Headers& headers) {
  const std::string subj(subject);
  const std::string inbox(reply);
  natsMsg* msg = detail::NewMessage(subj, inbox.c_str(), data, size, headers);
  const natsStatus s = natsConnection_PublishMsg(conn_, msg);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) Throw(s, "publish request to " + subj);
}

std::string Connection::NewPrefixedInbox() const {
  const std::string inbox = NewInbox();  // _INBOX.<nuid>
  return inbox_prefix_ + inbox.substr(inbox.find('.'));
}

std::string Connection::NewInbox() {
  natsInbox* raw = nullptr;
  Check(natsInbox_Create(&raw), "create inbox");
  std::string inbox(raw);
  natsInbox_Destroy(raw);
  return inbox;
}

std::string RedactUrl(std::string_view urls) {
  std::string out;
  size_t start = 0;
  while (start <= urls.size()) {
    const size_t comma = std::min(urls.find(',', start), urls.size());
    std::string url(urls.substr(start, comma - start));
    const size_t scheme = url.find("://");
    const size_t from = scheme == std::string::npos ? 0 : scheme + 3;
    const size_t at = url.find('@', from);
    if (at != std::string::npos && url.find('/', from) > at) {
      const size_t colon = url.find(':', from);
      const size_t secret = colon != std::string::npos && colon < at ? colon + 1 : from;
      url.replace(secret, at - secret, "***");
    }
    out += (out.empty() ? "" : ",") + url;
    start = comma + 1;
  }
  return out;
}

std::string Connection::LastError() const {
  const char* text = nullptr;
  const natsStatus s = natsConnection_GetLastError(conn_, &text);
  return s == NATS_OK ? "" : std::string(text != nullptr ? text : natsStatus_GetText(s));
}

void Connection::Flush(int timeout_ms) {
  Check(natsConnection_FlushTimeout(conn_, timeout_ms), "flush");
}

std::unique_ptr<Subscription> Connection::Subscribe(std::string_view subject,
                                                    std::string_view queue_group,
                                                    MessageHandler handler) {
  const std::string subj(subject);
  const std::string queue(queue_group);
  auto fn = std::make_unique<MessageHandler>(std::move(handler));
  natsSubscription* raw = nullptr;
  const natsStatus s =
      queue.empty() ? natsConnection_Subscribe(&raw, conn_, subj.c_str(), OnMessage, fn.get())
                    : natsConnection_QueueSubscribe(&raw, conn_, subj.c_str(), queue.c_str(),
                                                    OnMessage, fn.get());
  if (s != NATS_OK) {
    Throw(s, "subscribe to " + subj + (queue.empty() ? "" : " (queue group " + queue + ")"));
  }
  auto sub = std::make_unique<Subscription>(raw, conn_);
  sub->handler_ = std::move(fn);
  if (natsSubscription_SetOnCompleteCB(raw, OnSubscriptionComplete, &sub->completed_) != NATS_OK) {
    sub->completed_ = true;  // already closed (connection closing): no callback will follow
  }
  Check(natsSubscription_SetPendingLimits(raw, kPendingMsgsLimit, kPendingBytesLimit),
        "set pending limits on " + subj);
  return sub;
}

std::unique_ptr<SyncSubscription> Connection::SubscribeSync(std::string_view subject) {
  const std::string subj(subject);
  natsSubscription* raw = nullptr;
  Check(natsConnection_SubscribeSync(&raw, conn_, subj.c_str()), "subscribe to " + subj);
  return std::make_unique<SyncSubscription>(raw, conn_);
}

Message Connection::Request(std::string_view subject, std::string_view payload, int timeout_ms) {
  const std::string subj(subject);
  natsMsg* reply = nullptr;
  Check(natsConnection_Request(&reply, conn_, subj.c_str(), payload.data(),
                               static_cast<int>(payload.size()), timeout_ms),
        "request on " + subj);
  return Message(reply);
}

bool Connection::connected() const {
  return natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED;
}

ConnectionStats Connection::stats() const {
  natsStatistics* raw = nullptr;
  Check(natsStatistics_Create(&raw), "create statistics");
  std::unique_ptr<natsStatistics, decltype(&natsStatistics_Destroy)> st(raw,
                                                                        &natsStatistics_Destroy);
  Check(natsConnection_GetStats(conn_, raw), "get statistics");
  ConnectionStats out;
  Check(natsStatistics_GetCounts(raw, &out.in_msgs, &out.in_bytes, &out.out_msgs, &out.out_bytes,
                                 &out.reconnects),
        "read statistics");
  return out;
}

}  // namespace fleetflow::nats

#pragma once
/// The one wrapper of nats.c in fleetflow. Engine operators and the firmware use NATS only
/// through these RAII types; nats.c status codes become fleetflow::nats::Error at this edge.
///
/// Thread-safety: a Connection may be used from any thread (nats.c serialises internally).
/// Subscription callbacks run on nats.c's delivery thread for that subscription, one message at
/// a time, in arrival order.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct __natsConnection;
struct __natsSubscription;
struct __natsMsg;

namespace fleetflow::nats {

/// Message headers (NATS 2.2+), in order; a name may repeat.
using Headers = std::vector<std::pair<std::string, std::string>>;

/// A nats.c call failed; what() names the operation and nats.c's status text.
/// `urls` (one or several, comma-separated) for logs and messages: a password or token in a
/// URL's user info becomes ***, e.g. nats://engine:***@host:4222.
std::string RedactUrl(std::string_view urls);

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, int status, int api_code = 0)
      : std::runtime_error(what), status_(status), api_code_(api_code) {}
  int status() const { return status_; }
  /// The JetStream API's error code (err_code) when the server refused a request; 0 otherwise.
  int api_code() const { return api_code_; }
  /// True when no server could be reached (nothing listening, connect timeout), as opposed to a
  /// server that refused the connection (credentials, TLS) or any other failure.
  bool unreachable() const;

 private:
  int status_;
  int api_code_;
};

/// How to reach the server. Secrets are referred to by file path only.
struct ConnectOptions {
  std::string url = "nats://127.0.0.1:4222";  // comma-separated list allowed
  std::string name = "fleetflow";             // client name shown by the server
  std::string creds_file;                     // .creds (JWT + NKey seed)
  std::string nkey_seed_file;                 // NKey seed file
  std::string user;                           // user name (with password_file)
  std::string password_file;                  // file holding the user's password
  std::string token_file;                     // file holding an authentication token
  std::string ca_file;                        // TLS: trusted CA; enables TLS
  std::string cert_file;                      // TLS: client certificate (with key_file)
  std::string key_file;
  int max_reconnect = -1;                    // -1: reconnect forever
  int reconnect_wait_ms = 250;               // wait between attempts (nats.c adds jitter)
  int64_t reconnect_buffer_bytes = 8 << 20;  // publishes buffered while disconnected
  int connect_timeout_ms = 2000;
  bool retry_on_failed_connect = false;  // keep trying in the background if the first connect fails
  bool send_asap = false;  // write each publish at once, without nats.c's flusher thread (fewer
                           // wake-ups for a low-rate publisher; more syscalls for a fast one)
  /// Subject prefix of this connection's inboxes (nats.c's and NewPrefixedInbox()); empty: the
  /// default "_INBOX". A private prefix (e.g. "_INBOX.vehicle.<id>") lets server permissions
  /// allow a client exactly its own replies.
  std::string inbox_prefix;
  /// Called on a nats.c thread when the connection is lost (false) and restored (true).
  std::function<void(bool connected)> on_connection_change;

  /// Defaults overridden by NATS_URL, NATS_CREDS, NATS_NKEY_SEED, NATS_USER, NATS_PASSWORD_FILE,
  /// NATS_TOKEN_FILE, NATS_CA, NATS_CERT, NATS_KEY.
  static ConnectOptions FromEnv();
};

/// A received message; owns the underlying natsMsg.
class Message {
 public:
  explicit Message(__natsMsg* m) : msg_(m) {}
  Message(Message&& o) noexcept : msg_(o.msg_) { o.msg_ = nullptr; }
  Message& operator=(Message&& o) noexcept;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  ~Message();

  std::string_view subject() const;
  std::string_view reply() const;
  const void* data() const;
  size_t size() const;
  std::string_view text() const { return {static_cast<const char*>(data()), size()}; }
  /// The first value of header `name`; empty when absent.
  std::string header(const char* name) const;
  /// True for the server's "503 no responders" status sent to the reply subject of a request
  /// published while nothing subscribed to its subject.
  bool no_responders() const;

 private:
  __natsMsg* msg_;
};

using MessageHandler = std::function<void(Message&&)>;

/// A subscription; unsubscribes when destroyed. The destructor waits until a callback already
/// running has returned, so it must not run inside this subscription's own handler.
class Subscription {
 public:
  Subscription(__natsSubscription* s, __natsConnection* conn) : sub_(s), conn_(conn) {}
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription();

  /// Stops delivery after the messages already received are handled; waits up to timeout_ms.
  void Drain(int timeout_ms);
  /// Number of messages received but not yet handed to the callback.
  int pending() const;

 private:
  friend class Connection;
  __natsSubscription* sub_;
  __natsConnection* conn_;
  std::unique_ptr<MessageHandler> handler_;
  std::atomic<bool> completed_{false};  // set once nats.c will not call handler_ again
};

/// A subscription without a thread or callback of its own: received messages wait in it until
/// taken with Next() (e.g. a thread that wakes anyway picks replies up in passing, without a
/// thread hand-off per message). Unsubscribes when destroyed.
class SyncSubscription {
 public:
  SyncSubscription(__natsSubscription* s, __natsConnection* conn) : sub_(s), conn_(conn) {}
  SyncSubscription(const SyncSubscription&) = delete;
  SyncSubscription& operator=(const SyncSubscription&) = delete;
  ~SyncSubscription();

  /// The next message received, waiting at most timeout_ms for one (0: not at all); nullopt when
  /// none came. `no_responders` is set when what came was the server's "503 no responders" to a
  /// request whose reply subject this is (nats.c swallows that message).
  std::optional<Message> Next(int timeout_ms, bool& no_responders);

 private:
  __natsSubscription* sub_;
  __natsConnection* conn_;
};

struct ConnectionStats {
  uint64_t in_msgs = 0, in_bytes = 0, out_msgs = 0, out_bytes = 0, reconnects = 0;
};

/// A connection to a NATS server (or cluster).
class Connection {
 public:
  /// Connects; throws Error when the server cannot be reached (unless retry_on_failed_connect).
  static std::unique_ptr<Connection> Connect(const ConnectOptions& options);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();  // flushes what was published (kCloseFlushMs at most), closes the connection
  static constexpr int kCloseFlushMs = 2000;

  void Publish(std::string_view subject, const void* data, size_t size);
  void Publish(std::string_view subject, std::string_view payload) {
    Publish(subject, payload.data(), payload.size());
  }
  void Publish(std::string_view subject, const void* data, size_t size, const Headers& headers);
  /// Publishes with a reply subject, for requests whose replies are gathered by a subscription
  /// on `reply` (e.g. on NewInbox()) instead of Request().
  void PublishRequest(std::string_view subject, std::string_view reply, std::string_view payload);
  /// The same with headers, e.g. a JetStream publish whose acknowledgement comes to `reply`
  /// (with a Nats-Msg-Id header for the stream's de-duplication).
  void PublishRequest(std::string_view subject, std::string_view reply, const void* data,
                      size_t size, const Headers& headers);
  /// A new unique inbox subject (_INBOX.<random>) to receive replies on.
  static std::string NewInbox();
  /// A new unique inbox subject under this connection's inbox prefix (<prefix>.<random>).
  std::string NewPrefixedInbox() const;
  /// Sends buffered publishes and waits for the server's PONG; throws on timeout.
  void Flush(int timeout_ms);
  /// Subscribes `subject` (wildcards allowed); a non-empty `queue_group` shares messages among
  /// all members of the group. `handler` runs on the subscription's delivery thread and must not
  /// throw (an escaping exception terminates the process, as with std::thread). Pending limits are
  /// generous (1M messages / 512 MiB) so a burst is queued rather than dropped.
  std::unique_ptr<Subscription> Subscribe(std::string_view subject, std::string_view queue_group,
                                          MessageHandler handler);
  /// Subscribes `subject` for taking messages with SyncSubscription::Next().
  std::unique_ptr<SyncSubscription> SubscribeSync(std::string_view subject);
  /// Request/reply; returns the reply or throws Error on timeout / no responders.
  Message Request(std::string_view subject, std::string_view payload, int timeout_ms);

  bool connected() const;
  ConnectionStats stats() const;
  /// The last error the server reported on this connection, "" when none: a permissions
  /// violation comes this way (-ERR), after the publish or subscription it refused.
  std::string LastError() const;
  /// Holds ConnectOptions::on_connection_change for nats.c's callbacks (internal).
  struct StateCallback;

  /// The raw handle, for the JetStream wrapper in this same folder only.
  __natsConnection* raw() const { return conn_; }

 private:
  Connection(__natsConnection* c, StateCallback* on_change, std::string inbox_prefix);
  __natsConnection* conn_;
  StateCallback* on_change_;  // lives as long as the process (nats.c may call it late)
  std::string inbox_prefix_;
};

}  // namespace fleetflow::nats

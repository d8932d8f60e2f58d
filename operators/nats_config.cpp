#include "nats_config.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "jetstream.hpp"

namespace fleetflow {

const OptionsSpec<NatsClientOptions>& NatsClientSpec() {
  using O = NatsClientOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    // A setting left empty is read from the environment variable that
    // nats::ConnectOptions::FromEnv reads for it, so every such field says so in the same words.
    auto or_env = [&c](const std::string& name, const std::string& what, const std::string& env,
                       std::string O::*member) {
      c.String(name, what + " Empty: $" + env + ".", member).Default("");
    };
    c.String("url",
             "NATS server URL(s), comma-separated. Empty: $NATS_URL, else "
             "nats://127.0.0.1:4222.",
             &O::url)
        .Default("")
        .Example(R"("${NATS_URL:-nats://127.0.0.1:4222}")");
    or_env("creds_file", "Path of a .creds file (JWT and NKey seed).", "NATS_CREDS",
           &O::creds_file);
    or_env("nkey_seed_file", "Path of an NKey seed file.", "NATS_NKEY_SEED", &O::nkey_seed_file);
    or_env("user", "User name, with password_file.", "NATS_USER", &O::user);
    or_env("password_file",
           "Path of a file holding the user's password (never the password itself).",
           "NATS_PASSWORD_FILE", &O::password_file);
    or_env("token_file", "Path of a file holding an authentication token.", "NATS_TOKEN_FILE",
           &O::token_file);
    c.Boolean("send_asap",
              "Write each publish to the socket at once instead of through nats.c's flusher "
              "thread (which waits up to 1 ms to batch). Measured (docs/BENCHMARKS.md): helps a "
              "connection that sends lone requests (KV writes, fetch requests: +19% JetStream "
              "ingest), hurts one that acknowledges in bulk.",
              &O::send_asap)
        .Default(false);
    or_env("ca_file", "TLS: trusted CA certificate file; enables TLS.", "NATS_CA", &O::ca_file);
    or_env("cert_file", "TLS: client certificate file.", "NATS_CERT", &O::cert_file);
    or_env("key_file", "TLS: client private key file.", "NATS_KEY", &O::key_file);
  });
}

nats::ConnectOptions NatsConnectOptions(const NatsClientOptions& options,
                                        const std::string& client_name) {
  nats::ConnectOptions o = nats::ConnectOptions::FromEnv();
  o.name = client_name;
  auto set = [](const std::string& v, std::string& target) {
    if (!v.empty()) target = v;
  };
  set(options.url, o.url);
  set(options.creds_file, o.creds_file);
  set(options.nkey_seed_file, o.nkey_seed_file);
  set(options.user, o.user);
  set(options.password_file, o.password_file);
  set(options.token_file, o.token_file);
  set(options.ca_file, o.ca_file);
  set(options.cert_file, o.cert_file);
  set(options.key_file, o.key_file);
  o.send_asap = options.send_asap;
  o.on_connection_change = [client_name, url = nats::RedactUrl(o.url)](bool connected) {
    if (connected) {
      spdlog::info("{}: connection to NATS ({}) restored", client_name, url);
    } else {
      spdlog::warn("{}: connection to NATS ({}) lost; reconnecting", client_name, url);
    }
  };
  return o;
}

std::unique_ptr<nats::Connection> ConnectForCheck(const NatsClientOptions& options,
                                                  std::vector<ConnectFinding>& findings) {
  nats::ConnectOptions o = NatsConnectOptions(options, "fleetflow:validate");
  o.on_connection_change = nullptr;
  o.retry_on_failed_connect = false;
  o.max_reconnect = 0;
  try {
    auto conn = nats::Connection::Connect(o);
    findings.push_back(
        {ConnectFinding::Level::kOk, "connected to NATS at " + nats::RedactUrl(o.url)});
    return conn;
  } catch (const std::exception& e) {
    findings.push_back({ConnectFinding::Level::kProblem,
                        "cannot connect to NATS at " + nats::RedactUrl(o.url) + ": " + e.what()});
    return nullptr;
  }
}

std::string NatsFailure(const std::exception& e, const nats::Connection& conn) {
  std::string text = e.what();
  const std::string last = conn.LastError();
  if (!last.empty() && text.find(last) == std::string::npos) text += " (server: " + last + ")";
  return text;
}

namespace {

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

}  // namespace

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

ConnectFinding StreamCaptures(const std::string& stream, const nats::StreamSummary& info,
                              const std::string& wanted) {
  const bool covered = std::any_of(info.subjects.begin(), info.subjects.end(),
                                   [&](const std::string& p) { return Covers(p, wanted); });
  return {covered ? ConnectFinding::Level::kOk : ConnectFinding::Level::kProblem,
          "stream " + stream + " (" + std::to_string(info.messages) + " messages) captures " +
              Join(info.subjects) +
              (covered ? "" : ", not " + wanted + ", which the source reads")};
}

void CheckReplicas(const std::string& what, const nats::StreamSummary& info, int replicas,
                   std::vector<ConnectFinding>& findings) {
  if (info.replicas >= replicas) return;
  findings.push_back({ConnectFinding::Level::kProblem,
                      what + " has " + std::to_string(info.replicas) + " replica" +
                          (info.replicas == 1 ? "" : "s") + ", the pipeline asks for " +
                          std::to_string(replicas) +
                          ": it was created so and is not changed at start; losing the node that "
                          "holds it stops the engine. Raise its replicas on the server (a stream "
                          "update), or recreate it"});
}

void CheckBucket(nats::Connection& conn, nats::JetStream& js, const std::string& bucket,
                 const std::string& what, int replicas, std::vector<ConnectFinding>& findings) {
  try {
    const auto stream = js.FindStream("KV_" + bucket);
    if (stream) {
      findings.push_back({ConnectFinding::Level::kOk, "bucket " + bucket + " (" + what +
                                                          "): " + std::to_string(stream->messages) +
                                                          " entries"});
      CheckReplicas("bucket " + bucket, *stream, replicas, findings);
    } else {
      findings.push_back({ConnectFinding::Level::kNote,
                          "bucket " + bucket + " (" + what + ") does not exist: created at start"});
    }
  } catch (const std::exception& e) {
    findings.push_back({ConnectFinding::Level::kProblem,
                        "bucket " + bucket + " (" + what + "): " + NatsFailure(e, conn)});
  }
}

std::unique_ptr<nats::Connection> CheckPartialsStream(const NatsClientOptions& options,
                                                      const std::string& stream,
                                                      const std::string& subject, int replicas,
                                                      std::vector<ConnectFinding>& findings) {
  auto conn = ConnectForCheck(options, findings);
  if (!conn) return nullptr;
  try {
    nats::JetStream js(*conn);
    if (const auto info = js.FindStream(stream)) {
      findings.push_back(StreamCaptures(stream, *info, subject));
      CheckReplicas("stream " + stream, *info, replicas, findings);
    } else {
      findings.push_back({ConnectFinding::Level::kNote,
                          "stream " + stream + " does not exist: created at start on " + subject});
    }
  } catch (const std::exception& e) {
    findings.push_back(
        {ConnectFinding::Level::kProblem, "stream " + stream + ": " + NatsFailure(e, *conn)});
  }
  return conn;
}

const OptionsSpec<KvBucketSettings>& KvBucketSpec() {
  using O = KvBucketSettings;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.String("bucket_storage", "jetstream_kv: storage of a created bucket.", &O::storage)
        .Default("file")
        .OneOf({"file", "memory"});
    c.Integer("bucket_replicas",
              "jetstream_kv: replicas of a created bucket (3 on a 3-node NATS cluster); "
              "validate --connect reports an existing one with fewer.",
              &O::replicas)
        .Default(int64_t{1})
        .Min(1)
        .Max(5);
  });
}

std::vector<ConnectFinding> CheckStateBucket(const NatsClientOptions& nats,
                                             const std::string& bucket,
                                             const KvBucketSettings& settings,
                                             const std::string& what) {
  std::vector<ConnectFinding> out;
  auto conn = ConnectForCheck(nats, out);
  if (!conn) return out;
  try {
    nats::JetStream js(*conn);
    CheckBucket(*conn, js, bucket, what, settings.replicas, out);
  } catch (const std::exception& e) {
    out.push_back({ConnectFinding::Level::kProblem, "JetStream: " + NatsFailure(e, *conn)});
  }
  return out;
}

}  // namespace fleetflow

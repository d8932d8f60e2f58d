#pragma once
/// The NATS connection settings shared by every operator that talks to NATS (nats_source,
/// keyed_last_value's jetstream_kv store): one spec, one way to read it.

#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "nats_client.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace fleetflow {

namespace nats {
class JetStream;
struct StreamSummary;
}  // namespace nats

/// The NATS connection settings of a node, as configured (empty strings: the environment's).
struct NatsClientOptions {
  std::string url;
  std::string creds_file;
  std::string nkey_seed_file;
  std::string user;
  std::string password_file;
  std::string token_file;
  bool send_asap = false;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

/// The spec of url, creds_file, nkey_seed_file, user, password_file, token_file, send_asap,
/// ca_file, cert_file, key_file; an operator takes them in with OptionsSpec::Include.
const OptionsSpec<NatsClientOptions>& NatsClientSpec();

/// How a Key/Value bucket an operator keeps its state in is created when missing
/// (keyed_last_value's and window_aggregate's jetstream_kv backend, which may share one).
struct KvBucketSettings {
  std::string storage = "file";
  int replicas = 1;
};
/// The spec of bucket_storage and bucket_replicas; taken in with OptionsSpec::Include.
const OptionsSpec<KvBucketSettings>& KvBucketSpec();

/// For check_connect of a jetstream_kv backend: the server, and the bucket (`what` says what it
/// holds).
std::vector<ConnectFinding> CheckStateBucket(const NatsClientOptions& nats,
                                             const std::string& bucket,
                                             const KvBucketSettings& settings,
                                             const std::string& what);

/// The environment's NATS settings (NATS_URL, NATS_CREDS, …) overridden by the non-empty
/// settings of `options`; `client_name` is shown by the server.
nats::ConnectOptions NatsConnectOptions(const NatsClientOptions& options,
                                        const std::string& client_name);

/// For check_connect: connects as the node would, once (no retry). Adds a finding either way;
/// nullptr when it failed.
std::unique_ptr<nats::Connection> ConnectForCheck(const NatsClientOptions& options,
                                                  std::vector<ConnectFinding>& findings);

/// For check_connect: why a JetStream API request got no answer, with the server's last error
/// on `conn` (a permissions violation names the subject refused).
std::string NatsFailure(const std::exception& e, const nats::Connection& conn);

/// For check_connect: whether the existing stream `stream` (`info`) captures the subjects
/// `wanted` a source reads.
ConnectFinding StreamCaptures(const std::string& stream, const nats::StreamSummary& info,
                              const std::string& wanted);

/// For check_connect: a problem when an existing stream or bucket (`what`) has fewer replicas
/// than the pipeline asks for (it was created so, and is not changed at start).
void CheckReplicas(const std::string& what, const nats::StreamSummary& info, int replicas,
                   std::vector<ConnectFinding>& findings);

/// "a, b, c".
std::string Join(const std::vector<std::string>& items);

/// For check_connect: whether Key/Value bucket `bucket` exists (`what` says what it is for); it
/// is created at start when missing, so a missing one is a note.
void CheckBucket(nats::Connection& conn, nats::JetStream& js, const std::string& bucket,
                 const std::string& what, int replicas, std::vector<ConnectFinding>& findings);

/// For check_connect of the stage across workers (fleet_publish, fleet_source): the server, and
/// whether stream `stream` exists and captures `subject` (created at start when missing).
/// Returns the connection for further checks (nullptr when it failed).
std::unique_ptr<nats::Connection> CheckPartialsStream(const NatsClientOptions& options,
                                                      const std::string& stream,
                                                      const std::string& subject, int replicas,
                                                      std::vector<ConnectFinding>& findings);

}  // namespace fleetflow

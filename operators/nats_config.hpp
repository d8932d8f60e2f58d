#pragma once
/// The NATS connection settings shared by every operator that talks to NATS (nats_source,
/// keyed_last_value's jetstream_kv store): one spec, one way to read it.

#include <string>

#include "config.hpp"
#include "nats_client.hpp"

namespace fleetflow {

/// Adds url, creds_file, nkey_seed_file, user, password_file, token_file, ca_file, cert_file,
/// key_file to `spec`.
void AddNatsConnectionFields(ConfigSpec& spec);

/// The environment's NATS settings (NATS_URL, NATS_CREDS, …) overridden by the non-empty fields
/// of `config`; `client_name` is shown by the server.
nats::ConnectOptions NatsConnectOptions(const Config& config, const std::string& client_name);

}  // namespace fleetflow

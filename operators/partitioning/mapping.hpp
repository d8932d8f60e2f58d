#pragma once
/// How the vehicles' subjects reach the partitions (docs/scaling.md, "Partitions come from the
/// NATS server"): vehicle.<id>.<sensor> is stored as <prefix>.<n>.<id>.<sensor>, n =
/// partition(P, id), either by the account's subject mapping in the server's configuration
/// (any nats-server since 2.8) or by the stream's own subject transform, which the engine
/// creates through the JetStream API (nats-server 2.10 or later: a managed NATS account works
/// with credentials alone).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jetstream.hpp"
#include "nats_client.hpp"
#include "registry.hpp"

namespace fleetflow {

/// Who partitions the subjects: `kAuto` takes what an existing stream does; for a new stream, the
/// account mapping when the server has one, else the stream's transform when the server can.
enum class PartitionMapping { kAuto, kAccount, kStream };

struct PartitionLayout {
  std::string prefix;
  uint32_t partitions = 0;
  PartitionMapping mapping = PartitionMapping::kAuto;
  bool check_mapping = true;  // probe the account mapping at start
  bool create_stream = true;
};

/// The subject transform both ways share: vehicle.*.* → <prefix>.{{partition(P,1)}}.….
nats::SubjectTransform PartitionTransform(const std::string& prefix, uint32_t partitions);

/// Makes sure the stream `stream.name` stores the vehicles' subjects partitioned as `layout`
/// says, creating it (when `create_stream`) the way `layout.mapping` chooses, and checks an
/// existing one. `stream` is the stream to create, its subjects and transform aside. Throws
/// std::runtime_error naming what to change when the server or the stream cannot give the
/// partitions (on a server older than 2.10 without the mapping: both ways to get it).
void SettlePartitionedStream(nats::Connection& conn, nats::JetStream& js,
                             nats::StreamOptions stream, const PartitionLayout& layout);

/// Checks that an existing stream partitions as `layout` says: its transform, or (without one)
/// the server's account mapping when `check_mapping`. Throws std::runtime_error naming the
/// difference.
void CheckPartitionedStream(nats::Connection& conn, const std::string& stream,
                            const nats::StreamSummary& found, const PartitionLayout& layout);

/// `fleetflow validate --connect`: how the partitions come, for the stream as `found` (nullopt:
/// it does not exist yet; on a server without the account mapping this probes whether it can
/// transform: nats::JetStream::TransformsSubjects creates and deletes a stream of its own).
void CheckPartitionsForConnect(nats::Connection& conn, nats::JetStream& js,
                               const std::string& stream,
                               const std::optional<nats::StreamSummary>& found,
                               const PartitionLayout& layout, std::vector<ConnectFinding>& out);

/// Checks that the server maps the vehicles' subjects into `partitions` partitions under
/// `prefix`; throws std::runtime_error with the configuration lines to add when it does not.
void CheckPartitionMapping(nats::Connection& conn, const std::string& prefix, uint32_t partitions);

/// Checks that an existing stream's transform partitions as `layout` says; throws
/// std::runtime_error naming the difference.
void CheckStreamTransform(const std::string& stream, const nats::SubjectTransform& found,
                          const PartitionLayout& layout);

/// True for the probe's own subject, unmapped (vehicle.<probe>.<sensor>): not telemetry.
bool IsMappingProbe(std::string_view wire_subject);

}  // namespace fleetflow

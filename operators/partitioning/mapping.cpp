#include "mapping.hpp"

#include <spdlog/spdlog.h>

#include <optional>
#include <stdexcept>

#include "message.hpp"
#include "nats_config.hpp"
#include "wire.hpp"

namespace fleetflow {

namespace {

/// The vehicle id of the probe that checks the server's partition mapping at start.
constexpr std::string_view kProbeVehicle = "_fleetflow_probe";

std::string AccountMappingLine(const std::string& prefix, uint32_t partitions) {
  const auto t = PartitionTransform(prefix, partitions);
  return "mappings = { \"" + t.source + "\": \"" + t.destination + "\" }";
}

/// Publishes the probe on vehicle.<probe>.probe and returns the subject it came back on under
/// `prefix` (nullopt: it did not). JetStream refuses to store it (it expects a stream that does
/// not exist).
std::optional<std::string> ProbeAccountMapping(nats::Connection& conn, const std::string& prefix) {
  auto sub = conn.SubscribeSync(prefix + ".*." + std::string(kProbeVehicle) + ".probe");
  conn.Flush(5000);
  conn.Publish(wire::SampleSubject(kProbeVehicle, "probe"), "", 0,
               {{"Nats-Expected-Stream", "_fleetflow_no_stream_"}});
  conn.Flush(5000);
  bool no_responders = false;
  const auto m = sub->Next(2000, no_responders);
  if (!m) return std::nullopt;
  return std::string(m->subject());
}

/// The subject the probe must come back on.
std::string ProbeWanted(const std::string& prefix, uint32_t partitions) {
  return prefix + "." + std::to_string(PartitionOf(kProbeVehicle, partitions)) + "." +
         std::string(kProbeVehicle) + ".probe";
}

[[noreturn]] void ThrowOtherCount(const std::string& got, const std::string& prefix,
                                  uint32_t partitions) {
  throw std::runtime_error(
      "partitions: the NATS server maps " + wire::SampleSubject(kProbeVehicle, "probe") + " to " +
      got + ", expected " + ProbeWanted(prefix, partitions) + " for " + std::to_string(partitions) +
      " partitions: the mapping's partition count must equal the "
      "pipeline's \"partitions\". Expected mapping: " +
      AccountMappingLine(prefix, partitions));
}

/// The way a stream created now partitions: the account mapping when `layout` asks for it or,
/// for kAuto, when the server has it (or check_mapping is off: the mapping is then taken on
/// trust, as before the stream could transform); else the stream's transform, when the server
/// can. Throws naming both ways when it cannot.
PartitionMapping WayForNewStream(nats::Connection& conn, nats::JetStream& js,
                                 const std::string& stream, const PartitionLayout& l) {
  if (l.mapping == PartitionMapping::kAccount) {
    if (l.check_mapping) CheckPartitionMapping(conn, l.prefix, l.partitions);
    return PartitionMapping::kAccount;
  }
  if (l.mapping == PartitionMapping::kAuto) {
    if (!l.check_mapping) return PartitionMapping::kAccount;
    if (const auto got = ProbeAccountMapping(conn, l.prefix)) {
      if (*got != ProbeWanted(l.prefix, l.partitions))
        ThrowOtherCount(*got, l.prefix, l.partitions);
      return PartitionMapping::kAccount;
    }
  }
  const std::string neither =
      "partitions: " +
      std::string(l.mapping == PartitionMapping::kAuto
                      ? "the NATS server does not map vehicle.<id>.<sensor> into partitions "
                        "(the probe on " +
                            wire::SampleSubject(kProbeVehicle, "probe") + " did not come back), "
                      : "partition_mapping is \"stream\", ") +
      "and the stream " + stream + " cannot transform its subjects ";
  const std::string ways =
      ". Either run nats-server 2.10 or later (managed NATS services do), where the engine "
      "creates the stream with its subject transform itself (docs/deploy.md, \"A managed "
      "NATS\"), or add to the account of the vehicles and the engine in the server's "
      "configuration: " +
      AccountMappingLine(l.prefix, l.partitions) +
      " (docs/scaling.md) and set \"partition_mapping\": \"account\" or \"auto\".";
  bool transforms = false;
  try {
    transforms = js.TransformsSubjects();
  } catch (const std::exception& e) {
    throw std::runtime_error(neither + "(probing it failed: " + e.what() +
                             "; the engine needs to create and delete the stream " +
                             nats::JetStream::kTransformProbeStream + ")" + ways);
  }
  if (!transforms) {
    throw std::runtime_error(neither + "(subject transforms need nats-server 2.10 or later)" +
                             ways);
  }
  return PartitionMapping::kStream;
}

}  // namespace

nats::SubjectTransform PartitionTransform(const std::string& prefix, uint32_t partitions) {
  return {wire::SampleSubject("*", "*"), prefix + ".{{partition(" + std::to_string(partitions) +
                                             ",1)}}.{{wildcard(1)}}.{{wildcard(2)}}"};
}

void SettlePartitionedStream(nats::Connection& conn, nats::JetStream& js,
                             nats::StreamOptions stream, const PartitionLayout& l) {
  auto found = js.FindStream(stream.name);
  if (!found && l.create_stream) {
    if (WayForNewStream(conn, js, stream.name, l) == PartitionMapping::kAccount) {
      stream.subjects = {l.prefix + ".*.*.*"};
      stream.transform.reset();
    } else {
      stream.transform = PartitionTransform(l.prefix, l.partitions);
      stream.subjects = {stream.transform->source};
    }
    // What the server holds: the one this worker asked for, or another worker's.
    found = js.EnsureStream(stream);
    spdlog::info("stream {}: on {}{}", stream.name, Join(found->subjects),
                 found->transform ? ", its subject transform partitions them (" +
                                        found->transform->destination + ")"
                                  : " (the server's account mapping partitions them)");
  }
  if (found) {
    CheckPartitionedStream(conn, stream.name, *found, l);
  } else if (l.mapping != PartitionMapping::kStream && l.check_mapping) {
    // create_stream is off: a missing stream fails at the consumers.
    CheckPartitionMapping(conn, l.prefix, l.partitions);
  }
}

void CheckPartitionedStream(nats::Connection& conn, const std::string& stream,
                            const nats::StreamSummary& found, const PartitionLayout& l) {
  if (found.transform) {
    if (l.mapping == PartitionMapping::kAccount) {
      throw std::runtime_error(
          "partitions: stream " + stream + " transforms its subjects itself (" +
          found.transform->source + " → " + found.transform->destination +
          "), but partition_mapping is \"account\" (the server's mapping, on a stream of " +
          l.prefix + ".*.*.*): set \"partition_mapping\": \"stream\" or \"auto\"");
    }
    CheckStreamTransform(stream, *found.transform, l);
    return;
  }
  if (l.mapping == PartitionMapping::kStream) {
    throw std::runtime_error(
        "partitions: stream " + stream +
        " exists without a subject transform (it was created for the server's account "
        "mapping), but partition_mapping is \"stream\": set \"partition_mapping\": \"account\" "
        "or \"auto\", or read another stream");
  }
  if (l.check_mapping) CheckPartitionMapping(conn, l.prefix, l.partitions);
}

void CheckPartitionsForConnect(nats::Connection& conn, nats::JetStream& js,
                               const std::string& stream,
                               const std::optional<nats::StreamSummary>& found,
                               const PartitionLayout& l, std::vector<ConnectFinding>& out) {
  using Level = ConnectFinding::Level;
  const std::string account_subjects = l.prefix + ".*.*.*";
  const std::string p = std::to_string(l.partitions) + " partitions";
  const ConnectFinding mapped{Level::kOk, "the server maps vehicle.*.* into " + p + " (" +
                                              l.prefix + ".<n>.<id>.<sensor>)"};
  try {
    if (found) {
      if (!found->transform) out.push_back(StreamCaptures(stream, *found, account_subjects));
      CheckPartitionedStream(conn, stream, *found, l);
      if (found->transform) {
        out.push_back({Level::kOk, "stream " + stream + " transforms " + found->transform->source +
                                       " into " + p + " (" + found->transform->destination + ")"});
      } else if (l.check_mapping) {
        out.push_back(mapped);
      }
    } else if (l.create_stream) {
      const bool account = WayForNewStream(conn, js, stream, l) == PartitionMapping::kAccount;
      const auto t = PartitionTransform(l.prefix, l.partitions);
      out.push_back({Level::kNote, "stream " + stream + " does not exist: created at start on " +
                                       (account ? account_subjects + " (the server's mapping)"
                                                : t.source + ", transformed into " + p + " (" +
                                                      t.destination + ")")});
      if (account && l.check_mapping) out.push_back(mapped);
    } else {
      out.push_back({Level::kProblem, "stream " + stream +
                                          " does not exist and create_stream is false: create it "
                                          "on " +
                                          account_subjects + ", or set \"create_stream\": true"});
    }
  } catch (const std::exception& e) {
    out.push_back({Level::kProblem, NatsFailure(e, conn)});
  }
}

void CheckStreamTransform(const std::string& stream, const nats::SubjectTransform& found,
                          const PartitionLayout& l) {
  const auto want = PartitionTransform(l.prefix, l.partitions);
  if (found == want) return;
  throw std::runtime_error("partitions: stream " + stream + " transforms " + found.source + " → " +
                           found.destination + ", expected " + want.source + " → " +
                           want.destination +
                           ": the stream's partition count and prefix must "
                           "equal the pipeline's \"partitions\" and \"partition_prefix\"");
}

/// Checks that the server maps the vehicles' subjects into partitions as configured: a probe
/// published on vehicle.<probe>.probe must come back on <prefix>.<n>.<probe>.probe, n as
/// computed here. The probe is refused by JetStream, so it is never stored.
void CheckPartitionMapping(nats::Connection& conn, const std::string& prefix, uint32_t partitions) {
  const std::string probe_subject = wire::SampleSubject(kProbeVehicle, "probe");
  const auto got = ProbeAccountMapping(conn, prefix);
  if (!got) {
    throw std::runtime_error(
        "partitions: the NATS server does not map vehicle.<id>.<sensor> to " + prefix +
        ".<partition>.<id>.<sensor> (a probe on " + probe_subject +
        " did not come back). Add to the account of the vehicles and the engine in the "
        "server's configuration: " +
        AccountMappingLine(prefix, partitions) +
        " (docs/scaling.md), or check that the engine may publish " + probe_subject +
        " and subscribe to " + prefix + ".*." + std::string(kProbeVehicle) +
        ".probe. On nats-server 2.10 or later, \"partition_mapping\": \"auto\" or \"stream\" "
        "lets the stream partition instead (docs/deploy.md, \"A managed NATS\"). Set "
        "\"check_mapping\": false to skip this check.");
  }
  if (*got != ProbeWanted(prefix, partitions)) ThrowOtherCount(*got, prefix, partitions);
}

bool IsMappingProbe(std::string_view wire_subject) {
  const std::string_view root = wire::kSubjectRoot;
  if (!wire_subject.starts_with(root) || wire_subject.size() <= root.size()) return false;
  const std::string_view rest = wire_subject.substr(root.size() + 1);
  return rest.starts_with(kProbeVehicle) && rest.substr(kProbeVehicle.size()).starts_with('.');
}

}  // namespace fleetflow

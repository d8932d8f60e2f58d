#include "mapping.hpp"

#include <stdexcept>

#include "message.hpp"
#include "wire.hpp"

namespace fleetflow {

namespace {

/// The vehicle id of the probe that checks the server's partition mapping at start.
constexpr std::string_view kProbeVehicle = "_fleetflow_probe";

}  // namespace

/// Checks that the server maps the vehicles' subjects into partitions as configured: a probe
/// published on vehicle.<probe>.probe must come back on <prefix>.<n>.<probe>.probe, n as
/// computed here. The probe is refused by JetStream (it expects a stream that does not
/// exist), so it is never stored.
void CheckPartitionMapping(nats::Connection& conn, const std::string& prefix, uint32_t partitions) {
  const std::string probe_subject = wire::SampleSubject(kProbeVehicle, "probe");
  auto sub = conn.SubscribeSync(prefix + ".*." + std::string(kProbeVehicle) + ".probe");
  conn.Flush(5000);
  conn.Publish(probe_subject, "", 0, {{"Nats-Expected-Stream", "_fleetflow_no_stream_"}});
  conn.Flush(5000);
  bool no_responders = false;
  const auto m = sub->Next(2000, no_responders);
  const uint32_t expected = PartitionOf(kProbeVehicle, partitions);
  const std::string mapping = "mappings = { \"vehicle.*.*\": \"" + prefix + ".{{partition(" +
                              std::to_string(partitions) +
                              ",1)}}.{{wildcard(1)}}.{{wildcard(2)}}\" }";
  if (!m) {
    throw std::runtime_error(
        "partitions: the NATS server does not map vehicle.<id>.<sensor> to " + prefix +
        ".<partition>.<id>.<sensor> (a probe on " + probe_subject +
        " did not come back). Add to the account of the vehicles and the engine in the "
        "server's configuration: " +
        mapping + " (docs/scaling.md), or check that the engine may publish " + probe_subject +
        " and subscribe to " + prefix + ".*." + std::string(kProbeVehicle) +
        ".probe. Set \"check_mapping\": false to skip this check.");
  }
  const std::string_view got = m->subject();
  const std::string want =
      prefix + "." + std::to_string(expected) + "." + std::string(kProbeVehicle) + ".probe";
  if (got != want) {
    throw std::runtime_error("partitions: the NATS server maps " + probe_subject + " to " +
                             std::string(got) + ", expected " + want + " for " +
                             std::to_string(partitions) +
                             " partitions: the mapping's partition count must equal the "
                             "pipeline's \"partitions\". Expected mapping: " +
                             mapping);
  }
}

bool IsMappingProbe(std::string_view wire_subject) {
  const std::string_view root = wire::kSubjectRoot;
  if (!wire_subject.starts_with(root) || wire_subject.size() <= root.size()) return false;
  const std::string_view rest = wire_subject.substr(root.size() + 1);
  return rest.starts_with(kProbeVehicle) && rest.substr(kProbeVehicle.size()).starts_with('.');
}

}  // namespace fleetflow

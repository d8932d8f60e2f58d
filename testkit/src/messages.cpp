#include "fleetflow/testkit/messages.hpp"

namespace fleetflow::testkit {

SampleBatch Samples(std::string vehicle, std::string sensor,
                    const std::vector<std::pair<int64_t, double>>& ts_value) {
  SampleBatch b{std::move(vehicle), std::move(sensor), {}, nullptr};
  uint32_t seq = 0;
  for (const auto& [ts, value] : ts_value) b.points.push_back(wire::Point{ts, seq++, value});
  return b;
}

PartitionEvent Assigned(uint32_t partition, std::optional<EmittedWindows> emitted) {
  PartitionEvent e;
  e.partition = partition;
  e.emitted = std::move(emitted);
  return e;
}

PartitionEvent Revoked(uint32_t partition) {
  PartitionEvent e;
  e.kind = PartitionEvent::Kind::kRevoked;
  e.partition = partition;
  e.handover = std::make_shared<Handover>();
  return e;
}

void Acknowledge(const std::vector<Message>& ms) {
  for (const auto& m : ms) {
    if (const auto* b = std::get_if<SampleBatch>(m.get()); b != nullptr && b->ack) {
      b->ack->Done();
    } else if (const auto* s = std::get_if<StatusEvent>(m.get()); s != nullptr && s->ack) {
      s->ack->Done();
    }
  }
}

std::vector<wire::Point> Points(const std::vector<Message>& ms, std::string_view sensor) {
  std::vector<wire::Point> out;
  for (const auto& b : Only<SampleBatch>(ms)) {
    if (sensor.empty() || b->sensor == sensor) {
      out.insert(out.end(), b->points.begin(), b->points.end());
    }
  }
  return out;
}

std::vector<int64_t> Times(const std::vector<wire::Point>& points) {
  std::vector<int64_t> out;
  for (const auto& p : points) out.push_back(p.ts_ns);
  return out;
}

std::vector<double> Values(const std::vector<wire::Point>& points) {
  std::vector<double> out;
  for (const auto& p : points) out.push_back(p.value);
  return out;
}

std::shared_ptr<const WindowBatch> WindowAt(const std::vector<Message>& ms, int64_t window_ns) {
  for (const auto& b : Only<WindowBatch>(ms)) {
    if (b->window_ns == window_ns) return b;
  }
  return nullptr;
}

namespace {

void PrintValues(std::ostream& os, const std::vector<std::optional<double>>& values) {
  os << '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) os << ", ";
    if (values[i]) {
      os << *values[i];
    } else {
      os << "null";
    }
  }
  os << ']';
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Row& row) {
  os << "{window " << row.window_ns << ", " << row.vehicle << ", before ";
  PrintValues(os, row.before);
  os << ", after ";
  PrintValues(os, row.after);
  return os << '}';
}

std::vector<Row> Rows(const std::vector<Message>& ms, std::string_view vehicle) {
  std::vector<Row> out;
  for (const auto& b : Only<WindowBatch>(ms)) {
    for (const WindowRow& r : b->rows) {
      if (!vehicle.empty() && r.vehicle != vehicle) continue;
      Row row{b->window_ns, r.vehicle, {}, {}};
      for (const Slot& s : b->Slots(r)) {
        row.before.push_back(s.before ? std::optional(s.before->value) : std::nullopt);
        row.after.push_back(s.after ? std::optional(s.after->value) : std::nullopt);
      }
      out.push_back(std::move(row));
    }
  }
  return out;
}

std::vector<int64_t> RowTimes(const std::vector<Message>& ms, std::string_view vehicle) {
  std::vector<int64_t> out;
  for (const Row& r : Rows(ms, vehicle)) out.push_back(r.window_ns);
  return out;
}

}  // namespace fleetflow::testkit

#pragma once
/// The operator test kit: building the messages an operator is fed, and reading what it emitted.
/// Every reader takes the messages as Feed() returns them or CaptureSink holds them.

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "message.hpp"

namespace fleetflow::testkit {

/// A SampleBatch of `sensor` of `vehicle`: a point per (ts_ns, value), seq 0, 1, 2... in order.
SampleBatch Samples(std::string vehicle, std::string sensor,
                    const std::vector<std::pair<int64_t, double>>& ts_value);

/// A partitioned source's events: partition `partition` assigned (with the previous owner's
/// record, when it left one: each windowed node's last window, by node id) or revoked (with a
/// Handover the operators fill in as it passes: read its windows() after feeding the event).
PartitionEvent Assigned(uint32_t partition, std::optional<EmittedWindows> emitted = {});
PartitionEvent Revoked(uint32_t partition);

/// Gives the acknowledgement of every SampleBatch and StatusEvent of `ms` that carries one, as
/// the state operator does once they are stored.
void Acknowledge(const std::vector<Message>& ms);

/// The messages of type T in `ms`, in order; each keeps its message alive, so
/// `for (const auto& b : Only<WindowBatch>(h.TickAt(t)))` is safe.
template <typename T>
std::vector<std::shared_ptr<const T>> Only(const std::vector<Message>& ms) {
  std::vector<std::shared_ptr<const T>> out;
  for (const auto& m : ms) {
    if (const T* t = std::get_if<T>(m.get())) out.emplace_back(m, t);
  }
  return out;
}

/// The one message of type T in `ms`; null when there is none or more than one.
template <typename T>
std::shared_ptr<const T> OnlyOne(const std::vector<Message>& ms) {
  auto all = Only<T>(ms);
  return all.size() == 1 ? all.front() : nullptr;
}

/// The points of the SampleBatches in `ms`, in order; of `sensor` only, unless it is empty.
std::vector<wire::Point> Points(const std::vector<Message>& ms, std::string_view sensor = {});
/// The event times, and the values, of `points`.
std::vector<int64_t> Times(const std::vector<wire::Point>& points);
std::vector<double> Values(const std::vector<wire::Point>& points);

/// The WindowBatch of window time `window_ns` in `ms`; null when there is none.
std::shared_ptr<const WindowBatch> WindowAt(const std::vector<Message>& ms, int64_t window_ns);

/// A row of an emitted WindowBatch, flattened for comparison: per sensor of the batch, in its
/// order, the value of the sample before the window time and of the sample after it (nullopt:
/// none within the join's max gap).
struct Row {
  int64_t window_ns = 0;
  std::string vehicle;
  std::vector<std::optional<double>> before;
  std::vector<std::optional<double>> after;
  bool operator==(const Row&) const = default;
};
/// e.g. `{window 1700000001000000000, v1, before [10, null], after [20, null]}`.
std::ostream& operator<<(std::ostream& os, const Row& row);

/// The rows of the WindowBatches in `ms`, in order; of `vehicle` only, unless it is empty.
std::vector<Row> Rows(const std::vector<Message>& ms, std::string_view vehicle = {});
/// The window times of those rows.
std::vector<int64_t> RowTimes(const std::vector<Message>& ms, std::string_view vehicle = {});

}  // namespace fleetflow::testkit

#pragma once
/// The messages that flow along the edges of a pipeline graph.
///
/// Every edge carries `Message` (a shared, immutable envelope; the runtime moves them in packets,
/// in order, and operators see them one at a time). Ports have a kind:
///  - kSamples edges carry SampleBatch and StatusEvent;
///  - kRows edges carry WindowBatch (window_join) or StatsBatch (window_aggregate);
///  - every edge carries Tick, the engine's clock punctuation: it enters at the sources after
///    everything they emitted before it, and every operator forwards it after handling it, so an
///    operator that sees Tick{t} has seen all input that entered before t was read;
///  - every edge carries PartitionEvent, forwarded the same way.

#include <oneapi/tbb/scalable_allocator.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "wire.hpp"

#ifndef FF_SANITIZED  // set by CMakeLists.txt for sanitizer builds
#define FF_SANITIZED 0
#endif

namespace fleetflow {

/// Allocates what lives for one message (the message, its acknowledgement) with oneTBB's
/// scalable allocator: a source's thread makes them and the graph's threads free them, which
/// glibc's allocator serves from its slow path (docs/BENCHMARKS.md §2). Sanitizer builds keep
/// the standard allocator, which the sanitizers check.
template <typename T, typename... Args>
std::shared_ptr<T> MakePerMessage(Args&&... args) {
#if FF_SANITIZED
  return std::make_shared<T>(std::forward<Args>(args)...);
#else
  return std::allocate_shared<T>(tbb::scalable_allocator<T>(), std::forward<Args>(args)...);
#endif
}

/// The allocator of what a message holds in bulk (a window's slots): oneTBB's scalable allocator
/// keeps a freed block of up to a few tens of MB for the next one, where glibc hands it back to
/// the kernel and the next window pays a page fault per 4 KB of it (docs/BENCHMARKS.md §4). It
/// does so only once blocks of that size came and went twice: a large block
/// (kKeptBlockBytes or more) is also kept here when freed, one at a time (the newest), and the
/// next large block is made of it when it is big enough, so that only a worker's first large
/// window takes new memory, not its first two (new memory cost 125-150 ms of CPU per 45 MB in a
/// VM). Sanitizer builds keep the standard allocator, which the sanitizers check.
#if FF_SANITIZED
template <typename T>
using PerMessageAllocator = std::allocator<T>;
#else
inline constexpr size_t kKeptBlockBytes = size_t{4} << 20;
/// The kept block when it holds `bytes` at least and not twice as much (it is no longer kept
/// then), else nullptr.
void* TakeKeptBlock(size_t bytes);
/// Keeps `block` (scalable_malloc's) for the next TakeKeptBlock, freeing the one kept before.
void KeepBlock(void* block);

template <typename T>
class PerMessageAllocator {
 public:
  using value_type = T;
  PerMessageAllocator() = default;
  template <typename U>
  PerMessageAllocator(const PerMessageAllocator<U>&) noexcept {}  // NOLINT: rebinding

  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_array_new_length();
    const size_t bytes = n * sizeof(T);
    void* block = bytes >= kKeptBlockBytes ? TakeKeptBlock(bytes) : nullptr;
    if (block == nullptr) block = scalable_malloc(bytes);
    if (block == nullptr) throw std::bad_alloc();
    return static_cast<T*>(block);
  }
  void deallocate(T* block, size_t n) noexcept {
    if (n * sizeof(T) >= kKeptBlockBytes) {
      KeepBlock(block);
    } else {
      scalable_free(block);
    }
  }
  template <typename U>
  bool operator==(const PerMessageAllocator<U>&) const noexcept {
    return true;
  }
};
#endif

/// The acknowledgement of one message of an at-least-once source: due once the samples it
/// carried are in keyed state, and it may be given on any thread. It is shared, so a batch
/// passed on carries it at the cost of a pointer; the state operator gives it (once).
class Acknowledgement {
 public:
  virtual ~Acknowledgement() = default;
  virtual void Done() = 0;
};
using Ack = std::shared_ptr<Acknowledgement>;

/// An Ack that calls `f` (a callable taking nothing), held in the same allocation.
template <typename F>
Ack MakeAck(F f) {
  struct Call final : Acknowledgement {
    explicit Call(F g) : f(std::move(g)) {}
    void Done() override { f(); }
    F f;
  };
  return MakePerMessage<Call>(std::move(f));
}

/// Samples of one sensor of one vehicle, in the order they were received.
struct SampleBatch {
  std::string vehicle;
  std::string sensor;
  std::vector<wire::Point> points;
  /// Given once the samples are in keyed state (at-least-once sources acknowledge here; the
  /// stream keeps them for a partition's next owner until the state's checkpoint passes them).
  /// Null for at-most-once delivery.
  Ack ack{};
  /// Engine clock when the source received the message (0: unknown). Operators that need the
  /// arrival time use it rather than reading the clock, so a replay sees recorded arrival times.
  int64_t received_ns = 0;
  /// The vehicle's partition (PartitionOf; 0 when the source is not partitioned).
  uint32_t partition = 0;
  /// Samples restored from state on taking a partition over, not received now: history that
  /// windows before the current one may use, never a late arrival.
  bool restored = false;
  /// The message's sequence in its JetStream stream (0: none): keyed_last_value's store keeps
  /// the partition's checkpoint by it.
  uint64_t sequence = 0;
  /// When the message entered the stream, on the stream's clock: the time JetStream stored it,
  /// else received_ns (core NATS; a replay's recorded receive time); 0: unknown. window_join
  /// reads the gaps in its input on it, so a backlog read after an outage is windowed as it was
  /// live (docs/semantics.md, "Catching up").
  int64_t stream_ns = 0;
};

/// A vehicle's lifecycle message (vehicle.<id>.status). `at_ns` is when it happened: the source
/// stamps the time JetStream stored it, or (core NATS) the engine clock; keyed_last_value
/// restamps it with the vehicle's newest sample time, so that `off` falls after the last sample
/// whatever the arrival order.
struct StatusEvent {
  std::string vehicle;
  bool on = true;
  int64_t at_ns = 0;
  uint32_t partition = 0;  // as SampleBatch::partition
  Ack ack{};               // as SampleBatch::ack: given once the status is in state
  uint64_t sequence = 0;   // as SampleBatch::sequence
};

/// FNV-1a (32 bit) of `s`.
inline uint32_t Fnv1a(std::string_view s) {
  uint32_t h = 2166136261u;
  for (const unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

/// The partition of a vehicle among `partitions`: FNV-1a (32 bit) of its id, modulo the count,
/// exactly as nats-server's subject mapping function `partition(n, 1)` computes it.
inline uint32_t PartitionOf(std::string_view vehicle, uint32_t partitions) {
  return partitions == 0 ? 0 : Fnv1a(vehicle) % partitions;
}

/// What the operators downstream of a partition hand over when it is revoked: they fill it in
/// as it passes. When the last reference goes (the event has passed every node), the source's
/// partition coordinator learns it, and stores the record on its own path (docs/architecture.md).
/// The last window time of a partition each windowed node emitted, by node id: what a
/// hand-over record holds (a node that emitted none is absent).
using EmittedWindows = std::map<std::string, int64_t>;

/// Node `node`'s last window in `record`; empty when it emitted none. A record of a release
/// before per-node records (one window, under the empty id) is every node's.
inline std::optional<int64_t> EmittedBy(const EmittedWindows& record, const std::string& node) {
  auto it = record.find(node);
  if (it == record.end()) it = record.find("");
  if (it == record.end()) return std::nullopt;
  return it->second;
}

class Handover {
 public:
  virtual ~Handover() = default;
  /// Node `node` emitted the partition's windows up to `window_ns` (empty: none). The branches of
  /// a fan-out fill it in at the same time.
  void Emitted(const std::string& node, std::optional<int64_t> window_ns) {
    std::lock_guard lock(mu_);
    if (window_ns) {
      windows_[node] = *window_ns;
    } else {
      windows_.erase(node);
    }
  }
  EmittedWindows windows() const {
    std::lock_guard lock(mu_);
    return windows_;
  }

 private:
  mutable std::mutex mu_;
  EmittedWindows windows_;
};

/// A partitioned source's change of the partitions it reads (docs/scaling.md), in order with
/// its messages: kAssigned comes before the partition's first message, kRevoked after its last
/// one. Every operator forwards it after acting on it, like a Tick.
struct PartitionEvent {
  enum class Kind { kAssigned, kRevoked };
  Kind kind = Kind::kAssigned;
  uint32_t partition = 0;
  /// kAssigned: each windowed node of the previous owner emitted every window of the partition
  /// up to its time here (its hand-over record, EmittedBy); the node's next window goes on from
  /// there. Empty, or the node absent: no record (a first start, or the previous owner crashed)
  /// or none emitted: every window the restored state holds is emitted (again).
  std::optional<EmittedWindows> emitted;
  /// kRevoked: filled in by the operators it passes.
  std::shared_ptr<Handover> handover;
};

/// Clock punctuation; `drain` asks every operator to flush what it holds (shutdown, end of
/// replay) before forwarding it.
struct Tick {
  int64_t now_ns = 0;
  bool drain = false;
  /// Some input had not entered the graph by now_ns: a source was waiting for room
  /// (backpressure) since the previous Tick, or a durable source is cut off from its server.
  /// Operators must not take the clock as progress then.
  bool held_back = false;
  /// A durable source could not read its stream at this Tick (Operator::CutOffFromInput; then
  /// held_back too): what is stored after it may have waited upstream to be stored, so a gap in
  /// the stream's stored times across it is no sign of idle input.
  bool cut_off = false;
  /// The longest a message stored upstream may take to enter the graph (the sources' batching,
  /// Operator::InputDelayNs): nothing arrived for idle_ms means progress is the clock less this,
  /// so a sample stored before a window closed is never late because the source still gathered
  /// it; it closes those windows itself (its stored time), as a backlog does (docs/semantics.md).
  int64_t input_delay_ns = 0;
};

/// The samples that bracket a window time T for one sensor: the newest sample at or before T and
/// the oldest after T, each only if it lies within the window join's max gap of T.
struct Slot {
  std::optional<wire::Point> before;
  std::optional<wire::Point> after;
};

/// One vehicle's row of a WindowBatch; its slots are WindowBatch::Slots(row).
struct WindowRow {
  std::string vehicle;
  size_t first_slot = 0;  // where its slots begin in WindowBatch::slots
};

/// When a windowed operator closed a window, on the engine clock: what the sink's latency
/// histograms break down (docs/metrics.md, row_close_latency_seconds and row_stage_seconds).
/// All 0 where unknown (a correction).
struct CloseTiming {
  /// The window's time plus the allowed lateness: when event time may close it at the earliest.
  int64_t due_ns = 0;
  /// The source received the input whose event time closed the window (SampleBatch::received_ns);
  /// 0 when the clock closed it (a Tick: its input had gone quiet).
  int64_t input_ns = 0;
  int64_t closed_ns = 0;   ///< the operator began to make the window's rows
  int64_t emitted_ns = 0;  ///< and emitted them
  /// It closed within one window period of due_ns: read live, not
  /// from a backlog. A sink writes such a window's rows as soon as they come (timescale_sink
  /// flush_ms 0); a backlog's windows wait for the Tick, many in one write.
  bool live = false;
};

/// A window's rows on their way to storage. Every node that stores them keeps a copy until they
/// are stored (timescale_sink until its COMMIT, fleet_publish until the stream acknowledged
/// them), one that makes rows of its own from them passes it on with those (fleet_aggregate),
/// and the messages carrying them hold one. When the last copy goes, the operator that closed
/// the window learns that its rows are stored, or dropped and counted so: window_aggregate
/// snapshots no window as done before that (docs/semantics.md, "Open windows as partition
/// state"). Null: nobody waits.
using InFlight = std::shared_ptr<const void>;

/// Every row of one window time, as produced by a window join.
struct WindowBatch {
  int64_t window_ns = 0;
  std::shared_ptr<const std::vector<std::string>> sensors;
  std::vector<WindowRow> rows;
  /// The rows' slots in one block, one per sensor of `sensors` (same order) for each row: a
  /// window of 100 000 vehicles is one allocation, not one per row.
  std::vector<Slot, PerMessageAllocator<Slot>> slots;
  /// The partition of the vehicles whose rows these are (as SampleBatch::partition).
  uint32_t partition = 0;
  /// The join's window period (every_ms in ns): a vehicle's rows follow each other by this much
  /// while it is active. A partition's closed window is emitted without rows too (its vehicles
  /// were all silent), so that the nodes after know its vehicles' rows ended; a correction
  /// (an earlier window again) is never empty.
  int64_t every_ns = 0;
  CloseTiming timing;

  size_t Sensors() const { return sensors ? sensors->size() : 0; }
  std::span<const Slot> Slots(const WindowRow& row) const {
    return {slots.data() + row.first_slot, Sensors()};
  }
  std::span<Slot> Slots(const WindowRow& row) { return {slots.data() + row.first_slot, Sensors()}; }
  /// Appends `vehicle`'s row with a slot per sensor (none holding a sample) and returns them.
  std::span<Slot> AddRow(std::string vehicle) {
    rows.push_back(WindowRow{std::move(vehicle), slots.size()});
    slots.resize(slots.size() + Sensors());
    return Slots(rows.back());
  }
  /// Appends `vehicle`'s row with these slots (at most one per sensor; missing ones hold nothing).
  void AddRow(std::string vehicle, std::span<const Slot> row_slots) {
    if (row_slots.size() > Sensors()) throw std::invalid_argument("more slots than sensors");
    std::copy(row_slots.begin(), row_slots.end(), AddRow(std::move(vehicle)).begin());
  }
  void AddRow(std::string vehicle, std::initializer_list<Slot> row_slots) {
    AddRow(std::move(vehicle), std::span<const Slot>(row_slots.begin(), row_slots.size()));
  }
};

/// The statistics of one sensor of one vehicle over one window: of the samples with
/// start <= ts < end, each counted once. For position sensors also the bounding box and the
/// distance travelled (metres along the great circle between consecutive samples by event time).
struct SensorStats {
  uint64_t count = 0;  // 0: no sample in the window (every other field is meaningless)
  double min = 0.0;
  double max = 0.0;
  double sum = 0.0;   // mean = sum / count
  wire::Point first;  // the oldest sample by event time
  wire::Point last;   // the newest
  // Position sensors (samples with a position; `positions` of them):
  uint64_t positions = 0;
  double min_lat = 0.0;
  double max_lat = 0.0;
  double min_lon = 0.0;
  double max_lon = 0.0;
  double distance_m = 0.0;
};

struct StatsRow {
  std::string vehicle;
  std::vector<SensorStats> sensors;  // one per sensor of StatsBatch::sensors, same order
};

/// Every row of one window of a window aggregate: [start_ns, start_ns + length_ns).
struct StatsBatch {
  int64_t start_ns = 0;
  int64_t length_ns = 0;
  std::shared_ptr<const std::vector<std::string>> sensors;
  std::vector<StatsRow> rows;
  /// Behind a partitioned source: the partition whose vehicles' rows these are. Such a partition
  /// reports every window it closes, one without a row too (an empty batch), so that a stage
  /// across workers knows how far each partition is. Empty: every vehicle's rows.
  std::optional<uint32_t> partition;
  /// A partial of the stage across workers as fleet_source reads it (`partition` is then the
  /// shard of its cells): the partition of the vehicles' stream whose rows these are, of how
  /// many. Empty: rows of their own (not to be merged).
  struct Origin {
    uint32_t partition = 0;
    uint32_t partitions = 0;
  };
  std::optional<Origin> origin;
  /// As SampleBatch::sequence and ::ack, for a partial read from its stream (fleet_source):
  /// acknowledged once merged, the stream the shard's changelog.
  uint64_t sequence = 0;
  Ack ack{};
  CloseTiming timing;  ///< of the operator that closed the window (none for a merged partial)
  InFlight in_flight;  ///< window_aggregate behind a snapshot store: see InFlight
};

/// A rule's alarm of a vehicle raised or cleared (docs/alarms.md). An alarm is (vehicle, rule,
/// raised_ns): raised once and cleared once, whichever worker owns the vehicle then. Not a message
/// of the graph: the rule node that makes it stores it and tells the vehicle itself.
struct AlarmEvent {
  std::string vehicle;
  std::string rule;
  bool raised = true;  ///< false: cleared
  std::string severity;
  int64_t time_ns = 0;          ///< when: the window time of the row that raised or cleared it
  int64_t raised_ns = 0;        ///< the alarm's raise time (time_ns of its raise)
  std::optional<double> value;  ///< the rule's value expression at time_ns; none: NULL
  std::string message;
  /// A command to the vehicle with the event (control subjects `vehicle.<id>.cmd.<verb>`, body
  /// `args`); empty verb: none.
  std::string command_verb;
  std::string command_args;
};

using Body = std::variant<SampleBatch, StatusEvent, Tick, WindowBatch, PartitionEvent, StatsBatch>;
using Message = std::shared_ptr<const Body>;

template <typename T>
Message MakeMessage(T&& body) {
  return MakePerMessage<const Body>(std::forward<T>(body));
}

}  // namespace fleetflow

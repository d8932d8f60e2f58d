#pragma once
/// The operator test kit: one operator, built from its registered spec and a JSON config exactly
/// as a pipeline file would build it, driven by the test without a graph or servers.
///
///  - Operators with an input: Feed() hands it one message (a SampleBatch, a StatusEvent, a
///    PartitionEvent, a WindowBatch) and returns what it emitted for it; TickAt() moves the manual
///    clock and sends the Tick the runtime would send.
///  - Sources: Start() starts it into output(), a thread-safe sink the test reads while the
///    source emits from its own threads; Stop() (or the harness's end) stops it.
///  - Metrics: Counter() and Gauge() read the operator's metrics by name and labels.
///
/// The harness holds the operator to the contract of engine/operator.hpp: Feed() throws
/// std::logic_error when the operator does not forward a Tick or PartitionEvent exactly once.
/// It does not catch what Process() throws, as the engine would: operators count bad input
/// instead of throwing, so an exception fails the test.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "clock.hpp"
#include "fleetflow/testkit/messages.hpp"
#include "message.hpp"
#include "metrics.hpp"
#include "operator.hpp"
#include "registry.hpp"

namespace fleetflow::testkit {

/// A clock that moves only when the test moves it. Thread-safe, as Clock requires.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t now_ns = 0) : now_(now_ns) {}
  int64_t NowNs() const override { return now_.load(std::memory_order_acquire); }
  void Set(int64_t now_ns) { now_.store(now_ns, std::memory_order_release); }
  void Advance(int64_t delta_ns) { now_.fetch_add(delta_ns, std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_;
};

/// Keeps every message emitted into it, in order. Thread-safe: a source emits from its own
/// threads while the test reads.
class CaptureSink final : public Emitter {
 public:
  void Emit(Message m) override;
  /// The messages so far (a copy).
  std::vector<Message> Messages() const;
  size_t Size() const;
  void Clear();
  /// Called with each message as it is emitted, on the emitting thread, before it is kept: to
  /// look at the operator at that moment (e.g. Operator::HoldsBackInput). Set it before the
  /// operator starts.
  void OnEmit(std::function<void(const Message&)> f) { on_emit_ = std::move(f); }

 private:
  mutable std::mutex mu_;
  std::vector<Message> messages_;
  std::function<void(const Message&)> on_emit_;
};

struct HarnessOptions {
  /// The node id: the `node` label of the operator's metrics.
  std::string node_id = "op";
  /// Where the operator type is looked up; null: the built-in operators (operators/builtin.cpp).
  const Registry* registry = nullptr;
  /// The clock the operator reads; null: the harness's ManualClock.
  const Clock* clock = nullptr;
  /// Sources on a clock that follows their input (OperatorContext::clock_driver).
  ClockDriver* clock_driver = nullptr;
  /// Called when a source's input has ended (OperatorContext::input_ended); null: nothing.
  std::function<void()> input_ended;
};

class OperatorHarness {
 public:
  /// Validates `config_json` against the spec of operator `type` (schema, defaults, rules, as
  /// for a pipeline file) and builds the operator. Throws std::invalid_argument with every
  /// problem found, or what the operator's factory throws.
  OperatorHarness(const std::string& type, const std::string& config_json,
                  HarnessOptions options = {});
  /// Stops and finishes a source started with Start().
  ~OperatorHarness();
  OperatorHarness(const OperatorHarness&) = delete;
  OperatorHarness& operator=(const OperatorHarness&) = delete;

  /// Hands the operator one message; returns what it emitted meanwhile (also kept in output()).
  std::vector<Message> Feed(const Message& in);
  std::vector<Message> Feed(Body body);
  /// Moves the manual clock to `now_ns` and feeds Tick{now_ns, drain}.
  std::vector<Message> TickAt(int64_t now_ns, bool drain = false);

  /// Sources: starts the operator, emitting into output().
  void Start();
  /// Sources: what Start() throws, as text; empty when the operator starts.
  std::string StartError();
  /// Sources: stops the operator (idempotent).
  void Stop();
  /// Sources: after Stop, what the runtime calls once everything emitted has passed the graph
  /// (Operator::Finish): here, once the test let go of what it took from output(). Idempotent.
  void Finish();

  /// Everything the operator emitted so far, by Feed() or as a started source.
  CaptureSink& output() { return output_; }
  Operator& op() { return *op_; }
  /// The standard labels of the node's metrics: {node="<node_id>", operator="<type>"}.
  const Labels& labels() const { return labels_; }

  /// Counter `name` (without the fleetflow_ prefix and _total suffix), summed over its series
  /// whose labels include every one of `labels` (all of them when empty); 0 when none.
  uint64_t Counter(const std::string& name, const Labels& labels = {}) const;
  /// Gauge `name`, summed in the same way.
  double Gauge(const std::string& name, const Labels& labels = {}) const;

  Metrics metrics;
  ManualClock clock;

 private:
  Labels labels_;
  std::string node_;  // "<type> node '<id>'", for messages
  CaptureSink output_;
  bool started_ = false;
  bool finished_ = false;
  std::unique_ptr<Operator> op_;
};

/// What building operator `type` with `config_json` throws (validation or the operator's
/// factory), as text; empty when it builds.
std::string BuildError(const std::string& type, const std::string& config_json,
                       const HarnessOptions& options = {});

}  // namespace fleetflow::testkit

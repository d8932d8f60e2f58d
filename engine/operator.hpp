#pragma once
/// The contract between the engine and its operators.
///
/// Lifecycle: the engine constructs every operator of a pipeline (the factory may throw
/// std::runtime_error for a setting that cannot work, e.g. an unreachable column mapping), then
/// calls Start() on sources, feeds messages to the others, and on shutdown calls Stop() on the
/// sources, sends a drain Tick through the graph, waits until it has passed every node, and
/// calls Finish() on the sources.
///  - Process() is never called concurrently for one operator instance (serial nodes), and
///    always in the order messages were emitted by each upstream node.
///  - Start() may emit from any thread until Stop() returns; Stop() is idempotent.
///  - An operator forwards every Tick and PartitionEvent it receives (after acting on it).
///  - Bad input is counted and logged, never thrown: an exception leaving Process() is caught by
///    the engine, counted as fleetflow_operator_errors_total and logged, and the run goes on.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clock.hpp"
#include "config.hpp"
#include "message.hpp"
#include "metrics.hpp"

namespace fleetflow {

class Emitter {
 public:
  virtual ~Emitter() = default;
  /// Hands a message to every successor. Sources may block here while the graph is full
  /// (backpressure); operators with inputs never block.
  virtual void Emit(Message m) = 0;

  /// Sources: what is emitted while a Burst lives may wait for its end before the graph is woken
  /// for it, so a batch handed on at once wakes the graph once instead of at its first message
  /// (the graph would take it in pieces, racing the source for the cores). A full packet of it,
  /// or a graph too full for the next message, wakes the graph at once: a long batch still flows
  /// while it is handed on, and Emit never waits for room with something held back. Bursts of
  /// several threads may overlap; the graph is woken when the last one ends.
  class Burst {
   public:
    explicit Burst(Emitter& out) : out_(out) { out_.BeginBurst(); }
    ~Burst() { out_.EndBurst(); }
    Burst(const Burst&) = delete;
    Burst& operator=(const Burst&) = delete;

   private:
    Emitter& out_;
  };

 protected:
  /// The hooks of Burst (named so that an emitter's own methods do not override them).
  virtual void BeginBurst() {}
  virtual void EndBurst() {}
};

struct OperatorContext {
  std::string node_id;
  std::string type;
  Config config;
  Metrics& metrics;
  const Clock& clock;
  /// Sources only, and only when the runtime runs on a clock that follows the input (a replay):
  /// what moves that clock. nullptr on the wall clock.
  ClockDriver* clock_driver = nullptr;
  /// Sources only: a source whose input has an end (a recording) calls this once when it has
  /// emitted everything; the runtime then knows its input has ended (Runtime::InputEnded()).
  /// Live sources never call it. Set by the runtime (a no-op where nobody listens).
  std::function<void()> input_ended = [] {};
  /// Sources only: the keys of partition `p`'s checkpoints kept by the nodes after this source
  /// (NodeFacts::checkpoint_key), one per such node; a partition's next owner re-reads the
  /// changelog from the oldest of them. Set by the runtime.
  std::vector<std::function<std::string(uint32_t p)>> checkpoint_keys{};
  /// Standard labels for this node's metrics: {node="<id>", operator="<type>"}.
  Labels labels() const { return {{"node", node_id}, {"operator", type}}; }
};

class Operator {
 public:
  virtual ~Operator() = default;
  /// Sources only: connect and begin emitting into `out`. Throws when it cannot start.
  virtual void Start(Emitter& out) { (void)out; }
  /// Sources only: stop intake; after it returns the source emits nothing more.
  virtual void Stop() {}
  /// Sources only: called once after Stop(), when everything the source emitted has passed
  /// every node (the drain Tick is through): what a source commits only then, it commits here
  /// (a partitioned source stores its hand-over records and leaves the membership). Never from
  /// a destructor's duties alone: the runtime calls it.
  virtual void Finish() {}
  /// Operators with an input: handle one message.
  virtual void Process(const Message& in, Emitter& out) {
    (void)in;
    (void)out;
  }
  /// Operators with an input: `soon` is handled a few messages after the one at hand (the same
  /// packet). An operator whose state lookups miss the cache starts loading what `soon` needs
  /// (the hash map's slot of its key), so that the miss overlaps the work in between. Changes
  /// nothing that can be observed.
  virtual void Prefetch(const Message& soon) { (void)soon; }
  /// False while the operator cannot do its work (not connected, state not restored).
  virtual bool Ready() const { return true; }
  /// Sources only: true while input that exists upstream cannot be read yet (a durable source
  /// cut off from its server), so the engine clock is not evidence that nothing arrived. Ticks
  /// say so (Tick::held_back). Thread-safe.
  virtual bool HoldsBackInput() const { return false; }
  /// Sources only: true while the durable store this source reads cannot be read (not
  /// connected, or it answers nobody: a cluster electing a leader), so it may store nothing
  /// meanwhile either, and a gap in its stored times is no sign of silent vehicles. Ticks say so
  /// (Tick::cut_off). Thread-safe.
  virtual bool CutOffFromInput() const { return false; }
  /// Sources only: how long a message the upstream store has may take to enter the graph (the
  /// source gathers its input in batches): the clock closes no window until input that old is
  /// in (Tick::input_delay_ns). Constant once started.
  virtual int64_t InputDelayNs() const { return 0; }
};

}  // namespace fleetflow

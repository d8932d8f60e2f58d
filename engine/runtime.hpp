#pragma once
/// Runs a validated pipeline on a oneTBB flow graph.
///
/// Every operator but the sources is a serial multifunction_node; a source's messages enter
/// through a broadcast_node (its own threads belong to the client libraries). Edges carry
/// packets of messages: what a source emits waits, in order, at its gateway until the graph
/// takes it (one wake-up per burst, not per message), and what an operator emits while it
/// handles a packet goes on as one packet. Operators still see one message at a time, in order.
/// A bounded number of messages may wait in the graph's queues: a source's Emit blocks while the
/// graph is full, so a slow sink slows the sources instead of growing memory.
///
/// The graph runs on a thread of its own, the driver: woken by a source's burst or by the clock
/// tick, it puts what waits into the graph and works with it in the graph's task arena until the
/// graph is idle, then sleeps until the next burst or tick. The arena has `graph_threads` slots,
/// the driver's among them; oneTBB worker threads fill the others. With one (the default) there
/// is no worker thread: nothing spins after a burst, so a worker that holds a small share of the
/// fleet costs in proportion to it (docs/BENCHMARKS.md §8).
///
/// Lifecycle: Start() once; Stop() (idempotent) stops the sources, sends a drain Tick through
/// the graph, waits until every node has handled it, and finishes the sources
/// (Operator::Finish). Neither may be called from a graph or
/// source thread.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "clock.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "tap.hpp"

namespace fleetflow {

struct RuntimeOptions {
  int tick_ms = 100;                    // period of the clock Tick sent through the graph (one
                                        // due within half of it goes with a burst); 0: no ticker
                                        // (a replay source sends the Ticks in its stream)
  int idle_tick_ms = 0;                 // once no input came for this long, Ticks come this far
                                        // apart until input comes (its first burst takes one
                                        // along); at most tick_ms: always tick_ms
  int graph_threads = 1;                // threads that run the graph's nodes (the driver and
                                        // graph_threads - 1 oneTBB workers)
  size_t max_queued = 20000;            // messages waiting in node queues before sources block
  ClockDriver* clock_driver = nullptr;  // what moves `clock` when it follows the input (a
                                        // replay); handed to the sources
};

class Runtime {
 public:
  /// Constructs every operator; throws std::runtime_error naming the node when one cannot be
  /// built from its config.
  Runtime(const Pipeline& pipeline, Metrics& metrics, const Clock& clock,
          RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// Starts the sources and the clock; throws std::runtime_error when a source cannot start.
  void Start();
  /// Drains and stops; safe to call more than once.
  void Stop();
  /// True once started and while every operator reports ready.
  bool Ready() const;
  /// True once every source has said its input ended (OperatorContext::input_ended): a replay
  /// is complete then, and Stop() drains what is left. Never true for live sources.
  bool InputEnded() const;
  /// Blocks until InputEnded() (at once without sources). Only for a started pipeline whose
  /// sources all have an end (a replay): live sources never end.
  void WaitInputEnded() const;
  /// Taps node `node` (engine/tap.hpp): blocks until the tap is complete or timed out and
  /// returns the messages it took. Throws std::invalid_argument for an unknown node or a node
  /// that emits nothing (a sink). Thread-safe; Stop() ends running taps.
  TapPoint::Result Tap(const std::string& node, const TapOptions& options);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetflow

#include "runtime.hpp"

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/task_arena.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <stdexcept>

#include "logging.hpp"
#include "tap.hpp"
#include "thread_name.hpp"

namespace fleetflow {

namespace flow = tbb::flow;
/// Edges carry packets: the messages one node handed on while handling one packet, in order.
/// A packet costs one hand-off between threads however many messages it holds, so the graph
/// pays for a burst, not for each message of it.
using Batch = std::vector<Message>;
using Packet = std::shared_ptr<const Batch>;
using OperatorNode = flow::multifunction_node<Packet, std::tuple<Packet>>;
/// Where a source's packets enter the graph (the driver puts them, in order).
using InletNode = flow::broadcast_node<Packet>;

/// Largest packet an inlet puts into the graph: a long backlog becomes several packets, so the
/// nodes downstream can work on one while the next is handled. Messages wait at a gateway in
/// chunks of this size, each taken as it is.
constexpr size_t kMaxPacket = 256;
/// How far ahead in a packet a node is told what comes (Operator::Prefetch): a cache miss
/// (~100 ns) is over by then, and what it loaded is still in the cache.
constexpr size_t kPrefetchAhead = 4;

struct Runtime::Impl {
  struct Node;

  /// Counts what waits in node queues; sources wait here while the graph is full.
  class Gate {
   public:
    Gate(size_t capacity, Gauge& blocked)
        : capacity_(static_cast<int64_t>(capacity)), blocked_(blocked) {}
    void Enqueued(int64_t n) { queued_.fetch_add(n, std::memory_order_relaxed); }
    void Dequeued(int64_t n) {
      queued_.fetch_sub(n, std::memory_order_relaxed);
      if (waiters_.load(std::memory_order_relaxed) > 0) cv_.notify_all();
    }
    bool HasRoom() const { return queued_.load(std::memory_order_relaxed) < capacity_ || open_; }
    void WaitForRoom() {
      if (HasRoom()) return;
      std::unique_lock lock(mu_);
      held_back_ = true;
      waiters_.fetch_add(1);
      blocked_.Add(1);
      while (queued_.load(std::memory_order_relaxed) >= capacity_ && !open_) {
        cv_.wait_for(lock, std::chrono::milliseconds(10));
      }
      blocked_.Add(-1);
      waiters_.fetch_sub(1);
    }
    /// Lets every source through from now on (shutdown: nothing may stay blocked).
    void Open() {
      open_ = true;
      cv_.notify_all();
    }
    int64_t queued() const { return queued_.load(std::memory_order_relaxed); }
    /// True when a source waited for room since the previous call, or waits now.
    bool TakeHeldBack() { return held_back_.exchange(false) || waiters_.load() > 0; }

   private:
    const int64_t capacity_;
    Gauge& blocked_;
    std::atomic<int64_t> queued_{0};
    std::atomic<int> waiters_{0};
    std::atomic<bool> open_{false};
    std::atomic<bool> held_back_{false};
    std::mutex mu_;
    std::condition_variable cv_;
  };

  /// Collects what an operator body emits while it handles one packet; Flush puts it on as one
  /// packet.
  class PortEmitter final : public Emitter {
   public:
    /// `expected`: room made at the first Emit (most operators emit about one per message).
    explicit PortEmitter(size_t expected) : expected_(expected) {}
    void Emit(Message m) override {
      if (out_.capacity() == 0) out_.reserve(expected_);
      out_.push_back(std::move(m));
    }
    /// Counts the packet as queued (once per successor) and puts it on.
    void Flush(Gate& gate, const Node& node, OperatorNode::output_ports_type& ports) {
      if (out_.empty()) return;
      if (node.tap->armed()) {
        for (const Message& m : out_) node.tap->Offer(m);
      }
      if (node.successors.empty()) return;
      gate.Enqueued(static_cast<int64_t>(out_.size() * node.successors.size()));
      std::get<0>(ports).try_put(std::make_shared<const Batch>(std::move(out_)));
    }

   private:
    const size_t expected_;
    Batch out_;
  };

  /// Emits from a source's own threads: messages wait here, in order, until the driver takes
  /// them into the graph. Only the first message after the driver took the previous ones wakes
  /// it (in an Emitter::Burst, the end of the burst), so a burst wakes it once.
  class GatewayEmitter final : public Emitter {
   public:
    GatewayEmitter(Gate& gate, Node& node, Impl& impl) : gate_(gate), node_(node), impl_(impl) {}
    void Emit(Message m) override {
      if (node_.tap->armed()) node_.tap->Offer(m);
      if (!gate_.HasRoom()) WakeFor(false);  // what a Burst holds back must drain first
      gate_.WaitForRoom();
      impl_.inputs.fetch_add(1, std::memory_order_relaxed);
      Put(std::move(m));
    }
    void Put(Message m) {
      gate_.Enqueued(static_cast<int64_t>(node_.successors.size()));
      {
        std::lock_guard lock(mu_);
        if (waiting_.empty() || waiting_.back().size() == kMaxPacket) {
          waiting_.emplace_back().reserve(32);  // grows to kMaxPacket in a long burst
        }
        waiting_.back().push_back(std::move(m));
        if (signalled_ || (holds_ > 0 && waiting_.back().size() < kMaxPacket)) return;
        signalled_ = true;
      }
      impl_.Wake();
    }
    /// The driver's: puts everything waiting into the graph, one packet per chunk.
    void Take(InletNode& inlet) {
      std::vector<Batch> taken;
      {
        std::lock_guard lock(mu_);
        taken.swap(waiting_);
        signalled_ = false;
      }
      for (Batch& chunk : taken) inlet.try_put(std::make_shared<const Batch>(std::move(chunk)));
    }

   protected:
    void BeginBurst() override {
      std::lock_guard lock(mu_);
      ++holds_;
    }
    void EndBurst() override { WakeFor(true); }

   private:
    /// Wakes the driver for what waits, unless it was woken for it already; `released`: a
    /// Burst ended (the driver is woken only when it was the last).
    void WakeFor(bool released) {
      {
        std::lock_guard lock(mu_);
        if (released) --holds_;
        if (signalled_ || waiting_.empty() || (released && holds_ > 0)) return;
        signalled_ = true;
      }
      impl_.Wake();
    }

    Gate& gate_;
    Node& node_;
    Impl& impl_;
    std::mutex mu_;
    std::vector<Batch> waiting_;  // chunks of at most kMaxPacket, oldest first
    bool signalled_ = false;      // the driver was woken for them
    int holds_ = 0;               // Bursts alive
  };

  struct Node {
    NodeDecl decl;
    std::unique_ptr<Operator> op;
    std::unique_ptr<OperatorNode> body;
    std::unique_ptr<InletNode> inlet;  // sources only
    std::unique_ptr<GatewayEmitter> gateway_emitter;
    std::vector<Node*> successors;
    Counter* errors = nullptr;
    std::unique_ptr<TapPoint> tap;
  };

  Impl(const Pipeline& p, Metrics& m, const Clock& c, RuntimeOptions o)
      : pipeline(p),
        metrics(m),
        clock(c),
        options(o),
        gate(o.max_queued, m.GetGauge("graph_sources_blocked",
                                      "Sources waiting for room in the graph (backpressure).")),
        arena(std::max(o.graph_threads, 1), 1) {
    // The graph works in the arena it is made in: ours, whose workers are graph_threads - 1.
    arena.execute([this] { graph = std::make_unique<flow::graph>(); });
  }

  /// By source id: the checkpoint keys of the nodes after it (OperatorContext::checkpoint_keys).
  /// The nodes come in topological order.
  std::map<std::string, std::vector<std::function<std::string(uint32_t)>>> CheckpointKeys() const {
    std::map<std::string, std::set<std::string>> sources_of;  // by node: the sources before it
    std::map<std::string, std::vector<std::function<std::string(uint32_t)>>> keys;
    for (const NodeDecl& decl : pipeline.nodes) {
      std::set<std::string>& sources_before = sources_of[decl.id];
      if (decl.info->input == PortKind::kNone) sources_before.insert(decl.id);
      for (const auto& in : decl.inputs) {
        const std::set<std::string>& theirs = sources_of[in];
        sources_before.insert(theirs.begin(), theirs.end());
      }
      if (!decl.info->facts) continue;
      auto key = decl.info->facts(decl.config).checkpoint_key;
      if (!key) continue;
      for (const std::string& source : sources_before) {
        keys[source].push_back([key, node = decl.id](uint32_t p) { return key(node, p); });
      }
    }
    return keys;
  }

  void Build() {
    nodes.reserve(pipeline.nodes.size());
    std::map<std::string, Node*> by_id;
    auto checkpoint_keys = CheckpointKeys();
    for (const NodeDecl& decl : pipeline.nodes) {
      nodes.push_back(std::make_unique<Node>());
      Node& n = *nodes.back();
      n.decl = decl;
      n.tap = std::make_unique<TapPoint>(decl.id);
      OperatorContext ctx{decl.id, decl.type, decl.config, metrics, clock};
      if (decl.info->input == PortKind::kNone) {
        ++sources;
        ctx.checkpoint_keys = std::move(checkpoint_keys[decl.id]);
        ctx.clock_driver = options.clock_driver;
        ctx.input_ended = [this] {
          sources_ended.fetch_add(1);
          sources_ended.notify_all();
        };
      }
      try {
        n.op = decl.info->create(ctx);
      } catch (const std::exception& e) {
        throw std::runtime_error(pipeline.file + ": node '" + decl.id + "' (" + decl.type +
                                 "): " + e.what());
      }
      n.errors = &metrics.GetCounter("operator_errors",
                                     "Exceptions caught while an operator handled a message.",
                                     ctx.labels());
      by_id[decl.id] = &n;
    }
    for (auto& n : nodes) {
      for (const auto& in : n->decl.inputs) by_id.at(in)->successors.push_back(n.get());
    }
    for (auto& np : nodes) {
      Node& n = *np;
      if (n.decl.info->input == PortKind::kNone) {
        n.gateway_emitter = std::make_unique<GatewayEmitter>(gate, n, *this);
        n.inlet = std::make_unique<InletNode>(*graph);
      } else {
        n.body = std::make_unique<OperatorNode>(
            *graph, flow::serial,
            [this, &n](const Packet& in, OperatorNode::output_ports_type& ports) {
              PortEmitter out(in->size());
              const Batch& messages = *in;
              for (size_t i = 0; i < messages.size(); ++i) {
                try {
                  if (i + kPrefetchAhead < messages.size()) {
                    n.op->Prefetch(messages[i + kPrefetchAhead]);
                  }
                  n.op->Process(messages[i], out);
                } catch (const std::exception& e) {
                  n.errors->Inc();
                  error_log.Log(n.decl.id, spdlog::level::err,
                                "node '" + n.decl.id + "' (" + n.decl.type + "): " + e.what());
                }
              }
              // What the packet's messages emitted is counted before they leave the count:
              // sources are held back while a packet is handled, not let in early.
              out.Flush(gate, n, ports);
              gate.Dequeued(static_cast<int64_t>(in->size()));
            });
      }
    }
    for (auto& n : nodes) {
      for (Node* s : n->successors) {
        if (n->inlet) {
          flow::make_edge(*n->inlet, *s->body);
        } else {
          flow::make_edge(flow::output_port<0>(*n->body), *s->body);
        }
      }
    }
    queued_gauge = &metrics.GetGauge("graph_queued_messages",
                                     "Messages waiting in the pipeline graph's node queues.");
  }

  void PutTick(bool drain) {
    bool held_back = gate.TakeHeldBack(), cut_off = false;
    int64_t input_delay_ns = 0;
    for (auto& n : nodes) {
      if (!n->inlet) continue;
      if (n->op->HoldsBackInput()) held_back = true;
      if (n->op->CutOffFromInput()) cut_off = held_back = true;
      input_delay_ns = std::max(input_delay_ns, n->op->InputDelayNs());
    }
    const Message tick =
        MakeMessage(Tick{clock.NowNs(), drain, held_back, cut_off, input_delay_ns});
    for (auto& n : nodes) {
      if (n->inlet) n->gateway_emitter->Put(tick);
    }
    queued_gauge->Set(static_cast<double>(gate.queued()));
  }

  /// Wakes the driver: a source's burst waits at its gateway.
  void Wake() {
    {
      std::lock_guard lock(drive_mu);
      woken = true;
    }
    drive_cv.notify_one();
  }

  /// The driver's loop: sleeps until a burst or the next tick, puts what waits into the graph
  /// and works in the arena until the graph is idle. Ends once Stop's drain Tick went through.
  void Drive() {
    using Steady = std::chrono::steady_clock;
    const auto period = std::chrono::milliseconds(options.tick_ms);
    // No input for idle_tick_ms: the clock ticks that far apart (an idle worker wakes less;
    // what the operators do on the clock then, such as closing the windows of a partition gone
    // idle, comes up to that much later).
    const auto idle_period = std::max(period, std::chrono::milliseconds(options.idle_tick_ms));
    auto last_tick = Steady::now();
    auto last_input = last_tick;
    uint64_t inputs_seen = 0;
    std::unique_lock lock(drive_mu);
    for (;;) {
      const auto wake = [this] { return woken || finish; };
      const bool quiet = Steady::now() - last_input >= idle_period;
      if (options.tick_ms > 0 && !ticks_stopped) {
        drive_cv.wait_until(lock, last_tick + (quiet ? idle_period : period), wake);
      } else {
        drive_cv.wait(lock, wake);
      }
      const bool last = finish;  // Stop put the drain Tick before it set this
      woken = false;
      lock.unlock();
      // A Tick due within half a period goes with the burst that woke the driver: while input
      // flows, the clock rides on those wake-ups instead of adding its own (each costs what a
      // small burst does). Ticks are half a period to a period apart.
      const auto now = Steady::now();
      const uint64_t inputs_now = inputs.load(std::memory_order_relaxed);
      const bool input = inputs_now != inputs_seen;  // a source emitted (not the clock's Tick)
      inputs_seen = inputs_now;
      if (input) last_input = now;
      if (options.tick_ms > 0 && !ticks_stopped &&
          now >= last_tick + (quiet && !input ? idle_period : period) - period / 2) {
        PutTick(false);
        last_tick = now;
      }
      arena.execute([this] {
        for (auto& n : nodes) {
          if (n->inlet) n->gateway_emitter->Take(*n->inlet);
        }
        graph->wait_for_all();
      });
      lock.lock();
      if (last) return;
    }
  }

  const Pipeline pipeline;
  Metrics& metrics;
  const Clock& clock;
  const RuntimeOptions options;
  Gate gate;
  tbb::task_arena arena;               // graph_threads slots, one kept for the driver
  std::unique_ptr<flow::graph> graph;  // made in `arena`
  std::vector<std::unique_ptr<Node>> nodes;
  Gauge* queued_gauge = nullptr;
  int sources = 0;
  std::atomic<int> sources_ended{0};  // sources that said their input ended
  RateLimitedLog error_log;           // a flood of failing messages must not flood the log

  std::mutex drive_mu;
  std::condition_variable drive_cv;
  bool woken = false;                      // a burst waits at a gateway
  std::atomic<uint64_t> inputs{0};         // messages the sources emitted (idle_tick_ms)
  bool finish = false;                     // Stop: the drain Tick is the driver's last round
  std::atomic<bool> ticks_stopped{false};  // Stop: no clock Tick any more
  std::thread driver;
  std::atomic<bool> started{false};
  bool stopped = false;
};

Runtime::Runtime(const Pipeline& pipeline, Metrics& metrics, const Clock& clock,
                 RuntimeOptions options)
    : impl_(std::make_unique<Impl>(pipeline, metrics, clock, options)) {
  impl_->Build();
}

Runtime::~Runtime() { Stop(); }

void Runtime::Start() {
  Impl& s = *impl_;
  s.driver = std::thread([&s] { s.Drive(); });  // before the sources: they may emit at once
  NameThread(s.driver, "ff-driver");
  for (auto& n : s.nodes) {
    if (!n->inlet) continue;
    try {
      n->op->Start(*n->gateway_emitter);
    } catch (const std::exception& e) {
      throw std::runtime_error("node '" + n->decl.id + "' (" + n->decl.type +
                               ") could not start: " + e.what());
    }
  }
  s.started = true;
}

void Runtime::Stop() {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  for (auto& n : s.nodes) n->tap->Cancel();
  s.ticks_stopped = true;
  s.gate.Open();
  // Calls `step` on every source; one that throws is logged, and the others go on.
  const auto each_source = [&s](const char* what, void (Operator::*step)()) {
    for (auto& n : s.nodes) {
      if (!n->inlet) continue;
      try {
        (n->op.get()->*step)();
      } catch (const std::exception& e) {
        spdlog::error("node '{}' ({}): {}: {}", n->decl.id, n->decl.type, what, e.what());
      }
    }
  };
  // The driver goes on while the sources stop: what they emit last (a partition's kRevoked
  // event) passes through the graph.
  each_source("stop", &Operator::Stop);
  if (s.driver.joinable()) {
    s.PutTick(true);
    {
      std::lock_guard lock(s.drive_mu);
      s.finish = true;
    }
    s.drive_cv.notify_one();
    s.driver.join();
  }
  // Everything the sources emitted has passed every node: what they commit only then.
  each_source("finish", &Operator::Finish);
  s.started = false;
}

TapPoint::Result Runtime::Tap(const std::string& node, const TapOptions& options) {
  for (auto& n : impl_->nodes) {
    if (n->decl.id != node) continue;
    if (n->decl.info->output == PortKind::kNone) {
      throw std::invalid_argument("node '" + node + "' (" + n->decl.type +
                                  ") emits nothing: tap one of its inputs");
    }
    return n->tap->Collect(options);
  }
  std::string known;
  for (const auto& n : impl_->nodes) known += (known.empty() ? "" : ", ") + n->decl.id;
  throw std::invalid_argument("no node '" + node + "' in the pipeline (nodes: " + known + ")");
}

bool Runtime::InputEnded() const {
  return impl_->sources > 0 && impl_->sources_ended.load() >= impl_->sources;
}

void Runtime::WaitInputEnded() const {
  if (impl_->sources == 0) return;
  for (int ended = impl_->sources_ended.load(); ended < impl_->sources;
       ended = impl_->sources_ended.load()) {
    impl_->sources_ended.wait(ended);
  }
}

bool Runtime::Ready() const {
  if (!impl_->started) return false;
  for (const auto& n : impl_->nodes) {
    if (!n->op->Ready()) return false;
  }
  return true;
}

}  // namespace fleetflow

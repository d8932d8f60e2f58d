#include "fleetflow/testkit/harness.hpp"

#include <algorithm>
#include <stdexcept>

#include "builtin.hpp"
#include "pipeline.hpp"

namespace fleetflow::testkit {

namespace {

/// Whether `out` is the Tick or PartitionEvent `in` passed on (the same message or its copy).
bool Forwards(const Body& in, const Body& out) {
  if (const auto* t = std::get_if<Tick>(&in)) {
    const auto* u = std::get_if<Tick>(&out);
    return u != nullptr && u->now_ns == t->now_ns && u->drain == t->drain &&
           u->held_back == t->held_back;
  }
  const auto* e = std::get_if<PartitionEvent>(&in);
  const auto* f = std::get_if<PartitionEvent>(&out);
  return e != nullptr && f != nullptr && f->kind == e->kind && f->partition == e->partition;
}

/// Whether `series` has every label of `wanted`.
bool HasLabels(const Labels& series, const Labels& wanted) {
  return std::all_of(wanted.begin(), wanted.end(), [&](const auto& label) {
    return std::find(series.begin(), series.end(), label) != series.end();
  });
}

double Sum(const Metrics& metrics, const std::string& name, const Labels& labels) {
  double sum = 0;
  for (const auto& [series, value] : metrics.Values(name)) {
    if (HasLabels(series, labels)) sum += value;
  }
  return sum;
}

}  // namespace

void CaptureSink::Emit(Message m) {
  if (on_emit_) on_emit_(m);
  std::lock_guard lock(mu_);
  messages_.push_back(std::move(m));
}

std::vector<Message> CaptureSink::Messages() const {
  std::lock_guard lock(mu_);
  return messages_;
}

size_t CaptureSink::Size() const {
  std::lock_guard lock(mu_);
  return messages_.size();
}

void CaptureSink::Clear() {
  std::lock_guard lock(mu_);
  messages_.clear();
}

OperatorHarness::OperatorHarness(const std::string& type, const std::string& config_json,
                                 HarnessOptions options) {
  Registry builtin;
  const Registry* registry = options.registry;
  if (registry == nullptr) {
    RegisterBuiltinOperators(builtin);
    registry = &builtin;
  }
  const OperatorInfo* info = registry->Find(type);
  if (info == nullptr) throw std::invalid_argument("unknown operator '" + type + "'");
  Config config;
  std::string problems;
  for (const auto& d : ParseOperatorConfig(*info, config_json, config)) {
    problems += (problems.empty() ? "" : "\n") + d.Format();
  }
  if (!problems.empty()) throw std::invalid_argument(problems);
  OperatorContext ctx{options.node_id, type, config, metrics,
                      options.clock != nullptr ? *options.clock : clock};
  ctx.clock_driver = options.clock_driver;
  if (options.input_ended) ctx.input_ended = options.input_ended;
  labels_ = ctx.labels();
  node_ = type + " node '" + options.node_id + "'";
  op_ = info->create(ctx);
}

OperatorHarness::~OperatorHarness() { Finish(); }

std::vector<Message> OperatorHarness::Feed(const Message& in) {
  CaptureSink out;
  op_->Process(in, out);
  std::vector<Message> emitted = out.Messages();
  for (const auto& m : emitted) output_.Emit(m);
  if (std::holds_alternative<Tick>(*in) || std::holds_alternative<PartitionEvent>(*in)) {
    const auto forwarded = std::count_if(emitted.begin(), emitted.end(),
                                         [&](const Message& m) { return Forwards(*in, *m); });
    if (forwarded != 1) {
      throw std::logic_error(
          node_ + " passed on the " +
          (std::holds_alternative<Tick>(*in) ? "Tick" : "PartitionEvent") + " it was fed " +
          std::to_string(forwarded) +
          " times: an operator forwards every Tick and PartitionEvent once (engine/operator.hpp)");
    }
  }
  return emitted;
}

std::vector<Message> OperatorHarness::Feed(Body body) { return Feed(MakeMessage(std::move(body))); }

std::vector<Message> OperatorHarness::TickAt(int64_t now_ns, bool drain) {
  clock.Set(now_ns);
  return Feed(Tick{now_ns, drain});
}

void OperatorHarness::Start() {
  op_->Start(output_);
  started_ = true;
}

std::string OperatorHarness::StartError() {
  try {
    Start();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void OperatorHarness::Stop() {
  if (started_) op_->Stop();
}

void OperatorHarness::Finish() {
  if (!started_ || finished_) return;
  op_->Stop();
  op_->Finish();
  finished_ = true;
}

uint64_t OperatorHarness::Counter(const std::string& name, const Labels& labels) const {
  return static_cast<uint64_t>(Sum(metrics, name, labels));
}

double OperatorHarness::Gauge(const std::string& name, const Labels& labels) const {
  return Sum(metrics, name, labels);
}

std::string BuildError(const std::string& type, const std::string& config_json,
                       const HarnessOptions& options) {
  try {
    OperatorHarness h(type, config_json, options);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace fleetflow::testkit

#include "edge_watch.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "clock.hpp"
#include "thread_name.hpp"

namespace fleetflow {

EdgeProgress::EdgeProgress(int64_t max_hold_ns, int64_t now_ns)
    : max_hold_ns_(max_hold_ns), behind_since_ns_(now_ns) {}

void EdgeProgress::Observe(int64_t now_ns, const nats::StreamSourceState* state) {
  const bool healthy = state != nullptr && state->error.empty() && state->active_ns >= 0 &&
                       state->active_ns <= kFreshNs && state->lag <= kLiveLag;
  if (!healthy) {
    live_since_ns_.reset();
    contact_ns_.reset();
    contacts_ = 0;
    if (caught_up_) behind_since_ns_ = now_ns;
    caught_up_ = false;
    return;
  }
  const int64_t contact = now_ns - state->active_ns;
  if (!live_since_ns_) live_since_ns_ = now_ns;
  if (!contact_ns_ || contact - *contact_ns_ > kDistinctNs) {
    contact_ns_ = contact;
    ++contacts_;
  }
  if (!caught_up_ && contacts_ >= 2 && now_ns - *live_since_ns_ >= kSettleNs) caught_up_ = true;
}

bool EdgeProgress::GivenUp(int64_t now_ns) const {
  return !caught_up_ && max_hold_ns_ > 0 && now_ns - behind_since_ns_ > max_hold_ns_;
}

bool EdgeProgress::Behind(int64_t now_ns) const { return !caught_up_ && !GivenUp(now_ns); }

EdgeWatch::EdgeWatch(nats::JetStream& js, std::string stream, std::vector<Edge> edges,
                     std::string node, int64_t max_hold_ms, Metrics& metrics, const Labels& labels)
    : js_(js),
      stream_(std::move(stream)),
      edges_(std::move(edges)),
      node_(std::move(node)),
      reported_behind_(edges_.size(), true),
      reported_given_up_(edges_.size(), false),
      behind_gauge_(metrics.GetGauge("edges_behind",
                                     "Edge leaf nodes whose stream the hub's stream has not "
                                     "caught up with (their link down, or catching up): windows "
                                     "wait for them, up to edge_max_hold_ms.",
                                     labels)) {
  const int64_t now = SteadyNowNs();
  for (size_t i = 0; i < edges_.size(); ++i) progress_.emplace_back(max_hold_ms * 1'000'000, now);
  behind_gauge_.Set(static_cast<double>(edges_.size()));
}

EdgeWatch::~EdgeWatch() { Stop(); }

void EdgeWatch::Start() {
  thread_ = std::thread([this] { Loop(); });
  NameThread(thread_, "ff-edge-watch");
}

void EdgeWatch::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EdgeWatch::Loop() {
  std::unique_lock lock(mu_);
  do {
    lock.unlock();
    Ask();
    lock.lock();
  } while (!cv_.wait_for(lock, std::chrono::milliseconds(kPollMs), [this] { return stopping_; }));
}

void EdgeWatch::Ask() {
  std::optional<nats::StreamSummary> found;
  std::string why;
  try {
    found = js_.FindStream(stream_, 1000);
    if (!found) why = "stream " + stream_ + " does not exist";
  } catch (const std::exception& e) {
    why = e.what();
  }
  const int64_t now = SteadyNowNs();
  int behind = 0;
  for (size_t i = 0; i < edges_.size(); ++i) {
    const nats::StreamSourceState* state = nullptr;
    if (found) {
      for (const auto& s : found->source_states) {
        if (s.name == edges_[i].source.name && s.api_prefix == edges_[i].source.api_prefix) {
          state = &s;
        }
      }
    }
    EdgeProgress& p = progress_[i];
    p.Observe(now, state);
    const std::string& domain = edges_[i].domain;
    if (p.CaughtUp()) {
      if (reported_behind_[i]) {
        spdlog::info("node '{}': edge {} caught up: stream {} has what it stored", node_, domain,
                     stream_);
      }
      reported_behind_[i] = false;
      reported_given_up_[i] = false;
    } else if (!reported_behind_[i]) {
      reported_behind_[i] = true;
      std::string how = why;
      if (how.empty() && state == nullptr) how = "the stream does not report it as a source";
      if (how.empty()) {
        how = state->error.empty()
                  ? "last heard of " + std::to_string(state->active_ns / 1'000'000) + " ms ago, " +
                        std::to_string(state->lag) + " messages to come"
                  : state->error;
      }
      spdlog::warn(
          "node '{}': edge {} is behind ({}): windows are held back until stream {} has caught "
          "up with it",
          node_, domain, how, stream_);
    }
    if (p.GivenUp(now) && !reported_given_up_[i]) {
      reported_given_up_[i] = true;
      spdlog::warn(
          "node '{}': edge {} behind for longer than edge_max_hold_ms: windows no longer wait for "
          "it; what it stored meanwhile will come late",
          node_, domain);
    }
    if (p.Behind(now)) ++behind;
  }
  behind_gauge_.Set(behind);
  behind_ = behind > 0;
}

void SettleEdgeSources(nats::JetStream& js, const std::string& stream,
                       const std::vector<EdgeWatch::Edge>& edges, bool create,
                       const std::string& node) {
  std::vector<nats::StreamSource> wanted;
  std::string domains;
  for (const auto& e : edges) {
    wanted.push_back(e.source);
    domains += (domains.empty() ? "" : ", ") + e.domain;
  }
  if (create) {
    // On a cluster the update's answer may come after the request's timeout, though it was
    // made (or another worker's, from the same stream info, was): asked again, the stream has
    // the sources then, or they are added again.
    for (int attempt = 1;; ++attempt) {
      try {
        js.AddSources(stream, wanted);
        break;
      } catch (const nats::Error& e) {
        if (attempt == 3) throw;
        spdlog::warn("node '{}': adding the edge domains {} to stream {}: {} (asking again)", node,
                     domains, stream, e.what());
      }
    }
    spdlog::info("node '{}': stream {} sources the edge domains {}", node, stream, domains);
    return;
  }
  const auto found = js.FindStream(stream);
  std::string missing;
  for (const auto& e : edges) {
    const bool present = found && std::find(found->sources.begin(), found->sources.end(),
                                            e.source) != found->sources.end();
    if (!present) missing += (missing.empty() ? "" : ", ") + e.domain;
  }
  if (!missing.empty()) {
    throw std::runtime_error("stream " + stream + " does not source the edge domains " + missing +
                             " and create_stream is false: add the sources (docs/deploy.md, "
                             "\"Edge leaf nodes\"), or set \"create_stream\": true");
  }
}

}  // namespace fleetflow

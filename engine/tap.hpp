#pragma once
/// Taps: a sample of the messages leaving one node of a running pipeline, as JSON lines, for
/// debugging (`fleetflow tap`, docs/cli.md).
///
/// Every node has a TapPoint. While nobody taps it, the only cost is one relaxed atomic load per
/// packet an operator hands on (per message a source emits). A tap takes every `every`-th
/// message until it has `count` lines or its time is up; each message is written as JSON when
/// taken, on the thread that emits it, so a tap holds no message (nor its acknowledgement or
/// hand-over) beyond that moment. One tap per node at a time.

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "message.hpp"

namespace fleetflow {

struct TapOptions {
  static constexpr size_t kMaxCount = 1000;
  static constexpr std::chrono::milliseconds kMaxTimeout{60000};

  size_t count = 10;       // lines to collect, 1..kMaxCount
  size_t every = 1;        // take every n-th message (1: each)
  bool ticks = false;      // include clock Ticks (ten a second by default)
  size_t max_rows = 20;    // rows of a window written out; the rest are counted
  size_t max_points = 20;  // points of a sample batch written out; the rest are counted
  std::chrono::milliseconds timeout{10000};  // up to kMaxTimeout
};

/// The options of a tap request from its query parameters (`count`, `every`, `ticks`,
/// `max_rows`, `max_points`, `timeout_ms`); nullopt and `error` for a value out of range.
std::optional<TapOptions> ParseTapOptions(
    const std::function<std::optional<std::string>(const std::string&)>& param, std::string& error);

class TapPoint {
 public:
  explicit TapPoint(std::string node) : node_(std::move(node)) {}

  /// True while a tap wants messages; check it before Offer (it is the whole cost of a node
  /// nobody taps).
  bool armed() const { return armed_.load(std::memory_order_relaxed); }
  /// A message leaving the node. Thread-safe.
  void Offer(const Message& m);

  enum class Outcome { kCollected, kTimedOut, kBusy, kCancelled };
  struct Result {
    Outcome outcome = Outcome::kCollected;
    std::vector<std::string> lines;  // JSON objects, one per message, without newlines
  };
  /// Arms the tap and blocks until `options.count` lines are taken, the timeout passes or
  /// Cancel() is called; returns what was taken. kBusy when another tap of this node runs.
  Result Collect(const TapOptions& options);
  /// Ends every running tap (the pipeline stops) and refuses new ones.
  void Cancel();

 private:
  const std::string node_;
  std::atomic<bool> armed_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
  bool cancelled_ = false;
  TapOptions options_;
  size_t seen_ = 0;
  std::vector<std::string> lines_;
};

/// One message as a JSON object (no newline): `node`, `kind` (samples, status, window,
/// partition, tick) and the message's fields; long sample batches and windows are cut to
/// `max_points` / `max_rows`, with the totals given.
std::string TapJson(const std::string& node, const Body& body, size_t max_rows, size_t max_points);

/// One sample as a tap writes it: {"ts_ns", "seq", "value"}, or "lat" and "lon" instead of
/// "value" for a position; a number that is not finite as null (`fleetflow dump` writes them so).
void WriteTapPoint(rapidjson::Writer<rapidjson::StringBuffer>& w, const wire::Point& p);

}  // namespace fleetflow

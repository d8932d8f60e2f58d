#include "tap.hpp"

#include <algorithm>
#include <iostream>
#include <stdexcept>

namespace fleetflow {

namespace {

constexpr int kExitFatal = 1;

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string body;
  for (const auto& line : lines) body.append(line).push_back('\n');
  return body;
}

}  // namespace

HttpReply AnswerTap(Runtime& runtime, const QueryParam& param) {
  const auto node = param("node");
  if (!node || node->empty()) return {400, "missing parameter node (the node's id)\n"};
  std::string error;
  const auto options = ParseTapOptions(param, error);
  if (!options) return {400, error + "\n"};
  try {
    const TapPoint::Result r = runtime.Tap(*node, *options);
    switch (r.outcome) {
      case TapPoint::Outcome::kBusy:
        return {409, "node '" + *node + "' is tapped by another client; try again later\n"};
      case TapPoint::Outcome::kCancelled:
        return {503, "the pipeline is stopping\n"};
      case TapPoint::Outcome::kCollected:
      case TapPoint::Outcome::kTimedOut:
        break;
    }
    return {200, JoinLines(r.lines), "application/x-ndjson"};
  } catch (const std::invalid_argument& e) {
    return {404, std::string(e.what()) + "\n"};
  }
}

int Tap(const TapArgs& args) {
  const std::vector<std::pair<std::string, std::string>> query = {
      {"node", args.node},
      {"count", std::to_string(args.count)},
      {"every", std::to_string(args.every)},
      {"timeout_ms", std::to_string(args.timeout_ms)},
      {"max_rows", std::to_string(args.max_list)},
      {"max_points", std::to_string(args.max_list)},
      {"ticks", args.ticks ? "1" : "0"}};
  const std::string where = args.host + ":" + std::to_string(args.port);
  // The worker answers once the tap is complete or its time is up: wait that long, and more.
  const int wait_ms = args.timeout_ms + 5000;
  do {
    std::string error;
    const auto reply = HttpGet(args.host, args.port, "/tap", wait_ms, error, query);
    if (!reply) {
      std::cerr << "tap: no answer from " << where << " (" << error << ")\n";
      return kExitFatal;
    }
    if (reply->status != 200) {
      std::cerr << "tap: " << where << " answered " << reply->status << ": " << reply->body;
      return kExitFatal;
    }
    std::cout << reply->body << std::flush;
    const size_t lines =
        static_cast<size_t>(std::count(reply->body.begin(), reply->body.end(), '\n'));
    if (lines < static_cast<size_t>(args.count)) {
      std::cerr << "tap: " << lines << " of " << args.count << " messages left node '" << args.node
                << "' in " << args.timeout_ms << " ms\n";
    }
  } while (args.follow);
  return 0;
}

}  // namespace fleetflow

#include "membership.hpp"

#include <algorithm>
#include <charconv>
#include <functional>

namespace fleetflow {

namespace {

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

std::string FormatEmittedWindows(const EmittedWindows& windows) {
  if (windows.empty()) return "-";
  std::string text;
  for (const auto& [node, window_ns] : windows) {
    if (!text.empty()) text += ',';
    text += node + '=' + std::to_string(window_ns);
  }
  return text;
}

std::optional<EmittedWindows> ParseEmittedWindows(std::string_view text) {
  const auto number = [](std::string_view digits) -> std::optional<int64_t> {
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    return v;
  };
  EmittedWindows windows;
  if (text == "-") return windows;
  if (const auto before = number(text)) {  // a release's before per-node records
    windows[""] = *before;
    return windows;
  }
  for (;;) {
    const size_t comma = text.find(',');
    const std::string_view pair = text.substr(0, comma);
    const size_t eq = pair.find('=');
    if (eq == 0 || eq == std::string_view::npos) return std::nullopt;
    const auto window_ns = number(pair.substr(eq + 1));
    if (!window_ns) return std::nullopt;
    windows[std::string(pair.substr(0, eq))] = *window_ns;
    if (comma == std::string_view::npos) return windows;
    text.remove_prefix(comma + 1);
  }
}

uint64_t MemberHash(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::vector<size_t> AssignPartitions(const std::vector<std::string>& members, uint32_t partitions) {
  std::vector<size_t> owner(partitions, 0);
  if (members.size() <= 1) return owner;
  // Each worker takes partitions / workers of them, by rank; the remainder goes one each to the
  // best-ranked workers of those partitions. So no worker owns two more than another.
  const size_t base = partitions / members.size();
  std::vector<size_t> load(members.size(), 0);
  std::vector<uint64_t> member_hash(members.size());
  for (size_t i = 0; i < members.size(); ++i) member_hash[i] = MemberHash(members[i]);
  std::vector<std::vector<size_t>> ranked(partitions);  // by partition: members, best first
  std::vector<std::pair<uint64_t, size_t>> scores(members.size());
  for (uint32_t p = 0; p < partitions; ++p) {
    for (size_t i = 0; i < members.size(); ++i) scores[i] = {Mix(member_hash[i] ^ Mix(p)), i};
    std::sort(scores.begin(), scores.end(), std::greater<>());
    for (const auto& [_, i] : scores) ranked[p].push_back(i);
  }
  std::vector<bool> placed(partitions, false);
  for (const size_t cap : {base, base + 1}) {
    for (uint32_t p = 0; p < partitions; ++p) {
      if (placed[p]) continue;
      for (const size_t i : ranked[p]) {
        if (load[i] < cap) {
          owner[p] = i;
          ++load[i];
          placed[p] = true;
          break;
        }
      }
    }
  }
  return owner;
}

}  // namespace fleetflow

#include "stream_ack.hpp"

#include <charconv>

namespace fleetflow::firmware {
namespace {

// The text after `"key":` (spaces skipped), or npos when the key is absent.
size_t ValueOf(std::string_view json, std::string_view key) {
  const std::string quoted = "\"" + std::string(key) + "\"";
  size_t at = json.find(quoted);
  if (at == std::string_view::npos) return at;
  at = json.find_first_not_of(" \t\r\n", at + quoted.size());
  if (at == std::string_view::npos || json[at] != ':') return std::string_view::npos;
  return json.find_first_not_of(" \t\r\n", at + 1);
}

bool Unsigned(std::string_view text, uint64_t& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end != text.data();
}

}  // namespace

StreamAck ParseStreamAck(std::string_view json) {
  StreamAck ack;
  if (ValueOf(json, "error") != std::string_view::npos) {
    const size_t d = ValueOf(json, "description");
    if (d != std::string_view::npos && json[d] == '"') {
      const size_t end = json.find('"', d + 1);
      ack.error = std::string(json.substr(d + 1, end == std::string_view::npos ? 0 : end - d - 1));
    }
    if (ack.error.empty()) ack.error = "the stream refused the message: " + std::string(json);
    return ack;
  }
  const size_t seq = ValueOf(json, "seq");
  if (ValueOf(json, "stream") == std::string_view::npos || seq == std::string_view::npos ||
      !Unsigned(json.substr(seq), ack.seq)) {
    ack.error = "not a JetStream acknowledgement: " + std::string(json.substr(0, 200));
    return ack;
  }
  const size_t dup = ValueOf(json, "duplicate");
  ack.duplicate = dup != std::string_view::npos && json.substr(dup).starts_with("true");
  ack.stored = true;
  return ack;
}

std::optional<uint64_t> AckRecordId(std::string_view subject, std::string_view inbox) {
  if (subject.size() <= inbox.size() + 1 || !subject.starts_with(inbox) ||
      subject[inbox.size()] != '.') {
    return std::nullopt;
  }
  const std::string_view digits = subject.substr(inbox.size() + 1);
  uint64_t id = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return id;
}

std::string MessageId(std::string_view inbox, uint64_t id) {
  const size_t dot = inbox.rfind('.');
  std::string out(dot == std::string_view::npos ? inbox : inbox.substr(dot + 1));
  return out.append("-").append(std::to_string(id));
}

}  // namespace fleetflow::firmware
